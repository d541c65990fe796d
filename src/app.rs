//! Running a processor tree as the firmware process: run directory, state files, control
//! socket and signal thread around the tree, one shared exit path.
//!
//! Order (issue #11: a refused start leaves nothing behind): the caller has checked the board
//! against the machine ([`crate::board::Board::check_host`]) and holds the run directory
//! ([`RunDir::hold`]: one firmware per run directory) *before* it touches the data directory;
//! a session made for a start that is then refused is a [`Provisional`] one, removed again
//! with `latest` put back. Then the state-file writer and the control socket, the signal
//! thread, and the tree on the calling thread. When the tree returns (stopped by a signal,
//! `harmony ctl stop`, a processor, or a failure) the infrastructure stops in reverse and the
//! state files are written one last time, so they say `stopped`.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::concurrency::state::now_ms;
use crate::concurrency::{Outcome, Processor, Registry, StopReason, run_tree};
use crate::control::os_signals::{self, Installed};
use crate::control::rundir::{RunDir, RunDirError};
use crate::control::server::{ControlServer, Identity, ServerError};
use crate::control::state_files::StateFiles;
use crate::logger::session::{Session, SessionError};

/// Where the process keeps its control socket and state files.
#[derive(Clone, Debug)]
pub struct AppConfig {
    pub board: String,
    pub run_dir: PathBuf,
    /// Group allowed to use the control socket (mode 0660 instead of 0600).
    pub socket_group: Option<String>,
}

/// Why the firmware could not start.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    RunDir(#[from] RunDirError),
    #[error(transparent)]
    Control(#[from] ServerError),
    #[error("cannot start a service thread: {0}")]
    Spawn(#[from] std::io::Error),
}

/// How a run ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finished {
    pub outcome: Outcome,
    pub reason: Option<StopReason>,
}

impl Finished {
    /// 0 for a requested or finished stop, 1 for a failure.
    pub fn exit_code(&self) -> i32 {
        match (&self.outcome, &self.reason) {
            (_, Some(StopReason::Failure(_))) => 1,
            (Outcome::Completed, _) => 0,
            _ => 1,
        }
    }
}

/// Runs `root` with the firmware's infrastructure around it, in the run directory `held` by
/// this process. `signals` are the handlers installed at the top of `main` (none in tests that
/// drive the tree themselves). `Err` means the tree never started.
pub fn run(
    cfg: &AppConfig,
    held: &RunDir,
    registry: Arc<Registry>,
    root: &mut dyn Processor,
    signals: Option<Installed>,
) -> Result<Finished, AppError> {
    debug_assert_eq!(held.path(), cfg.run_dir.as_path());
    let states = StateFiles::start(registry.clone(), &cfg.run_dir)?;
    let id = Identity {
        board: cfg.board.clone(),
        version: crate::version::short(),
        started_ms: now_ms(),
    };
    let control = match ControlServer::start(
        registry.clone(),
        &cfg.run_dir,
        cfg.socket_group.as_deref(),
        id,
    ) {
        Ok(c) => c,
        Err(e) => {
            states.finish();
            return Err(e.into());
        }
    };
    let sig_thread = match signals {
        Some(s) => Some(s.start(registry.clone())?),
        None => None,
    };
    let notifier = crate::control::notify::Notifier::start(registry.clone())?;
    log::info!(
        "harmony {} started (board {}, run dir {})",
        crate::version::short(),
        cfg.board,
        cfg.run_dir.display()
    );
    let outcome = run_tree(&registry, root);
    let reason = registry.stop_reason();
    log::info!("harmony stopped: {outcome:?}, reason {reason:?}");
    if let Some(n) = notifier {
        n.finish();
    }
    control.stop();
    states.finish();
    if let Some(s) = sig_thread {
        s.stop();
    }
    Ok(Finished { outcome, reason })
}

/// Installs the signal handlers; see [`os_signals`].
pub fn install_signals() -> std::io::Result<Installed> {
    os_signals::install()
}

/// A session directory made for a start that may still be refused: unless [`keep`]
/// (Self::keep) is called, dropping it removes the directory again and puts `latest` back
/// where it pointed (or removes it, if there was none), so a refused start leaves no trace in
/// the data directory.
#[derive(Debug)]
pub struct Provisional {
    dir: PathBuf,
    latest: PathBuf,
    previous: Option<PathBuf>,
    kept: bool,
}

impl Provisional {
    /// Makes the session directory under `data_dir` ([`Session::create`]), remembering
    /// `latest` first.
    pub fn session(data_dir: &Path) -> Result<(Session, Provisional), SessionError> {
        let latest = data_dir.join("latest");
        let previous = fs::read_link(&latest).ok();
        let s = Session::create(data_dir)?;
        let p = Provisional {
            dir: s.dir.clone(),
            latest,
            previous,
            kept: false,
        };
        Ok((s, p))
    }

    /// The start went through: the session stays.
    pub fn keep(mut self) {
        self.kept = true;
    }
}

impl Drop for Provisional {
    fn drop(&mut self) {
        if self.kept {
            return;
        }
        if let Err(e) = fs::remove_dir_all(&self.dir) {
            log::error!(
                "could not remove the session {} of the refused start: {e}",
                self.dir.display()
            );
        }
        // Put `latest` back the way Session::create sets it: a link made aside, renamed over.
        let restored = match &self.previous {
            Some(target) => {
                let tmp = self.latest.with_file_name(".latest.tmp");
                let _ = fs::remove_file(&tmp);
                std::os::unix::fs::symlink(target, &tmp)
                    .and_then(|()| fs::rename(&tmp, &self.latest))
            }
            None => fs::remove_file(&self.latest).or_else(|e| {
                if e.kind() == std::io::ErrorKind::NotFound {
                    Ok(())
                } else {
                    Err(e)
                }
            }),
        };
        if let Err(e) = restored {
            log::error!("could not put {} back: {e}", self.latest.display());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue #11: a provisional session that is not kept leaves the data directory as it was.
    #[test]
    fn a_session_not_kept_is_removed_and_latest_put_back() {
        let d = tempfile::tempdir().unwrap();
        let data = d.path();
        let (first, p) = Provisional::session(data).unwrap();
        p.keep();
        assert!(first.dir.is_dir());
        assert_eq!(
            fs::read_link(data.join("latest")).unwrap(),
            Path::new(&first.name)
        );
        let (second, p) = Provisional::session(data).unwrap();
        assert_ne!(second.dir, first.dir);
        assert_eq!(
            fs::read_link(data.join("latest")).unwrap(),
            Path::new(&second.name)
        );
        drop(p);
        assert!(!second.dir.exists());
        assert!(first.dir.is_dir());
        assert_eq!(
            fs::read_link(data.join("latest")).unwrap(),
            Path::new(&first.name)
        );

        // With no earlier session, `latest` goes away with it.
        let d2 = tempfile::tempdir().unwrap();
        let (s, p) = Provisional::session(d2.path()).unwrap();
        drop(p);
        assert!(!s.dir.exists());
        assert!(fs::symlink_metadata(d2.path().join("latest")).is_err());
        assert_eq!(fs::read_dir(d2.path()).unwrap().count(), 0);
    }
}
