//! Children as processes (the seed's `ConcurrencyType.PROCESSES`): how a runner starts a child
//! in a process of its own, watches it, and how that process runs its subtree.
//!
//! # Starting a child
//! A child process is the same static binary, re-executed (`/proc/self/exe`), never a `fork`
//! that goes on running Rust code after threads exist. The parent passes, in the environment
//! variable [`ENV`], which *builder* makes the subtree (a constructor registered by name with
//! [`register_builders`]; in the firmware, from the board file), the builder's argument, the
//! region's descriptor and the subtree's slot in it. The child's `main` calls
//! [`child_main_if_requested`] first thing; it builds the subtree anew and runs it, so a
//! restarted child is a fresh one. The only code between `fork` and `exec` clears the region
//! descriptor's close-on-exec flag and sets `PR_SET_PDEATHSIG` (both async-signal-safe system
//! calls): every other descriptor stays close-on-exec, so a child sees its own region only.
//!
//! # What a child shares with its parent
//! One [`Region`] per process subtree (see [`super::shm`]): its processors' state entries,
//! their stop, pause and waiting flags, their mailboxes, the record rings the topology
//! declared, and a ring for its log records. From the outside nothing changes: the parent's
//! registry shows every processor of the subtree (with its pid), `harmony ctl` pauses and
//! signals them, the state files list them, their log lines are in the one application log.
//!
//! # Supervision
//! Each child is watched through a pidfd (`pidfd_open` + `poll`) by a thread of its own, which
//! reaps it and hands the runner an exit like a thread child's: a clean stop, a failure (with
//! the cause the child wrote), or a death by signal (SIGSEGV, SIGABRT, SIGKILL / out of memory).
//! The runner's policy then applies as for a thread (restart within the intensity limit, or
//! stop all); the cause is in the child's state note, hence in `ctl status`, the state files and
//! `events.log`. A child dies with its parent (`PR_SET_PDEATHSIG`; checked again in the child
//! in case the parent died first) and ignores SIGTERM, SIGINT, SIGHUP, SIGUSR1 and SIGUSR2:
//! those are the parent's to handle, and it stops its children through their stop flags, in
//! reverse start order, like threads. A child that does not stop within its runner's deadline
//! is killed.
//!
//! # Test binaries
//! An integration test binary cannot call a hook at the top of `main`, so it registers a test
//! that calls [`child_main_if_requested`] and tells the framework how to re-execute itself
//! into that test with [`set_child_args`] (libtest's `--exact NAME`).

use std::any::Any;
use std::collections::HashMap;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, ExitStatus};
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock, RwLock};
use std::thread::JoinHandle;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::processor::{BoxError, Context, Outcome, Processor, panic_message, run_hooks};
use super::registry::Registry;
use super::ring::Plain;
use super::shm::{LogRec, Region, ShmError};
use super::state::ProcState;
use super::{Consumer, Producer};

/// The environment variable that makes a process a child (see the module docs).
pub const ENV: &str = "HARMONY_CHILD";

/// Exit codes of a child process.
pub const EXIT_FAILED: i32 = 1;
pub const EXIT_PANICKED: i32 = 2;
/// The child could not set itself up (bad spec, region, unknown builder).
pub const EXIT_SETUP: i32 = 3;
/// The parent was gone before the child could tie its life to it.
pub const EXIT_ORPHAN: i32 = 4;

/// Makes a subtree by name, in the process that runs it.
pub type BuildFn = fn(&mut Build<'_>) -> Result<Box<dyn Processor>, BoxError>;

static BUILDERS: RwLock<Vec<(&'static str, BuildFn)>> = RwLock::new(Vec::new());

/// Adds named constructors (the same list in the parent and in every child).
pub fn register_builders(list: &[(&'static str, BuildFn)]) {
    let mut b = BUILDERS.write().unwrap_or_else(|e| e.into_inner());
    for (n, f) in list {
        match b.iter_mut().find(|(x, _)| x == n) {
            Some(slot) => slot.1 = *f,
            None => b.push((n, *f)),
        }
    }
}

fn builder(name: &str) -> Option<BuildFn> {
    BUILDERS
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, f)| *f)
}

/// Why a subtree could not be built or a child started.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error("no builder named '{0}' (register it with process::register_builders)")]
    NoBuilder(String),
    #[error("{0}")]
    Shm(#[from] ShmError),
    #[error("queue '{0}' was not handed to this subtree")]
    NoQueue(String),
    #[error("cannot start child process {name}: {source}")]
    Spawn { name: String, source: io::Error },
    #[error("bad child specification in ${ENV}: {0}")]
    Spec(String),
}

/// Queue ends a parent hands to a subtree built in its own process (thread mode).
#[derive(Default)]
pub struct Handoff(HashMap<String, Box<dyn Any + Send>>);

impl Handoff {
    pub fn put<T: Send + 'static>(&mut self, name: &str, v: T) {
        self.0.insert(name.to_owned(), Box::new(v));
    }

    fn take<T: 'static>(&mut self, name: &str) -> Option<T> {
        let b = self.0.remove(name)?;
        match b.downcast::<T>() {
            Ok(v) => Some(*v),
            Err(b) => {
                self.0.insert(name.to_owned(), b);
                None
            }
        }
    }
}

