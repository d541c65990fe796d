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
//! * Children run as threads of this process or as processes of their own
//!   ([`Multitasking`], per runner, overridable per child; the seed's `multitasking_type`).
//!   A child process is built by name ([`Child::build`], see [`super::process`]); its death
//!   by any cause (exit, panic, SIGSEGV, abort, SIGKILL) is an exit like a thread's, under the
//!   same policy. Runners nest both ways: a process may run thread runners, and a thread
//!   runner process children.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, unbounded};

use super::flag::Flag;
use super::process::{Handoff, Launch, ProcessChild, build_here};
use super::processor::{BoxError, Context, Outcome, Processor, run_hooks};
use super::registry::{Registry, StopReason};
use super::shm::Region;
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

/// Whether a runner's children run as threads of its process or as processes of their own.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Multitasking {
    #[default]
    Threads,
    Processes,
}

/// A child built by name (see [`super::process`]).
struct BuildSpec {
    builder: String,
    arg: String,
}

/// A child of a runner: a processor (or the name of the builder that makes it) and the waiting
/// groups it belongs to.
pub struct Child {
    processor: Box<dyn Processor>,
    groups: Vec<Flag>,
    policy: Option<Policy>,
    build: Option<BuildSpec>,
    mode: Option<Multitasking>,
    region: Option<Arc<Region>>,
    handoff: Handoff,
}

impl Child {
    pub fn new(p: impl Processor) -> Self {
        Self::boxed(Box::new(p))
    }

    pub fn boxed(p: Box<dyn Processor>) -> Self {
        Child {
            processor: p,
            groups: Vec::new(),
            policy: None,
            build: None,
            mode: None,
            region: None,
            handoff: Handoff::default(),
        }
    }

    /// A child named `name`, made by the builder of the same name when it starts: in this
    /// process (as a thread) or, under [`Multitasking::Processes`], in a process of its own,
    /// anew on every restart.
    pub fn build(name: &str) -> Self {
        Self::build_with(name, name, "")
    }

    /// A child named `name` made by builder `builder` with argument `arg`.
    pub fn build_with(name: &str, builder: &str, arg: &str) -> Self {
        let mut c = Self::boxed(Box::new(Unbuilt(name.to_owned())));
        c.build = Some(BuildSpec {
            builder: builder.to_owned(),
            arg: arg.to_owned(),
        });
        c
    }

    /// Runs this child as a process of its own (or a thread), whatever its runner says.
    pub fn mode(mut self, m: Multitasking) -> Self {
        self.mode = Some(m);
        self
    }

    /// The shared-memory region of this child's process, with the rings its topology declared
    /// (default: an empty region made when it first starts).
    pub fn region(mut self, r: Arc<Region>) -> Self {
        self.region = Some(r);
        self
    }

    /// Hands a queue end (or anything) to the builder when the child is built in this process.
    pub fn give<T: Send + 'static>(mut self, name: &str, v: T) -> Self {
        self.handoff.put(name, v);
        self
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
    #[error("{name}: cannot build: {cause}")]
    Build { name: String, cause: String },
    #[error("{0}: a processor given as an instance cannot run as a process; use Child::build")]
    NotBuildable(String),
    #[error("{name}: {cause}")]
    Process { name: String, cause: String },
}

