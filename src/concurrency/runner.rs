//! The runner: a processor that runs other processors as named threads (the seed's
//! `ProcessorsRunner`), nestable to any depth, with an Erlang/OTP-style supervision policy.
//!
//! * Ordered start: each child's `before` has finished before the next child starts, so sinks
//!   listed first are ready before the sources that feed them.
//! * Reverse-order stop: on stop the runner sets its children's stop flags one at a time, last
//!   started first, and waits (up to a deadline) for each to finish. Sources stop before the
//!   sinks, which then drain what was accepted.
//! * Stop flags are handed down: every child gets its own stop flag, set by its runner; the root
//!   runner's stop flag is the registry's stop-all flag, which any processor can set.
//! * Waiting flags are handed down too: a child watches its own pause flag, the groups given to
//!   it here, and every flag its runner watches (the whole tree's among them).
//! * When a child fails or panics the runner applies its [`Policy`]: stop all (the seed's
//!   default), or restart it after a backoff, at most `max_restarts` within `within`, then stop
//!   all (Erlang's intensity and period).

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, unbounded};

use super::flag::Flag;
use super::processor::{BoxError, Context, Outcome, Processor, run_hooks};
use super::registry::{Registry, StopReason};
use super::state::{Entry, Kind, ProcState};
use super::wake::park_until;

/// What a runner does when a child fails or panics.
#[derive(Clone, Debug, PartialEq)]
pub enum Policy {
    /// Stop the whole tree (the seed's behaviour).
    StopAll,
    /// Restart the child; more than `max_restarts` within `within` stops the whole tree.
    Restart(RestartPolicy),
}

/// Restart limits and backoff (Erlang/OTP's intensity and period).
#[derive(Clone, Debug, PartialEq)]
pub struct RestartPolicy {
    pub max_restarts: u32,
    pub within: Duration,
    /// Delay before the first restart; doubles on each further failure up to `backoff_max`.
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        RestartPolicy {
            max_restarts: 5,
            within: Duration::from_secs(60),
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_secs(5),
        }
    }
}

/// A child of a runner: a processor and the waiting groups it belongs to.
pub struct Child {
    processor: Box<dyn Processor>,
    groups: Vec<Flag>,
    policy: Option<Policy>,
}

impl Child {
    pub fn new(p: impl Processor) -> Self {
        Child {
            processor: Box::new(p),
            groups: Vec::new(),
            policy: None,
        }
    }

    pub fn boxed(p: Box<dyn Processor>) -> Self {
        Child {
            processor: p,
            groups: Vec::new(),
            policy: None,
        }
    }

    /// Makes the child wait whenever `group` is set (a waiting flag shared by a chosen group).
    pub fn in_group(mut self, group: &Flag) -> Self {
        self.groups.push(group.clone());
        self
    }

    /// Overrides the runner's policy for this child.
    pub fn policy(mut self, p: Policy) -> Self {
        self.policy = Some(p);
        self
    }
}

/// Why a runner's body returned an error.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("processor {path} failed: {cause}")]
    ChildFailed { path: String, cause: String },
    #[error(
        "restart limit of {path} reached ({max} restarts within {within:?}); last failure: {cause}"
    )]
    RestartLimit {
        path: String,
        max: u32,
        within: Duration,
        cause: String,
    },
    #[error("processors did not stop within {timeout:?}: {paths:?}")]
    StopTimeout {
        paths: Vec<String>,
        timeout: Duration,
    },
    #[error("duplicate processor name '{0}' in the tree")]
    DuplicateName(String),
}

/// Runs children as named threads; is itself a [`Processor`], so runners nest.
pub struct Runner {
    name: String,
    children: Vec<Child>,
    policy: Policy,
    stop_timeout: Duration,
    start_timeout: Duration,
    /// Entries of the children, kept so that a restarted runner reuses them.
    entries: Vec<Arc<Entry>>,
    /// Children started by `before`, supervised by `body`.
    run: Option<RunState>,
}

struct RunState {
    slots: Vec<Slot>,
    tx: Sender<Exit>,
    rx: Receiver<Exit>,
    failure: Option<RunError>,
}

