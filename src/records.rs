//! The records sources hand to sinks: fixed-size `Copy` values free of heap data, so moving one
//! through a queue never allocates, and a shared-memory ring can carry it to another process
//! (they are [`Plain`]).
//!
//! Every record carries a [`Stamp`]: the boot clock (monotonic, for ordering and intervals) and
//! the wall clock (for humans and for tools that expect Unix time).

use std::fmt;
use std::ops::Deref;

use crate::clock::Stamp;
use crate::concurrency::Plain;

/// Up to `N` (at most 255) bytes stored inline: a `Copy` byte string.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Bytes<const N: usize> {
    len: u8,
    buf: [u8; N],
}

impl<const N: usize> Bytes<N> {
    /// The first `N` bytes of `b` (cut, not refused: callers bound their input first).
    pub fn from_slice(b: &[u8]) -> Self {
        let n = b.len().min(N).min(u8::MAX as usize);
        let mut buf = [0u8; N];
        buf[..n].copy_from_slice(&b[..n]);
        Bytes { len: n as u8, buf }
    }
}

impl<const N: usize> Default for Bytes<N> {
    fn default() -> Self {
        Bytes {
            len: 0,
            buf: [0; N],
        }
    }
}

impl<const N: usize> Deref for Bytes<N> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.buf[..(self.len as usize).min(N)]
    }
}

impl<const N: usize> fmt::Debug for Bytes<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", String::from_utf8_lossy(self))
    }
}

/// Longest NMEA sentence kept, terminator included (gpsd's `NMEA_MAX`).
pub const NMEA_MAX: usize = 130;

/// One NMEA sentence exactly as the receiver sent it, line terminator included.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sentence {
    pub stamp: Stamp,
    pub bytes: Bytes<NMEA_MAX>,
}

impl Sentence {
    /// The sentence without its line terminator.
    pub fn text(&self) -> &str {
        let b = &self.bytes[..];
        let end = b
            .iter()
            .rposition(|&c| c != b'\r' && c != b'\n')
            .map_or(0, |i| i + 1);
        std::str::from_utf8(&b[..end]).unwrap_or("")
    }
}

/// GGA fix quality, as the receiver reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[repr(u8)]
pub enum FixQuality {
    #[default]
    Invalid = 0,
    Gps = 1,
    DGps = 2,
    Pps = 3,
    Rtk = 4,
    FloatRtk = 5,
    Estimated = 6,
    Manual = 7,
    Simulation = 8,
}

impl FixQuality {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Invalid => "invalid",
            Self::Gps => "gps",
            Self::DGps => "dgps",
            Self::Pps => "pps",
            Self::Rtk => "rtk",
            Self::FloatRtk => "float-rtk",
            Self::Estimated => "estimated",
            Self::Manual => "manual",
            Self::Simulation => "simulation",
        }
    }
}

/// A position fix assembled from GGA / RMC / VTG of one epoch.
#[derive(Clone, Copy, Debug, PartialEq, Default)]
pub struct Fix {
    pub stamp: Stamp,
    /// UTC time of the fix from the receiver, nanoseconds since the Unix epoch, when the date
    /// is known (RMC/ZDA); otherwise `None`.
    pub utc_ns: Option<i64>,
    /// Seconds since midnight UTC from the sentence, even without a date.
    pub time_of_day_s: Option<f64>,
    pub lat_deg: Option<f64>,
    pub lon_deg: Option<f64>,
    /// Metres above mean sea level.
    pub alt_msl_m: Option<f32>,
    pub quality: FixQuality,
    pub satellites: Option<u8>,
    pub hdop: Option<f32>,
    /// Ground speed in metres per second.
    pub speed_mps: Option<f32>,
    /// True course over ground, degrees.
    pub course_deg: Option<f32>,
}

/// What the GPS source hands to sinks.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum GpsRecord {
    Sentence(Sentence),
    Fix(Fix),
}

/// A rangefinder reading's status.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[repr(u8)]
pub enum RangeStatus {
    #[default]
    Ok = 0,
    /// Signal too weak for a reliable distance.
    Weak = 1,
    /// Receiver saturated (strong return or sunlight).
    Saturated = 2,
    /// The sensor flagged the measurement invalid (no peak found).
    Invalid = 3,
    /// The sensor reported a health or processing fault.
    Fault = 4,
}

impl RangeStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Weak => "weak",
            Self::Saturated => "saturated",
            Self::Invalid => "invalid",
            Self::Fault => "fault",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "ok" => Self::Ok,
            "weak" => Self::Weak,
            "saturated" => Self::Saturated,
            "invalid" => Self::Invalid,
            "fault" => Self::Fault,
            _ => return None,
        })
    }
}

/// One rangefinder reading.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct RangeRecord {
    pub stamp: Stamp,
    pub distance_cm: u16,
    /// Sensor-specific signal strength (LIDAR-Lite: 0..255, TF-Luna: amplitude).
    pub strength: u16,
    pub status: RangeStatus,
}

/// Linux `can_id` flag: extended (29-bit) frame.
pub const CAN_EFF_FLAG: u32 = 0x8000_0000;
/// Linux `can_id` flag: remote transmission request.
pub const CAN_RTR_FLAG: u32 = 0x4000_0000;
/// Linux `can_id` flag: error frame.
pub const CAN_ERR_FLAG: u32 = 0x2000_0000;
pub const CAN_SFF_MASK: u32 = 0x0000_07FF;
pub const CAN_EFF_MASK: u32 = 0x1FFF_FFFF;
pub const CAN_ERR_MASK: u32 = 0x1FFF_FFFF;

/// One classic CAN frame, with the Linux `can_id` flags (EFF, RTR, ERR) kept in `id`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct CanRecord {
    /// Boot clock at reception; wall clock from the kernel's receive timestamp when the
    /// socket provides one (else read at reception).
    pub stamp: Stamp,
    pub id: u32,
    /// Data length (for a remote frame: the requested length).
    pub len: u8,
    pub data: [u8; 8],
}

impl CanRecord {
    pub fn is_extended(&self) -> bool {
        self.id & CAN_EFF_FLAG != 0
    }

    pub fn is_remote(&self) -> bool {
        self.id & CAN_RTR_FLAG != 0
    }

    pub fn is_error(&self) -> bool {
        self.id & CAN_ERR_FLAG != 0
    }

    /// The identifier without flags (11 or 29 bits; the error class for error frames).
    pub fn raw_id(&self) -> u32 {
        if self.is_extended() || self.is_error() {
            self.id & CAN_EFF_MASK
        } else {
            self.id & CAN_SFF_MASK
        }
    }

    /// The payload (empty for remote frames).
    pub fn payload(&self) -> &[u8] {
        if self.is_remote() {
            &[]
        } else {
            &self.data[..(self.len as usize).min(8)]
        }
    }
}

// SAFETY: the records hold numbers, enums, options and inline byte arrays: no pointers or
// handles. Their producers are the firmware's own sources (a trusted process); records from
// an untrusted process use integer-only types (see `concurrency::ring`).
unsafe impl Plain for GpsRecord {}
unsafe impl Plain for RangeRecord {}
unsafe impl Plain for CanRecord {}
