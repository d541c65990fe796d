//! The loop processor (the seed's `LoopProcessor`): work while active, wait while waiting.
//!
//! A [`Loop`] implements one iteration (`work`) and optional hooks; [`LoopProcessor`] turns it
//! into a [`Processor`]. Each iteration reads the stop flag and the waiting flags (a few atomic
//! loads), delivers mail to `on_signal`, and calls `became_active` / `became_inactive` on
//! changes. It never polls: a waiting loop, an idle loop and a periodic loop between ticks are
//! parked and woken by a flag change, a signal, stop, a producer, or their own deadline.
//!
//! A failing iteration is logged and counted and the loop goes on (the seed's behaviour) until
//! the [`ErrorBudget`] is spent; then the processor fails and its runner's policy applies.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::processor::{BoxError, Context, Processor, error_chain};
use super::signal::Signal;
use super::state::{Kind, ProcState};
use super::wake::park_until;

/// What the loop does after an iteration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Run again: at once, or at the next tick of a periodic loop.
    Continue,
    /// Nothing to do: sleep until woken (or until the next tick of a periodic loop).
    Idle,
    /// Nothing to do before `Instant` unless woken earlier.
    IdleUntil(Instant),
}

/// One loop: a unit of repeated work with hooks. All hooks but `work` have defaults.
pub trait Loop: Send + 'static {
    fn name(&self) -> &str;

    /// Named signals handled by [`Loop::on_signal`].
    fn signals(&self) -> Vec<String> {
        Vec::new()
    }

    fn before(&mut self, _ctx: &Context) -> Result<(), BoxError> {
        Ok(())
    }

    /// One iteration of work while active.
    fn work(&mut self, ctx: &Context) -> Result<Step, BoxError>;

    fn became_active(&mut self, _ctx: &Context) -> Result<(), BoxError> {
        Ok(())
    }

    fn became_inactive(&mut self, _ctx: &Context) -> Result<(), BoxError> {
        Ok(())
    }

    /// Called on each wake-up while waiting (the seed's `_wait_in_loop`); the loop then parks.
    fn waiting(&mut self, _ctx: &Context) -> Result<(), BoxError> {
        Ok(())
    }

    /// A named signal from the mailbox, active or not.
    fn on_signal(&mut self, _sig: &Signal, _ctx: &Context) -> Result<(), BoxError> {
        Ok(())
    }

    fn after(&mut self, _ctx: &Context) -> Result<(), BoxError> {
        Ok(())
    }
}

/// How many failing iterations a loop tolerates before it fails.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ErrorBudget {
    /// More than `max` errors within `window` fail the loop.
    pub max: u32,
    pub window: Duration,
}

impl ErrorBudget {
    /// Never fail on iteration errors (the seed's behaviour; errors are still counted).
    pub const UNLIMITED: ErrorBudget = ErrorBudget {
        max: u32::MAX,
        window: Duration::from_secs(1),
    };
}

impl Default for ErrorBudget {
    fn default() -> Self {
        ErrorBudget {
            max: 100,
            window: Duration::from_secs(10),
        }
    }
}

/// Loop settings.
#[derive(Clone, Debug)]
pub struct LoopConfig {
    /// Fixed-rate period (ticks at start + k * period, no drift). `None`: run as driven by work.
    pub period: Option<Duration>,
    pub error_budget: ErrorBudget,
    /// Pause after a failed iteration of a loop without a period, so a persistent fault does
    /// not spin a core.
    pub error_pause: Duration,
    /// Start active (the seed's `start_active=True`) or wait for a resume.
    pub start_active: bool,
}

impl Default for LoopConfig {
    fn default() -> Self {
        LoopConfig {
            period: None,
            error_budget: ErrorBudget::default(),
            error_pause: Duration::from_millis(10),
            start_active: true,
        }
    }
}

impl LoopConfig {
    pub fn every(period: Duration) -> Self {
        LoopConfig {
            period: Some(period),
            ..Default::default()
        }
    }
}

/// Why a loop failed.
#[derive(Debug, thiserror::Error)]
pub enum LoopError {
    #[error("error budget spent: {count} errors within {window:?}; last: {last}")]
    BudgetSpent {
        count: usize,
        window: Duration,
        last: String,
    },
}

/// A [`Loop`] run as a [`Processor`].
pub struct LoopProcessor<L: Loop> {
    inner: L,
    cfg: LoopConfig,
}

impl<L: Loop> LoopProcessor<L> {
    pub fn new(inner: L) -> Self {
        LoopProcessor {
            inner,
            cfg: LoopConfig::default(),
        }
    }

    pub fn with_config(inner: L, cfg: LoopConfig) -> Self {
        LoopProcessor { inner, cfg }
    }

    pub fn inner(&self) -> &L {
        &self.inner
    }

    pub fn into_inner(self) -> L {
        self.inner
    }
}

enum Pending {
    None,
    Tick(Instant),
    Idle(Option<Instant>),
}

struct Errors {
    budget: ErrorBudget,
    times: VecDeque<Instant>,
}

