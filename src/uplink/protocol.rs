//! What the uplink and the ground station agree on: ids, the stream table, the command table
//! and the names of the named values. Both sides use this module, so they cannot drift apart.

use std::fmt;

use mavlink::dialects::common::{COMMAND_LONG_DATA, MavCmd, MavComponent, MavResult};

/// The firmware's component id (MAV_COMP_ID_ONBOARD_COMPUTER).
pub const COMPONENT_ID: u8 = MavComponent::MAV_COMP_ID_ONBOARD_COMPUTER as u8;
/// The ground station's component id (MAV_COMP_ID_MISSIONPLANNER).
pub const GROUND_COMPONENT_ID: u8 = MavComponent::MAV_COMP_ID_MISSIONPLANNER as u8;
/// The ground station's system id by convention.
pub const GROUND_SYSTEM_ID: u8 = 255;

/// Pause a source: param1 = source index (see [`SOURCES`]).
pub const CMD_PAUSE: MavCmd = MavCmd::MAV_CMD_USER_1;
/// Resume a source: param1 = source index.
pub const CMD_RESUME: MavCmd = MavCmd::MAV_CMD_USER_2;
/// Rotate the log files (the named signal `rotate` to the logger).
pub const CMD_ROTATE: MavCmd = MavCmd::MAV_CMD_USER_3;
/// Set a stream's rate: param1 = stream index, param2 = Hz (0 off, negative: configured rate).
pub const CMD_RATE: MavCmd = MavCmd::MAV_CMD_USER_4;
/// Stop the firmware: param1 must be [`STOP_CONFIRM`].
pub const CMD_STOP: MavCmd = MavCmd::MAV_CMD_USER_5;
/// Guards the stop command against a stray or mistyped USER_5.
pub const STOP_CONFIRM: f32 = 1.0;

/// The sources a ground command may pause or resume, by index (param1 = position + 1).
pub const SOURCES: [&str; 3] = ["gps", "rangefinder", "can"];

/// Named values of the flight controller's DroneCAN NodeStatus.
pub const FC_HEALTH: &str = "fc_health";
pub const FC_MODE: &str = "fc_mode";
pub const FC_UPTIME: &str = "fc_uptime";
/// Prefix of a processor's state in the health stream (value: [`state_code`]).
pub const PROC_PREFIX: &str = "p.";
/// Health values from the logger's and the uplink's metrics.
pub const LOG_DEGRADED: &str = "log_degr";
pub const DISK_FREE_MB: &str = "disk_mb";
pub const LOG_KIB: &str = "log_kib";
pub const LOG_DROPPED: &str = "log_drop";
pub const QUEUE_DROPPED: &str = "q_drop";
pub const SIGN_REJECTED: &str = "sig_rej";

/// A rate-controlled telemetry stream. Heartbeat, STATUSTEXT and COMMAND_ACK are not streams:
/// they are never thinned.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Stream {
    /// GPS_RAW_INT from the newest fix.
    Gps,
    /// DISTANCE_SENSOR from the newest reading.
    Range,
    /// CAN_FRAME, the newest frame of each selected id in turn.
    Can,
    /// NAMED_VALUE_INT fc_health / fc_mode / fc_uptime in turn (DroneCAN NodeStatus).
    Fc,
    /// SYS_STATUS.
    Sys,
    /// NAMED_VALUE_INT: each processor's state and the logger's health, in turn.
    Health,
}

impl Stream {
    /// In index order (index = position + 1).
    pub const ALL: [Stream; 6] = [
        Stream::Gps,
        Stream::Range,
        Stream::Can,
        Stream::Fc,
        Stream::Sys,
        Stream::Health,
    ];
    /// Most important first: the ground needs the position before anything else.
    pub const DEFAULT_PRIORITY: [Stream; 6] = [
        Stream::Gps,
        Stream::Fc,
        Stream::Range,
        Stream::Sys,
        Stream::Can,
        Stream::Health,
    ];

    pub fn index(self) -> u8 {
        Stream::ALL.iter().position(|s| *s == self).unwrap_or(0) as u8 + 1
    }

    pub fn from_index(i: u8) -> Option<Self> {
        Stream::ALL.get((i as usize).checked_sub(1)?).copied()
    }

