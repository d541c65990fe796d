//! Simulated devices for a board without hardware (`boards/sim.toml`). Each sits behind the
//! same interface as the real device, so the sources run unchanged:
//!
//! * [`gps`]: writes a real receiver's NMEA capture into a pseudo-terminal pair; the GPS source
//!   opens the other end like a UART.
//! * [`rangefinder`]: a LIDAR-Lite v3 or TF-Luna register model behind `embedded_hal::i2c::I2c`,
//!   flying a plausible altitude profile.
//! * [`can_replay`]: replays a candump capture at its recorded timing, scaled, at a fixed frame
//!   rate, or as fast as possible (the build machines' kernel has no CAN at all).
//!
//! `builtin:NAME` captures are compiled into the binary so `harmony run` works anywhere.

pub mod can_replay;
pub mod gps;
pub mod rangefinder;

/// Captures built into the binary, by name.
pub fn builtin(name: &str) -> Option<&'static [u8]> {
    Some(match name {
        "quectel-l76k" => include_bytes!("../../fixtures/nmea/quectel-l76k-nmea.log"),
        "neo-m8n" => include_bytes!("../../fixtures/nmea/neo-m8n.log"),
        "canboat" => include_bytes!("../../fixtures/can/candumpSample3.txt"),
        _ => return None,
    })
}

/// Names accepted after `builtin:`.
pub const BUILTIN_NAMES: [&str; 3] = ["quectel-l76k", "neo-m8n", "canboat"];
