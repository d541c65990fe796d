//! `harmony ground` (placeholder until issue #5 lands).

use std::path::PathBuf;

/// Command line of `harmony ground`.
#[derive(clap::Args, Debug)]
pub struct GroundArgs {
    /// The ground radio's serial device.
    #[arg(long)]
    pub port: PathBuf,
}

/// Why the ground station stopped.
#[derive(Debug, thiserror::Error)]
pub enum GroundError {
    #[error("harmony ground is not implemented yet")]
    NotImplemented,
}

/// Runs the ground station; returns the process exit code.
pub fn main(_args: GroundArgs) -> Result<u8, GroundError> {
    Err(GroundError::NotImplemented)
}
