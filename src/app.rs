//! Running a processor tree as the firmware process: run directory, state files, control
//! socket and signal thread around the tree, one shared exit path.
//!
//! Order: the run directory first, then the state-file writer and the control socket, then
//! the signal thread, then the tree on the calling thread. When the tree returns (stopped by a
//! signal, `harmony ctl stop`, a processor, or a failure) the infrastructure stops in reverse
//! and the state files are written one last time, so they say `stopped`.

use std::path::PathBuf;
use std::sync::Arc;

use crate::concurrency::state::now_ms;
use crate::concurrency::{Outcome, Processor, Registry, StopReason, run_tree};
use crate::control::os_signals::{self, Installed};
use crate::control::rundir::{self, RunDirError};
use crate::control::server::{ControlServer, Identity, ServerError};
use crate::control::state_files::StateFiles;

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

/// Runs `root` with the firmware's infrastructure around it. `signals` are the handlers
/// installed at the top of `main` (none in tests that drive the tree themselves).
pub fn run(
    cfg: &AppConfig,
    registry: Arc<Registry>,
    root: &mut dyn Processor,
    signals: Option<Installed>,
) -> Result<Finished, AppError> {
    rundir::prepare(&cfg.run_dir, cfg.socket_group.as_deref())?;
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
