//! Process-mode benchmarks (issue #14): a record's hop through a shared-memory ring between two
//! processes against the in-process queue, stop latency with a process subtree, and the pause
//! reaction across a process boundary, each against the threads-only figure in the same run.
//!
//! `cargo bench --bench process [hop|stop|pause]` prints one line per figure; BENCHMARKS.md
//! quotes them. This binary is also its own child process (the hook at the top of `main`).

#[path = "common/mod.rs"]
mod common;

use std::hint::spin_loop;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use harmony::clock::{Stamp, boot_ns};
use harmony::concurrency::process::{Build, BuildFn};
use harmony::concurrency::wake::Waker;
use harmony::concurrency::{
    BoxError, Child, Consumer, Context, Loop, LoopConfig, LoopProcessor, Multitasking, ProcState,
    Processor, Producer, Region, Registry, Runner, Step, StopReason, queue, run_tree,
};
use harmony::records::{CAN_EFF_FLAG, CanRecord};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

const BUILDERS: &[(&str, BuildFn)] = &[("hop", build_hop), ("observer", build_observer)];

const N: u64 = 20_000_000;
const CAP: usize = 4096;

fn record(i: u64) -> CanRecord {
    CanRecord {
        stamp: Stamp {
            boot_ns: i,
            wall_ns: i as i64,
        },
        id: CAN_EFF_FLAG | (i as u32 & 0x1fff_ffff),
        len: 8,
        data: i.to_le_bytes(),
    }
}

/// Pushes `n` records, retrying when the ring is full (the transport's own speed).
fn produce(tx: &Producer<CanRecord>, n: u64) {
    for i in 0..n {
        let mut r = record(i);
        loop {
            match tx.try_push(r) {
                Ok(()) => break,
                Err(back) => {
                    r = back;
                    spin_loop();
                }
            }
        }
    }
}

/// Drains `n` records the way a sink sleeps (eventcount + park); records/s from the first
/// record to the last.
fn consume(rx: &Consumer<CanRecord>, n: u64) -> f64 {
    let w = Waker::for_current();
    rx.set_waker(&w);
    let (mut got, mut sum) = (0u64, 0u64);
    let mut t0 = None;
    while got < n {
        match rx.pop() {
            Some(r) => {
                t0.get_or_insert_with(Instant::now);
                sum = sum.wrapping_add(r.stamp.boot_ns);
                got += 1;
            }
            None => {
                if rx.sleep_ready() {
                    std::thread::park_timeout(Duration::from_millis(10));
                }
            }
        }
    }
    assert_eq!(sum, (0..n).sum::<u64>(), "every record, intact");
    (n - 1) as f64 / t0.unwrap().elapsed().as_secs_f64()
}

/// The producer in a child process.
fn build_hop(b: &mut Build<'_>) -> Result<Box<dyn Processor>, BoxError> {
    struct Hop(Producer<CanRecord>, u64);
    impl Processor for Hop {
        fn name(&self) -> &str {
            "hop"
        }
        fn body(&mut self, ctx: &Context) -> Result<(), BoxError> {
            produce(&self.0, self.1);
            while !ctx.should_stop() {
                ctx.sleep_until(None);
            }
            Ok(())
        }
    }
    let n = b.arg().parse()?;
    Ok(Box::new(Hop(b.producer::<CanRecord>("hop")?, n)))
}

fn in_process() -> f64 {
    let (tx, rx) = queue::<CanRecord>(CAP, "bench");
    let producer = std::thread::spawn(move || produce(&tx, N));
    let r = consume(&rx, N);
    producer.join().unwrap();
    r
}

fn across_processes() -> f64 {
    let region = Region::builder("hop")
        .ring::<CanRecord>("hop", CAP)
        .build()
        .unwrap();
    let rx = region.consumer::<CanRecord>("hop").unwrap();
    let mut root = Runner::new("bench").with_child(
        Child::build_with("hop", "hop", &N.to_string())
            .mode(Multitasking::Processes)
            .region(region),
    );
    let registry = Registry::new();
    let r2 = registry.clone();
    let h = std::thread::spawn(move || run_tree(&r2, &mut root));
    let r = consume(&rx, N);
    registry.request_stop_all(StopReason::Requested("bench".into()));
    h.join().unwrap();
    r
}

fn hop_bench() {
    let mut a = Vec::new();
    let mut b = Vec::new();
    for _ in 0..5 {
        a.push(in_process());
        b.push(across_processes());
    }
    let (ma, mb) = (
        common::percentile(&mut a, 0.5),
        common::percentile(&mut b, 0.5),
    );
    println!(
        "record hop (CanRecord {} B, capacity {CAP}, {N} records, median of 5): shared-memory ring between processes \
         {:.2} M records/s ({:.1} ns/record); in-process queue between threads {:.2} M records/s ({:.1} ns/record); \
         cost ratio {:.2}x",
        std::mem::size_of::<CanRecord>(),
        mb / 1e6,
        1e9 / mb,
        ma / 1e6,
        1e9 / ma,
        ma / mb
    );
}

fn state(run: &Path, name: &str) -> Option<String> {
    harmony::control::state_files::read_state_file(&harmony::control::state_files::state_path(
        run, name,
    ))
    .ok()
    .and_then(|m| m.get("state").cloned())
}

