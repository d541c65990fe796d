//! Logger benchmarks (issue #4). `cargo bench --bench logger [write|cpu]`.
//!
//! * write: CAN frames through the whole logging path (queue, logger thread formatting candump
//!   lines, writer thread appending 16 KiB chunks, fsync at close) into a file, against
//!   - a raw write of the same lines pre-formatted (the limit), and
//!   - python-can's `CanutilsLogWriter` writing the same frames (the ecosystem's writer), run
//!     with `$PYTHON` (default `python3`) if it has python-can; skipped with a message if not.
//! * cpu: the logger's two threads (`logger`, `log-writer`) at 16,000 frames/s in the running
//!   firmware, from /proc per-thread times.

#[path = "common/mod.rs"]
mod common;

use std::io::Write;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use harmony::clock::Stamp;
use harmony::concurrency::{LoopProcessor, Outcome, Registry, Runner, StopReason, queue, run_tree};
use harmony::formats::candump::{MAX_LINE, format_line};
use harmony::logger::fs::RealFs;
use harmony::logger::session::Session;
use harmony::logger::{LoggerBackend, LoggerConfig};
use harmony::records::{CAN_EFF_FLAG, CanRecord};
use harmony::sinks::drain::{SinkInputs, SinkLoop};

const N: u64 = 5_000_000;

fn frame(i: u64) -> CanRecord {
    CanRecord {
        stamp: Stamp {
            boot_ns: i,
            wall_ns: 1_700_000_000_000_000_000 + i as i64 * 1000,
        },
        id: CAN_EFF_FLAG | 0x1000_0000 | (i as u32 & 0xff_ffff),
        len: 8,
        data: i.to_le_bytes(),
    }
}

/// Frames per second through the logger into `dir`: the frames wait in the logger's queue
/// (the logger paused), then the logger drains, formats and writes them all (the clock stops
/// after its final fsync). The source side is measured on its own by `benches/records.rs`.
fn logger_path(dir: &std::path::Path) -> f64 {
    let (ct, cr) = queue::<CanRecord>(N as usize, "can->logger");
    let (_gt, gr) = queue(16, "gps");
    let (_rt, rr) = queue(16, "range");
    let session = Session::create(dir).unwrap();
    let cfg = LoggerConfig {
        rotate_bytes: 4 << 30,
        has_gps: false,
        has_range: false,
        ..Default::default()
    };
    let (hk, pool) =
        harmony::concurrency::Housekeeping::new("housekeeping", 1, Duration::from_secs(1));
    let backend = LoggerBackend::new(cfg, session.clone(), Arc::new(RealFs), &hk);
    let sink = SinkLoop::new(
        "logger",
        SinkInputs {
            gps: gr,
            range: rr,
            can: cr,
        },
        backend,
        Duration::from_millis(2),
    );
    let paused = harmony::concurrency::LoopConfig {
        start_active: false,
        ..Default::default()
    };
    let mut root = Runner::new("root")
        .child(pool)
        .child(LoopProcessor::with_config(sink, paused));
    let reg = Registry::new();
    let r2 = reg.clone();
    let h = std::thread::spawn(move || run_tree(&r2, &mut root));
    while reg.find("logger").map(|e| e.state()) != Some(harmony::concurrency::ProcState::Waiting) {
        std::thread::sleep(Duration::from_millis(1));
    }
    for i in 0..N {
        assert!(ct.push(frame(i)));
    }
    let t0 = Instant::now();
    reg.find("logger").unwrap().pause.clear();
    while !ct.is_empty() {
        std::thread::sleep(Duration::from_millis(1));
    }
    reg.request_stop_all(StopReason::Requested("bench".into()));
    assert_eq!(h.join().unwrap(), Outcome::Completed);
    let dt = t0.elapsed().as_secs_f64();
    let bytes = std::fs::metadata(session.dir.join("can.000.log"))
        .unwrap()
        .len();
    assert!(bytes > N * 40, "every frame written");
    N as f64 / dt
}

/// Frames per second writing the same lines, already formatted, in 16 KiB writes + fsync.
fn raw_write(dir: &std::path::Path) -> f64 {
    let mut all = Vec::with_capacity(N as usize * 45);
    let mut line = [0u8; MAX_LINE];
    for i in 0..N {
        let r = frame(i);
        let n = format_line(&mut line, (r.stamp.wall_ns / 1000) as u64, "can0", &r);
        all.extend_from_slice(&line[..n]);
    }
    let mut f = std::fs::File::create(dir.join("raw.log")).unwrap();
    let t0 = Instant::now();
    for chunk in all.chunks(16 * 1024) {
        f.write_all(chunk).unwrap();
    }
    f.sync_data().unwrap();
    N as f64 / t0.elapsed().as_secs_f64()
}

fn python_can(dir: &std::path::Path, n: u64) -> Option<f64> {
    let py = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/py/canutils_writer.py");
    let out = Command::new(&py)
        .arg(script)
        .arg(n.to_string())
        .arg(dir.join("python.log"))
        .output()
        .ok()?;
    if !out.status.success() {
        eprintln!(
            "python-can reference skipped ({py}: {}); install it with `pip install python-can` and set PYTHON",
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .last()
                .unwrap_or("")
        );
        return None;
    }
    String::from_utf8_lossy(&out.stdout).trim().parse().ok()
}

fn write_bench() {
    let dir = tempfile::tempdir_in(".").unwrap();
    // Alternate the two, three rounds each; medians (the machine is shared and noisy).
    let (mut ours, mut raw) = (Vec::new(), Vec::new());
    for _ in 0..3 {
        let d = tempfile::tempdir_in(dir.path()).unwrap();
        ours.push(logger_path(d.path()));
        raw.push(raw_write(d.path()));
    }
    let (ours, raw) = (
        common::percentile(&mut ours, 0.5),
        common::percentile(&mut raw, 0.5),
    );
    let py = python_can(dir.path(), 1_000_000);
    println!(
        "candump logging, {N} frames (29-bit, 8 bytes) to a file on {}, median of 3: logger {:.2} M frames/s; raw write of the same lines pre-formatted {:.2} M frames/s (logger = {:.2}x of that limit){}",
        dir.path().display(),
        ours / 1e6,
        raw / 1e6,
        ours / raw,
        match py {
            Some(p) => format!(
                "; python-can CanutilsLogWriter {:.0} frames/s (1M frames): logger {:.1}x faster (the raw-write limit itself is {:.1}x python-can)",
                p,
                ours / p,
                raw / p
            ),
            None => String::new(),
        }
    );
}

fn cpu_bench() {
    let dir = tempfile::tempdir_in(".").unwrap();
    let mut child = common::spawn_sim(dir.path(), "fps = 16000.0\n");
    std::thread::sleep(Duration::from_secs(3));
    let names = ["logger", "log-writer"];
    let tck = common::clk_tck();
    let (a, t0) = (common::thread_ticks(child.id(), &names), Instant::now());
    std::thread::sleep(Duration::from_secs(10));
    let b = common::thread_ticks(child.id(), &names);
    let wall = t0.elapsed().as_secs_f64();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    child.wait().unwrap();
    println!(
        "logger CPU at 16,000 CAN frames/s (+ GPS 5 Hz, rangefinder 100 Hz), threads logger + log-writer, 10 s: {:.2}% of one core",
        (b - a) as f64 / tck / wall * 100.0
    );
}

fn main() {
    let want = common::wanted();
    if want("write") {
        write_bench();
    }
    if want("cpu") {
        cpu_bench();
    }
}
