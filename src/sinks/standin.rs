//! A sink that could not start, and the stand-in that takes its place (issue #11).
//!
//! When the uplink cannot be built at start for a reason outside the board file (no
//! pseudo-terminal for the simulated radio, for example), the recording must go on: the logger
//! has its own queues and the sources must not notice. But the missing sink must not pass for a
//! working one either. The stand-in drains the sink's queues and counts what it gets (so the
//! sources see no drops that are not theirs), and shows the failure wherever one looks:
//!
//! * its entry's state is `failed` while the tree runs (`harmony ctl status`, `harmony top`,
//!   the state file `NAME.state`), with the note `FAILED to start: CAUSE; ...`, one error and
//!   the metric `failed=1`;
//! * the application log has an error line naming the cause, written once the log sink is up.
//!
//! Its state becomes `stopped` when the tree stops (it did not fail the tree: a failure there
//! would stop the recording, which is what this avoids); the note, error and metric stay.

use std::sync::atomic::Ordering;

use crate::concurrency::{BoxError, Context, Loop, ProcState, Signal, Step};
use crate::sinks::drain::{Counting, SinkInputs, SinkLoop};

/// Stands in for a sink that could not start; see the module docs.
pub struct FailedSink {
    inner: SinkLoop<Counting>,
    cause: String,
}

impl FailedSink {
    /// A stand-in named `name` (the missing sink's name) draining `inputs`.
    pub fn new(
        name: impl Into<String>,
        inputs: SinkInputs,
        cause: impl Into<String>,
        batch: std::time::Duration,
    ) -> Self {
        FailedSink {
            inner: SinkLoop::new(name, inputs, Counting::default(), batch),
            cause: cause.into(),
        }
    }
}

impl Loop for FailedSink {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn signals(&self) -> Vec<String> {
        self.inner.signals()
    }

    fn before(&mut self, ctx: &Context) -> Result<(), BoxError> {
        self.inner.before(ctx)?;
        ctx.set_note(&format!(
            "FAILED to start: {}; its records are counted, not handled",
            self.cause
        ));
        ctx.metric("failed").store(1, Ordering::Relaxed);
        ctx.entry().add_error();
        log::error!(
            "{}: FAILED to start: {}; the recording goes on without it (its records are counted, not handled)",
            ctx.path(),
            self.cause
        );
        Ok(())
    }

    fn work(&mut self, ctx: &Context) -> Result<Step, BoxError> {
        self.inner.work(ctx)
    }

    /// The loop says `active` whenever it (re)starts draining; the truth is `failed`.
    fn became_active(&mut self, ctx: &Context) -> Result<(), BoxError> {
        ctx.set_state(ProcState::Failed);
        Ok(())
    }

    fn on_signal(&mut self, sig: &Signal, ctx: &Context) -> Result<(), BoxError> {
        self.inner.on_signal(sig, ctx)
    }

    fn after(&mut self, ctx: &Context) -> Result<(), BoxError> {
        self.inner.after(ctx)
    }
}
