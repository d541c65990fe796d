//! `harmony top`, the operator's terminal UI (issue #6). NOT IMPLEMENTED YET: placeholder that
//! keeps the interface the binary uses.

use std::path::PathBuf;

/// Command line of `harmony top`.
#[derive(clap::Args, Debug)]
pub struct TopArgs {
    /// Run directory of the firmware (default: $HARMONY_RUN_DIR, then the sim board's).
    #[arg(long, env = "HARMONY_RUN_DIR")]
    pub run_dir: Option<PathBuf>,
}

/// Why the TUI stopped.
#[derive(Debug, thiserror::Error)]
pub enum TuiError {
    #[error("harmony top is not implemented yet")]
    NotImplemented,
}

/// Runs the TUI until the operator quits; returns the process exit code.
pub fn main(_args: TopArgs) -> Result<u8, TuiError> {
    Err(TuiError::NotImplemented)
}
