//! Board files: which devices a board has, where data goes, and how the firmware behaves.
//!
//! TOML with unknown fields rejected, so a typo is an error that names the field rather than a
//! silently ignored setting; the firmware does not start half-configured. `harmony run` with
//! no `--board` uses the simulated board built into the binary (the same text as
//! `boards/sim.toml`).
//!
//! All or nothing (issue #11), in two steps:
//! * [`Board::parse`] / [`Board::load`]: the text and its values. No look at the disk, so the
//!   tools that only want a board's directories (`harmony ctl`, `top`, `log`) never fail, let
//!   alone panic, over what lies in the working directory.
//! * [`Board::check_host`]: every field that names a path or a group, against this machine
//!   ([`host`]). `harmony run` and `demo` call it before they lock the run directory and
//!   before they touch the data directory, so a refused start leaves nothing behind.

pub mod host;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

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
#[derive(Clone, Debug, Deserialize, Serialize)]
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
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Board {
    pub board: BoardSection,
    pub gps: Option<GpsSection>,
    pub rangefinder: Option<RangeSection>,
    pub can: Option<CanSection>,
    #[serde(default)]
    pub queues: QueueSection,
    #[serde(default)]
    pub logger: LoggerSection,
    pub uplink: Option<crate::uplink::config::UplinkSection>,
    /// Where the text came from (a path, or the built-in board), for error messages.
    #[serde(skip)]
    pub origin: String,
    #[serde(default)]
    pub processes: ProcessSection,
}

/// `[processes]`: which subtrees run as processes of their own (issue #14). A crash there (a
/// driver's SIGSEGV, an abort, an out-of-memory kill) then cannot take the logger down; the
/// child is restarted like a failed thread.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ProcessSection {
    /// The sensors (GPS, rangefinder, CAN) in a child process.
    #[serde(default)]
    pub sensors: bool,
}

/// `[logger]`: how the flash-card logger writes.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LoggerSection {
    /// Rotate each file at this size (MiB).
    #[serde(default = "default_rotate_mib")]
    pub rotate_mib: u64,
    /// `"interval"` (at most every `fsync_interval_ms`) or `"always"` (after every batch).
    #[serde(default = "default_fsync")]
    pub fsync: String,
    #[serde(default = "default_fsync_interval_ms")]
    pub fsync_interval_ms: u64,
    /// Keep this much free by deleting the oldest finished sessions (0: never delete).
    #[serde(default)]
    pub min_free_mib: u64,
    #[serde(default = "default_manifest_s")]
    pub manifest_interval_s: u64,
}

impl Default for LoggerSection {
    fn default() -> Self {
        LoggerSection {
            rotate_mib: default_rotate_mib(),
            fsync: default_fsync(),
            fsync_interval_ms: default_fsync_interval_ms(),
            min_free_mib: 0,
            manifest_interval_s: default_manifest_s(),
        }
    }
}

fn default_rotate_mib() -> u64 {
    64
}

fn default_fsync() -> String {
    "interval".into()
}

fn default_fsync_interval_ms() -> u64 {
    1000
}

fn default_manifest_s() -> u64 {
    5
}

/// `baud = 9600` or `baud = "auto"`.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum BaudSetting {
    Rate(u32),
    Word(BaudWord),
}

#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum BaudWord {
    Auto,
}

/// The GPS receiver on a UART.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct GpsSection {
    /// The UART, e.g. `/dev/serial0`; not needed with `[gps.sim]`.
    pub device: Option<PathBuf>,
    /// A rate, or `"auto"` to hunt like gpsd.
    #[serde(default = "default_baud")]
    pub baud: BaudSetting,
    /// Simulated receiver: a capture written into a pseudo-terminal.
    pub sim: Option<GpsSimSection>,
}

fn default_baud() -> BaudSetting {
    BaudSetting::Rate(9600)
}

/// `[gps.sim]`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct GpsSimSection {
    /// `builtin:NAME` or a path to an NMEA capture.
    pub capture: String,
    #[serde(default = "one")]
    pub speed: f64,
    #[serde(default = "yes", rename = "loop")]
    pub looped: bool,
}

fn one() -> f64 {
    1.0
}

fn yes() -> bool {
    true
}

/// Which rangefinder.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
pub enum RangeModel {
    #[serde(rename = "lidar-lite-v3")]
    LidarLiteV3,
    #[serde(rename = "tf-luna")]
    TfLuna,
    #[serde(rename = "lidar-lite-v3-pwm")]
    LidarLiteV3Pwm,
}

