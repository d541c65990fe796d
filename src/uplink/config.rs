//! `[uplink]` in a board file: the telemetry radio, the byte budget, the stream rates and
//! priorities, and the signing key.
//!
//! ```toml
//! [uplink]
//! device = "/dev/ttyUSB0"      # or [uplink.sim] for a pseudo-terminal radio
//! baud = 57600
//! system_id = 1
//! budget_percent = 50          # of baud / 10 bytes per second
//! signing_key = "/var/lib/harmony/uplink.key"     # 32 raw bytes, mode 0600
//! signing_state = "/var/lib/harmony/uplink-signing.state"  # default: in data_dir
//! accept_unsigned_commands = false  # without a key: obey anyone on the channel (sim only)
//! [uplink.rates]               # Hz; 0 switches a stream off
//! gps = 5.0
//! [uplink.sim]
//! link = "harmony-data/radio"  # symlink to the ground side of the simulated radio
//! ```

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::protocol::Stream;
use super::signing;

/// Lowest budget accepted: a heartbeat per second plus room for an error message.
pub const MIN_BUDGET_BPS: f64 = 120.0;
/// The signing state's file name in the data directory (the default `signing_state`).
pub const DEFAULT_STATE_FILE: &str = "uplink-signing.state";
/// Highest rate a stream may be given (per second).
pub const MAX_STREAM_HZ: f64 = 50.0;

/// The telemetry radio.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct UplinkSection {
    /// The radio's serial device, e.g. `/dev/ttyUSB0`; not with `[uplink.sim]`.
    pub device: Option<PathBuf>,
    /// The radio's air-side serial rate; the budget is a share of `baud / 10` bytes/s.
    #[serde(default = "default_baud")]
    pub baud: u32,
    /// This vehicle's MAVLink system id (1..=254; 255 is the ground station's).
    #[serde(default = "default_system_id")]
    pub system_id: u8,
    /// Share of the link's bytes per second the uplink may use (the radio needs the rest for
    /// its own framing, retransmissions and the ground's traffic).
    #[serde(default = "default_budget_percent")]
    pub budget_percent: f64,
    /// A file of exactly 32 raw bytes, readable by the service user only. When set, every
    /// message sent is signed and unsigned, badly signed or replayed ones are rejected.
    pub signing_key: Option<PathBuf>,
    /// Where the signing timestamp and the replay table are kept (default:
    /// `<data_dir>/uplink-signing.state`; the data partition, not the read-only /etc).
    pub signing_state: Option<PathBuf>,
    /// Without a usable key, obey unsigned commands (default false: without a key the uplink
    /// sends telemetry and refuses every command). The simulated board sets it; it is
    /// warned about loudly at start. With a key every command must be signed regardless.
    #[serde(default)]
    pub accept_unsigned_commands: bool,
    /// Seconds between saves of the signing timestamp while running (default 30, at most 60:
    /// the start-up margin is one minute).
    #[serde(default = "default_signing_save_s")]
    pub signing_save_s: f64,
    /// The link id in outgoing signatures.
    #[serde(default)]
    pub link_id: u8,
    /// Messages per second of each stream.
    #[serde(default)]
    pub rates: RateSection,
    /// Stream names, most important first (default: gps, fc, range, sys, can, health).
    pub priority: Option<Vec<String>>,
    /// The rangefinder's valid span, reported in DISTANCE_SENSOR (default: LIDAR-Lite v3).
    #[serde(default = "default_range_min")]
    pub range_min_cm: u16,
    #[serde(default = "default_range_max")]
    pub range_max_cm: u16,
    /// A simulated radio: a pseudo-terminal pair made at start.
    pub sim: Option<UplinkSimSection>,
}

/// `[uplink.rates]`: messages per second; absent = the stream's default, 0 = off.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RateSection {
    pub gps: Option<f64>,
    pub range: Option<f64>,
    pub can: Option<f64>,
    pub fc: Option<f64>,
    pub sys: Option<f64>,
    pub health: Option<f64>,
}

/// `[uplink.sim]`.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct UplinkSimSection {
    /// A symlink made to the ground side of the pseudo-terminal, for `harmony ground --port`.
    pub link: Option<PathBuf>,
}

fn default_baud() -> u32 {
    57600
}

fn default_system_id() -> u8 {
    1
}

fn default_budget_percent() -> f64 {
    50.0
}

fn default_signing_save_s() -> f64 {
    signing::PERSIST_EVERY.as_secs_f64()
}

fn default_range_min() -> u16 {
    5
}

fn default_range_max() -> u16 {
    4000
}

