//! The GPS source against real receivers' captures (issue #3): each gpsd regression log is
//! written into a pseudo-terminal and read by the GPS source like a UART; it must accept
//! exactly the sentences gpsd accepted (the `$` lines of the log's `.chk`) and count the rest
//! as rejected. Also: the device vanishing and coming back, and baud-rate hunting.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{secs, wait_until};
use harmony::concurrency::{
    Child, Consumer, LoopConfig, LoopProcessor, Outcome, ProcState, Registry, Runner, StopReason,
    queue, run_tree,
};
use harmony::records::GpsRecord;
use harmony::sim::gps::GpsSim;
use harmony::sources::gps::{Baud, GpsConfig, GpsSource};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/nmea")
        .join(name)
}

fn metric(reg: &Registry, proc_name: &str, m: &str) -> u64 {
    reg.find(proc_name)
        .and_then(|e| e.snapshot().metrics.get(m).copied())
        .unwrap_or(0)
}

fn source(
    device: PathBuf,
    baud: Baud,
    dwell: Duration,
) -> (GpsSource, Consumer<GpsRecord>, Consumer<GpsRecord>) {
    let (ltx, lrx) = queue(1 << 16, "gps->logger");
    let (utx, urx) = queue(1 << 14, "gps->uplink");
    let src = GpsSource::new(
        GpsConfig {
            name: "gps".into(),
            device,
            baud,
            hunt_dwell: dwell,
        },
        harmony::sources::SourceOutputs::new(ltx, utx),
    );
    (src, lrx, urx)
}

struct Replayed {
    accepted: Vec<String>,
    fixes: usize,
    sentences_metric: u64,
    rejected: u64,
}

/// Writes a capture through a pty into the GPS source; returns what reached the logger queue.
fn replay(name: &str) -> Replayed {
    let bytes = std::fs::read(fixture(name)).unwrap();
    let sim = GpsSim::new("gps-sim", &bytes, 500.0, false).unwrap();
    let (src, lrx, _urx) = source(
        sim.device_path(),
        Baud::Fixed(115200),
        Duration::from_secs(3),
    );
    let paused = LoopConfig {
        start_active: false,
        ..Default::default()
    };
    let mut root = Runner::new("root")
        .child(LoopProcessor::new(src))
        .with_child(Child::new(LoopProcessor::with_config(sim, paused)));
    let reg = Registry::new();
    let r2 = reg.clone();
    let h = std::thread::spawn(move || run_tree(&r2, &mut root));
    // The sim starts paused; let it write only once the source has the port open.
    assert!(wait_until(secs(10), || reg
        .find("gps")
        .is_some_and(|e| e.note().contains("baud"))
        && reg
            .find("gps-sim")
            .is_some_and(|e| e.state() == ProcState::Waiting)));
    reg.find("gps-sim").unwrap().pause.clear();
    assert!(wait_until(secs(60), || reg
        .find("gps-sim")
        .is_some_and(|e| e.note() == "capture finished")));
    // Every '$' the receiver sent is either accepted or rejected.
    let candidates = harmony::sim::gps::receiver_lines(&bytes)
        .iter()
        .map(|l| l.iter().filter(|&&b| b == b'$').count() as u64)
        .sum::<u64>();
    let seen = |reg: &Registry| {
        let m = |k| metric(reg, "gps", k);
        m("sentences") + m("bad_checksum") + m("no_checksum") + m("overlong") + m("fragments")
    };
    assert!(
        wait_until(secs(10), || seen(&reg) >= candidates),
        "{name}: {} of {candidates} sentences seen",
        seen(&reg)
    );
    reg.request_stop_all(StopReason::Requested("test".into()));
    assert_eq!(h.join().unwrap(), Outcome::Completed);
    let mut accepted = Vec::new();
    let mut fixes = 0;
    while let Some(r) = lrx.pop() {
        match r {
            GpsRecord::Sentence(s) => {
                // Exactly as received: the capture's own line, terminator included.
                assert!(s.bytes.ends_with(b"\n"));
                accepted.push(s.text().to_owned());
            }
            GpsRecord::Fix(_) => fixes += 1,
        }
    }
    assert_eq!(lrx.dropped(), 0);
    let m = |k| metric(&reg, "gps", k);
    Replayed {
        accepted,
        fixes,
        sentences_metric: m("sentences"),
        rejected: m("bad_checksum") + m("no_checksum") + m("overlong") + m("fragments"),
    }
}

