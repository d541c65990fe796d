//! Board files: which devices a board has, where data goes, and how the firmware behaves.
//!
//! TOML with unknown fields rejected, so a typo is an error that names the field rather than a
//! silently ignored setting; the firmware does not start half-configured. `harmony run` with
//! no `--board` uses the simulated board built into the binary (the same text as
//! `boards/sim.toml`).

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// The simulated board shipped in the binary.
pub const SIM_BOARD: &str = include_str!("../boards/sim.toml");

/// Why a board file was refused.
#[derive(Debug, thiserror::Error)]
pub enum BoardError {
    #[error("cannot read board file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("board file {path}: {message}")]
    Parse { path: String, message: String },
    #[error("board file {path}: field `{field}`: {message}")]
    Invalid {
        path: String,
        field: String,
        message: String,
    },
}

/// General settings of a board.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BoardSection {
    pub name: String,
    /// Where sessions and the application log are written.
    pub data_dir: PathBuf,
    /// Control socket and state files (a tmpfs such as /run/harmony on the Pi).
    pub run_dir: PathBuf,
    /// Group allowed to use the control socket.
    #[serde(default)]
    pub socket_group: Option<String>,
    /// `error`, `warn`, `info`, `debug` or `trace`.
    #[serde(default = "default_log_level")]
    pub log_level: String,
    /// How long each processor gets to stop.
    #[serde(default = "default_stop_timeout_ms")]
    pub stop_timeout_ms: u64,
}

fn default_log_level() -> String {
    "info".into()
}

fn default_stop_timeout_ms() -> u64 {
    3000
}

/// A whole board file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Board {
    pub board: BoardSection,
}

impl Board {
    /// Parses and validates board text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Self, BoardError> {
        let b: Board = toml::from_str(text).map_err(|e| BoardError::Parse {
            path: origin.to_owned(),
            message: e.to_string(),
        })?;
        b.validate(origin)?;
        Ok(b)
    }

    /// Reads and validates a board file.
    pub fn load(path: &Path) -> Result<Self, BoardError> {
        let text = std::fs::read_to_string(path).map_err(|source| BoardError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// The built-in simulated board.
    pub fn sim() -> Self {
        Self::parse(SIM_BOARD, "boards/sim.toml (built in)")
            .expect("the built-in board file is valid (checked by a unit test)")
    }

    fn validate(&self, origin: &str) -> Result<(), BoardError> {
        let bad = |field: &str, message: String| BoardError::Invalid {
            path: origin.to_owned(),
            field: field.to_owned(),
            message,
        };
        if self.board.name.trim().is_empty() {
            return Err(bad("board.name", "must not be empty".into()));
        }
        if self.log_level().is_none() {
            return Err(bad(
                "board.log_level",
                format!(
                    "'{}' is not one of error, warn, info, debug, trace",
                    self.board.log_level
                ),
            ));
        }
        if self.board.stop_timeout_ms == 0 || self.board.stop_timeout_ms > 60_000 {
            return Err(bad(
                "board.stop_timeout_ms",
                format!("{} is outside 1..=60000", self.board.stop_timeout_ms),
            ));
        }
        Ok(())
    }

    pub fn log_level(&self) -> Option<log::LevelFilter> {
        self.board.log_level.parse().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_in_boards_are_valid() {
        Board::sim();
        Board::parse(include_str!("../boards/rpi4b.toml"), "rpi4b").unwrap();
    }

    #[test]
    fn unknown_field_is_named() {
        let e = Board::parse(
            "[board]\nname='x'\ndata_dir='d'\nrun_dir='r'\nlog_levle='info'\n",
            "t",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("log_levle"), "{e}");
    }

    #[test]
    fn bad_value_is_named() {
        let e = Board::parse(
            "[board]\nname='x'\ndata_dir='d'\nrun_dir='r'\nlog_level='loud'\n",
            "t",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("board.log_level"), "{e}");
    }
}
