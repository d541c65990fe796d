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
//! * Options: [`WorkerPool::join_rounds`]`(false)` lets the next round start on time while a
//!   task of the last one still runs; [`WorkerPool::finally`] is a last produce step on stop,
//!   whose tasks (and what was still queued) run before the workers leave, up to a deadline.
//!
//! [`Housekeeping`] puts the pool to the firmware's real use (issue #11): the slow file-system
//! work the timed threads must never do (manifest, free-space floor, signing-state saves) runs
//! as named jobs on its workers, each job's runs, errors and durations in the pool's metrics.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
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

type Produce<T> = Box<dyn FnMut(&TaskSender<T>, &Context) -> Result<usize, BoxError> + Send>;
type Finally<T> = Box<dyn FnOnce(&TaskSender<T>, &Context) -> usize + Send>;
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
    join_rounds: bool,
    finally: Option<(Duration, Finally<T>)>,
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
            join_rounds: true,
            finally: None,
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
        let mut produce = produce;
        Self::managed_with_context(name, workers, interval, move |tx, _| produce(tx), handle)
    }

    /// [`WorkerPool::managed`] whose produce step also sees the pool's [`Context`] (to publish
    /// metrics or a note).
    pub fn managed_with_context(
        name: impl Into<String>,
        workers: usize,
        interval: Duration,
        produce: impl FnMut(&TaskSender<T>, &Context) -> Result<usize, BoxError> + Send + 'static,
        handle: impl Fn(T) -> Result<(), BoxError> + Send + Sync + 'static,
    ) -> Self {
        let mut p = Self::unmanaged(name, workers, handle);
        p.interval = interval;
        p.produce = Some(Box::new(produce));
        p
    }

    /// Whether the manager waits for a round's tasks before the next round (the seed's
    /// `queue.join()`, the default). Without it the rounds keep their rate while a slow task
    /// runs on one worker and the others serve the next round.
    pub fn join_rounds(mut self, join: bool) -> Self {
        self.join_rounds = join;
        self
    }

    /// A last produce step when the pool is told to stop: what it queues, and what was still
    /// queued, runs before the workers leave, for at most `deadline`; the rest is flushed.
    pub fn finally(
        mut self,
        deadline: Duration,
        last: impl FnOnce(&TaskSender<T>, &Context) -> usize + Send + 'static,
    ) -> Self {
        self.finally = Some((deadline, Box::new(last)));
        self
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
            match produce(&sender, ctx) {
                Ok(n) => log::debug!("{}: queued {n} tasks", ctx.path()),
                Err(e) => {
                    ctx.entry().add_error();
                    log::error!("{}: produce step failed: {}", ctx.path(), error_chain(&*e));
                }
            }
            // The seed's queue.join(): wait until the round's tasks are done.
            while self.join_rounds
                && self.shared.pending.load(Ordering::Acquire) > 0
                && !ctx.should_stop()
            {
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
            if let Some((deadline, last)) = self.finally.take() {
                let queued = last(&self.sender(), ctx);
                let until = Instant::now() + deadline;
                // Stop is set, so wait on the waker directly; the last task done wakes it.
                while self.shared.pending.load(Ordering::Acquire) > 0 && Instant::now() < until {
                    super::wake::park_until(Some(until));
                }
                let left = self.shared.pending.load(Ordering::Acquire);
                if left > 0 {
                    log::warn!(
                        "{}: {left} tasks not done {deadline:?} after stop ({queued} queued by the last round)",
                        ctx.path()
                    );
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

/// One named job of a [`Housekeeping`] pool.
pub struct Job {
    name: String,
    every: Option<Duration>,
    at_stop: bool,
    run: Box<dyn Fn() -> Result<(), BoxError> + Send + Sync>,
    /// In the queue or running: not queued again.
    queued: AtomicBool,
    /// Asked for while queued: runs once more when this run ends.
    again: AtomicBool,
    /// Boot-clock ns of the next periodic run.
    next_due_ns: AtomicU64,
    /// Boot-clock ns when the current run began; 0 when not running.
    running_since_ns: AtomicU64,
    runs: AtomicU64,
    errors: AtomicU64,
    last_ms: AtomicU64,
    /// The job's metrics in the pool's entry: runs, errors, last_ms, running_ms.
    metrics: OnceLock<[super::Counter; 4]>,
}

impl Job {
    fn execute(&self) {
        let t0 = crate::clock::boot_ns().max(1);
        self.running_since_ns.store(t0, Ordering::Release);
        let r = catch_unwind(AssertUnwindSafe(|| (self.run)()));
        let took = crate::clock::boot_ns().saturating_sub(t0);
        self.last_ms.store(took / 1_000_000, Ordering::Relaxed);
        self.runs.fetch_add(1, Ordering::Relaxed);
        let failure = match r {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(error_chain(&*e)),
            Err(p) => Some(format!("panicked: {}", panic_message(&*p))),
        };
        if let Some(why) = failure {
            // Counted every time, logged the first time and then at powers of two, so a job
            // failing every second (a full card) does not fill the log.
            let n = self.errors.fetch_add(1, Ordering::Relaxed) + 1;
            if n.is_power_of_two() {
                log::error!("housekeeping job {} failed ({n} so far): {why}", self.name);
            }
        }
        self.running_since_ns.store(0, Ordering::Release);
    }

    fn publish(&self, ctx: &Context, now_ns: u64) -> Option<u64> {
        let m = self.metrics.get_or_init(|| {
            ["runs", "errors", "last_ms", "running_ms"]
                .map(|k| ctx.metric(&format!("{}.{k}", self.name)))
        });
        let running = match self.running_since_ns.load(Ordering::Acquire) {
            0 => None,
            t => Some(now_ns.saturating_sub(t) / 1_000_000),
        };
        m[0].store(self.runs.load(Ordering::Relaxed), Ordering::Relaxed);
        m[1].store(self.errors.load(Ordering::Relaxed), Ordering::Relaxed);
        m[2].store(self.last_ms.load(Ordering::Relaxed), Ordering::Relaxed);
        m[3].store(running.unwrap_or(0), Ordering::Relaxed);
        running
    }
}

/// Housekeeping runs below the sources, like the logger (nice +10), once per worker thread.
fn lower_priority_once() {
    thread_local! {
        static LOWERED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    }
    if !LOWERED.with(|l| l.replace(true)) {
        // SAFETY: setpriority on the calling thread (tid) with plain integers; lowering one's
        // own priority is always allowed and touches no memory.
        unsafe {
            nix::libc::setpriority(
                nix::libc::PRIO_PROCESS,
                nix::unistd::gettid().as_raw() as nix::libc::id_t,
                10,
            );
        }
    }
}

struct HkShared {
    jobs: Mutex<Vec<Arc<Job>>>,
    sender: OnceLock<TaskSender<Arc<Job>>>,
    /// Job failures already added to the pool's error count.
    errors_seen: AtomicU64,
}

impl HkShared {
    /// Queues `job` unless it is queued already (then it runs once more after this run).
    fn queue(&self, job: &Arc<Job>) -> bool {
        if job.queued.swap(true, Ordering::AcqRel) {
            job.again.store(true, Ordering::Release);
            return false;
        }
        match self.sender.get() {
            Some(tx) => {
                tx.put(job.clone());
                true
            }
            None => {
                job.queued.store(false, Ordering::Release);
                false
            }
        }
    }

    fn jobs(&self) -> Vec<Arc<Job>> {
        self.jobs.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// Asks for a run of one housekeeping job (cloneable, from any thread, never blocks).
#[derive(Clone)]
pub struct JobHandle {
    job: Arc<Job>,
    shared: Arc<HkShared>,
}

impl JobHandle {
    /// Runs the job soon on a worker; if it is queued or running already, once more after.
    pub fn request(&self) {
        self.shared.queue(&self.job);
    }

    /// Runs so far (finished, failed or not).
    pub fn runs(&self) -> u64 {
        self.job.runs.load(Ordering::Relaxed)
    }

    /// Runs that failed so far.
    pub fn errors(&self) -> u64 {
        self.job.errors.load(Ordering::Relaxed)
    }
}

/// The housekeeping pool: slow file-system jobs, off the timed threads (issue #11).
///
/// The logger and uplink threads only hand state over (an atomic, a slot) and, for an
/// on-request job, call [`JobHandle::request`]; a [`WorkerPool`] (manager on a fixed `tick`,
/// N workers) runs the jobs. A job that stalls (an SD card pausing for seconds) holds one
/// worker and is not queued again meanwhile: the other workers serve the other jobs, and no
/// timed thread waits for any of it. Pool work does not mark anything busy, so a stalled job is
/// shown (`JOB.running_ms`, the pool's note) but does not stop the watchdog's pings.
///
/// Each job publishes `JOB.runs`, `JOB.errors`, `JOB.last_ms` (its last run's duration) and
/// `JOB.running_ms` (how long the current run has taken, 0 when idle) in the pool's metrics
/// (`harmony ctl --json status`, the pool's state file, `harmony top`); job failures also count
/// in the pool's errors column and a run over [`Housekeeping::SLOW`] is named in its note. On stop the jobs marked `at_stop` (and any requested)
/// run a last time, up to [`Housekeeping::STOP_DEADLINE`]: the pool must come before its
/// clients in the runner, so it stops after them and saves their final state.
#[derive(Clone)]
pub struct Housekeeping {
    shared: Arc<HkShared>,
}

impl Housekeeping {
    /// How long the last round on stop may take.
    pub const STOP_DEADLINE: Duration = Duration::from_secs(2);
    /// A run taking longer than this is named in the pool's note.
    pub const SLOW: Duration = Duration::from_secs(2);

    /// A housekeeping registry and the pool that runs its jobs (put the pool in the tree
    /// before the processors whose jobs it runs).
    pub fn new(name: &str, workers: usize, tick: Duration) -> (Self, WorkerPool<Arc<Job>>) {
        let shared = Arc::new(HkShared {
            jobs: Mutex::new(Vec::new()),
            sender: OnceLock::new(),
            errors_seen: AtomicU64::new(0),
        });
        let (s1, s2, s3) = (shared.clone(), shared.clone(), shared.clone());
        let pool = WorkerPool::managed_with_context(
            name,
            workers,
            tick,
            move |_tx, ctx| Ok(Self::round(&s1, ctx)),
            move |job: Arc<Job>| {
                lower_priority_once();
                job.execute();
                job.queued.store(false, Ordering::Release);
                if job.again.swap(false, Ordering::AcqRel) {
                    s2.queue(&job);
                }
                Ok(())
            },
        )
        .join_rounds(false)
        .finally(Self::STOP_DEADLINE, move |_tx, _ctx| {
            s3.jobs()
                .iter()
                .filter(|j| j.at_stop)
                .filter(|j| s3.queue(j))
                .count()
        });
        let _ = shared.sender.set(pool.sender());
        (Housekeeping { shared }, pool)
    }

    /// Adds a job: run every `every` (None: only when requested), and once more on stop when
    /// `at_stop`. `run` executes on a worker thread; its errors are counted and logged there.
    pub fn add(
        &self,
        name: &str,
        every: Option<Duration>,
        at_stop: bool,
        run: impl Fn() -> Result<(), BoxError> + Send + Sync + 'static,
    ) -> JobHandle {
        let job = Arc::new(Job {
            name: name.to_owned(),
            every,
            at_stop,
            run: Box::new(run),
            queued: AtomicBool::new(false),
            again: AtomicBool::new(false),
            next_due_ns: AtomicU64::new(0),
            running_since_ns: AtomicU64::new(0),
            runs: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            last_ms: AtomicU64::new(0),
            metrics: OnceLock::new(),
        });
        self.shared
            .jobs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(job.clone());
        JobHandle {
            job,
            shared: self.shared.clone(),
        }
    }

    /// The manager's round: queue the periodic jobs that are due, publish every job's
    /// metrics, count their failures as the pool's errors, name a slow one in the note.
    fn round(shared: &HkShared, ctx: &Context) -> usize {
        let now = crate::clock::boot_ns();
        let mut queued = 0;
        let mut slow = None;
        let mut errors = 0;
        for job in shared.jobs() {
            errors += job.errors.load(Ordering::Relaxed);
            if let Some(every) = job.every
                && now >= job.next_due_ns.load(Ordering::Relaxed)
                && !job.queued.load(Ordering::Acquire)
            {
                job.next_due_ns
                    .store(now + every.as_nanos() as u64, Ordering::Relaxed);
                if shared.queue(&job) {
                    queued += 1;
                }
            }
            if let Some(ms) = job.publish(ctx, now)
                && ms >= Self::SLOW.as_millis() as u64
            {
                slow = Some(format!("{} running for {:.1} s", job.name, ms as f64 / 1e3));
            }
        }
        let seen = shared.errors_seen.swap(errors, Ordering::Relaxed);
        if errors > seen {
            ctx.entry().add_errors(errors - seen);
        }
        ctx.set_note(slow.as_deref().unwrap_or(""));
        queued
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::concurrency::{Registry, Runner, StopReason, run_tree};
    use std::sync::atomic::AtomicBool;

    fn wait(what: &str, mut cond: impl FnMut() -> bool) {
        let t0 = Instant::now();
        while !cond() {
            assert!(t0.elapsed() < Duration::from_secs(20), "timed out: {what}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Issue #11: housekeeping jobs: periodic and requested runs, a failing job counted (its
    /// metrics and the pool's errors), a stalled job holding one worker while another job
    /// keeps running, and the `at_stop` jobs run once more when the pool stops.
    #[test]
    fn housekeeping_jobs_run_fail_stall_and_finish_on_stop() {
        let (hk, pool) = Housekeeping::new("housekeeping", 2, Duration::from_millis(20));
        let ticks = Arc::new(AtomicU64::new(0));
        let t = ticks.clone();
        hk.add("tick", Some(Duration::from_millis(20)), true, move || {
            t.fetch_add(1, Ordering::SeqCst);
            Ok(())
        });
        let failing = hk.add("failing", None, false, || Err("card gone".into()));
        let stalled = Arc::new(AtomicBool::new(true));
        let s = stalled.clone();
        let stall = hk.add("stall", None, false, move || {
            while s.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(5));
            }
            Ok(())
        });
        let reg = Registry::new();
        let r2 = reg.clone();
        let mut root = Runner::new("root").child(pool);
        let h = std::thread::spawn(move || run_tree(&r2, &mut root));
        let entry = || reg.find("housekeeping");
        let m = |k: &str| {
            entry()
                .and_then(|e| e.snapshot().metrics.get(k).copied())
                .unwrap_or(0)
        };
        stall.request();
        failing.request();
        wait("the failure is counted", || {
            m("failing.errors") == 1 && entry().is_some_and(|e| e.errors() == 1)
        });
        assert_eq!(failing.errors(), 1);
        // One worker is stuck in `stall`; the periodic job goes on on the other.
        let before = ticks.load(Ordering::SeqCst);
        wait("ticks while stalled", || {
            ticks.load(Ordering::SeqCst) > before + 5
        });
        assert!(
            m("stall.running_ms") > 0,
            "the stalled job is shown running"
        );
        assert_eq!(stall.runs(), 0);
        stalled.store(false, Ordering::SeqCst);
        wait("the stalled job finishes", || stall.runs() == 1);
        // On stop, the at_stop job runs once more.
        let before = ticks.load(Ordering::SeqCst);
        reg.request_stop_all(StopReason::Requested("test".into()));
        h.join().unwrap();
        assert!(ticks.load(Ordering::SeqCst) > before, "a last run at stop");
        assert_eq!(failing.runs(), 1, "not at_stop: not run again");
    }
}
