//! `harmony top` for real (issue #6): the simulated firmware runs as a process, the TUI runs in
//! a detached tmux session, keys go in with `send-keys` and the screen comes back with
//! `capture-pane`. A pause must show on the screen and in the processor's state file; the TUI
//! must survive the firmware restarting, and `q` must leave the terminal as it found it.
//!
//! Each test uses its own tmux server (`tmux -L NAME -f /dev/null`), so it neither sees nor
//! disturbs the user's sessions. Skipped, with a message, when tmux is not installed
//! (`scripts/setup.sh` installs it); under CI (`CI=true`) a missing tmux is a failure.
//!
//! Issue #11: both terminal UIs (`harmony top`, `harmony ground`) exit when their terminal
//! goes away (the tmux session killed: EOF/EIO on the terminal, with or without SIGHUP) and on
//! SIGTERM, within 100 ms, without spinning (their CPU time is read from /proc).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;
use nix::sys::signal::Signal as Sig;

/// The firmware as a child process, stopped (then killed) when the test ends either way.
struct Firmware {
    child: Child,
}

impl Firmware {
    fn start(dir: &Path, tag: &str) -> Self {
        let out = std::fs::File::create(dir.join(format!("firmware-{tag}.out"))).unwrap();
        let err = std::fs::File::create(dir.join(format!("firmware-{tag}.err"))).unwrap();
        let child = harmony(dir, &["run", "--data-dir", "data"])
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .spawn()
            .expect("spawn harmony run");
        Firmware { child }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn stop(&mut self) -> Option<std::process::ExitStatus> {
        send_signal(&self.child, Sig::SIGTERM);
        wait_exit(&mut self.child, secs(10))
    }
}

impl Drop for Firmware {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(self.child.id() as i32),
                Sig::SIGTERM,
            );
            if wait_exit(&mut self.child, secs(5)).is_none() {
                let _ = self.child.kill();
            }
        }
    }
}

/// A private tmux server with one session; killed when dropped. Its socket lives in its own
/// temporary directory (`TMUX_TMPDIR`), so nothing is left in /tmp/tmux-UID.
struct Tmux {
    server: String,
    sockets: tempfile::TempDir,
}

