//! What each processor is doing, readable from any thread without locks.
//!
//! The seed kept each process's state in a file (`StateInFile`). Here the live state is a set
//! of atomics in an [`Entry`] per processor (a fixed-layout [`Cells`] record, which for a
//! processor in a child process lives in shared memory); the control module writes them to
//! files in the run directory and serves them as JSON. Processors and the runner only store atomics and ring the
//! registry's doorbell, so a state change never does I/O on a sensor thread.
//!
//! Clocks (issue #11): every duration here (time in state, time inside one piece of work, which
//! the watchdog reads) is measured on the boot clock (`CLOCK_BOOTTIME`), which never steps. The
//! Pi has no real-time clock, and its wall clock jumps when NTP or the GPS sets it: a stamp on the
//! wall clock would turn a step into a false "stuck" or hide a real hang. The wall clock is read
//! only to show a moment to people (`since_ms` in a snapshot, derived from the boot-clock age).
//! Stamps are `u64` boot-clock nanoseconds in plain atomics (fixed size, no pointers: the boot
//! clock is the same in every process, so a child's stamps mean the same in its parent), and the
//! clocks are injectable ([`Clocks`]) so a test can step the wall clock.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

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

/// Why a signal was not put in a mailbox.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    /// The mailbox holds [`MAILBOX_CAPACITY`] signals already.
    MailboxFull,
    /// The processor takes this signal at most once per `interval_ms` (see
    /// [`Entry::limit_signals`]); the next one is taken in `retry_in_ms`.
    RateLimited {
        interval_ms: u64,
        retry_in_ms: u64,
        /// Refused so far, this one included.
        refused: u64,
    },
}

/// A rate limit on some of the signals a processor accepts, checked when a signal is
/// delivered, so the requester is told at once and the mailbox never fills with them.
struct SignalGate {
    /// Bit `i`: `accepts[i]` is limited.
    mask: u64,
    interval_ns: u64,
    /// Boot-clock ns of the last signal let through (0: none yet).
    last_ns: AtomicU64,
    refused: Counter,
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
    /// Process-local: where the stamps come from (not part of the shared state).
    clocks: Clocks,
    /// Set by the runner to stop this processor (reverse start order).
    pub stop: Flag,
    /// This processor's own pause flag (`harmony ctl pause NAME`).
    pub pause: Flag,
    /// Every flag whose being set makes this processor wait: its own pause flag, its groups',
    /// and those of the runners above it.
    watch: Vec<Flag>,
    accepts: Vec<String>,
    /// Process-local: a rate limit checked by whoever delivers in this process.
    gate: std::sync::OnceLock<SignalGate>,
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

/// Milliseconds since the Unix epoch on the wall clock: for showing a moment to people only,
/// never for measuring a duration (see the module docs).
pub fn now_ms() -> u64 {
    (crate::clock::wall_ns().max(0) / 1_000_000) as u64
}

/// The clocks the framework reads: the boot clock for every duration, the wall clock only to
/// show moments to people. Plain function pointers, so a test can inject clocks it steps.
#[derive(Clone, Copy, Debug)]
pub struct Clocks {
    /// Nanoseconds on a clock that never steps (`CLOCK_BOOTTIME`).
    pub boot_ns: fn() -> u64,
    /// Nanoseconds since the Unix epoch on the wall clock (steps when the clock is set).
    pub wall_ns: fn() -> i64,
}

impl Clocks {
    /// The system's clocks (`CLOCK_BOOTTIME`, `CLOCK_REALTIME`).
    pub const SYSTEM: Clocks = Clocks {
        boot_ns: crate::clock::boot_ns,
        wall_ns: crate::clock::wall_ns,
    };

    #[inline]
    pub fn boot(&self) -> u64 {
        (self.boot_ns)()
    }