    pub fn name(self) -> &'static str {
        match self {
            Stream::Gps => "gps",
            Stream::Range => "range",
            Stream::Can => "can",
            Stream::Fc => "fc",
            Stream::Sys => "sys",
            Stream::Health => "health",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Stream::ALL.into_iter().find(|x| x.name() == s)
    }

    pub fn names() -> String {
        Stream::ALL.map(|s| s.name()).join(", ")
    }

    /// Messages per second unless the board says otherwise.
    pub fn default_hz(self) -> f64 {
        match self {
            Stream::Gps => 5.0,
            Stream::Range => 10.0,
            Stream::Can => 10.0,
            Stream::Fc => 3.0,
            Stream::Sys => 1.0,
            Stream::Health => 4.0,
        }
    }

    /// The message id MAV_CMD_SET_MESSAGE_INTERVAL names this stream by.
    pub fn message_id(self) -> u32 {
        match self {
            Stream::Gps => 24,
            Stream::Range => 132,
            Stream::Can => 386,
            Stream::Sys => 1,
            // NAMED_VALUE_INT: the firmware's health (the FC's values have no id of their own).
            Stream::Health => 252,
            Stream::Fc => u32::MAX,
        }
    }

    pub fn from_message_id(id: u32) -> Option<Self> {
        Stream::ALL
            .into_iter()
            .find(|s| s.message_id() == id && id != u32::MAX)
    }
}

/// A processor state as the health stream sends it.
pub fn state_code(s: crate::concurrency::ProcState) -> i32 {
    s as u8 as i32
}

/// The name of a state code (for display on the ground).
pub fn state_name(code: i32) -> &'static str {
    match code {
        0 => "starting",
        1 => "active",
        2 => "waiting",
        3 => "stopping",
        4 => "stopped",
        5 => "failed",
        6 => "restarting",
        _ => "?",
    }
}

/// DroneCAN health code names (NodeStatus.health).
pub fn fc_health_name(code: i32) -> &'static str {
    match code {
        0 => "ok",
        1 => "warning",
        2 => "error",
        3 => "critical",
        _ => "?",
    }
}

/// A stream's new rate.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Rate {
    Hz(f32),
    /// Back to the board's rate.
    Configured,
}

/// A command from the ground, as both sides understand it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Command {
    /// Pause the source with this index into [`SOURCES`] (0-based).
    Pause(usize),
    Resume(usize),
    Rotate,
    Rate(Stream, Rate),
    Stop,
}

/// Why a COMMAND_LONG was not understood: the result to answer with and a reason.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Refusal {
    pub result: MavResult,
    pub reason: &'static str,
}

