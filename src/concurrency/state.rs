//! What each processor is doing, readable from any thread without locks.
//!
//! The seed kept each process's state in a file (`StateInFile`). Here the live state is a set
//! of atomics in an [`Entry`] per processor (a fixed-layout [`Cells`] record, which for a
//! processor in a child process lives in shared memory); the control module writes them to
//! files in the run directory and serves them as JSON. Processors and the runner only store atomics and ring the
//! registry's doorbell, so a state change never does I/O on a sensor thread.

use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::flag::Flag;
use super::registry::Registry;
use super::signal::Signal;
use super::wake::Waker;

/// Lifecycle of one processor (the states `harmony ctl status` and the state files show).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[repr(u8)]
pub enum ProcState {
    /// Registered, thread not started yet, or `before` running.
    Starting = 0,
    Active = 1,
    /// Paused by a waiting flag.
    Waiting = 2,
    Stopping = 3,
    Stopped = 4,
    Failed = 5,
    /// Failed and waiting for the runner's restart backoff.
    Restarting = 6,
}

impl ProcState {
    fn from_u8(v: u8) -> Self {
        match v {
            0 => Self::Starting,
            1 => Self::Active,
            2 => Self::Waiting,
            3 => Self::Stopping,
            4 => Self::Stopped,
            5 => Self::Failed,
            _ => Self::Restarting,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Starting => "starting",
            Self::Active => "active",
            Self::Waiting => "waiting",
            Self::Stopping => "stopping",
            Self::Stopped => "stopped",
            Self::Failed => "failed",
            Self::Restarting => "restarting",
        }
    }

    /// Stopped or failed: the thread is gone.
    pub fn is_final(self) -> bool {
        matches!(self, Self::Stopped | Self::Failed)
    }
}

impl fmt::Display for ProcState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What kind of processor an entry is, for display.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Plain,
    Loop,
    Runner,
    Pool,
}

impl Kind {
    pub(crate) fn to_u32(self) -> u32 {
        match self {
            Kind::Plain => 0,
            Kind::Loop => 1,
            Kind::Runner => 2,
            Kind::Pool => 3,
        }
    }

    pub(crate) fn from_u32(v: u32) -> Self {
        match v {
            1 => Kind::Loop,
            2 => Kind::Runner,
            3 => Kind::Pool,
            _ => Kind::Plain,
        }
    }
}

use super::cells::{Cells, Keep};
pub use super::cells::{Counter, MAILBOX_CAPACITY};

/// What an entry whose record lives in shared memory must tell the other processes.
pub trait Link: Send + Sync {
    /// A signal was posted into `cells`' mailbox: wake the process running it.
    fn mail(&self, cells: &Cells);
    /// Something shown in the status changed: wake the state-file writer's process.
    fn dirty(&self);
}

/// The live, shared record of one processor. Its values live in a [`Cells`] record: on the heap
/// for a processor of this process, in a shared-memory region for one of a process subtree
/// (both processes then hold an `Entry` over the same record).
pub struct Entry {
    pub name: String,
    /// Slash-separated names from the root runner down to this processor.
    pub path: String,
    pub kind: Kind,
    cells: *const Cells,
    keep: Keep,
    link: Option<Arc<dyn Link>>,
    /// Set by the runner to stop this processor (reverse start order).
    pub stop: Flag,
    /// This processor's own pause flag (`harmony ctl pause NAME`).
    pub pause: Flag,
    /// Every flag whose being set makes this processor wait: its own pause flag, its groups',
    /// and those of the runners above it.
    watch: Vec<Flag>,
    accepts: Vec<String>,
    pub waker: Arc<Waker>,
    registry: Weak<Registry>,
}

// SAFETY: `cells` points at a `Cells` (atomics only) that `keep` keeps alive.
unsafe impl Send for Entry {}
unsafe impl Sync for Entry {}

impl fmt::Debug for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Entry")
            .field("path", &self.path)
            .field("state", &self.state())
            .finish()
    }
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The parts of an [`Entry`] whose record lives elsewhere (see [`Entry::from_parts`]).
pub(crate) struct Parts {
    pub name: String,
    pub path: String,
    pub kind: Kind,
    pub accepts: Vec<String>,
    pub cells: *const Cells,
    pub keep: Keep,
    pub link: Option<Arc<dyn Link>>,
    pub stop: Flag,
    pub pause: Flag,
}

