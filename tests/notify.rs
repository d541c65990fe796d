//! systemd's notify protocol (issue #6): READY=1, WATCHDOG=1 and STOPPING=1 arrive in order on
//! the NOTIFY_SOCKET datagram socket, and a processor stuck in its loop stops the pings.

mod common;

use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use common::*;
use nix::sys::signal::Signal as Sig;

/// Messages received until `until` returns true or `timeout` passes, with arrival times.
fn collect(
    sock: &UnixDatagram,
    timeout: Duration,
    mut until: impl FnMut(&str) -> bool,
) -> Vec<(Instant, String)> {
    let mut out = Vec::new();
    let t0 = Instant::now();
    let mut buf = [0u8; 4096];
    while t0.elapsed() < timeout {
        sock.set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        if let Ok(n) = sock.recv(&mut buf) {
            let m = String::from_utf8_lossy(&buf[..n]).into_owned();
            let stop = until(&m);
            out.push((Instant::now(), m));
            if stop {
                break;
            }
        }
    }
    out
}

fn has(msgs: &[(Instant, String)], what: &str) -> usize {
    msgs.iter()
        .filter(|(_, m)| m.lines().any(|l| l == what))
        .count()
}

/// Issue #6: READY=1 once everything has started, WATCHDOG=1 while healthy, STOPPING=1 on
/// shutdown, in that order.
#[test]
fn ready_watchdog_stopping_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&path).unwrap();
    let mut child = KillOnDrop(
        harmony(dir.path(), &["run", "--data-dir", "data"])
            .env("NOTIFY_SOCKET", &path)
            .env("WATCHDOG_USEC", (1_000_000 * slow_factor()).to_string())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut pings = 0;
    let msgs = collect(&sock, secs(20), |m| {
        if m.lines().any(|l| l == "WATCHDOG=1") {
            pings += 1;
        }
        pings >= 3
    });
    assert!(has(&msgs, "READY=1") == 1, "{msgs:?}");
    let ready_at = msgs
        .iter()
        .position(|(_, m)| m.contains("READY=1"))
        .unwrap();
    let first_ping = msgs
        .iter()
        .position(|(_, m)| m.contains("WATCHDOG=1"))
        .unwrap();
    assert!(ready_at < first_ping, "READY before the first ping");
    // By READY every source had started.
    for p in ["gps", "rangefinder", "can", "logger", "uplink"] {
        assert_eq!(
            state_of(&dir.path().join("data/run"), p).as_deref(),
            Some("active"),
            "{p}"
        );
    }
    send_signal(&child, Sig::SIGTERM);
    let tail = collect(&sock, secs(10), |m| m.contains("STOPPING=1"));
    assert!(has(&tail, "STOPPING=1") == 1, "{tail:?}");
    let stop_at = tail
        .iter()
        .position(|(_, m)| m.contains("STOPPING=1"))
        .unwrap();
    assert!(
        tail[stop_at + 1..]
            .iter()
            .all(|(_, m)| !m.contains("WATCHDOG=1"))
    );
    assert!(wait_exit(&mut child, secs(5)).unwrap().success());
}

/// Issue #6: a processor stuck inside its loop stops the watchdog pings (so systemd would
/// restart the service), and the status says which one.
#[test]
fn stuck_processor_stops_the_pings() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&path).unwrap();
    let wd_ms = 1000 * slow_factor() as u64;
    let stall_ms = 3 * wd_ms;
    let mut child = KillOnDrop(
        harmony(
            dir.path(),
            &[
                "demo",
                "--loops",
                "2",
                "--no-pools",
                "--period-ms",
                "20",
                "--data-dir",
                "data",
                "--stall-after-ms",
                &stall_ms.to_string(),
            ],
        )
        .env("NOTIFY_SOCKET", &path)
        .env("WATCHDOG_USEC", (wd_ms * 1000).to_string())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap(),
    );
    let t0 = Instant::now();
    let msgs = collect(&sock, Duration::from_millis(stall_ms * 3), |_| false);
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(has(&msgs, "READY=1"), 1);
    let pings: Vec<Duration> = msgs
        .iter()
        .filter(|(_, m)| m.contains("WATCHDOG=1"))
        .map(|(t, _)| *t - t0)
        .collect();
    assert!(pings.len() >= 4, "pinged while healthy: {pings:?}");
    let last = *pings.last().unwrap();
    // The stall starts at stall_ms; it is noticed after half the interval.
    assert!(
        last < Duration::from_millis(stall_ms + wd_ms),
        "pings stopped after the stall: last at {last:?}, stall at {stall_ms} ms"
    );
    assert!(
        msgs.iter()
            .any(|(_, m)| m.contains("STATUS=") && m.contains("tick-1") && m.contains("stuck")),
        "{msgs:?}"
    );
}