/// What a builder gets: its name and argument, and the queue ends of its subtree, from the
/// region (in a child process) or handed over by the parent (built in the parent's process).
pub struct Build<'a> {
    name: &'a str,
    arg: &'a str,
    region: Option<&'a Arc<Region>>,
    handoff: &'a mut Handoff,
}

impl<'a> Build<'a> {
    pub(crate) fn new(
        name: &'a str,
        arg: &'a str,
        region: Option<&'a Arc<Region>>,
        handoff: &'a mut Handoff,
    ) -> Self {
        Build {
            name,
            arg,
            region,
            handoff,
        }
    }

    /// The processor's name (the entry the parent registered).
    pub fn name(&self) -> &str {
        self.name
    }

    /// The builder's argument, as the parent gave it.
    pub fn arg(&self) -> &str {
        self.arg
    }

    /// Whether the subtree runs in a process of its own.
    pub fn in_child_process(&self) -> bool {
        self.region.is_some_and(|r| r.me() != 0)
    }

    /// The producing end of queue `name`.
    pub fn producer<T: Plain>(&mut self, name: &str) -> Result<Producer<T>, ProcessError> {
        if let Some(p) = self.handoff.take::<Producer<T>>(name) {
            return Ok(p);
        }
        match self.region {
            Some(r) => Ok(r.producer::<T>(name)?),
            None => Err(ProcessError::NoQueue(name.to_owned())),
        }
    }

    /// The consuming end of queue `name`.
    pub fn consumer<T: Plain>(&mut self, name: &str) -> Result<Consumer<T>, ProcessError> {
        if let Some(c) = self.handoff.take::<Consumer<T>>(name) {
            return Ok(c);
        }
        match self.region {
            Some(r) => Ok(r.consumer::<T>(name)?),
            None => Err(ProcessError::NoQueue(name.to_owned())),
        }
    }
}

/// Runs builder `builder` in this process.
pub(crate) fn build_here(
    builder_name: &str,
    name: &str,
    arg: &str,
    region: Option<&Arc<Region>>,
    handoff: &mut Handoff,
) -> Result<Box<dyn Processor>, BoxError> {
    let f =
        builder(builder_name).ok_or_else(|| ProcessError::NoBuilder(builder_name.to_owned()))?;
    let mut b = Build::new(name, arg, region, handoff);
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&mut b))) {
        Ok(r) => r,
        Err(p) => Err(format!("builder {builder_name} panicked: {}", panic_message(&*p)).into()),
    }
}

static CHILD_ARGS: OnceLock<Vec<String>> = OnceLock::new();

/// How a child process is started: the arguments after the program, `{}` standing for the
/// subtree's name (default: the hidden subcommand `__child {}`, which only shows in `ps`; the
/// child never parses it). A test binary gives libtest's arguments that select its child-entry
/// test. Children pass the same arguments on to their own children.
pub fn set_child_args(args: &[&str]) {
    let _ = CHILD_ARGS.set(args.iter().map(|s| s.to_string()).collect());
}

fn child_args_template() -> Vec<String> {
    CHILD_ARGS
        .get()
        .cloned()
        .unwrap_or_else(|| vec!["__child".into(), "{}".into()])
}

fn child_args(name: &str) -> Vec<String> {
    child_args_template()
        .into_iter()
        .map(|a| a.replace("{}", name))
        .collect()
}

#[derive(Serialize, Deserialize)]
struct Spec {
    fd: RawFd,
    region: String,
    slot: usize,
    name: String,
    build: String,
    arg: String,
    ppid: u32,
    level: String,
    stop_ref: u32,
    pause_ref: u32,
    args: Vec<String>,
}

/// What a runner needs to start a child process.
pub(crate) struct Launch<'a> {
    pub region: &'a Arc<Region>,
    pub slot: usize,
    pub name: &'a str,
    pub path: &'a str,
    pub build: &'a str,
    pub arg: &'a str,
    pub stop_ref: u32,
    pub pause_ref: u32,
}

