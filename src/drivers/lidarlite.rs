//! Garmin LIDAR-Lite v3 over I2C (address 0x62).
//!
//! From the "LIDAR-Lite v3 Operation Manual and Technical Specifications" and Garmin's own
//! Arduino and Raspberry Pi libraries:
//! * write 0x04 to ACQ_COMMAND (0x00) to measure with receiver bias correction, 0x03 without;
//!   Garmin recommends correction once every 100 measurements;
//! * STATUS (0x01): bit0 busy, bit2 signal overflow, bit3 invalid (no peak), bit5 health (1 =
//!   ok), bit6 process error;
//! * distance in cm, big-endian, at 0x0f/0x10, read as two bytes from 0x8f (bit 7 of the
//!   register address turns on auto-increment); signal strength at 0x0e;
//! * the v3 does not support repeated START, so each register read is a write of the address
//!   and a separate read (with a STOP between), as Garmin's libraries do.
//!
//! Measurements are pipelined: each `measure` reads the result of the measurement started by
//! the previous call, then starts the next one. At the loop's rate the previous measurement
//! has long finished, so there is no busy-polling; a sensor still busy is reported as a
//! timeout and retried.

use embedded_hal::i2c::I2c;

use super::{FaultKind, RangeError, Rangefinder, Reading, i2c_fault};
use crate::records::RangeStatus;

pub const DEFAULT_ADDRESS: u8 = 0x62;
/// Highest measurement rate Garmin specifies for the v3.
pub const MAX_RATE_HZ: u32 = 500;
/// Longest plausible distance: the 40 m range plus margin (the PWM reader's limit too).
pub const MAX_RANGE_CM: u16 = 5000;

pub const REG_ACQ_COMMAND: u8 = 0x00;
pub const REG_STATUS: u8 = 0x01;
pub const REG_SIG_COUNT_VAL: u8 = 0x02;
pub const REG_ACQ_CONFIG: u8 = 0x04;
pub const REG_SIGNAL_STRENGTH: u8 = 0x0e;
pub const REG_FULL_DELAY_AUTOINC: u8 = 0x8f;
pub const REG_THRESHOLD_BYPASS: u8 = 0x1c;

pub const CMD_MEASURE_BIAS: u8 = 0x04;
pub const CMD_MEASURE: u8 = 0x03;

pub const STATUS_BUSY: u8 = 0x01;
pub const STATUS_SIGNAL_OVERFLOW: u8 = 0x04;
pub const STATUS_INVALID: u8 = 0x08;
pub const STATUS_HEALTH: u8 = 0x20;
pub const STATUS_PROCESS_ERROR: u8 = 0x40;

/// Errors of this driver.
#[derive(Debug, PartialEq, Eq)]
pub enum Error<E> {
    /// The bus reported an error (NACK: the sensor is absent or unplugged).
    I2c(E),
    /// The sensor was still measuring when its result was due.
    Busy,
}

/// The manual's preset configurations (SIG_COUNT_VAL, ACQ_CONFIG, THRESHOLD_BYPASS).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Preset {
    Default,
    ShortRangeHighSpeed,
    DefaultRangeFaster,
    MaxRange,
    HighSensitivity,
    LowSensitivity,
}

impl Preset {
    fn registers(self) -> [u8; 3] {
        match self {
            Preset::Default => [0x80, 0x08, 0x00],
            Preset::ShortRangeHighSpeed => [0x1d, 0x08, 0x00],
            Preset::DefaultRangeFaster => [0x80, 0x00, 0x00],
            Preset::MaxRange => [0xff, 0x08, 0x00],
            Preset::HighSensitivity => [0x80, 0x08, 0x80],
            Preset::LowSensitivity => [0x80, 0x08, 0xb0],
        }
    }
}

/// Classifies a STATUS byte.
pub fn status_of(status: u8) -> RangeStatus {
    if status & STATUS_HEALTH == 0 || status & STATUS_PROCESS_ERROR != 0 {
        RangeStatus::Fault
    } else if status & STATUS_INVALID != 0 {
        RangeStatus::Invalid
    } else if status & STATUS_SIGNAL_OVERFLOW != 0 {
        RangeStatus::Saturated
    } else {
        RangeStatus::Ok
    }
}

