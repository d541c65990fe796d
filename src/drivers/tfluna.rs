//! Benewake TF-Luna in I2C mode (address 0x10).
//!
//! From the TF-Luna product manual (SJ-PM-TF-Luna, I2C register table) and Bud Ryerson's
//! TFLuna-I2C library:
//! * DIST (cm) at 0x00/0x01, AMP (signal strength) at 0x02/0x03, TEMP (0.01 °C) at 0x04/0x05,
//!   all little-endian; the register pointer auto-increments, so one 6-byte read gets them;
//! * MODE 0x23 (0 continuous, 1 trigger), TRIG_ONE_SHOT 0x24, ENABLE 0x25 (1 = on),
//!   FPS 0x26/0x27 (little-endian);
//! * AMP < 100 is too weak to trust, AMP = 0xFFFF (and > 32768) means over-exposure.
//!
//! Trigger mode is used (the manual recommends it; a continuous-mode read can catch a value
//! being updated). Like the LIDAR-Lite driver, measurements are pipelined: `measure` reads the
//! previous trigger's result and triggers the next.

use embedded_hal::i2c::I2c;

use super::{RangeError, Rangefinder, Reading, i2c_fault};
use crate::records::RangeStatus;

pub const DEFAULT_ADDRESS: u8 = 0x10;
/// Highest output rate (500 Hz internal / 2).
pub const MAX_RATE_HZ: u32 = 250;
/// Longest plausible distance: the 8 m range plus margin.
pub const MAX_RANGE_CM: u16 = 1000;

pub const REG_DIST_LOW: u8 = 0x00;
pub const REG_MODE: u8 = 0x23;
pub const REG_TRIG_ONE_SHOT: u8 = 0x24;
pub const REG_ENABLE: u8 = 0x25;

pub const AMP_MIN: u16 = 100;
pub const AMP_OVEREXPOSED: u16 = 32768;

/// Errors of this driver.
#[derive(Debug, PartialEq, Eq)]
pub enum Error<E> {
    I2c(E),
}

/// Classifies a signal amplitude.
pub fn status_of(amp: u16) -> RangeStatus {
    if amp == 0xffff || amp > AMP_OVEREXPOSED {
        RangeStatus::Saturated
    } else if amp < AMP_MIN {
        RangeStatus::Weak
    } else {
        RangeStatus::Ok
    }
}

/// The driver. Owns the bus until [`TfLuna::destroy`].
pub struct TfLuna<I2C> {
    i2c: I2C,
    address: u8,
    triggered: bool,
    /// Last temperature read, in 0.01 °C.
    pub temperature_centi_c: i16,
}

impl<I2C: I2c> TfLuna<I2C> {
    pub fn new(i2c: I2C) -> Self {
        Self::with_address(i2c, DEFAULT_ADDRESS)
    }

    pub fn with_address(i2c: I2C, address: u8) -> Self {
        TfLuna {
            i2c,
            address,
            triggered: false,
            temperature_centi_c: 0,
        }
    }

    pub fn destroy(self) -> I2C {
        self.i2c
    }

    fn write_reg(&mut self, reg: u8, value: u8) -> Result<(), Error<I2C::Error>> {
        self.i2c
            .write(self.address, &[reg, value])
            .map_err(Error::I2c)
    }

    /// Enables ranging in trigger mode.
    pub fn configure(&mut self) -> Result<(), Error<I2C::Error>> {
        self.write_reg(REG_ENABLE, 1)?;
        self.write_reg(REG_MODE, 1)?;
        self.triggered = false;
        Ok(())
    }

    pub fn trigger(&mut self) -> Result<(), Error<I2C::Error>> {
        self.write_reg(REG_TRIG_ONE_SHOT, 1)?;
        self.triggered = true;
        Ok(())
    }

    /// Reads distance, amplitude and temperature in one 6-byte read.
    pub fn read(&mut self) -> Result<Reading, Error<I2C::Error>> {
        let mut b = [0u8; 6];
        self.i2c
            .write(self.address, &[REG_DIST_LOW])
            .map_err(Error::I2c)?;
        self.i2c.read(self.address, &mut b).map_err(Error::I2c)?;
        let amp = u16::from_le_bytes([b[2], b[3]]);
        self.temperature_centi_c = i16::from_le_bytes([b[4], b[5]]);
        Ok(Reading {
            distance_cm: u16::from_le_bytes([b[0], b[1]]),
            strength: amp,
            status: status_of(amp),
        })
    }

    /// Pipelined measurement: the previous trigger's result (if any), then triggers the next.
    pub fn measure(&mut self) -> Result<Option<Reading>, Error<I2C::Error>> {
        let r = if self.triggered {
            Some(self.read()?)
        } else {
            None
        };
        self.trigger()?;
        Ok(r)
    }
}

impl<I2C> Rangefinder for TfLuna<I2C>
where
    I2C: I2c + Send + 'static,
{
    fn model(&self) -> &'static str {
        "tf-luna"
    }

    fn max_rate_hz(&self) -> u32 {
        MAX_RATE_HZ
    }

    fn max_range_cm(&self) -> u16 {
        MAX_RANGE_CM
    }

    fn init(&mut self, _rate_hz: u32) -> Result<(), RangeError> {
        self.configure().map_err(|e| self.fault(e))
    }

    fn measure(&mut self) -> Result<Option<Reading>, RangeError> {
        TfLuna::measure(self).map_err(|e| self.fault(e))
    }
}

impl<I2C: I2c> TfLuna<I2C> {
    fn fault(&self, e: Error<I2C::Error>) -> RangeError {
        let Error::I2c(e) = e;
        RangeError {
            model: "tf-luna",
            kind: i2c_fault(&e),
            message: format!("I2C error at 0x{:02x}: {e:?}", self.address),
        }
    }
}
