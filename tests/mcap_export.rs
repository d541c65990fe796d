//! `harmony log export --mcap` (issue #13), read back with an independent MCAP reader: the
//! `mcap` Python package (scripts/setup.sh installs it into target/pyvenv). Without it the tests
//! fail when `CI=true` and print SKIPPED otherwise.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::*;
use harmony::logger::Manifest;
use harmony::logger::session::list_sessions;
use nix::sys::signal::Signal as Sig;
use serde_json::Value;

/// A Python that imports `mcap`: $HARMONY_PYMAVLINK_PYTHON (scripts/test.sh sets it), the
/// project's venv, or python3.
fn python() -> Option<PathBuf> {
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/pyvenv/bin/python");
    [
        std::env::var_os("HARMONY_PYMAVLINK_PYTHON").map(PathBuf::from),
        Some(venv),
        Some(PathBuf::from("python3")),
    ]
    .into_iter()
    .flatten()
    .find(|p| {
        Command::new(p)
            .args(["-c", "import mcap.reader"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    })
}

fn require_python() -> Option<PathBuf> {
    let py = python();
    if py.is_none() {
        assert!(
            !std::env::var("CI").is_ok_and(|v| v == "true"),
            "the mcap Python package is missing (CI=true); scripts/setup.sh installs it into target/pyvenv"
        );
        eprintln!("SKIPPED: no python with the mcap package (scripts/setup.sh installs it)");
    }
    py
}

/// Reads an MCAP file with the `mcap` package; prints what the tests check as JSON.
const READ: &str = r#"
import sys, json
from mcap.reader import make_reader
out = {"counts": {}, "monotonic": {}, "schemas": {}, "encodings": {}, "bad_json": 0}
with open(sys.argv[1], "rb") as f:
    r = make_reader(f)
    s = r.get_summary()
    out["summary"] = s is not None
    out["chunk_indexes"] = len(s.chunk_indexes) if s else 0
    out["message_indexes"] = sum(len(c.message_index_offsets) for c in s.chunk_indexes) if s else 0
    out["stats"] = {s.channels[c].topic: n for c, n in s.statistics.channel_message_counts.items()} if s and s.statistics else {}
    out["compression"] = sorted({c.compression for c in s.chunk_indexes}) if s else []
    last = {}
    for schema, ch, m in r.iter_messages(log_time_order=False):
        t = ch.topic
        out["counts"][t] = out["counts"].get(t, 0) + 1
        out["schemas"][t] = [schema.name, schema.encoding]
        out["encodings"][t] = ch.message_encoding
        ok = out["monotonic"].get(t, True)
        if t in last and m.log_time < last[t]:
            ok = False
        out["monotonic"][t] = ok
        last[t] = m.log_time
        try:
            d = json.loads(m.data)
            ts = d["timestamp"]
            if ts["sec"] * 1000000000 + ts["nsec"] != m.log_time:
                out["bad_json"] += 1
        except Exception:
            out["bad_json"] += 1
    out["metadata"] = {md.name: md.metadata for md in r.iter_metadata()}
print(json.dumps(out))
"#;

fn read_back(py: &Path, file: &Path) -> Value {
    let out = Command::new(py)
        .args(["-c", READ])
        .arg(file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "mcap reader: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn export(dir: &Path, session: &Path, out: &Path) -> String {
    let o = harmony(
        dir,
        &[
            "log",
            "export",
            "--mcap",
            "--session",
            session.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
        ],
    )
    .output()
    .unwrap();
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        o.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    text
}

/// Record counts per file kind as `harmony log check` counts them (valid records only).
fn check_counts(session: &Path) -> std::collections::BTreeMap<String, u64> {
    let mut m = std::collections::BTreeMap::new();
    for r in harmony::logtools::check::check_session(session, false).unwrap() {
        let name = r.path.file_name().unwrap().to_string_lossy().into_owned();
        let kind = name.split('.').next().unwrap().to_owned();
        *m.entry(kind).or_insert(0) += r.records;
    }
    m
}

fn location_rows(session: &Path) -> u64 {
    let mut n = 0;
    for p in harmony::logger::segments(session, harmony::logger::FIX) {
        for l in std::fs::read_to_string(p).unwrap().lines().skip(1) {
            if let Ok(f) = harmony::formats::csv::parse_fix(l)
                && f.lat_deg.is_some_and(f64::is_finite)
                && f.lon_deg.is_some_and(f64::is_finite)
                && f.quality != harmony::records::FixQuality::Invalid
            {
                n += 1;
            }
        }
    }
    n
}

fn run_firmware(dir: &Path) -> KillOnDrop {
    let child = spawn_harmony(dir, &["run", "--data-dir", "data", "--log-level", "warn"]);
    let run = dir.join("data/run");
    assert!(
        wait_until(secs(20), || ["gps", "rangefinder", "can", "logger"]
            .iter()
            .all(|p| state_of(&run, p).as_deref() == Some("active"))),
        "{}",
        stderr_of(dir)
    );
    // A few GPS epochs, hundreds of range readings and CAN frames.
    std::thread::sleep(secs(4));
    child
}

/// Issue #13: a cleanly stopped session exports to one chunked, indexed MCAP file that the
/// `mcap` Python package reads: one channel per source with JSON Schema and JSON messages, as
/// many messages per channel as the session's files hold records (`harmony log check`'s
/// count; the closed manifest's `written` may lag it by the last chunks, see the report),
/// log times never going backwards within a channel, summary, statistics and chunk/message
/// indexes present.
#[test]
fn closed_session_reads_back_with_the_python_mcap_reader() {
    let Some(py) = require_python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let mut child = run_firmware(dir.path());
    send_signal(&child, Sig::SIGTERM);
    assert!(wait_exit(&mut child, secs(10)).is_some_and(|s| s.success()));
    let session = list_sessions(&dir.path().join("data"))
        .unwrap()
        .pop()
        .unwrap();
    let manifest: Manifest =
        serde_json::from_slice(&std::fs::read(session.join("manifest.json")).unwrap()).unwrap();
    assert!(manifest.closed);
    let out = dir.path().join("flight.mcap");
    let text = export(dir.path(), &session, &out);
    assert!(!text.contains("not exported"), "{text}");
    let v = read_back(&py, &out);

    let written = |f: &str| {
        manifest
            .records
            .iter()
            .find(|r| r.file == f)
            .map(|r| r.written)
            .unwrap()
    };
    let counts = check_counts(&session);
    for f in ["can", "gps", "gps-fix", "rangefinder"] {
        assert!(
            counts[f] >= written(f) && written(f) > 0,
            "{f}: files {} vs manifest {}",
            counts[f],
            written(f)
        );
    }
    let events = std::fs::read_to_string(session.join("events.log"))
        .unwrap()
        .lines()
        .count() as u64;
    assert_eq!(counts["events"], events);
    let want = [
        ("/can", counts["can"]),
        ("/gps/nmea", counts["gps"]),
        ("/gps/fix", counts["gps-fix"]),
        ("/gps/location", location_rows(&session)),
        ("/rangefinder", counts["rangefinder"]),
        ("/events", events),
    ];
    for (topic, n) in want {
        assert!(n > 0, "{topic}: the session has records");
        assert_eq!(v["counts"][topic], n, "{topic}: {v}");
        assert_eq!(v["stats"][topic], n, "{topic} statistics: {v}");
        assert_eq!(v["monotonic"][topic], true, "{topic}: {v}");
        assert_eq!(v["encodings"][topic], "json", "{topic}");
        assert_eq!(v["schemas"][topic][1], "jsonschema", "{topic}");
    }
    assert_eq!(v["schemas"]["/gps/location"][0], "foxglove.LocationFix");
    assert_eq!(v["schemas"]["/events"][0], "foxglove.Log");
    assert_eq!(v["summary"], true);
    assert!(v["chunk_indexes"].as_u64().unwrap() >= 1, "{v}");
    assert!(
        v["message_indexes"].as_u64().unwrap() >= 6,
        "a message index per channel: {v}"
    );
    assert_eq!(
        v["bad_json"], 0,
        "every message is JSON stamped with its log time"
    );
    assert_eq!(
        v["metadata"]["harmony.export"]["session"],
        session.file_name().unwrap().to_str().unwrap()
    );
}

/// Issue #13: a crashed session (SIGKILL, manifest removed, torn last lines) still exports
/// what is readable: as many messages per channel as `harmony log check` finds valid records,
/// and the report names each torn tail with its count and reason.
#[test]
fn crashed_session_exports_what_is_readable_and_reports_the_rest() {
    let Some(py) = require_python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let mut child = run_firmware(dir.path());
    send_signal(&child, Sig::SIGKILL);
    let _ = child.wait();
    let session = list_sessions(&dir.path().join("data"))
        .unwrap()
        .pop()
        .unwrap();
    std::fs::remove_file(session.join("manifest.json")).unwrap();
    let append = |name: &str, bytes: &[u8]| {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(session.join(name))
            .unwrap();
        f.write_all(bytes).unwrap();
    };
    // What a power cut leaves: half lines (the CAN one would parse as a shorter frame).
    append("can.000.log", b"(1796221834.985741) can0 09F112CC#FF72");
    append("rangefinder.000.csv", b"12.5,2026-12-02T14:3");
    append("gps.000.nmea", b"$GPGGA,1200");
    let counts = check_counts(&session);
    let out = dir.path().join("crashed.mcap");
    let text = export(dir.path(), &session, &out);
    for f in ["can.000.log", "rangefinder.000.csv", "gps.000.nmea"] {
        assert!(
            text.contains(&format!("not exported: {f}: 1 torn tail")),
            "{f}: {text}"
        );
    }
    assert!(text.contains("manifest.json missing"), "{text}");
    let v = read_back(&py, &out);
    for (topic, kind) in [
        ("/can", "can"),
        ("/gps/nmea", "gps"),
        ("/gps/fix", "gps-fix"),
        ("/rangefinder", "rangefinder"),
        ("/events", "events"),
    ] {
        assert_eq!(
            v["counts"][topic], counts[kind],
            "{topic}: {v} vs {counts:?}"
        );
        assert_eq!(v["monotonic"][topic], true, "{topic}");
    }
    assert_eq!(v["summary"], true);
    assert_eq!(v["bad_json"], 0);
}