impl Runner {
    pub fn new(name: impl Into<String>) -> Self {
        Runner {
            name: name.into(),
            children: Vec::new(),
            policy: Policy::StopAll,
            stop_timeout: Duration::from_secs(5),
            start_timeout: Duration::from_secs(10),
            entries: Vec::new(),
            run: None,
        }
    }

    /// The policy applied to children that fail or panic (default: stop all).
    pub fn policy(mut self, p: Policy) -> Self {
        self.policy = p;
        self
    }

    /// How long each child gets to finish after its stop flag is set (default 5 s).
    pub fn stop_timeout(mut self, d: Duration) -> Self {
        self.stop_timeout = d;
        self
    }

    /// How long ordered start waits for a child's `before` before starting the next anyway.
    pub fn start_timeout(mut self, d: Duration) -> Self {
        self.start_timeout = d;
        self
    }

    /// Adds a child processor (started in the order added).
    pub fn child(mut self, p: impl Processor) -> Self {
        self.children.push(Child::new(p));
        self
    }

    /// Adds a child with groups or a policy of its own.
    pub fn with_child(mut self, c: Child) -> Self {
        self.children.push(c);
        self
    }

    /// Adds a child in place (for building trees in loops).
    pub fn push(&mut self, c: Child) {
        self.children.push(c);
    }

    pub fn len(&self) -> usize {
        self.children.len()
    }

    pub fn is_empty(&self) -> bool {
        self.children.is_empty()
    }
}

struct Exit {
    index: usize,
    outcome: Outcome,
}

struct Slot {
    entry: Arc<Entry>,
    processor: Option<Box<dyn Processor>>,
    handle: Option<JoinHandle<Box<dyn Processor>>>,
    started: Arc<AtomicBool>,
    policy: Policy,
    failures: VecDeque<Instant>,
    backoff: Duration,
    restart_at: Option<Instant>,
    last_start: Instant,
    running: bool,
}

impl Slot {
    fn spawn(
        &mut self,
        index: usize,
        registry: &Arc<Registry>,
        exits: &Sender<Exit>,
        parent: &Context,
    ) {
        let Some(mut p) = self.processor.take() else {
            return;
        };
        let ctx = Context::new(self.entry.clone(), registry.clone());
        let exits_t = exits.clone();
        let parent_waker = parent.waker().clone();
        let started = self.started.clone();
        started.store(false, Ordering::Release);
        self.entry.set_state(ProcState::Starting);
        self.last_start = Instant::now();
        let started_waker = parent_waker.clone();
        let spawned = thread::Builder::new()
            .name(self.entry.name.clone())
            .spawn(move || {
                ctx.waker().bind_current();
                let outcome = run_hooks(&mut *p, &ctx, || {
                    started.store(true, Ordering::Release);
                    started_waker.wake();
                });
                let _ = exits_t.send(Exit { index, outcome });
                parent_waker.wake();
                p
            });
        match spawned {
            Ok(h) => {
                self.handle = Some(h);
                self.running = true;
            }
            Err(e) => {
                // The processor moved into the failed closure; it cannot be recovered.
                log::error!("{}: cannot spawn thread: {e}", self.entry.path);
                self.entry.set_state(ProcState::Failed);
                let _ = exits.send(Exit {
                    index,
                    outcome: Outcome::Failed(format!("cannot spawn thread: {e}")),
                });
                self.running = true;
            }
        }
    }

    fn join(&mut self) {
        self.running = false;
        if let Some(h) = self.handle.take() {
            match h.join() {
                Ok(p) => self.processor = Some(p),
                Err(_) => log::error!("{}: thread died outside its hooks", self.entry.path),
            }
        }
    }
}

impl Processor for Runner {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> Kind {
        Kind::Runner
    }

