//! The uplink loop: newest values in, a budgeted schedule of MAVLink frames out, commands back.
//!
//! One iteration: open the radio if it is due; drain every queue, keeping only the newest
//! value of each stream (what is replaced unsent is counted as superseded); read the registry
//! twice a second and re-divide the budget among the streams (`Uplink::allocate`); read and
//! act on what the ground sent; send what is due, most important first, while the byte
//! budget allows; then sleep in `poll(2)` on the radio and the waker until the next frame is
//! due. A stream with nothing new asks its queue's doorbell to wake the loop on the next
//! record, so a new GPS fix goes out when it arrives, not a tick later.
//!
//! Each stream paces itself with a token per frame arriving at its granted rate (at most 1.5
//! saved up): the average rate is exact, and the phase follows the data rather than a clock.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use heapless::String as HString;
use mavlink::dialects::common::{
    COMMAND_ACK_DATA, COMMAND_LONG_DATA, MavCmd, MavMessage, MavResult, MavSeverity, MavType,
};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

use super::budget::{Budget, WindowMeter};
use super::config::UplinkSection;
use super::frame::{self, Decoder, Framer};
use super::health::{self, Health, Own};
use super::persist::{Persister, StreamEntry};
use super::protocol::{
    COMPONENT_ID, Command, FC_HEALTH, FC_MODE, FC_UPTIME, Rate, SOURCES, Stream, command_name,
    result_name,
};
use super::radio::{Port, SimRadio, Wrote};
use super::signing::{Verdict, Verifier, ticks_of_unix_ns};
use crate::clock::boot_ns;
use crate::concurrency::Counter;
use crate::concurrency::{BoxError, Context, Loop, Origin, Signal, Step, StopReason};
use crate::formats::dronecan::{self, NodeStatus};
use crate::records::{CanRecord, Fix, FixQuality, GpsRecord, RangeRecord};
use crate::sinks::drain::SinkInputs;
use crate::sources::Reopen;

/// Heartbeat period (MAVLink's convention: 1 Hz).
pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(1);
/// The flight controller counts as silent when no NodeStatus came for this long.
pub const FC_SILENT_AFTER: Duration = Duration::from_secs(3);
/// Distinct CAN ids the CAN stream keeps a newest frame for.
pub const MAX_CAN_IDS: usize = 32;
/// Events (STATUSTEXT) and acknowledgements waiting for the radio, at most.
pub const MAX_TEXTS: usize = 16;
pub const MAX_ACKS: usize = 8;
/// How long after acknowledging `stop` the tree is stopped even if the ACK could not go out.
pub const STOP_GRACE: Duration = Duration::from_secs(3);

/// The longest event text (sent in STATUSTEXT chunks of 50 bytes).
pub const MAX_TEXT_LEN: usize = 200;
/// At most one STATUSTEXT a second tells why unsigned commands are refused (each gets an ACK).
const REFUSAL_TEXT_EVERY: Duration = Duration::from_secs(1);

/// Signing: the key, the first timestamp, the saved replay table, where the state goes.
pub struct Signing {
    pub key: [u8; 32],
    pub start: u64,
    pub streams: Vec<StreamEntry>,
    pub persister: Arc<Persister>,
}

/// What happens to commands when there is no key to check them with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unsigned {
    /// `accept_unsigned_commands = true`: obeyed (warned about at start).
    Accept,
    /// Refused (DENIED, a STATUSTEXT, counted): the board names no key.
    RefuseNoKey,
    /// Refused: the board names a key file that is not there.
    RefuseKeyMissing,
}

impl Unsigned {
    /// Why commands are refused, or `None` when they are obeyed.
    fn refusal(self) -> Option<&'static str> {
        match self {
            Unsigned::Accept => None,
            Unsigned::RefuseNoKey => Some("no signing key"),
            Unsigned::RefuseKeyMissing => Some("signing key missing"),
        }
    }
}

/// How long a command's retransmission is recognised as one.
pub const RETRY_WINDOW: Duration = Duration::from_secs(10);

/// Whether two COMMAND_LONGs ask for the same thing (the confirmation count aside).
fn same_command(a: &COMMAND_LONG_DATA, b: &COMMAND_LONG_DATA) -> bool {
    a.command == b.command
        && [
            a.param1, a.param2, a.param3, a.param4, a.param5, a.param6, a.param7,
        ] == [
            b.param1, b.param2, b.param3, b.param4, b.param5, b.param6, b.param7,
        ]
        && a.target_system == b.target_system
        && a.target_component == b.target_component
}

/// The uplink's counters (published as metrics).
struct Metrics {
    gps_fixes: Counter,
    range_readings: Counter,
    can_frames: Counter,
    gps_superseded: Counter,
    range_superseded: Counter,
    can_superseded: Counter,
    can_ignored: Counter,
    queue_dropped: Counter,
    bytes_written: Counter,
    frames_sent: Counter,
    max_bytes_10s: Counter,
    budget_bps: Counter,
    sent: [Counter; 6],
    sent_heartbeat: Counter,
    sent_text: Counter,
    sent_ack: Counter,
    texts_dropped: Counter,
    gps_latency_us_last: Counter,
    gps_latency_us_max: Counter,
    gps_latency_us_sum: Counter,
    rx_bytes: Counter,
    rx_frames: Counter,
    rx_unsigned: Counter,
    rx_bad_signature: Counter,
    rx_replayed: Counter,
    rx_rejected: Counter,
    /// Who sent the last rejected frame, and which message it was (to find a stray sender).
    rx_rejected_last_system: Counter,
    rx_rejected_last_msgid: Counter,
    commands: Counter,
    commands_refused: Counter,
    commands_unsigned_refused: Counter,
    gps_time_held: Counter,
    fc_superseded: Counter,
    reopens: Counter,
    sim_discarded: Counter,
    persist_errors: Counter,
    sim_errors: Counter,
}