/// A running child process and the thread watching it.
pub(crate) struct ProcessChild {
    pid: u32,
    pidfd: Arc<OwnedFd>,
    watcher: Option<JoinHandle<()>>,
}

fn pidfd_open(pid: u32) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open(2) with a pid we have not reaped (so it cannot have been reused).
    let r = unsafe { nix::libc::syscall(nix::libc::SYS_pidfd_open, pid as i32, 0) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor the kernel just gave us.
    let fd = unsafe { OwnedFd::from_raw_fd(r as RawFd) };
    let _ = nix::fcntl::fcntl(
        &fd,
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
    );
    Ok(fd)
}

fn pidfd_kill(fd: &OwnedFd, sig: nix::sys::signal::Signal) {
    // SAFETY: pidfd_send_signal(2) on our pidfd; race-free against pid reuse.
    unsafe {
        nix::libc::syscall(
            nix::libc::SYS_pidfd_send_signal,
            fd.as_raw_fd(),
            sig as i32,
            std::ptr::null::<nix::libc::siginfo_t>(),
            0u32,
        );
    }
}

/// The name of a signal with what it usually means for a crashed child.
fn death(sig: i32, core: bool) -> String {
    use nix::sys::signal::Signal as S;
    let (name, what) = match S::try_from(sig) {
        Ok(S::SIGSEGV) => ("SIGSEGV", "memory fault"),
        Ok(S::SIGBUS) => ("SIGBUS", "memory fault"),
        Ok(S::SIGABRT) => ("SIGABRT", "abort"),
        Ok(S::SIGILL) => ("SIGILL", "illegal instruction"),
        Ok(S::SIGFPE) => ("SIGFPE", "arithmetic fault"),
        Ok(S::SIGKILL) => ("SIGKILL", "killed: kill -9 or out of memory"),
        Ok(S::SIGSYS) => ("SIGSYS", "system call refused by the sandbox"),
        Ok(s) => (s.as_str(), "signal"),
        Err(_) => ("signal", "unknown"),
    };
    format!(
        "killed by {name} ({what}{})",
        if core { ", core dumped" } else { "" }
    )
}

/// How a child's exit status and its written cause make an [`Outcome`].
fn outcome_of(status: ExitStatus, cause: &str) -> Outcome {
    let with = |s: String| {
        if cause.is_empty() {
            s
        } else {
            format!("{s}: {cause}")
        }
    };
    match (status.code(), status.signal()) {
        (Some(0), _) => Outcome::Completed,
        (Some(EXIT_FAILED), _) => Outcome::Failed(with("process failed".into())),
        (Some(EXIT_PANICKED), _) => Outcome::Panicked(with("process panicked".into())),
        (Some(c), _) => Outcome::Failed(with(format!("process exited with code {c}"))),
        (None, Some(sig)) => {
            Outcome::Failed(format!("process {}", death(sig, status.core_dumped())))
        }
        (None, None) => Outcome::Failed("process ended".into()),
    }
}

