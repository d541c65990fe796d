//! Device drivers, one module per device (rppal's layout), each with its own error type.
//!
//! The rangefinder drivers are generic over `embedded_hal::i2c::I2c` and take the bus by value
//! (`destroy()` hands it back), so the same driver runs on the Pi's bus (rppal), on the
//! simulated device ([`crate::sim::rangefinder`]) and on `embedded-hal-mock` in tests.
//!
//! * [`lidarlite`]: Garmin LIDAR-Lite v3 over I2C.
//! * [`tfluna`]: Benewake TF-Luna in I2C mode.
//! * [`pwm`]: LIDAR-Lite v3 pulse-width output measured with GPIO interrupts.
//! * [`serial`]: a UART (the GPS) opened and configured with termios.
//! * [`can`]: the CAN bus through a socketcan raw socket.

pub mod can;
pub mod lidarlite;
pub mod pwm;
pub mod serial;
pub mod tfluna;

use crate::records::RangeStatus;

/// One reading from a rangefinder.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reading {
    pub distance_cm: u16,
    pub strength: u16,
    pub status: RangeStatus,
}

/// What went wrong talking to a rangefinder, as the source counts it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultKind {
    /// The device did not acknowledge (absent, unplugged, wrong address).
    Nack,
    /// The device answered but had no result in time.
    Timeout,
    /// Any other bus or GPIO error.
    Bus,
}

/// A rangefinder as the source sees it: the I2C drivers and the PWM reader implement it.
pub trait Rangefinder: Send + 'static {
    fn model(&self) -> &'static str;
    /// Highest rate the sensor supports, in Hz.
    fn max_rate_hz(&self) -> u32;
    /// Longest distance the sensor can report, in cm (its range plus a margin): a reading
    /// beyond it is a bus glitch or a garbled register, and the source drops and counts it.
    fn max_range_cm(&self) -> u16;
    /// Brings the sensor into measuring mode (after power-up or reconnection).
    fn init(&mut self, rate_hz: u32) -> Result<(), RangeError>;
    /// The result of the previous measurement (if one is ready) and starts the next one.
    fn measure(&mut self) -> Result<Option<Reading>, RangeError>;
}

/// A rangefinder fault with its cause, from any driver.
#[derive(Debug, thiserror::Error)]
#[error("{model}: {message}")]
pub struct RangeError {
    pub model: &'static str,
    pub kind: FaultKind,
    pub message: String,
}

/// Classifies an embedded-hal I2C error.
pub fn i2c_fault<E: embedded_hal::i2c::Error>(e: &E) -> FaultKind {
    use embedded_hal::i2c::ErrorKind;
    match e.kind() {
        ErrorKind::NoAcknowledge(_) => FaultKind::Nack,
        _ => FaultKind::Bus,
    }
}
