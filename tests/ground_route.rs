//! `harmony ground --out ...` with real MAVLink peers (issue #13): pymavlink's `udpin:` and
//! `tcp:` connections, and MAVProxy, against the ground station connected to a running
//! simulated firmware (`harmony run` makes `harmony-data/radio` the ground side of its radio).
//! Telemetry is decoded at the peers, their commands are executed on the firmware and ACKed
//! back to them, signed with the ground key when one is given; endpoints that go away disturb
//! nothing. scripts/setup.sh installs pymavlink and MAVProxy into target/pyvenv; without them
//! the tests fail when `CI=true` and print SKIPPED otherwise.

mod common;

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// A Python that imports `module`: $HARMONY_PYMAVLINK_PYTHON, the project's venv, python3.
fn python_with(module: &str) -> Option<PathBuf> {
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
            .args(["-c", &format!("import {module}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    })
}

fn require(module: &str) -> Option<PathBuf> {
    let py = python_with(module);
    if py.is_none() {
        assert!(
            !ci(),
            "python module {module} is missing (CI=true); scripts/setup.sh installs it into target/pyvenv"
        );
        eprintln!("SKIPPED: no python with {module} (scripts/setup.sh installs it)");
    }
    py
}

/// A MAVLink peer: connects with a pymavlink connection string, prints `{"port": N}` first for
/// `udpin:` (bound to port 0), sends its COMMAND_LONG once it hears the vehicle's heartbeat
/// (again every 2 s until ACKed), and prints what it received as JSON when its time is up, or
/// once it has its ACK and every message type of `stop_after` (if that is not empty).
const PEER: &str = r#"
import os, sys, time, json
os.environ["MAVLINK20"] = "1"
from pymavlink import mavutil
conn, cmd, dur, stop_after = sys.argv[1], json.loads(sys.argv[2]), float(sys.argv[3]), json.loads(sys.argv[4])
m = mavutil.mavlink_connection(conn, dialect="common", source_system=254, source_component=190)
if conn.startswith("udpin"):
    print(json.dumps({"port": m.port.getsockname()[1]}), flush=True)
counts, acks, signed, unsigned = {}, [], 0, 0
hb_times = []
sent_at = None
end = time.time() + dur
while time.time() < end:
    msg = m.recv_match(blocking=True, timeout=0.2)
    if msg is None:
        continue
    t = msg.get_type()
    if t == "BAD_DATA":
        counts["BAD_DATA"] = counts.get("BAD_DATA", 0) + 1
        continue
    counts[t] = counts.get(t, 0) + 1
    buf = msg.get_msgbuf()
    if len(buf) > 2 and buf[0] == 0xFD and buf[2] & 1:
        signed += 1
    else:
        unsigned += 1
    if t == "HEARTBEAT" and msg.get_srcSystem() == 1:
        hb_times.append(time.time())
        if cmd and not acks and (sent_at is None or time.time() - sent_at > 2):
            m.mav.command_long_send(1, 191, int(cmd[0]), 0, *(cmd[1:] + [0] * (7 - len(cmd[1:]))))
            sent_at = time.time()
    if t == "COMMAND_ACK":
        acks.append([msg.command, msg.result])
    if stop_after and acks and all(counts.get(t, 0) > 0 for t in stop_after):
        break
print(json.dumps({"counts": counts, "acks": acks, "signed": signed, "unsigned": unsigned,
                  "hb_first": hb_times[0] if hb_times else None,
                  "hb_last": hb_times[-1] if hb_times else None, "end": time.time()}))
"#;

/// A process whose stdout lines are collected as they come; killed when dropped.
struct Lines {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Lines {
    fn spawn(mut cmd: Command) -> Lines {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn");
        let out = child.stdout.take().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let l2 = lines.clone();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                l2.lock().unwrap().push(line);
            }
        });
        Lines {
            child,
            lines,
            reader: Some(reader),
        }
    }

    fn find(&self, f: impl Fn(&str) -> Option<String>) -> Option<String> {
        self.lines.lock().unwrap().iter().find_map(|l| f(l))
    }

    fn wait_for(&self, timeout: Duration, f: impl Fn(&str) -> Option<String>) -> Option<String> {
        let t0 = Instant::now();
        loop {
            if let Some(v) = self.find(&f) {
                return Some(v);
            }
            if t0.elapsed() > timeout {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits for the exit (killing it after `timeout`); returns every line.
    fn finish(mut self, timeout: Duration) -> Vec<String> {
        let _ = wait_exit(&mut self.child, timeout);
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        std::mem::take(&mut *self.lines.lock().unwrap())
    }

    fn all(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }
}

impl Drop for Lines {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn peer(py: &Path, conn: &str, cmd: &[f64], secs_: f64, stop_after: &[&str]) -> Lines {
    let mut c = Command::new(py);
    c.args(["-c", PEER, conn])
        .arg(serde_json::to_string(cmd).unwrap())
        .arg(format!("{secs_}"))
        .arg(serde_json::to_string(stop_after).unwrap());
    Lines::spawn(c)
}

fn result_of(lines: &[String]) -> Value {
    let last = lines.iter().rev().find(|l| l.contains("\"counts\""));
    serde_json::from_str(last.unwrap_or_else(|| panic!("no result from the peer: {lines:?}")))
        .unwrap()
}

fn udp_port(p: &Lines) -> u16 {
    let l = p
        .wait_for(secs(20), |l| l.contains("\"port\"").then(|| l.to_owned()))
        .expect("the udpin peer says its port");
    serde_json::from_str::<Value>(&l).unwrap()["port"]
        .as_u64()
        .unwrap() as u16
}

/// The `local=` address of `--out` endpoint `name` in the ground's plain output.
fn local_of(g: &Lines, name: &str) -> String {
    let pat = format!("ROUTE endpoint={name} local=");
    g.wait_for(secs(10), |l| {
        l.split_once(&pat).map(|(_, a)| a.trim().to_owned())
    })
    .unwrap_or_else(|| panic!("no {pat} in {:?}", g.all()))
}

fn ground(dir: &Path, args: &[&str]) -> Lines {
    let mut c = harmony(dir, &["ground", "--plain", "--port", "harmony-data/radio"]);
    c.args(args);
    Lines::spawn(c)
}

/// Runs the firmware (default sim board, or `board`) until its radio link exists.
fn firmware(dir: &Path, board: Option<&Path>) -> KillOnDrop {
    let mut args = vec!["run", "--log-level", "warn"];
    if let Some(b) = board {
        args.extend(["--board", b.to_str().unwrap()]);
    }
    let fw = spawn_harmony(dir, &args);
    let run = dir.join("harmony-data/run");
    assert!(
        wait_until(secs(20), || dir.join("harmony-data/radio").exists()
            && ["uplink", "gps", "rangefinder", "can"]
                .iter()
                .all(|p| state_of(&run, p).as_deref() == Some("active"))),
        "firmware up: {}",
        stderr_of(dir)
    );
    fw
}

fn stop(mut fw: KillOnDrop) {
    send_signal(&fw, nix::sys::signal::Signal::SIGTERM);
    let _ = wait_exit(&mut fw, secs(10));
}

fn route_line<'a>(lines: &'a [String], endpoint: &str) -> &'a str {
    let pat = format!("ROUTE endpoint={endpoint} down=");
    lines
        .iter()
        .rev()
        .find(|l| l.contains(&pat))
        .unwrap_or_else(|| panic!("no {pat}"))
}

fn field(line: &str, key: &str) -> u64 {
    line.split(' ')
        .find_map(|w| w.strip_prefix(&format!("{key}=")))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {key}= in {line}"))
}

fn epoch_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// What every peer decodes (GPS_RAW_INT too, but the first peer's command pauses the GPS).
const TELEMETRY: [&str; 4] = [
    "HEARTBEAT",
    "DISTANCE_SENSOR",
    "SYS_STATUS",
    "NAMED_VALUE_INT",
];

/// Issue #13: three endpoints at once: a pymavlink `udpin:` peer (QGroundControl's side of
/// `udpout:`), a pymavlink `tcp:` client of `tcpin:`, and a `udpout:` to a port nobody listens
/// on. Both peers decode the telemetry; each one's command (pause GPS, pause CAN) is executed
/// on the firmware and ACKed back to it; the TCP client leaving and the dead port's "port
/// unreachable" answers are counted per endpoint and the UDP peer goes on receiving.
#[test]
fn pymavlink_peers_over_udp_and_tcp_command_the_firmware() {
    let Some(py) = require("pymavlink") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let fw = firmware(dir.path(), None);
    let run = dir.path().join("harmony-data/run");
    let dead = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let sf = slow_factor() as f64;
    // MAV_CMD_USER_1 (pause), param1 = 1: GPS.
    let udp_peer = peer(&py, "udpin:127.0.0.1:0", &[31010.0, 1.0], 14.0 * sf, &[]);
    let port = udp_port(&udp_peer);
    let udp_out = format!("udpout:127.0.0.1:{port}");
    let dead_out = format!("udpout:{dead}");
    let g = ground(
        dir.path(),
        &[
            "--out",
            &udp_out,
            "--out",
            "tcpin:127.0.0.1:0",
            "--out",
            &dead_out,
            "--duration",
            &format!("{}", 30.0 * sf),
        ],
    );
    let tcp = local_of(&g, "tcpin:127.0.0.1:0");
    // param1 = 3: CAN. This client leaves once it has its ACK.
    let tcp_peer = peer(
        &py,
        &format!("tcp:{tcp}"),
        &[31010.0, 3.0],
        10.0 * sf,
        &TELEMETRY,
    );
    let tcp_lines = tcp_peer.finish(secs(30));
    let tcp_left = epoch_now();
    let udp_lines = udp_peer.finish(secs(40));
    let (t, u) = (result_of(&tcp_lines), result_of(&udp_lines));
    for (who, v) in [("tcp", &t), ("udp", &u)] {
        for m in TELEMETRY {
            assert!(
                v["counts"][m].as_u64().unwrap_or(0) > 0,
                "{who}: no {m}: {v}"
            );
        }
        assert_eq!(v["counts"]["BAD_DATA"], Value::Null, "{who}: {v}");
        assert_eq!(v["signed"], 0, "{who}: the sim board signs nothing: {v}");
        assert!(
            v["acks"]
                .as_array()
                .unwrap()
                .contains(&serde_json::json!([31010, 0])),
            "{who}: ACK of its pause: {v}"
        );
    }
    assert_eq!(
        state_of(&run, "gps").as_deref(),
        Some("waiting"),
        "paused by udp"
    );
    assert_eq!(
        state_of(&run, "can").as_deref(),
        Some("waiting"),
        "paused by tcp"
    );
    assert!(
        u["hb_last"].as_f64().unwrap() > tcp_left + 1.0,
        "the UDP peer kept receiving after the TCP client left: {u}"
    );
    // Wait for a ROUTE line written after the TCP client left, then stop.
    std::thread::sleep(Duration::from_millis(1500));
    let lines = g.all();
    stop(fw);
    drop(g);
    let tl = route_line(&lines, "tcpin:127.0.0.1:0");
    assert!(field(tl, "up") >= 1 && field(tl, "down") > 0, "{tl}");
    assert_eq!(field(tl, "disconnects"), 1, "{tl}");
    assert_eq!(field(tl, "clients"), 0, "{tl}");
    let ul = route_line(&lines, &udp_out);
    assert!(field(ul, "up") >= 1 && field(ul, "down") > 0, "{ul}");
    // (Its `errors` count the "port unreachable" answers once the peer has exited.)
    let dl = route_line(&lines, &dead_out);
    assert!(field(dl, "errors") > 0, "ICMP unreachable counted: {dl}");
}

fn keyed_board(dir: &Path) -> (PathBuf, PathBuf) {
    let key = dir.join("uplink.key");
    std::fs::write(&key, [0x5au8; 32]).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let text = harmony::board::SIM_BOARD.replace(
        "accept_unsigned_commands = true",
        &format!("signing_key = '{}'", key.display()),
    );
    assert_ne!(text, harmony::board::SIM_BOARD);
    let board = dir.join("board.toml");
    std::fs::write(&board, text).unwrap();
    (board, key)
}

/// Issue #13: with the ground key, a peer that has no key commands a firmware that refuses
/// unsigned commands: the ground signs its frames on the way up; the peer gets the signed
/// telemetry and its ACK.
#[test]
fn with_a_key_the_peers_frames_go_up_signed() {
    let Some(py) = require("pymavlink") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (board, key) = keyed_board(dir.path());
    let fw = firmware(dir.path(), Some(&board));
    let run = dir.path().join("harmony-data/run");
    let sf = slow_factor() as f64;
    // Pause the rangefinder.
    let p = peer(
        &py,
        "udpin:127.0.0.1:0",
        &[31010.0, 2.0],
        10.0 * sf,
        &["SYS_STATUS", "GPS_RAW_INT"],
    );
    let out = format!("udpout:127.0.0.1:{}", udp_port(&p));
    let g = ground(dir.path(), &["--key", key.to_str().unwrap(), "--out", &out]);
    let v = result_of(&p.finish(secs(30)));
    let paused = state_of(&run, "rangefinder");
    stop(fw);
    let lines = g.finish(Duration::ZERO);
    assert!(
        v["acks"]
            .as_array()
            .unwrap()
            .contains(&serde_json::json!([31010, 0])),
        "ACCEPTED, so it was signed: {v}\n{lines:?}"
    );
    assert_eq!(v["unsigned"], 0, "everything forwarded is signed: {v}");
    assert!(v["signed"].as_u64().unwrap() > 0, "{v}");
    assert!(v["counts"]["GPS_RAW_INT"].as_u64().unwrap_or(0) > 0, "{v}");
    assert_eq!(
        paused.as_deref(),
        Some("waiting"),
        "executed on the firmware"
    );
}

/// Issue #13: with a key, nothing unsigned from the air is forwarded: an unsigned firmware's
/// telemetry is rejected by the ground and never reaches the peer.
#[test]
fn with_a_key_unsigned_frames_from_the_air_are_not_forwarded() {
    let Some(py) = require("pymavlink") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let fw = firmware(dir.path(), None); // the sim board signs nothing
    let key = dir.path().join("ground.key");
    std::fs::write(&key, [0x5au8; 32]).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let p = peer(
        &py,
        "udpin:127.0.0.1:0",
        &[],
        4.0 * slow_factor() as f64,
        &[],
    );
    let out = format!("udpout:127.0.0.1:{}", udp_port(&p));
    let g = ground(dir.path(), &["--key", key.to_str().unwrap(), "--out", &out]);
    let v = result_of(&p.finish(secs(30)));
    let lines = g.all();
    stop(fw);
    drop(g);
    assert!(
        lines.iter().any(|l| l.contains("REJECT reason=unsigned")),
        "the ground heard the unsigned firmware: {lines:?}"
    );
    assert_eq!(v["counts"], serde_json::json!({}), "nothing forwarded: {v}");
}

/// Issue #13: MAVProxy (from PyPI, headless) connects to `tcpin:`, detects the vehicle and its
/// `long` command is executed and ACKed.
#[test]
fn mavproxy_connects_and_commands_through_tcpin() {
    let Some(py) = require("MAVProxy") else {
        return;
    };
    let mavproxy = py.parent().unwrap().join("mavproxy.py");
    let mavproxy = if mavproxy.exists() {
        mavproxy
    } else {
        assert!(!ci(), "mavproxy.py not beside {}", py.display());
        eprintln!("SKIPPED: no mavproxy.py beside {}", py.display());
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let fw = firmware(dir.path(), None);
    let run = dir.path().join("harmony-data/run");
    let g = ground(dir.path(), &["--out", "tcpin:127.0.0.1:0"]);
    let tcp = local_of(&g, "tcpin:127.0.0.1:0");
    let mut c = Command::new(&py);
    c.arg(&mavproxy)
        .arg(format!("--master=tcp:{tcp}"))
        .args([
            "--non-interactive",
            "--no-state",
            "--default-modules=link,cmdlong",
            "--target-system=1",
            "--target-component=191",
            "--source-system=253",
            // MAV_CMD_USER_1 pause, param1 = 2: the rangefinder.
            "--cmd=long USER_1 2",
        ])
        .current_dir(dir.path());
    let m = Lines::spawn(c);
    let ack = m.wait_for(secs(30), |l| {
        l.contains("Got COMMAND_ACK: USER_1").then(|| l.to_owned())
    });
    let detected = m.wait_for(secs(10), |l| {
        l.contains("Detected vehicle 1:191").then(|| l.to_owned())
    });
    let paused = wait_until(secs(5), || {
        state_of(&run, "rangefinder").as_deref() == Some("waiting")
    });
    let out = m.all();
    drop(m);
    stop(fw);
    drop(g);
    assert!(
        ack.as_deref().is_some_and(|a| a.contains("ACCEPTED")),
        "{out:?}"
    );
    assert!(detected.is_some(), "{out:?}");
    assert!(paused, "the rangefinder was paused");
}

/// Issue #13: the terminal UI shows each `--out` endpoint with its counters.
#[test]
fn the_terminal_ui_shows_the_endpoints_counters() {
    use harmony::uplink::ground_view::{GroundView, render};
    use ratatui::Terminal;
    use ratatui::backend::TestBackend;
    let mut r = harmony::uplink::route::Router::open(&["tcpin:127.0.0.1:0".to_owned()]).unwrap();
    r.endpoints[0].counters.down = 1234;
    r.endpoints[0].counters.clients = 2;
    let v = GroundView {
        routes: r.summary(),
        ..Default::default()
    };
    let mut t = Terminal::new(TestBackend::new(140, 30)).unwrap();
    t.draw(|f| render(&v, 0.0, None, f)).unwrap();
    let text: String = t
        .backend()
        .buffer()
        .content()
        .iter()
        .map(|c| c.symbol())
        .collect();
    assert!(
        text.contains("out: tcpin:127.0.0.1:0 down 1234 up 0 dropped 0/0 clients 2"),
        "{text}"
    );
}
