//! Rangefinder drivers against a mock I2C bus (issue #3). Every test ends by checking that the
//! mock saw exactly the expected bus transactions (`done()`), after getting the bus back with
//! `destroy()`.

use embedded_hal::i2c::{ErrorKind, NoAcknowledgeSource};
use embedded_hal_mock::eh1::i2c::{Mock, Transaction as T};
use harmony::drivers::lidarlite::{self, LidarLiteV3, Preset};
use harmony::drivers::tfluna::{self, TfLuna};
use harmony::drivers::{FaultKind, Rangefinder, Reading};
use harmony::records::RangeStatus;

const LL: u8 = 0x62;
const TF: u8 = 0x10;

fn ll_read(status: u8, dist: u16, strength: u8) -> Vec<T> {
    vec![
        T::write(LL, vec![0x01]),
        T::read(LL, vec![status]),
        T::write(LL, vec![0x8f]),
        T::read(LL, dist.to_be_bytes().to_vec()),
        T::write(LL, vec![0x0e]),
        T::read(LL, vec![strength]),
    ]
}

/// Issue #3: LIDAR-Lite v3 configuration writes the manual's default preset registers.
#[test]
fn lidarlite_configure_writes_the_preset() {
    let expect = [
        T::write(LL, vec![0x02, 0x80]),
        T::write(LL, vec![0x04, 0x08]),
        T::write(LL, vec![0x1c, 0x00]),
        T::write(LL, vec![0x02, 0xff]),
        T::write(LL, vec![0x04, 0x08]),
        T::write(LL, vec![0x1c, 0x00]),
    ];
    let mut dev = LidarLiteV3::new(Mock::new(&expect));
    dev.configure(Preset::Default).unwrap();
    dev.configure(Preset::MaxRange).unwrap();
    dev.destroy().done();
}

/// Issue #3: pipelined measurement: start with bias correction, then read status, distance
/// (two bytes from 0x8f, big-endian) and signal strength, then start the next without bias.
#[test]
fn lidarlite_measures_with_separate_write_and_read() {
    let mut expect = vec![T::write(LL, vec![0x00, 0x04])];
    expect.extend(ll_read(0x20, 1234, 77));
    expect.push(T::write(LL, vec![0x00, 0x03]));
    expect.extend(ll_read(0x20 | 0x08, 0, 5));
    expect.push(T::write(LL, vec![0x00, 0x03]));
    let mut dev = LidarLiteV3::new(Mock::new(&expect));
    assert_eq!(
        dev.measure().unwrap(),
        None,
        "first call only starts a measurement"
    );
    assert_eq!(
        dev.measure().unwrap(),
        Some(Reading {
            distance_cm: 1234,
            strength: 77,
            status: RangeStatus::Ok
        })
    );
    assert_eq!(dev.measure().unwrap().unwrap().status, RangeStatus::Invalid);
    dev.destroy().done();
}

/// Issue #3: bias correction once every 100 measurements.
#[test]
fn lidarlite_bias_correction_every_100() {
    let mut expect = vec![T::write(LL, vec![0x00, 0x04])];
    for i in 1..=100 {
        expect.extend(ll_read(0x20, 100, 50));
        expect.push(T::write(LL, vec![0x00, if i == 100 { 0x04 } else { 0x03 }]));
    }
    let mut dev = LidarLiteV3::new(Mock::new(&expect));
    for _ in 0..=100 {
        dev.measure().unwrap();
    }
    dev.destroy().done();
}

/// Issue #3: status bits: unhealthy, process error, signal overflow; a busy sensor is a
/// timeout and no new measurement is started over it.
#[test]
fn lidarlite_status_and_busy() {
    assert_eq!(lidarlite::status_of(0x00), RangeStatus::Fault);
    assert_eq!(lidarlite::status_of(0x60), RangeStatus::Fault);
    assert_eq!(lidarlite::status_of(0x24), RangeStatus::Saturated);
    assert_eq!(lidarlite::status_of(0x20), RangeStatus::Ok);
    let expect = [
        T::write(LL, vec![0x00, 0x04]),
        T::write(LL, vec![0x01]),
        T::read(LL, vec![0x21]),
    ];
    let mut dev = LidarLiteV3::new(Mock::new(&expect));
    dev.measure().unwrap();
    let e = Rangefinder::measure(&mut dev).unwrap_err();
    assert_eq!(e.kind, FaultKind::Timeout);
    dev.destroy().done();
}

/// Issue #3: a NACK (sensor unplugged) is reported as such, not a panic.
#[test]
fn lidarlite_nack_is_a_fault() {
    let nack = ErrorKind::NoAcknowledge(NoAcknowledgeSource::Address);
    let expect = [T::write(LL, vec![0x02, 0x80]).with_error(nack)];
    let mut dev = LidarLiteV3::new(Mock::new(&expect));
    let e = Rangefinder::init(&mut dev, 100).unwrap_err();
    assert_eq!(e.kind, FaultKind::Nack);
    assert!(e.to_string().contains("0x62"), "{e}");
    dev.destroy().done();
}

/// Issue #3: TF-Luna: enable, trigger mode, then pipelined trigger / 6-byte read.
#[test]
fn tfluna_configures_and_measures() {
    let expect = [
        T::write(TF, vec![0x25, 0x01]),
        T::write(TF, vec![0x23, 0x01]),
        T::write(TF, vec![0x24, 0x01]),
        T::write(TF, vec![0x00]),
        T::read(TF, vec![0xd2, 0x04, 0x10, 0x27, 0xc4, 0x09]),
        T::write(TF, vec![0x24, 0x01]),
        T::write(TF, vec![0x00]),
        T::read(TF, vec![0x20, 0x00, 0x32, 0x00, 0xc4, 0x09]),
        T::write(TF, vec![0x24, 0x01]),
    ];
    let mut dev = TfLuna::new(Mock::new(&expect));
    Rangefinder::init(&mut dev, 100).unwrap();
    assert_eq!(dev.measure().unwrap(), None);
    assert_eq!(
        dev.measure().unwrap(),
        Some(Reading {
            distance_cm: 1234,
            strength: 10000,
            status: RangeStatus::Ok
        })
    );
    assert_eq!(dev.temperature_centi_c, 2500);
    assert_eq!(dev.measure().unwrap().unwrap().status, RangeStatus::Weak);
    dev.destroy().done();
}

/// Issue #3: TF-Luna amplitude classification from the manual.
#[test]
fn tfluna_amplitude_limits() {
    assert_eq!(tfluna::status_of(99), RangeStatus::Weak);
    assert_eq!(tfluna::status_of(100), RangeStatus::Ok);
    assert_eq!(tfluna::status_of(30000), RangeStatus::Ok);
    assert_eq!(tfluna::status_of(40000), RangeStatus::Saturated);
    assert_eq!(tfluna::status_of(0xffff), RangeStatus::Saturated);
    let nack = ErrorKind::NoAcknowledge(NoAcknowledgeSource::Address);
    let expect = [T::write(TF, vec![0x24, 0x01]).with_error(nack)];
    let mut dev = TfLuna::new(Mock::new(&expect));
    assert_eq!(
        Rangefinder::measure(&mut dev).unwrap_err().kind,
        FaultKind::Nack
    );
    dev.destroy().done();
}
