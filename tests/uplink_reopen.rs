//! The radio uplink (issue #5) when the radio vanishes: its own test binary, so no other test
//! starts child processes while its pseudo-terminals come and go.

mod common;
mod uplink_support;

use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::{secs, wait_until};
use harmony::concurrency::{LoopProcessor, Outcome, Runner, queue};
use harmony::sinks::drain::{Counting, SinkInputs, SinkLoop};
use harmony::uplink::config::UplinkSection;
use harmony::uplink::frame::{Decoder, parse};
use harmony::uplink::protocol::COMPONENT_ID;
use mavlink::dialects::common::MavMessage;
use nix::pty::PtyMaster;
use uplink_support::*;

/// Issue #5: the radio (a symlink to a pseudo-terminal) is removed and recreated: the uplink
/// notices, says so, reopens it within its 2 s retry and talks again, while the logger, fed by
/// the same sources, loses nothing.
#[test]
fn radio_removed_and_recreated_uplink_recovers_logger_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("ttyRADIO");
    let plug = |link: &Path| {
        let (master, slave, name) = pty_pair();
        let _ = std::fs::remove_file(link);
        std::os::unix::fs::symlink(name, link).unwrap();
        (master, slave)
    };
    let (mut master, slave) = plug(&link);
    let cfg = UplinkSection {
        device: Some(link.clone()),
        ..Default::default()
    };
    const SECS: u64 = 10;
    let (gl, glr) = queue(4096, "gps->logger");
    let (rl, rlr) = queue(4096, "rangefinder->logger");
    let (cl, clr) = queue(16384, "can->logger");
    let ((mut g, mut r, mut c), inputs) = uplink_queues();
    g.log = Some(gl);
    r.log = Some(rl);
    c.log = Some(cl);
    let logger_in = SinkInputs {
        gps: glr,
        range: rlr,
        can: clr,
    };
    let (uplink, _saver) = build_uplink(&cfg, dir.path(), inputs);
    let (sensors, feeds) = sources(g, r, c, SECS);
    let root = Runner::new("root")
        .child(LoopProcessor::new(SinkLoop::new(
            "logger",
            logger_in,
            Counting::default(),
            Duration::from_millis(10),
        )))
        .with_child(harmony::concurrency::Child::boxed(uplink))
        .child(sensors);
    let tree = Tree::start(root);
    let reg = tree.reg.clone();
    // Listens on the ground side until `want` holds for a message (the uplink retries the
    // radio every 2 s; the rest is room for a loaded machine).
    let heard = |m: &mut PtyMaster, want: &dyn Fn(&MavMessage) -> bool| {
        let mut d = Decoder::default();
        let mut buf = [0u8; 512];
        let t0 = Instant::now();
        while t0.elapsed() < secs(10) {
            let n = read_timeout(m, &mut buf, Duration::from_millis(50));
            if n > 0 {
                d.push(&buf[..n]);
                while let Some(raw) = d.next_frame() {
                    if raw.component_id() == COMPONENT_ID && parse(&raw).is_ok_and(|msg| want(&msg))
                    {
                        return true;
                    }
                }
            }
        }
        false
    };
    let heartbeat = |m: &MavMessage| matches!(m, MavMessage::HEARTBEAT(_));
    assert!(heard(&mut master, &heartbeat), "heartbeat over the radio");

    // Unplug: the node goes (first: the pty number may be reused at once), the terminal
    // hangs up.
    std::fs::remove_file(&link).unwrap();
    drop(master);
    drop(slave);
    assert!(wait_until(secs(5), || metric(&reg, "uplink", "reopens") == 1));
    assert!(wait_until(secs(5), || reg
        .find("uplink")
        .is_some_and(|e| e.note().contains("no radio"))));
    let logged = metric(&reg, "logger", "range_readings");
    assert!(wait_until(secs(5), || metric(
        &reg,
        "logger",
        "range_readings"
    ) > logged));

    // Plug back in: within the 2 s retry the uplink talks again and says it was away.
    let (mut master, _slave) = plug(&link);
    assert!(
        heard(&mut master, &|m| matches!(m, MavMessage::STATUSTEXT(t)
            if t.text.to_str().unwrap_or("").starts_with("radio link back after"))),
        "the ground hears that the radio was away: {:?}",
        reg.find("uplink").map(|e| e.snapshot())
    );
    assert!(
        heard(&mut master, &heartbeat),
        "heartbeat after the radio came back"
    );
    assert!(wait_until(secs(5), || reg
        .find("uplink")
        .is_some_and(|e| e.note().contains("57600 baud"))));
    assert_eq!(reg.find("uplink").unwrap().restarts(), 0);

    // Let the sources finish, then stop: the logger has every record.
    let want = [10 * SECS, 200 * SECS, 1000 * SECS];
    assert!(wait_until(secs(SECS + 30), || feeds
        .pushed
        .iter()
        .zip(want)
        .all(|(p, n)| p.load(Ordering::Relaxed) == n)));
    let (reg, outcome) = tree.stop();
    assert_eq!(outcome, Outcome::Completed);
    assert_eq!(metric(&reg, "logger", "gps_fixes"), want[0]);
    assert_eq!(metric(&reg, "logger", "range_readings"), want[1]);
    // CAN: the frames plus two NodeStatus for every thousandth.
    assert_eq!(metric(&reg, "logger", "can_frames"), want[2] + 2 * SECS);
    assert_eq!(metric(&reg, "logger", "dropped"), 0);
}
