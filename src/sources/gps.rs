//! The GPS source: NMEA 0183 from a UART.
//!
//! It sleeps in `poll(2)` on the port and its waker, feeds what arrives to the [`Intake`]
//! (gpsd-compatible framing and checksums), sends every accepted sentence exactly as received
//! to the logger, and the fixes assembled from them (one per epoch, see
//! [`FixBuilder`]) to the logger and the uplink. Bad checksums, garbage, over-long lines,
//! sentences the parser does not know and numbers that read as infinity or NaN (`non_finite`:
//! the sentence is logged raw but never becomes a fix value) are counted (metrics in the
//! state file and `harmony ctl status`), never fatal.
//!
//! The port vanishing (USB receiver unplugged, hung-up tty) closes it; it is reopened every
//! 2 s at most, the state note saying so. With `baud = "auto"` the source hunts like gpsd:
//! every rate in turn, 3 s each, until sentences with valid checksums arrive.

use std::path::PathBuf;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use nix::poll::{PollFlags, PollTimeout};

use super::Reopen;
use super::SourceOutputs;
use crate::clock::Stamp;
use crate::concurrency::Counter;
use crate::concurrency::{BoxError, Context, Loop, Step};
use crate::drivers::serial::{HUNT_RATES, Uart};
use crate::formats::nmea::{Event, FixBuilder, Intake, IntakeCounters, Parsed, sentence};
use crate::records::GpsRecord;

/// How the port's rate is chosen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Baud {
    Fixed(u32),
    /// gpsd-style hunting, starting at the given rate.
    Auto(u32),
}

/// How long a hunted rate gets to produce a valid sentence (gpsd: about 3 s).
pub const HUNT_DWELL: Duration = Duration::from_secs(3);

/// Settings of the GPS source.
#[derive(Clone, Debug)]
pub struct GpsConfig {
    pub name: String,
    pub device: PathBuf,
    pub baud: Baud,
    /// How long each rate gets while hunting ([`HUNT_DWELL`] by default).
    pub hunt_dwell: Duration,
}

struct Metrics {
    sentences: Counter,
    fixes: Counter,
    bad_checksum: Counter,
    no_checksum: Counter,
    overlong: Counter,
    fragments: Counter,
    noise_bytes: Counter,
    unparsed: Counter,
    non_finite: Counter,
    reopens: Counter,
    baud: Counter,
    /// The last fix's altitude in cm above mean sea level (0 below it), for `harmony top`'s
    /// history (issue #13).
    alt_msl_cm: Counter,
}

impl Metrics {
    fn new(ctx: &Context) -> Self {
        Metrics {
            sentences: ctx.metric("sentences"),
            fixes: ctx.metric("fixes"),
            bad_checksum: ctx.metric("bad_checksum"),
            no_checksum: ctx.metric("no_checksum"),
            overlong: ctx.metric("overlong"),
            fragments: ctx.metric("fragments"),
            noise_bytes: ctx.metric("noise_bytes"),
            unparsed: ctx.metric("unparsed"),
            non_finite: ctx.metric("non_finite"),
            reopens: ctx.metric("reopens"),
            baud: ctx.metric("baud"),
            alt_msl_cm: ctx.metric("alt_msl_cm"),
        }
    }

    fn publish(&self, c: &IntakeCounters) {
        self.sentences.store(c.accepted, Ordering::Relaxed);
        self.bad_checksum.store(c.bad_checksum, Ordering::Relaxed);
        self.no_checksum.store(c.no_checksum, Ordering::Relaxed);
        self.overlong.store(c.overlong, Ordering::Relaxed);
        self.fragments.store(c.fragments, Ordering::Relaxed);
        self.noise_bytes.store(c.noise_bytes, Ordering::Relaxed);
        self.unparsed.store(c.unparsed, Ordering::Relaxed);
        self.non_finite.store(c.non_finite, Ordering::Relaxed);
    }
}

struct Hunt {
    index: usize,
    deadline: Instant,
    locked: bool,
}

