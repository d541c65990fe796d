//! Board files: all or nothing, and one firmware at a time (issue #11), driving the real
//! `harmony run` binary:
//! * a board that starts is mutated one field at a time (a capture that is a directory, a radio
//!   link under a read-only file system, a `run_dir` that is a file or read-only, a group that
//!   does not exist, an unwritable data directory or signing state, ...): each is refused with
//!   exit code 2 and a message naming the field, and the data directory is left exactly as it
//!   was (no session directory, `latest` not moved, no socket);
//! * a second `harmony run` on the same run directory is refused before it touches the data
//!   directory; after a `kill -9` of the first the next start works (the kernel dropped the
//!   lock);
//! * `./harmony-data/radio` being a directory makes no command panic (`harmony ctl status`,
//!   `harmony log ls`), and `harmony run` refuses it naming `uplink.sim.link`.

mod common;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Output;

use common::*;
use nix::sys::signal::Signal as Sig;

/// What a directory tree holds: every path with its kind, size or link target. Equal
/// snapshots mean nothing was created, removed, moved or grown.
fn snapshot(root: &Path) -> BTreeMap<PathBuf, String> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, String>) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        for e in rd.flatten() {
            let p = e.path();
            let rel = p.strip_prefix(root).unwrap().to_owned();
            let m = std::fs::symlink_metadata(&p).unwrap();
            let what = if m.file_type().is_symlink() {
                format!("link -> {}", std::fs::read_link(&p).unwrap().display())
            } else if m.is_dir() {
                walk(root, &p, out);
                "dir".to_owned()
            } else {
                format!("file {} bytes", m.len())
            };
            out.insert(rel, what);
        }
    }
    let mut out = BTreeMap::new();
    match std::fs::symlink_metadata(root) {
        Ok(m) if m.is_dir() => walk(root, root, &mut out),
        Ok(m) => {
            out.insert(
                PathBuf::new(),
                format!("not a directory, {} bytes", m.len()),
            );
        }
        Err(_) => {
            out.insert(PathBuf::new(), "absent".to_owned());
        }
    }
    out
}

/// The simulated board, writing under `dir/data`, its radio link in `dir/data/radio`.
fn sim_board(dir: &Path) -> String {
    let uncommented: String = harmony::board::SIM_BOARD
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .map(|l| format!("{l}\n"))
        .collect();
    let text = uncommented
        .replace(
            "data_dir = \"harmony-data\"",
            &format!("data_dir = \"{}\"", dir.join("data").display()),
        )
        .replace(
            "run_dir = \"harmony-data/run\"",
            &format!("run_dir = \"{}\"", dir.join("data/run").display()),
        )
        .replace(
            "link = \"harmony-data/radio\"",
            &format!("link = \"{}\"", dir.join("data/radio").display()),
        );
    assert!(
        !text.contains("harmony-data"),
        "every path of the sim board rewritten"
    );
    text
}

/// `harmony run --board BOARD` in `dir`: its output once it exited, or `None` if it was
/// still running after 10 s (it started; it is killed).
fn run_board(dir: &Path, board: &Path) -> Option<Output> {
    let mut child = spawn_harmony(dir, &["run", "--board", board.to_str().unwrap()]);
    let status = wait_exit(&mut child, secs(10))?;
    Some(Output {
        status,
        stdout: Vec::new(),
        stderr: std::fs::read(dir.join("stderr.txt")).unwrap_or_default(),
    })
}

/// Runs `board` once until every processor is active, then stops it: the board starts, and
/// the data directory has a session and `latest` to be left alone by the refusals.
fn start_and_stop(dir: &Path, board: &Path, run_dir: &Path) {
    let mut child = spawn_harmony(dir, &["run", "--board", board.to_str().unwrap()]);
    assert!(
        wait_until(secs(20), || state_of(run_dir, "harmony").as_deref()
            == Some("active")),
        "the unmutated board starts: {}",
        stderr_of(dir)
    );
    send_signal(&child, Sig::SIGTERM);
    let st = wait_exit(&mut child, secs(10)).expect("stops");
    assert!(st.success(), "{}", stderr_of(dir));
}