impl ProcessChild {
    /// Starts the child and its watcher; `on_exit` runs on the watcher thread once the child is
    /// reaped.
    pub(crate) fn spawn(
        l: &Launch<'_>,
        on_exit: Box<dyn FnOnce(Outcome) + Send>,
    ) -> Result<Self, ProcessError> {
        let spawn_err = |source| ProcessError::Spawn {
            name: l.name.to_owned(),
            source,
        };
        let region = l.region.clone();
        let cells = region
            .cells(l.slot)
            .ok_or_else(|| spawn_err(io::Error::other("no such slot")))?;
        cells.started.store(0, Ordering::Release);
        cells.exit_cause.set("");
        let fd = region.fd().as_raw_fd();
        let spec = Spec {
            fd,
            region: region.name().to_owned(),
            slot: l.slot,
            name: l.name.to_owned(),
            build: l.build.to_owned(),
            arg: l.arg.to_owned(),
            ppid: super::cells::my_pid(),
            level: log::max_level().to_string(),
            stop_ref: l.stop_ref,
            pause_ref: l.pause_ref,
            args: child_args_template(),
        };
        let spec = serde_json::to_string(&spec).map_err(|e| spawn_err(io::Error::other(e)))?;
        let mut cmd = Command::new("/proc/self/exe");
        if let Some(n) = std::env::args_os().next() {
            cmd.arg0(n);
        }
        cmd.args(child_args(l.name)).env(ENV, spec);
        // SAFETY: only async-signal-safe system calls run between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                // The region, and no other descriptor, crosses the exec.
                if nix::libc::fcntl(fd, nix::libc::F_SETFD, 0) < 0 {
                    return Err(io::Error::last_os_error());
                }
                if nix::libc::prctl(
                    nix::libc::PR_SET_PDEATHSIG,
                    nix::libc::SIGKILL as nix::libc::c_ulong,
                    0,
                    0,
                    0,
                ) < 0
                {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = cmd.spawn().map_err(spawn_err)?;
        let pid = child.id();
        let pidfd = match pidfd_open(pid) {
            Ok(p) => Arc::new(p),
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(spawn_err(e));
            }
        };
        cells.pid.store(pid, Ordering::Release);
        let (pfd, path, slot) = (pidfd.clone(), l.path.to_owned(), l.slot);
        let watcher = std::thread::Builder::new()
            .name(format!("watch-{}", super::cells::cut(l.name, 9)))
            .spawn(move || {
                // Wait for the death through the pidfd (no polling, no timeout), then reap.
                loop {
                    let mut fds = [nix::poll::PollFd::new(
                        std::os::fd::AsFd::as_fd(&*pfd),
                        nix::poll::PollFlags::POLLIN,
                    )];
                    match nix::poll::poll(&mut fds, nix::poll::PollTimeout::NONE) {
                        Err(nix::errno::Errno::EINTR) => continue,
                        _ => break,
                    }
                }
                let status = child.wait();
                let outcome = match status {
                    Ok(st) => {
                        let cause = region
                            .cells(slot)
                            .map(|c| c.exit_cause.get())
                            .unwrap_or_default();
                        outcome_of(st, &cause)
                    }
                    Err(e) => Outcome::Failed(format!("cannot reap the process: {e}")),
                };
                region.subtree_ended(&path, &outcome);
                on_exit(outcome);
            })
            .map_err(spawn_err)?;
        Ok(ProcessChild {
            pid,
            pidfd,
            watcher: Some(watcher),
        })
    }

    pub(crate) fn pid(&self) -> u32 {
        self.pid
    }

    /// Kills the child (SIGKILL); its watcher then reports the death.
    pub(crate) fn kill(&self) {
        pidfd_kill(&self.pidfd, nix::sys::signal::Signal::SIGKILL);
    }

    /// Waits for the watcher (after it reported the exit).
    pub(crate) fn join(&mut self) {
        if let Some(w) = self.watcher.take() {
            let _ = w.join();
        }
    }
}

impl Region {
    /// After a child process ended: every processor of its subtree that had not stopped is
    /// marked failed (the top one with the cause), and nobody's pid points at it any more.
    pub(crate) fn subtree_ended(&self, top: &str, outcome: &Outcome) {
        let cause = match outcome {
            Outcome::Completed => String::new(),
            Outcome::Failed(c) | Outcome::Panicked(c) => c.clone(),
        };
        let below = format!("{top}/");
        for i in 0..self.entries_used() {
            let Some(c) = self.cells(i) else { continue };
            let path = c.path.get();
            if path != top && !path.starts_with(&below) {
                continue;
            }
            c.pid.store(0, Ordering::Release);
            c.busy.store(0, Ordering::Relaxed);
            let st = c.state.load(Ordering::Acquire);
            let final_ = [ProcState::Stopped as u32, ProcState::Failed as u32].contains(&st);
            if !cause.is_empty() && (!final_ || path == top) {
                c.state.store(ProcState::Failed as u32, Ordering::Release);
                c.since_ns.store(crate::clock::boot_ns(), Ordering::Relaxed);
                if path == top {
                    c.note.set(&format!("last exit: {cause}"));
                } else {
                    c.note.set("its process ended");
                }
            }
        }
        if !cause.is_empty() {
            log::error!("{top}: {cause}");
        }
        self.dirty_here();
    }
}

/// Called first thing in `main` (and by a test binary's child-entry test): when this process
/// was started as a child, runs its subtree and exits; otherwise returns at once.
pub fn child_main_if_requested(builders: &[(&'static str, BuildFn)]) {
    let Some(spec) = std::env::var_os(ENV) else {
        return;
    };
    register_builders(builders);
    let code = match run_child(&spec.to_string_lossy()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("harmony child process: {e}");
            EXIT_SETUP
        }
    };
    std::process::exit(code);
}

/// The application log of a child: records go into the region's log ring.
struct RingLogger {
    region: Arc<Region>,
    level: log::LevelFilter,
}

impl log::Log for RingLogger {
    fn enabled(&self, m: &log::Metadata<'_>) -> bool {
        m.level() <= self.level
    }

    fn log(&self, r: &log::Record<'_>) {
        if !self.enabled(r.metadata()) {
            return;
        }
        let mut text = heapless::String::<400>::new();
        let _ = std::fmt::write(&mut Cut(&mut text), *r.args());
        let thread = std::thread::current();
        self.region.log(LogRec::new(
            r.level(),
            crate::clock::wall_ns(),
            thread.name().unwrap_or("?"),
            r.target(),
            &text,
        ));
    }

    fn flush(&self) {}
}

/// Writes what fits.
struct Cut<'a, const N: usize>(&'a mut heapless::String<N>);

