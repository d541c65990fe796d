//! The radio uplink (issue #5): MAVLink 2 telemetry within a byte budget over a serial
//! telemetry radio (SiK / RFD900 class), signed commands from the ground, and the ground
//! station (`harmony ground`, [`ground`]).
//!
//! # Design
//!
//! The uplink is one loop processor named `uplink` ([`telemetry::Uplink`]). It owns its three
//! record queues (GPS fixes, rangefinder readings, the selected CAN frames and DroneCAN
//! NodeStatus) and keeps only the newest value of each stream: every iteration drains the
//! queues completely, and what is replaced before it was sent is counted (`*_superseded`).
//! It never falls behind, because it never keeps a backlog. It sleeps in `poll(2)` on the
//! radio and its waker until the next frame is due, reads the ground's commands in the same
//! loop, and writes without blocking, so a slow radio never holds the thread. A vanished radio
//! is reopened every 2 s with the state note saying so; the logger has its own queues and
//! notices nothing.
//!
//! The Pi is MAVLink system `system_id` (board), component 191 (onboard computer).
//!
//! # What goes to the ground
//!
//! | stream  | message                      | default | content                                   |
//! |---------|------------------------------|---------|-------------------------------------------|
//! | —       | HEARTBEAT                    | 1 Hz    | onboard controller, `base_mode` empty (never "armed") |
//! | —       | STATUSTEXT                   | events (over 50 bytes: MAVLink 2 chunks, `id` + `chunk_seq`) | a processor failed, logger degraded / recovered, disk low (< 100 MB) / full (< 10 MB), logger dropping records, FC silent / back, radio back, refused commands, uplink up |
//! | —       | COMMAND_ACK                  | replies | one per command                           |
//! | `gps`   | GPS_RAW_INT                  | 5 Hz    | the newest fix                            |
//! | `range` | DISTANCE_SENSOR              | 10 Hz   | the newest reading; a flagged one as `max + 1` cm |
//! | `can`   | CAN_FRAME                    | 10 Hz   | the newest frame of each selected id, in turn (bit 31 = extended) |
//! | `fc`    | NAMED_VALUE_INT              | 3 Hz    | `fc_health` (0 ok, 1 warning, 2 error, 3 critical), `fc_mode`, `fc_uptime` (s) in turn, from the flight controller's NodeStatus (`can.flight_controller_node`): each value once per NodeStatus, nothing while the FC is silent |
//! | `sys`   | SYS_STATUS                   | 1 Hz    | GPS / laser / logging present, enabled (not paused), healthy (active; logging: not degraded); `load` = firmware CPU in 0.1 % of all cores; `errors_comm` = rejected ground messages, `drop_rate_comm` their share; `errors_count1` records dropped by full queues, `2` logger records dropped, `3` processors failed now, `4` STATUSTEXTs dropped |
//! | `health`| NAMED_VALUE_INT              | 4 Hz    | in turn: `p.NAME` = each processor's state (0 starting, 1 active, 2 waiting, 3 stopping, 4 stopped, 5 failed, 6 restarting; name cut to 8), `log_degr`, `disk_mb`, `log_kib`, `log_drop` (the logger's metrics, when it has them), `q_drop` (records dropped by full queues: the sources' `queue.*.dropped`), `sig_rej` (rejected ground messages) |
//!
//! # The byte budget
//!
//! `budget_percent` (default 50) of the link's `baud / 10` bytes per second, enforced by a
//! token bucket ([`budget`]) sized so that no 10 s window holds more than ten seconds of
//! budget; bytes are counted as written (`bytes_written`, and `max_bytes_10s`, the fullest
//! 10 s window seen). Heartbeat, acknowledgements and events go first and are never thinned.
//! Twice a second the rest of the budget is divided among the streams in priority order
//! (`priority`, default gps, fc, range, sys, can, health): every stream with data keeps a
//! trickle of 0.5 frames/s, then each, most important first, gets the rate it asks for
//! (`[uplink.rates]`, changeable from the ground; or its source's rate, if lower) while the
//! budget lasts. When the budget is short, the least important streams are the ones that
//! thin out. Each stream paces itself with a token per frame at its granted rate, and sends
//! only a value it has not sent yet.
//!
//! # Commands from the ground
//!
//! COMMAND_LONG to this system (or 0) and component 191 (or 0); each is answered with
//! COMMAND_ACK, a refusal also with a STATUSTEXT saying why. Without a usable signing key every
//! command is DENIED (counted as `commands_unsigned_refused`, said at most once a second),
//! unless the board sets `accept_unsigned_commands` (the simulated board; warned at start).
//!
//! | command                        | param1                      | param2                | does                                   |
//! |--------------------------------|-----------------------------|-----------------------|----------------------------------------|
//! | MAV_CMD_USER_1 (31010) pause   | source: 1 gps, 2 rangefinder, 3 can | —             | sets the source's pause flag           |
//! | MAV_CMD_USER_2 (31011) resume  | source                      | —                     | clears it                              |
//! | MAV_CMD_USER_3 (31012) rotate  | —                           | —                     | named signal `rotate` to `logger` (FAILED if it does not take it) |
//! | MAV_CMD_USER_4 (31013) rate    | stream: 1 gps, 2 range, 3 can, 4 fc, 5 sys, 6 health | Hz (0 off, < 0 board rate) | changes the stream's rate |
//! | MAV_CMD_USER_5 (31014) stop    | 1 (confirmation)            | —                     | stops the firmware after the ACK went out |
//! | MAV_CMD_SET_MESSAGE_INTERVAL (511) | message id: 24 gps, 132 range, 386 can, 1 sys, 252 health | interval µs (-1 off, 0 board rate) | the standard way to set a rate |
//!
//! Bad parameters are DENIED, other commands UNSUPPORTED, a command the tree cannot carry out
//! (no such processor, no receiver for `rotate`) FAILED. A retransmission of the command just
//! carried out (same parameters, `confirmation` > 0, within 10 s: our ACK was lost) is
//! answered again, not carried out twice. `stop` stops the tree once its ACK has left (on the
//! simulated radio: once the ground has read it), at most 3 s after.
//!
//! # Signing
//!
//! With `signing_key` (a file of 32 raw bytes, mode 0600, checked when the board is loaded)
//! every frame sent is signed and every frame received must be correctly signed and newer than
//! the last one of its stream; unsigned, badly signed and replayed frames are dropped and
//! counted (`rx_unsigned`, `rx_bad_signature`, `rx_replayed`, `rx_rejected`). A configured key
//! that is missing is not fatal: the uplink runs telemetry-only (unsigned) and refuses every
//! command, and says so in the log and its state note.
//!
//! The signing state (the timestamp, 10 µs since 2015-01-01, and the verifier's per-stream
//! table) goes to `signing_state` (default `<data_dir>/uplink-signing.state`, checked writable
//! at build) every `signing_save_s` and at stop, written by [`persist`] off the uplink's thread.
//! At start the uplink begins at `max(clock, stored)` (the MAVLink signing rules); GPS time
//! moves it at most 30 s past the boot-anchored estimate. See [`signing`] and [`persist`].
//!
//! # The simulated radio
//!
//! With `[uplink.sim]` the radio is a pseudo-terminal pair made when the uplink is built: the
//! uplink holds one side (and a handle on the other, so it never hangs up), the ground station
//! opens the other side's `/dev/pts/N`. Its path is in the application log, in the uplink's
//! state note (`harmony ctl status`), and, with `link = PATH`, a symlink to it (the sim board
//! makes `harmony-data/radio`, relative to the directory harmony runs in; `--data-dir` does
//! not move it). When nobody reads the far side and the terminal's buffer fills, unread bytes
//! are discarded, like a radio transmitting into the air (`sim_discarded`).

