//! Radio uplink benchmarks (issue #5). `cargo bench --bench uplink` (60 s per run; set
//! `HARMONY_BENCH_SECS` for shorter runs).
//!
//! The uplink runs in a small tree with simulated sources at full sensor rate (GPS fixes at
//! 10 Hz, rangefinder at 200 Hz, 1000 CAN frames/s of two selected ids, the flight
//! controller's NodeStatus at 1 Hz) and writes to its simulated radio (a pseudo-terminal); the
//! bench reads the ground side itself, timestamps every read and decodes every frame.
//!
//! * budget: bytes on the wire against the budget (57600 baud, 50 % = 2880 B/s), over the
//!   whole run and in the fullest 10 s window, with the board's default rates and with rates
//!   that ask for more than the budget (signed); per-stream rates achieved against asked.
//! * latency: from a fix entering the uplink's queue to the last byte of its GPS_RAW_INT read
//!   on the ground side, with the fix rate equal to the stream rate (5 Hz / 5 Hz) and twice it
//!   (10 Hz / 5 Hz: every other fix is superseded); plus the uplink's own measure (fix
//!   timestamp to the end of the write).

use std::collections::HashMap;
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use harmony::concurrency::{Child, Registry, Runner, StopReason, run_tree};
use harmony::uplink::config::{RateSection, UplinkSection};
use harmony::uplink::frame::{Decoder, parse};
use harmony::uplink::protocol::Stream;
use mavlink::dialects::common::MavMessage;

#[path = "../tests/uplink_support/mod.rs"]
mod uplink_support;
use uplink_support::{KEY, build_uplink, sim_cfg, sources_with, uplink_queues, write_key};

struct Run {
    name: &'static str,
    rates: RateSection,
    signed: bool,
    fix_period_ms: u64,
    secs: u64,
}

struct Result {
    bytes: u64,
    secs: f64,
    max_window: u64,
    frames: HashMap<&'static str, u64>,
    latencies: Vec<Duration>,
    writer_mean_us: f64,
    writer_max_us: u64,
}

fn metric(reg: &Registry, m: &str) -> u64 {
    reg.find("uplink")
        .and_then(|e| e.snapshot().metrics.get(m).copied())
        .unwrap_or(0)
}

fn run(r: &Run) -> Result {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = UplinkSection {
        rates: r.rates.clone(),
        ..sim_cfg(dir.path())
    };
    if r.signed {
        cfg.signing_key = Some(write_key(dir.path(), &KEY));
    }
    let ((g, rg, c), inputs) = uplink_queues();
    let (uplink, _saver) = build_uplink(&cfg, dir.path(), inputs);
    let period = Duration::from_millis(r.fix_period_ms);
    let (sensors, feeds) = sources_with(g, rg, c, 0, period);
    let mut root = Runner::new("bench")
        .with_child(Child::boxed(uplink))
        .child(sensors);

    // The ground side, read by this process.
    let mut far = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(nix::libc::O_NOCTTY)
        .open(dir.path().join("radio"))
        .unwrap();
    let done = Arc::new(AtomicBool::new(false));
    let d2 = done.clone();
    type Seen = (Vec<(Instant, usize)>, Vec<(Instant, MavMessage)>);
    let reader = std::thread::spawn(move || -> Seen {
        let mut dec = Decoder::default();
        let mut buf = [0u8; 4096];
        let mut reads = Vec::new();
        let mut msgs = Vec::new();
        // Blocking reads with a short timeout (VMIN 0, VTIME 1): every read is timestamped.
        if let Ok(mut t) = nix::sys::termios::tcgetattr(&far) {
            nix::sys::termios::cfmakeraw(&mut t);
            t.control_chars[nix::sys::termios::SpecialCharacterIndices::VMIN as usize] = 0;
            t.control_chars[nix::sys::termios::SpecialCharacterIndices::VTIME as usize] = 1;
            let _ = nix::sys::termios::tcsetattr(&far, nix::sys::termios::SetArg::TCSANOW, &t);
        }
        while !d2.load(Ordering::Relaxed) {
            if let Ok(n) = far.read(&mut buf)
                && n > 0
            {
                let now = Instant::now();
                reads.push((now, n));
                dec.push(&buf[..n]);
                while let Some(raw) = dec.next_frame() {
                    if let Ok(m) = parse(&raw) {
                        msgs.push((now, m));
                    }
                }
            }
        }
        (reads, msgs)
    });
    let reg = Registry::new();
    let r2 = reg.clone();
    let tree = std::thread::spawn(move || run_tree(&r2, &mut root));
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs(r.secs));
    let t1 = Instant::now();
    reg.request_stop_all(StopReason::Requested("bench".into()));
    let _ = tree.join();
    done.store(true, Ordering::Relaxed);
    let (reads, msgs) = reader.join().unwrap();

    let in_run: Vec<(Instant, usize)> = reads
        .into_iter()
        .filter(|(t, _)| *t >= t0 && *t <= t1)
        .collect();
    let bytes = in_run.iter().map(|(_, n)| *n as u64).sum();
    let mut max_window = 0u64;
    let mut lo = 0;
    let mut sum = 0u64;
    for (t, n) in &in_run {
        sum += *n as u64;
        while t.duration_since(in_run[lo].0) >= Duration::from_secs(10) {
            sum -= in_run[lo].1 as u64;
            lo += 1;
        }
        max_window = max_window.max(sum);
    }
    let mut frames: HashMap<&'static str, u64> = HashMap::new();
    let mut latencies = Vec::new();
    let fixes: HashMap<u64, Instant> = feeds.fixes.lock().unwrap().iter().copied().collect();
    for (t, m) in msgs.iter().filter(|(t, _)| *t >= t0 && *t <= t1) {
        let k = match m {
            MavMessage::HEARTBEAT(_) => "heartbeat",
            MavMessage::GPS_RAW_INT(g) => {
                if let Some(p) = fixes.get(&g.time_usec) {
                    latencies.push(t.saturating_duration_since(*p));
                }
                "gps"
            }
            MavMessage::DISTANCE_SENSOR(_) => "range",
            MavMessage::CAN_FRAME(_) => "can",
            MavMessage::SYS_STATUS(_) => "sys",
            MavMessage::NAMED_VALUE_INT(v) if v.name.to_str().unwrap_or("").starts_with("fc_") => {
                "fc"
            }
            MavMessage::NAMED_VALUE_INT(_) => "health",
            MavMessage::STATUSTEXT(_) => "statustext",
            _ => "other",
        };
        *frames.entry(k).or_default() += 1;
    }
    latencies.sort();
    let sent = metric(&reg, "sent_gps").max(1);
    Result {
        bytes,
        secs: (t1 - t0).as_secs_f64(),
        max_window,
        frames,
        latencies,
        writer_mean_us: metric(&reg, "gps_latency_us_sum") as f64 / sent as f64,
        writer_max_us: metric(&reg, "gps_latency_us_max"),
    }
}

