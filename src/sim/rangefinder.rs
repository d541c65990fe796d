//! A simulated rangefinder on a simulated I2C bus: the register model of a LIDAR-Lite v3 or a
//! TF-Luna behind `embedded_hal::i2c::I2c`, so the real drivers run against it unchanged.
//!
//! The distance follows a plausible flight ([`altitude_m`]): on the ground, climb, hover with
//! a little sway, descend, land, every two minutes. Faults can be injected from tests through
//! [`SimHandle`]: unplug the sensor (every transaction NACKs) or NACK the next N transactions.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Instant;

use embedded_hal::i2c::{ErrorKind, ErrorType, I2c, NoAcknowledgeSource, Operation};

/// Which device the model answers as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SimModel {
    LidarLiteV3,
    TfLuna,
}

impl SimModel {
    pub fn address(self) -> u8 {
        match self {
            SimModel::LidarLiteV3 => crate::drivers::lidarlite::DEFAULT_ADDRESS,
            SimModel::TfLuna => crate::drivers::tfluna::DEFAULT_ADDRESS,
        }
    }

    /// Longest distance the sensor reports, in cm.
    fn max_cm(self) -> u16 {
        match self {
            SimModel::LidarLiteV3 => 4000,
            SimModel::TfLuna => 800,
        }
    }
}

/// Height above ground in metres, `t` seconds into the simulated flight (period 120 s).
pub fn altitude_m(t: f64) -> f64 {
    let t = t.rem_euclid(120.0);
    let smooth = |x: f64| x * x * (3.0 - 2.0 * x);
    let ground = 0.12;
    let hover = 25.0;
    if t < 5.0 {
        ground
    } else if t < 25.0 {
        ground + (hover - ground) * smooth((t - 5.0) / 20.0)
    } else if t < 85.0 {
        hover + 0.4 * (t * 0.7).sin() + 0.15 * (t * 3.1).sin()
    } else if t < 105.0 {
        hover - (hover - ground) * smooth((t - 85.0) / 20.0)
    } else {
        ground
    }
}

struct Shared {
    start: Instant,
    unplugged: AtomicBool,
    nack_next: AtomicU32,
    transactions: AtomicU32,
}

/// Controls a simulated sensor from outside (tests, fault injection).
#[derive(Clone)]
pub struct SimHandle(Arc<Shared>);

impl SimHandle {
    pub fn unplug(&self) {
        self.0.unplugged.store(true, Ordering::SeqCst);
    }

    pub fn plug_in(&self) {
        self.0.unplugged.store(false, Ordering::SeqCst);
    }

    /// Makes the next `n` transactions fail with a NACK.
    pub fn nack_next(&self, n: u32) {
        self.0.nack_next.store(n, Ordering::SeqCst);
    }

    pub fn transactions(&self) -> u32 {
        self.0.transactions.load(Ordering::Relaxed)
    }
}

/// The simulated sensor; each [`SimSensor::bus`] is a handle on the same device.
pub struct SimSensor {
    shared: Arc<Shared>,
    model: SimModel,
}

impl SimSensor {
    pub fn new(model: SimModel) -> Self {
        SimSensor {
            shared: Arc::new(Shared {
                start: Instant::now(),
                unplugged: AtomicBool::new(false),
                nack_next: AtomicU32::new(0),
                transactions: AtomicU32::new(0),
            }),
            model,
        }
    }

    pub fn handle(&self) -> SimHandle {
        SimHandle(self.shared.clone())
    }

    /// A bus with this sensor on it.
    pub fn bus(&self) -> SimBus {
        SimBus {
            shared: self.shared.clone(),
            model: self.model,
            regs: [0; 0x40],
            pointer: 0,
        }
    }
}

/// One simulated I2C bus with the sensor at its model's address.
pub struct SimBus {
    shared: Arc<Shared>,
    model: SimModel,
    regs: [u8; 0x40],
    pointer: u8,
}

impl ErrorType for SimBus {
    type Error = ErrorKind;
}