impl Metrics {
    fn new(ctx: &Context) -> Self {
        Metrics {
            gps_fixes: ctx.metric("gps_fixes"),
            range_readings: ctx.metric("range_readings"),
            can_frames: ctx.metric("can_frames"),
            gps_superseded: ctx.metric("gps_superseded"),
            range_superseded: ctx.metric("range_superseded"),
            can_superseded: ctx.metric("can_superseded"),
            can_ignored: ctx.metric("can_ignored"),
            queue_dropped: ctx.metric("queue_dropped"),
            bytes_written: ctx.metric("bytes_written"),
            frames_sent: ctx.metric("frames_sent"),
            max_bytes_10s: ctx.metric("max_bytes_10s"),
            budget_bps: ctx.metric("budget_bps"),
            sent: Stream::ALL.map(|s| ctx.metric(&format!("sent_{}", s.name()))),
            sent_heartbeat: ctx.metric("sent_heartbeat"),
            sent_text: ctx.metric("sent_text"),
            sent_ack: ctx.metric("sent_ack"),
            texts_dropped: ctx.metric("texts_dropped"),
            gps_latency_us_last: ctx.metric("gps_latency_us_last"),
            gps_latency_us_max: ctx.metric("gps_latency_us_max"),
            gps_latency_us_sum: ctx.metric("gps_latency_us_sum"),
            rx_bytes: ctx.metric("rx_bytes"),
            rx_frames: ctx.metric("rx_frames"),
            rx_unsigned: ctx.metric("rx_unsigned"),
            rx_bad_signature: ctx.metric("rx_bad_signature"),
            rx_replayed: ctx.metric("rx_replayed"),
            rx_rejected: ctx.metric("rx_rejected"),
            rx_rejected_last_system: ctx.metric("rx_rejected_last_system"),
            rx_rejected_last_msgid: ctx.metric("rx_rejected_last_msgid"),
            commands: ctx.metric("commands"),
            commands_refused: ctx.metric("commands_refused"),
            commands_unsigned_refused: ctx.metric("commands_unsigned_refused"),
            gps_time_held: ctx.metric("gps_time_held"),
            fc_superseded: ctx.metric("fc_superseded"),
            reopens: ctx.metric("reopens"),
            sim_discarded: ctx.metric("sim_discarded"),
            persist_errors: ctx.metric("signing_persist_errors"),
            sim_errors: ctx.metric("sim_errors"),
        }
    }
}

fn add(m: &AtomicU64, n: u64) {
    m.fetch_add(n, Ordering::Relaxed);
}

/// A rate-controlled stream's schedule.
#[derive(Clone, Copy, Debug)]
struct Schedule {
    stream: Stream,
    /// The rate asked for (board, or the ground), per second; 0 is off.
    asked_hz: f64,
    /// The share of the budget it has now, per second (see `Uplink::allocate`).
    hz: f64,
    /// Bytes per frame on the wire, smoothed.
    frame_bytes: f64,
    /// A small token bucket per stream: a frame costs one token, tokens come at `hz`. It
    /// keeps the average rate exact, and its phase follows the data: a GPS fix arriving at
    /// the stream's own rate goes out when it arrives, not at a fixed tick after it.
    tokens: f64,
    at: Instant,
}

/// Frames a stream may save up (a little over one absorbs the source's jitter).
const STREAM_BURST: f64 = 1.5;
/// A value that has just arrived may go as soon as the stream's tokens are not negative
/// (up to a frame early: the debt is paid back, so the average rate stays exact); a value
/// that waited goes when a whole token is there. So a stream locks onto its source: a GPS fix
/// goes out when it arrives instead of waiting, up to one period old, for the stream's tick.
const EARLY: f64 = 0.0;
/// How new a value must be to count as just arrived (one that waited in the queue while the
/// loop slept does not: it goes at the stream's tick, or a newer one goes early).
const JUST_ARRIVED_NS: u64 = 20_000_000;

impl Schedule {
    fn tokens_at(&self, now: Instant) -> f64 {
        let dt = now.saturating_duration_since(self.at).as_secs_f64();
        (self.tokens + dt * self.hz).min(STREAM_BURST)
    }

    /// Whether the stream holds `level` tokens: 1 for any value, [`EARLY`] for a value that
    /// has just arrived.
    fn ready(&self, now: Instant, level: f64) -> bool {
        self.hz > 0.0 && self.tokens_at(now) >= level
    }

    /// When the stream will hold `level` tokens.
    fn due(&self, now: Instant, level: f64) -> Option<Instant> {
        if self.hz <= 0.0 {
            return None;
        }
        let missing = level - self.tokens_at(now);
        Some(if missing <= 0.0 {
            now
        } else {
            now + Duration::from_secs_f64(missing / self.hz)
        })
    }

    fn set_hz(&mut self, hz: f64, now: Instant) {
        self.tokens = self.tokens_at(now);
        self.at = now;
        self.hz = hz;
    }

    fn spend(&mut self, now: Instant) {
        self.tokens = self.tokens_at(now) - 1.0;
        self.at = now;
    }
}

/// A stream's typical frame before any was sent (unsigned; a signature adds 13).
fn typical_frame(s: Stream) -> f64 {
    match s {
        Stream::Gps => 42.0,
        Stream::Range => 26.0,
        Stream::Can => 28.0,
        Stream::Fc | Stream::Health => 30.0,
        Stream::Sys => 43.0,
    }
}

/// The smallest share worth scheduling.
const MIN_GRANT_HZ: f64 = 0.05;
/// What every stream that has data keeps however short the budget is.
pub const FLOOR_HZ: f64 = 0.5;

/// The newest value of one input and whether it went out already.
struct Slot<T> {
    value: Option<T>,
    fresh: bool,
}

impl<T> Default for Slot<T> {
    fn default() -> Self {
        Slot {
            value: None,
            fresh: false,
        }
    }
}

impl<T> Slot<T> {
    /// Stores a new value; returns whether an unsent one was replaced.
    fn put(&mut self, v: T) -> bool {
        let superseded = self.fresh;
        self.value = Some(v);
        self.fresh = true;
        superseded
    }
}

/// What the next frame carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Pick {
    Heartbeat,
    Ack,
    Text,
    Stream(usize),
}

/// Keeps up with how fast a queue fills, to drain it before it overflows.
#[derive(Default)]
struct FillRate {
    at: Option<Instant>,
    per_s: f64,
}

impl FillRate {
    fn update(&mut self, n: usize, now: Instant) {
        if let Some(t) = self.at {
            let dt = now.saturating_duration_since(t).as_secs_f64();
            if dt > 0.0 {
                let r = n as f64 / dt;
                // Rise at once, decay slowly: a burst must not overflow the queue.
                self.per_s = if r > self.per_s {
                    r
                } else {
                    0.8 * self.per_s + 0.2 * r
                };
            }
        }
        self.at = Some(now);
    }

    /// How long the queue of `capacity` may go undrained (half full at this rate).
    fn max_sleep(&self, capacity: usize) -> Duration {
        if self.per_s <= 0.0 {
            return Duration::from_secs(1);
        }
        Duration::from_secs_f64((capacity as f64 / 2.0 / self.per_s).clamp(0.002, 1.0))
    }
}

/// Where the radio is.
pub enum RadioSpec {
    /// A serial device, reopened every 2 s while it is missing.
    Device { path: std::path::PathBuf, baud: u32 },
    /// The simulated radio (it cannot go away).
    Sim(Box<SimRadio>),
}

/// What the loop remembers of its radio for notes and logs.
enum RadioInfo {
    Device {
        path: std::path::PathBuf,
        baud: u32,
    },
    Sim {
        ground: std::path::PathBuf,
        link: Option<std::path::PathBuf>,
    },
}

