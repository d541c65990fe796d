//! The operator's views show recent history (issue #13): `harmony top` and `harmony ground`
//! draw sparklines of range, altitude, CAN frame rate, radio budget (or link) use and queue
//! fill. Driven for real in a private tmux server (own `TMUX_TMPDIR`, as tests/tui.rs does)
//! against the simulated firmware. Without tmux the tests fail when `CI=true` and print
//! SKIPPED otherwise.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

struct Tmux {
    server: String,
    sockets: tempfile::TempDir,
}

impl Tmux {
    fn available() -> bool {
        let ok = Command::new("tmux")
            .arg("-V")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            assert!(
                !std::env::var("CI").is_ok_and(|v| v == "true"),
                "tmux is missing (CI=true); scripts/setup.sh installs it"
            );
            eprintln!("SKIPPED: tmux is not installed");
        }
        ok
    }

    fn cmd(&self) -> Command {
        let mut c = Command::new("tmux");
        c.args(["-L", &self.server, "-f", "/dev/null"])
            .env("TMUX_TMPDIR", self.sockets.path())
            .env_remove("TMUX");
        c
    }

    fn start(shell_cmd: &str) -> Self {
        let t = Tmux {
            server: format!(
                "harmony-hist-{}-{}",
                std::process::id(),
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .subsec_nanos()
            ),
            sockets: tempfile::tempdir().unwrap(),
        };
        let st = t
            .cmd()
            .args(["new-session", "-d", "-s", "v", "-x", "160", "-y", "50"])
            .arg(shell_cmd)
            .status()
            .expect("run tmux");
        assert!(st.success());
        t
    }

    fn screen(&self) -> String {
        let out = self
            .cmd()
            .args(["capture-pane", "-p", "-t", "v"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        mut cond: impl FnMut(&str) -> bool,
    ) -> String {
        let mut last = String::new();
        let ok = wait_until(timeout, || {
            last = self.screen();
            cond(&last)
        });
        assert!(ok, "timed out waiting for {what}; screen:\n{last}");
        last
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.cmd().arg("kill-server").stderr(Stdio::null()).status();
    }
}

const BARS: &[char] = &['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];

/// The screen line of history row `label`, and how many bar characters it has.
fn spark_row<'a>(screen: &'a str, label: &str) -> Option<(&'a str, usize)> {
    let line = screen
        .lines()
        .find(|l| l.trim_start_matches(['│', '|', ' ']).starts_with(label) && l.contains(BARS))?;
    Some((line, line.chars().filter(|c| BARS.contains(c)).count()))
}

/// The number before `unit` on a history row (`range        12.34 m`).
fn value(line: &str, unit: &str) -> Option<f64> {
    let words: Vec<&str> = line.split_whitespace().collect();
    let i = words.iter().position(|w| *w == unit)?;
    words.get(i.checked_sub(1)?)?.parse().ok()
}

fn firmware(dir: &Path) -> KillOnDrop {
    let fw = spawn_harmony(dir, &["run", "--log-level", "warn"]);
    let run = dir.join("harmony-data/run");
    assert!(
        wait_until(secs(20), || ["gps", "rangefinder", "can", "uplink"]
            .iter()
            .all(|p| state_of(&run, p).as_deref() == Some("active"))),
        "{}",
        stderr_of(dir)
    );
    fw
}

/// Issue #13: `harmony top` shows a history strip: the range climbing in the simulated flight
/// profile, the GPS altitude, CAN frames per second, the radio budget use and the fullest
/// queue, as sparklines that fill up over time.
#[test]
fn top_shows_history_sparklines() {
    if !Tmux::available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut fw = firmware(dir.path());
    let run = dir.path().join("harmony-data/run");
    let t = Tmux::start(&format!(
        "'{}' top --run-dir '{}' --refresh-ms 300; sleep 600",
        harmony_bin().display(),
        run.display()
    ));
    let screen = t.wait_for("ten samples of every series", secs(30), |s| {
        s.contains("history (newest right)")
            && ["range", "altitude", "CAN", "radio budget"]
                .iter()
                .all(|l| spark_row(s, l).is_some_and(|(_, n)| n >= 10))
            // Queue fill is on a 0..100 % scale: a few % draws no bar, only its value.
            && s.lines().any(|l| {
                l.trim_start_matches(['│', ' ']).starts_with("queue fill")
                    && value(l, "%").is_some()
            })
    });
    send_signal(&fw, nix::sys::signal::Signal::SIGTERM);
    let _ = wait_exit(&mut fw, secs(10));
    let (alt, _) = spark_row(&screen, "altitude").unwrap();
    assert!(value(alt, "m").is_some_and(|a| a > 1.0), "{alt}");
    let (can, _) = spark_row(&screen, "CAN").unwrap();
    assert!(value(can, "fr/s").is_some_and(|r| r > 10.0), "{can}");
    let (range, _) = spark_row(&screen, "range").unwrap();
    assert!(value(range, "m").is_some(), "{range}");
}

/// Issue #13: `harmony ground` (terminal UI) shows the history of range, altitude, CAN frames
/// and radio link use, one sample a second.
#[test]
fn ground_shows_history_sparklines() {
    if !Tmux::available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut fw = firmware(dir.path());
    let t = Tmux::start(&format!(
        "cd '{}' && '{}' ground --port harmony-data/radio; sleep 600",
        dir.path().display(),
        harmony_bin().display()
    ));
    let screen = t.wait_for("five samples of every series", secs(40), |s| {
        s.contains("history (newest right, 1 s)")
            && ["range", "altitude", "CAN", "radio link"]
                .iter()
                .all(|l| spark_row(s, l).is_some_and(|(_, n)| n >= 5))
    });
    send_signal(&fw, nix::sys::signal::Signal::SIGTERM);
    let _ = wait_exit(&mut fw, secs(10));
    let (radio, _) = spark_row(&screen, "radio link").unwrap();
    assert!(
        value(radio, "%").is_some_and(|p| p > 5.0 && p < 150.0),
        "{radio}"
    );
    let (alt, _) = spark_row(&screen, "altitude").unwrap();
    assert!(value(alt, "m").is_some_and(|a| a > 1.0), "{alt}");
}