impl Tmux {
    /// Whether tmux can be used; without it the test is skipped, but fails under CI.
    fn available() -> bool {
        let ok = Command::new("tmux")
            .arg("-V")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            let ci = std::env::var("CI").is_ok_and(|v| v == "true");
            assert!(
                !ci,
                "tmux is missing (CI=true); scripts/setup.sh installs it"
            );
            eprintln!("SKIPPED: tmux is not installed (scripts/setup.sh installs it)");
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

    /// Ends the session: tmux closes the pane's terminal and sends SIGHUP to its processes.
    fn kill_session(&self) {
        let st = self
            .cmd()
            .args(["kill-session", "-t", "top"])
            .status()
            .unwrap();
        assert!(st.success(), "tmux kill-session");
    }

    /// Starts `shell_cmd` in a 160x50 session.
    fn start(shell_cmd: &str) -> Self {
        let server = format!(
            "harmony-tui-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .subsec_nanos()
        );
        let t = Tmux {
            server,
            sockets: tempfile::tempdir().unwrap(),
        };
        let st = t
            .cmd()
            .args(["new-session", "-d", "-s", "top", "-x", "160", "-y", "50"])
            .arg(shell_cmd)
            .status()
            .expect("run tmux");
        assert!(st.success(), "tmux new-session failed");
        t
    }

    fn keys(&self, keys: &[&str]) {
        let st = self
            .cmd()
            .args(["send-keys", "-t", "top"])
            .args(keys)
            .status()
            .unwrap();
        assert!(st.success(), "tmux send-keys {keys:?}");
    }

    /// The pid of the pane's shell.
    fn pane_pid(&self) -> u32 {
        let out = self
            .cmd()
            .args(["display-message", "-p", "-t", "top", "#{pane_pid}"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
    }

    fn screen(&self) -> String {
        let out = self
            .cmd()
            .args(["capture-pane", "-p", "-t", "top"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Waits until the screen satisfies `cond`; panics with the screen otherwise.
    fn wait_for(&self, what: &str, timeout: Duration, mut cond: impl FnMut(&str) -> bool) {
        let mut last = String::new();
        let ok = wait_until(timeout, || {
            last = self.screen();
            cond(&last)
        });
        assert!(ok, "timed out waiting for {what}; screen:\n{last}");
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.cmd().arg("kill-server").stderr(Stdio::null()).status();
    }
}

/// The processor table row whose name column is exactly `name` (not `gps-sim` for `gps`).
fn proc_row<'a>(screen: &'a str, name: &str) -> Option<&'a str> {
    screen.lines().find(|l| row_name(l) == Some(name))
}

/// The name in a table row: the first word after the border and the selection marker.
fn row_name(line: &str) -> Option<&str> {
    let inner = line.strip_prefix('│').or_else(|| line.strip_prefix('|'))?;
    let inner = inner.trim_start_matches(['>', ' ']);
    let name = inner.split_whitespace().next()?;
    // Table rows have a kind column after the name.
    let kind = inner.split_whitespace().nth(1)?;
    ["loop", "runner", "plain", "pool"]
        .contains(&kind)
        .then_some(name)
}

/// The name of the selected row (the one with the `>` marker).
fn selected(screen: &str) -> Option<String> {
    screen
        .lines()
        .find(|l| {
            l.strip_prefix('│')
                .is_some_and(|r| r.trim_start().starts_with('>'))
        })
        .and_then(row_name)
        .map(str::to_owned)
}

fn state_word(row: &str) -> Option<&str> {
    row.split_whitespace()
        .find(|w| ["active", "waiting", "stopped", "failed", "starting"].contains(w))
}

fn gps_state_file(run: &Path) -> Option<String> {
    state_of(run, "gps")
}

fn top_command(dir: &Path, run: &Path) -> String {
    // After the TUI exits, record its exit code and the terminal modes, then keep the pane
    // open so the restored (main) screen can be captured.
    format!(
        "'{bin}' top --run-dir '{run}' --refresh-ms 300 --timeout-ms {timeout} 2>'{dir}/top.err'; \
         echo \"TOP-EXITED $?\"; stty -a > '{dir}/stty.txt'; \
         echo $? > '{dir}/top-done'; sleep 600",
        bin = harmony_bin().display(),
        run = run.display(),
        dir = dir.display(),
        timeout = secs(3).as_millis()
    )
}

/// Issue #6: pause and resume `gps` from the TUI; the screen and the state file agree; the
/// TUI reconnects after the firmware restarts; `q` exits 0 and restores the terminal.
#[test]
fn top_pauses_gps_survives_a_restart_and_quits_cleanly() {
    if !Tmux::available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let run: PathBuf = dir.path().join("data/run");
    let mut fw = Firmware::start(dir.path(), "1");
    assert!(
        wait_until(secs(20), || gps_state_file(&run).as_deref()
            == Some("active")),
        "firmware did not start: {}",
        std::fs::read_to_string(dir.path().join("firmware-1.err")).unwrap_or_default()
    );

    let tmux = Tmux::start(&top_command(dir.path(), &run));
    tmux.wait_for("the tree with gps active", secs(20), |s| {
        s.contains("connected")
            && !s.contains("disconnected")
            && proc_row(s, "gps").and_then(state_word) == Some("active")
    });
    assert!(
        tmux.screen().contains(&format!("pid {} ", fw.pid())),
        "header shows the firmware's pid"
    );

    // Walk the selection down to gps.
    for _ in 0..20 {
        let s = tmux.screen();
        let cur = selected(&s);
        if cur.as_deref() == Some("gps") {
            break;
        }
        tmux.keys(&["Down"]);
        tmux.wait_for("the selection to move", secs(5), |s| selected(s) != cur);
    }
    assert_eq!(selected(&tmux.screen()).as_deref(), Some("gps"));

    // Pause: the screen and the state file both say waiting.
    tmux.keys(&["p"]);
    tmux.wait_for("gps waiting on screen", secs(10), |s| {
        proc_row(s, "gps").and_then(state_word) == Some("waiting")
    });
    assert!(
        wait_until(secs(10), || gps_state_file(&run).as_deref()
            == Some("waiting")),
        "state file says waiting: {:?}",
        gps_state_file(&run)
    );
    tmux.wait_for("the firmware's reply", secs(5), |s| {
        s.contains("paused gps")
    });
    let s = tmux.screen();
    // Only gps is paused.
    assert_eq!(
        proc_row(&s, "rangefinder").and_then(state_word),
        Some("active"),
        "{s}"
    );

    // Resume.
    tmux.keys(&["r"]);
    tmux.wait_for("gps active again on screen", secs(10), |s| {
        proc_row(s, "gps").and_then(state_word) == Some("active")
    });
    assert!(wait_until(secs(10), || gps_state_file(&run).as_deref()
        == Some("active")));

    // The firmware goes away: the TUI says so and keeps running.
    let st = fw.stop().expect("firmware stops on SIGTERM");
    assert!(st.success());
    tmux.wait_for("disconnected, retrying", secs(10), |s| {
        s.contains("disconnected, retrying")
    });
    // It comes back (a new process): the TUI reconnects by itself.
    let fw2 = Firmware::start(dir.path(), "2");
    tmux.wait_for("reconnection to the new firmware", secs(30), |s| {
        s.contains(&format!("pid {} ", fw2.pid()))
            && !s.contains("disconnected")
            && proc_row(s, "gps").and_then(state_word) == Some("active")
    });

    // Quit: exit code 0, main screen back, raw mode off.
    tmux.keys(&["q"]);
    let done = dir.path().join("top-done");
    assert!(
        wait_until(secs(10), || done.exists()),
        "harmony top did not exit on q; screen:\n{}",
        tmux.screen()
    );
    let s = tmux.screen();
    assert!(s.contains("TOP-EXITED 0"), "exit status 0:\n{s}");
    assert!(
        !s.contains("processors"),
        "alternate screen left on exit:\n{s}"
    );
    let stty = std::fs::read_to_string(dir.path().join("stty.txt")).unwrap();
    assert!(
        stty.split_whitespace().any(|w| w == "icanon")
            && stty.split_whitespace().any(|w| w == "echo"),
        "terminal back in cooked mode: {stty}"
    );
    let err = std::fs::read_to_string(dir.path().join("top.err")).unwrap_or_default();
    assert!(err.trim().is_empty(), "harmony top wrote errors: {err}");
    drop(fw2);
}

/// Issue #6: `x` asks first; `n` cancels, `y` stops the firmware, which then exits 0.
#[test]
fn top_stop_needs_confirmation() {
    if !Tmux::available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let run: PathBuf = dir.path().join("data/run");
    let mut fw = Firmware::start(dir.path(), "1");
    assert!(wait_until(secs(20), || gps_state_file(&run).as_deref()
        == Some("active")));
    let tmux = Tmux::start(&top_command(dir.path(), &run));
    tmux.wait_for("connected", secs(20), |s| {
        proc_row(s, "gps").and_then(state_word) == Some("active")
    });
    tmux.keys(&["x"]);
    tmux.wait_for("the confirmation", secs(5), |s| {
        s.contains("Stop the firmware?")
    });
    tmux.keys(&["n"]);
    tmux.wait_for("cancelled", secs(5), |s| s.contains("stop cancelled"));
    assert!(fw.child.try_wait().unwrap().is_none(), "still running");
    tmux.keys(&["x"]);
    tmux.wait_for("the confirmation", secs(5), |s| {
        s.contains("Stop the firmware?")
    });
    tmux.keys(&["y"]);
    let st = wait_exit(&mut fw.child, secs(15)).expect("firmware stops after y");
    assert!(st.success(), "firmware exit status {st:?}");
    tmux.wait_for("disconnected", secs(10), |s| {
        s.contains("disconnected, retrying")
    });
    // Escape quits too.
    tmux.keys(&["Escape"]);
    assert!(wait_until(secs(10), || dir
        .path()
        .join("top-done")
        .exists()));
    assert!(tmux.screen().contains("TOP-EXITED 0"));
}

/// Processes whose parent is `parent` (from /proc/PID/stat; no procps needed).
fn children_of(parent: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // "pid (comm) state ppid ...": comm may hold spaces, so split after the last ')'.
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if ppid == Some(parent) {
            out.push(pid);
        }
    }
    out
}

/// Issue #6: with no firmware at all the TUI says so and keeps retrying; SIGTERM (the binary
/// catches it for `harmony run`) still ends it cleanly, terminal restored.
#[test]
fn top_without_firmware_waits_and_exits_on_sigterm() {
    if !Tmux::available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("nothing/run");
    let tmux = Tmux::start(&top_command(dir.path(), &run));
    tmux.wait_for("the disconnected screen", secs(20), |s| {
        s.contains("disconnected, retrying") && s.contains("no firmware answering")
    });
    let shell = tmux.pane_pid();
    let mut top = Vec::new();
    assert!(
        wait_until(secs(5), || {
            top = children_of(shell);
            top.len() == 1
        }),
        "one child of the pane's shell: {top:?}"
    );
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(top[0] as i32), Sig::SIGTERM).unwrap();
    assert!(
        wait_until(secs(10), || dir.path().join("top-done").exists()),
        "harmony top did not exit on SIGTERM; screen:\n{}",
        tmux.screen()
    );
    let s = tmux.screen();
    assert!(s.contains("TOP-EXITED 0"), "{s}");
    let stty = std::fs::read_to_string(dir.path().join("stty.txt")).unwrap();
    assert!(
        stty.split_whitespace().any(|w| w == "icanon"),
        "terminal back in cooked mode: {stty}"
    );
}

/// The `harmony` processes among the descendants of `pid`.
fn harmony_below(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    let mut todo = vec![pid];
    while let Some(p) = todo.pop() {
        for c in children_of(p) {
            if std::fs::read_to_string(format!("/proc/{c}/comm"))
                .is_ok_and(|n| n.trim() == "harmony")
            {
                out.push(c);
            }
            todo.push(c);
        }
    }
    out
}

/// Clock ticks of CPU a process has used (user + system), None once it is gone (or a zombie).
fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    // After the comm: state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt
    // utime stime.
    if rest.first() == Some(&"Z") {
        return None;
    }
    Some(rest.get(11)?.parse::<u64>().ok()? + rest.get(12)?.parse::<u64>().ok()?)
}

fn ticks_per_second() -> u64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .map_or(100, |t| t as u64)
}