impl RangeModel {
    pub fn max_rate_hz(self) -> u32 {
        match self {
            RangeModel::LidarLiteV3 | RangeModel::LidarLiteV3Pwm => {
                crate::drivers::lidarlite::MAX_RATE_HZ
            }
            RangeModel::TfLuna => crate::drivers::tfluna::MAX_RATE_HZ,
        }
    }

    pub fn default_address(self) -> u8 {
        match self {
            RangeModel::TfLuna => crate::drivers::tfluna::DEFAULT_ADDRESS,
            _ => crate::drivers::lidarlite::DEFAULT_ADDRESS,
        }
    }
}

/// The rangefinder on I2C or GPIO.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RangeSection {
    pub model: RangeModel,
    #[serde(default = "default_i2c_bus")]
    pub i2c_bus: u8,
    pub address: Option<u8>,
    #[serde(default = "default_range_rate")]
    pub rate_hz: u32,
    #[serde(default = "default_retries")]
    pub retries: u32,
    /// BCM pin of the LIDAR-Lite mode pin (PWM model).
    pub pwm_pin: Option<u8>,
    /// BCM pin held low to make the LIDAR-Lite measure continuously (PWM model).
    pub trigger_pin: Option<u8>,
    /// Simulated sensor on a simulated bus.
    pub sim: Option<RangeSimSection>,
}

fn default_i2c_bus() -> u8 {
    1
}

fn default_range_rate() -> u32 {
    100
}

fn default_retries() -> u32 {
    2
}

/// `[rangefinder.sim]`.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RangeSimSection {}

/// The flight controller's CAN bus.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CanSection {
    #[serde(default = "default_iface")]
    pub interface: String,
    /// Bus bitrate (used when the image brings the interface up).
    #[serde(default = "default_bitrate")]
    pub bitrate: u32,
    /// Raw IDs forwarded to the radio as CAN_FRAME.
    #[serde(default)]
    pub uplink_ids: Vec<u32>,
    /// DroneCAN node ID of the flight controller (its NodeStatus is reported to the ground).
    #[serde(default)]
    pub flight_controller_node: Option<u8>,
    /// Replay a capture instead of opening the interface.
    pub replay: Option<CanReplaySection>,
}

fn default_iface() -> String {
    "can0".into()
}

fn default_bitrate() -> u32 {
    1_000_000
}

/// `[can.replay]`: exactly one of `speed`, `fps`, `fast`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CanReplaySection {
    /// `builtin:NAME` or a path to a candump log.
    pub capture: String,
    pub speed: Option<f64>,
    pub fps: Option<f64>,
    #[serde(default)]
    pub fast: bool,
    #[serde(default = "yes", rename = "loop")]
    pub looped: bool,
}

/// Queue capacities in records. Defaults hold at least 2 s of each source's worst case.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct QueueSection {
    pub gps_logger: Option<usize>,
    pub gps_uplink: Option<usize>,
    pub range_logger: Option<usize>,
    pub range_uplink: Option<usize>,
    pub can_logger: Option<usize>,
    pub can_uplink: Option<usize>,
}

/// Worst-case CAN rate: a saturated 1 Mbit/s bus of short frames.
pub const CAN_WORST_FPS: usize = 16_000;
/// Worst-case NMEA rate: 115200 baud of ~40-byte sentences, plus the fixes made from them.
pub const GPS_WORST_PER_S: usize = 300;

/// Capacities after defaults.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueueSizes {
    pub gps_logger: usize,
    pub gps_uplink: usize,
    pub range_logger: usize,
    pub range_uplink: usize,
    pub can_logger: usize,
    pub can_uplink: usize,
}