    #[inline]
    pub fn wall(&self) -> i64 {
        (self.wall_ns)()
    }
}

impl Default for Clocks {
    fn default() -> Self {
        Self::SYSTEM
    }
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
        let clocks = registry.clocks();
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
            clocks,
            accepts: p.accepts,
            gate: std::sync::OnceLock::new(),
            waker: Waker::new(),
            registry: Arc::downgrade(registry),
        });
        if e.cells().since_ns.load(Ordering::Relaxed) == 0 {
            e.cells().since_ns.store(clocks.boot(), Ordering::Relaxed);
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
            self.cells()
                .since_ns
                .store(self.clocks.boot(), Ordering::Relaxed);
            self.mark_dirty();
        }
    }

    /// Boot-clock nanoseconds of the last state change.
    pub fn since_ns(&self) -> u64 {
        self.cells().since_ns.load(Ordering::Relaxed)
    }

    /// How long the processor has been in its current state (boot clock).
    pub fn in_state_ms(&self) -> u64 {
        self.clocks.boot().saturating_sub(self.since_ns()) / 1_000_000
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
        self.add_errors(1);
    }

    /// Counts `n` errors at once (a sink adding up its writer's failures).
    pub fn add_errors(&self, n: u64) {
        self.cells().errors.fetch_add(n, Ordering::Relaxed);
        self.mark_dirty();
    }

    /// Marks the start (`true`) or end (`false`) of a stretch of work that must not take long.
    /// Stamped on the boot clock (a vDSO read, no system call).
    #[inline]
    pub fn set_busy(&self, busy: bool) {
        let v = if busy { self.clocks.boot().max(1) } else { 0 };
        self.cells().busy.store(v, Ordering::Relaxed);
    }

    /// Boot-clock nanoseconds when the current piece of work began, if inside one.
    pub fn busy_since_ns(&self) -> Option<u64> {
        match self.cells().busy.load(Ordering::Relaxed) {
            0 => None,
            t => Some(t),
        }
    }

    /// How long the processor has been inside its current piece of work at boot-clock time
    /// `now_ns`, if it is.
    pub fn busy_for_ms(&self, now_ns: u64) -> Option<u64> {
        self.busy_since_ns()
            .map(|t| now_ns.saturating_sub(t) / 1_000_000)
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
        if self.link.is_some() {
            return self.accepted().iter().any(|a| a == name || a == "*");
        }
        self.accepts.iter().any(|a| a == name || a == "*")
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

    /// Takes the named signals (among those it accepts) at most once per `interval`, counting
    /// the refused ones in `refused`. One gate per processor, set once (later calls are
    /// ignored): the logger limits its rotation requests (`hup`, `rotate`) this way, whichever
    /// way they come (radio, control socket, SIGHUP).
    pub fn limit_signals(&self, names: &[&str], interval: Duration, refused: Counter) {
        let mask = self
            .accepts
            .iter()
            .enumerate()
            .filter(|(i, a)| *i < 64 && names.contains(&a.as_str()))
            .fold(0u64, |m, (i, _)| m | 1 << i);
        let _ = self.gate.set(SignalGate {
            mask,
            interval_ns: interval.as_nanos() as u64,
            last_ns: AtomicU64::new(0),
            refused,
        });
    }

    /// Checks the rate limit for `sig`; takes its slot when it passes.
    fn pass_gate(&self, sig: &Signal) -> Result<(), Refused> {
        let Some(g) = self.gate.get() else {
            return Ok(());
        };
        let limited = self
            .accepts
            .iter()
            .position(|a| a == sig.name())
            .is_some_and(|i| i < 64 && g.mask & (1 << i) != 0);
        if !limited {
            return Ok(());
        }
        let now = self.clocks.boot().max(1);
        let last = g.last_ns.load(Ordering::Acquire);
        let due = last.saturating_add(g.interval_ns);
        // compare_exchange: of two concurrent requests only one passes.
        if (last == 0 || now >= due)
            && g.last_ns
                .compare_exchange(last, now, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            return Ok(());
        }
        let refused = g.refused.fetch_add(1, Ordering::Relaxed) + 1;
        let last = g.last_ns.load(Ordering::Acquire);
        Err(Refused::RateLimited {
            interval_ms: g.interval_ns / 1_000_000,
            retry_in_ms: last.saturating_add(g.interval_ns).saturating_sub(now) / 1_000_000,
            refused,
        })
    }

    /// Puts a signal in the mailbox and wakes the processor. Fails when the mailbox is full or
    /// the signal is rate-limited ([`Entry::limit_signals`]).
    pub fn deliver(&self, sig: Signal) -> Result<(), Refused> {
        self.pass_gate(&sig)?;
        if self.cells().post(&sig) {
            self.waker.wake();
            if let Some(l) = &self.link {
                l.mail(self.cells());
            }
            Ok(())
        } else {
            self.cells().mail_dropped.fetch_add(1, Ordering::Relaxed);
            Err(Refused::MailboxFull)
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

    /// Calls `f` with each metric's name and value, without allocating (for periodic readers
    /// on timed threads, such as the uplink's health report).
    pub fn visit_metrics(&self, f: impl FnMut(&str, u64)) {
        self.cells().visit_metrics(f);
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
        let in_state_ms = self.in_state_ms();
        EntrySnapshot {
            name: self.name.clone(),
            path: self.path.clone(),
            kind: self.kind_now(),
            state: self.state(),
            // The moment for people, derived from the boot-clock age: a wall-clock step moves
            // it with the reader's clock, so "now - since" stays the true time in state.
            since_ms: ((self.clocks.wall().max(0) / 1_000_000) as u64).saturating_sub(in_state_ms),
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
    /// Wall-clock ms of the last state change, for display: the snapshot's wall clock minus
    /// the time in state measured on the boot clock, so a reader subtracting it from its own
    /// (equally stepped) wall clock gets the true time in state.
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