/// The GPS source loop.
pub struct GpsSource {
    cfg: GpsConfig,
    out: SourceOutputs<GpsRecord>,
    port: Option<Uart>,
    reopen: Reopen,
    intake: Intake,
    fixes: FixBuilder,
    hunt: Option<Hunt>,
    metrics: Option<Metrics>,
    buf: Box<[u8; 4096]>,
}

impl GpsSource {
    pub fn new(cfg: GpsConfig, out: SourceOutputs<GpsRecord>) -> Self {
        let hunt = match cfg.baud {
            Baud::Auto(start) => Some(Hunt {
                index: HUNT_RATES.iter().position(|&r| r == start).unwrap_or(1),
                deadline: Instant::now(),
                locked: false,
            }),
            Baud::Fixed(_) => None,
        };
        GpsSource {
            cfg,
            out,
            port: None,
            reopen: Reopen::default(),
            intake: Intake::new(),
            fixes: FixBuilder::default(),
            hunt,
            metrics: None,
            buf: Box::new([0; 4096]),
        }
    }

    /// What the intake has counted so far.
    pub fn counters(&self) -> IntakeCounters {
        self.intake.counters
    }

    fn current_baud(&self) -> u32 {
        match (&self.hunt, self.cfg.baud) {
            (Some(h), _) => HUNT_RATES[h.index],
            (None, Baud::Fixed(b) | Baud::Auto(b)) => b,
        }
    }

    fn open(&mut self, ctx: &Context, now: Instant) -> Step {
        self.reopen.attempted(now);
        let baud = self.current_baud();
        match Uart::open(&self.cfg.device, baud) {
            Ok(p) => {
                log::info!(
                    "{}: reading {} at {baud} baud",
                    ctx.path(),
                    self.cfg.device.display()
                );
                ctx.set_note(&format!("{} at {baud} baud", self.cfg.device.display()));
                self.reopen.succeeded();
                self.intake.reset();
                if let Some(h) = &mut self.hunt {
                    h.deadline = now + self.cfg.hunt_dwell;
                }
                if let Some(m) = &self.metrics {
                    m.baud.store(baud as u64, Ordering::Relaxed);
                }
                self.port = Some(p);
                Step::Continue
            }
            Err(e) => {
                if self.reopen.failed() {
                    log::warn!("{}: {e}; retrying every 2 s", ctx.path());
                }
                ctx.set_note(&format!("no device: {e}; retrying every 2 s"));
                Step::IdleUntil(self.reopen.next())
            }
        }
    }