/// Issue #11: every field that names a path or a group is checked before anything starts; a
/// refusal names the field, exits 2 and leaves the data directory exactly as it was.
#[test]
fn mutated_board_files_are_refused_whole_and_leave_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let base = sim_board(d);
    let board = d.join("board.toml");
    std::fs::write(&board, &base).unwrap();
    let data = d.join("data");
    let run = data.join("run");
    start_and_stop(d, &board, &run);
    assert!(std::fs::read_link(data.join("latest")).is_ok());

    let a_dir = d.join("a-directory");
    std::fs::create_dir(&a_dir).unwrap();
    let a_file = d.join("a-file");
    std::fs::write(&a_file, "x").unwrap();
    let key = d.join("uplink.key");
    std::fs::write(&key, [7u8; 32]).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o640)).unwrap();
    let data_s = data.display().to_string();
    let run_s = run.display().to_string();

    let mut cases: Vec<(&str, String)> = vec![
        (
            "can.replay.capture",
            base.replace(
                "capture = \"builtin:canboat\"",
                &format!("capture = \"{}\"", a_dir.display()),
            ),
        ),
        (
            "gps.sim.capture",
            base.replace(
                "capture = \"builtin:quectel-l76k\"",
                &format!("capture = \"{}\"", a_dir.display()),
            ),
        ),
        (
            "board.run_dir",
            base.replace(
                &format!("run_dir = \"{run_s}\""),
                &format!("run_dir = \"{}\"", a_file.display()),
            ),
        ),
        (
            "board.run_dir",
            base.replace(
                &format!("run_dir = \"{run_s}\""),
                &format!("run_dir = \"{}/{}\"", d.display(), "r".repeat(120)),
            ),
        ),
        (
            "board.socket_group",
            base.replace(
                "log_level = \"info\"",
                "log_level = \"info\"\nsocket_group = \"harmony-test-no-such-group\"",
            ),
        ),
        (
            "board.data_dir",
            base.replace(
                &format!("data_dir = \"{data_s}\""),
                &format!("data_dir = \"{}\"", a_file.display()),
            ),
        ),
        (
            "gps.device",
            base.replace(
                "[gps.sim]\ncapture = \"builtin:quectel-l76k\"\nspeed = 1.0\nloop = true\n",
                &format!("device = \"{}\"\n", a_dir.display()),
            ),
        ),
        (
            "uplink.device",
            base.replace(
                &format!("[uplink.sim]\nlink = \"{}\"", data.join("radio").display()),
                &format!("device = \"{}\"", a_dir.display()),
            ),
        ),
        (
            "uplink.signing_key",
            base.replace(
                "accept_unsigned_commands = true",
                &format!("signing_key = \"{}\"", key.display()),
            ),
        ),
        (
            "uplink.signing_state",
            base.replace(
                "accept_unsigned_commands = true",
                &format!(
                    "signing_key = \"{}\"\nsigning_state = \"{}/no/such/dir/state\"",
                    d.join("missing.key").display(),
                    d.display()
                ),
            ),
        ),
        (
            "uplink.signing_state",
            base.replace(
                "accept_unsigned_commands = true",
                &format!(
                    "signing_key = \"{}\"\nsigning_state = \"{}\"",
                    d.join("missing.key").display(),
                    a_dir.display()
                ),
            ),
        ),
    ];
    let ro = read_only_dir();
    if require_or_skip(
        ro.is_some(),
        "a read-only file system (root mounts a read-only tmpfs)",
    ) {
        let ro = ro.as_ref().unwrap().path.display().to_string();
        cases.extend([
            (
                "uplink.sim.link",
                base.replace(
                    &format!("link = \"{}\"", data.join("radio").display()),
                    &format!("link = \"{ro}/radio\""),
                ),
            ),
            (
                "board.run_dir",
                base.replace(
                    &format!("run_dir = \"{run_s}\""),
                    &format!("run_dir = \"{ro}/run\""),
                ),
            ),
            (
                "board.data_dir",
                base.replace(
                    &format!("data_dir = \"{data_s}\""),
                    &format!("data_dir = \"{ro}/data\""),
                ),
            ),
            (
                "uplink.signing_state",
                base.replace(
                    "accept_unsigned_commands = true",
                    &format!(
                        "signing_key = \"{}\"\nsigning_state = \"{ro}/uplink-signing.state\"",
                        d.join("missing.key").display()
                    ),
                ),
            ),
        ]);
    }
    // The radio link's place taken by a directory, and the run directory's lock or state
    // taken by the wrong kind of file: made last, they are part of the data directory.
    let before = snapshot(&data);
    for (field, text) in &cases {
        assert_ne!(text, &base, "case {field} mutates the board");
        check_refused(d, &board, text, field, &data, &before);
    }
    std::fs::create_dir(data.join("radio")).unwrap();
    let before = snapshot(&data);
    check_refused(d, &board, &base, "uplink.sim.link", &data, &before);
    std::fs::remove_dir(data.join("radio")).unwrap();
    std::fs::remove_file(run.join("lock")).unwrap();
    std::fs::create_dir(run.join("lock")).unwrap();
    let before = snapshot(&data);
    check_refused(d, &board, &base, "board.run_dir", &data, &before);
    std::fs::remove_dir(run.join("lock")).unwrap();

    // And the unmutated board still starts (the refusals were the mutations).
    start_and_stop(d, &board, &run);
}