    /// Registers the children and starts them in order: a runner counts as started (for its
    /// own parent's ordered start, and for READY=1) once all its children have started.
    fn before(&mut self, ctx: &Context) -> Result<(), BoxError> {
        let registry = ctx.registry().clone();
        let (tx, rx) = unbounded::<Exit>();
        let mut slots = self.register_children(ctx)?;
        let mut failure: Option<RunError> = None;

        // Ordered start.
        for i in 0..slots.len() {
            if ctx.should_stop() {
                break;
            }
            slots[i].spawn(i, &registry, &tx, ctx);
            let deadline = Instant::now() + self.start_timeout;
            while !slots[i].started.load(Ordering::Acquire)
                && !ctx.should_stop()
                && Instant::now() < deadline
            {
                self.handle_exits(&rx, &mut slots, &registry, &mut failure);
                if !slots[i].running {
                    break;
                }
                park_until(Some(deadline));
            }
            if !slots[i].started.load(Ordering::Acquire) && !ctx.should_stop() {
                log::warn!(
                    "{}: still starting after {:?}; starting the next processor",
                    slots[i].entry.path,
                    self.start_timeout
                );
            }
            self.handle_exits(&rx, &mut slots, &registry, &mut failure);
        }

        self.run = Some(RunState {
            slots,
            tx,
            rx,
            failure,
        });
        Ok(())
    }

    fn body(&mut self, ctx: &Context) -> Result<(), BoxError> {
        let registry = ctx.registry().clone();
        let Some(RunState {
            mut slots,
            tx,
            rx,
            mut failure,
        }) = self.run.take()
        else {
            return Ok(());
        };

        // Supervise.
        loop {
            self.handle_exits(&rx, &mut slots, &registry, &mut failure);
            if ctx.should_stop() {
                break;
            }
            let now = Instant::now();
            let mut next: Option<Instant> = None;
            for (i, slot) in slots.iter_mut().enumerate() {
                if let Some(t) = slot.restart_at {
                    if t <= now {
                        slot.restart_at = None;
                        slot.entry.add_restart();
                        log::warn!(
                            "{}: restarting (restart {})",
                            slot.entry.path,
                            slot.entry.restarts()
                        );
                        slot.spawn(i, &registry, &tx, ctx);
                    } else {
                        next = Some(next.map_or(t, |n: Instant| n.min(t)));
                    }
                }
            }
            if slots.iter().all(|s| !s.running && s.restart_at.is_none()) {
                break;
            }
            park_until(next);
        }

        // Reverse-order stop.
        let mut hung = Vec::new();
        for i in (0..slots.len()).rev() {
            if slots[i].restart_at.take().is_some() {
                slots[i].entry.set_state(ProcState::Stopped);
            }
            if !slots[i].running {
                continue;
            }
            slots[i].entry.stop.set();
            let deadline = Instant::now() + self.stop_timeout;
            while slots[i].running && Instant::now() < deadline {
                self.handle_exits(&rx, &mut slots, &registry, &mut failure);
                if slots[i].running {
                    park_until(Some(deadline));
                }
            }
            if slots[i].running {
                log::error!(
                    "{}: did not stop within {:?}; leaving its thread behind",
                    slots[i].entry.path,
                    self.stop_timeout
                );
                hung.push(slots[i].entry.path.clone());
            }
        }
        self.handle_exits(&rx, &mut slots, &registry, &mut failure);
        // Hand the processors back so the runner can be run again.
        self.children = slots
            .into_iter()
            .zip(std::mem::take(&mut self.children))
            .map(|(s, mut c)| {
                if let Some(p) = s.processor {
                    c.processor = p;
                }
                c
            })
            .collect();

        if let Some(f) = failure {
            return Err(Box::new(f));
        }
        if !hung.is_empty() {
            return Err(Box::new(RunError::StopTimeout {
                paths: hung,
                timeout: self.stop_timeout,
            }));
        }
        Ok(())
    }
}

