//! The drain loop shared by the sinks (see the module docs of [`crate::sinks`]).
//!
//! Batching: after a non-empty drain the loop sleeps `batch_interval` on a timer instead of
//! asking to be woken by each record, so at high rates the sink wakes a few hundred times a
//! second rather than once per record (PX4's logger polls its buffers at a fixed rate for the
//! same reason). Only when a drain finds every queue empty does it announce sleep, and the
//! next record wakes it.

use std::time::{Duration, Instant};

use crate::concurrency::{BoxError, Consumer, Context, DropReport, Loop, Signal, Step};
use crate::records::{CanRecord, GpsRecord, RangeRecord};

/// The queues one sink drains.
pub struct SinkInputs {
    pub gps: Consumer<GpsRecord>,
    pub range: Consumer<RangeRecord>,
    pub can: Consumer<CanRecord>,
}

/// Which source a record or a dropout belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    Gps,
    Range,
    Can,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Gps => "gps",
            Source::Range => "rangefinder",
            Source::Can => "can",
        }
    }
}

/// What a sink does with records.
pub trait Backend: Send + 'static {
    /// Named signals the sink reacts to (e.g. `hup` / `rotate` for the logger).
    fn signals(&self) -> Vec<String> {
        Vec::new()
    }
    fn start(&mut self, _ctx: &Context) -> Result<(), BoxError> {
        Ok(())
    }
    /// Whether the sink can take records now. A sink whose output is stalled says no; the loop
    /// then leaves the records in the queues (which absorb the stall) and looks again shortly.
    fn ready(&mut self) -> bool {
        true
    }
    fn gps(&mut self, r: &GpsRecord);
    fn range(&mut self, r: &RangeRecord);
    fn can(&mut self, r: &CanRecord);
    /// Records a queue dropped because it was full.
    fn dropout(&mut self, source: Source, report: DropReport);
    /// After each drained batch (flush, sync, housekeeping). Returns when it must run again
    /// even if no record arrives.
    fn batch_done(&mut self, _ctx: &Context) -> Result<Option<Instant>, BoxError> {
        Ok(None)
    }
    fn on_signal(&mut self, _sig: &Signal, _ctx: &Context) -> Result<(), BoxError> {
        Ok(())
    }
    /// After the final drain at stop.
    fn finish(&mut self, _ctx: &Context) -> Result<(), BoxError> {
        Ok(())
    }
}

/// How soon a sink whose backend is not ready looks again (a backend that can wake the sink
/// when it is ready again, like the logger's writer, does so earlier).
pub const STALLED_RETRY: Duration = Duration::from_millis(20);

/// Records taken from one queue per round before the loop looks at the others and its flags.
pub const ROUND: usize = 4096;

/// Hands up to [`ROUND`] records of one queue to `f`; returns how many.
#[inline]
fn drain_one<T>(c: &Consumer<T>, mut f: impl FnMut(&T)) -> usize {
    let mut n = 0;
    while n < ROUND {
        match c.pop() {
            Some(r) => f(&r),
            None => break,
        }
        n += 1;
    }
    n
}

/// A sink: its queues, its backend, and the drain policy.
pub struct SinkLoop<B: Backend> {
    name: String,
    inputs: SinkInputs,
    pub backend: B,
    batch_interval: Duration,
}

impl<B: Backend> SinkLoop<B> {
    pub fn new(
        name: impl Into<String>,
        inputs: SinkInputs,
        backend: B,
        batch_interval: Duration,
    ) -> Self {
        SinkLoop {
            name: name.into(),
            inputs,
            backend,
            batch_interval,
        }
    }

    /// Drains each queue once (up to [`ROUND`] records each); returns (records, any queue full).
    fn drain_round(&mut self) -> (usize, bool) {
        let b = &mut self.backend;
        let counts = [
            drain_one(&self.inputs.can, |r| b.can(r)),
            drain_one(&self.inputs.gps, |r| b.gps(r)),
            drain_one(&self.inputs.range, |r| b.range(r)),
        ];
        let total = counts.iter().sum();
        let more = counts.contains(&ROUND);
        if let Some(d) = self.inputs.gps.take_drops() {
            self.backend.dropout(Source::Gps, d);
        }
        if let Some(d) = self.inputs.range.take_drops() {
            self.backend.dropout(Source::Range, d);
        }
        if let Some(d) = self.inputs.can.take_drops() {
            self.backend.dropout(Source::Can, d);
        }
        (total, more)
    }