impl Errors {
    /// Counts one error; `Err` when the budget is spent.
    fn record(&mut self, ctx: &Context, what: &str, e: &BoxError) -> Result<(), BoxError> {
        let msg = error_chain(&**e);
        ctx.entry().add_error();
        log::warn!("{}: {what} error: {msg}", ctx.path());
        let now = Instant::now();
        self.times.push_back(now);
        while self
            .times
            .front()
            .is_some_and(|t| now.duration_since(*t) > self.budget.window)
        {
            self.times.pop_front();
        }
        if self.times.len() as u64 > self.budget.max as u64 {
            return Err(Box::new(LoopError::BudgetSpent {
                count: self.times.len(),
                window: self.budget.window,
                last: msg,
            }));
        }
        Ok(())
    }
}

impl<L: Loop> Processor for LoopProcessor<L> {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn kind(&self) -> Kind {
        Kind::Loop
    }

    fn signals(&self) -> Vec<String> {
        self.inner.signals()
    }

    fn before(&mut self, ctx: &Context) -> Result<(), BoxError> {
        if !self.cfg.start_active {
            // Start waiting until resumed, through the processor's own pause flag; set before
            // the runner moves on, so a resume sent after the start is never lost.
            ctx.entry().pause.set();
        }
        self.inner.before(ctx)
    }

    fn body(&mut self, ctx: &Context) -> Result<(), BoxError> {
        let mut errors = Errors {
            budget: self.cfg.error_budget,
            times: VecDeque::new(),
        };
        let mut active = false;
        let mut shown = false;
        let mut pending = Pending::None;
        let mut next_tick = Instant::now();
        let overruns = self.cfg.period.map(|_| ctx.metric("overruns"));
        loop {
            if ctx.should_stop() {
                break;
            }
            while let Some(sig) = ctx.take_signal() {
                if let Err(e) = self.inner.on_signal(&sig, ctx) {
                    errors.record(ctx, "signal", &e)?;
                }
            }
            let want = !ctx.should_wait();
            if want != active || !shown {
                let was_active = active;
                active = want;
                shown = true;
                let r = if active {
                    ctx.set_state(ProcState::Active);
                    next_tick = Instant::now();
                    pending = Pending::None;
                    self.inner.became_active(ctx)
                } else {
                    ctx.set_state(ProcState::Waiting);
                    if was_active {
                        self.inner.became_inactive(ctx)
                    } else {
                        Ok(())
                    }
                };
                if let Err(e) = r {
                    errors.record(ctx, "activity change", &e)?;
                }
            }
            if !active {
                if let Err(e) = self.inner.waiting(ctx) {
                    errors.record(ctx, "waiting", &e)?;
                }
                ctx.sleep_until(None);
                continue;
            }
            match pending {
                Pending::Tick(t) if Instant::now() < t => {
                    ctx.sleep_until(Some(t));
                    continue;
                }
                Pending::Idle(d) => {
                    pending = Pending::None;
                    if d.is_none_or(|d| Instant::now() < d) {
                        ctx.sleep_until(d);
                        continue;
                    }
                }
                _ => {}
            }
            ctx.entry().set_busy(true);
            let result = self.inner.work(ctx);
            ctx.entry().set_busy(false);
            let step = match result {
                Ok(s) => s,
                Err(e) => {
                    errors.record(ctx, "loop", &e)?;
                    if self.cfg.period.is_none() {
                        Step::IdleUntil(Instant::now() + self.cfg.error_pause)
                    } else {
                        Step::Continue
                    }
                }
            };
            pending = match step {
                Step::Continue => match self.cfg.period {
                    Some(p) => Pending::Tick(advance(&mut next_tick, p, overruns.as_deref())),
                    None => Pending::None,
                },
                Step::Idle => Pending::Idle(
                    self.cfg
                        .period
                        .map(|p| advance(&mut next_tick, p, overruns.as_deref())),
                ),
                Step::IdleUntil(d) => {
                    // The schedule continues from the deadline, not from missed ticks.
                    next_tick = d;
                    Pending::Idle(Some(d))
                }
            };
        }
        Ok(())
    }

    fn after(&mut self, ctx: &Context) -> Result<(), BoxError> {
        self.inner.after(ctx)
    }
}

/// The next fixed-rate tick after `next`; skips (and counts) ticks already missed.
fn advance(
    next: &mut Instant,
    p: Duration,
    overruns: Option<&std::sync::atomic::AtomicU64>,
) -> Instant {
    *next += p;
    let now = Instant::now();
    if *next < now {
        if let Some(o) = overruns {
            o.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        let missed = (now - *next).as_nanos() / p.as_nanos().max(1) + 1;
        *next += p * missed as u32;
    }
    *next
}

/// A loop built from a closure, for small processors and tests.
pub struct FnLoop<F> {
    name: String,
    f: F,
}

impl<F> FnLoop<F>
where
    F: FnMut(&Context) -> Result<Step, BoxError> + Send + 'static,
{
    pub fn new(name: impl Into<String>, f: F) -> Self {
        FnLoop {
            name: name.into(),
            f,
        }
    }
}

impl<F> Loop for FnLoop<F>
where
    F: FnMut(&Context) -> Result<Step, BoxError> + Send + 'static,
{
    fn name(&self) -> &str {
        &self.name
    }

    fn work(&mut self, ctx: &Context) -> Result<Step, BoxError> {
        (self.f)(ctx)
    }
}

/// Parks for `d` or until woken; for loops that must not run again too soon.
pub fn nap(d: Duration) {
    park_until(Some(Instant::now() + d));
}