impl Entry {
    pub(crate) fn new(
        registry: &Arc<Registry>,
        name: String,
        path: String,
        kind: Kind,
        stop: Option<Flag>,
        watch_above: &[Flag],
        accepts: Vec<String>,
    ) -> Arc<Self> {
        let cells = Cells::new_arc();
        cells.pid.store(super::cells::my_pid(), Ordering::Relaxed);
        cells.kind.store(kind.to_u32(), Ordering::Relaxed);
        let pause = Flag::new(name.clone());
        let stop = stop.unwrap_or_else(|| Flag::new(format!("{name}.stop")));
        Self::from_parts(
            registry,
            Parts {
                name,
                path,
                kind,
                accepts,
                cells: Arc::as_ptr(&cells),
                keep: Keep::Heap(cells),
                link: None,
                stop,
                pause,
            },
            watch_above,
        )
    }

    /// An entry over a record that lives elsewhere (a shared-memory region).
    pub(crate) fn from_parts(
        registry: &Arc<Registry>,
        p: Parts,
        watch_above: &[Flag],
    ) -> Arc<Self> {
        let mut watch = vec![p.pause.clone()];
        for f in watch_above {
            if !watch.iter().any(|w| w.same(f)) {
                watch.push(f.clone());
            }
        }
        let e = Arc::new(Entry {
            stop: p.stop,
            pause: p.pause,
            watch,
            name: p.name,
            path: p.path,
            kind: p.kind,
            cells: p.cells,
            keep: p.keep,
            link: p.link,
            accepts: p.accepts,
            waker: Waker::new(),
            registry: Arc::downgrade(registry),
        });
        if e.cells().since_ms.load(Ordering::Relaxed) == 0 {
            e.cells().since_ms.store(now_ms(), Ordering::Relaxed);
        }
        e.stop.subscribe(&e.waker);
        for f in &e.watch {
            f.subscribe(&e.waker);
        }
        e
    }

    #[inline]
    pub(crate) fn cells(&self) -> &Cells {
        // SAFETY: see the Send/Sync impls.
        unsafe { &*self.cells }
    }

    pub fn state(&self) -> ProcState {
        ProcState::from_u8(self.cells().state.load(Ordering::Acquire) as u8)
    }

    /// Records a state change and tells the state-file writer. No I/O here.
    pub fn set_state(&self, s: ProcState) {
        if self.cells().state.swap(s as u32, Ordering::AcqRel) != s as u32 {
            self.cells().since_ms.store(now_ms(), Ordering::Relaxed);
            self.mark_dirty();
        }
    }

    /// Milliseconds since the Unix epoch of the last state change.
    pub fn since_ms(&self) -> u64 {
        self.cells().since_ms.load(Ordering::Relaxed)
    }

    pub fn restarts(&self) -> u32 {
        self.cells().restarts.load(Ordering::Relaxed)
    }

    pub(crate) fn add_restart(&self) {
        self.cells().restarts.fetch_add(1, Ordering::Relaxed);
        self.mark_dirty();
    }

    pub fn errors(&self) -> u64 {
        self.cells().errors.load(Ordering::Relaxed)
    }

    pub fn add_error(&self) {
        self.cells().errors.fetch_add(1, Ordering::Relaxed);
        self.mark_dirty();
    }

    /// Marks the start (`true`) or end (`false`) of a stretch of work that must not take long.
    #[inline]
    pub fn set_busy(&self, busy: bool) {
        self.cells()
            .busy
            .store(if busy { now_ms().max(1) } else { 0 }, Ordering::Relaxed);
    }

    /// How long the processor has been inside its current piece of work, if it is.
    pub fn busy_for_ms(&self, now: u64) -> Option<u64> {
        match self.cells().busy.load(Ordering::Relaxed) {
            0 => None,
            t => Some(now.saturating_sub(t)),
        }
    }

    /// A short human-readable remark shown with the state ("reopening /dev/ttyUSB0 in 2 s").
    /// Cut to 200 bytes.
    pub fn set_note(&self, note: &str) {
        let n = &self.cells().note;
        if !n.is(note) && n.set(note) {
            self.mark_dirty();
        }
    }

    pub fn note(&self) -> String {
        self.cells().note.get()
    }

    /// The process this processor runs in (0: its process is not running).
    pub fn pid(&self) -> u32 {
        self.cells().pid.load(Ordering::Relaxed)
    }

    /// Whether any flag this processor watches says "wait".
    #[inline]
    pub fn should_wait(&self) -> bool {
        self.watch.iter().any(Flag::is_set)
    }

    pub fn watched(&self) -> &[Flag] {
        &self.watch
    }

    /// The named signals this processor reacts to.
    pub fn accepts(&self, name: &str) -> bool {
        self.accepted().iter().any(|a| a == name || a == "*")
    }