/// Runs children as named threads; is itself a [`Processor`], so runners nest.
pub struct Runner {
    name: String,
    children: Vec<Child>,
    policy: Policy,
    multitasking: Multitasking,
    stop_timeout: Duration,
    start_timeout: Duration,
    /// Entries of the children, kept so that a restarted runner reuses them.
    entries: Vec<Arc<Entry>>,
    /// Where each child process lives, kept likewise.
    procs: Vec<Option<ProcInfo>>,
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
            multitasking: Multitasking::Threads,
            stop_timeout: Duration::from_secs(5),
            start_timeout: Duration::from_secs(10),
            entries: Vec::new(),
            procs: Vec::new(),
            run: None,
        }
    }

    /// Runs the children as threads (default) or as processes (the seed's
    /// `multitasking_type`); a child may override it with [`Child::mode`].
    pub fn multitasking(mut self, m: Multitasking) -> Self {
        self.multitasking = m;
        self
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

/// Where a child process lives and how it is built.
#[derive(Clone)]
struct ProcInfo {
    region: Arc<Region>,
    slot: usize,
    builder: String,
    arg: String,
    stop_ref: u32,
    pause_ref: u32,
}

struct Slot {
    entry: Arc<Entry>,
    processor: Option<Box<dyn Processor>>,
    proc: Option<ProcInfo>,
    child: Option<ProcessChild>,
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
        if let Some(info) = self.proc.clone() {
            self.spawn_process(index, &info, exits, parent);
            return;
        }
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

    fn spawn_process(
        &mut self,
        index: usize,
        info: &ProcInfo,
        exits: &Sender<Exit>,
        parent: &Context,
    ) {
        self.entry.set_state(ProcState::Starting);
        self.last_start = Instant::now();
        info.region.listen(parent.waker());
        let exits_t = exits.clone();
        let parent_waker = parent.waker().clone();
        let on_exit = Box::new(move |outcome| {
            let _ = exits_t.send(Exit { index, outcome });
            parent_waker.wake();
        });
        let launch = Launch {
            region: &info.region,
            slot: info.slot,
            name: &self.entry.name,
            path: &self.entry.path,
            build: &info.builder,
            arg: &info.arg,
            stop_ref: info.stop_ref,
            pause_ref: info.pause_ref,
        };
        match ProcessChild::spawn(&launch, on_exit) {
            Ok(c) => {
                log::debug!("{}: started as process {}", self.entry.path, c.pid());
                self.child = Some(c);
                self.running = true;
            }
            Err(e) => {
                log::error!("{}: {e}", self.entry.path);
                self.entry.set_state(ProcState::Failed);
                self.entry.set_note(&e.to_string());
                let _ = exits.send(Exit {
                    index,
                    outcome: Outcome::Failed(e.to_string()),
                });
                self.running = true;
            }
        }
    }

    /// Whether the child finished its `before` (ordered start).
    fn is_started(&self) -> bool {
        match &self.proc {
            Some(p) => p
                .region
                .cells(p.slot)
                .is_some_and(|c| c.started.load(Ordering::Acquire) != 0),
            None => self.started.load(Ordering::Acquire),
        }
    }

    fn join(&mut self) {
        self.running = false;
        if let Some(mut c) = self.child.take() {
            c.join();
        }
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
            while !slots[i].is_started() && !ctx.should_stop() && Instant::now() < deadline {
                self.handle_exits(&rx, &mut slots, &registry, &mut failure);
                if !slots[i].running {
                    break;
                }
                park_until(Some(deadline));
            }
            if !slots[i].is_started() && !ctx.should_stop() {
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
            if slots[i].running
                && let Some(c) = &slots[i].child
            {
                log::error!(
                    "{}: did not stop within {:?}; killing process {}",
                    slots[i].entry.path,
                    self.stop_timeout,
                    c.pid()
                );
                c.kill();
                let deadline = Instant::now() + super::process::KILL_GRACE;
                while slots[i].running && Instant::now() < deadline {
                    self.handle_exits(&rx, &mut slots, &registry, &mut failure);
                    if slots[i].running {
                        park_until(Some(deadline));
                    }
                }
                hung.push(slots[i].entry.path.clone());
            } else if slots[i].running {
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
        let mut procs = Vec::with_capacity(self.children.len());
        for (i, c) in self.children.iter_mut().enumerate() {
            let mode = c.mode.unwrap_or(self.multitasking);
            let name = c.processor.name().to_owned();
            let path = format!("{}/{}", ctx.path(), name);
            if mode == Multitasking::Processes && c.build.is_none() {
                return Err(Box::new(RunError::NotBuildable(name)));
            }
            // A child built by name that runs as a thread is built here, once.
            if mode == Multitasking::Threads
                && let Some(b) = &c.build
                && c.processor.is_unbuilt()
            {
                let p = build_here(&b.builder, &name, &b.arg, c.region.as_ref(), &mut c.handoff)
                    .map_err(|e| RunError::Build {
                        name: name.clone(),
                        cause: super::processor::error_chain(&*e),
                    })?;
                c.processor = p;
            }
            let mut info = if reuse { self.procs[i].clone() } else { None };
            let entry = if reuse {
                let e = self.entries[i].clone();
                e.stop.clear();
                e
            } else {
                if registry.find(&name).is_some()
                    || slots.iter().any(|s: &Slot| s.entry.name == name)
                {
                    return Err(Box::new(RunError::DuplicateName(name)));
                }
                let mut watch: Vec<Flag> = ctx.entry().watched().to_vec();
                watch.extend(c.groups.iter().cloned());
                if mode == Multitasking::Processes {
                    let (e, pi) = register_process(registry, c, name.clone(), path, &watch)?;
                    info = Some(pi);
                    e
                } else {
                    registry.register(
                        name.clone(),
                        path,
                        c.processor.kind(),
                        &watch,
                        &c.groups,
                        c.processor.signals(),
                    )
                }
            };
            let policy = c.policy.clone().unwrap_or_else(|| self.policy.clone());
            let backoff = match &policy {
                Policy::Restart(r) => r.backoff_initial,
                Policy::StopAll => Duration::ZERO,
            };
            procs.push(info.clone());
            slots.push(Slot {
                entry,
                processor: Some(std::mem::replace(&mut c.processor, placeholder())),
                proc: info,
                child: None,
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
        self.procs = procs;
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

/// Registers a child that runs as a process: its entry goes into its region (the child's
/// own, the one this process lives in, or a new one).
fn register_process(
    registry: &Arc<Registry>,
    c: &Child,
    name: String,
    path: String,
    watch: &[Flag],
) -> Result<(Arc<Entry>, ProcInfo), RunError> {
    let fail = |cause: String| RunError::Process {
        name: name.clone(),
        cause,
    };
    let region = match (&c.region, registry.region()) {
        (Some(r), _) => r.clone(),
        (None, Some(r)) => r.clone(),
        (None, None) => Region::builder(&name)
            .build()
            .map_err(|e| fail(e.to_string()))?,
    };
    region
        .start_relay()
        .map_err(|e| fail(format!("cannot start its relay thread: {e}")))?;
    let e = registry
        .register_in(
            &region,
            name.clone(),
            path,
            Kind::Plain,
            watch,
            &c.groups,
            Vec::new(),
        )
        .map_err(|e| fail(e.to_string()))?;
    let slot = region
        .slot_of(&e)
        .ok_or_else(|| fail("entry outside its region".into()))?;
    let stop_ref = region
        .export(registry.stop_all_flag())
        .map_err(|e| fail(e.to_string()))?;
    let pause_ref = region
        .export(registry.tree_pause())
        .map_err(|e| fail(e.to_string()))?;
    let b = c
        .build
        .as_ref()
        .ok_or_else(|| RunError::NotBuildable(name.clone()))?;
    Ok((
        e,
        ProcInfo {
            region,
            slot,
            builder: b.builder.clone(),
            arg: b.arg.clone(),
            stop_ref,
            pause_ref,
        },
    ))
}

/// A child built by name that has not been built (it runs in a process of its own, or will be
/// built in this one when it starts).
struct Unbuilt(String);

impl Processor for Unbuilt {
    fn name(&self) -> &str {
        &self.0
    }
    fn body(&mut self, _ctx: &Context) -> Result<(), BoxError> {
        Err(format!("{} was never built", self.0).into())
    }
    fn is_unbuilt(&self) -> bool {
        true
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
