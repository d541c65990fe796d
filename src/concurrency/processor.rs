//! The unit of work: a [`Processor`] with before / body / after hooks (the seed's
//! `Processor.run`), and the [`Context`] it runs in.
//!
//! The runner calls the hooks in order on the processor's own thread and always calls `after`,
//! also when `before` or `body` returned an error or panicked. Errors are returned, logged with
//! the processor's path and decide the runner's policy; nothing is swallowed.

use std::any::Any;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::time::Instant;

use super::registry::{Registry, StopReason};
use super::signal::Signal;
use super::state::{Entry, Kind, ProcState};
use super::wake::{Waker, park_until};

/// The error type of processor hooks: any error from any module, boxed.
///
/// The framework does not know the errors of the processors it runs; each module has its own
/// concrete error enum, which converts into this with `?`.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A unit of work run by a runner on its own named thread.
pub trait Processor: Send + 'static {
    /// Unique name within the tree; the thread, the state file and `harmony ctl` use it.
    fn name(&self) -> &str;

    /// What kind of processor this is, for display.
    fn kind(&self) -> Kind {
        Kind::Plain
    }

    /// Named signals this processor reacts to (the seed's `register_signals`); `"*"` for all.
    fn signals(&self) -> Vec<String> {
        Vec::new()
    }

    /// Runs first; an error here skips `body` (but `after` still runs).
    fn before(&mut self, _ctx: &Context) -> Result<(), BoxError> {
        Ok(())
    }

    /// The work. Should return soon after `ctx.should_stop()` becomes true.
    fn body(&mut self, ctx: &Context) -> Result<(), BoxError>;

    /// Always runs last, whatever `before` and `body` did.
    fn after(&mut self, _ctx: &Context) -> Result<(), BoxError> {
        Ok(())
    }

    /// Whether this is the stand-in of a child built by name that has not been built yet.
    #[doc(hidden)]
    fn is_unbuilt(&self) -> bool {
        false
    }
}

/// What a processor sees of the tree it runs in.
#[derive(Clone)]
pub struct Context {
    entry: Arc<Entry>,
    registry: Arc<Registry>,
}

impl Context {
    pub(crate) fn new(entry: Arc<Entry>, registry: Arc<Registry>) -> Self {
        Context { entry, registry }
    }

    pub fn name(&self) -> &str {
        &self.entry.name
    }

    pub fn path(&self) -> &str {
        &self.entry.path
    }

    pub fn entry(&self) -> &Arc<Entry> {
        &self.entry
    }

    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    /// Whether this processor has been asked to stop. One atomic load.
    #[inline]
    pub fn should_stop(&self) -> bool {
        self.entry.stop.is_set()
    }

    /// Whether a waiting flag this processor watches is set. A few atomic loads.
    #[inline]
    pub fn should_wait(&self) -> bool {
        self.entry.should_wait()
    }

    /// Asks the whole tree to stop (the seed's `_stop_all_processes`), e.g. at a time limit.
    pub fn request_stop_all(&self, why: &str) {
        log::info!("{} requests stop-all: {why}", self.entry.path);
        self.registry
            .request_stop_all(StopReason::Finished(format!("{}: {why}", self.entry.path)));
    }

    /// The waker of this processor's thread (for queues and for `poll` sets).
    pub fn waker(&self) -> &Arc<Waker> {
        &self.entry.waker
    }

    /// Sleeps until `deadline` (`None`: until woken). Returns early on stop, flag changes, mail.
    pub fn sleep_until(&self, deadline: Option<Instant>) {
        if self.should_stop() || self.entry.has_mail() {
            return;
        }
        park_until(deadline);
    }

    /// Runs `wait` (a blocking wait for a device, e.g. `poll(2)`) without counting the time as
    /// work: a loop waiting for data is idle, not stuck, as far as the watchdog is concerned.
    pub fn wait_io<T>(&self, wait: impl FnOnce() -> T) -> T {
        self.entry.set_busy(false);
        let r = wait();
        self.entry.set_busy(true);
        r
    }

    /// The next named signal for this processor, if any.
    pub fn take_signal(&self) -> Option<Signal> {
        self.entry.take_signal()
    }

    /// Publishes a named counter in the status (see [`Entry::metric`]).
    pub fn metric(&self, name: &str) -> super::Counter {
        self.entry.metric(name)
    }

    /// Sets the remark shown beside the state.
    pub fn set_note(&self, note: &str) {
        self.entry.set_note(note);
    }

    pub fn set_state(&self, s: ProcState) {
        self.entry.set_state(s);
    }
}

/// How one run of a processor's hooks ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Completed,
    Failed(String),
    Panicked(String),
}

impl Outcome {
    pub fn is_failure(&self) -> bool {
        !matches!(self, Outcome::Completed)
    }
}

/// The text of a panic payload.
pub fn panic_message(p: &(dyn Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic with a non-string payload".to_owned()
    }
}

/// Formats an error with its chain of causes: `outer: inner: innermost`.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        s.push_str(": ");
        s.push_str(&c.to_string());
        src = c.source();
    }
    s
}

fn guarded(
    what: &str,
    path: &str,
    f: impl FnOnce() -> Result<(), BoxError>,
) -> Result<(), Outcome> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => {
            let msg = format!("{what}: {}", error_chain(&*e));
            log::error!("{path}: {msg}");
            Err(Outcome::Failed(msg))
        }
        Err(p) => {
            let msg = format!("{what} panicked: {}", panic_message(&*p));
            log::error!("{path}: {msg}");
            Err(Outcome::Panicked(msg))
        }
    }
}

/// Runs before / body / after of `p`, always calling `after`. `started` is called once
/// `before` succeeded (the runner uses it for ordered start).
pub(crate) fn run_hooks(p: &mut dyn Processor, ctx: &Context, started: impl FnOnce()) -> Outcome {
    let path = ctx.path().to_owned();
    ctx.set_state(ProcState::Starting);
    log::debug!("+ start {path}");
    let mut outcome = Outcome::Completed;
    match guarded("before", &path, || p.before(ctx)) {
        Ok(()) => {
            started();
            if ctx.entry().kind != Kind::Loop {
                ctx.set_state(ProcState::Active);
            }
            if let Err(o) = guarded("body", &path, || p.body(ctx)) {
                outcome = o;
            }
        }
        Err(o) => {
            started();
            outcome = o;
        }
    }
    ctx.set_state(ProcState::Stopping);
    if let Err(o) = guarded("after", &path, || p.after(ctx))
        && !outcome.is_failure()
    {
        outcome = o;
    }
    ctx.set_state(if outcome.is_failure() {
        ProcState::Failed
    } else {
        ProcState::Stopped
    });
    log::debug!("- stop {path} ({outcome:?})");
    outcome
}
