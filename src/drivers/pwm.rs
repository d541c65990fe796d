//! LIDAR-Lite v3 pulse-width output, measured with GPIO interrupts (rppal).
//!
//! In PWM mode the sensor answers a low level on its mode pin with a high pulse of 10 µs per
//! cm (Garmin's `GetDistancePwm` example). Keeping a GPIO output low through 1 kΩ on the mode
//! pin makes it measure continuously. Both edges are timestamped by the kernel (gpio-cdev);
//! the interrupt callback pairs a rising with the next falling edge and publishes the width.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use super::{FaultKind, RangeError, Rangefinder, Reading};
use crate::records::RangeStatus;

/// Microseconds of pulse per centimetre.
pub const US_PER_CM: u32 = 10;
/// Longest plausible pulse (40 m range plus margin).
pub const MAX_PULSE_US: u32 = 50_000;

/// Pairs edges into pulse widths.
#[derive(Default, Debug)]
pub struct PulseMeter {
    rising_at: Option<Duration>,
}

impl PulseMeter {
    /// Feeds one edge (kernel timestamp); returns the width of a completed high pulse in µs.
    pub fn edge(&mut self, rising: bool, at: Duration) -> Option<u32> {
        if rising {
            self.rising_at = Some(at);
            None
        } else {
            let start = self.rising_at.take()?;
            let w = at.checked_sub(start)?.as_micros();
            (w <= MAX_PULSE_US as u128).then_some(w as u32)
        }
    }
}

/// Pulse width to distance.
pub fn width_to_cm(width_us: u32) -> u16 {
    (width_us / US_PER_CM).min(u16::MAX as u32) as u16
}

struct Latest {
    seq: AtomicU64,
    width_us: AtomicU32,
}

/// Errors of this driver.
#[derive(Debug, thiserror::Error)]
pub enum PwmError {
    #[error(
        "GPIO {pin}: {source} (is /dev/gpiochip0 there and the service user in the gpio group?)"
    )]
    Gpio { pin: u8, source: rppal::gpio::Error },
}

/// The LIDAR-Lite v3 read through its PWM output.
pub struct LidarLitePwm {
    _input: rppal::gpio::InputPin,
    _trigger: Option<rppal::gpio::OutputPin>,
    latest: Arc<Latest>,
    seen: u64,
    misses: u32,
}

impl LidarLitePwm {
    /// Watches `pin` (BCM numbering); drives `trigger_pin` low for continuous measurement.
    pub fn open(pin: u8, trigger_pin: Option<u8>) -> Result<Self, PwmError> {
        let gpio = rppal::gpio::Gpio::new().map_err(|source| PwmError::Gpio { pin, source })?;
        let trigger = match trigger_pin {
            Some(t) => {
                let mut o = gpio
                    .get(t)
                    .map_err(|source| PwmError::Gpio { pin: t, source })?
                    .into_output();
                o.set_low();
                Some(o)
            }
            None => None,
        };
        let mut input = gpio
            .get(pin)
            .map_err(|source| PwmError::Gpio { pin, source })?
            .into_input();
        let latest = Arc::new(Latest {
            seq: AtomicU64::new(0),
            width_us: AtomicU32::new(0),
        });
        let l = latest.clone();
        let mut meter = PulseMeter::default();
        input
            .set_async_interrupt(rppal::gpio::Trigger::Both, None, move |ev| {
                let rising = ev.trigger == rppal::gpio::Trigger::RisingEdge;
                if let Some(w) = meter.edge(rising, ev.timestamp) {
                    l.width_us.store(w, Ordering::Relaxed);
                    l.seq.fetch_add(1, Ordering::Release);
                }
            })
            .map_err(|source| PwmError::Gpio { pin, source })?;
        Ok(LidarLitePwm {
            _input: input,
            _trigger: trigger,
            latest,
            seen: 0,
            misses: 0,
        })
    }
}

impl Rangefinder for LidarLitePwm {
    fn model(&self) -> &'static str {
        "lidar-lite-v3-pwm"
    }

    fn max_rate_hz(&self) -> u32 {
        super::lidarlite::MAX_RATE_HZ
    }

    fn max_range_cm(&self) -> u16 {
        super::lidarlite::MAX_RANGE_CM
    }

    fn init(&mut self, _rate_hz: u32) -> Result<(), RangeError> {
        Ok(())
    }

    fn measure(&mut self) -> Result<Option<Reading>, RangeError> {
        let seq = self.latest.seq.load(Ordering::Acquire);
        if seq == self.seen {
            self.misses += 1;
            if self.misses > 50 {
                return Err(RangeError {
                    model: "lidar-lite-v3-pwm",
                    kind: FaultKind::Timeout,
                    message: "no pulse on the mode pin".into(),
                });
            }
            return Ok(None);
        }
        self.seen = seq;
        self.misses = 0;
        let w = self.latest.width_us.load(Ordering::Relaxed);
        Ok(Some(Reading {
            distance_cm: width_to_cm(w),
            strength: 0,
            status: RangeStatus::Ok,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pulses_pair_rising_and_falling_edges() {
        let mut m = PulseMeter::default();
        let us = Duration::from_micros;
        assert_eq!(m.edge(false, us(5)), None, "falling without rising");
        assert_eq!(m.edge(true, us(100)), None);
        assert_eq!(m.edge(false, us(12_440)), Some(12_340));
        assert_eq!(width_to_cm(12_340), 1234);
        assert_eq!(m.edge(true, us(20_000)), None);
        assert_eq!(
            m.edge(false, us(200_000)),
            None,
            "too long to be a distance"
        );
    }
}