fn gpsd_accepted(name: &str) -> Vec<String> {
    let chk = std::fs::read(fixture(&format!("{name}.chk"))).unwrap();
    String::from_utf8_lossy(&chk)
        .lines()
        .filter(|l| l.starts_with('$') || l.starts_with('!'))
        .map(|l| l.trim_end_matches('\r').to_owned())
        .collect()
}

fn candidates(name: &str) -> u64 {
    let bytes = std::fs::read(fixture(name)).unwrap();
    harmony::sim::gps::receiver_lines(&bytes)
        .iter()
        .map(|l| l.iter().filter(|&&b| b == b'$').count() as u64)
        .sum()
}

const LOGS: [&str; 10] = [
    "bu353s4.log",
    "com-1289.log",
    "firefly-II.log",
    "holux-gm-210.log",
    "mt3339.log",
    "neo-m8n.log",
    "nmea-rtk.log",
    "quectel-l76k-nmea.log",
    "triton400.log",
    "ublox-neo-m9n-nmea.log",
];

/// Issue #3: through a pty, the GPS source accepts exactly the sentences gpsd accepted, for
/// every one of the ten receivers, and counts the rest as rejected.
#[test]
fn accepts_exactly_what_gpsd_accepted() {
    let mut total_rejected = 0;
    for name in LOGS {
        let r = replay(name);
        let want = gpsd_accepted(name);
        assert_eq!(r.accepted.len(), want.len(), "{name}: count");
        for (i, (got, exp)) in r.accepted.iter().zip(&want).enumerate() {
            assert_eq!(got, exp, "{name}: sentence {i}");
        }
        assert_eq!(r.sentences_metric, want.len() as u64, "{name}");
        assert_eq!(
            r.rejected,
            candidates(name) - want.len() as u64,
            "{name}: rejected"
        );
        total_rejected += r.rejected;
        assert!(r.fixes > 0, "{name}: some fixes");
    }
    // firefly-II: 23 bad-checksum GGAs; com-1289: one corrupted GSV; triton400: one run-together
    // GGA; holux: one truncated GGA.
    assert_eq!(total_rejected, 26);
}

/// Issue #3: the device vanishing (unplugged) makes the source reopen it every 2 s at most,
/// its state showing it, and reading resumes when it comes back; nothing else is affected.
#[test]
fn unplugged_gps_is_reopened() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("gps0");
    let plug = |link: &Path| {
        let (master, slave) = serialport::TTYPort::pair().unwrap();
        let name = serialport::SerialPort::name(&slave).unwrap();
        let _ = std::fs::remove_file(link);
        std::os::unix::fs::symlink(name, link).unwrap();
        (master, slave)
    };
    let (mut master, slave) = plug(&link);
    let (src, lrx, _urx) = source(link.clone(), Baud::Fixed(9600), Duration::from_secs(3));
    let (tick, ticks) = {
        let n = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let n2 = n.clone();
        let l =
            harmony::concurrency::FnLoop::new("other", move |_: &harmony::concurrency::Context| {
                n2.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                Ok(harmony::concurrency::Step::Continue)
            });
        (
            LoopProcessor::with_config(l, LoopConfig::every(Duration::from_millis(5))),
            n,
        )
    };
    let mut root = Runner::new("root")
        .child(LoopProcessor::new(src))
        .child(tick);
    let reg = Registry::new();
    let r2 = reg.clone();
    let h = std::thread::spawn(move || run_tree(&r2, &mut root));
    let gga = b"$GPGGA,092750.000,5321.6802,N,00630.3372,W,1,8,1.03,61.7,M,55.2,M,,*76\r\n";
    assert!(wait_until(secs(10), || reg
        .find("gps")
        .is_some_and(|e| e.note().contains("9600"))));
    master.write_all(gga).unwrap();
    assert!(wait_until(secs(5), || metric(&reg, "gps", "sentences") == 1));

    // Unplug: the device node goes away and the terminal hangs up. (The link goes first: the
    // freed pty number may be reused at once by another test's terminal.)
    std::fs::remove_file(&link).unwrap();
    drop(master);
    drop(slave);
    assert!(wait_until(secs(5), || metric(&reg, "gps", "reopens") == 1));
    assert!(wait_until(secs(5), || reg
        .find("gps")
        .is_some_and(|e| e.note().contains("no device"))));
    assert_eq!(
        reg.find("gps").unwrap().state(),
        ProcState::Active,
        "not failed"
    );
    let t0 = ticks.load(std::sync::atomic::Ordering::SeqCst);
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        ticks.load(std::sync::atomic::Ordering::SeqCst) > t0 + 10,
        "the rest keeps running"
    );

    // Plug back in: within one reopen period the source reads again.
    let (mut master, _slave) = plug(&link);
    assert!(wait_until(secs(5), || reg
        .find("gps")
        .is_some_and(|e| e.note().contains("9600"))));
    master.write_all(gga).unwrap();
    assert!(wait_until(secs(5), || metric(&reg, "gps", "sentences") == 2));
    assert_eq!(reg.find("gps").unwrap().restarts(), 0);
    reg.request_stop_all(StopReason::Requested("test".into()));
    assert_eq!(h.join().unwrap(), Outcome::Completed);
    let n = std::iter::from_fn(|| lrx.pop())
        .filter(|r| matches!(r, GpsRecord::Sentence(_)))
        .count();
    assert_eq!(n, 2);
}

