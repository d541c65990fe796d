//! The firmware's own health, read from the registry twice a second: each processor's state,
//! the logger's metrics, the uplink's own counters. It becomes SYS_STATUS, a round-robin list
//! of named values, and events (STATUSTEXT) on changes: each event is reported once, when it
//! happens, never again while the condition lasts.

use std::time::{Duration, Instant};

use heapless::String as HString;
use mavlink::dialects::common::{MavSeverity, MavState, MavSysStatusSensor, SYS_STATUS_DATA};
use mavlink::types::CharArray;

use super::frame::name10;
use super::protocol::{
    DISK_FREE_MB, LOG_DEGRADED, LOG_DROPPED, LOG_KIB, PROC_PREFIX, QUEUE_DROPPED, SIGN_REJECTED,
    state_code,
};
use crate::concurrency::{Kind, ProcState, Registry};

/// How often the registry is read.
pub const POLL_EVERY: Duration = Duration::from_millis(500);
/// Free space below which the ground is warned, and below which the disk counts as full.
pub const DISK_LOW_MB: u64 = 100;
pub const DISK_FULL_MB: u64 = 10;
/// The logger's dropped-records warning is repeated at most this often while drops go on.
pub const DROP_WARN_EVERY: Duration = Duration::from_secs(30);
/// Names the health list holds at most.
pub const MAX_VALUES: usize = 48;

/// The uplink's own figures that go into the health report.
#[derive(Clone, Copy, Debug, Default)]
pub struct Own {
    pub queue_dropped: u64,
    pub rx_accepted: u64,
    pub rx_rejected: u64,
    pub texts_dropped: u64,
}

struct Tracked {
    name: String,
    failures_seen: u64,
}

/// An event for the ground.
pub type Event = (MavSeverity, HString<{ super::telemetry::MAX_TEXT_LEN }>);

/// Reads and remembers the tree's health.
pub struct Health {
    tracked: Vec<Tracked>,
    /// Reused by every poll (see `poll`).
    entries: Vec<std::sync::Arc<crate::concurrency::Entry>>,
    values: Vec<(CharArray<10>, i32)>,
    next_value: usize,
    sys: SYS_STATUS_DATA,
    logger_degraded: bool,
    disk_low: bool,
    disk_full: bool,
    log_dropped: u64,
    drop_warned_at: Option<Instant>,
    cpu: Option<(Instant, Duration)>,
    cores: f64,
}

impl Default for Health {
    fn default() -> Self {
        Health {
            tracked: Vec::new(),
            entries: Vec::new(),
            values: Vec::with_capacity(MAX_VALUES),
            next_value: 0,
            sys: empty_sys(),
            logger_degraded: false,
            disk_low: false,
            disk_full: false,
            log_dropped: 0,
            drop_warned_at: None,
            cpu: None,
            cores: std::thread::available_parallelism().map_or(1.0, |n| n.get() as f64),
        }
    }
}

fn empty_sys() -> SYS_STATUS_DATA {
    SYS_STATUS_DATA {
        onboard_control_sensors_present: MavSysStatusSensor::empty(),
        onboard_control_sensors_enabled: MavSysStatusSensor::empty(),
        onboard_control_sensors_health: MavSysStatusSensor::empty(),
        load: 0,
        voltage_battery: u16::MAX,
        current_battery: -1,
        drop_rate_comm: 0,
        errors_comm: 0,
        errors_count1: 0,
        errors_count2: 0,
        errors_count3: 0,
        errors_count4: 0,
        battery_remaining: -1,
    }
}

fn sat16(v: u64) -> u16 {
    v.min(u16::MAX as u64) as u16
}

fn text(s: &str) -> HString<{ super::telemetry::MAX_TEXT_LEN }> {
    let mut h = HString::new();
    for c in s.chars() {
        if h.push(c).is_err() {
            break;
        }
    }
    h
}

/// The logger's metrics the health report uses.
#[derive(Default)]
struct LoggerValues {
    degraded: Option<u64>,
    disk_free_mb: Option<u64>,
    bytes_written: Option<u64>,
    records_dropped: Option<u64>,
    dropped: Option<u64>,
}

