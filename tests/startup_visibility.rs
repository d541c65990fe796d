//! Faults at start-up are seen (issue #11, "The radio", 2nd bullet): messages logged before the
//! log sink exists reach the log file once it does, and a sink that cannot start is a visible
//! failure in the status, the state file and the log, while the recording goes on.
//!
//! One test in its own binary: the application log is process-wide.

use std::path::Path;
use std::time::Duration;

use harmony::app::{self, AppConfig};
use harmony::applog::{LogSink, capture_early};
use harmony::clock::Stamp;
use harmony::concurrency::{Child, LoopProcessor, ProcState, Registry, Runner, queue};
use harmony::control::client;
use harmony::control::protocol::Request;
use harmony::control::server::socket_path;
use harmony::records::{CanRecord, GpsRecord, RangeRecord};
use harmony::sinks::drain::SinkInputs;
use harmony::sinks::standin::FailedSink;

fn wait_until(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let t0 = std::time::Instant::now();
    while t0.elapsed() < limit {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    f()
}

fn state_file(run: &Path, name: &str) -> std::collections::HashMap<String, String> {
    harmony::control::state_files::read_state_file(&harmony::control::state_files::state_path(
        run, name,
    ))
    .unwrap_or_default()
}

/// Issue #11: a warning logged before the sink (as the uplink's "no signing key" is) is in the
/// log file, before the start line, and debug lines kept early obey the final level. An uplink
/// that could not start stands in as `failed`, its cause in the note, in `ctl status`, in its
/// state file and in the log; its records are still taken (counted), and the firmware stops
/// normally.
#[test]
fn early_messages_are_written_and_a_failed_sink_is_visible() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let log_file = dir.path().join("harmony.log");

    let early = capture_early(log::LevelFilter::Debug);
    log::warn!("uplink: no uplink.signing_key (logged before the sink)");
    log::debug!("a debug line kept early, below the final level");

    let (gps_tx, gps_rx) = queue::<GpsRecord>(16, "gps->uplink");
    let (rng_tx, rng_rx) = queue::<RangeRecord>(16, "rangefinder->uplink");
    let (_can_tx, can_rx) = queue::<CanRecord>(16, "can->uplink");
    let inputs = SinkInputs {
        gps: gps_rx,
        range: rng_rx,
        can: can_rx,
    };
    let cause = "uplink.sim: cannot create the simulated radio: out of pseudo-terminals";
    let standin = FailedSink::new("uplink", inputs, cause, Duration::from_millis(10));
    let mut root = Runner::new("harmony").with_child(Child::new(LoopProcessor::new(standin)));

    let sink = LogSink::install(log::LevelFilter::Info, Some(&log_file), false).unwrap();
    let registry = Registry::new();
    let cfg = AppConfig {
        board: "test".into(),
        run_dir: run.clone(),
        socket_group: None,
    };
    let reg = registry.clone();
    let tree = std::thread::spawn(move || app::run(&cfg, reg, &mut root, None));

    let sock = socket_path(&run);
    assert!(
        wait_until(Duration::from_secs(10), || state_file(&run, "uplink")
            .get("state")
            .is_some_and(|s| s == "failed")),
        "the state file says failed: {:?}",
        state_file(&run, "uplink")
    );
    let st = state_file(&run, "uplink");
    assert!(st["note"].contains(cause), "{st:?}");
    assert_eq!(st.get("metric.failed").map(String::as_str), Some("1"));
    assert_eq!(st.get("errors").map(String::as_str), Some("1"));

    let status = client::status(&sock, Duration::from_secs(5)).unwrap();
    let up = status
        .processors
        .iter()
        .find(|p| p.name == "uplink")
        .expect("uplink in the status");
    assert_eq!(up.state, ProcState::Failed);
    assert!(up.note.contains("FAILED to start") && up.note.contains(cause));
    let table = client::format_status(&status);
    assert!(
        table
            .lines()
            .any(|l| l.contains("uplink") && l.contains("failed")),
        "{table}"
    );

    // The recording goes on: what the sources hand over is taken, not left to fill the queue.
    for i in 0..50u16 {
        let r = RangeRecord {
            stamp: Stamp::now(),
            distance_cm: i,
            ..Default::default()
        };
        assert!(rng_tx.push(r), "record {i} taken");
        std::thread::sleep(Duration::from_millis(1));
    }
    assert!(
        wait_until(Duration::from_secs(5), || {
            state_file(&run, "uplink")
                .get("metric.range_readings")
                .is_some_and(|v| v == "50")
        }),
        "records counted: {:?}",
        state_file(&run, "uplink")
    );
    drop(gps_tx);

    let r = client::request(&sock, &Request::Stop {}, Duration::from_secs(5)).unwrap();
    assert!(r.ok);
    let finished = tree.join().unwrap().unwrap();
    assert_eq!(finished.exit_code(), 0, "{finished:?}");
    sink.shutdown();
    drop(early);

    let text = std::fs::read_to_string(&log_file).unwrap();
    let early_at = text
        .find("no uplink.signing_key (logged before the sink)")
        .unwrap_or_else(|| panic!("the early warning is in the log:\n{text}"));
    let started_at = text.find(" started (board test").expect("start line");
    assert!(early_at < started_at, "kept in order:\n{text}");
    assert!(
        !text.contains("a debug line kept early"),
        "the final level applies to early lines:\n{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.contains("[ERROR]") && l.contains("FAILED to start") && l.contains(cause)),
        "the failure is in the log:\n{text}"
    );
}