pub mod budget;
pub mod config;
pub mod frame;
pub mod ground;
pub mod ground_view;
pub mod health;
pub mod persist;
pub mod protocol;
pub mod radio;
pub mod route;
pub mod signing;
pub mod telemetry;

use std::path::Path;
use std::sync::Arc;

use crate::concurrency::{ErrorBudget, LoopConfig, LoopProcessor, Processor};
use crate::sinks::drain::SinkInputs;

/// Why the uplink could not be built.
#[derive(Debug, thiserror::Error)]
pub enum UplinkError {
    #[error("{field}: {message}")]
    Config { field: String, message: String },
    #[error("uplink.signing_key: {0}")]
    Key(#[from] signing::KeyError),
    #[error("uplink.signing_state: {0} (give uplink.signing_state a writable place)")]
    State(#[from] persist::SigningError),
    #[error("uplink.sim: cannot create the simulated radio: {0}")]
    Pty(std::io::Error),
}

impl UplinkError {
    /// A mistake in the board file (refuse to start), rather than trouble at run time.
    pub fn is_board_error(&self) -> bool {
        !matches!(self, UplinkError::Pty(_))
    }
}

/// The uplink processor and, with signing, the persister that saves its state: someone must
/// call [`persist::Persister::save_pending`] periodically and once after the tree stopped.
pub struct Built {
    pub processor: Box<dyn Processor>,
    pub persister: Option<Arc<persist::Persister>>,
}

/// Builds the uplink processor (named `uplink`) that drains `inputs`. `fc_node` is the
/// flight controller's DroneCAN node ID (its NodeStatus is reported to the ground);
/// `data_dir` holds the signing state by default.
pub fn build(
    cfg: &config::UplinkSection,
    data_dir: &Path,
    inputs: SinkInputs,
    fc_node: Option<u8>,
) -> Result<Built, (UplinkError, SinkInputs)> {
    match prepare(cfg, data_dir) {
        Ok((radio, signing, unsigned)) => {
            let persister = signing.as_ref().map(|s| s.persister.clone());
            let up = telemetry::Uplink::new(cfg.clone(), inputs, fc_node, radio, signing, unsigned);
            // Never fail the tree over radio trouble: errors are counted and the loop goes on.
            let lc = LoopConfig {
                error_budget: ErrorBudget::UNLIMITED,
                ..LoopConfig::default()
            };
            Ok(Built {
                processor: Box::new(LoopProcessor::with_config(up, lc)),
                persister,
            })
        }
        Err(e) => Err((e, inputs)),
    }
}

type Prepared = (
    telemetry::RadioSpec,
    Option<telemetry::Signing>,
    telemetry::Unsigned,
);

fn prepare(cfg: &config::UplinkSection, data_dir: &Path) -> Result<Prepared, UplinkError> {
    cfg.validate()
        .map_err(|(field, message)| UplinkError::Config { field, message })?;
    let mut unsigned = telemetry::Unsigned::Accept;
    let signing = match (&cfg.signing_key, cfg.signing_state_path(data_dir)) {
        (Some(k), Some(state)) => match signing::load_key(k) {
            Ok(key) => {
                let p = persist::Persister::new(state);
                p.check_writable()?;
                let loaded = p.load().unwrap_or_else(|e| {
                    log::warn!(
                        "uplink: cannot read the signing state: {e}; starting from the clock"
                    );
                    persist::Loaded::default()
                });
                // The signing guide's rule: the larger of the clock and the stored timestamp.
                let start = loaded.ticks.unwrap_or(0).max(signing::clock_ticks());
                Some(telemetry::Signing {
                    key,
                    start,
                    streams: loaded.streams,
                    persister: Arc::new(p),
                })
            }
            Err(e) if e.is_missing() => {
                log::error!(
                    "uplink: signing key {} is MISSING: telemetry only, every command from the ground is REFUSED until the key is there and harmony restarts",
                    k.display()
                );
                unsigned = telemetry::Unsigned::RefuseKeyMissing;
                None
            }
            Err(e) => return Err(e.into()),
        },
        _ if cfg.accept_unsigned_commands => {
            log::warn!(
                "uplink: ACCEPTING UNSIGNED COMMANDS (uplink.accept_unsigned_commands): anyone on the radio's channel can pause sources, rotate logs or stop the firmware"
            );
            None
        }
        _ => {
            log::warn!(
                "uplink: no uplink.signing_key: telemetry only, every command is refused (set signing_key, see boards/rpi4b.toml)"
            );
            unsigned = telemetry::Unsigned::RefuseNoKey;
            None
        }
    };
    let radio = match &cfg.sim {
        Some(s) => telemetry::RadioSpec::Sim(Box::new(
            radio::SimRadio::new(s.link.as_deref()).map_err(UplinkError::Pty)?,
        )),
        None => telemetry::RadioSpec::Device {
            path: cfg.device.clone().unwrap_or_default(),
            baud: cfg.baud,
        },
    };
    Ok((radio, signing, unsigned))
}