impl LoggerValues {
    fn take(&mut self, name: &str, v: u64) {
        let slot = match name {
            "degraded" => &mut self.degraded,
            "disk_free_mb" => &mut self.disk_free_mb,
            "bytes_written" => &mut self.bytes_written,
            "records_dropped" => &mut self.records_dropped,
            "dropped" => &mut self.dropped,
            _ => return,
        };
        *slot = Some(v);
    }
}

impl Health {
    /// Reads the registry; reports events through `event`.
    pub fn poll(&mut self, reg: &Registry, own: Own, now: Instant, mut event: impl FnMut(Event)) {
        self.values.clear();
        let mut present = MavSysStatusSensor::empty();
        let mut enabled = MavSysStatusSensor::empty();
        let mut healthy = MavSysStatusSensor::empty();
        let mut failed_now = 0u64;
        let mut logger = LoggerValues::default();
        // Records dropped by full queues, every source and sink (`queue.<sink>.dropped`).
        let mut queue_dropped = 0u64;
        // One reused vector and a visitor for the metrics: no allocation twice a second on
        // the uplink's thread (tests/alloc.rs).
        let mut entries = std::mem::take(&mut self.entries);
        reg.entries_into(&mut entries);
        for e in &entries {
            let state = e.state();
            // Failures so far: restarts, plus one while failed / waiting to restart (the
            // restart counter moves only when the new thread starts).
            let failures = e.restarts() as u64
                + matches!(state, ProcState::Failed | ProcState::Restarting) as u64;
            if matches!(state, ProcState::Failed | ProcState::Restarting) {
                failed_now += 1;
            }
            let t = match self.tracked.iter().position(|t| t.name == e.name) {
                Some(i) => &mut self.tracked[i],
                None => {
                    self.tracked.push(Tracked {
                        name: e.name.clone(),
                        failures_seen: 0,
                    });
                    self.tracked.last_mut().expect("just pushed")
                }
            };
            if failures > t.failures_seen {
                t.failures_seen = failures;
                let msg = if e.restarts() > 0 {
                    format!("{} failed (restart {})", e.name, e.restarts())
                } else {
                    format!("{} failed", e.name)
                };
                event((MavSeverity::MAV_SEVERITY_ERROR, text(&msg)));
            }
            if e.kind != Kind::Runner && self.values.len() < MAX_VALUES - 8 {
                let mut n: HString<10> = HString::new();
                let _ = n.push_str(PROC_PREFIX);
                for c in e.name.chars() {
                    if n.push(c).is_err() {
                        break;
                    }
                }
                self.values
                    .push((CharArray::from(n.as_str()), state_code(state)));
            }
            let bit = match e.name.as_str() {
                "gps" => MavSysStatusSensor::MAV_SYS_STATUS_SENSOR_GPS,
                "rangefinder" => MavSysStatusSensor::MAV_SYS_STATUS_SENSOR_LASER_POSITION,
                "logger" => MavSysStatusSensor::MAV_SYS_STATUS_LOGGING,
                _ => MavSysStatusSensor::empty(),
            };
            present |= bit;
            if state != ProcState::Waiting {
                enabled |= bit;
            }
            if state == ProcState::Active {
                healthy |= bit;
            }
            let is_logger = e.name == "logger";
            e.visit_metrics(|n, v| {
                if n.starts_with("queue.") && n.ends_with(".dropped") {
                    queue_dropped += v;
                }
                if is_logger {
                    logger.take(n, v);
                }
            });
        }
        entries.clear();
        self.entries = entries;
        let degraded = logger.degraded.map(|v| v != 0);
        let disk_mb = logger.disk_free_mb;
        let bytes = logger.bytes_written;
        let dropped = logger.records_dropped.or(logger.dropped);
        if let Some(d) = degraded {
            self.values.push((name10(LOG_DEGRADED), d as i32));
            if d {
                healthy.remove(MavSysStatusSensor::MAV_SYS_STATUS_LOGGING);
            }
            if d && !self.logger_degraded {
                event((
                    MavSeverity::MAV_SEVERITY_WARNING,
                    text("logger degraded: records not saved"),
                ));
            } else if !d && self.logger_degraded {
                event((MavSeverity::MAV_SEVERITY_NOTICE, text("logger recovered")));
            }
            self.logger_degraded = d;
        }
        if let Some(mb) = disk_mb {
            self.values
                .push((name10(DISK_FREE_MB), mb.min(i32::MAX as u64) as i32));
            if mb < DISK_FULL_MB && !self.disk_full {
                self.disk_full = true;
                event((
                    MavSeverity::MAV_SEVERITY_CRITICAL,
                    text(&format!("disk full: {mb} MB free")),
                ));
            } else if mb > 2 * DISK_FULL_MB {
                self.disk_full = false;
            }
            if mb < DISK_LOW_MB && !self.disk_low && !self.disk_full {
                self.disk_low = true;
                event((
                    MavSeverity::MAV_SEVERITY_WARNING,
                    text(&format!("disk low: {mb} MB free")),
                ));
            } else if mb > DISK_LOW_MB * 3 / 2 {
                self.disk_low = false;
            }
        }
        if let Some(b) = bytes {
            self.values
                .push((name10(LOG_KIB), (b / 1024).min(i32::MAX as u64) as i32));
        }
        if let Some(d) = dropped {
            self.values
                .push((name10(LOG_DROPPED), d.min(i32::MAX as u64) as i32));
            if d > self.log_dropped
                && self
                    .drop_warned_at
                    .is_none_or(|t| now.duration_since(t) >= DROP_WARN_EVERY)
            {
                self.drop_warned_at = Some(now);
                event((
                    MavSeverity::MAV_SEVERITY_WARNING,
                    text(&format!("logger dropped {} records", d - self.log_dropped)),
                ));
                self.log_dropped = d;
            }
        }
        // Sources that do not publish their queues still show in the uplink's own count.
        let queue_dropped = queue_dropped.max(own.queue_dropped);
        self.values.push((
            name10(QUEUE_DROPPED),
            queue_dropped.min(i32::MAX as u64) as i32,
        ));
        self.values.push((
            name10(SIGN_REJECTED),
            own.rx_rejected.min(i32::MAX as u64) as i32,
        ));
        let seen = own.rx_accepted + own.rx_rejected;
        self.sys = SYS_STATUS_DATA {
            onboard_control_sensors_present: present,
            onboard_control_sensors_enabled: enabled,
            onboard_control_sensors_health: healthy,
            load: self.load(now),
            drop_rate_comm: (own.rx_rejected * 10_000).checked_div(seen).unwrap_or(0) as u16,
            errors_comm: sat16(own.rx_rejected),
            errors_count1: sat16(queue_dropped),
            errors_count2: sat16(dropped.unwrap_or(0)),
            errors_count3: sat16(failed_now),
            errors_count4: sat16(own.texts_dropped),
            ..empty_sys()
        };
    }