fn check_refused(
    d: &Path,
    board: &Path,
    text: &str,
    field: &str,
    data: &Path,
    before: &BTreeMap<PathBuf, String>,
) {
    std::fs::write(board, text).unwrap();
    let out = run_board(d, board)
        .unwrap_or_else(|| panic!("{field}: the firmware started with this board:\n{text}"));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{field}: {err}");
    assert!(
        err.contains(&format!("`{field}`")),
        "the refusal names {field}: {err}"
    );
    assert!(!err.contains("panicked"), "{field}: {err}");
    assert_eq!(
        &snapshot(data),
        before,
        "{field}: the data directory was touched ({err})"
    );
}

/// Issue #11: a second `harmony run` on the same run directory is refused before it touches
/// the data directory (no session, `latest` unmoved, the first one's socket still answering);
/// after a `kill -9` of the first, the next start works: the kernel dropped the lock.
#[test]
fn one_firmware_at_a_time_and_a_killed_one_does_not_block_the_next() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let data = d.join("data");
    let run = data.join("run");
    let first_dir = d.join("first");
    let second_dir = d.join("second");
    for x in [&first_dir, &second_dir] {
        std::fs::create_dir(x).unwrap();
    }
    let data_arg = data.to_str().unwrap();
    let mut first = spawn_harmony(&first_dir, &["run", "--data-dir", data_arg]);
    assert!(
        wait_until(secs(20), || state_of(&run, "harmony").as_deref()
            == Some("active")),
        "{}",
        stderr_of(&first_dir)
    );
    let sessions = |data: &Path| -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(data)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    let entries = sessions(&data);
    let latest = std::fs::read_link(data.join("latest")).unwrap();
    // Wait a second: a new session made now would have another name.
    std::thread::sleep(std::time::Duration::from_millis(1100));

    let mut second = spawn_harmony(&second_dir, &["run", "--data-dir", data_arg]);
    let st = wait_exit(&mut second, secs(10)).expect("the second one is refused, not started");
    let err = stderr_of(&second_dir);
    assert_eq!(st.code(), Some(2), "{err}");
    assert!(
        err.contains("another harmony is running") && err.contains(&format!("pid {}", first.id())),
        "{err}"
    );
    assert_eq!(sessions(&data), entries, "no session made: {err}");
    assert_eq!(std::fs::read_link(data.join("latest")).unwrap(), latest);
    let status = harmony(d, &["ctl", "--run-dir", run.to_str().unwrap(), "status"])
        .output()
        .unwrap();
    assert!(
        status.status.success(),
        "the first one still answers: {}",
        String::from_utf8_lossy(&status.stderr)
    );

    // kill -9: no clean-up at all, yet the next start works.
    first.kill().unwrap();
    first.wait().unwrap();
    let mut third = spawn_harmony(&second_dir, &["run", "--data-dir", data_arg]);
    assert!(
        wait_until(secs(20), || {
            state_of(&run, "harmony").as_deref() == Some("active")
                && std::fs::read_link(data.join("latest")).is_ok_and(|l| l != latest)
        }),
        "a start after kill -9: {}",
        stderr_of(&second_dir)
    );
    send_signal(&third, Sig::SIGTERM);
    assert!(wait_exit(&mut third, secs(10)).expect("stops").success());
}

/// Issue #11: `./harmony-data/radio` being a directory (the sim board's radio link) makes no
/// command panic: `harmony ctl status` and `harmony log ls` read the built-in board without
/// looking at the disk, and `harmony run` refuses the board naming `uplink.sim.link` without
/// making a session.
#[test]
fn a_radio_link_that_is_a_directory_panics_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir_all(d.join("harmony-data/radio")).unwrap();
    let before = snapshot(&d.join("harmony-data"));
    for args in [&["ctl", "status"][..], &["log", "ls"][..]] {
        let out = harmony(d, args).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !err.contains("panicked") && out.status.code() != Some(101),
            "harmony {args:?}: {err}"
        );
    }
    let ctl = harmony(d, &["ctl", "status"]).output().unwrap();
    assert_eq!(ctl.status.code(), Some(2), "no firmware to talk to");
    let mut run = spawn_harmony(d, &["run"]);
    let st = wait_exit(&mut run, secs(10)).expect("refused, not started");
    let err = stderr_of(d);
    assert_eq!(st.code(), Some(2), "{err}");
    assert!(err.contains("`uplink.sim.link`"), "{err}");
    assert_eq!(snapshot(&d.join("harmony-data")), before, "{err}");
}
