//! A worker pool (the thread-pool seed's `WorkerThreadPool`): a manager that runs a produce
//! step at a fixed rate and N workers that consume a task queue.
//!
//! * Fixed rate, no drift: rounds start at `t0 + k * interval`. After producing, the manager
//!   waits until every task of the round is done (the seed's `queue.join()`); a round that takes
//!   longer than the interval is logged as an overrun and the next one starts at once.
//! * Task-done semantics: a task counts as done when a worker finished it, failed it, panicked
//!   on it, or flushed it on stop. The last one wakes the manager (no polling).
//! * A job that panics is caught and counted; its worker goes on with the next task.
//! * On stop the workers leave, flushing (dropping and counting) what is still queued.
//! * An unmanaged pool has no produce step; something else feeds it through a [`TaskSender`].

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, select, unbounded};

use super::processor::{BoxError, Context, Processor, error_chain, panic_message};
use super::state::{Kind, ProcState};
use super::wake::Waker;

struct Shared {
    pending: AtomicUsize,
    manager: OnceLock<Arc<Waker>>,
}

impl Shared {
    fn task_done(&self) {
        if self.pending.fetch_sub(1, Ordering::AcqRel) == 1
            && let Some(w) = self.manager.get()
        {
            w.wake();
        }
    }
}

/// Puts tasks into a pool's queue. Cloneable; usable from any thread.
pub struct TaskSender<T> {
    tx: Sender<T>,
    shared: Arc<Shared>,
}

impl<T> Clone for TaskSender<T> {
    fn clone(&self) -> Self {
        TaskSender {
            tx: self.tx.clone(),
            shared: self.shared.clone(),
        }
    }
}

impl<T> TaskSender<T> {
    /// Queues a task. The queue is unbounded (the seed's `queue.Queue()`), so this never blocks.
    pub fn put(&self, task: T) {
        self.shared.pending.fetch_add(1, Ordering::AcqRel);
        if self.tx.send(task).is_err() {
            self.shared.task_done();
        }
    }

    /// Tasks queued or in progress.
    pub fn pending(&self) -> usize {
        self.shared.pending.load(Ordering::Acquire)
    }
}

type Produce<T> = Box<dyn FnMut(&TaskSender<T>) -> Result<usize, BoxError> + Send>;
type Handle<T> = Arc<dyn Fn(T) -> Result<(), BoxError> + Send + Sync>;

/// A manager thread plus N worker threads around one task queue.
pub struct WorkerPool<T: Send + 'static> {
    name: String,
    workers: usize,
    interval: Duration,
    produce: Option<Produce<T>>,
    handle: Handle<T>,
    tx: Sender<T>,
    rx: Receiver<T>,
    shared: Arc<Shared>,
}

impl<T: Send + 'static> WorkerPool<T> {
    /// A pool with no produce step; feed it through [`WorkerPool::sender`].
    pub fn unmanaged(
        name: impl Into<String>,
        workers: usize,
        handle: impl Fn(T) -> Result<(), BoxError> + Send + Sync + 'static,
    ) -> Self {
        let (tx, rx) = unbounded();
        WorkerPool {
            name: name.into(),
            workers: workers.max(1),
            interval: Duration::from_secs(10),
            produce: None,
            handle: Arc::new(handle),
            tx,
            rx,
            shared: Arc::new(Shared {
                pending: AtomicUsize::new(0),
                manager: OnceLock::new(),
            }),
        }
    }

    /// A pool whose manager calls `produce` every `interval` (it returns how many tasks it put).
    pub fn managed(
        name: impl Into<String>,
        workers: usize,
        interval: Duration,
        produce: impl FnMut(&TaskSender<T>) -> Result<usize, BoxError> + Send + 'static,
        handle: impl Fn(T) -> Result<(), BoxError> + Send + Sync + 'static,
    ) -> Self {
        let mut p = Self::unmanaged(name, workers, handle);
        p.interval = interval;
        p.produce = Some(Box::new(produce));
        p
    }

    pub fn sender(&self) -> TaskSender<T> {
        TaskSender {
            tx: self.tx.clone(),
            shared: self.shared.clone(),
        }
    }

    fn manage(&mut self, ctx: &Context, produce: &mut Produce<T>) {
        let sender = self.sender();
        let overruns = ctx.metric("overruns");
        let rounds = ctx.metric("rounds");
        let mut tick = Instant::now();
        while !ctx.should_stop() {
            if ctx.should_wait() {
                ctx.set_state(ProcState::Waiting);
                ctx.sleep_until(None);
                tick = Instant::now();
                continue;
            }
            ctx.set_state(ProcState::Active);
            let t0 = Instant::now();
            match produce(&sender) {
                Ok(n) => log::debug!("{}: queued {n} tasks", ctx.path()),
                Err(e) => {
                    ctx.entry().add_error();
                    log::error!("{}: produce step failed: {}", ctx.path(), error_chain(&*e));
                }
            }
            // The seed's queue.join(): wait until the round's tasks are done.
            while self.shared.pending.load(Ordering::Acquire) > 0 && !ctx.should_stop() {
                ctx.sleep_until(None);
            }
            rounds.fetch_add(1, Ordering::Relaxed);
            let took = t0.elapsed();
            if took > self.interval {
                overruns.fetch_add(1, Ordering::Relaxed);
                log::warn!(
                    "{}: round took {took:?}, longer than the interval {:?}",
                    ctx.path(),
                    self.interval
                );
                tick = Instant::now();
            } else {
                tick += self.interval;
                while Instant::now() < tick && !ctx.should_stop() && !ctx.should_wait() {
                    ctx.sleep_until(Some(tick));
                }
            }
        }
    }
}