/// Issue #3: with `baud = "auto"` the source steps through the rates like gpsd until
/// sentences with valid checksums arrive, then stays there.
#[test]
fn baud_hunting_locks_on_valid_sentences() {
    use std::io::Write;
    let (mut master, slave) = serialport::TTYPort::pair().unwrap();
    let path = PathBuf::from(serialport::SerialPort::name(&slave).unwrap());
    let (src, _lrx, _urx) = source(path, Baud::Auto(9600), Duration::from_millis(150));
    let mut root = Runner::new("root").child(LoopProcessor::new(src));
    let reg = Registry::new();
    let r2 = reg.clone();
    let h = std::thread::spawn(move || run_tree(&r2, &mut root));
    assert!(wait_until(secs(5), || metric(&reg, "gps", "baud") == 9600));
    // Garbage only (what a wrong rate looks like): the source moves on.
    for _ in 0..10 {
        let _ = master.write_all(b"\x8a\xf3garbage\xff\r\n");
        std::thread::sleep(Duration::from_millis(40));
    }
    assert!(wait_until(secs(5), || metric(&reg, "gps", "baud") >= 38400));
    let gga = b"$GPGGA,092750.000,5321.6802,N,00630.3372,W,1,8,1.03,61.7,M,55.2,M,,*76\r\n";
    assert!(wait_until(secs(5), || {
        let _ = master.write_all(gga);
        std::thread::sleep(Duration::from_millis(20));
        reg.find("gps")
            .is_some_and(|e| e.note().contains("detected"))
    }));
    let locked = metric(&reg, "gps", "baud");
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(
        metric(&reg, "gps", "baud"),
        locked,
        "stays at the detected rate"
    );
    reg.request_stop_all(StopReason::Requested("test".into()));
    assert_eq!(h.join().unwrap(), Outcome::Completed);
    drop(slave);
}

/// `$BODY*hh\r\n`.
fn nmea(body: &str) -> String {
    let sum = body.bytes().fold(0u8, |a, b| a ^ b);
    format!("${body}*{sum:02X}\r\n")
}

