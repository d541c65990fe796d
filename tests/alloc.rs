//! Zero allocations per record in steady state (issue #3), shown with a counting global
//! allocator. Each thread counts its own allocations; a wrapper around a loop's `work` adds up
//! what that loop allocated while records flowed, after a warm-up.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use harmony::clock::Stamp;
use harmony::concurrency::{
    BoxError, Context, ErrorBudget, Loop, LoopConfig, LoopProcessor, Outcome, Registry, Runner,
    Step, StopReason, queue, run_tree,
};
use harmony::drivers::Rangefinder;
use harmony::drivers::lidarlite::LidarLiteV3;
use harmony::records::{CAN_EFF_FLAG, CanRecord};
use harmony::sim::gps::GpsSim;
use harmony::sim::rangefinder::{SimModel, SimSensor};
use harmony::sinks::drain::{Counting, SinkInputs, SinkLoop};
use harmony::sources::gps::{Baud, GpsConfig, GpsSource};
use harmony::sources::rangefinder::{RangeConfig, RangeSource};

struct CountingAlloc;

thread_local! {
    static ALLOCS: Cell<u64> = const { Cell::new(0) };
}

unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        ALLOCS.with(|c| c.set(c.get() + 1));
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        ALLOCS.with(|c| c.set(c.get() + 1));
        unsafe { System.realloc(p, l, n) }
    }
}

#[global_allocator]
static A: CountingAlloc = CountingAlloc;

fn allocs() -> u64 {
    ALLOCS.with(Cell::get)
}

/// Counts what `inner.work` allocates once `measuring` is set.
struct Measured<L> {
    inner: L,
    measuring: Arc<AtomicBool>,
    allocated: Arc<AtomicU64>,
    calls: Arc<AtomicU64>,
}

impl<L: Loop> Loop for Measured<L> {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn before(&mut self, ctx: &Context) -> Result<(), BoxError> {
        self.inner.before(ctx)
    }
    fn work(&mut self, ctx: &Context) -> Result<Step, BoxError> {
        let on = self.measuring.load(Ordering::Relaxed);
        let a0 = allocs();
        let r = self.inner.work(ctx);
        if on {
            self.allocated.fetch_add(allocs() - a0, Ordering::Relaxed);
            self.calls.fetch_add(1, Ordering::Relaxed);
        }
        r
    }
    fn after(&mut self, ctx: &Context) -> Result<(), BoxError> {
        self.inner.after(ctx)
    }
}

/// Pushes pre-built CAN records at a steady rate (stands in for the socket, whose frames the
/// kernel hands over).
struct CanFeed {
    tx: harmony::concurrency::Producer<CanRecord>,
    n: u32,
}

impl Loop for CanFeed {
    fn name(&self) -> &str {
        "can-feed"
    }
    fn work(&mut self, _ctx: &Context) -> Result<Step, BoxError> {
        for _ in 0..16 {
            self.n = self.n.wrapping_add(1);
            let mut r = CanRecord {
                stamp: Stamp::now(),
                id: CAN_EFF_FLAG | (self.n & 0x1fff_ffff),
                len: 8,
                data: [0; 8],
            };
            r.data[..4].copy_from_slice(&self.n.to_le_bytes());
            self.tx.push(r);
        }
        Ok(Step::Continue)
    }
}

