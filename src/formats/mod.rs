//! Wire and file formats: what comes off the devices and what goes into the log files.
//!
//! * [`nmea`]: the GPS intake (gpsd-compatible framing, checksums, fix assembly).
//! * [`dronecan`]: DroneCAN frame IDs, tail bytes, NodeStatus.
//! * [`candump`]: the can-utils `candump -l` line format, written and read.

pub mod candump;
pub mod csv;
pub mod dronecan;
pub mod nmea;
pub mod utc;