/// Issue #17: a receiver's `inf`/`nan` numbers are rejected and counted at intake
/// (`non_finite`), and never reach a fix; the raw sentences are still logged as received.
#[test]
fn non_finite_values_are_rejected_and_counted() {
    use std::io::Write;
    let (mut master, slave) = serialport::TTYPort::pair().unwrap();
    let path = PathBuf::from(serialport::SerialPort::name(&slave).unwrap());
    let (src, lrx, urx) = source(path, Baud::Fixed(9600), Duration::from_secs(3));
    let mut root = Runner::new("root").child(LoopProcessor::new(src));
    let reg = Registry::new();
    let r2 = reg.clone();
    let h = std::thread::spawn(move || run_tree(&r2, &mut root));
    assert!(wait_until(secs(10), || reg
        .find("gps")
        .is_some_and(|e| e.note().contains("9600"))));
    let gga = |t: &str, alt: &str, hdop: &str| {
        nmea(&format!(
            "GPGGA,{t},4807.0380,N,01131.3240,E,1,08,{hdop},{alt},M,46.9,M,,"
        ))
    };
    let rmc = |t: &str, kn: &str, course: &str| {
        nmea(&format!(
            "GPRMC,{t},A,4807.0380,N,01131.3240,E,{kn},{course},040826,,,A"
        ))
    };
    let lines = [
        gga("120000.00", "545.4", "0.9"),
        rmc("120000.00", "1.0", "10.0"),
        gga("120001.00", "inf", "0.9"),
        rmc("120001.00", "NaN", "10.0"),
        gga("120002.00", "545.4", "nan"),
        rmc("120002.00", "1.0", "-inf"),
        nmea("GPVTG,Infinity,T,,M,1.0,N,1.9,K,A"),
        gga("120003.00", "545.4", "0.9"),
        rmc("120003.00", "1.0", "10.0"),
        gga("120004.00", "545.4", "0.9"),
    ];
    master.write_all(lines.concat().as_bytes()).unwrap();
    assert!(wait_until(secs(5), || metric(&reg, "gps", "sentences")
        == lines.len() as u64));
    assert_eq!(metric(&reg, "gps", "non_finite"), 5);
    reg.request_stop_all(StopReason::Requested("test".into()));
    assert_eq!(h.join().unwrap(), Outcome::Completed);
    let (mut raw, mut fixes) = (0, Vec::new());
    while let Some(r) = lrx.pop() {
        match r {
            GpsRecord::Sentence(_) => raw += 1,
            GpsRecord::Fix(f) => fixes.push(f),
        }
    }
    assert_eq!(raw, lines.len(), "every sentence logged raw");
    // Epochs 1 and 2 had nothing finite: no fix; epoch 4 waits for its RMC.
    let epochs: Vec<_> = fixes.iter().map(|f| f.time_of_day_s).collect();
    assert_eq!(epochs, [Some(43200.0), Some(43203.0)], "{fixes:?}");
    let uplinked: Vec<_> = std::iter::from_fn(|| urx.pop()).collect();
    assert_eq!(uplinked.len(), fixes.len());
    for f in &fixes {
        let floats = [f.lat_deg, f.lon_deg, f.time_of_day_s]
            .into_iter()
            .flatten()
            .chain(
                [f.alt_msl_m, f.hdop, f.speed_mps, f.course_deg]
                    .into_iter()
                    .flatten()
                    .map(f64::from),
            );
        for v in floats {
            assert!(v.is_finite(), "{f:?}");
        }
    }
    drop(slave);
}

/// Runs the simulator alone until it is active, then lets a GPS source open its port (as on
/// the sim board, where both start together and the source opens the port a moment later);
/// returns the sentences the source logged, with their arrival times, once `n` have come.
fn sim_then_source(
    capture: &[u8],
    speed: f64,
    n: usize,
) -> (Vec<(String, u64)>, std::sync::Arc<Registry>) {
    let sim = GpsSim::new("gps-sim", capture, speed, false).unwrap();
    let path = sim.device_path();
    let mut sim_root = Runner::new("sim").child(LoopProcessor::new(sim));
    let sim_reg = Registry::new();
    let r2 = sim_reg.clone();
    let hs = std::thread::spawn(move || run_tree(&r2, &mut sim_root));
    assert!(wait_until(secs(10), || sim_reg
        .find("gps-sim")
        .is_some_and(|e| e.state() == ProcState::Active)));
    // Time for a simulator that writes at once to write its first epoch before the port opens.
    std::thread::sleep(Duration::from_millis(300));
    let (src, lrx, _urx) = source(path, Baud::Fixed(115200), Duration::from_secs(3));
    let mut root = Runner::new("root").child(LoopProcessor::new(src));
    let reg = Registry::new();
    let r3 = reg.clone();
    let h = std::thread::spawn(move || run_tree(&r3, &mut root));
    let mut got = Vec::new();
    wait_until(secs(20), || {
        while let Some(r) = lrx.pop() {
            if let GpsRecord::Sentence(s) = r {
                got.push((s.text().to_owned(), s.stamp.boot_ns));
            }
        }
        got.len() >= n
    });
    reg.request_stop_all(StopReason::Requested("test".into()));
    assert_eq!(h.join().unwrap(), Outcome::Completed);
    sim_reg.request_stop_all(StopReason::Requested("test".into()));
    assert_eq!(hs.join().unwrap(), Outcome::Completed);
    (got, sim_reg)
}