/// The uplink [`Loop`] (see the module docs).
pub struct Uplink {
    cfg: UplinkSection,
    inputs: SinkInputs,
    fc_node: Option<u8>,
    radio: RadioInfo,
    port: Option<Port>,
    reopen: Reopen,
    down_since: Option<Instant>,
    framer: Framer,
    verifier: Option<Verifier>,
    persister: Option<Arc<Persister>>,
    unsigned: Unsigned,
    refusal_text_at: Option<Instant>,
    persist_at: Instant,
    decoder: Decoder,
    rx_buf: Box<[u8; 1024]>,
    out: [u8; 300],
    out_pos: usize,
    out_len: usize,
    out_gps_stamp: Option<u64>,
    budget: Budget,
    meter: WindowMeter,
    blocked_until: Option<Instant>,
    schedules: Vec<Schedule>,
    heartbeat_due: Instant,
    texts: VecDeque<(MavSeverity, HString<MAX_TEXT_LEN>)>,
    /// The next chunk of the front text, and the id its chunks share (0: fits one message).
    text_chunk: u8,
    text_id: u16,
    text_ids: u16,
    acks: VecDeque<(MavCmd, MavResult)>,
    stop_at: Option<Instant>,
    last_command: Option<(COMMAND_LONG_DATA, MavResult, Instant)>,
    gps: Slot<Fix>,
    range: Slot<RangeRecord>,
    can: Vec<(u32, Slot<CanRecord>)>,
    can_next: usize,
    fc: Option<(NodeStatus, Instant)>,
    /// Values of the newest NodeStatus not sent yet (bit 0 health, 1 mode, 2 uptime): each
    /// goes once per NodeStatus, and a silent FC sends nothing.
    fc_unsent: u8,
    fc_silent: bool,
    fc_next: usize,
    fc_arrivals: u64,
    fc_hz: f64,
    health: Health,
    health_at: Instant,
    fill: [FillRate; 3],
    /// Records per queue since the last allocation, and their smoothed rates.
    arrivals: [u64; 3],
    arrival_hz: [f64; 3],
    arrivals_at: Instant,
    arrivals_measured: bool,
    /// Boot-clock time of the newest CAN frame taken in.
    can_newest_ns: u64,
    /// The stream whose frame the byte budget held back last.
    held: Option<Stream>,
    metrics: Option<Metrics>,
    counts: Counts,
}

/// Plain counters mirrored into the metrics.
#[derive(Default)]
struct Counts {
    queue_dropped: u64,
    texts_dropped: u64,
    rx_accepted: u64,
}

impl Uplink {
    /// An uplink for `cfg`; `signing` is the key and the first signing timestamp.
    pub fn new(
        cfg: UplinkSection,
        inputs: SinkInputs,
        fc_node: Option<u8>,
        radio: RadioSpec,
        signing: Option<Signing>,
        unsigned: Unsigned,
    ) -> Self {
        let now = Instant::now();
        let save_every = Duration::from_secs_f64(cfg.signing_save_s);
        let signer = signing
            .as_ref()
            .map(|s| super::signing::Signer::new(s.key, cfg.link_id, s.start));
        let verifier = signing.as_ref().map(|s| {
            let mut v = Verifier::new(s.key);
            v.restore(&s.streams);
            v
        });
        let persister = signing.as_ref().map(|s| s.persister.clone());
        let (radio, port) = match radio {
            RadioSpec::Device { path, baud } => (RadioInfo::Device { path, baud }, None),
            RadioSpec::Sim(s) => (
                RadioInfo::Sim {
                    ground: s.ground_path().to_owned(),
                    link: s.link().map(|l| l.to_owned()),
                },
                Some(Port::Sim(s)),
            ),
        };
        let schedules = cfg
            .priority_order()
            .into_iter()
            .map(|s| Schedule {
                stream: s,
                asked_hz: cfg.rates.hz(s),
                hz: 0.0,
                frame_bytes: typical_frame(s) + if signing.is_some() { 13.0 } else { 0.0 },
                tokens: 1.0,
                at: now,
            })
            .collect();
        Uplink {
            framer: Framer::new(cfg.system_id, COMPONENT_ID, signer),
            budget: Budget::new(cfg.budget_bps(), now),
            cfg,
            inputs,
            fc_node,
            radio,
            port,
            reopen: Reopen::default(),
            down_since: None,
            verifier,
            persister,
            unsigned,
            refusal_text_at: None,
            persist_at: now + save_every,
            decoder: Decoder::default(),
            rx_buf: Box::new([0; 1024]),
            out: [0; 300],
            out_pos: 0,
            out_len: 0,
            out_gps_stamp: None,
            meter: WindowMeter::default(),
            blocked_until: None,
            schedules,
            heartbeat_due: now,
            texts: VecDeque::with_capacity(MAX_TEXTS),
            text_chunk: 0,
            text_id: 0,
            text_ids: 0,
            acks: VecDeque::with_capacity(MAX_ACKS),
            stop_at: None,
            last_command: None,
            gps: Slot::default(),
            range: Slot::default(),
            can: Vec::with_capacity(MAX_CAN_IDS),
            can_next: 0,
            fc: None,
            fc_unsent: 0,
            fc_silent: false,
            fc_next: 0,
            fc_arrivals: 0,
            fc_hz: 1.0,
            health: Health::default(),
            health_at: now,
            fill: Default::default(),
            arrivals: [0; 3],
            // Until measured, assume the sources keep up with any rate.
            arrival_hz: [1000.0; 3],
            arrivals_at: now,
            arrivals_measured: false,
            can_newest_ns: 0,
            held: None,
            metrics: None,
            counts: Counts::default(),
        }
    }

    /// How often stream `s` has a new value to send (per second).
    fn offered_hz(&self, s: Stream, now: Instant) -> f64 {
        // A margin, so a stream whose source runs at exactly its rate is granted all of it.
        let input = |i: usize| self.arrival_hz[i] * 1.1 + 0.5;
        match s {
            Stream::Gps => input(0),
            Stream::Range => input(1),
            Stream::Can => input(2),
            // Three values per NodeStatus.
            Stream::Fc => {
                if self.fc_live(now) {
                    3.0 * self.fc_hz * 1.1 + 0.5
                } else {
                    0.0
                }
            }
            Stream::Sys => f64::INFINITY,
            Stream::Health => {
                if self.health.has_values() {
                    f64::INFINITY
                } else {
                    0.0
                }
            }
        }
    }

