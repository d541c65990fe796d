//! The control socket's protocol: one JSON request line in, one JSON reply line out.
//!
//! ```text
//! {"cmd":"status"}
//! {"cmd":"pause","target":"gps"}          target: a processor, a group, or absent for all
//! {"cmd":"resume","target":"sensors"}
//! {"cmd":"stop"}
//! {"cmd":"signal","name":"rotate","to":"logger"}   to: absent for every processor accepting it
//! ```
//! Replies are `{"ok":true,...}` or `{"ok":false,"error":"..."}`. JSON keeps it scriptable
//! with `socat` and `jq` as well as through `harmony ctl`.
//!
//! A request is one line of at most [`MAX_REQUEST`] bytes, complete within one second of the
//! connection (see [`super::server`] for the limits and what happens beyond them).

use serde::{Deserialize, Serialize};

use crate::concurrency::EntrySnapshot;

/// Longest request line the server reads. The longest real request (a signal with a name, an
/// argument and a target) is a few hundred bytes; 8 KiB leaves room and bounds what a client
/// can make the server hold.
pub const MAX_REQUEST: usize = 8 * 1024;

/// A request to the running firmware.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "lowercase", deny_unknown_fields)]
pub enum Request {
    Status {},
    Pause {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        target: Option<String>,
    },
    Resume {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        target: Option<String>,
    },
    Stop {},
    Signal {
        name: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        arg: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        to: Option<String>,
    },
}

/// A waiting group and whether it is set.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GroupState {
    pub name: String,
    pub waiting: bool,
}

/// The whole tree, as `harmony ctl status` shows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Status {
    pub pid: u32,
    pub version: String,
    pub board: String,
    pub started_ms: u64,
    pub stopping: bool,
    pub paused_all: bool,
    pub log_dropped: u64,
    pub groups: Vec<GroupState>,
    pub processors: Vec<EntrySnapshot>,
    /// The control socket's own counters (absent from firmwares older than issue #11).
    #[serde(default)]
    pub control: ControlStats,
}

/// What the control socket has seen since start: how many clients it served and how many
/// requests it refused, by reason. Refusals are logged as one summary line per interval,
/// never one line per request, so these counters are where each one is seen.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControlStats {
    /// Client slots: connections served at the same time.
    pub max_clients: u32,
    /// Connections being served now.
    pub clients: u32,
    pub accepted: u64,
    /// Requests carried out (including those the tree refused, like an unknown target).
    pub served: u64,
    /// Not UTF-8, not JSON, or not a known request.
    pub malformed: u64,
    /// Longer than [`MAX_REQUEST`] without a newline.
    pub oversized: u64,
    /// No whole request line within the deadline, or the reply not taken within it.
    pub timed_out: u64,
    /// Closed to make room: every slot was taken when a new client came.
    pub over_capacity: u64,
}

impl ControlStats {
    /// Every request refused, whatever the reason.
    pub fn rejected(&self) -> u64 {
        self.malformed + self.oversized + self.timed_out + self.over_capacity
    }
}

/// The server's answer.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Reply {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<Status>,
}

impl Reply {
    pub fn ok(message: impl Into<String>) -> Self {
        Reply {
            ok: true,
            message: Some(message.into()),
            ..Default::default()
        }
    }

    pub fn err(error: impl Into<String>) -> Self {
        Reply {
            ok: false,
            error: Some(error.into()),
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip() {
        for r in [
            Request::Status {},
            Request::Pause { target: None },
            Request::Resume {
                target: Some("gps".into()),
            },
            Request::Stop {},
            Request::Signal {
                name: "rotate".into(),
                arg: None,
                to: Some("logger".into()),
            },
        ] {
            let s = serde_json::to_string(&r).unwrap();
            assert_eq!(serde_json::from_str::<Request>(&s).unwrap(), r);
        }
        assert_eq!(
            serde_json::from_str::<Request>(r#"{"cmd":"pause"}"#).unwrap(),
            Request::Pause { target: None }
        );
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(serde_json::from_str::<Request>("hello").is_err());
        assert!(serde_json::from_str::<Request>(r#"{"cmd":"explode"}"#).is_err());
        assert!(serde_json::from_str::<Request>(r#"{"cmd":"stop","x":1}"#).is_err());
    }
}
