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
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use harmony::clock::{Stamp, wall_ns};
use harmony::concurrency::{
    Child, Context, FnLoop, LoopConfig, LoopProcessor, Producer, Registry, Runner, Step,
    StopReason, queue, run_tree,
};
use harmony::formats::dronecan::{Health, NodeStatus, encode_node_status};
use harmony::records::{CAN_EFF_FLAG, CanRecord, Fix, FixQuality, GpsRecord, RangeRecord};
use harmony::sinks::drain::SinkInputs;
use harmony::uplink::config::{RateSection, UplinkSection, UplinkSimSection};
use harmony::uplink::frame::{Decoder, fix_time_usec, parse};
use harmony::uplink::protocol::Stream;
use mavlink::dialects::common::MavMessage;

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

fn sources(
    gps: Producer<GpsRecord>,
    range: Producer<RangeRecord>,
    can: Producer<CanRecord>,
    fix_period_ms: u64,
    fixes: Arc<Mutex<HashMap<u64, Instant>>>,
) -> Runner {
    let t0 = wall_ns();
    let mut i = 0u64;
    let g = FnLoop::new("gps", move |_: &Context| {
        let f = Fix {
            stamp: Stamp::now(),
            utc_ns: Some(t0 + i as i64 * 100_000_000),
            lat_deg: Some(53.36),
            lon_deg: Some(-6.5),
            alt_msl_m: Some(61.7),
            quality: FixQuality::Gps,
            satellites: Some(9),
            hdop: Some(0.9),
            speed_mps: Some(1.5),
            course_deg: Some(90.0),
            time_of_day_s: None,
        };
        let usec = fix_time_usec(&f);
        let now = Instant::now();
        gps.push(GpsRecord::Fix(f));
        fixes.lock().unwrap().insert(usec, now);
        i += 1;
        Ok(Step::Continue)
    });
    let mut j = 0u64;
    let r = FnLoop::new("rangefinder", move |_: &Context| {
        for _ in 0..2 {
            range.push(RangeRecord {
                stamp: Stamp::now(),
                distance_cm: 100 + (j % 500) as u16,
                strength: 200,
                status: Default::default(),
            });
            j += 1;
        }
        Ok(Step::Continue)
    });
    let mut k = 0u64;
    let c = FnLoop::new("can", move |_: &Context| {
        for _ in 0..10 {
            let id = if k.is_multiple_of(2) {
                0x123
            } else {
                0x18FF_0001 | CAN_EFF_FLAG
            };
            can.push(CanRecord {
                stamp: Stamp::now(),
                id,
                len: 8,
                data: (k | 0xA5 << 56).to_le_bytes(),
            });
            if k.is_multiple_of(1000) {
                let s = NodeStatus {
                    node: 10,
                    uptime_s: (k / 1000) as u32,
                    health: Health::Ok,
                    mode: 0,
                    sub_mode: 0,
                    vendor_status: 0,
                };
                can.push(encode_node_status(16, &s, (k / 1000) as u8));
            }
            k += 1;
        }
        Ok(Step::Continue)
    });
    let every = |ms| LoopConfig::every(Duration::from_millis(ms));
    Runner::new("sensors")
        .child(LoopProcessor::with_config(g, every(fix_period_ms)))
        .child(LoopProcessor::with_config(r, every(10)))
        .child(LoopProcessor::with_config(c, every(10)))
}

fn run(r: &Run) -> Result {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = UplinkSection {
        sim: Some(UplinkSimSection {
            link: Some(dir.path().join("radio")),
        }),
        rates: r.rates.clone(),
        ..Default::default()
    };
    if r.signed {
        let k = dir.path().join("key");
        std::fs::write(&k, [0x42u8; 32]).unwrap();
        std::fs::set_permissions(&k, std::fs::Permissions::from_mode(0o600)).unwrap();
        cfg.signing_key = Some(k);
    }
    let (g, gr) = queue(64, "gps->uplink");
    let (rg, rr) = queue(128, "rangefinder->uplink");
    let (c, cr) = queue(1024, "can->uplink");
    let uplink = harmony::uplink::build(
        &cfg,
        SinkInputs {
            gps: gr,
            range: rr,
            can: cr,
        },
        Some(10),
    )
    .map_err(|(e, _)| e)
    .unwrap();
    let fixes = Arc::new(Mutex::new(HashMap::new()));
    let mut root = Runner::new("bench")
        .with_child(Child::boxed(uplink))
        .child(sources(g, rg, c, r.fix_period_ms, fixes.clone()));

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
    let fixes = fixes.lock().unwrap();
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