impl Command {
    /// Parses the ground's command syntax: `pause:gps`, `resume:can`, `rotate`,
    /// `rate:range:20`, `rate:can:off`, `rate:gps:default`, `stop`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let parts: Vec<&str> = s.trim().split(':').collect();
        let source = |n: &str| {
            SOURCES
                .iter()
                .position(|x| *x == n)
                .ok_or_else(|| format!("unknown source '{n}' (sources: {})", SOURCES.join(", ")))
        };
        match parts.as_slice() {
            ["pause", n] => Ok(Command::Pause(source(n)?)),
            ["resume", n] => Ok(Command::Resume(source(n)?)),
            ["rotate"] => Ok(Command::Rotate),
            ["stop"] => Ok(Command::Stop),
            ["rate", n, r] => {
                let stream = Stream::parse(n).ok_or_else(|| {
                    format!("unknown stream '{n}' (streams: {})", Stream::names())
                })?;
                let rate = match *r {
                    "off" => Rate::Hz(0.0),
                    "default" => Rate::Configured,
                    x => {
                        let hz: f32 = x
                            .parse()
                            .map_err(|_| format!("'{x}' is not a rate (Hz, off or default)"))?;
                        if !(0.0..=super::config::MAX_STREAM_HZ as f32).contains(&hz) {
                            return Err(format!(
                                "{hz} is outside 0..={} Hz",
                                super::config::MAX_STREAM_HZ
                            ));
                        }
                        Rate::Hz(hz)
                    }
                };
                Ok(Command::Rate(stream, rate))
            }
            _ => Err(format!(
                "'{s}' is not a command (pause:SOURCE, resume:SOURCE, rotate, rate:STREAM:HZ|off|default, stop)"
            )),
        }
    }

    pub fn mav_cmd(&self) -> MavCmd {
        match self {
            Command::Pause(_) => CMD_PAUSE,
            Command::Resume(_) => CMD_RESUME,
            Command::Rotate => CMD_ROTATE,
            Command::Rate(..) => CMD_RATE,
            Command::Stop => CMD_STOP,
        }
    }

    /// The COMMAND_LONG that carries this command to `target_system`.
    pub fn to_message(&self, target_system: u8, confirmation: u8) -> COMMAND_LONG_DATA {
        let (p1, p2) = match *self {
            Command::Pause(i) | Command::Resume(i) => (i as f32 + 1.0, 0.0),
            Command::Rotate => (0.0, 0.0),
            Command::Rate(s, Rate::Hz(hz)) => (s.index() as f32, hz),
            Command::Rate(s, Rate::Configured) => (s.index() as f32, -1.0),
            Command::Stop => (STOP_CONFIRM, 0.0),
        };
        COMMAND_LONG_DATA {
            param1: p1,
            param2: p2,
            param3: 0.0,
            param4: 0.0,
            param5: 0.0,
            param6: 0.0,
            param7: 0.0,
            command: self.mav_cmd(),
            target_system,
            target_component: COMPONENT_ID,
            confirmation,
        }
    }

    /// Reads a COMMAND_LONG addressed to the firmware. Also understands the standard
    /// MAV_CMD_SET_MESSAGE_INTERVAL (param1 = message id, param2 = interval in µs, -1 off,
    /// 0 configured rate), so stock ground tools can change rates.
    pub fn from_message(m: &COMMAND_LONG_DATA) -> Result<Self, Refusal> {
        let denied = |reason| Refusal {
            result: MavResult::MAV_RESULT_DENIED,
            reason,
        };
        let source = |p: f32| -> Result<usize, Refusal> {
            let i = p.round();
            if p.is_finite() && i >= 1.0 && i <= SOURCES.len() as f32 && (p - i).abs() < 1e-3 {
                Ok(i as usize - 1)
            } else {
                Err(denied(
                    "param1: no such source (1 gps, 2 rangefinder, 3 can)",
                ))
            }
        };
        match m.command {
            CMD_PAUSE => Ok(Command::Pause(source(m.param1)?)),
            CMD_RESUME => Ok(Command::Resume(source(m.param1)?)),
            CMD_ROTATE => Ok(Command::Rotate),
            CMD_STOP => {
                if m.param1 == STOP_CONFIRM {
                    Ok(Command::Stop)
                } else {
                    Err(denied("stop: param1 must be 1 to confirm"))
                }
            }
            CMD_RATE => {
                let p1 = m.param1;
                let stream = ((1.0..=255.0).contains(&p1) && p1.fract() == 0.0)
                    .then(|| Stream::from_index(p1 as u8))
                    .flatten()
                    .ok_or(denied("param1: no such stream (1..6)"))?;
                rate_from_hz(stream, m.param2)
            }
            MavCmd::MAV_CMD_SET_MESSAGE_INTERVAL => {
                let id = m.param1;
                let stream = (id.is_finite() && id >= 0.0 && id.fract() == 0.0)
                    .then(|| Stream::from_message_id(id as u32))
                    .flatten()
                    .ok_or(denied("no stream sends this message id"))?;
                let us = m.param2;
                if us == 0.0 {
                    Ok(Command::Rate(stream, Rate::Configured))
                } else if us == -1.0 {
                    Ok(Command::Rate(stream, Rate::Hz(0.0)))
                } else if us.is_finite() && us > 0.0 {
                    rate_from_hz(stream, 1e6 / us)
                } else {
                    Err(denied("param2: interval must be -1, 0 or positive"))
                }
            }
            _ => Err(Refusal {
                result: MavResult::MAV_RESULT_UNSUPPORTED,
                reason: "command not supported",
            }),
        }
    }
}

