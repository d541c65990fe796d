//! Zero allocations per record in steady state (issue #3; issue #11: measured on the real
//! backends). A counting global allocator attributes every allocation to the thread making it
//! (by the thread's name, read with `prctl(PR_GET_NAME)`, which does not allocate). The whole
//! firmware data path runs: the GPS source on a pseudo-terminal, the rangefinder source on its
//! simulated bus, a CAN feed at a saturated bus's 16,000 frames/s, the real logger (its thread
//! and its writer thread, writing to a temporary directory through the real file system, with
//! its housekeeping pool) and the real radio uplink (MAVLink to a pseudo-terminal read by a
//! ground thread). After a warm-up, the allocations of each thread are counted over a window.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use harmony::clock::Stamp;
use harmony::concurrency::{
    BoxError, Context, DropReport, ErrorBudget, Housekeeping, Loop, LoopConfig, LoopProcessor,
    Outcome, Registry, Runner, Signal, Step, StopReason, queue, run_tree,
};
use harmony::drivers::Rangefinder;
use harmony::drivers::lidarlite::LidarLiteV3;
use harmony::logger::fs::RealFs;
use harmony::logger::session::Session;
use harmony::logger::{LoggerBackend, LoggerConfig};
use harmony::records::{CAN_EFF_FLAG, CanRecord, GpsRecord, RangeRecord};
use harmony::sim::gps::GpsSim;
use harmony::sim::rangefinder::{SimModel, SimSensor};
use harmony::sinks::drain::{Backend, SinkInputs, SinkLoop, Source};
use harmony::sources::gps::{Baud, GpsConfig, GpsSource};
use harmony::sources::rangefinder::{RangeConfig, RangeSource};

struct CountingAlloc;

/// The threads whose allocations are counted while [`MEASURING`] is set.
const TRACKED: [&str; 6] = [
    "logger",
    "log-writer",
    "uplink",
    "gps",
    "rangefinder",
    "can-feed",
];

static MEASURING: AtomicBool = AtomicBool::new(false);
static COUNTS: [AtomicU64; 6] = [const { AtomicU64::new(0) }; 6];
/// Allocations inside a backend's periodic (not per-record) work, reported, not asserted.
static PERIODIC: [AtomicU64; 6] = [const { AtomicU64::new(0) }; 6];

thread_local! {
    static ALLOCS: Cell<u64> = const { Cell::new(0) };
    /// 0: not looked up yet; 1: not tracked; 2 + i: `TRACKED[i]`.
    static SLOT: Cell<u8> = const { Cell::new(0) };
    /// Inside a backend's periodic work (see [`Periodic`]).
    static IN_PERIODIC: Cell<bool> = const { Cell::new(false) };
}

/// The calling thread's index in [`TRACKED`], from its name (no allocation: prctl).
fn tracked_slot() -> u8 {
    let mut name = [0u8; 16];
    // SAFETY: PR_GET_NAME writes at most 16 bytes (NUL included) into the buffer.
    unsafe {
        nix::libc::prctl(
            nix::libc::PR_GET_NAME,
            name.as_mut_ptr() as nix::libc::c_ulong,
            0,
            0,
            0,
        );
    }
    let len = name.iter().position(|&b| b == 0).unwrap_or(16);
    TRACKED
        .iter()
        .position(|t| t.as_bytes() == &name[..len])
        .map_or(1, |i| 2 + i as u8)
}

