//! The tree's shared directory: every processor's [`Entry`], the named waiting groups, the
//! stop-all flag and why the tree stopped.
//!
//! Runners register their children here when they start them; the control socket, the state
//! files and the uplink's health report read it. It is written at start and restart only.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};

use super::flag::Flag;
use super::shm::{Region, ShmError};
use super::signal::Signal;
use super::state::{Clocks, Entry, EntrySnapshot, Kind, Refused};
use super::wake::Waker;

/// Why the tree was asked to stop; decides the process's exit code.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StopReason {
    /// An operator or the system asked (SIGTERM, `harmony ctl stop`, a ground command).
    Requested(String),
    /// A processor asked for stop-all as part of its normal work (e.g. a time limit).
    Finished(String),
    /// A processor failed and its runner's policy said stop all.
    Failure(String),
}

/// Errors from looking things up in the tree.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LookupError {
    #[error("no processor or group named '{0}' (see `harmony ctl status`)")]
    Unknown(String),
    #[error("processor '{proc}' does not react to signal '{signal}' (it accepts: {accepts})")]
    NotAccepted {
        proc: String,
        signal: String,
        accepts: String,
    },
    #[error("no processor reacts to signal '{0}'")]
    NoReceiver(String),
    #[error("mailbox of '{0}' is full; signal dropped")]
    MailboxFull(String),
    #[error(
        "'{proc}' takes '{signal}' at most once every {interval_ms} ms: refused, try again in {retry_in_ms} ms ({refused} refused so far)"
    )]
    RateLimited {
        proc: String,
        signal: String,
        interval_ms: u64,
        retry_in_ms: u64,
        refused: u64,
    },
}

impl LookupError {
    fn refused(e: &Entry, signal: &str, why: Refused) -> Self {
        match why {
            Refused::MailboxFull => LookupError::MailboxFull(e.name.clone()),
            Refused::RateLimited {
                interval_ms,
                retry_in_ms,
                refused,
            } => LookupError::RateLimited {
                proc: e.name.clone(),
                signal: signal.to_owned(),
                interval_ms,
                retry_in_ms,
                refused,
            },
        }
    }
}

/// The shared directory of a processor tree.
pub struct Registry {
    entries: RwLock<Vec<Arc<Entry>>>,
    groups: RwLock<Vec<Flag>>,
    stop_all: Flag,
    tree_pause: Flag,
    reason: Mutex<Option<StopReason>>,
    changed: AtomicBool,
    watcher: OnceLock<Arc<Waker>>,
    /// In a child process: the region its entries live in (see [`Registry::attached`]).
    link: OnceLock<Arc<Region>>,
    clocks: Clocks,
}

impl Registry {
    /// A registry whose root runner will use `stop_all` as its stop flag and `tree_pause` as
    /// the waiting flag every processor watches.
    pub fn new() -> Arc<Self> {
        Self::with_clocks(Clocks::SYSTEM)
    }

    /// A registry whose entries stamp times with `clocks` (tests inject clocks they step).
    pub fn with_clocks(clocks: Clocks) -> Arc<Self> {
        Arc::new(Registry {
            entries: RwLock::new(Vec::new()),
            groups: RwLock::new(Vec::new()),
            stop_all: Flag::new("stop-all"),
            tree_pause: Flag::new("all"),
            reason: Mutex::new(None),
            changed: AtomicBool::new(false),
            watcher: OnceLock::new(),
            link: OnceLock::new(),
            clocks,
        })
    }

    /// The clocks this tree's entries are stamped with.
    pub fn clocks(&self) -> Clocks {
        self.clocks
    }

    /// The registry of a child process: its entries live in `region` (where the parent
    /// process sees them), its stop-all and whole-tree pause flags are the parent tree's.
    pub(crate) fn attached(region: Arc<Region>, stop_all: Flag, tree_pause: Flag) -> Arc<Self> {
        let r = Arc::new(Registry {
            entries: RwLock::new(Vec::new()),
            groups: RwLock::new(Vec::new()),
            stop_all,
            tree_pause,
            reason: Mutex::new(None),
            changed: AtomicBool::new(false),
            watcher: OnceLock::new(),
            link: OnceLock::new(),
            clocks: Clocks::SYSTEM,
        });
        region.set_registry(&r);
        let _ = r.link.set(region);
        r
    }