/// Issue #16: the simulated GPS replays its capture from the first line, whenever the source
/// opens the port, and at the capture's own pace, across UTC midnight too (23:59:59 and
/// 00:00:00 are one epoch apart, not written together).
#[test]
fn sim_replays_from_its_first_line_at_its_own_pace_across_midnight() {
    let times = ["235958.00", "235959.00", "000000.00", "000001.00"];
    let mut capture = String::from("# a comment line\n");
    for (i, t) in times.iter().enumerate() {
        capture += &nmea(&format!(
            "GPGGA,{t},4807.{:04},N,01131.3240,E,1,08,0.9,545.4,M,46.9,M,,",
            380 + i
        ));
        capture += &nmea(&format!(
            "GPRMC,{t},A,4807.{:04},N,01131.3240,E,1.0,10.0,{},,,A",
            380 + i,
            if i < 2 { "040826" } else { "050826" }
        ));
    }
    let want = harmony::sim::gps::receiver_lines(capture.as_bytes());
    // Speed 2: an epoch every 0.5 s.
    let (got, _) = sim_then_source(capture.as_bytes(), 2.0, want.len());
    let lines: Vec<&str> = got.iter().map(|(l, _)| l.as_str()).collect();
    let want: Vec<String> = want
        .iter()
        .map(|l| String::from_utf8(l.clone()).unwrap().trim_end().to_owned())
        .collect();
    assert_eq!(lines, want, "the whole capture, from its first line");
    let starts: Vec<u64> = got.iter().step_by(2).map(|(_, t)| *t).collect();
    for (i, w) in starts.windows(2).enumerate() {
        let gap = (w[1] - w[0]) as f64 * 1e-9;
        assert!(gap > 0.35, "epochs {i} and {} {gap:.3} s apart", i + 1);
    }
    let total = (starts[3] - starts[0]) as f64 * 1e-9;
    assert!(total > 1.3, "3 epochs in {total:.3} s");
}

/// Issue #17: any byte in a simulator capture, non-ASCII and invalid UTF-8 included, is sent
/// as it is and never panics the simulator.
#[test]
fn non_ascii_capture_does_not_panic_the_simulator() {
    let good = |t: &str| {
        nmea(&format!(
            "GPGGA,{t},4807.0380,N,01131.3240,E,1,08,0.9,545.4,M,46.9,M,,"
        ))
    };
    let mut capture = Vec::new();
    capture.extend_from_slice(good("120000.00").as_bytes());
    capture.extend_from_slice("$Gé GA,120000.00,x*00\r\n".as_bytes());
    capture.extend_from_slice("$GPGGA,1é0001.00,4807.0380,N*00\r\n".as_bytes());
    capture.extend_from_slice(b"$GPRMC,12\xff\xfe01.00,A*00\r\n\xc3\r\n");
    capture.extend_from_slice("$GPGLL,4807.0380,N,01131.3240,E,éé0001.00,A*00\r\n".as_bytes());
    capture.extend_from_slice(good("120001.00").as_bytes());
    let (got, sim_reg) = sim_then_source(&capture, 20.0, 2);
    let e = sim_reg.find("gps-sim").unwrap();
    assert_eq!(e.restarts(), 0, "the simulator did not fail");
    assert_eq!(e.note(), "capture finished");
    let lines: Vec<&str> = got.iter().map(|(l, _)| l.as_str()).collect();
    assert_eq!(
        lines,
        [good("120000.00").trim_end(), good("120001.00").trim_end()]
    );
}