    /// Divides the budget among the streams in priority order: each stream first gets a
    /// trickle ([`FLOOR_HZ`], so the ground never loses sight of it), then, most important
    /// first, the rate it asks for (or its source's rate, if lower) while the budget lasts;
    /// the first one that does not fit gets what is left, the ones after it keep their
    /// trickle. So when the budget is short the least important streams thin out first, and a
    /// lower stream never spends bytes a higher one is about to need. The token bucket still
    /// has the last word on every frame.
    fn allocate(&mut self, now: Instant) {
        let dt = now
            .saturating_duration_since(self.arrivals_at)
            .as_secs_f64();
        if dt >= 0.2 {
            let keep = if self.arrivals_measured { 0.5 } else { 0.0 };
            for (hz, n) in self.arrival_hz.iter_mut().zip(&mut self.arrivals) {
                *hz = keep * *hz + (1.0 - keep) * (*n as f64 / dt);
                *n = 0;
            }
            self.fc_hz = keep * self.fc_hz + (1.0 - keep) * (self.fc_arrivals as f64 / dt);
            self.fc_arrivals = 0;
            self.arrivals_at = now;
            self.arrivals_measured = true;
        }
        let heartbeat = if self.verifier.is_some() { 34.0 } else { 21.0 };
        let mut left = self.budget.rate() - heartbeat / HEARTBEAT_EVERY.as_secs_f64();
        let mut grant = [0.0f64; 6];
        let mut want = [0.0f64; 6];
        for (i, sc) in self.schedules.iter().enumerate() {
            want[i] = sc.asked_hz.min(self.offered_hz(sc.stream, now));
            grant[i] = want[i].min(FLOOR_HZ);
            left -= grant[i] * sc.frame_bytes;
        }
        for (i, sc) in self.schedules.iter().enumerate() {
            let more = want[i] - grant[i];
            let hz = if more * sc.frame_bytes <= left {
                more
            } else {
                (left / sc.frame_bytes).max(0.0)
            };
            left -= hz * sc.frame_bytes;
            grant[i] += hz;
        }
        for (sc, hz) in self.schedules.iter_mut().zip(grant) {
            sc.set_hz(if hz >= MIN_GRANT_HZ { hz } else { 0.0 }, now);
        }
    }

    fn m(&self) -> &Metrics {
        self.metrics.as_ref().expect("set in before()")
    }

    /// Queues an event for the ground (and the application log).
    fn event(&mut self, severity: MavSeverity, text: &str) {
        let mut h = HString::<MAX_TEXT_LEN>::new();
        for c in text.chars() {
            if h.push(c).is_err() {
                break;
            }
        }
        self.push_event((severity, h));
    }

    /// Queues `e`; when the queue is full the least severe waiting text (the newest of
    /// equals) gives way, so warnings and errors always go. What gives way is counted.
    fn push_event(&mut self, e: (MavSeverity, HString<MAX_TEXT_LEN>)) {
        if self.texts.len() >= MAX_TEXTS {
            self.counts.texts_dropped += 1;
            if let Some(m) = &self.metrics {
                m.texts_dropped
                    .store(self.counts.texts_dropped, Ordering::Relaxed);
            }
            // MAV_SEVERITY: 0 emergency .. 7 debug; the largest number is the least severe.
            // (Not the front text once its first chunks went out.)
            let busy = self.text_chunk > 0;
            let least = self
                .texts
                .iter()
                .enumerate()
                .filter(|(i, _)| !(busy && *i == 0))
                .max_by_key(|(i, (sev, _))| (*sev as u8, *i))
                .map(|(i, (sev, _))| (i, *sev as u8));
            match least {
                Some((i, sev)) if sev >= e.0 as u8 => {
                    self.texts.remove(i);
                }
                _ => return,
            }
        }
        self.texts.push_back(e);
    }

    fn ack(&mut self, cmd: MavCmd, result: MavResult) {
        if self.acks.len() >= MAX_ACKS {
            self.acks.pop_front();
        }
        self.acks.push_back((cmd, result));
    }

    // ---- radio ----

    fn open(&mut self, ctx: &Context, now: Instant) {
        let RadioInfo::Device { path, baud } = &self.radio else {
            return;
        };
        self.reopen.attempted(now);
        match Port::open(path, *baud) {
            Ok(p) => {
                let signed = self.signed_word();
                log::info!(
                    "{}: radio {} at {baud} baud, budget {:.0} bytes/s, {signed}",
                    ctx.path(),
                    path.display(),
                    self.cfg.budget_bps()
                );
                ctx.set_note(&format!(
                    "radio {} at {baud} baud, {:.0} B/s, {signed}",
                    path.display(),
                    self.cfg.budget_bps()
                ));
                self.reopen.succeeded();
                self.port_up(p, now);
            }
            Err(e) => {
                if self.reopen.failed() {
                    log::warn!("{}: {e}; retrying every 2 s", ctx.path());
                }
                let signed = self.signed_word();
                ctx.set_note(&format!("no radio: {e}; retrying every 2 s ({signed})"));
            }
        }
    }

