//! The rangefinder source on the simulated I2C bus (issue #3): readings at the board's rate,
//! NACKs retried and counted, an unplugged sensor reconnected by the source itself.

mod common;

use std::time::Duration;

use common::{secs, wait_until};
use harmony::concurrency::{
    ErrorBudget, LoopConfig, LoopProcessor, Outcome, ProcState, Registry, Runner, StopReason,
    queue, run_tree,
};
use harmony::drivers::lidarlite::LidarLiteV3;
use harmony::drivers::{RangeError, Rangefinder};
use harmony::records::RangeStatus;
use harmony::sim::rangefinder::{SimModel, SimSensor};
use harmony::sources::rangefinder::{RangeConfig, RangeSource};

fn metric(reg: &Registry, m: &str) -> u64 {
    reg.find("rangefinder")
        .and_then(|e| e.snapshot().metrics.get(m).copied())
        .unwrap_or(0)
}

/// Issue #3: rate from the board, NACKs retried and counted (not fatal), an unplugged sensor
/// shown in the state and reconnected when it answers again.
#[test]
fn rangefinder_survives_nacks_and_unplugging() {
    let sensor = SimSensor::new(SimModel::LidarLiteV3);
    let handle = sensor.handle();
    let open = Box::new(move || -> Result<Box<dyn Rangefinder>, RangeError> {
        Ok(Box::new(LidarLiteV3::new(sensor.bus())))
    });
    let (ltx, lrx) = queue(1 << 14, "rangefinder->logger");
    let (utx, _urx) = queue(1 << 14, "rangefinder->uplink");
    let rate = 200;
    let src = RangeSource::new(
        RangeConfig {
            name: "rangefinder".into(),
            rate_hz: rate,
            retries: 2,
            give_up_after: 20,
        },
        open,
        harmony::sources::SourceOutputs::new(ltx, utx),
    );
    let cfg = LoopConfig {
        error_budget: ErrorBudget::UNLIMITED,
        ..LoopConfig::every(Duration::from_secs_f64(1.0 / rate as f64))
    };
    let mut root = Runner::new("root").child(LoopProcessor::with_config(src, cfg));
    let reg = Registry::new();
    let r2 = reg.clone();
    let h = std::thread::spawn(move || run_tree(&r2, &mut root));

    assert!(wait_until(secs(5), || metric(&reg, "readings") >= 100));
    // The rate: about 200 readings per second.
    let (n0, t0) = (metric(&reg, "readings"), std::time::Instant::now());
    std::thread::sleep(Duration::from_millis(500));
    let rate_seen = (metric(&reg, "readings") - n0) as f64 / t0.elapsed().as_secs_f64();
    assert!(rate_seen > 120.0 && rate_seen < 230.0, "{rate_seen} Hz");

    // Two NACKs in a row: retried within the tick, counted, no reading lost for good.
    let failed_before = metric(&reg, "failed_ticks");
    handle.nack_next(2);
    assert!(wait_until(secs(5), || metric(&reg, "retries") >= 2));
    assert!(metric(&reg, "nacks") >= 2);
    assert_eq!(metric(&reg, "failed_ticks"), failed_before);

    // Unplugged: failing ticks, then the sensor counts as gone; the state says so.
    handle.unplug();
    assert!(wait_until(secs(5), || metric(&reg, "reopens") >= 1));
    assert!(wait_until(secs(5), || reg
        .find("rangefinder")
        .is_some_and(|e| e.note().contains("not answering"))));
    let e = reg.find("rangefinder").unwrap();
    assert_eq!(e.state(), ProcState::Active, "not fatal");
    assert_eq!(e.restarts(), 0);

    // Plugged back in: reconnected within the 2 s retry period, readings resume.
    let before = metric(&reg, "readings");
    handle.plug_in();
    assert!(wait_until(secs(5), || metric(&reg, "readings") > before + 50));
    assert!(
        reg.find("rangefinder")
            .unwrap()
            .note()
            .contains("at 200 Hz")
    );

    reg.request_stop_all(StopReason::Requested("test".into()));
    assert_eq!(h.join().unwrap(), Outcome::Completed);
    let recs: Vec<_> = std::iter::from_fn(|| lrx.pop()).collect();
    assert!(recs.len() as u64 >= metric(&reg, "readings") - 1);
    assert!(
        recs.iter()
            .all(|r| r.status == RangeStatus::Ok && r.distance_cm < 4000)
    );
    assert!(
        recs.windows(2)
            .all(|w| w[1].stamp.boot_ns >= w[0].stamp.boot_ns)
    );
}

/// A sensor that answers with the distances it is given, then with 1 m.
struct Scripted(std::collections::VecDeque<u16>);

impl Rangefinder for Scripted {
    fn model(&self) -> &'static str {
        "scripted"
    }
    fn max_rate_hz(&self) -> u32 {
        1000
    }
    fn max_range_cm(&self) -> u16 {
        4000
    }
    fn init(&mut self, _rate_hz: u32) -> Result<(), RangeError> {
        Ok(())
    }
    fn measure(&mut self) -> Result<Option<harmony::drivers::Reading>, RangeError> {
        Ok(Some(harmony::drivers::Reading {
            distance_cm: self.0.pop_front().unwrap_or(100),
            strength: 10,
            status: RangeStatus::Ok,
        }))
    }
}

/// Issue #17: a distance beyond the sensor's range (0xFFFF from a garbled register) is dropped
/// at intake and counted as `implausible`; it reaches neither the logger nor the uplink.
#[test]
fn absurd_distances_are_dropped_and_counted_at_intake() {
    let script = [120, u16::MAX, 4000, 4001, 130, 60_000];
    let open = Box::new(move || -> Result<Box<dyn Rangefinder>, RangeError> {
        Ok(Box::new(Scripted(script.into_iter().collect())))
    });
    let (ltx, lrx) = queue(1 << 10, "rangefinder->logger");
    let (utx, urx) = queue(1 << 10, "rangefinder->uplink");
    let src = RangeSource::new(
        RangeConfig {
            name: "rangefinder".into(),
            rate_hz: 100,
            retries: 0,
            give_up_after: 20,
        },
        open,
        harmony::sources::SourceOutputs::new(ltx, utx),
    );
    let cfg = LoopConfig::every(Duration::from_millis(10));
    let mut root = Runner::new("root").child(LoopProcessor::with_config(src, cfg));
    let reg = Registry::new();
    let r2 = reg.clone();
    let h = std::thread::spawn(move || run_tree(&r2, &mut root));
    assert!(wait_until(secs(5), || metric(&reg, "readings") >= 10));
    reg.request_stop_all(StopReason::Requested("test".into()));
    assert_eq!(h.join().unwrap(), Outcome::Completed);
    assert_eq!(metric(&reg, "implausible"), 3);
    for rx in [lrx, urx] {
        let d: Vec<u16> = std::iter::from_fn(|| rx.pop())
            .map(|r| r.distance_cm)
            .collect();
        assert_eq!(d[..4], [120, 4000, 130, 100], "{d:?}");
        assert!(d[4..].iter().all(|&x| x == 100), "{d:?}");
    }
}
