//! What the uplink tests share (issue #5): simulated sources at full rate, a stand-in logger,
//! a processor that fails once, uplink configurations, a tree on its own thread, and
//! pseudo-terminal pairs whose descriptors do not leak into the child processes other tests
//! start (serialport's pairs are not close-on-exec).
#![allow(dead_code)]

use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use harmony::clock::{Stamp, wall_ns};
use harmony::concurrency::{
    BoxError, Context, FnLoop, Loop, LoopConfig, LoopProcessor, Outcome, Policy, Processor,
    Producer, Registry, RestartPolicy, Runner, Signal, Step, StopReason, queue, run_tree,
};
use harmony::formats::dronecan::{Health, NodeStatus, encode_node_status};
use harmony::records::{
    CAN_EFF_FLAG, CanRecord, Fix, FixQuality, GpsRecord, RangeRecord, RangeStatus,
};
use harmony::sinks::drain::SinkInputs;
use harmony::uplink::config::{UplinkSection, UplinkSimSection};
use harmony::uplink::persist::SaverThread;
use nix::fcntl::OFlag;
use nix::pty::{PtyMaster, grantpt, posix_openpt, ptsname_r, unlockpt};

pub const KEY: [u8; 32] = [0x42; 32];
pub const EXT_ID: u32 = 0x18FF_0001;
pub const STD_ID: u32 = 0x123;
pub const FC_NODE: u8 = 10;

pub fn metric(reg: &Registry, p: &str, m: &str) -> u64 {
    reg.find(p)
        .and_then(|e| e.snapshot().metrics.get(m).copied())
        .unwrap_or(0)
}

/// Everything a test drives: the producers' sides, what was pushed.
pub struct Feeds {
    /// `(time_usec, pushed at)` of every fix.
    pub fixes: Arc<Mutex<Vec<(u64, Instant)>>>,
    pub pushed: Arc<[AtomicU64; 3]>,
}

/// One producer to the uplink and, optionally, one to a logger.
pub struct Pair<T> {
    pub up: Producer<T>,
    pub log: Option<Producer<T>>,
}

impl<T: Clone> Pair<T> {
    pub fn push(&self, r: T) {
        if let Some(l) = &self.log {
            l.push(r.clone());
        }
        self.up.push(r);
    }
}

pub fn fix(i: u64, t0_ns: i64) -> Fix {
    Fix {
        stamp: Stamp::now(),
        utc_ns: Some(t0_ns + i as i64 * 100_000_000),
        time_of_day_s: None,
        lat_deg: Some(53.36 + i as f64 * 1e-6),
        lon_deg: Some(-6.5),
        alt_msl_m: Some(61.7),
        quality: FixQuality::Gps,
        satellites: Some(9),
        hdop: Some(0.9),
        speed_mps: Some(1.5),
        course_deg: Some(90.0),
    }
}

pub fn can(id: u32, i: u64) -> CanRecord {
    CanRecord {
        stamp: Stamp::now(),
        id,
        len: 8,
        // A non-zero last byte: every frame is full length on the wire.
        data: (i | 0xA5 << 56).to_le_bytes(),
    }
}

/// Sources named like the real ones, at "full rate": fixes at 10 Hz, ranges at 200 Hz,
/// 1000 CAN frames/s of two selected ids, and the flight controller's NodeStatus at 1 Hz
/// (plus another node's, which the uplink ignores). With `limit_s` each stops after that many
/// seconds' worth of records (0: never).
pub fn sources(
    gps: Pair<GpsRecord>,
    range: Pair<RangeRecord>,
    canp: Pair<CanRecord>,
    limit_s: u64,
) -> (Runner, Feeds) {
    sources_with(gps, range, canp, limit_s, Duration::from_millis(100))
}