    fn signed_word(&self) -> &'static str {
        match (&self.verifier, self.unsigned) {
            (Some(_), _) => "signed",
            (None, Unsigned::Accept) => "UNSIGNED, ACCEPTING UNSIGNED COMMANDS",
            (None, Unsigned::RefuseKeyMissing) => "UNSIGNED, signing key MISSING: commands refused",
            (None, Unsigned::RefuseNoKey) => "UNSIGNED, no key: commands refused",
        }
    }

    fn port_up(&mut self, port: Port, now: Instant) {
        self.port = Some(port);
        self.decoder = Decoder::default();
        self.out_pos = 0;
        self.out_len = 0;
        self.out_gps_stamp = None;
        if let Some(t) = self.down_since.take() {
            let s = now.duration_since(t).as_secs();
            self.event(
                MavSeverity::MAV_SEVERITY_NOTICE,
                &format!("radio link back after {s} s"),
            );
        }
    }

    fn lost(&mut self, ctx: &Context, why: &str, now: Instant) {
        let RadioInfo::Device { path, .. } = &self.radio else {
            // The simulated radio's terminal is held open by us: it cannot vanish, so an
            // error here is transient. Count it; log the 1st, 2nd, 4th, 8th... (no flood).
            let n = self.m().sim_errors.fetch_add(1, Ordering::Relaxed) + 1;
            if n.is_power_of_two() {
                log::warn!("{}: simulated radio: {why} ({n} errors so far)", ctx.path());
            }
            return;
        };
        log::warn!(
            "{}: radio {} lost: {why}; reopening every 2 s",
            ctx.path(),
            path.display()
        );
        ctx.set_note(&format!("radio lost: {why}; reopening every 2 s"));
        self.port = None;
        self.down_since = Some(now);
        self.reopen.attempted(now);
        add(&self.m().reopens, 1);
    }

    /// Writes what is pending; returns whether everything went.
    fn flush(&mut self, ctx: &Context, now: Instant) -> bool {
        while self.out_pos < self.out_len {
            let Some(port) = &mut self.port else {
                return false;
            };
            match port.write(&self.out[self.out_pos..self.out_len]) {
                Ok(Wrote::Bytes(0)) => return false,
                Ok(Wrote::Bytes(n)) => {
                    self.out_pos += n;
                    let in_window = self.meter.record(now, n);
                    let m = self.m();
                    add(&m.bytes_written, n as u64);
                    m.max_bytes_10s.fetch_max(in_window, Ordering::Relaxed);
                }
                Ok(Wrote::Discarded) => {
                    add(&self.m().sim_discarded, 1);
                    return false;
                }
                Err(e) => {
                    self.lost(ctx, &e.to_string(), now);
                    return false;
                }
            }
        }
        if let Some(stamp) = self.out_gps_stamp.take() {
            let us = boot_ns().saturating_sub(stamp) / 1000;
            let m = self.m();
            m.gps_latency_us_last.store(us, Ordering::Relaxed);
            m.gps_latency_us_max.fetch_max(us, Ordering::Relaxed);
            add(&m.gps_latency_us_sum, us);
        }
        true
    }

    fn read_radio(&mut self, ctx: &Context, now: Instant) {
        for _ in 0..16 {
            let Some(port) = &mut self.port else { return };
            match port.read(&mut self.rx_buf[..]) {
                Ok(0) => return,
                Ok(n) => {
                    self.decoder.push(&self.rx_buf[..n]);
                    add(&self.m().rx_bytes, n as u64);
                    while let Some(raw) = self.decoder.next_frame() {
                        self.on_frame(ctx, &raw, now);
                    }
                    if n < self.rx_buf.len() {
                        return;
                    }
                }
                Err(e) => {
                    self.lost(ctx, &e.to_string(), now);
                    return;
                }
            }
        }
    }

    fn on_frame(&mut self, ctx: &Context, raw: &mavlink::MAVLinkMessageRaw, now: Instant) {
        add(&self.m().rx_frames, 1);
        if let Some(v) = &mut self.verifier {
            let local = self.framer.signer().map_or(0, |s| s.now());
            let verdict = v.check(raw, local);
            let r = v.rejected;
            let m = self.metrics.as_ref().expect("set in before()");
            m.rx_unsigned.store(r.unsigned, Ordering::Relaxed);
            m.rx_bad_signature.store(r.bad_signature, Ordering::Relaxed);
            m.rx_replayed.store(r.replayed, Ordering::Relaxed);
            m.rx_rejected.store(r.total(), Ordering::Relaxed);
            match verdict {
                Verdict::Accepted(ts) => {
                    self.counts.rx_accepted += 1;
                    if let Some(s) = self.framer.signer_mut() {
                        s.observe(ts);
                    }
                }
                other => {
                    m.rx_rejected_last_system
                        .store(raw.system_id() as u64, Ordering::Relaxed);
                    m.rx_rejected_last_msgid
                        .store(raw.message_id() as u64, Ordering::Relaxed);
                    log::debug!(
                        "{}: rejected message {} from {}/{}: {other:?}",
                        ctx.path(),
                        raw.message_id(),
                        raw.system_id(),
                        raw.component_id()
                    );
                    return;
                }
            }
        } else {
            self.counts.rx_accepted += 1;
        }
        match frame::parse(raw) {
            Ok(MavMessage::COMMAND_LONG(c)) => {
                let sys = self.cfg.system_id;
                if (c.target_system == sys || c.target_system == 0)
                    && (c.target_component == COMPONENT_ID || c.target_component == 0)
                {
                    self.command(ctx, &c, now);
                }
            }
            Ok(_) => {}
            Err(e) => log::debug!("{}: undecodable message: {e}", ctx.path()),
        }
    }

    fn command(&mut self, ctx: &Context, c: &COMMAND_LONG_DATA, now: Instant) {
        add(&self.m().commands, 1);
        if let (None, Some(why)) = (&self.verifier, self.unsigned.refusal()) {
            self.refuse_unsigned(ctx, c, why, now);
            return;
        }
        // A retransmission (confirmation > 0) of the command just carried out, because our
        // ACK was lost: answer it again, do not do it twice (a second `rotate` would).
        if c.confirmation > 0
            && let Some((last, result, at)) = &self.last_command
            && now.duration_since(*at) < RETRY_WINDOW
            && same_command(last, c)
        {
            let result = *result;
            self.ack(c.command, result);
            return;
        }
        let name = command_name(c.command);
        let (result, what) = match Command::from_message(c) {
            Err(r) => {
                self.event(
                    MavSeverity::MAV_SEVERITY_WARNING,
                    &format!("{name}: {}", r.reason),
                );
                (r.result, name.to_owned())
            }
            Ok(cmd) => (self.execute(ctx, cmd, now), cmd.to_string()),
        };
        if result != MavResult::MAV_RESULT_ACCEPTED {
            add(&self.m().commands_refused, 1);
        }
        log::info!(
            "{}: ground command {what}: {}",
            ctx.path(),
            result_name(result)
        );
        self.ack(c.command, result);
        self.last_command = Some((c.clone(), result, now));
    }

    /// Without a key every command is DENIED (issue #11): counted, and said once a second.
    fn refuse_unsigned(
        &mut self,
        ctx: &Context,
        c: &COMMAND_LONG_DATA,
        why: &'static str,
        now: Instant,
    ) {
        let m = self.m();
        add(&m.commands_refused, 1);
        add(&m.commands_unsigned_refused, 1);
        self.ack(c.command, MavResult::MAV_RESULT_DENIED);
        if self
            .refusal_text_at
            .is_none_or(|t| now.duration_since(t) >= REFUSAL_TEXT_EVERY)
        {
            self.refusal_text_at = Some(now);
            let name = command_name(c.command);
            log::warn!(
                "{}: ground command {name} refused: unsigned ({why}); {} refused so far",
                ctx.path(),
                self.m().commands_unsigned_refused.load(Ordering::Relaxed)
            );
            self.event(
                MavSeverity::MAV_SEVERITY_WARNING,
                &format!("{name} refused: commands must be signed ({why})"),
            );
        }
    }

    fn execute(&mut self, ctx: &Context, cmd: Command, now: Instant) -> MavResult {
        let reg = ctx.registry();
        let failed = |me: &mut Self, what: String| {
            me.event(MavSeverity::MAV_SEVERITY_WARNING, &what);
            MavResult::MAV_RESULT_FAILED
        };
        match cmd {
            Command::Pause(i) | Command::Resume(i) => {
                let pause = matches!(cmd, Command::Pause(_));
                if reg.find(SOURCES[i]).is_none() {
                    return failed(self, format!("{cmd}: no processor named {}", SOURCES[i]));
                }
                match reg.pause_flag(Some(SOURCES[i])) {
                    Ok(f) => {
                        if pause {
                            f.set();
                        } else {
                            f.clear();
                        }
                        MavResult::MAV_RESULT_ACCEPTED
                    }
                    Err(e) => failed(self, format!("{cmd}: {e}")),
                }
            }
            Command::Rotate => {
                let sig = match Signal::new("rotate", Origin::Ground) {
                    Ok(s) => s,
                    Err(e) => return failed(self, format!("rotate: {e}")),
                };
                match reg.send_signal(sig, Some("logger")) {
                    Ok(_) => MavResult::MAV_RESULT_ACCEPTED,
                    Err(e) => failed(self, format!("rotate: {e}")),
                }
            }
            Command::Rate(stream, rate) => {
                let hz = match rate {
                    Rate::Hz(h) => h as f64,
                    Rate::Configured => self.cfg.rates.hz(stream),
                };
                if let Some(s) = self.schedules.iter_mut().find(|s| s.stream == stream) {
                    s.asked_hz = hz;
                }
                self.allocate(now);
                MavResult::MAV_RESULT_ACCEPTED
            }
            Command::Stop => {
                self.event(
                    MavSeverity::MAV_SEVERITY_NOTICE,
                    "stopping: command from the ground",
                );
                self.stop_at = Some(now + STOP_GRACE);
                MavResult::MAV_RESULT_ACCEPTED
            }
        }
    }

    // ---- inputs ----

    fn drain(&mut self, now: Instant) {
        let mut n = [0usize; 3];
        let mut superseded = [0u64; 3];

        let mut gps_ticks = 0;
        while let Some(r) = self.inputs.gps.pop() {
            n[0] += 1;
            if let GpsRecord::Fix(f) = r {
                if f.quality != FixQuality::Invalid
                    && let Some(ns) = f.utc_ns
                {
                    gps_ticks = ticks_of_unix_ns(ns);
                }
                superseded[0] += self.gps.put(f) as u64;
            }
        }
        while let Some(r) = self.inputs.range.pop() {
            n[1] += 1;
            superseded[1] += self.range.put(r) as u64;
        }
        let mut ignored = 0;
        while let Some(r) = self.inputs.can.pop() {
            n[2] += 1;
            if let Some(s) = dronecan::node_status(&r) {
                if Some(s.node) == self.fc_node {
                    if self.fc_unsent != 0 {
                        add(&self.m().fc_superseded, 1);
                    }
                    self.fc = Some((s, now));
                    self.fc_unsent = 0b111;
                    self.fc_arrivals += 1;
                } else {
                    ignored += 1;
                }
                continue;
            }
            self.can_newest_ns = r.stamp.boot_ns;
            let id = r.raw_id() | (r.id & crate::records::CAN_EFF_FLAG);
            match self.can.iter().position(|(i, _)| *i == id) {
                Some(k) => superseded[2] += self.can[k].1.put(r) as u64,
                None if self.can.len() < MAX_CAN_IDS => {
                    let mut slot = Slot::default();
                    slot.put(r);
                    self.can.push((id, slot));
                }
                None => ignored += 1,
            }
        }
        if gps_ticks > 0
            && let Some(s) = self.framer.signer_mut()
            && s.observe_gps(gps_ticks)
        {
            add(&self.m().gps_time_held, 1);
        }
        for ((f, a), k) in self.fill.iter_mut().zip(&mut self.arrivals).zip(n) {
            f.update(k, now);
            *a += k as u64;
        }
        let dropped =
            self.inputs.gps.dropped() + self.inputs.range.dropped() + self.inputs.can.dropped();
        self.counts.queue_dropped = dropped;
        let m = self.m();
        add(&m.gps_fixes, n[0] as u64);
        add(&m.range_readings, n[1] as u64);
        add(&m.can_frames, n[2] as u64);
        add(&m.gps_superseded, superseded[0]);
        add(&m.range_superseded, superseded[1]);
        add(&m.can_superseded, superseded[2]);
        add(&m.can_ignored, ignored);
        m.queue_dropped.store(dropped, Ordering::Relaxed);
        // Nothing to do with the drop reports but forget them: drops are counted above.
        let _ = self.inputs.gps.take_drops();
        let _ = self.inputs.range.take_drops();
        let _ = self.inputs.can.take_drops();
    }

    fn fc_live(&self, now: Instant) -> bool {
        self.fc
            .is_some_and(|(_, t)| now.duration_since(t) < FC_SILENT_AFTER)
    }

    fn housekeeping(&mut self, ctx: &Context, now: Instant) {
        if now >= self.health_at {
            self.health_at = now + health::POLL_EVERY;
            let own = Own {
                queue_dropped: self.counts.queue_dropped,
                rx_accepted: self.counts.rx_accepted,
                rx_rejected: self.verifier.as_ref().map_or(0, |v| v.rejected.total()),
                texts_dropped: self.counts.texts_dropped,
            };
            let mut events: heapless::Vec<health::Event, 8> = heapless::Vec::new();
            self.health.poll(ctx.registry(), own, now, |e| {
                let _ = events.push(e);
            });
            for e in events {
                log::warn!("{}: to the ground: {}", ctx.path(), e.1);
                self.event(e.0, e.1.as_str());
            }
            self.allocate(now);
            // The flight controller going quiet, and coming back, is an event too.
            if self.fc_node.is_some() && self.fc.is_some() {
                let live = self.fc_live(now);
                if !live && !self.fc_silent {
                    self.fc_silent = true;
                    self.event(
                        MavSeverity::MAV_SEVERITY_WARNING,
                        "flight controller silent on CAN",
                    );
                } else if live && self.fc_silent {
                    self.fc_silent = false;
                    self.event(
                        MavSeverity::MAV_SEVERITY_NOTICE,
                        "flight controller back on CAN",
                    );
                }
            }
        }
        if now >= self.persist_at {
            self.persist_at = now + Duration::from_secs_f64(self.cfg.signing_save_s);
            self.persist();
        }
        if let Some(t) = self.stop_at
            && (now >= t || self.stop_ack_written())
        {
            self.stop_at = None;
            ctx.registry()
                .request_stop_all(StopReason::Requested("stop command from the ground".into()));
        }
    }

    /// The stop command's ACK (and everything before it) has been written and has left
    /// (for the simulated radio: the ground has read it; closing the terminal would drop it).
    fn stop_ack_written(&self) -> bool {
        self.acks.is_empty()
            && self.out_pos >= self.out_len
            && !self.port.as_ref().is_some_and(|p| p.in_transit())
    }

    /// Hands the signing state to the persister (it saves it on its own thread).
    fn persist(&mut self) {
        let (Some(p), Some(signer)) = (&self.persister, self.framer.signer()) else {
            return;
        };
        let streams = self.verifier.as_ref().map_or(&[][..], |v| v.streams());
        p.publish(signer.now(), streams);
        if let Some(m) = &self.metrics {
            m.persist_errors.store(p.errors(), Ordering::Relaxed);
        }
    }

    /// The next FC value to send (0 health, 1 mode, 2 uptime), in turn from `fc_next`.
    fn fc_pick(&self) -> Option<usize> {
        (0..3)
            .map(|j| (self.fc_next + j) % 3)
            .find(|&k| self.fc_unsent & (1 << k) != 0)
    }

    /// The front text's next chunk as a STATUSTEXT payload.
    fn text_payload(&mut self) -> Option<[u8; frame::STATUSTEXT_LEN]> {
        let (sev, t) = self.texts.front()?;
        if self.text_chunk == 0 {
            self.text_id = if t.len() > frame::TEXT_CHUNK {
                self.text_ids = self.text_ids.wrapping_add(1).max(1);
                self.text_ids
            } else {
                0
            };
        }
        Some(frame::statustext_chunk(
            *sev,
            t.as_bytes(),
            self.text_id,
            self.text_chunk,
        ))
    }

    // ---- sending ----

    fn has_data(&self, s: Stream, now: Instant) -> bool {
        match s {
            Stream::Gps => self.gps.fresh,
            Stream::Range => self.range.fresh,
            Stream::Can => self.can.iter().any(|(_, s)| s.fresh),
            Stream::Fc => self.fc_unsent != 0 && self.fc_live(now),
            Stream::Sys => true,
            Stream::Health => self.health.has_values(),
        }
    }

    /// The most important frame that is due now.
    fn pick(&self, now: Instant) -> Option<Pick> {
        if now >= self.heartbeat_due {
            return Some(Pick::Heartbeat);
        }
        if !self.acks.is_empty() {
            return Some(Pick::Ack);
        }
        if !self.texts.is_empty() {
            return Some(Pick::Text);
        }
        let boot = boot_ns();
        self.schedules
            .iter()
            .position(|s| {
                if !self.has_data(s.stream, now) {
                    return false;
                }
                let level = if self.just_arrived(s.stream, boot) {
                    EARLY
                } else {
                    1.0
                };
                s.ready(now, level)
            })
            .map(Pick::Stream)
    }

    /// Whether the stream's value has just arrived (or was held back only for want of bytes),
    /// so it may go early. One that waited in the queue while the loop slept has not.
    fn just_arrived(&self, s: Stream, boot: u64) -> bool {
        let stamp = match s {
            Stream::Gps => self.gps.value.as_ref().map(|f| f.stamp.boot_ns),
            Stream::Range => self.range.value.as_ref().map(|r| r.stamp.boot_ns),
            Stream::Can => Some(self.can_newest_ns),
            _ => return false,
        };
        self.held == Some(s) || stamp.is_some_and(|t| boot.saturating_sub(t) <= JUST_ARRIVED_NS)
    }

    fn message(&mut self, p: Pick) -> Option<(MavMessage, Option<u64>)> {
        let boot_ms = (boot_ns() / 1_000_000) as u32;
        Some(match p {
            Pick::Heartbeat => (
                frame::heartbeat(MavType::MAV_TYPE_ONBOARD_CONTROLLER, self.health.state()),
                None,
            ),
            Pick::Ack => {
                let (command, result) = *self.acks.front()?;
                (
                    MavMessage::COMMAND_ACK(COMMAND_ACK_DATA { command, result }),
                    None,
                )
            }
            // Sent by `send` as hand-built chunks (the crate lacks the extension fields).
            Pick::Text => return None,
            Pick::Stream(i) => match self.schedules[i].stream {
                Stream::Gps => {
                    let f = self.gps.value.as_ref()?;
                    (frame::gps_raw_int(f), Some(f.stamp.boot_ns))
                }
                Stream::Range => (
                    frame::distance_sensor(
                        self.range.value.as_ref()?,
                        self.cfg.range_min_cm,
                        self.cfg.range_max_cm,
                    ),
                    None,
                ),
                Stream::Can => {
                    let n = self.can.len();
                    let k = (0..n)
                        .map(|j| (self.can_next + j) % n)
                        .find(|&k| self.can[k].1.fresh)?;
                    (frame::can_frame(self.can[k].1.value.as_ref()?), None)
                }
                Stream::Fc => {
                    let (s, _) = self.fc?;
                    let (name, v) = match self.fc_pick()? {
                        0 => (FC_HEALTH, s.health as i32),
                        1 => (FC_MODE, s.mode as i32),
                        _ => (FC_UPTIME, s.uptime_s.min(i32::MAX as u32) as i32),
                    };
                    (frame::named_int(frame::name10(name), v, boot_ms), None)
                }
                Stream::Sys => (MavMessage::SYS_STATUS(self.health.sys_status()), None),
                Stream::Health => {
                    let (name, v) = self.health.value()?;
                    (frame::named_int(name, v, boot_ms), None)
                }
            },
        })
    }

    /// Marks `p` as sent.
    fn sent(&mut self, p: Pick, now: Instant) {
        let m = self.metrics.as_ref().expect("set in before()");
        add(&m.frames_sent, 1);
        match p {
            Pick::Heartbeat => {
                add(&m.sent_heartbeat, 1);
                self.heartbeat_due += HEARTBEAT_EVERY;
                if self.heartbeat_due <= now {
                    self.heartbeat_due = now + HEARTBEAT_EVERY;
                }
            }
            Pick::Ack => {
                add(&m.sent_ack, 1);
                self.acks.pop_front();
            }
            Pick::Text => {
                add(&m.sent_text, 1);
                let len = self.texts.front().map_or(0, |(_, t)| t.len());
                self.text_chunk += 1;
                if self.text_chunk as usize >= frame::text_chunks(len) {
                    self.texts.pop_front();
                    self.text_chunk = 0;
                }
            }
            Pick::Stream(i) => {
                let s = &mut self.schedules[i];
                add(&m.sent[s.stream.index() as usize - 1], 1);
                s.spend(now);
                match s.stream {
                    Stream::Gps => self.gps.fresh = false,
                    Stream::Range => self.range.fresh = false,
                    Stream::Can => {
                        let n = self.can.len();
                        if let Some(k) = (0..n)
                            .map(|j| (self.can_next + j) % n)
                            .find(|&k| self.can[k].1.fresh)
                        {
                            self.can[k].1.fresh = false;
                            self.can_next = k + 1;
                        }
                    }
                    Stream::Fc => {
                        if let Some(k) = self.fc_pick() {
                            self.fc_unsent &= !(1 << k);
                            self.fc_next = (k + 1) % 3;
                        }
                    }
                    Stream::Health => self.health.advance(),
                    Stream::Sys => {}
                }
            }
        }
    }

    /// Sends what is due while the budget allows.
    fn send(&mut self, ctx: &Context, now: Instant) {
        self.blocked_until = None;
        loop {
            if self.port.is_none() || !self.flush(ctx, now) {
                return;
            }
            let Some(p) = self.pick(now) else { return };
            let (size, gps_stamp) = if p == Pick::Text {
                let Some(payload) = self.text_payload() else {
                    self.sent(p, now);
                    continue;
                };
                let size = self.framer.encode_payload(
                    frame::STATUSTEXT_ID,
                    frame::STATUSTEXT_CRC_EXTRA,
                    &payload,
                );
                (size, None)
            } else {
                // A health round with nothing in it yet, or a stream whose value vanished.
                let Some((msg, gps_stamp)) = self.message(p) else {
                    self.sent(p, now);
                    continue;
                };
                (self.framer.encode(&msg), gps_stamp)
            };
            if let Pick::Stream(i) = p {
                let fb = &mut self.schedules[i].frame_bytes;
                *fb = 0.8 * *fb + 0.2 * size as f64;
            }
            // Room left for the more important streams, so a lower one never takes the bytes
            // a GPS fix is about to need.
            let keep = match p {
                Pick::Stream(i) => self.schedules[..i]
                    .iter()
                    .filter(|s| s.hz > 0.0)
                    .map(|s| s.frame_bytes)
                    .sum(),
                _ => 0.0,
            };
            if !self.budget.try_take_keeping(size, keep, now) {
                self.blocked_until = Some(self.budget.available_at(size, keep, now));
                if let Pick::Stream(i) = p {
                    self.held = Some(self.schedules[i].stream);
                }
                return;
            }
            if let Pick::Stream(i) = p
                && self.held == Some(self.schedules[i].stream)
            {
                self.held = None;
            }
            let bytes = self.framer.finish();
            self.out[..bytes.len()].copy_from_slice(bytes);
            self.out_pos = 0;
            self.out_len = bytes.len();
            self.out_gps_stamp = gps_stamp;
            self.sent(p, now);
        }
    }

    /// When the loop must run again at the latest, and whether a queue must ring us.
    fn next_wake(&mut self, now: Instant) -> (Instant, bool) {
        let mut wake = now + Duration::from_secs(1);
        let mut at = |t: Instant| {
            if t < wake {
                wake = t;
            }
        };
        at(self.health_at);
        at(self.persist_at);
        if let Some(t) = self.stop_at {
            let written = self.acks.is_empty() && self.out_pos >= self.out_len;
            at(if self.stop_ack_written() {
                now
            } else if written {
                // Check again soon whether the ground has read it.
                now + Duration::from_millis(20)
            } else {
                t
            });
        }
        // A frame still going out: POLLOUT wakes us when the radio takes more, so streams and
        // heartbeat that are already due must not turn the wait into a spin.
        let pending = self.out_pos < self.out_len;
        if self.port.is_none() {
            at(self.reopen.next());
        } else if !pending {
            match self.blocked_until {
                Some(t) => at(t),
                None => {
                    at(self.heartbeat_due);
                    for s in &self.schedules {
                        if self.has_data(s.stream, now)
                            && let Some(t) = s.due(now, 1.0)
                        {
                            at(t);
                        }
                    }
                }
            }
        }
        at(now + self.fill[0].max_sleep(self.inputs.gps.capacity()));
        at(now + self.fill[1].max_sleep(self.inputs.range.capacity()));
        at(now + self.fill[2].max_sleep(self.inputs.can.capacity()));
        // Streams fed by a queue: once they may send a value that has just arrived, the next
        // record wakes us (see the module docs); until then their own due time does.
        // (Not while the radio is away or the budget is spent: a record could not go anyway.)
        let mut slipped = false;
        let can_send = self.port.is_some() && self.blocked_until.is_none() && !pending;
        for s in &self.schedules {
            if !can_send
                || !matches!(s.stream, Stream::Gps | Stream::Range | Stream::Can)
                || s.hz <= 0.0
            {
                continue;
            }
            if !s.ready(now, EARLY) {
                if let Some(t) = s.due(now, EARLY) {
                    at(t);
                }
                continue;
            }
            let empty = match s.stream {
                Stream::Gps => self.inputs.gps.sleep_ready(),
                Stream::Range => self.inputs.range.sleep_ready(),
                _ => self.inputs.can.sleep_ready(),
            };
            slipped |= !empty;
        }
        (wake, slipped)
    }
}

