//! The whole firmware on the simulated board as a process (issue #3): `harmony run` with no
//! board starts every source and both sinks, records flow, and SIGTERM stops it cleanly.

mod common;

use common::*;
use nix::sys::signal::Signal as Sig;

fn metric(run: &std::path::Path, name: &str, m: &str) -> u64 {
    harmony::control::state_files::read_state_file(&harmony::control::state_files::state_path(
        run, name,
    ))
    .ok()
    .and_then(|s| s.get(&format!("metric.{m}")).and_then(|v| v.parse().ok()))
    .unwrap_or(0)
}

/// Issue #3: the simulated board runs the whole topology: GPS through a pty, the rangefinder
/// on the simulated bus, CAN replay; the sinks receive from all three.
#[test]
fn harmony_run_on_the_sim_board() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = spawn_harmony(dir.path(), &["run", "--data-dir", "data"]);
    let run = dir.path().join("data/run");
    let procs = [
        "harmony",
        "sim",
        "gps-sim",
        "logger",
        "uplink",
        "sensors",
        "gps",
        "rangefinder",
        "can",
    ];
    assert!(
        wait_until(secs(15), || procs
            .iter()
            .all(|p| state_of(&run, p).as_deref() == Some("active"))),
        "{}",
        stderr_of(dir.path())
    );
    assert!(
        wait_until(secs(15), || {
            metric(&run, "logger", "gps_received") > 20
                && metric(&run, "logger", "gps_fix_received") > 2
                && metric(&run, "logger", "rangefinder_received") > 50
                && metric(&run, "logger", "can_received") > 50
                && metric(&run, "uplink", "gps_fixes") > 2
                && metric(&run, "uplink", "range_readings") > 20
        }),
        "records flow to both sinks"
    );
    assert_eq!(metric(&run, "gps", "bad_checksum"), 0);
    send_signal(&child, Sig::SIGTERM);
    let status = wait_exit(&mut child, secs(5)).expect("stops");
    assert!(status.success(), "{}", stderr_of(dir.path()));
    for p in procs {
        assert_eq!(state_of(&run, p).as_deref(), Some("stopped"), "{p}");
    }
    // The sinks drained what the sources handed over before they stopped.
    assert_eq!(metric(&run, "logger", "queue_dropped"), 0);
    assert_eq!(metric(&run, "logger", "records_dropped"), 0);
}

/// Issue #3: a board file with a wrong path, a missing field or an impossible value gets an
/// error that names the field, and nothing starts.
#[test]
fn bad_board_files_name_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "[board]\nname='x'\ndata_dir='d'\nrun_dir='r'\n[gps]\nbaud=1234\ndevice='/dev/ttyS0'\n",
            "gps.baud",
        ),
        (
            "[board]\nname='x'\ndata_dir='d'\nrun_dir='r'\n[gps]\n",
            "gps.device",
        ),
        (
            "[board]\nname='x'\ndata_dir='d'\nrun_dir='r'\n[gps]\ndevice='/dve/ttyUSB0'\n",
            "gps.device",
        ),
        (
            "[board]\nname='x'\ndata_dir='d'\nrun_dir='r'\n[rangefinder]\nmodel='tf-luna'\nrate_hz=400\n",
            "rangefinder.rate_hz",
        ),
        (
            "[board]\nname='x'\ndata_dir='d'\nrun_dir='r'\n[rangefinder]\nmodel='sonar'\n",
            "model",
        ),
        (
            "[board]\nname='x'\ndata_dir='d'\nrun_dir='r'\n[can]\n[can.replay]\ncapture='/no/such/file.log'\n",
            "can.replay.capture",
        ),
        (
            "[board]\nname='x'\ndata_dir='d'\nrun_dir='r'\n[can]\ninterface='can0'\nbitrat=500000\n",
            "bitrat",
        ),
        ("[board]\nname='x'\nrun_dir='r'\n", "data_dir"),
        (
            "[board]\nname='x'\ndata_dir='d'\nrun_dir='r'\n[queues]\ncan_logger=3\n",
            "queues.can_logger",
        ),
    ];
    for (text, field) in cases {
        let p = dir.path().join("board.toml");
        std::fs::write(&p, text).unwrap();
        let out = harmony(dir.path(), &["run", "--board", p.to_str().unwrap()])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{field}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(field), "error for {field} names it: {err}");
        assert!(
            !dir.path().join("d").exists(),
            "nothing started for {field}"
        );
    }
}
