//! Framework benchmarks (issue #2): stop latency, pause/resume reaction, idle cost.
//!
//! `cargo bench --bench framework` prints one line per figure; BENCHMARKS.md quotes them.
//! The stop-latency and idle figures spawn the real `harmony` binary (`harmony demo`), so they
//! include signal delivery, the reverse-order stop, the final state-file write and exit.

#[path = "common/mod.rs"]
mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use harmony::concurrency::{
    BoxError, Context, Loop, LoopConfig, LoopProcessor, ProcState, Registry, Runner, Step,
    StopReason, run_tree,
};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

fn state(run: &Path, name: &str) -> Option<String> {
    harmony::control::state_files::read_state_file(&harmony::control::state_files::state_path(
        run, name,
    ))
    .ok()
    .and_then(|m| m.get("state").cloned())
}

fn spawn_demo(dir: &Path, extra: &[&str]) -> std::process::Child {
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
    args.extend_from_slice(extra);
    Command::new(env!("CARGO_BIN_EXE_harmony"))
        .args(&args)
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn harmony demo")
}

fn wait_states(run: &Path, want: &str) {
    let t0 = Instant::now();
    while !(1..=10).all(|i| state(run, &format!("tick-{i}")).as_deref() == Some(want)) {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "demo never got {want}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// SIGTERM to process exit, tree of 10 loop threads.
fn stop_latency(runs: usize) {
    let mut ms = Vec::new();
    for _ in 0..runs {
        let dir = tempfile::tempdir().unwrap();
        let mut child = spawn_demo(dir.path(), &[]);
        wait_states(&dir.path().join("data/run"), "active");
        let t0 = Instant::now();
        kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).unwrap();
        let status = child.wait().unwrap();
        ms.push(t0.elapsed().as_secs_f64() * 1e3);
        assert!(status.success());
    }
    let max = ms.iter().cloned().fold(0.0, f64::max);
    let med = common::percentile(&mut ms, 0.5);
    let p90 = common::percentile(&mut ms, 0.9);
    println!(
        "stop latency (SIGTERM -> exit, 10 loops, {runs} runs): median {med:.2} ms, p90 {p90:.2} ms, max {max:.2} ms; \
         Python original >= 1500 ms by design (1 s queue timeout + 0.5 s sleep): {:.0}x",
        1500.0 / med
    );
}

/// Records when the loop saw each activity change.
struct Observer {
    seen: Arc<Mutex<Vec<Instant>>>,
}

impl Loop for Observer {
    fn name(&self) -> &str {
        "observer"
    }
    fn work(&mut self, _ctx: &Context) -> Result<Step, BoxError> {
        Ok(Step::Idle)
    }
    fn became_active(&mut self, _: &Context) -> Result<(), BoxError> {
        self.seen.lock().unwrap().push(Instant::now());
        Ok(())
    }
    fn became_inactive(&mut self, _: &Context) -> Result<(), BoxError> {
        self.seen.lock().unwrap().push(Instant::now());
        Ok(())
    }
}

/// From setting / clearing the waiting flag to the (parked, idle) loop observing it.
fn pause_resume(toggles: usize) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let mut root = Runner::new("root").child(LoopProcessor::with_config(
        Observer { seen: seen.clone() },
        LoopConfig::default(),
    ));
    let registry = Registry::new();
    let r2 = registry.clone();
    let h = std::thread::spawn(move || run_tree(&r2, &mut root));
    while registry.find("observer").map(|e| e.state()) != Some(ProcState::Active) {
        std::thread::sleep(Duration::from_millis(1));
    }
    let pause = registry.tree_pause().clone();
    let mut us = Vec::new();
    for i in 0..toggles {
        std::thread::sleep(Duration::from_millis(1));
        let before = seen.lock().unwrap().len();
        let t0 = Instant::now();
        if i.is_multiple_of(2) {
            pause.set();
        } else {
            pause.clear();
        }
        loop {
            let s = seen.lock().unwrap();
            if s.len() > before {
                us.push((s[before] - t0).as_secs_f64() * 1e6);
                break;
            }
            drop(s);
            std::hint::spin_loop();
        }
    }
    registry.request_stop_all(StopReason::Requested("bench".into()));
    h.join().unwrap();
    let med = common::percentile(&mut us, 0.5);
    let p99 = common::percentile(&mut us, 0.99);
    println!(
        "pause/resume reaction (flag set -> parked loop observes, {toggles} toggles): median {med:.1} us, p99 {p99:.1} us"
    );
}

/// (utime + stime ticks, context switches over all threads).
fn proc_sample(pid: u32) -> (u64, u64) {
    let ticks = common::process_ticks(pid);
    let mut switches = 0;
    for t in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let s = std::fs::read_to_string(t.unwrap().path().join("status")).unwrap_or_default();
        for l in s.lines() {
            if let Some(v) = l
                .strip_prefix("voluntary_ctxt_switches:")
                .or_else(|| l.strip_prefix("nonvoluntary_ctxt_switches:"))
            {
                switches += v.trim().parse::<u64>().unwrap_or(0);
            }
        }
    }
    (ticks, switches)
}

/// 10 loops all waiting for `secs` seconds.
fn idle_cost(secs: u64) {
    let dir = tempfile::tempdir().unwrap();
    let mut child = spawn_demo(dir.path(), &["--start-waiting"]);
    wait_states(&dir.path().join("data/run"), "waiting");
    std::thread::sleep(Duration::from_millis(1500));
    let (t0, s0) = proc_sample(child.id());
    let w0 = Instant::now();
    std::thread::sleep(Duration::from_secs(secs));
    let (t1, s1) = proc_sample(child.id());
    let wall = w0.elapsed().as_secs_f64();
    kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).unwrap();
    child.wait().unwrap();
    let cpu = (t1 - t0) as f64 / common::clk_tck() / wall * 100.0;
    let wakeups = (s1 - s0) as f64 / wall;
    println!(
        "idle cost (10 loops waiting, {wall:.1} s): {cpu:.3}% of one core, {wakeups:.1} wake-ups/s over all threads (context switches from /proc)"
    );
}

fn main() {
    // `cargo bench` passes --bench; a filter word selects one figure.
    let want = common::wanted();
    if want("stop") {
        stop_latency(30);
    }
    if want("pause") {
        pause_resume(2000);
    }
    if want("idle") {
        idle_cost(10);
    }
}