impl Loop for Uplink {
    fn name(&self) -> &str {
        "uplink"
    }

    fn before(&mut self, ctx: &Context) -> Result<(), BoxError> {
        let m = Metrics::new(ctx);
        m.budget_bps
            .store(self.cfg.budget_bps() as u64, Ordering::Relaxed);
        self.metrics = Some(m);
        self.allocate(Instant::now());
        self.inputs.gps.set_waker(ctx.waker());
        self.inputs.range.set_waker(ctx.waker());
        self.inputs.can.set_waker(ctx.waker());
        let signed = self.signed_word();
        if let RadioInfo::Sim { ground, link } = &self.radio {
            let port = link.as_ref().unwrap_or(ground);
            log::info!(
                "{}: simulated radio: run `harmony ground --port {}` ({:.0} bytes/s budget, {signed})",
                ctx.path(),
                port.display(),
                self.cfg.budget_bps()
            );
            ctx.set_note(&format!(
                "sim radio: ground side {}{} ({:.0} B/s, {signed})",
                ground.display(),
                link.as_ref()
                    .map(|l| format!(" = {}", l.display()))
                    .unwrap_or_default(),
                self.cfg.budget_bps()
            ));
        }
        // Unsigned is worth a warning on the ground too (commands refused, or obeyed from anyone).
        let severity = if self.verifier.is_some() {
            MavSeverity::MAV_SEVERITY_INFO
        } else {
            MavSeverity::MAV_SEVERITY_WARNING
        };
        self.event(severity, &format!("harmony uplink up ({signed})"));
        Ok(())
    }

