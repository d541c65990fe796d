//! The run directory: control socket and state files, private to the service user (and an
//! optional group, so operators in that group can use `harmony ctl`).
//!
//! One firmware per run directory (issue #11): [`RunDir::hold`] takes an exclusive `flock(2)`
//! on `RUN_DIR/lock` before anything else of a start happens, in particular before the data
//! directory is touched, so a second `harmony run` is refused without making a session or
//! moving `latest`. The kernel drops the lock when the process ends however it ends (a
//! `kill -9`, a panic, a power cut clears `/run` anyway), so there is no stale lock to clean
//! up; the file itself stays (removing a lock file races with the next locker) and holds the
//! holder's pid for the refusal message.

use std::fs;
use std::io::{self, Read, Seek, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};
use nix::unistd::{Gid, Group, chown};

/// The state files' subdirectory of the run directory.
pub const STATE_DIR: &str = "state";
/// The lock file in the run directory.
pub const LOCK_FILE: &str = "lock";

/// Why the run directory or its socket could not be prepared.
#[derive(Debug, thiserror::Error)]
pub enum RunDirError {
    #[error("cannot create run directory {path}: {source}")]
    Create { path: PathBuf, source: io::Error },
    #[error("cannot set permissions on {path}: {source}")]
    Permissions { path: PathBuf, source: io::Error },
    #[error("group '{0}' (board setting socket_group) does not exist on this system")]
    NoSuchGroup(String),
    #[error("cannot look up group '{group}': {source}")]
    GroupLookup { group: String, source: nix::Error },
    #[error("cannot give {path} to group '{group}': {source} (is the service user in that group?)")]
    Chown {
        path: PathBuf,
        group: String,
        source: nix::Error,
    },
    #[error("cannot lock {path}: {source}")]
    Lock { path: PathBuf, source: io::Error },
    #[error(
        "another harmony is running with run directory {run_dir} ({}holding {lock}); stop it first (harmony ctl --run-dir {run_dir} stop)",
        pid.map(|p| format!("pid {p}, ")).unwrap_or_default()
    )]
    Busy {
        run_dir: PathBuf,
        lock: PathBuf,
        pid: Option<u32>,
    },
}

/// Resolves a group name to its id.
pub fn group_id(name: &str) -> Result<Gid, RunDirError> {
    match Group::from_name(name) {
        Ok(Some(g)) => Ok(g.gid),
        Ok(None) => Err(RunDirError::NoSuchGroup(name.to_owned())),
        Err(source) => Err(RunDirError::GroupLookup {
            group: name.to_owned(),
            source,
        }),
    }
}

/// Sets `mode` on `path` and, with a group, hands it to that group.
pub fn restrict(path: &Path, mode: u32, group: Option<(&str, Gid)>) -> Result<(), RunDirError> {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(|source| {
        RunDirError::Permissions {
            path: path.to_owned(),
            source,
        }
    })?;
    if let Some((name, gid)) = group {
        chown(path, None, Some(gid)).map_err(|source| RunDirError::Chown {
            path: path.to_owned(),
            group: name.to_owned(),
            source,
        })?;
    }
    Ok(())
}

/// Creates the run directory and its `state/` subdirectory: mode 0700, or 0750 with a group.
pub fn prepare(run_dir: &Path, group: Option<&str>) -> Result<(), RunDirError> {
    let gid = group.map(|g| group_id(g).map(|id| (g, id))).transpose()?;
    let mode = if gid.is_some() { 0o750 } else { 0o700 };
    for d in [run_dir.to_owned(), run_dir.join(STATE_DIR)] {
        fs::create_dir_all(&d).map_err(|source| RunDirError::Create {
            path: d.clone(),
            source,
        })?;
        restrict(&d, mode, gid)?;
    }
    Ok(())
}

/// A run directory held by this process: prepared, and its lock taken. The lock goes when this
/// is dropped or the process ends.
#[derive(Debug)]
pub struct RunDir {
    path: PathBuf,
    _lock: Flock<fs::File>,
}

impl RunDir {
    /// Prepares `run_dir` ([`prepare`]) and takes its lock without waiting: a firmware already
    /// holding it is [`RunDirError::Busy`], with its pid.
    pub fn hold(run_dir: &Path, group: Option<&str>) -> Result<RunDir, RunDirError> {
        prepare(run_dir, group)?;
        let path = run_dir.join(LOCK_FILE);
        let lock_err = |source| RunDirError::Lock {
            path: path.clone(),
            source,
        };
        let file = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o644)
            .custom_flags(nix::libc::O_NOFOLLOW)
            .open(&path)
            .map_err(lock_err)?;
        let mut lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(l) => l,
            Err((mut file, nix::errno::Errno::EWOULDBLOCK)) => {
                return Err(RunDirError::Busy {
                    run_dir: run_dir.to_owned(),
                    lock: path.clone(),
                    pid: read_pid(&mut file),
                });
            }
            Err((_, e)) => return Err(lock_err(e.into())),
        };
        // Ours now: say who holds it (for the next one's refusal message).
        lock.set_len(0).map_err(lock_err)?;
        lock.rewind().map_err(lock_err)?;
        lock.write_all(format!("{}\n", std::process::id()).as_bytes())
            .map_err(lock_err)?;
        Ok(RunDir {
            path: run_dir.to_owned(),
            _lock: lock,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// The pid written by the lock's holder (a few bytes; anything else is no pid).
fn read_pid(f: &mut fs::File) -> Option<u32> {
    let mut buf = [0u8; 16];
    let n = f.read(&mut buf).ok()?;
    std::str::from_utf8(&buf[..n]).ok()?.trim().parse().ok()
}

/// Where `harmony ctl` and `harmony top` look for a running firmware when not told: the sim
/// board's run directory if its socket exists (a laptop), else `/run/harmony` (the Pi).
pub fn default_run_dir() -> PathBuf {
    let sim = crate::board::Board::sim().board.run_dir;
    if crate::control::server::socket_path(&sim).exists() {
        sim
    } else {
        PathBuf::from("/run/harmony")
    }
}