fn pct(v: &[Duration], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let i = ((v.len() - 1) as f64 * p).round() as usize;
    v[i].as_secs_f64() * 1000.0
}

fn main() {
    let secs: u64 = std::env::var("HARMONY_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let budget = UplinkSection::default().budget_bps();
    let demanding = RateSection {
        gps: Some(5.0),
        range: Some(50.0),
        can: Some(50.0),
        fc: Some(3.0),
        sys: Some(1.0),
        health: Some(10.0),
    };
    let runs = [
        Run {
            name: "board default rates, unsigned",
            rates: RateSection::default(),
            signed: false,
            fix_period_ms: 100,
            secs,
        },
        Run {
            name: "rates asking for more than the budget, signed",
            rates: demanding.clone(),
            signed: true,
            fix_period_ms: 100,
            secs,
        },
        Run {
            name: "fixes at 5 Hz = GPS stream rate, signed, saturated",
            rates: demanding,
            signed: true,
            fix_period_ms: 200,
            secs: secs.min(30),
        },
    ];
    println!(
        "uplink: 57600 baud, budget 50 % = {budget:.0} B/s; sources at full rate (fixes 10 Hz unless said, range 200 Hz, CAN 1000 frames/s, NodeStatus 1 Hz)"
    );
    for r in &runs {
        let res = run(r);
        let rate = res.bytes as f64 / res.secs;
        println!("\n{} ({:.0} s):", r.name, res.secs);
        println!(
            "  bytes on the wire: {} = {rate:.1} B/s = {:.1} % of the budget; fullest 10 s window {} B = {:.1} % of 10 s of budget",
            res.bytes,
            rate / budget * 100.0,
            res.max_window,
            res.max_window as f64 / (budget * 10.0) * 100.0
        );
        let asked = |s: Stream| r.rates.hz(s);
        let mut line = String::from("  stream rates achieved / asked (per s):");
        let per_s = |k: &str| *res.frames.get(k).unwrap_or(&0) as f64 / res.secs;
        line += &format!(" heartbeat {:.2}/1", per_s("heartbeat"));
        for s in Stream::DEFAULT_PRIORITY {
            line += &format!(" {} {:.2}/{}", s.name(), per_s(s.name()), asked(s));
        }
        println!("{line}");
        println!(
            "  GPS fix -> last byte at the ground ({} fixes sent): median {:.1} ms, p99 {:.1} ms, max {:.1} ms; uplink's own (fix stamp -> write done): mean {:.1} ms, max {:.1} ms",
            res.latencies.len(),
            pct(&res.latencies, 0.5),
            pct(&res.latencies, 0.99),
            pct(&res.latencies, 1.0),
            res.writer_mean_us / 1000.0,
            res.writer_max_us as f64 / 1000.0
        );
    }
}