    /// The signals it accepts; for a processor of a child process, as the child said once it
    /// built the processor.
    pub fn accepted(&self) -> Vec<String> {
        if self.link.is_some() {
            self.cells()
                .accepts
                .get()
                .split(',')
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect()
        } else {
            self.accepts.clone()
        }
    }

    /// What kind of processor it is (for a child process's: as the child built it).
    pub fn kind_now(&self) -> Kind {
        Kind::from_u32(self.cells().kind.load(Ordering::Relaxed))
    }

    /// Puts a signal in the mailbox and wakes the processor. Fails when the mailbox is full.
    pub fn deliver(&self, sig: Signal) -> Result<(), Signal> {
        if self.cells().post(&sig) {
            self.waker.wake();
            if let Some(l) = &self.link {
                l.mail(self.cells());
            }
            Ok(())
        } else {
            self.cells().mail_dropped.fetch_add(1, Ordering::Relaxed);
            Err(sig)
        }
    }

    /// The next signal in the mailbox, if any.
    pub fn take_signal(&self) -> Option<Signal> {
        self.cells().take()
    }

    pub fn has_mail(&self) -> bool {
        self.cells().has_mail()
    }

    /// Publishes a named counter; returns the atomic to update (reuses one of the same name).
    /// Names are cut to 40 bytes; past 64 metrics a processor gets counters shown nowhere.
    pub fn metric(&self, name: &str) -> Counter {
        match self.cells().metric_slot(name) {
            Some(v) => Counter::new(v, self.keep.clone()),
            None => {
                log::warn!("{}: no room for metric {name}; not shown", self.path);
                Counter::detached()
            }
        }
    }

    pub fn metrics(&self) -> Vec<(String, u64)> {
        self.cells().metrics()
    }

    pub(crate) fn mark_dirty(&self) {
        if let Some(r) = self.registry.upgrade() {
            r.notify_changed();
        }
        if let Some(l) = &self.link {
            l.dirty();
        }
    }

    /// A consistent-enough copy for status replies and state files.
    pub fn snapshot(&self) -> EntrySnapshot {
        EntrySnapshot {
            name: self.name.clone(),
            path: self.path.clone(),
            kind: self.kind_now(),
            state: self.state(),
            since_ms: self.since_ms(),
            restarts: self.restarts(),
            errors: self.errors(),
            paused: self.pause.is_set(),
            waiting_on: self
                .watch
                .iter()
                .filter(|f| f.is_set())
                .map(|f| f.name().to_owned())
                .collect(),
            note: self.note(),
            signals: self.accepted(),
            mail_dropped: self.cells().mail_dropped.load(Ordering::Relaxed),
            metrics: self.metrics().into_iter().collect(),
            pid: self.pid(),
        }
    }
}

/// A copy of an [`Entry`] for display, JSON and state files.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct EntrySnapshot {
    pub name: String,
    pub path: String,
    pub kind: Kind,
    pub state: ProcState,
    pub since_ms: u64,
    pub restarts: u32,
    pub errors: u64,
    pub paused: bool,
    pub waiting_on: Vec<String>,
    pub note: String,
    pub signals: Vec<String>,
    pub mail_dropped: u64,
    pub metrics: std::collections::BTreeMap<String, u64>,
    /// The process the processor runs in (0: not running).
    #[serde(default)]
    pub pid: u32,
}

impl EntrySnapshot {
    /// The state file's text: `key=value` lines, for `cat` and shell scripts.
    pub fn to_state_file(&self) -> String {
        use std::fmt::Write;
        let mut s = String::with_capacity(256);
        let _ = writeln!(s, "name={}", self.name);
        let _ = writeln!(s, "path={}", self.path);
        let _ = writeln!(s, "kind={}", kind_str(self.kind));
        let _ = writeln!(s, "state={}", self.state);
        let _ = writeln!(s, "since={}", crate::timefmt::rfc3339_ms(self.since_ms));
        let _ = writeln!(s, "restarts={}", self.restarts);
        let _ = writeln!(s, "errors={}", self.errors);
        let _ = writeln!(s, "paused={}", self.paused);
        let _ = writeln!(s, "waiting_on={}", self.waiting_on.join(","));
        let _ = writeln!(s, "note={}", self.note.replace('\n', " "));
        let _ = writeln!(s, "pid={}", self.pid);
        for (k, v) in &self.metrics {
            let _ = writeln!(s, "metric.{k}={v}");
        }
        s
    }
}

fn kind_str(k: Kind) -> &'static str {
    match k {
        Kind::Plain => "plain",
        Kind::Loop => "loop",
        Kind::Runner => "runner",
        Kind::Pool => "pool",
    }
}
