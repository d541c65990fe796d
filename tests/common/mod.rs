//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Polls `cond` every 10 ms until it holds or `timeout` passes.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let t0 = Instant::now();
    while t0.elapsed() < timeout {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    cond()
}

/// Generous time limits when the tests run under qemu-user (aarch64 target).
pub fn slow_factor() -> u32 {
    if cfg!(target_arch = "aarch64") && std::env::var_os("HARMONY_NATIVE").is_none() {
        5
    } else {
        1
    }
}

pub fn secs(s: u64) -> Duration {
    Duration::from_secs(s) * slow_factor()
}

pub fn harmony_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_harmony"))
}

/// `harmony ARGS` with its data under `dir`.
pub fn harmony(dir: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(harmony_bin());
    c.args(args)
        .current_dir(dir)
        .env_remove("HARMONY_BOARD")
        .env_remove("HARMONY_RUN_DIR");
    c
}

/// A child process killed when dropped, so a failing test leaves no firmware running.
pub struct KillOnDrop(pub Child);

impl std::ops::Deref for KillOnDrop {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for KillOnDrop {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Spawns a long-running harmony command with output captured to files in `dir`; killed when
/// the returned guard is dropped.
pub fn spawn_harmony(dir: &Path, args: &[&str]) -> KillOnDrop {
    let out = std::fs::File::create(dir.join("stdout.txt")).unwrap();
    let err = std::fs::File::create(dir.join("stderr.txt")).unwrap();
    KillOnDrop(
        harmony(dir, args)
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .spawn()
            .expect("spawn harmony"),
    )
}

/// Waits for a child to exit, up to `timeout`; kills it if it does not.
pub fn wait_exit(child: &mut Child, timeout: Duration) -> Option<std::process::ExitStatus> {
    let t0 = Instant::now();
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return Some(s);
        }
        if t0.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// The `state=` value of a processor's state file.
pub fn state_of(run_dir: &Path, name: &str) -> Option<String> {
    harmony::control::state_files::read_state_file(&harmony::control::state_files::state_path(
        run_dir, name,
    ))
    .ok()
    .and_then(|m| m.get("state").cloned())
}

pub fn send_signal(child: &Child, sig: nix::sys::signal::Signal) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), sig).unwrap();
}

pub fn stderr_of(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("stderr.txt")).unwrap_or_default()
}

/// Whether the tests run under CI (`CI=true`, as CI systems set it): there a missing
/// prerequisite is a failure, not a skip.
pub fn under_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v.eq_ignore_ascii_case("true") || v == "1")
}

/// Issue #11 ("tests that cannot fail"): the one way a test gives up for want of a tool, a
/// fixture or a privilege. Under CI (`CI=true`) it panics, so the test fails; elsewhere it
/// prints `SKIPPED: <what>` and the caller returns. `what` says what is missing and where it
/// comes from (e.g. "tmux (scripts/setup.sh installs it)").
pub fn skip(what: &str) {
    assert!(
        !under_ci(),
        "missing under CI (CI=true), so this test fails instead of skipping: {what}"
    );
    eprintln!("SKIPPED: {what}");
}

/// `true` when `available`; otherwise [`skip`] (a failure under CI) and `false`:
/// `if !require_or_skip(have_tmux(), "tmux (scripts/setup.sh)") { return; }`.
pub fn require_or_skip(available: bool, what: &str) -> bool {
    if !available {
        skip(what);
    }
    available
}

/// An empty directory on a read-only file system, for refusals (issue #11): a read-only tmpfs
/// mounted on a temporary directory when running as root (unmounted when dropped), else a
/// read-only mount point found in /proc/self/mountinfo. `None` if there is neither.
pub struct ReadOnlyDir {
    pub path: PathBuf,
    mounted: Option<tempfile::TempDir>,
}

impl Drop for ReadOnlyDir {
    fn drop(&mut self) {
        if let Some(d) = &self.mounted {
            let _ = Command::new("umount").arg("-l").arg(d.path()).status();
        }
    }
}

pub fn read_only_dir() -> Option<ReadOnlyDir> {
    if nix::unistd::geteuid().is_root() {
        let d = tempfile::tempdir().ok()?;
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "ro,size=64k", "tmpfs"])
            .arg(d.path())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            return Some(ReadOnlyDir {
                path: d.path().to_owned(),
                mounted: Some(d),
            });
        }
    }
    // Not root (or no mount allowed): any read-only mount point that is a directory.
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    info.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let ro = f.get(5)?.split(',').any(|o| o == "ro");
            let p = PathBuf::from(f.get(4)?);
            (ro && p.is_dir()
                && nix::sys::statvfs::statvfs(&p)
                    .is_ok_and(|s| s.flags().contains(nix::sys::statvfs::FsFlags::ST_RDONLY)))
            .then_some(p)
        })
        .next()
        .map(|path| ReadOnlyDir {
            path,
            mounted: None,
        })
}