    fn all_sleep_ready(&self) -> bool {
        // Every queue must be announced, so evaluate all three.
        let a = self.inputs.gps.sleep_ready();
        let b = self.inputs.range.sleep_ready();
        let c = self.inputs.can.sleep_ready();
        a && b && c
    }
}

impl<B: Backend> Loop for SinkLoop<B> {
    fn name(&self) -> &str {
        &self.name
    }

    fn signals(&self) -> Vec<String> {
        self.backend.signals()
    }

    fn before(&mut self, ctx: &Context) -> Result<(), BoxError> {
        self.inputs.gps.set_waker(ctx.waker());
        self.inputs.range.set_waker(ctx.waker());
        self.inputs.can.set_waker(ctx.waker());
        self.backend.start(ctx)
    }

    fn on_signal(&mut self, sig: &Signal, ctx: &Context) -> Result<(), BoxError> {
        self.backend.on_signal(sig, ctx)
    }

    fn work(&mut self, ctx: &Context) -> Result<Step, BoxError> {
        if !self.backend.ready() {
            return Ok(Step::IdleUntil(Instant::now() + STALLED_RETRY));
        }
        let (n, more) = self.drain_round();
        let wake = self.backend.batch_done(ctx)?;
        if more {
            return Ok(Step::Continue);
        }
        let now = Instant::now();
        if n > 0 {
            let t = now + self.batch_interval;
            return Ok(Step::IdleUntil(wake.map_or(t, |w| w.min(t))));
        }
        if !self.all_sleep_ready() {
            return Ok(Step::Continue);
        }
        Ok(match wake {
            Some(w) => Step::IdleUntil(w.max(now)),
            None => Step::Idle,
        })
    }

    /// The sources have stopped (reverse start order): take everything they handed over.
    fn after(&mut self, ctx: &Context) -> Result<(), BoxError> {
        loop {
            while !self.backend.ready() {
                std::thread::sleep(Duration::from_millis(1));
            }
            let (n, _) = self.drain_round();
            if n == 0 {
                break;
            }
        }
        self.backend.batch_done(ctx)?;
        self.backend.finish(ctx)
    }
}

/// A sink that only counts what it receives (stands in for a sink not built yet, and for
/// tests and benchmarks of the record path).
#[derive(Default)]
pub struct Counting {
    pub sentences: u64,
    pub fixes: u64,
    pub ranges: u64,
    pub frames: u64,
    pub dropped: u64,
    metrics: Option<[crate::concurrency::Counter; 5]>,
}

impl Counting {
    fn publish(&self) {
        use std::sync::atomic::Ordering::Relaxed;
        if let Some(m) = &self.metrics {
            m[0].store(self.sentences, Relaxed);
            m[1].store(self.fixes, Relaxed);
            m[2].store(self.ranges, Relaxed);
            m[3].store(self.frames, Relaxed);
            m[4].store(self.dropped, Relaxed);
        }
    }
}

impl Backend for Counting {
    fn start(&mut self, ctx: &Context) -> Result<(), BoxError> {
        self.metrics = Some([
            ctx.metric("gps_sentences"),
            ctx.metric("gps_fixes"),
            ctx.metric("range_readings"),
            ctx.metric("can_frames"),
            ctx.metric("dropped"),
        ]);
        Ok(())
    }

    fn gps(&mut self, r: &GpsRecord) {
        match r {
            GpsRecord::Sentence(_) => self.sentences += 1,
            GpsRecord::Fix(_) => self.fixes += 1,
        }
    }

    fn range(&mut self, _r: &RangeRecord) {
        self.ranges += 1;
    }

    fn can(&mut self, _r: &CanRecord) {
        self.frames += 1;
    }

    fn dropout(&mut self, source: Source, report: DropReport) {
        self.dropped += report.count;
        log::warn!(
            "{} queue full: {} records dropped",
            source.as_str(),
            report.count
        );
    }

    fn batch_done(&mut self, _ctx: &Context) -> Result<Option<Instant>, BoxError> {
        self.publish();
        Ok(None)
    }
}