/// The driver. Owns the bus until [`LidarLiteV3::destroy`].
pub struct LidarLiteV3<I2C> {
    i2c: I2C,
    address: u8,
    count: u32,
    started: bool,
}

impl<I2C: I2c> LidarLiteV3<I2C> {
    pub fn new(i2c: I2C) -> Self {
        Self::with_address(i2c, DEFAULT_ADDRESS)
    }

    pub fn with_address(i2c: I2C, address: u8) -> Self {
        LidarLiteV3 {
            i2c,
            address,
            count: 0,
            started: false,
        }
    }

    /// Gives the bus back.
    pub fn destroy(self) -> I2C {
        self.i2c
    }

    fn write_reg(&mut self, reg: u8, value: u8) -> Result<(), Error<I2C::Error>> {
        self.i2c
            .write(self.address, &[reg, value])
            .map_err(Error::I2c)
    }

    fn read_regs(&mut self, reg: u8, buf: &mut [u8]) -> Result<(), Error<I2C::Error>> {
        self.i2c.write(self.address, &[reg]).map_err(Error::I2c)?;
        self.i2c.read(self.address, buf).map_err(Error::I2c)
    }

    /// Writes one of the manual's preset configurations.
    pub fn configure(&mut self, p: Preset) -> Result<(), Error<I2C::Error>> {
        let [sig, acq, thr] = p.registers();
        self.write_reg(REG_SIG_COUNT_VAL, sig)?;
        self.write_reg(REG_ACQ_CONFIG, acq)?;
        self.write_reg(REG_THRESHOLD_BYPASS, thr)?;
        self.started = false;
        Ok(())
    }

    /// Starts a measurement; bias correction on every 100th.
    pub fn start(&mut self) -> Result<(), Error<I2C::Error>> {
        let cmd = if self.count.is_multiple_of(100) {
            CMD_MEASURE_BIAS
        } else {
            CMD_MEASURE
        };
        self.write_reg(REG_ACQ_COMMAND, cmd)?;
        self.count = self.count.wrapping_add(1);
        self.started = true;
        Ok(())
    }

    /// Reads the finished measurement (status, distance, signal strength).
    pub fn read(&mut self) -> Result<Reading, Error<I2C::Error>> {
        let mut status = [0u8];
        self.read_regs(REG_STATUS, &mut status)?;
        if status[0] & STATUS_BUSY != 0 {
            return Err(Error::Busy);
        }
        let mut dist = [0u8; 2];
        self.read_regs(REG_FULL_DELAY_AUTOINC, &mut dist)?;
        let mut strength = [0u8];
        self.read_regs(REG_SIGNAL_STRENGTH, &mut strength)?;
        Ok(Reading {
            distance_cm: u16::from_be_bytes(dist),
            strength: strength[0] as u16,
            status: status_of(status[0]),
        })
    }

    /// Pipelined measurement: the previous result (if any), then the next measurement starts.
    pub fn measure(&mut self) -> Result<Option<Reading>, Error<I2C::Error>> {
        let r = if self.started {
            Some(self.read()?)
        } else {
            None
        };
        self.start()?;
        Ok(r)
    }
}

impl<I2C> Rangefinder for LidarLiteV3<I2C>
where
    I2C: I2c + Send + 'static,
{
    fn model(&self) -> &'static str {
        "lidar-lite-v3"
    }

    fn max_rate_hz(&self) -> u32 {
        MAX_RATE_HZ
    }

    fn max_range_cm(&self) -> u16 {
        MAX_RANGE_CM
    }

    fn init(&mut self, _rate_hz: u32) -> Result<(), RangeError> {
        self.configure(Preset::Default).map_err(|e| self.fault(e))
    }

    fn measure(&mut self) -> Result<Option<Reading>, RangeError> {
        LidarLiteV3::measure(self).map_err(|e| self.fault(e))
    }
}

impl<I2C: I2c> LidarLiteV3<I2C> {
    fn fault(&self, e: Error<I2C::Error>) -> RangeError {
        match e {
            Error::I2c(e) => RangeError {
                model: "lidar-lite-v3",
                kind: i2c_fault(&e),
                message: format!("I2C error at 0x{:02x}: {e:?}", self.address),
            },
            Error::Busy => RangeError {
                model: "lidar-lite-v3",
                kind: FaultKind::Timeout,
                message: "still busy when the result was due".into(),
            },
        }
    }
}