impl Board {
    /// Parses and validates board text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Self, BoardError> {
        let mut b: Board = toml::from_str(text).map_err(|e| BoardError::Parse {
            path: origin.to_owned(),
            message: e.to_string(),
        })?;
        b.origin = origin.to_owned();
        b.validate(origin)?;
        Ok(b)
    }

    /// Reads and validates a board file (at most [`MAX_BOARD_BYTES`]: it is input from the card).
    pub fn load(path: &Path) -> Result<Self, BoardError> {
        use std::io::Read;
        let read = |source| BoardError::Read {
            path: path.to_owned(),
            source,
        };
        let mut text = String::new();
        std::fs::File::open(path)
            .and_then(|f| f.take(MAX_BOARD_BYTES + 1).read_to_string(&mut text))
            .map_err(read)?;
        if text.len() as u64 > MAX_BOARD_BYTES {
            return Err(BoardError::Parse {
                path: path.display().to_string(),
                message: format!("larger than {MAX_BOARD_BYTES} bytes; not a board file"),
            });
        }
        Self::parse(&text, &path.display().to_string())
    }

    /// The built-in simulated board. Its text is part of the binary and `parse` does not look
    /// at the disk, so this cannot fail at run time (a unit test parses it).
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
        if let Some(g) = &self.gps {
            match g.baud {
                BaudSetting::Rate(r) if crate::drivers::serial::baud_rate(r).is_none() => {
                    return Err(bad(
                        "gps.baud",
                        format!(
                            "{r} is not one of {:?} or \"auto\"",
                            crate::drivers::serial::HUNT_RATES
                        ),
                    ));
                }
                _ => {}
            }
            match &g.sim {
                Some(sim) => {
                    check_capture(&sim.capture).map_err(|m| bad("gps.sim.capture", m))?;
                    if !(sim.speed > 0.0 && sim.speed <= 1000.0) {
                        return Err(bad(
                            "gps.sim.speed",
                            format!("{} is outside (0, 1000]", sim.speed),
                        ));
                    }
                }
                None => match &g.device {
                    None => {
                        return Err(bad(
                            "gps.device",
                            "missing (give the UART, e.g. /dev/serial0, or add [gps.sim])".into(),
                        ));
                    }
                    Some(d) if d.as_os_str().is_empty() => {
                        return Err(bad("gps.device", "must not be empty".into()));
                    }
                    Some(_) => {}
                },
            }
        }
        if let Some(r) = &self.rangefinder {
            let max = r.model.max_rate_hz();
            if r.rate_hz == 0 || r.rate_hz > max {
                return Err(bad(
                    "rangefinder.rate_hz",
                    format!("{} is outside 1..={max} (the sensor's maximum)", r.rate_hz),
                ));
            }
            if let Some(a) = r.address
                && !(0x08..=0x77).contains(&a)
            {
                return Err(bad(
                    "rangefinder.address",
                    format!("0x{a:02x} is not a 7-bit device address (0x08..=0x77)"),
                ));
            }
            if r.retries > 10 {
                return Err(bad(
                    "rangefinder.retries",
                    format!("{} is more than 10", r.retries),
                ));
            }
            if r.model == RangeModel::LidarLiteV3Pwm {
                if r.sim.is_some() {
                    return Err(bad(
                        "rangefinder.sim",
                        "the PWM model cannot be simulated; use lidar-lite-v3".into(),
                    ));
                }
                if r.pwm_pin.is_none() {
                    return Err(bad(
                        "rangefinder.pwm_pin",
                        "missing (required by lidar-lite-v3-pwm)".into(),
                    ));
                }
            }
            for (f, p) in [
                ("rangefinder.pwm_pin", r.pwm_pin),
                ("rangefinder.trigger_pin", r.trigger_pin),
            ] {
                if let Some(p) = p
                    && p > 27
                {
                    return Err(bad(
                        f,
                        format!("{p} is not a BCM GPIO of the Pi header (0..=27)"),
                    ));
                }
            }
        }
        if let Some(c) = &self.can {
            if c.interface.is_empty() || c.interface.len() > 15 {
                return Err(bad(
                    "can.interface",
                    format!("'{}' must be 1 to 15 characters", c.interface),
                ));
            }
            if !(10_000..=1_000_000).contains(&c.bitrate) {
                return Err(bad(
                    "can.bitrate",
                    format!("{} is outside 10000..=1000000", c.bitrate),
                ));
            }
            if let Some(id) = c.uplink_ids.iter().find(|&&i| i > 0x1FFF_FFFF) {
                return Err(bad(
                    "can.uplink_ids",
                    format!("0x{id:x} is wider than 29 bits"),
                ));
            }
            if let Some(n) = c.flight_controller_node
                && !(1..=127).contains(&n)
            {
                return Err(bad(
                    "can.flight_controller_node",
                    format!("{n} is outside 1..=127"),
                ));
            }
            if let Some(r) = &c.replay {
                check_capture(&r.capture).map_err(|m| bad("can.replay.capture", m))?;
                let modes = r.speed.is_some() as u8 + r.fps.is_some() as u8 + r.fast as u8;
                if modes > 1 {
                    return Err(bad(
                        "can.replay",
                        "give only one of speed, fps, fast".into(),
                    ));
                }
                if let Some(s) = r.speed
                    && !(s > 0.0 && s <= 10_000.0)
                {
                    return Err(bad(
                        "can.replay.speed",
                        format!("{s} is outside (0, 10000]"),
                    ));
                }
                if let Some(f) = r.fps
                    && !(f > 0.0 && f <= 1_000_000.0)
                {
                    return Err(bad(
                        "can.replay.fps",
                        format!("{f} is outside (0, 1000000]"),
                    ));
                }
            }
        }
        let l = &self.logger;
        if !(1..=4096).contains(&l.rotate_mib) {
            return Err(bad(
                "logger.rotate_mib",
                format!("{} is outside 1..=4096", l.rotate_mib),
            ));
        }
        if l.fsync != "interval" && l.fsync != "always" {
            return Err(bad(
                "logger.fsync",
                format!("'{}' is not \"interval\" or \"always\"", l.fsync),
            ));
        }
        if !(10..=60_000).contains(&l.fsync_interval_ms) {
            return Err(bad(
                "logger.fsync_interval_ms",
                format!("{} is outside 10..=60000", l.fsync_interval_ms),
            ));
        }
        if !(1..=3600).contains(&l.manifest_interval_s) {
            return Err(bad(
                "logger.manifest_interval_s",
                format!("{} is outside 1..=3600", l.manifest_interval_s),
            ));
        }
        if let Some(u) = &self.uplink {
            u.validate().map_err(|(f, m)| bad(&f, m))?;
        }
        let q = &self.queues;
        for (f, v) in [
            ("queues.gps_logger", q.gps_logger),
            ("queues.gps_uplink", q.gps_uplink),
            ("queues.range_logger", q.range_logger),
            ("queues.range_uplink", q.range_uplink),
            ("queues.can_logger", q.can_logger),
            ("queues.can_uplink", q.can_uplink),
        ] {
            if let Some(v) = v
                && !(16..=1 << 22).contains(&v)
            {
                return Err(bad(f, format!("{v} is outside 16..=4194304")));
            }
        }
        Ok(())
    }

    /// An error about `field` of this board (for what only a start finds out).
    pub fn field_error(&self, field: &str, message: String) -> BoardError {
        BoardError::Invalid {
            path: self.origin.clone(),
            field: field.to_owned(),
            message,
        }
    }

    /// Checks every field that names a path or a group against this machine (see [`host`]):
    /// the first problem is an error naming its field. Looks only; creates nothing.
    pub fn check_host(&self) -> Result<(), BoardError> {
        let bad = |field: &str, message: String| self.field_error(field, message);
        let b = &self.board;
        host::writable_dir(&b.data_dir).map_err(|m| bad("board.data_dir", m))?;
        host::writable_dir(&b.run_dir).map_err(|m| bad("board.run_dir", m))?;
        for sub in [
            crate::control::rundir::STATE_DIR,
            crate::control::rundir::LOCK_FILE,
        ] {
            let p = b.run_dir.join(sub);
            let want_dir = sub == crate::control::rundir::STATE_DIR;
            if let Ok(m) = std::fs::symlink_metadata(&p)
                && m.is_dir() != want_dir
            {
                return Err(bad(
                    "board.run_dir",
                    format!(
                        "{} is in the way (it must be a {})",
                        p.display(),
                        if want_dir { "directory" } else { "file" }
                    ),
                ));
            }
        }
        let socket = crate::control::server::socket_path(&b.run_dir);
        if socket.as_os_str().len() >= MAX_SOCKET_PATH {
            return Err(bad(
                "board.run_dir",
                format!(
                    "the control socket {} would be {} bytes long; a Unix socket path holds at most {}",
                    socket.display(),
                    socket.as_os_str().len(),
                    MAX_SOCKET_PATH - 1
                ),
            ));
        }
        if let Some(g) = &b.socket_group {
            host::group(g).map_err(|m| bad("board.socket_group", m))?;
        }
        if let Some(g) = &self.gps {
            match &g.sim {
                Some(sim) => {
                    if !sim.capture.starts_with("builtin:") {
                        host::readable_file(Path::new(&sim.capture), Some(GPS_CAPTURE_MAX_BYTES))
                            .map_err(|m| bad("gps.sim.capture", m))?;
                    }
                }
                None => {
                    if let Some(d) = &g.device {
                        host::device(d).map_err(|m| bad("gps.device", m))?;
                    }
                }
            }
        }
        if let Some(r) = self.can.as_ref().and_then(|c| c.replay.as_ref())
            && !r.capture.starts_with("builtin:")
        {
            host::readable_file(Path::new(&r.capture), None)
                .map_err(|m| bad("can.replay.capture", m))?;
        }
        if let Some(u) = &self.uplink {
            u.check_host(&b.data_dir).map_err(|(f, m)| bad(&f, m))?;
        }
        Ok(())
    }

    /// Queue capacities with defaults: 2 s of each source's worst case (SD cards stall).
    pub fn queue_sizes(&self) -> QueueSizes {
        let q = &self.queues;
        let range_rate = self
            .rangefinder
            .as_ref()
            .map_or(100, |r| r.rate_hz as usize);
        QueueSizes {
            gps_logger: q
                .gps_logger
                .unwrap_or((2 * GPS_WORST_PER_S).next_power_of_two()),
            gps_uplink: q.gps_uplink.unwrap_or(64),
            range_logger: q
                .range_logger
                .unwrap_or((2 * range_rate).max(64).next_power_of_two()),
            range_uplink: q
                .range_uplink
                .unwrap_or((range_rate / 2).max(64).next_power_of_two()),
            can_logger: q
                .can_logger
                .unwrap_or((2 * CAN_WORST_FPS).next_power_of_two()),
            can_uplink: q.can_uplink.unwrap_or(1024),
        }
    }

    /// The logger's settings.
    pub fn logger_config(&self) -> crate::logger::LoggerConfig {
        let l = &self.logger;
        crate::logger::LoggerConfig {
            rotate_bytes: l.rotate_mib << 20,
            fsync: if l.fsync == "always" {
                crate::logger::FsyncPolicy::Always
            } else {
                crate::logger::FsyncPolicy::Interval(std::time::Duration::from_millis(
                    l.fsync_interval_ms,
                ))
            },
            min_free_bytes: l.min_free_mib << 20,
            manifest_every: std::time::Duration::from_secs(l.manifest_interval_s),
            can_iface: self
                .can
                .as_ref()
                .map_or("can0".into(), |c| c.interface.clone()),
            board: self.board.name.clone(),
            has_gps: self.gps.is_some(),
            has_range: self.rangefinder.is_some(),
            has_can: self.can.is_some(),
        }
    }

    pub fn log_level(&self) -> Option<log::LevelFilter> {
        self.board.log_level.parse().ok()
    }
}