impl Runner {
    fn register_children(&mut self, ctx: &Context) -> Result<Vec<Slot>, BoxError> {
        let registry = ctx.registry();
        let mut slots = Vec::with_capacity(self.children.len());
        let placeholder: fn() -> Box<dyn Processor> = || Box::new(Placeholder);
        let reuse = self.entries.len() == self.children.len();
        for (i, c) in self.children.iter_mut().enumerate() {
            let entry = if reuse {
                let e = self.entries[i].clone();
                e.stop.clear();
                e
            } else {
                let name = c.processor.name().to_owned();
                if registry.find(&name).is_some()
                    || slots.iter().any(|s: &Slot| s.entry.name == name)
                {
                    return Err(Box::new(RunError::DuplicateName(name)));
                }
                let mut watch: Vec<Flag> = ctx.entry().watched().to_vec();
                watch.extend(c.groups.iter().cloned());
                registry.register(
                    name.clone(),
                    format!("{}/{}", ctx.path(), name),
                    c.processor.kind(),
                    &watch,
                    &c.groups,
                    c.processor.signals(),
                )
            };
            let policy = c.policy.clone().unwrap_or_else(|| self.policy.clone());
            let backoff = match &policy {
                Policy::Restart(r) => r.backoff_initial,
                Policy::StopAll => Duration::ZERO,
            };
            slots.push(Slot {
                entry,
                processor: Some(std::mem::replace(&mut c.processor, placeholder())),
                handle: None,
                started: Arc::new(AtomicBool::new(false)),
                policy,
                failures: VecDeque::new(),
                backoff,
                restart_at: None,
                last_start: Instant::now(),
                running: false,
            });
        }
        self.entries = slots.iter().map(|s| s.entry.clone()).collect();
        Ok(slots)
    }

    fn handle_exits(
        &self,
        rx: &Receiver<Exit>,
        slots: &mut [Slot],
        registry: &Arc<Registry>,
        failure: &mut Option<RunError>,
    ) {
        while let Ok(Exit { index, outcome }) = rx.try_recv() {
            let slot = &mut slots[index];
            slot.join();
            let path = slot.entry.path.clone();
            let cause = match outcome {
                Outcome::Completed => {
                    log::debug!("{path}: finished");
                    continue;
                }
                Outcome::Failed(c) | Outcome::Panicked(c) => c,
            };
            if registry.is_stopping() || slot.entry.stop.is_set() {
                // Failing while stopping: reported, nothing to restart.
                failure.get_or_insert(RunError::ChildFailed { path, cause });
                continue;
            }
            match slot.policy.clone() {
                Policy::StopAll => {
                    log::error!("{path} failed ({cause}); policy: stop all");
                    registry.request_stop_all(StopReason::Failure(format!("{path}: {cause}")));
                    failure.get_or_insert(RunError::ChildFailed { path, cause });
                }
                Policy::Restart(rp) => {
                    let now = Instant::now();
                    if now.duration_since(slot.last_start) > rp.within {
                        slot.backoff = rp.backoff_initial;
                    }
                    slot.failures.push_back(now);
                    while slot
                        .failures
                        .front()
                        .is_some_and(|t| now.duration_since(*t) > rp.within)
                    {
                        slot.failures.pop_front();
                    }
                    if slot.failures.len() as u32 > rp.max_restarts {
                        log::error!(
                            "{path} failed ({cause}); restart limit {} within {:?} reached: stop all",
                            rp.max_restarts,
                            rp.within
                        );
                        registry.request_stop_all(StopReason::Failure(format!(
                            "{path}: restart limit reached: {cause}"
                        )));
                        failure.get_or_insert(RunError::RestartLimit {
                            path,
                            max: rp.max_restarts,
                            within: rp.within,
                            cause,
                        });
                    } else {
                        log::warn!("{path} failed ({cause}); restarting in {:?}", slot.backoff);
                        slot.entry.set_state(ProcState::Restarting);
                        slot.restart_at = Some(now + slot.backoff);
                        slot.backoff = (slot.backoff * 2).min(rp.backoff_max);
                    }
                }
            }
        }
    }
}

/// Stands in a runner's child list while the real processor runs on its thread.
struct Placeholder;

impl Processor for Placeholder {
    fn name(&self) -> &str {
        "placeholder"
    }
    fn body(&mut self, _ctx: &Context) -> Result<(), BoxError> {
        Ok(())
    }
}

/// Runs `root` (usually a [`Runner`]) as the root of the tree described by `registry`, on the
/// calling thread. Its stop flag is the registry's stop-all flag.
pub fn run_tree(registry: &Arc<Registry>, root: &mut dyn Processor) -> Outcome {
    let entry = registry.register_root(root.name(), root.kind(), root.signals());
    entry.waker.bind_current();
    let ctx = Context::new(entry, registry.clone());
    run_hooks(root, &ctx, || {})
}