/// [`sources`] with fixes every `fix_period` (the benchmark varies it).
pub fn sources_with(
    gps: Pair<GpsRecord>,
    range: Pair<RangeRecord>,
    canp: Pair<CanRecord>,
    limit_s: u64,
    fix_period: Duration,
) -> (Runner, Feeds) {
    let unlimited = limit_s == 0;
    let feeds = Feeds {
        fixes: Arc::new(Mutex::new(Vec::new())),
        pushed: Arc::new([AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0)]),
    };
    let t0 = wall_ns();
    let (fl, pushed) = (feeds.fixes.clone(), feeds.pushed.clone());
    let mut i = 0u64;
    let g = FnLoop::new("gps", move |_: &Context| {
        if unlimited || i < 10 * limit_s {
            let f = fix(i, t0);
            let usec = harmony::uplink::frame::fix_time_usec(&f);
            gps.push(GpsRecord::Fix(f));
            fl.lock().unwrap().push((usec, Instant::now()));
            pushed[0].fetch_add(1, Ordering::Relaxed);
            i += 1;
        }
        Ok(Step::Continue)
    });
    let pushed = feeds.pushed.clone();
    let mut j = 0u64;
    let r = FnLoop::new("rangefinder", move |_: &Context| {
        for _ in 0..2 {
            if unlimited || j < 200 * limit_s {
                range.push(RangeRecord {
                    stamp: Stamp::now(),
                    distance_cm: 100 + (j % 500) as u16,
                    strength: 200,
                    status: RangeStatus::Ok,
                });
                pushed[1].fetch_add(1, Ordering::Relaxed);
                j += 1;
            }
        }
        Ok(Step::Continue)
    });
    let pushed = feeds.pushed.clone();
    let mut k = 0u64;
    let c = FnLoop::new("can", move |_: &Context| {
        for _ in 0..10 {
            if unlimited || k < 1000 * limit_s {
                let id = if k.is_multiple_of(2) {
                    STD_ID
                } else {
                    EXT_ID | CAN_EFF_FLAG
                };
                canp.push(can(id, k));
                if k.is_multiple_of(1000) {
                    for node in [FC_NODE, FC_NODE + 1] {
                        let s = NodeStatus {
                            node,
                            uptime_s: (k / 1000) as u32,
                            health: Health::Warning,
                            mode: 0,
                            sub_mode: 0,
                            vendor_status: 0,
                        };
                        canp.push(encode_node_status(16, &s, (k / 1000) as u8));
                    }
                }
                pushed[2].fetch_add(1, Ordering::Relaxed);
                k += 1;
            }
        }
        Ok(Step::Continue)
    });
    let every = |ms| LoopConfig::every(Duration::from_millis(ms));
    let runner = Runner::new("sensors")
        .policy(Policy::Restart(RestartPolicy {
            backoff_initial: Duration::from_millis(50),
            ..Default::default()
        }))
        .child(LoopProcessor::with_config(g, LoopConfig::every(fix_period)))
        .child(LoopProcessor::with_config(r, every(10)))
        .child(LoopProcessor::with_config(c, every(10)));
    (runner, feeds)
}

/// A stand-in logger that takes the `rotate` signal and publishes the logger's health
/// metrics, which the test sets.
pub struct TestLogger {
    pub rotations: Arc<AtomicU64>,
}

impl Loop for TestLogger {
    fn name(&self) -> &str {
        "logger"
    }
    fn signals(&self) -> Vec<String> {
        vec!["rotate".into()]
    }
    fn before(&mut self, ctx: &Context) -> Result<(), BoxError> {
        ctx.metric("degraded");
        ctx.metric("disk_free_mb").store(5000, Ordering::Relaxed);
        ctx.metric("bytes_written")
            .store(1 << 20, Ordering::Relaxed);
        ctx.metric("records_dropped");
        Ok(())
    }
    fn on_signal(&mut self, sig: &Signal, _ctx: &Context) -> Result<(), BoxError> {
        if sig.name() == "rotate" {
            self.rotations.fetch_add(1, Ordering::SeqCst);
        }
        Ok(())
    }
    fn work(&mut self, _ctx: &Context) -> Result<Step, BoxError> {
        Ok(Step::Idle)
    }
}

/// A processor that fails on its first run only (for the "failed" event).
pub struct FailsOnce(pub Arc<AtomicU64>);

impl Processor for FailsOnce {
    fn name(&self) -> &str {
        "flaky"
    }
    fn body(&mut self, ctx: &Context) -> Result<(), BoxError> {
        if self.0.fetch_add(1, Ordering::SeqCst) == 0 {
            std::thread::sleep(Duration::from_millis(300));
            return Err("simulated fault".into());
        }
        while !ctx.should_stop() {
            ctx.sleep_until(None);
        }
        Ok(())
    }
}