    fn work(&mut self, ctx: &Context) -> Result<Step, BoxError> {
        let now = Instant::now();
        if self.port.is_none() && self.reopen.due(now) {
            self.open(ctx, now);
        }
        self.drain(now);
        self.housekeeping(ctx, now);
        if self.port.is_some() {
            self.read_radio(ctx, now);
        }
        self.send(ctx, now);
        let (wake, slipped) = self.next_wake(now);
        if slipped || ctx.should_stop() {
            return Ok(Step::Continue);
        }
        let now = Instant::now();
        let ms = wake
            .saturating_duration_since(now)
            .as_micros()
            .div_ceil(1000)
            .min(60_000) as u16;
        let waker = ctx.waker().fd();
        let pending = self.out_pos < self.out_len;
        let (radio_ev, hup) = {
            let mut fds: heapless::Vec<PollFd, 2> = heapless::Vec::new();
            if let Some(w) = waker {
                let _ = fds.push(PollFd::new(w, PollFlags::POLLIN));
            }
            let radio_at = self.port.as_ref().map(|p| {
                let mut f = PollFlags::POLLIN;
                if pending {
                    f |= PollFlags::POLLOUT;
                }
                let _ = fds.push(PollFd::new(p.fd(), f));
                fds.len() - 1
            });
            // Without an eventfd, a short timeout keeps stop and records noticed.
            let t = if waker.is_some() { ms } else { ms.min(20) };
            // Asleep, not stuck: the watchdog's stuck detection must not count this wait.
            match ctx.wait_io(|| poll(&mut fds, PollTimeout::from(t))) {
                Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                Err(e) => return Err(Box::new(e)),
            }
            let rev = radio_at
                .and_then(|i| fds[i].revents())
                .unwrap_or(PollFlags::empty());
            (
                rev.intersects(PollFlags::POLLIN | PollFlags::POLLOUT),
                rev.intersects(PollFlags::POLLHUP | PollFlags::POLLERR | PollFlags::POLLNVAL),
            )
        };
        ctx.waker().clear_fd();
        let now = Instant::now();
        if radio_ev || hup {
            self.read_radio(ctx, now);
            if hup && self.port.is_some() {
                self.lost(ctx, "hung up", now);
            }
        }
        Ok(Step::Continue)
    }

    fn after(&mut self, _ctx: &Context) -> Result<(), BoxError> {
        // The final state; the persister writes it once the tree has stopped.
        self.persist();
        self.port = None;
        Ok(())
    }
}