fn note_alloc() {
    ALLOCS.with(|c| c.set(c.get() + 1));
    if MEASURING.load(Ordering::Relaxed) {
        let mut slot = SLOT.with(Cell::get);
        if slot == 0 {
            slot = tracked_slot();
            SLOT.with(|s| s.set(slot));
        }
        if slot >= 2 {
            let i = (slot - 2) as usize;
            if IN_PERIODIC.with(Cell::get) {
                PERIODIC[i].fetch_add(1, Ordering::Relaxed);
            } else {
                COUNTS[i].fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        note_alloc();
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        note_alloc();
        unsafe { System.realloc(p, l, n) }
    }
}

#[global_allocator]
static A: CountingAlloc = CountingAlloc;

fn allocs() -> u64 {
    ALLOCS.with(Cell::get)
}

/// The logger backend, with its periodic work (once a second: processor states, the note,
/// the manifest's content every 5 s; at start and stop) counted apart from the per-record
/// path (every record handed over, formatted, chunked and sent to the writer).
struct Periodic<B>(B);

fn periodic<T>(f: impl FnOnce() -> T) -> T {
    IN_PERIODIC.with(|p| p.set(true));
    let r = f();
    IN_PERIODIC.with(|p| p.set(false));
    r
}

impl<B: Backend> Backend for Periodic<B> {
    fn signals(&self) -> Vec<String> {
        self.0.signals()
    }
    fn start(&mut self, ctx: &Context) -> Result<(), BoxError> {
        periodic(|| self.0.start(ctx))
    }
    fn ready(&mut self) -> bool {
        self.0.ready()
    }
    fn gps(&mut self, r: &GpsRecord) {
        self.0.gps(r)
    }
    fn range(&mut self, r: &RangeRecord) {
        self.0.range(r)
    }
    fn can(&mut self, r: &CanRecord) {
        self.0.can(r)
    }
    fn dropout(&mut self, source: Source, report: DropReport) {
        periodic(|| self.0.dropout(source, report))
    }
    fn batch_done(&mut self, ctx: &Context) -> Result<Option<Instant>, BoxError> {
        periodic(|| self.0.batch_done(ctx))
    }
    fn on_signal(&mut self, sig: &Signal, ctx: &Context) -> Result<(), BoxError> {
        periodic(|| self.0.on_signal(sig, ctx))
    }
    fn finish(&mut self, ctx: &Context) -> Result<(), BoxError> {
        periodic(|| self.0.finish(ctx))
    }
}

/// Pushes pre-built CAN records at 16 per millisecond tick (stands in for the socket, whose
/// frames the kernel hands over), to the logger and the uplink.
struct CanFeed {
    log: harmony::concurrency::Producer<CanRecord>,
    up: harmony::concurrency::Producer<CanRecord>,
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
            self.log.push(r);
            self.up.push(r);
        }
        Ok(Step::Continue)
    }
}