/// The uplink for `cfg` (signing state, by default, in `dir`) and the saver that writes its
/// signing state: drop the saver after the tree stopped, for the final save.
pub fn build_uplink(
    cfg: &UplinkSection,
    dir: &Path,
    inputs: SinkInputs,
) -> (Box<dyn Processor>, Option<SaverThread>) {
    let b = harmony::uplink::build(cfg, dir, inputs, Some(FC_NODE))
        .map_err(|(e, _)| e)
        .unwrap();
    let saver = b
        .persister
        .map(|p| SaverThread::spawn(p, Duration::from_millis(200)).unwrap());
    (b.processor, saver)
}

pub fn sim_cfg(dir: &Path) -> UplinkSection {
    UplinkSection {
        sim: Some(UplinkSimSection {
            link: Some(dir.join("radio")),
        }),
        ..Default::default()
    }
}

pub fn write_key(dir: &Path, key: &[u8; 32]) -> PathBuf {
    let p = dir.join("uplink.key");
    std::fs::write(&p, key).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    p
}

/// The sources' ends of the uplink's queues.
pub type Ends = (Pair<GpsRecord>, Pair<RangeRecord>, Pair<CanRecord>);

/// Queues for the uplink only.
pub fn uplink_queues() -> (Ends, SinkInputs) {
    let (g, gr) = queue(64, "gps->uplink");
    let (r, rr) = queue(128, "rangefinder->uplink");
    let (c, cr) = queue(1024, "can->uplink");
    (
        (
            Pair { up: g, log: None },
            Pair { up: r, log: None },
            Pair { up: c, log: None },
        ),
        SinkInputs {
            gps: gr,
            range: rr,
            can: cr,
        },
    )
}

pub struct Tree {
    pub reg: Arc<Registry>,
    pub handle: std::thread::JoinHandle<Outcome>,
}

impl Tree {
    pub fn start(mut root: Runner) -> Tree {
        let reg = Registry::new();
        let r2 = reg.clone();
        let handle = std::thread::spawn(move || run_tree(&r2, &mut root));
        Tree { reg, handle }
    }

    pub fn stop(self) -> (Arc<Registry>, Outcome) {
        self.reg
            .request_stop_all(StopReason::Requested("test".into()));
        (self.reg, self.handle.join().unwrap())
    }
}

/// A pseudo-terminal pair, both ends close-on-exec: the master, the slave (raw), its path.
pub fn pty_pair() -> (PtyMaster, std::fs::File, PathBuf) {
    let m = posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC).unwrap();
    grantpt(&m).unwrap();
    unlockpt(&m).unwrap();
    let path = PathBuf::from(ptsname_r(&m).unwrap());
    let slave = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(nix::libc::O_NOCTTY)
        .open(&path)
        .unwrap();
    let mut t = nix::sys::termios::tcgetattr(&slave).unwrap();
    nix::sys::termios::cfmakeraw(&mut t);
    nix::sys::termios::tcsetattr(&slave, nix::sys::termios::SetArg::TCSANOW, &t).unwrap();
    (m, slave, path)
}

/// Reads what `m` has within `timeout` (0 bytes when nothing came).
pub fn read_timeout(m: &mut PtyMaster, buf: &mut [u8], timeout: Duration) -> usize {
    use std::io::Read;
    let mut fds = [nix::poll::PollFd::new(
        std::os::fd::AsFd::as_fd(&*m),
        nix::poll::PollFlags::POLLIN,
    )];
    let ms = timeout.as_millis().min(60_000) as u16;
    match nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(ms)) {
        Ok(n) if n > 0 => m.read(buf).unwrap_or(0),
        _ => 0,
    }
}

/// A processor named `name` that fails once, `after` its start (a long name makes a long
/// "failed" event, sent in STATUSTEXT chunks).
pub struct FailsOnceAs {
    pub name: &'static str,
    pub after: Duration,
    pub runs: Arc<AtomicU64>,
}

impl Processor for FailsOnceAs {
    fn name(&self) -> &str {
        self.name
    }
    fn body(&mut self, ctx: &Context) -> Result<(), BoxError> {
        if self.runs.fetch_add(1, Ordering::SeqCst) == 0 {
            let end = Instant::now() + self.after;
            while Instant::now() < end && !ctx.should_stop() {
                std::thread::sleep(Duration::from_millis(20));
            }
            return Err("simulated fault".into());
        }
        while !ctx.should_stop() {
            ctx.sleep_until(None);
        }
        Ok(())
    }
}