impl Default for UplinkSection {
    fn default() -> Self {
        UplinkSection {
            device: None,
            baud: default_baud(),
            system_id: default_system_id(),
            budget_percent: default_budget_percent(),
            signing_key: None,
            signing_state: None,
            accept_unsigned_commands: false,
            signing_save_s: default_signing_save_s(),
            link_id: 0,
            rates: RateSection::default(),
            priority: None,
            range_min_cm: default_range_min(),
            range_max_cm: default_range_max(),
            sim: None,
        }
    }
}

impl RateSection {
    /// The configured rate of `s`, or its default.
    pub fn hz(&self, s: Stream) -> f64 {
        let v = match s {
            Stream::Gps => self.gps,
            Stream::Range => self.range,
            Stream::Can => self.can,
            Stream::Fc => self.fc,
            Stream::Sys => self.sys,
            Stream::Health => self.health,
        };
        v.unwrap_or(s.default_hz())
    }
}

impl UplinkSection {
    /// Bytes per second the uplink may write.
    pub fn budget_bps(&self) -> f64 {
        self.baud as f64 / 10.0 * self.budget_percent / 100.0
    }

    /// Where the signing state is persisted (when a key is configured), for `data_dir`.
    pub fn signing_state_path(&self, data_dir: &Path) -> Option<PathBuf> {
        self.signing_key.as_ref()?;
        Some(
            self.signing_state
                .clone()
                .unwrap_or_else(|| data_dir.join(DEFAULT_STATE_FILE)),
        )
    }

    /// Streams, most important first.
    pub fn priority_order(&self) -> Vec<Stream> {
        match &self.priority {
            Some(names) => names.iter().filter_map(|n| Stream::parse(n)).collect(),
            None => Stream::DEFAULT_PRIORITY.to_vec(),
        }
    }

    /// Checks values; `Err((field, message))` names the offending field (e.g. `uplink.baud`).
    pub fn validate(&self) -> Result<(), (String, String)> {
        let bad = |f: &str, m: String| Err((f.to_owned(), m));
        match (&self.device, &self.sim) {
            (None, None) => {
                return bad(
                    "uplink.device",
                    "missing (give the radio's serial device, e.g. /dev/ttyUSB0, or add [uplink.sim])"
                        .into(),
                );
            }
            (Some(_), Some(_)) => {
                return bad(
                    "uplink.sim",
                    "give either uplink.device or [uplink.sim], not both".into(),
                );
            }
            (Some(d), None) if d.as_os_str().is_empty() => {
                return bad("uplink.device", "must not be empty".into());
            }
            _ => {}
        }
        if !(self.signing_save_s > 0.0 && self.signing_save_s <= 60.0) {
            return bad(
                "uplink.signing_save_s",
                format!(
                    "{} s: must be more than 0 and at most 60 (a restart starts one minute past the saved timestamp)",
                    self.signing_save_s
                ),
            );
        }
        if crate::drivers::serial::baud_rate(self.baud).is_none() {
            return bad(
                "uplink.baud",
                format!(
                    "{} is not one of {:?}",
                    self.baud,
                    crate::drivers::serial::HUNT_RATES
                ),
            );
        }
        if self.system_id == 0 || self.system_id == 255 {
            return bad(
                "uplink.system_id",
                format!(
                    "{} is outside 1..=254 (0 is broadcast, 255 the ground station)",
                    self.system_id
                ),
            );
        }
        if !(self.budget_percent > 0.0 && self.budget_percent <= 100.0) {
            return bad(
                "uplink.budget_percent",
                format!("{} is outside (0, 100]", self.budget_percent),
            );
        }
        if self.budget_bps() < MIN_BUDGET_BPS {
            return bad(
                "uplink.budget_percent",
                format!(
                    "{:.0} bytes/s at {} baud is less than the {MIN_BUDGET_BPS} bytes/s a heartbeat and error messages need",
                    self.budget_bps(),
                    self.baud
                ),
            );
        }
        for s in Stream::ALL {
            let hz = self.rates.hz(s);
            if !(0.0..=MAX_STREAM_HZ).contains(&hz) {
                return bad(
                    &format!("uplink.rates.{}", s.name()),
                    format!("{hz} is outside 0..={MAX_STREAM_HZ} messages per second"),
                );
            }
        }
        if let Some(p) = &self.priority {
            for n in p {
                if Stream::parse(n).is_none() {
                    return bad(
                        "uplink.priority",
                        format!("unknown stream '{n}' (streams: {})", Stream::names()),
                    );
                }
            }
            for s in Stream::ALL {
                if p.iter().filter(|n| Stream::parse(n) == Some(s)).count() != 1 {
                    return bad(
                        "uplink.priority",
                        format!(
                            "must list every stream exactly once ({}); '{}' is missing or repeated",
                            Stream::names(),
                            s.name()
                        ),
                    );
                }
            }
        }
        if self.range_min_cm >= self.range_max_cm {
            return bad(
                "uplink.range_min_cm",
                format!(
                    "{} is not below range_max_cm ({})",
                    self.range_min_cm, self.range_max_cm
                ),
            );
        }
        if self.signing_key.is_none() && self.signing_state.is_some() {
            return bad(
                "uplink.signing_state",
                "set without uplink.signing_key".into(),
            );
        }
        Ok(())
    }