/// The largest board file read (the real ones are a few KiB).
pub const MAX_BOARD_BYTES: u64 = 1 << 20;

/// The longest GPS capture the simulator reads into memory.
pub const GPS_CAPTURE_MAX_BYTES: u64 = 256 << 20;

/// `sun_path` of a Unix socket address: 108 bytes with the terminating NUL.
const MAX_SOCKET_PATH: usize = 108;

/// Checks a capture reference's value: `builtin:NAME` names a built-in capture, a path is not
/// empty (whether it can be read is [`Board::check_host`]'s business).
fn check_capture(c: &str) -> Result<(), String> {
    if let Some(name) = c.strip_prefix("builtin:") {
        return match crate::sim::builtin(name) {
            Some(_) => Ok(()),
            None => Err(format!(
                "no built-in capture '{name}' (built in: {})",
                crate::sim::BUILTIN_NAMES.join(", ")
            )),
        };
    }
    if c.is_empty() {
        return Err("must not be empty".into());
    }
    Ok(())
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

    /// Issue #11: a board file is input from the card: read bounded, and parsing it never
    /// looks at the disk (the built-in board parses whatever lies in the working directory).
    #[test]
    fn board_files_are_read_bounded() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("huge.toml");
        let mut text = "[board]\nname='x'\ndata_dir='d'\nrun_dir='r'\n".to_owned();
        text.push_str(&"# padding\n".repeat(200_000));
        std::fs::write(&p, &text).unwrap();
        let e = Board::load(&p).unwrap_err().to_string();
        assert!(e.contains("larger than"), "{e}");
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