impl SimBus {
    fn measure(&mut self) {
        let t = self.shared.start.elapsed().as_secs_f64();
        let cm = (altitude_m(t) * 100.0).round() as u16;
        let max = self.model.max_cm();
        match self.model {
            SimModel::LidarLiteV3 => {
                let (d, status, strength) = if cm > max {
                    (1, 0x20 | 0x08, 8u8)
                } else {
                    // Stronger return when closer.
                    (cm, 0x20, (255 - (cm / 20).min(200)) as u8)
                };
                self.regs[0x01] = status;
                self.regs[0x0f..0x11].copy_from_slice(&d.to_be_bytes());
                self.regs[0x0e] = strength;
            }
            SimModel::TfLuna => {
                let (d, amp) = if cm > max {
                    (0u16, 40u16)
                } else {
                    (cm, 20_000 - cm * 20)
                };
                self.regs[0x00..0x02].copy_from_slice(&d.to_le_bytes());
                self.regs[0x02..0x04].copy_from_slice(&amp.to_le_bytes());
                self.regs[0x04..0x06].copy_from_slice(&2450i16.to_le_bytes());
            }
        }
    }

    fn write(&mut self, bytes: &[u8]) {
        let Some((&reg, rest)) = bytes.split_first() else {
            return;
        };
        self.pointer = reg;
        let r = (reg & 0x3f) as usize;
        if let Some(&v) = rest.first() {
            self.regs[r] = v;
            match (self.model, reg, v) {
                (SimModel::LidarLiteV3, 0x00, 0x03 | 0x04) => self.measure(),
                (SimModel::TfLuna, 0x24, 0x01) => self.measure(),
                _ => {}
            }
        }
    }

    fn read(&mut self, buf: &mut [u8]) {
        // LIDAR-Lite auto-increments only with bit 7 of the address; TF-Luna always does.
        let autoinc = self.model == SimModel::TfLuna || self.pointer & 0x80 != 0;
        let mut r = (self.pointer & 0x3f) as usize;
        for b in buf.iter_mut() {
            *b = self.regs[r % 0x40];
            if autoinc {
                r += 1;
            }
        }
    }
}

impl I2c for SimBus {
    fn transaction(&mut self, address: u8, ops: &mut [Operation<'_>]) -> Result<(), ErrorKind> {
        self.shared.transactions.fetch_add(1, Ordering::Relaxed);
        let nack = ErrorKind::NoAcknowledge(NoAcknowledgeSource::Address);
        if address != self.model.address() || self.shared.unplugged.load(Ordering::SeqCst) {
            return Err(nack);
        }
        if self
            .shared
            .nack_next
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(nack);
        }
        for op in ops {
            match op {
                Operation::Write(b) => self.write(b),
                Operation::Read(b) => self.read(b),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drivers::Rangefinder;
    use crate::drivers::lidarlite::LidarLiteV3;
    use crate::drivers::tfluna::TfLuna;
    use crate::records::RangeStatus;

    #[test]
    fn profile_is_plausible() {
        assert!(altitude_m(0.0) < 0.2);
        assert!((altitude_m(50.0) - 25.0).abs() < 1.0);
        assert!(altitude_m(119.0) < 0.2);
        let mut prev = altitude_m(0.0);
        for i in 1..1200 {
            let a = altitude_m(i as f64 * 0.1);
            assert!((a - prev).abs() < 0.5, "no jumps");
            prev = a;
        }
    }

    #[test]
    fn real_drivers_read_the_simulated_sensors() {
        let s = SimSensor::new(SimModel::LidarLiteV3);
        let mut d = LidarLiteV3::new(s.bus());
        Rangefinder::init(&mut d, 100).unwrap();
        assert_eq!(Rangefinder::measure(&mut d).unwrap(), None);
        let r = Rangefinder::measure(&mut d).unwrap().unwrap();
        assert_eq!(r.status, RangeStatus::Ok);
        assert!((10..=20).contains(&r.distance_cm), "{r:?}");

        let s = SimSensor::new(SimModel::TfLuna);
        let mut d = TfLuna::new(s.bus());
        Rangefinder::init(&mut d, 100).unwrap();
        Rangefinder::measure(&mut d).unwrap();
        let r = Rangefinder::measure(&mut d).unwrap().unwrap();
        assert_eq!(r.status, RangeStatus::Ok);
        assert!((10..=20).contains(&r.distance_cm), "{r:?}");
    }

    #[test]
    fn unplugged_sensor_nacks() {
        let s = SimSensor::new(SimModel::LidarLiteV3);
        let h = s.handle();
        let mut d = LidarLiteV3::new(s.bus());
        h.unplug();
        assert!(Rangefinder::init(&mut d, 100).is_err());
        h.plug_in();
        h.nack_next(1);
        assert!(Rangefinder::init(&mut d, 100).is_err());
        assert!(Rangefinder::init(&mut d, 100).is_ok());
    }
}