/// Issue #3, #11: in steady state the GPS source (pty read, NMEA intake, fix assembly, queue
/// push), the rangefinder source (driver on the bus), the real logger (its thread's per-record
/// path, and its writer thread writing to the card) and the real uplink (its whole thread:
/// draining, scheduling, MAVLink framing, writing to the radio's pty) allocate nothing per
/// record. The logger thread's periodic work is counted apart and printed. On the old code the
/// test measured a counting sink instead of the logger and no uplink at all.
#[test]
fn record_paths_do_not_allocate_in_steady_state() {
    let dir = tempfile::tempdir().unwrap();
    let (gl, glr) = queue(1 << 12, "gps->logger");
    let (gu, gur) = queue(1 << 12, "gps->uplink");
    let (rl, rlr) = queue(1 << 12, "rangefinder->logger");
    let (ru, rur) = queue(1 << 12, "rangefinder->uplink");
    let (cl, clr) = queue(1 << 15, "can->logger");
    let (cu, cur) = queue(1 << 12, "can->uplink");

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

    // The real logger, writing to a temporary directory, with its housekeeping pool.
    let session = Session::create(&dir.path().join("data")).unwrap();
    let (hk, pool) = Housekeeping::new("housekeeping", 2, Duration::from_secs(1));
    let logger = SinkLoop::new(
        "logger",
        SinkInputs {
            gps: glr,
            range: rlr,
            can: clr,
        },
        Periodic(LoggerBackend::new(
            LoggerConfig::default(),
            session.clone(),
            Arc::new(RealFs),
            &hk,
        )),
        Duration::from_millis(10),
    );
    // The real uplink, its radio a pseudo-terminal whose far side a ground thread reads.
    let radio = dir.path().join("radio");
    let cfg = harmony::uplink::config::UplinkSection {
        sim: Some(harmony::uplink::config::UplinkSimSection {
            link: Some(radio.clone()),
        }),
        baud: 115200,
        ..Default::default()
    };
    let uplink = harmony::uplink::build(
        &cfg,
        dir.path(),
        SinkInputs {
            gps: gur,
            range: rur,
            can: cur,
        },
        None,
    )
    .map_err(|(e, _)| e)
    .unwrap();
    let ground_stop = Arc::new(AtomicBool::new(false));
    let ground_bytes = Arc::new(AtomicU64::new(0));
    let ground = {
        let (stop, bytes) = (ground_stop.clone(), ground_bytes.clone());
        let mut port = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&radio)
            .unwrap();
        std::thread::spawn(move || {
            use std::io::Read;
            let mut buf = [0u8; 4096];
            while !stop.load(Ordering::Relaxed) {
                let mut fds = [nix::poll::PollFd::new(
                    std::os::fd::AsFd::as_fd(&port),
                    nix::poll::PollFlags::POLLIN,
                )];
                if nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(100u16)).unwrap_or(0) > 0
                    && let Ok(n) = port.read(&mut buf)
                {
                    bytes.fetch_add(n as u64, Ordering::Relaxed);
                }
            }
        })
    };

    let mut root = Runner::new("root")
        .child(pool)
        .child(LoopProcessor::new(logger))
        .with_child(harmony::concurrency::Child::boxed(uplink.processor))
        .child(LoopProcessor::new(gps))
        .child(LoopProcessor::with_config(
            rng,
            LoopConfig {
                error_budget: ErrorBudget::UNLIMITED,
                ..LoopConfig::every(Duration::from_millis(2))
            },
        ))
        .child(LoopProcessor::with_config(
            CanFeed {
                log: cl,
                up: cu,
                n: 0,
            },
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
    // Warm-up: every path has run (queues, ports, fix builder, rotations of buffers, the
    // writer's first syncs, the uplink's schedule and first frames, notes set).
    assert!(common::wait_until(common::secs(15), || metric(
        "gps", "fixes"
    ) > 5
        && metric("rangefinder", "readings") > 100
        && metric("logger", "can_written") > 20_000
        && ground_bytes.load(Ordering::Relaxed) > 2_000));
    std::thread::sleep(Duration::from_millis(1500));
    let before = (
        metric("gps", "sentences"),
        metric("rangefinder", "readings"),
        metric("logger", "can_written"),
        ground_bytes.load(Ordering::Relaxed),
    );
    MEASURING.store(true, Ordering::SeqCst);
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(3) * common::slow_factor() {
        std::thread::sleep(Duration::from_millis(50));
    }
    MEASURING.store(false, Ordering::SeqCst);
    let after = (
        metric("gps", "sentences"),
        metric("rangefinder", "readings"),
        metric("logger", "can_written"),
        ground_bytes.load(Ordering::Relaxed),
    );
    let uplink_metrics = reg.find("uplink").unwrap().snapshot().metrics;
    reg.request_stop_all(StopReason::Requested("test".into()));
    assert_eq!(h.join().unwrap(), Outcome::Completed);
    ground_stop.store(true, Ordering::Relaxed);
    ground.join().unwrap();

    let (sentences, readings, frames, radio_bytes) = (
        after.0 - before.0,
        after.1 - before.1,
        after.2 - before.2,
        after.3 - before.3,
    );
    let counts: Vec<(&str, u64, u64)> = TRACKED
        .iter()
        .enumerate()
        .map(|(i, t)| {
            (
                *t,
                COUNTS[i].load(Ordering::SeqCst),
                PERIODIC[i].load(Ordering::SeqCst),
            )
        })
        .collect();
    eprintln!(
        "measured over {:?}: {sentences} NMEA sentences, {readings} range readings, {frames} CAN \
         frames written by the logger, {radio_bytes} bytes on the radio\n\
         allocations per thread (per-record path, periodic work): {counts:?}\nuplink: {uplink_metrics:?}",
        Duration::from_secs(3) * common::slow_factor()
    );
    assert!(
        sentences > 100 && readings > 300 && frames > 10_000 && radio_bytes > 1_000,
        "records flowed"
    );
    for (name, n, _) in &counts {
        assert_eq!(*n, 0, "allocations on the {name} thread's record path");
    }
    assert!(
        session.dir.join("can.000.log").exists(),
        "the logger wrote to the card"
    );
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
