//! `[uplink]` in a board file (placeholder until issue #5 lands).

use serde::Deserialize;

/// The telemetry radio.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UplinkSection {
    pub device: Option<std::path::PathBuf>,
}

impl UplinkSection {
    /// Checks values; `Err((field, message))` names the offending field (e.g. `uplink.baud`).
    pub fn validate(&self) -> Result<(), (String, String)> {
        Ok(())
    }
}