/// How a terminal UI is made to go.
#[derive(Clone, Copy, Debug)]
enum Ending {
    /// `tmux kill-session`: the terminal closes and the pane's processes get SIGHUP.
    KillSession,
    /// The same, the UI started with `setsid` in a session of its own: no SIGHUP reaches it,
    /// only the terminal's end of file / EIO says it is gone.
    KillSessionNoSighup,
    Sigterm,
}

/// Starts `ui_cmd` (a harmony command line) in tmux, waits for `ready` on the screen, checks it
/// idles without spinning, ends it as `ending` says and checks it is gone within 100 ms (scaled
/// under qemu) and did not spin on the way out.
fn ui_ends(dir: &Path, what: &str, ui_cmd: &str, ready: &str, ending: Ending) {
    let setsid = if matches!(ending, Ending::KillSessionNoSighup) {
        "setsid -w "
    } else {
        ""
    };
    let cmd = format!(
        "{setsid}{ui_cmd} 2>'{dir}/{what}.err'; echo \"UI-EXITED $?\"; sleep 600",
        dir = dir.display()
    );
    let tmux = Tmux::start(&cmd);
    tmux.wait_for(&format!("{what} on screen"), secs(20), |s| {
        s.contains(ready)
    });
    let mut pids = Vec::new();
    assert!(
        wait_until(secs(5), || {
            pids = harmony_below(tmux.pane_pid());
            pids.len() == 1
        }),
        "one harmony process in the pane: {pids:?}"
    );
    let pid = pids[0];
    // Idle: it sleeps in poll, it does not spin.
    let tps = ticks_per_second();
    let c0 = cpu_ticks(pid).expect("running");
    std::thread::sleep(Duration::from_secs(1));
    let c1 = cpu_ticks(pid).expect("still running");
    assert!(
        c1 - c0 < tps / 2,
        "{what} used {} of {tps} ticks in 1 s of idling",
        c1 - c0
    );
    let t0 = std::time::Instant::now();
    match ending {
        Ending::KillSession | Ending::KillSessionNoSighup => tmux.kill_session(),
        Ending::Sigterm => {
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), Sig::SIGTERM).unwrap()
        }
    }
    let mut last = c1;
    let gone = wait_until(secs(3), || match cpu_ticks(pid) {
        Some(c) => {
            last = c;
            false
        }
        None => true,
    });
    let took = t0.elapsed();
    if !gone {
        let spun = cpu_ticks(pid).map(|c| c - c1);
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), Sig::SIGKILL);
        panic!("{what} still running {took:?} after {ending:?}; CPU ticks used since: {spun:?}");
    }
    eprintln!(
        "{what}: gone {took:?} after {ending:?}, {} CPU ticks on the way out",
        last - c1
    );
    let bound = Duration::from_millis(100) * slow_factor();
    assert!(
        took <= bound,
        "{what} took {took:?} to exit after {ending:?}"
    );
    assert!(
        last - c1 <= tps / 10 + 1,
        "{what} used {} ticks on its way out",
        last - c1
    );
    if matches!(ending, Ending::Sigterm) {
        tmux.wait_for("the exit status", secs(5), |s| s.contains("UI-EXITED 0"));
        let err = std::fs::read_to_string(dir.join(format!("{what}.err"))).unwrap_or_default();
        assert!(err.trim().is_empty(), "{what} wrote errors: {err}");
    }
}