/// SIGTERM to exit of `harmony demo --loops 10` (`processes`: the loops in a child process).
fn stop_once(processes: bool) -> f64 {
    let dir = tempfile::tempdir().unwrap();
    let mut args = vec![
        "demo",
        "--loops",
        "10",
        "--no-pools",
        "--data-dir",
        "data",
        "--log-level",
        "warn",
    ];
    if processes {
        args.push("--processes");
    }
    let mut child = Command::new(env!("CARGO_BIN_EXE_harmony"))
        .args(&args)
        .current_dir(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn harmony demo");
    let run = dir.path().join("data/run");
    let t0 = Instant::now();
    while !(1..=10).all(|i| state(&run, &format!("tick-{i}")).as_deref() == Some("active")) {
        assert!(t0.elapsed() < Duration::from_secs(20), "demo never active");
        std::thread::sleep(Duration::from_millis(5));
    }
    let t0 = Instant::now();
    kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).unwrap();
    let status = child.wait().unwrap();
    assert!(status.success());
    t0.elapsed().as_secs_f64() * 1e3
}

fn stop_bench(runs: usize) {
    let (mut p, mut t) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        p.push(stop_once(true));
        t.push(stop_once(false));
    }
    let (pm, p90) = (
        common::percentile(&mut p, 0.5),
        common::percentile(&mut p, 0.9),
    );
    let tm = common::percentile(&mut t, 0.5);
    println!(
        "stop latency (SIGTERM -> exit, demo with 10 loops in a child process, {runs} runs): median {pm:.2} ms, p90 {p90:.2} ms; \
         all threads (same run): median {tm:.2} ms; ratio {:.2}x",
        pm / tm
    );
}

/// Stamps the boot clock when it sees an activity change.
struct Observer;

impl Loop for Observer {
    fn name(&self) -> &str {
        "observer"
    }
    fn work(&mut self, _ctx: &Context) -> Result<Step, BoxError> {
        Ok(Step::Idle)
    }
    fn became_active(&mut self, ctx: &Context) -> Result<(), BoxError> {
        seen(ctx);
        Ok(())
    }
    fn became_inactive(&mut self, ctx: &Context) -> Result<(), BoxError> {
        seen(ctx);
        Ok(())
    }
}

fn seen(ctx: &Context) {
    ctx.metric("seen_ns").store(boot_ns(), Ordering::Relaxed);
    ctx.metric("changes").fetch_add(1, Ordering::Release);
}

fn build_observer(_: &mut Build<'_>) -> Result<Box<dyn Processor>, BoxError> {
    Ok(Box::new(LoopProcessor::with_config(
        Observer,
        LoopConfig::default(),
    )))
}

/// From setting / clearing the observer's pause flag to the (parked, idle) loop observing it,
/// in µs, `toggles` times.
fn reactions(mode: Multitasking, toggles: usize) -> Vec<f64> {
    let mut root =
        Runner::new("bench").with_child(Child::build_with("observer", "observer", "").mode(mode));
    let registry = Registry::new();
    let r2 = registry.clone();
    let h = std::thread::spawn(move || run_tree(&r2, &mut root));
    while registry.find("observer").map(|e| e.state()) != Some(ProcState::Active) {
        std::thread::sleep(Duration::from_millis(1));
    }
    let e = registry.find("observer").unwrap();
    let metric = |m: &str| {
        e.metrics()
            .into_iter()
            .find(|(k, _)| k == m)
            .map_or(0, |(_, v)| v)
    };
    let mut us = Vec::new();
    for i in 0..toggles {
        std::thread::sleep(Duration::from_millis(1));
        let before = metric("changes");
        let t0 = boot_ns();
        if i.is_multiple_of(2) {
            e.pause.set();
        } else {
            e.pause.clear();
        }
        while metric("changes") == before {
            spin_loop();
        }
        us.push(metric("seen_ns").saturating_sub(t0) as f64 / 1e3);
    }
    registry.request_stop_all(StopReason::Requested("bench".into()));
    h.join().unwrap();
    us
}

fn pause_bench(toggles: usize) {
    let mut p = reactions(Multitasking::Processes, toggles);
    let mut t = reactions(Multitasking::Threads, toggles);
    let (pm, p99) = (
        common::percentile(&mut p, 0.5),
        common::percentile(&mut p, 0.99),
    );
    let (tm, t99) = (
        common::percentile(&mut t, 0.5),
        common::percentile(&mut t, 0.99),
    );
    println!(
        "pause reaction across a process boundary (pause flag set/cleared -> parked loop in a child process observes, \
         {toggles} toggles): median {pm:.1} us, p99 {p99:.1} us; same loop as a thread: median {tm:.1} us, p99 {t99:.1} us"
    );
}

fn main() {
    harmony::concurrency::process::child_main_if_requested(BUILDERS);
    harmony::concurrency::process::register_builders(BUILDERS);
    let want = common::wanted();
    if want("hop") {
        hop_bench();
    }
    if want("pause") {
        pause_bench(2000);
    }
    if want("stop") {
        stop_bench(30);
    }
}