fn rate_from_hz(stream: Stream, hz: f32) -> Result<Command, Refusal> {
    if hz < 0.0 {
        return Ok(Command::Rate(stream, Rate::Configured));
    }
    if !(hz.is_finite() && hz <= super::config::MAX_STREAM_HZ as f32) {
        return Err(Refusal {
            result: MavResult::MAV_RESULT_DENIED,
            reason: "rate above 50 Hz",
        });
    }
    Ok(Command::Rate(stream, Rate::Hz(hz)))
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Command::Pause(i) => write!(f, "pause:{}", SOURCES[*i]),
            Command::Resume(i) => write!(f, "resume:{}", SOURCES[*i]),
            Command::Rotate => f.write_str("rotate"),
            Command::Stop => f.write_str("stop"),
            Command::Rate(s, Rate::Hz(hz)) => write!(f, "rate:{}:{hz}", s.name()),
            Command::Rate(s, Rate::Configured) => write!(f, "rate:{}:default", s.name()),
        }
    }
}

/// The ground's name of a command id (for ACK lines).
pub fn command_name(c: MavCmd) -> &'static str {
    match c {
        CMD_PAUSE => "pause",
        CMD_RESUME => "resume",
        CMD_ROTATE => "rotate",
        CMD_RATE => "rate",
        CMD_STOP => "stop",
        MavCmd::MAV_CMD_SET_MESSAGE_INTERVAL => "set_message_interval",
        _ => "other",
    }
}

/// MAV_RESULT without its prefix.
pub fn result_name(r: MavResult) -> &'static str {
    match r {
        MavResult::MAV_RESULT_ACCEPTED => "ACCEPTED",
        MavResult::MAV_RESULT_TEMPORARILY_REJECTED => "TEMPORARILY_REJECTED",
        MavResult::MAV_RESULT_DENIED => "DENIED",
        MavResult::MAV_RESULT_UNSUPPORTED => "UNSUPPORTED",
        MavResult::MAV_RESULT_FAILED => "FAILED",
        MavResult::MAV_RESULT_IN_PROGRESS => "IN_PROGRESS",
        MavResult::MAV_RESULT_CANCELLED => "CANCELLED",
        _ => "OTHER",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_round_trip_through_command_long() {
        for s in [
            "pause:gps",
            "resume:rangefinder",
            "pause:can",
            "rotate",
            "stop",
            "rate:range:20",
            "rate:can:0",
            "rate:health:default",
        ] {
            let c = Command::parse(s).unwrap();
            let m = c.to_message(1, 0);
            assert_eq!(Command::from_message(&m).unwrap(), c, "{s}");
        }
        assert_eq!(
            Command::parse("rate:can:off").unwrap(),
            Command::Rate(Stream::Can, Rate::Hz(0.0))
        );
        assert!(Command::parse("pause:uplink").is_err());
        assert!(Command::parse("rate:gps:500").is_err());
        assert!(Command::parse("launch").is_err());
    }

    #[test]
    fn bad_parameters_are_denied() {
        let mut m = Command::Pause(0).to_message(1, 0);
        m.param1 = 7.0;
        assert_eq!(
            Command::from_message(&m).unwrap_err().result,
            MavResult::MAV_RESULT_DENIED
        );
        let mut m = Command::Stop.to_message(1, 0);
        m.param1 = 0.0;
        assert!(Command::from_message(&m).is_err());
        let mut m = Command::Stop.to_message(1, 0);
        m.command = MavCmd::MAV_CMD_COMPONENT_ARM_DISARM;
        assert_eq!(
            Command::from_message(&m).unwrap_err().result,
            MavResult::MAV_RESULT_UNSUPPORTED
        );
    }

    #[test]
    fn set_message_interval_maps_to_streams() {
        let mut m = Command::Rotate.to_message(1, 0);
        m.command = MavCmd::MAV_CMD_SET_MESSAGE_INTERVAL;
        m.param1 = 24.0;
        m.param2 = 500_000.0;
        assert_eq!(
            Command::from_message(&m).unwrap(),
            Command::Rate(Stream::Gps, Rate::Hz(2.0))
        );
        m.param2 = -1.0;
        assert_eq!(
            Command::from_message(&m).unwrap(),
            Command::Rate(Stream::Gps, Rate::Hz(0.0))
        );
    }

    #[test]
    fn stream_indices_are_stable() {
        let names: Vec<_> = Stream::ALL.iter().map(|s| (s.index(), s.name())).collect();
        assert_eq!(
            names,
            [
                (1, "gps"),
                (2, "range"),
                (3, "can"),
                (4, "fc"),
                (5, "sys"),
                (6, "health")
            ]
        );
    }
}