    /// Registers the entry of a child that runs in another process, in `region` (its record
    /// lives there).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn register_in(
        self: &Arc<Self>,
        region: &Arc<Region>,
        name: String,
        path: String,
        kind: Kind,
        watch_above: &[Flag],
        groups: &[Flag],
        accepts: Vec<String>,
    ) -> Result<Arc<Entry>, ShmError> {
        for f in groups {
            self.add_group(f);
        }
        region.set_registry(self);
        let e = region.register(self, &name, &path, kind, watch_above, accepts, false)?;
        self.entries
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .push(e.clone());
        self.notify_changed();
        Ok(e)
    }

    /// In a child process: adds the entry of the subtree's top processor (registered by the
    /// parent).
    pub(crate) fn push_own(&self, e: Arc<Entry>) {
        self.entries
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .push(e);
    }

    /// The region this registry's entries live in (in a child process).
    pub(crate) fn region(&self) -> Option<&Arc<Region>> {
        self.link.get()
    }

    /// Adds an entry a child process registered (the relay finds it in the region).
    pub(crate) fn adopt(&self, e: Arc<Entry>) -> Result<(), String> {
        let mut entries = self.entries.write().unwrap_or_else(|e| e.into_inner());
        if entries.iter().any(|x| x.name == e.name || x.path == e.path) {
            return Err(format!(
                "a child registered '{}' ({}), a name already in the tree; not shown",
                e.name, e.path
            ));
        }
        entries.push(e);
        drop(entries);
        self.notify_changed();
        Ok(())
    }

    /// The flag whose being set stops the whole tree.
    pub fn stop_all_flag(&self) -> &Flag {
        &self.stop_all
    }

    /// The waiting flag shared by the whole tree (SIGUSR1 / SIGUSR2, `ctl pause` with no name).
    pub fn tree_pause(&self) -> &Flag {
        &self.tree_pause
    }

    /// Asks the whole tree to stop. The first reason given is kept.
    pub fn request_stop_all(&self, reason: StopReason) {
        {
            let mut r = self.reason.lock().unwrap_or_else(|e| e.into_inner());
            if r.is_none() {
                if let Some(region) = self.link.get() {
                    region.request_stop_all(&reason);
                }
                *r = Some(reason);
            }
        }
        self.stop_all.set();
    }

    pub fn stop_reason(&self) -> Option<StopReason> {
        self.reason
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn is_stopping(&self) -> bool {
        self.stop_all.is_set()
    }

    /// Registers a new processor entry (called by runners as they start children). In a child
    /// process the entry lives in the region shared with the parent.
    pub(crate) fn register(
        self: &Arc<Self>,
        name: String,
        path: String,
        kind: Kind,
        watch_above: &[Flag],
        groups: &[Flag],
        accepts: Vec<String>,
    ) -> Arc<Entry> {
        for f in groups {
            self.add_group(f);
        }
        if let Some(region) = self.link.get() {
            match region.register(self, &name, &path, kind, watch_above, accepts.clone(), true) {
                Ok(e) => {
                    self.entries
                        .write()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(e.clone());
                    return e;
                }
                Err(why) => log::error!("{path}: {why}; its state is not shown by the parent"),
            }
        }
        let e = Entry::new(self, name, path, kind, None, watch_above, accepts);
        self.entries
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .push(e.clone());
        self.notify_changed();
        e
    }

    /// Registers the root processor: its stop flag is the stop-all flag and it watches the
    /// whole tree's waiting flag.
    pub(crate) fn register_root(
        self: &Arc<Self>,
        name: &str,
        kind: Kind,
        accepts: Vec<String>,
    ) -> Arc<Entry> {
        let e = Entry::new(
            self,
            name.to_owned(),
            name.to_owned(),
            kind,
            Some(self.stop_all.clone()),
            std::slice::from_ref(&self.tree_pause),
            accepts,
        );
        self.entries
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .push(e.clone());
        self.notify_changed();
        e
    }

    /// Makes a waiting flag findable by name (`harmony ctl pause GROUP`).
    pub fn add_group(&self, f: &Flag) {
        if f.same(&self.tree_pause) {
            return;
        }
        let mut g = self.groups.write().unwrap_or_else(|e| e.into_inner());
        if !g.iter().any(|x| x.same(f)) {
            g.push(f.clone());
        }
    }

    pub fn entries(&self) -> Vec<Arc<Entry>> {
        self.entries
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// [`Registry::entries`] into `out` (cleared first): a periodic reader on a timed thread
    /// reuses one vector instead of allocating a new one each time.
    pub fn entries_into(&self, out: &mut Vec<Arc<Entry>>) {
        out.clear();
        out.extend(
            self.entries
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .cloned(),
        );
    }

    pub fn find(&self, name: &str) -> Option<Arc<Entry>> {
        self.entries
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .find(|e| e.name == name || e.path == name)
            .cloned()
    }

    pub fn group(&self, name: &str) -> Option<Flag> {
        self.groups
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .find(|f| f.name() == name)
            .cloned()
    }

    pub fn group_names(&self) -> Vec<String> {
        self.groups
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|f| f.name().to_owned())
            .collect()
    }

    /// The pause flag for `target`: a processor's own flag, a named group, or (None / "all")
    /// the whole tree's.
    pub fn pause_flag(&self, target: Option<&str>) -> Result<Flag, LookupError> {
        match target {
            None | Some("all") => Ok(self.tree_pause.clone()),
            Some(t) => {
                if let Some(e) = self.find(t) {
                    Ok(e.pause.clone())
                } else if let Some(g) = self.group(t) {
                    Ok(g)
                } else {
                    Err(LookupError::Unknown(t.to_owned()))
                }
            }
        }
    }

    /// Delivers a named signal to `to`, or to every processor that accepts it.
    /// Returns the paths it reached.
    pub fn send_signal(&self, sig: Signal, to: Option<&str>) -> Result<Vec<String>, LookupError> {
        match to {
            Some(t) => {
                let e = self
                    .find(t)
                    .ok_or_else(|| LookupError::Unknown(t.to_owned()))?;
                if !e.accepts(sig.name()) {
                    return Err(LookupError::NotAccepted {
                        proc: e.name.clone(),
                        signal: sig.name().to_owned(),
                        accepts: if e.accepted().is_empty() {
                            "none".into()
                        } else {
                            e.accepted().join(", ")
                        },
                    });
                }
                let name = sig.name().to_owned();
                e.deliver(sig)
                    .map_err(|why| LookupError::refused(&e, &name, why))?;
                Ok(vec![e.path.clone()])
            }
            None => {
                let mut reached = Vec::new();
                let mut refused = None;
                for e in self.entries() {
                    if e.accepts(sig.name()) && !e.state().is_final() {
                        match e.deliver(sig.clone()) {
                            Ok(()) => reached.push(e.path.clone()),
                            Err(why) => refused = Some(LookupError::refused(&e, sig.name(), why)),
                        }
                    }
                }
                if reached.is_empty() {
                    return Err(
                        refused.unwrap_or_else(|| LookupError::NoReceiver(sig.name().to_owned()))
                    );
                }
                Ok(reached)
            }
        }
    }

    /// Processors that have been inside one piece of work for longer than `limit_ms` (stuck),
    /// measured on the boot clock: a step of the wall clock neither makes nor hides one.
    pub fn stuck(&self, limit_ms: u64) -> Vec<String> {
        let now = self.clocks.boot();
        self.entries()
            .iter()
            .filter(|e| e.busy_for_ms(now).is_some_and(|b| b > limit_ms))
            .map(|e| e.path.clone())
            .collect()
    }

    /// Whether the whole tree has started: the root runner's `before` (which starts every child
    /// in order, recursively) has finished.
    pub fn tree_started(&self) -> bool {
        self.entries
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .first()
            .is_some_and(|root| root.state() != super::state::ProcState::Starting)
    }

    /// Snapshots of every entry, in registration (start) order.
    pub fn snapshot(&self) -> Vec<EntrySnapshot> {
        self.entries().iter().map(|e| e.snapshot()).collect()
    }

    /// Sets who is woken when any entry changes (the state-file writer).
    pub fn set_watcher(&self, w: Arc<Waker>) {
        let _ = self.watcher.set(w);
    }

    pub(crate) fn notify_changed(&self) {
        if !self.changed.swap(true, Ordering::AcqRel)
            && let Some(w) = self.watcher.get()
        {
            w.wake();
        }
    }

    /// Whether anything changed since the last call.
    pub fn take_changed(&self) -> bool {
        self.changed.swap(false, Ordering::AcqRel)
    }
}
