//! The CAN source: the flight controller's bus (socketcan on the Pi) or a replayed capture.
//!
//! Every frame goes to the logger; the uplink gets the frames whose IDs the board selects and
//! the DroneCAN NodeStatus frames (so the ground sees the flight controller's health). Error
//! frames are recorded like any other. The interface going away (HAT unplugged, link down) is
//! noticed as a read error; the socket is reopened every 2 s at most.

use std::sync::atomic::Ordering;
use std::time::Instant;

use nix::poll::PollTimeout;

use super::Reopen;
use super::SourceOutputs;
use crate::clock::Stamp;
use crate::concurrency::Counter;
use crate::concurrency::{BoxError, Context, Loop, Step};
use crate::drivers::can::CanBus;
use crate::formats::dronecan::{self, NODE_STATUS_ID, Transfer};
use crate::records::CanRecord;
use crate::sim::can_replay::{CanReplay, ReplayStep};

/// Where frames come from.
pub enum CanInput {
    /// A raw socket on this interface.
    Socket(String),
    /// A capture replayed at its timing (the simulated board).
    Replay(Box<CanReplay>),
}

/// Settings of the CAN source.
pub struct CanConfig {
    pub name: String,
    /// Raw IDs (11 or 29 bit) forwarded to the uplink.
    pub uplink_ids: Vec<u32>,
}

struct Metrics {
    frames: Counter,
    error_frames: Counter,
    to_uplink: Counter,
    reopens: Counter,
    malformed: Counter,
}

/// Frames handled per iteration before the loop checks its flags again.
const BATCH: usize = 512;

/// The CAN source loop.
pub struct CanSource {
    cfg: CanConfig,
    input: CanInput,
    bus: Option<CanBus>,
    reopen: Reopen,
    out: SourceOutputs<CanRecord>,
    metrics: Option<Metrics>,
    finished: bool,
}

/// Whether the uplink wants a frame.
pub fn wanted_by_uplink(ids: &[u32], f: &CanRecord) -> bool {
    if f.is_error() || f.is_remote() {
        return false;
    }
    ids.contains(&f.raw_id())
        || dronecan::decode(f).is_some_and(|d| {
            d.transfer
                == Transfer::Message {
                    type_id: NODE_STATUS_ID,
                }
        })
}

impl CanSource {
    pub fn new(cfg: CanConfig, input: CanInput, out: SourceOutputs<CanRecord>) -> Self {
        CanSource {
            cfg,
            input,
            bus: None,
            reopen: Reopen::default(),
            out,
            metrics: None,
            finished: false,
        }
    }

    #[inline]
    fn deliver(&self, f: CanRecord) {
        if let Some(m) = &self.metrics {
            m.frames.fetch_add(1, Ordering::Relaxed);
            if f.is_error() {
                m.error_frames.fetch_add(1, Ordering::Relaxed);
            }
        }
        if wanted_by_uplink(&self.cfg.uplink_ids, &f) {
            self.out.uplink.push(f);
            if let Some(m) = &self.metrics {
                m.to_uplink.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.out.logger.push(f);
    }

    fn replay(&mut self, ctx: &Context) -> Result<Step, BoxError> {
        let CanInput::Replay(r) = &mut self.input else {
            unreachable!("replay input")
        };
        let now = Instant::now();
        // One clock read for the batch: its frames are all due within a few milliseconds.
        let stamp = Stamp::now();
        let mut step = Step::Continue;
        let mut batch = [CanRecord::default(); 128];
        let mut n = 0;
        for _ in 0..BATCH {
            match r.next(now, stamp)? {
                ReplayStep::Frame(f) => {
                    batch[n] = f;
                    n += 1;
                    if n == batch.len() {
                        break;
                    }
                }
                ReplayStep::WaitUntil(t) => {
                    step = Step::IdleUntil(t);
                    break;
                }
                ReplayStep::Finished => {
                    if !self.finished {
                        self.finished = true;
                        ctx.set_note(&format!("replay of {} finished", r.capture_name()));
                        log::info!(
                            "{}: replay of {} finished ({} frames)",
                            ctx.path(),
                            r.capture_name(),
                            r.frames()
                        );
                    }
                    step = Step::Idle;
                    break;
                }
            }
        }
        let malformed = r.malformed();
        for f in &batch[..n] {
            self.deliver(*f);
        }
        if let Some(m) = &self.metrics {
            m.malformed.store(malformed, Ordering::Relaxed);
        }
        Ok(step)
    }

    fn socket(&mut self, ctx: &Context) -> Result<Step, BoxError> {
        let CanInput::Socket(iface) = &self.input else {
            unreachable!("socket input")
        };
        let now = Instant::now();
        if self.bus.is_none() {
            if !self.reopen.due(now) {
                return Ok(Step::IdleUntil(self.reopen.next()));
            }
            self.reopen.attempted(now);
            match CanBus::open(iface) {
                Ok(b) => {
                    log::info!("{}: reading {iface}", ctx.path());
                    ctx.set_note(&format!("reading {iface}"));
                    self.reopen.succeeded();
                    self.bus = Some(b);
                }
                Err(e) => {
                    if self.reopen.failed() {
                        log::warn!("{}: {e}; retrying every 2 s", ctx.path());
                    }
                    ctx.set_note(&format!("{e}; retrying every 2 s"));
                    return Ok(Step::IdleUntil(self.reopen.next()));
                }
            }
        }
        for _ in 0..BATCH {
            let res = self.bus.as_ref().expect("open").read();
            match res {
                Ok(Some(f)) => self.deliver(f),
                Ok(None) => {
                    let bus = self.bus.as_ref().expect("open");
                    super::wait_readable(ctx, bus.fd(), PollTimeout::NONE)?;
                    return Ok(Step::Continue);
                }
                Err(e) => {
                    log::warn!("{}: {iface}: {e}; reopening", ctx.path());
                    ctx.set_note(&format!("{iface}: {e}; reopening every 2 s"));
                    self.bus = None;
                    if let Some(m) = &self.metrics {
                        m.reopens.fetch_add(1, Ordering::Relaxed);
                    }
                    return Ok(Step::IdleUntil(self.reopen.next()));
                }
            }
        }
        Ok(Step::Continue)
    }
}

impl Loop for CanSource {
    fn name(&self) -> &str {
        &self.cfg.name
    }

    fn before(&mut self, ctx: &Context) -> Result<(), BoxError> {
        self.out.publish(ctx);
        self.metrics = Some(Metrics {
            frames: ctx.metric("frames"),
            error_frames: ctx.metric("error_frames"),
            to_uplink: ctx.metric("to_uplink"),
            reopens: ctx.metric("reopens"),
            malformed: ctx.metric("malformed_lines"),
        });
        if let CanInput::Replay(r) = &self.input {
            ctx.set_note(&format!("replaying {}", r.capture_name()));
        }
        Ok(())
    }

    fn work(&mut self, ctx: &Context) -> Result<Step, BoxError> {
        // Queue fill as of the previous iteration: once per iteration, not per record.
        self.out.update();
        match self.input {
            CanInput::Replay(_) => self.replay(ctx),
            CanInput::Socket(_) => self.socket(ctx),
        }
    }

    fn after(&mut self, _ctx: &Context) -> Result<(), BoxError> {
        self.bus = None;
        Ok(())
    }
}