struct WorkerStats {
    done: super::Counter,
    failed: super::Counter,
    panicked: super::Counter,
    flushed: super::Counter,
}

fn work<T>(
    name: &str,
    rx: &Receiver<T>,
    shutdown: &Receiver<()>,
    handle: &Handle<T>,
    shared: &Shared,
    stats: &WorkerStats,
) {
    loop {
        select! {
            recv(rx) -> msg => match msg {
                Ok(task) => {
                    match catch_unwind(AssertUnwindSafe(|| handle(task))) {
                        Ok(Ok(())) => {
                            stats.done.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(Err(e)) => {
                            stats.failed.fetch_add(1, Ordering::Relaxed);
                            log::error!("{name}: task failed: {}", error_chain(&*e));
                        }
                        Err(p) => {
                            stats.panicked.fetch_add(1, Ordering::Relaxed);
                            log::error!("{name}: task panicked: {}", panic_message(&*p));
                        }
                    }
                    shared.task_done();
                }
                Err(_) => break,
            },
            recv(shutdown) -> _ => break,
        }
    }
    // The seed's flush(): empty the queue so nobody waits on tasks that will never run.
    while let Ok(task) = rx.try_recv() {
        drop(task);
        stats.flushed.fetch_add(1, Ordering::Relaxed);
        shared.task_done();
    }
}

impl<T: Send + 'static> Processor for WorkerPool<T> {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> Kind {
        Kind::Pool
    }

    fn body(&mut self, ctx: &Context) -> Result<(), BoxError> {
        let _ = self.shared.manager.set(ctx.waker().clone());
        let stats = WorkerStats {
            done: ctx.metric("tasks_done"),
            failed: ctx.metric("tasks_failed"),
            panicked: ctx.metric("tasks_panicked"),
            flushed: ctx.metric("tasks_flushed"),
        };
        let (shutdown_tx, shutdown_rx) = unbounded::<()>();
        let mut produce = self.produce.take();
        let (rx, handle, shared) = (self.rx.clone(), self.handle.clone(), self.shared.clone());
        let (name, workers) = (self.name.clone(), self.workers);
        let result = std::thread::scope(|s| -> Result<(), BoxError> {
            for i in 0..workers {
                let wname = format!("{name}-{}", i + 1);
                let (rx, sd, h, sh, st) = (&rx, &shutdown_rx, &handle, &*shared, &stats);
                let b = std::thread::Builder::new().name(wname.clone());
                if let Err(e) = b.spawn_scoped(s, move || work(&wname, rx, sd, h, sh, st)) {
                    drop(shutdown_tx);
                    return Err(Box::new(e));
                }
            }
            match produce.as_mut() {
                Some(p) => self.manage(ctx, p),
                None => {
                    while !ctx.should_stop() {
                        ctx.sleep_until(None);
                    }
                }
            }
            drop(shutdown_tx);
            Ok(())
        });
        self.produce = produce;
        let flushed = stats.flushed.load(Ordering::Relaxed);
        if flushed > 0 {
            log::info!("{}: flushed {flushed} queued tasks on stop", ctx.path());
        }
        result
    }
}