    /// The process's CPU use since the last poll, in 0.1 % of all cores.
    fn load(&mut self, now: Instant) -> u16 {
        use nix::sys::resource::{UsageWho, getrusage};
        let Ok(u) = getrusage(UsageWho::RUSAGE_SELF) else {
            return 0;
        };
        let tv = |t: nix::sys::time::TimeVal| {
            Duration::from_secs(t.tv_sec().max(0) as u64)
                + Duration::from_micros(t.tv_usec().max(0) as u64)
        };
        let cpu = tv(u.user_time()) + tv(u.system_time());
        let load = match self.cpu {
            Some((t, c)) if now > t => {
                let used = cpu.saturating_sub(c).as_secs_f64();
                let wall = (now - t).as_secs_f64() * self.cores;
                (used / wall * 1000.0).clamp(0.0, 1000.0) as u16
            }
            _ => self.sys.load,
        };
        self.cpu = Some((now, cpu));
        load
    }

    /// SYS_STATUS as of the last poll.
    pub fn sys_status(&self) -> SYS_STATUS_DATA {
        self.sys.clone()
    }

    pub fn has_values(&self) -> bool {
        !self.values.is_empty()
    }

    /// The named value whose turn it is.
    pub fn value(&self) -> Option<(CharArray<10>, i32)> {
        if self.values.is_empty() {
            return None;
        }
        Some(self.values[self.next_value % self.values.len()])
    }

    /// Moves on to the next value (once the current one was sent).
    pub fn advance(&mut self) {
        self.next_value = (self.next_value + 1) % self.values.len().max(1);
    }

    /// The heartbeat's system status: critical while a processor has failed or the logger
    /// is degraded, else active.
    pub fn state(&self) -> MavState {
        if self.sys.errors_count3 > 0 || self.logger_degraded {
            MavState::MAV_STATE_CRITICAL
        } else {
            MavState::MAV_STATE_ACTIVE
        }
    }
}