fn top_cmd(dir: &Path) -> String {
    format!(
        "'{}' top --run-dir '{}' --refresh-ms 300",
        harmony_bin().display(),
        dir.join("nothing/run").display()
    )
}

fn ground_cmd(dir: &Path) -> String {
    format!(
        "'{}' ground --port '{}'",
        harmony_bin().display(),
        dir.join("no-radio").display()
    )
}

/// Issue #11: `harmony top` exits when the tmux session is killed, at once and without
/// spinning, with SIGHUP and also when only the terminal's hang-up tells it (today its input
/// thread spins in crossterm's read and it never exits).
#[test]
fn top_exits_when_its_terminal_goes_away() {
    if !Tmux::available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    for ending in [Ending::KillSession, Ending::KillSessionNoSighup] {
        ui_ends(
            dir.path(),
            "top",
            &top_cmd(dir.path()),
            "no firmware answering",
            ending,
        );
    }
}

/// Issue #11: `harmony ground` exits when the tmux session is killed (today it loops on
/// `read` at 100% of a core forever and ignores SIGTERM), with SIGHUP or without.
#[test]
fn ground_exits_when_its_terminal_goes_away() {
    if !Tmux::available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    for ending in [Ending::KillSession, Ending::KillSessionNoSighup] {
        ui_ends(
            dir.path(),
            "ground",
            &ground_cmd(dir.path()),
            "RADIO NOT OPEN",
            ending,
        );
    }
}

/// Issue #11: SIGTERM ends either UI within 100 ms, exit status 0, nothing on stderr.
#[test]
fn top_and_ground_exit_on_sigterm_within_100_ms() {
    if !Tmux::available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    ui_ends(
        dir.path(),
        "top",
        &top_cmd(dir.path()),
        "no firmware answering",
        Ending::Sigterm,
    );
    ui_ends(
        dir.path(),
        "ground",
        &ground_cmd(dir.path()),
        "RADIO NOT OPEN",
        Ending::Sigterm,
    );
}