/// Issue #3: the GPS source (pty read, NMEA intake, fix assembly, queue push), the rangefinder
/// source (driver on the bus, queue push) and the logger sink (drain) allocate nothing per
/// record once running.
#[test]
fn record_paths_do_not_allocate_in_steady_state() {
    let measuring = Arc::new(AtomicBool::new(false));
    let mk = |()| (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let (gps_alloc, gps_calls) = mk(());
    let (rng_alloc, rng_calls) = mk(());
    let (sink_alloc, sink_calls) = mk(());

    let (gl, glr) = queue(1 << 12, "gps->logger");
    let (gu, _gur) = queue(1 << 12, "gps->uplink");
    let (rl, rlr) = queue(1 << 12, "rangefinder->logger");
    let (ru, _rur) = queue(1 << 12, "rangefinder->uplink");
    let (cl, clr) = queue(1 << 14, "can->logger");

    let sim = GpsSim::new(
        "gps-sim",
        harmony::sim::builtin("quectel-l76k").unwrap(),
        20.0,
        true,
    )
    .unwrap();
    let gps = GpsSource::new(
        GpsConfig {
            name: "gps".into(),
            device: sim.device_path(),
            baud: Baud::Fixed(115200),
            hunt_dwell: Duration::from_secs(3),
        },
        harmony::sources::SourceOutputs::new(gl, gu),
    );
    let sensor = SimSensor::new(SimModel::LidarLiteV3);
    let rng = RangeSource::new(
        RangeConfig {
            name: "rangefinder".into(),
            rate_hz: 500,
            retries: 1,
            give_up_after: 100,
        },
        Box::new(move || Ok(Box::new(LidarLiteV3::new(sensor.bus())) as Box<dyn Rangefinder>)),
        harmony::sources::SourceOutputs::new(rl, ru),
    );
    let sink = SinkLoop::new(
        "logger",
        SinkInputs {
            gps: glr,
            range: rlr,
            can: clr,
        },
        Counting::default(),
        Duration::from_millis(2),
    );
    let wrap = |a: &Arc<AtomicU64>, c: &Arc<AtomicU64>| (measuring.clone(), a.clone(), c.clone());
    let (m, a, c) = wrap(&gps_alloc, &gps_calls);
    let gps = Measured {
        inner: gps,
        measuring: m,
        allocated: a,
        calls: c,
    };
    let (m, a, c) = wrap(&rng_alloc, &rng_calls);
    let rng = Measured {
        inner: rng,
        measuring: m,
        allocated: a,
        calls: c,
    };
    let (m, a, c) = wrap(&sink_alloc, &sink_calls);
    let sink = Measured {
        inner: sink,
        measuring: m,
        allocated: a,
        calls: c,
    };

    let mut root = Runner::new("root")
        .child(LoopProcessor::new(sink))
        .child(LoopProcessor::new(gps))
        .child(LoopProcessor::with_config(
            rng,
            LoopConfig {
                error_budget: ErrorBudget::UNLIMITED,
                ..LoopConfig::every(Duration::from_millis(2))
            },
        ))
        .child(LoopProcessor::with_config(
            CanFeed { tx: cl, n: 0 },
            LoopConfig::every(Duration::from_millis(1)),
        ))
        .child(LoopProcessor::new(sim));
    let reg = Registry::new();
    let r2 = reg.clone();
    let h = std::thread::spawn(move || run_tree(&r2, &mut root));
    let metric = |p: &str, m: &str| {
        reg.find(p)
            .and_then(|e| e.snapshot().metrics.get(m).copied())
            .unwrap_or(0)
    };
    // Warm-up: every path has run (queues, port, fix builder, notes set).
    assert!(common::wait_until(common::secs(10), || metric(
        "gps", "fixes"
    ) > 5
        && metric("rangefinder", "readings") > 100));
    std::thread::sleep(Duration::from_millis(300));
    let before = (
        metric("gps", "sentences"),
        metric("rangefinder", "readings"),
        metric("logger", "can_frames"),
    );
    measuring.store(true, Ordering::SeqCst);
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(2) * common::slow_factor() {
        std::thread::sleep(Duration::from_millis(50));
    }
    measuring.store(false, Ordering::SeqCst);
    let after = (
        metric("gps", "sentences"),
        metric("rangefinder", "readings"),
        metric("logger", "can_frames"),
    );
    reg.request_stop_all(StopReason::Requested("test".into()));
    assert_eq!(h.join().unwrap(), Outcome::Completed);

    let (sentences, readings, frames) =
        (after.0 - before.0, after.1 - before.1, after.2 - before.2);
    eprintln!(
        "measured: {sentences} sentences in {} gps iterations, {readings} readings in {} rangefinder iterations, \
         {frames} CAN frames drained in {} sink iterations",
        gps_calls.load(Ordering::SeqCst),
        rng_calls.load(Ordering::SeqCst),
        sink_calls.load(Ordering::SeqCst)
    );
    assert!(
        sentences > 100 && readings > 200 && frames > 1000,
        "records flowed"
    );
    assert_eq!(
        gps_alloc.load(Ordering::SeqCst),
        0,
        "GPS source allocations"
    );
    assert_eq!(
        rng_alloc.load(Ordering::SeqCst),
        0,
        "rangefinder source allocations"
    );
    assert_eq!(sink_alloc.load(Ordering::SeqCst), 0, "sink allocations");
}

/// Issue #3: a CAN frame from the socket layer to a candump line: conversion, queue and
/// formatting allocate nothing.
#[test]
fn can_frame_path_does_not_allocate() {
    use harmony::formats::candump::{MAX_LINE, format_line, record_from_frame};
    use socketcan::{CanAnyFrame, CanDataFrame, EmbeddedFrame, ExtendedId};
    let (tx, rx) = queue::<CanRecord>(1024, "can->logger");
    let frame = CanAnyFrame::Normal(
        CanDataFrame::new(
            ExtendedId::new(0x1801_550A).unwrap(),
            &[1, 2, 3, 4, 5, 6, 7, 0xc0],
        )
        .unwrap(),
    );
    let mut line = [0u8; MAX_LINE];
    let mut total = 0;
    let a0 = allocs();
    for i in 0..100_000u64 {
        let mut r = record_from_frame(&frame).unwrap();
        r.stamp = Stamp::now();
        assert!(tx.push(r));
        let r = rx.pop().unwrap();
        total += format_line(&mut line, 1_700_000_000_000_000 + i, "can0", &r);
    }
    assert_eq!(allocs() - a0, 0);
    assert!(total > 0);
}