/// Fake clocks for the clock-step test: boot-clock and wall-clock nanoseconds the test moves.
static FAKE_BOOT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1_000_000_000);
static FAKE_WALL: std::sync::atomic::AtomicI64 =
    std::sync::atomic::AtomicI64::new(1_700_000_000_000_000_000);

fn fake_boot() -> u64 {
    FAKE_BOOT.load(std::sync::atomic::Ordering::SeqCst)
}

fn fake_wall() -> i64 {
    FAKE_WALL.load(std::sync::atomic::Ordering::SeqCst)
}

/// Issue #11: busy time and the stuck-processor watchdog run on the boot clock. A loop is held
/// inside one `work` call; the wall clock steps an hour ahead (NTP or GPS setting the Pi's
/// clock) while 10 ms pass on the boot clock: not stuck (a wall-clock measure says 3600 s).
/// Then it steps two hours back while 6 s pass on the boot clock: stuck (a wall-clock measure
/// says 0 s and would hide the hang). The time in state shown to people follows the boot clock
/// too. On the old code the stamps were wall-clock milliseconds and both verdicts were wrong.
#[test]
fn wall_clock_steps_neither_make_nor_hide_a_stuck_processor() {
    use harmony::concurrency::state::Clocks;
    use harmony::concurrency::{FnLoop, LoopProcessor, Registry, Runner, Step, StopReason};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering::SeqCst};

    let step_wall = |by_s: i64| FAKE_WALL.fetch_add(by_s * 1_000_000_000, SeqCst);
    let pass_boot = |ms: u64| FAKE_BOOT.fetch_add(ms * 1_000_000, SeqCst);
    let reg = Registry::with_clocks(Clocks {
        boot_ns: fake_boot,
        wall_ns: fake_wall,
    });
    let inside = Arc::new(AtomicBool::new(false));
    let release = Arc::new(AtomicBool::new(false));
    let (i2, r2) = (inside.clone(), release.clone());
    let hang = FnLoop::new("hang", move |_ctx| {
        i2.store(true, SeqCst);
        while !r2.load(SeqCst) {
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(Step::Idle)
    });
    let mut root = Runner::new("root").child(LoopProcessor::new(hang));
    let r = reg.clone();
    let h = std::thread::spawn(move || harmony::concurrency::run_tree(&r, &mut root));
    assert!(wait_until(secs(5), || inside.load(SeqCst)));
    let e = reg.find("hang").unwrap();
    let wall_at_busy_ms = fake_wall() / 1_000_000;
    assert_eq!(
        e.busy_since_ns(),
        Some(fake_boot()),
        "the busy stamp is a boot-clock value"
    );
    let limit_ms = 5_000;

    // The wall clock jumps an hour ahead; 10 ms pass.
    step_wall(3600);
    pass_boot(10);
    let wall_measure_ms = fake_wall() / 1_000_000 - wall_at_busy_ms;
    assert!(
        wall_measure_ms > limit_ms as i64,
        "a wall-clock measure would say stuck"
    );
    assert!(reg.stuck(limit_ms).is_empty(), "no false 'stuck'");
    assert_eq!(e.busy_for_ms(fake_boot()), Some(10));
    let snap = e.snapshot();
    assert_eq!(
        (fake_wall() / 1_000_000) as u64 - snap.since_ms,
        e.in_state_ms(),
        "the time in state a reader computes is the boot-clock one"
    );
    assert!(e.in_state_ms() < 1_000, "{}", e.in_state_ms());

    // The wall clock jumps two hours back; 6 s pass: a real hang.
    step_wall(-7200);
    pass_boot(6_000);
    let wall_measure_ms = fake_wall() / 1_000_000 - wall_at_busy_ms;
    assert!(
        wall_measure_ms < limit_ms as i64,
        "a wall-clock measure would hide the hang"
    );
    assert_eq!(reg.stuck(limit_ms), vec!["root/hang".to_string()]);

    release.store(true, SeqCst);
    assert!(wait_until(secs(5), || reg.stuck(limit_ms).is_empty()));
    reg.request_stop_all(StopReason::Requested("test".into()));
    h.join().unwrap();
}
