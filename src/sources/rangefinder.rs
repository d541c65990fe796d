//! The rangefinder source: one reading per tick at the board's rate.
//!
//! The device (a driver on the Pi's I2C bus, the PWM reader, or a driver on the simulated bus)
//! comes from an `open` function, so reconnecting is the same as connecting. A NACK or a
//! timeout is retried at once (up to `retries` times), counted by kind and shown in the state
//! note; it is never fatal. When the sensor stops answering for a while (unplugged), the
//! source drops it and tries to open and initialise it again every 2 s.
//!
//! Readings are integers in cm, so nothing non-finite can reach the logger from here; a
//! distance beyond the sensor's range ([`Rangefinder::max_range_cm`], e.g. 0xFFFF from a
//! garbled register) is dropped at intake and counted as `implausible` (issue #17), never
//! logged or sent as a measurement.

use std::sync::atomic::Ordering;
use std::time::Instant;

use super::Reopen;
use super::SourceOutputs;
use crate::clock::Stamp;
use crate::concurrency::Counter;
use crate::concurrency::{BoxError, Context, Loop, Step};
use crate::drivers::{FaultKind, RangeError, Rangefinder};
use crate::records::RangeRecord;

/// Opens (connects to) the rangefinder.
pub type Opener = Box<dyn FnMut() -> Result<Box<dyn Rangefinder>, RangeError> + Send>;

/// Settings of the rangefinder source.
pub struct RangeConfig {
    pub name: String,
    pub rate_hz: u32,
    /// Immediate retries of a failed measurement.
    pub retries: u32,
    /// Failed ticks in a row after which the sensor counts as gone.
    pub give_up_after: u32,
}

struct Metrics {
    readings: Counter,
    nacks: Counter,
    timeouts: Counter,
    bus_errors: Counter,
    retries: Counter,
    failed_ticks: Counter,
    reopens: Counter,
    /// The last valid distance, for `harmony top`'s history (issue #13).
    distance_cm: Counter,
    implausible: Counter,
}

/// The rangefinder source loop (run it with `LoopConfig::every(1 / rate)`).
pub struct RangeSource {
    cfg: RangeConfig,
    open: Opener,
    dev: Option<Box<dyn Rangefinder>>,
    reopen: Reopen,
    failing: u32,
    out: SourceOutputs<RangeRecord>,
    metrics: Option<Metrics>,
}

impl RangeSource {
    pub fn new(cfg: RangeConfig, open: Opener, out: SourceOutputs<RangeRecord>) -> Self {
        RangeSource {
            cfg,
            open,
            dev: None,
            reopen: Reopen::default(),
            failing: 0,
            out,
            metrics: None,
        }
    }

    fn count(&self, e: &RangeError) {
        if let Some(m) = &self.metrics {
            match e.kind {
                FaultKind::Nack => &m.nacks,
                FaultKind::Timeout => &m.timeouts,
                FaultKind::Bus => &m.bus_errors,
            }
            .fetch_add(1, Ordering::Relaxed);
        }
    }

    fn connect(&mut self, ctx: &Context, now: Instant) -> Step {
        self.reopen.attempted(now);
        let res = (self.open)().and_then(|mut d| {
            let rate = self.cfg.rate_hz.min(d.max_rate_hz());
            d.init(rate).map(|()| d)
        });
        match res {
            Ok(d) => {
                log::info!("{}: {} answering", ctx.path(), d.model());
                ctx.set_note(&format!("{} at {} Hz", d.model(), self.cfg.rate_hz));
                self.reopen.succeeded();
                self.failing = 0;
                self.dev = Some(d);
                Step::Continue
            }
            Err(e) => {
                self.count(&e);
                if self.reopen.failed() {
                    log::warn!("{}: {e}; retrying every 2 s", ctx.path());
                }
                ctx.set_note(&format!("not answering: {e}; retrying every 2 s"));
                Step::IdleUntil(self.reopen.next())
            }
        }
    }
}

impl Loop for RangeSource {
    fn name(&self) -> &str {
        &self.cfg.name
    }

    fn before(&mut self, ctx: &Context) -> Result<(), BoxError> {
        self.out.publish(ctx);
        self.metrics = Some(Metrics {
            readings: ctx.metric("readings"),
            nacks: ctx.metric("nacks"),
            timeouts: ctx.metric("timeouts"),
            bus_errors: ctx.metric("bus_errors"),
            retries: ctx.metric("retries"),
            failed_ticks: ctx.metric("failed_ticks"),
            reopens: ctx.metric("reopens"),
            distance_cm: ctx.metric("distance_cm"),
            implausible: ctx.metric("implausible"),
        });
        Ok(())
    }

    fn work(&mut self, ctx: &Context) -> Result<Step, BoxError> {
        // Queue fill as of the previous iteration: once per iteration, not per record.
        self.out.update();
        let now = Instant::now();
        if self.dev.is_none() {
            if !self.reopen.due(now) {
                return Ok(Step::IdleUntil(self.reopen.next()));
            }
            if let Step::IdleUntil(t) = self.connect(ctx, now) {
                return Ok(Step::IdleUntil(t));
            }
        }
        let mut last_err = None;
        for attempt in 0..=self.cfg.retries {
            let dev = self.dev.as_mut().expect("connected above");
            match dev.measure() {
                Ok(reading) => {
                    if let Some(r) = reading.filter(|r| r.distance_cm > dev.max_range_cm()) {
                        if let Some(m) = &self.metrics
                            && m.implausible.fetch_add(1, Ordering::Relaxed) == 0
                        {
                            log::warn!(
                                "{}: {} cm is beyond the {}'s range: dropped (counted as \
                                 `implausible` from now on)",
                                ctx.path(),
                                r.distance_cm,
                                dev.model()
                            );
                        }
                    } else if let Some(r) = reading {
                        let rec = RangeRecord {
                            stamp: Stamp::now(),
                            distance_cm: r.distance_cm,
                            strength: r.strength,
                            status: r.status,
                        };
                        self.out.logger.push(rec);
                        self.out.uplink.push(rec);
                        if let Some(m) = &self.metrics {
                            m.readings.fetch_add(1, Ordering::Relaxed);
                            if r.status == crate::records::RangeStatus::Ok {
                                m.distance_cm.store(r.distance_cm.into(), Ordering::Relaxed);
                            }
                        }
                    }
                    if self.failing > 0 {
                        let model = dev.model();
                        ctx.set_note(&format!("{model} at {} Hz", self.cfg.rate_hz));
                    }
                    self.failing = 0;
                    return Ok(Step::Continue);
                }
                Err(e) => {
                    self.count(&e);
                    if attempt < self.cfg.retries
                        && let Some(m) = &self.metrics
                    {
                        m.retries.fetch_add(1, Ordering::Relaxed);
                    }
                    last_err = Some(e);
                }
            }
        }
        self.failing += 1;
        if let Some(m) = &self.metrics {
            m.failed_ticks.fetch_add(1, Ordering::Relaxed);
        }
        let e = last_err.expect("at least one attempt");
        ctx.set_note(&format!("failing ({} ticks): {e}", self.failing));
        if self.failing >= self.cfg.give_up_after {
            log::warn!("{}: sensor gone ({e}); reconnecting every 2 s", ctx.path());
            self.dev = None;
            if let Some(m) = &self.metrics {
                m.reopens.fetch_add(1, Ordering::Relaxed);
            }
            self.reopen.attempted(now);
            self.reopen.failed();
            return Ok(Step::IdleUntil(self.reopen.next()));
        }
        Ok(Step::Continue)
    }
}