    /// Checks the fields that name paths against this machine (issue #11: before anything
    /// starts; [`validate`](Self::validate) only looks at values). `data_dir` holds the
    /// signing state by default.
    pub fn check_host(&self, data_dir: &Path) -> Result<(), (String, String)> {
        let bad = |f: &str, m: String| Err((f.to_owned(), m));
        if let Some(d) = &self.device
            && let Err(m) = crate::board::host::device(d)
        {
            return bad("uplink.device", m);
        }
        if let Some(k) = &self.signing_key {
            // A missing key is not a board error: the uplink runs telemetry-only and says so
            // (the recording must not depend on it). A key that is there but wrong is.
            if let Err(e) = signing::load_key(k)
                && !e.is_missing()
            {
                return bad("uplink.signing_key", e.to_string());
            }
        }
        if let Some(state) = self.signing_state_path(data_dir) {
            // The default place is in data_dir, made at start; a chosen one must exist.
            let chosen = self.signing_state.is_some();
            if let Err(m) = crate::board::host::writable_file(&state, !chosen) {
                return bad("uplink.signing_state", m);
            }
        }
        if let Some(l) = self.sim.as_ref().and_then(|s| s.link.as_ref())
            && let Err(m) = crate::board::host::link(l)
        {
            return bad("uplink.sim.link", m);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn sim() -> UplinkSection {
        UplinkSection {
            sim: Some(UplinkSimSection::default()),
            ..Default::default()
        }
    }

    #[test]
    fn defaults_are_valid_and_budget_is_half_the_link() {
        let c = sim();
        c.validate().unwrap();
        assert_eq!(c.budget_bps(), 2880.0);
        assert_eq!(c.priority_order(), Stream::DEFAULT_PRIORITY.to_vec());
    }

    #[test]
    fn bad_values_name_their_field() {
        let field = |c: UplinkSection| c.validate().unwrap_err().0;
        assert_eq!(field(UplinkSection::default()), "uplink.device");
        assert_eq!(
            field(UplinkSection {
                baud: 1234,
                ..sim()
            }),
            "uplink.baud"
        );
        assert_eq!(
            field(UplinkSection {
                system_id: 0,
                ..sim()
            }),
            "uplink.system_id"
        );
        assert_eq!(
            field(UplinkSection {
                baud: 4800,
                budget_percent: 20.0,
                ..sim()
            }),
            "uplink.budget_percent"
        );
        let mut c = sim();
        c.rates.can = Some(500.0);
        assert_eq!(field(c), "uplink.rates.can");
        let c = UplinkSection {
            priority: Some(vec!["gps".into(), "gps".into()]),
            ..sim()
        };
        assert_eq!(field(c), "uplink.priority");
    }

    #[test]
    fn signing_key_must_be_private_and_32_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let k = dir.path().join("key");
        std::fs::write(&k, [7u8; 32]).unwrap();
        std::fs::set_permissions(&k, std::fs::Permissions::from_mode(0o644)).unwrap();
        let c = UplinkSection {
            signing_key: Some(k.clone()),
            ..sim()
        };
        c.validate().unwrap();
        let (f, m) = c.check_host(dir.path()).unwrap_err();
        assert_eq!(f, "uplink.signing_key");
        assert!(m.contains("group or others"), "{m}");
        std::fs::set_permissions(&k, std::fs::Permissions::from_mode(0o600)).unwrap();
        c.check_host(dir.path()).unwrap();
        std::fs::write(&k, [7u8; 31]).unwrap();
        let (f, m) = c.check_host(dir.path()).unwrap_err();
        assert_eq!(f, "uplink.signing_key");
        assert!(m.contains("31 bytes"), "{m}");
        assert_eq!(
            c.signing_state_path(Path::new("/data")).unwrap(),
            Path::new("/data").join(DEFAULT_STATE_FILE)
        );
        // Issue #11: a configured key that is missing is no board error (telemetry-only).
        std::fs::remove_file(&k).unwrap();
        c.check_host(dir.path()).unwrap();
    }
}