    fn lost(&mut self, ctx: &Context, why: &str) {
        log::warn!(
            "{}: {} lost: {why}; reopening",
            ctx.path(),
            self.cfg.device.display()
        );
        ctx.set_note(&format!("device lost: {why}; reopening"));
        self.port = None;
        if let Some(m) = &self.metrics {
            m.reopens.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn next_hunt_rate(&mut self, ctx: &Context, now: Instant) {
        let Some(h) = &mut self.hunt else { return };
        h.index = (h.index + 1) % HUNT_RATES.len();
        h.deadline = now + self.cfg.hunt_dwell;
        let baud = HUNT_RATES[h.index];
        if let Some(p) = &mut self.port {
            match p.set_baud(baud) {
                Ok(()) => {
                    self.intake.reset();
                    ctx.set_note(&format!("hunting: trying {baud} baud"));
                    if let Some(m) = &self.metrics {
                        m.baud.store(baud as u64, Ordering::Relaxed);
                    }
                }
                Err(e) => self.lost(ctx, &e.to_string()),
            }
        }
    }

    /// Handles received bytes; returns whether a valid sentence arrived.
    fn ingest(&mut self, n: usize) -> bool {
        let stamp = Stamp::now();
        let (logger, uplink, fixes) = (&self.out.logger, &self.out.uplink, &mut self.fixes);
        let mut any = false;
        let (mut unparsed, mut non_finite) = (0, 0);
        let mut fix_count = 0;
        let mut alt = None;
        self.intake.feed(&self.buf[..n], |e| {
            if let Event::Accepted(bytes) = e {
                any = true;
                logger.push(GpsRecord::Sentence(sentence(stamp, bytes)));
                let parsed = fixes.update(stamp, bytes, |f| {
                    fix_count += 1;
                    alt = f.alt_msl_m.or(alt);
                    logger.push(GpsRecord::Fix(f));
                    uplink.push(GpsRecord::Fix(f));
                });
                match parsed {
                    Parsed::Understood => {}
                    Parsed::Unparsed => unparsed += 1,
                    Parsed::NonFinite => non_finite += 1,
                }
            }
        });
        self.intake.counters.unparsed += unparsed;
        self.intake.counters.non_finite += non_finite;
        if let Some(m) = &self.metrics {
            m.publish(&self.intake.counters);
            m.fixes.fetch_add(fix_count, Ordering::Relaxed);
            if let Some(a) = alt.filter(|a| a.is_finite()) {
                m.alt_msl_cm
                    .store((a * 100.0).max(0.0) as u64, Ordering::Relaxed);
            }
        }
        any
    }
}

impl GpsSource {
    /// One iteration (the loop's `work` without the queue gauges).
    fn step(&mut self, ctx: &Context) -> Result<Step, BoxError> {
        let now = Instant::now();
        if self.port.is_none() {
            if !self.reopen.due(now) {
                return Ok(Step::IdleUntil(self.reopen.next()));
            }
            let step = self.open(ctx, now);
            if self.port.is_none() {
                return Ok(step);
            }
        }
        if let Some(h) = &self.hunt
            && !h.locked
            && now >= h.deadline
        {
            self.next_hunt_rate(ctx, now);
            if self.port.is_none() {
                return Ok(Step::Continue);
            }
        }
        let timeout = match &self.hunt {
            Some(h) if !h.locked => {
                let ms = h
                    .deadline
                    .saturating_duration_since(now)
                    .as_millis()
                    .min(60_000) as u16;
                PollTimeout::from(ms.max(1))
            }
            _ => PollTimeout::NONE,
        };
        let port = self.port.as_mut().expect("opened above");
        let rev = super::wait_readable(ctx, port.fd(), timeout)?;
        let ready = rev.contains(PollFlags::POLLIN);
        let hup = rev.intersects(PollFlags::POLLHUP | PollFlags::POLLERR | PollFlags::POLLNVAL);
        if ready || hup {
            match port.read_available(&mut self.buf[..]) {
                Ok(0) if hup => self.lost(ctx, "hung up"),
                Ok(0) => {}
                Ok(n) => {
                    if self.ingest(n)
                        && let Some(h) = &mut self.hunt
                        && !h.locked
                    {
                        h.locked = true;
                        let baud = HUNT_RATES[h.index];
                        log::info!("{}: baud rate detected: {baud}", ctx.path());
                        ctx.set_note(&format!(
                            "{} at {baud} baud (detected)",
                            self.cfg.device.display()
                        ));
                    }
                }
                Err(e) => self.lost(ctx, &e.to_string()),
            }
        }
        Ok(Step::Continue)
    }
}

impl Loop for GpsSource {
    fn name(&self) -> &str {
        &self.cfg.name
    }

    fn before(&mut self, ctx: &Context) -> Result<(), BoxError> {
        self.out.publish(ctx);
        self.metrics = Some(Metrics::new(ctx));
        Ok(())
    }

    fn became_active(&mut self, _ctx: &Context) -> Result<(), BoxError> {
        // Sentences buffered while paused are stale: drop them.
        if let Some(p) = &self.port {
            p.flush_input();
        }
        self.intake.reset();
        Ok(())
    }

    fn work(&mut self, ctx: &Context) -> Result<Step, BoxError> {
        let step = self.step(ctx);
        self.out.update();
        step
    }

    fn after(&mut self, _ctx: &Context) -> Result<(), BoxError> {
        self.port = None;
        Ok(())
    }
}
