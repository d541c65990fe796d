//! What touches the SD card, in which order and from which thread, seen from outside with
//! strace (issue #11): a durable replacement syncs the file before the rename and the directory
//! after it; a new session directory and `latest` are synced; in the running firmware the
//! logger and uplink threads make no file-system call (the writer thread and the housekeeping
//! pool do them).
//!
//! strace is installed by `scripts/setup.sh`; without it these tests say SKIPPED, and fail
//! under CI (`CI=true`).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use common::*;
use harmony::control::state_files::{Durability, write_atomic};

/// Whether strace can be used; a missing strace fails the test under CI.
fn strace_available() -> bool {
    let ok = Command::new("strace")
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "strace is missing (scripts/setup.sh installs it)"
        );
        eprintln!("SKIPPED: strace is not installed");
    }
    ok
}

/// Runs this test binary's test `name` under strace with `env` set (the test then plays the
/// helper's part), tracing `calls`; returns strace's lines.
fn strace_helper(name: &str, env: (&str, &Path), calls: &str) -> Vec<String> {
    let out = tempfile::NamedTempFile::new().unwrap();
    let st = Command::new("strace")
        .args(["-f", "-y", "-qq", "-e", &format!("trace={calls}"), "-o"])
        .arg(out.path())
        .arg(std::env::current_exe().unwrap())
        .args(["--exact", name, "--nocapture", "--test-threads", "1"])
        .env(env.0, env.1)
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(st.success(), "the helper failed");
    std::fs::read_to_string(out.path())
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn position(lines: &[String], what: &str, pred: impl Fn(&str) -> bool) -> usize {
    lines
        .iter()
        .position(|l| pred(l))
        .unwrap_or_else(|| panic!("no {what} in:\n{}", lines.join("\n")))
}

/// Issue #11: `write_atomic` with `Durability::Durable` (the signing state, manifest.json)
/// syncs the temporary file, renames it, then syncs the directory, in that order; with
/// `Durability::Volatile` (state files in /run) nothing is synced. On the old code the
/// directory was not synced after the rename its doc promised (and there were two mechanisms).
#[test]
fn durable_replacement_syncs_file_then_directory() {
    if let Some(dir) = std::env::var_os("HARMONY_TEST_WRITE_ATOMIC") {
        let dir = PathBuf::from(dir);
        std::fs::create_dir_all(dir.join("run")).unwrap();
        std::fs::create_dir_all(dir.join("card")).unwrap();
        write_atomic(
            &dir.join("run/x.state"),
            b"a=1\n",
            0o644,
            Durability::Volatile,
        )
        .unwrap();
        write_atomic(
            &dir.join("card/m.json"),
            b"{}\n",
            0o644,
            Durability::Durable,
        )
        .unwrap();
        return;
    }
    if !strace_available() {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().canonicalize().unwrap();
    let lines = strace_helper(
        "durable_replacement_syncs_file_then_directory",
        ("HARMONY_TEST_WRITE_ATOMIC", &dir),
        "openat,fsync,fdatasync,rename,renameat,renameat2",
    );
    let card = dir.join("card").display().to_string();
    let run = dir.join("run").display().to_string();
    let tmp_synced = position(&lines, "fsync of m.tmp", |l| {
        (l.contains("fsync(") || l.contains("fdatasync(")) && l.contains(&format!("{card}/m.tmp>"))
    });
    let renamed = position(&lines, "rename to m.json", |l| {
        l.contains("rename") && l.contains(&format!("{card}/m.json\""))
    });
    let dir_synced = position(&lines, "fsync of the directory", |l| {
        l.contains("fsync(") && l.contains(&format!("<{card}>)"))
    });
    assert!(
        tmp_synced < renamed && renamed < dir_synced,
        "file sync, rename, directory sync:\n{}",
        lines.join("\n")
    );
    position(&lines, "rename to x.state", |l| {
        l.contains("rename") && l.contains(&format!("{run}/x.state\""))
    });
    assert!(
        !lines
            .iter()
            .any(|l| l.contains("sync(") && l.contains(run.as_str())),
        "nothing under run/ is synced:\n{}",
        lines.join("\n")
    );
}

/// Issue #11: a new session directory and the `latest` symlink are made durable: the data
/// directory is synced after both entries are made (and its parent, when the data directory is
/// new). On the old code nothing was synced.
#[test]
fn session_directory_and_latest_are_synced() {
    if let Some(dir) = std::env::var_os("HARMONY_TEST_SESSION") {
        let s = harmony::logger::session::Session::create(&PathBuf::from(dir)).unwrap();
        assert_eq!(s.sync_error, None);
        return;
    }
    if !strace_available() {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let parent = d.path().canonicalize().unwrap();
    let data = parent.join("data");
    let lines = strace_helper(
        "session_directory_and_latest_are_synced",
        ("HARMONY_TEST_SESSION", &data),
        "openat,fsync,fdatasync,mkdir,mkdirat,symlink,symlinkat,rename,renameat,renameat2",
    );
    let data_s = data.display().to_string();
    let latest = position(&lines, "rename to latest", |l| {
        l.contains("rename") && l.contains(&format!("{data_s}/latest\""))
    });
    let made = position(&lines, "mkdir of the session", |l| {
        l.contains("mkdir") && l.contains(&format!("\"{data_s}/"))
    });
    let data_synced = position(&lines, "fsync of the data directory", |l| {
        l.contains("fsync(") && l.contains(&format!("<{data_s}>)"))
    });
    let parent_synced = position(&lines, "fsync of the data directory's parent", |l| {
        l.contains("fsync(") && l.contains(&format!("<{}>)", parent.display()))
    });
    assert!(
        made < latest && latest < data_synced && made < parent_synced,
        "{}",
        lines.join("\n")
    );
}

/// A per-thread strace file's calls that can touch a disk: seconds since the epoch and the
/// call. Calls on the kernel's pseudo file systems are left out: the C library's allocator
/// reads `/sys/devices/system/cpu/online` once in a thread that first allocates (glibc's, also
/// qemu-user's own on the aarch64 runs), and devices are not the card.
fn calls_of(file: &Path) -> Vec<(f64, String)> {
    let pseudo = ["\"/sys/", "\"/proc/", "\"/dev/"];
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.contains(" --- ") && !l.contains(" +++ "))
        .filter(|l| !pseudo.iter().any(|p| l.contains(p)))
        .filter_map(|l| {
            let (t, rest) = l.split_once(' ')?;
            Some((t.parse().ok()?, rest.to_owned()))
        })
        .collect()
}

fn board(dir: &Path, key: &Path) -> PathBuf {
    let text = harmony::board::SIM_BOARD
        .replace(
            "data_dir = \"harmony-data\"",
            &format!("data_dir = \"{}\"", dir.join("data").display()),
        )
        .replace(
            "run_dir = \"harmony-data/run\"",
            &format!("run_dir = \"{}\"", dir.join("run").display()),
        )
        .replace(
            "accept_unsigned_commands = true",
            &format!("signing_key = \"{}\"\nsigning_save_s = 1.0", key.display()),
        )
        .replace(
            "link = \"harmony-data/radio\"",
            &format!("link = \"{}\"", dir.join("radio").display()),
        );
    let p = dir.join("board.toml");
    std::fs::write(&p, format!("{text}\n[logger]\nmin_free_mib = 1\n")).unwrap();
    p
}

fn metric(run: &Path, p: &str, m: &str) -> u64 {
    use harmony::control::state_files::{read_state_file, state_path};
    read_state_file(&state_path(run, p))
        .ok()
        .and_then(|s| s.get(&format!("metric.{m}")).and_then(|v| v.parse().ok()))
        .unwrap_or(0)
}

/// Issue #11: in the running firmware (sim board, signing on, saved every second, a free-space
/// floor) the logger thread makes no file-system call at all during its whole life, and the
/// uplink thread none while running: no open, stat, statfs, fsync, rename or unlink. The
/// writer thread writes and syncs the data files; the housekeeping pool's workers do the
/// statvfs, the manifest and the signing-state saves. Seen per thread with `strace -ff`, the
/// threads named through /proc. On the old code the logger thread made the statvfs and the
/// manifest's stat calls itself (and before that the uplink synced its timestamp file).
#[test]
fn logger_and_uplink_threads_make_no_file_system_calls() {
    if !strace_available() {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().canonicalize().unwrap();
    let key = dir.join("uplink.key");
    std::fs::write(&key, [7u8; 32]).unwrap();
    std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let b = board(&dir, &key);
    let traces = dir.join("trace");
    std::fs::create_dir(&traces).unwrap();
    let calls = "%file,fsync,fdatasync,fstatfs,getdents64,ftruncate,sync_file_range,syncfs";
    let mut child = KillOnDrop(
        Command::new("strace")
            .args([
                "-f",
                "-ff",
                "-ttt",
                "-qq",
                "-e",
                &format!("trace={calls}"),
                "-o",
            ])
            .arg(traces.join("t"))
            .arg(harmony_bin())
            .args(["run", "--board"])
            .arg(&b)
            .current_dir(&dir)
            .env_remove("HARMONY_BOARD")
            .env_remove("HARMONY_RUN_DIR")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let run = dir.join("run");
    let hk = |m: &str| metric(&run, "housekeeping", m);
    assert!(
        wait_until(secs(40), || hk("signing-state.runs") >= 3
            && hk("free-space.runs") >= 2
            && hk("manifest.runs") >= 2
            && metric(&run, "logger", "records_written") > 100),
        "the jobs ran: signing-state {} free-space {} manifest {}",
        hk("signing-state.runs"),
        hk("free-space.runs"),
        hk("manifest.runs")
    );
    // Name every thread while the process is alive (a TID's comm is its thread's name).
    let mut threads: Vec<(String, PathBuf)> = Vec::new();
    let mut pid = None;
    for e in std::fs::read_dir(&traces).unwrap() {
        let p = e.unwrap().path();
        let tid = p.extension().unwrap().to_string_lossy().into_owned();
        let comm = std::fs::read_to_string(format!("/proc/{tid}/comm")).unwrap_or_default();
        let comm = comm.trim().to_owned();
        if comm == "harmony" {
            pid = tid.parse::<i32>().ok();
        }
        threads.push((comm, p));
    }
    let stopped_at = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid.expect("the main thread")),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert!(
        wait_exit(&mut child, secs(20)).is_some(),
        "the firmware stopped"
    );
    let of = |name: &str| -> Vec<(f64, String)> {
        let files: Vec<&PathBuf> = threads
            .iter()
            .filter(|(n, _)| n == name || n.starts_with(&format!("{name}-")))
            .map(|(_, p)| p)
            .collect();
        assert!(!files.is_empty(), "no thread named {name}: {threads:?}");
        files.iter().flat_map(|p| calls_of(p)).collect()
    };
    let logger = of("logger");
    assert!(
        logger.is_empty(),
        "the logger thread made file-system calls: {logger:#?}"
    );
    // At stop the simulated radio removes its link (sim board only); while running, nothing.
    let uplink: Vec<_> = of("uplink")
        .into_iter()
        .filter(|(t, _)| *t < stopped_at)
        .collect();
    assert!(
        uplink.is_empty(),
        "the uplink thread made file-system calls: {uplink:#?}"
    );
    // The calls happened, where they belong.
    let hk_calls: Vec<String> = of("housekeeping").into_iter().map(|(_, c)| c).collect();
    let has = |v: &[String], s: &str| v.iter().any(|c| c.contains(s));
    for what in [
        "statfs(",
        "uplink-signing.tmp",
        "manifest.tmp",
        "fsync(",
        "rename(",
    ] {
        assert!(
            has(&hk_calls, what) || (what == "rename(" && has(&hk_calls, "renameat")),
            "housekeeping: no {what}"
        );
    }
    let writer: Vec<String> = of("log-writer").into_iter().map(|(_, c)| c).collect();
    assert!(has(&writer, "can.000.log") && has(&writer, "sync("));
}
