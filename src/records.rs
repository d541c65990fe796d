//! The records sources hand to sinks: fixed-size, `Copy`-free of heap data, so moving one
//! through a queue never allocates.
//!
//! Every record carries a [`Stamp`]: the boot clock (monotonic, for ordering and intervals) and
//! the wall clock (for humans and for tools that expect Unix time).

use heapless::Vec as HVec;

use crate::clock::Stamp;

/// Longest NMEA sentence kept, terminator included (gpsd's `NMEA_MAX`).
pub const NMEA_MAX: usize = 130;

/// One NMEA sentence exactly as the receiver sent it, line terminator included.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sentence {
    pub stamp: Stamp,
    pub bytes: HVec<u8, NMEA_MAX>,
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
#[derive(Clone, Debug, PartialEq)]
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