impl<const N: usize> std::fmt::Write for Cut<'_, N> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let room = N - self.0.len();
        let _ = self.0.push_str(super::cells::cut(s, room));
        Ok(())
    }
}

fn ignore_signals() {
    use nix::sys::signal::{SigHandler, Signal as S, signal};
    for s in [S::SIGTERM, S::SIGINT, S::SIGHUP, S::SIGUSR1, S::SIGUSR2] {
        // SAFETY: installing SIG_IGN has no handler code to be unsafe about.
        let _ = unsafe { signal(s, SigHandler::SigIgn) };
    }
}

fn run_child(spec: &str) -> Result<i32, ProcessError> {
    let spec: Spec = serde_json::from_str(spec).map_err(|e| ProcessError::Spec(e.to_string()))?;
    let _ = CHILD_ARGS.set(spec.args.clone());
    // Die with the parent; if it died before we could say so, go now.
    let _ = nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL);
    if nix::unistd::getppid().as_raw() as u32 != spec.ppid {
        return Ok(EXIT_ORPHAN);
    }
    ignore_signals();
    // SAFETY: the parent opened this descriptor for us across exec.
    let fd = unsafe { OwnedFd::from_raw_fd(spec.fd) };
    let _ = nix::fcntl::fcntl(
        &fd,
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
    );
    let region = Region::attach(fd, &spec.region)?;
    let level = spec.level.parse().unwrap_or(log::LevelFilter::Info);
    if log::set_boxed_logger(Box::new(RingLogger {
        region: region.clone(),
        level,
    }))
    .is_ok()
    {
        log::set_max_level(level);
    }
    let (stop_all, tree_pause) = region.tree_flags(spec.stop_ref, spec.pause_ref);
    let registry = Registry::attached(region.clone(), stop_all, tree_pause);
    region.start_relay().map_err(|source| ProcessError::Spawn {
        name: spec.name.clone(),
        source,
    })?;
    let cells = region
        .cells(spec.slot)
        .ok_or_else(|| ProcessError::Spec("slot out of range".into()))?;
    let mut handoff = Handoff::default();
    let mut p = match build_here(
        &spec.build,
        &spec.name,
        &spec.arg,
        Some(&region),
        &mut handoff,
    ) {
        Ok(p) => p,
        Err(e) => {
            let msg = format!("cannot build: {}", super::processor::error_chain(&*e));
            log::error!("{}: {msg}", spec.name);
            cells.exit_cause.set(&msg);
            return Ok(EXIT_FAILED);
        }
    };
    cells.kind.store(p.kind().to_u32(), Ordering::Relaxed);
    cells.accepts.set(&p.signals().join(","));
    let entry = region
        .adopt_own(&registry, spec.slot)
        .ok_or_else(|| ProcessError::Spec("slot not registered".into()))?;
    registry.push_own(entry.clone());
    entry.waker.bind_current();
    let ctx = Context::new(entry, registry);
    let r2 = region.clone();
    let outcome = run_hooks(&mut *p, &ctx, || r2.mark_started(spec.slot));
    Ok(match outcome {
        Outcome::Completed => 0,
        Outcome::Failed(m) => {
            cells.exit_cause.set(&m);
            EXIT_FAILED
        }
        Outcome::Panicked(m) => {
            cells.exit_cause.set(&m);
            EXIT_PANICKED
        }
    })
}

/// How long a killed child gets to be reaped before the runner moves on.
pub(crate) const KILL_GRACE: Duration = Duration::from_secs(2);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deaths_are_named() {
        let st = ExitStatus::from_raw(11); // killed by SIGSEGV
        assert!(
            matches!(outcome_of(st, ""), Outcome::Failed(ref m) if m.contains("SIGSEGV") && m.contains("memory fault"))
        );
        let st = ExitStatus::from_raw(EXIT_FAILED << 8);
        assert_eq!(
            outcome_of(st, "budget spent"),
            Outcome::Failed("process failed: budget spent".into())
        );
        assert_eq!(outcome_of(ExitStatus::from_raw(0), ""), Outcome::Completed);
    }
}
