//! The flash-card logger in-process (issue #4): files read back record for record with the
//! ecosystem's readers, rotation, a stalling SD card, the free-space floor, sessions without a
//! real-time clock.

mod common;

use std::io::{self, BufRead};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{secs, wait_until};
use harmony::clock::Stamp;
use harmony::concurrency::{
    BoxError, Context, Housekeeping, Loop, LoopConfig, LoopProcessor, Origin, Outcome, Producer,
    Registry, Runner, Signal, Step, StopReason, queue, run_tree,
};
use harmony::formats::candump::record_from_frame;
use harmony::formats::csv::{parse_fix, parse_range};
use harmony::formats::nmea::{Event, FixBuilder, Intake, sentence};
use harmony::logger::fs::{FileSystem, LogFile, RealFs};
use harmony::logger::session::Session;
use harmony::logger::{CAN, FIX, LoggerBackend, LoggerConfig, NMEA, RANGE, segments};
use harmony::records::{
    CAN_EFF_FLAG, CAN_ERR_FLAG, CAN_RTR_FLAG, CanRecord, GpsRecord, RangeRecord, RangeStatus,
};
use harmony::sinks::drain::{SinkInputs, SinkLoop};

struct Feeds {
    gps: Producer<GpsRecord>,
    range: Producer<RangeRecord>,
    can: Producer<CanRecord>,
}

/// Builds a processor that feeds the CAN queue itself.
type CanFeeder = Box<dyn FnOnce(Producer<CanRecord>) -> Box<dyn harmony::concurrency::Processor>>;

struct Logger {
    registry: Arc<Registry>,
    handle: std::thread::JoinHandle<Outcome>,
    session: Session,
}

fn start_logger(
    data: &Path,
    cfg: LoggerConfig,
    fs: Arc<dyn FileSystem>,
    can_capacity: usize,
    extra: Option<CanFeeder>,
) -> (Logger, Feeds) {
    let (gt, gr) = queue(1 << 16, "gps->logger");
    let (rt, rr) = queue(1 << 16, "rangefinder->logger");
    let (ct, cr) = queue(can_capacity, "can->logger");
    let session = Session::create(data).unwrap();
    let (hk, pool) = Housekeeping::new("housekeeping", 2, Duration::from_millis(100));
    let backend = LoggerBackend::new(cfg, session.clone(), fs, &hk);
    let sink = SinkLoop::new(
        "logger",
        SinkInputs {
            gps: gr,
            range: rr,
            can: cr,
        },
        backend,
        Duration::from_millis(10),
    );
    // The housekeeping pool first: it stops after the logger and writes its last manifest.
    let mut root = Runner::new("root")
        .child(pool)
        .child(LoopProcessor::new(sink));
    let feeds = match extra {
        Some(f) => {
            root.push(harmony::concurrency::Child::boxed(f(ct)));
            let (dummy, _) = queue(16, "unused");
            Feeds {
                gps: gt,
                range: rt,
                can: dummy,
            }
        }
        None => Feeds {
            gps: gt,
            range: rt,
            can: ct,
        },
    };
    let registry = Registry::new();
    let r2 = registry.clone();
    let handle = std::thread::spawn(move || run_tree(&r2, &mut root));
    assert!(wait_until(secs(5), || registry.find("logger").is_some_and(
        |e| e.state() == harmony::concurrency::ProcState::Active
    )));
    (
        Logger {
            registry,
            handle,
            session,
        },
        feeds,
    )
}

impl Logger {
    fn stop(self) -> Session {
        self.registry
            .request_stop_all(StopReason::Requested("test".into()));
        assert_eq!(self.handle.join().unwrap(), Outcome::Completed);
        self.session
    }

    fn metric(&self, m: &str) -> u64 {
        self.registry
            .find("logger")
            .and_then(|e| e.snapshot().metrics.get(m).copied())
            .unwrap_or(0)
    }
}

fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(rel)
}

fn can_inputs() -> Vec<CanRecord> {
    let mut v = Vec::new();
    let mut rd =
        harmony::formats::candump::DumpReader::open(&fixture("can/candumpSample3.txt")).unwrap();
    while let Some(f) = rd.next_frame().unwrap() {
        let mut r = f.record;
        r.stamp = Stamp {
            boot_ns: 1,
            wall_ns: f.t_us as i64 * 1000,
        };
        v.push(r);
    }
    let special = [
        (0x123, 0, [0u8; 8]),
        (0x7ff, 8, [1, 2, 3, 4, 5, 6, 7, 8]),
        (
            CAN_EFF_FLAG | 0x1801_550A,
            8,
            [1, 0, 0, 0, 0x8d, 0x34, 0x12, 0xc3],
        ),
        (CAN_RTR_FLAG | 0x321, 0, [0; 8]),
        (CAN_RTR_FLAG | 0x321, 4, [0; 8]),
        (CAN_EFF_FLAG | CAN_RTR_FLAG | 0x10, 2, [0; 8]),
        (CAN_ERR_FLAG | 0x4, 8, [0, 0x0c, 0, 0, 0, 0, 0, 0]),
    ];
    for (i, (id, len, data)) in special.into_iter().enumerate() {
        v.push(CanRecord {
            stamp: Stamp {
                boot_ns: 2,
                wall_ns: 1_700_000_000_000_000_000 + i as i64 * 1000,
            },
            id,
            len,
            data,
        });
    }
    v
}

fn nmea_inputs() -> (Vec<Vec<u8>>, Vec<harmony::records::Fix>) {
    let bytes = std::fs::read(fixture("nmea/neo-m8n.log")).unwrap();
    let mut intake = Intake::new();
    let mut fb = FixBuilder::default();
    let (mut s, mut f) = (Vec::new(), Vec::new());
    let stamp = Stamp {
        boot_ns: 123_456_789_000,
        wall_ns: 1_700_000_000_000_000_000,
    };
    for line in harmony::sim::gps::receiver_lines(&bytes) {
        intake.feed(&line, |e| {
            if let Event::Accepted(b) = e {
                s.push(b.to_vec());
                fb.update(stamp, b, |x| f.push(x));
            }
        });
    }
    fb.flush(stamp, |x| f.push(x));
    (s, f)
}

/// Issue #4: the CAN file parses record for record with socketcan's `dump` reader and equals
/// the frames that went in; the NMEA file holds the sentences exactly as received; the CSV files
/// read back with the project's readers.
#[test]
fn files_read_back_record_for_record() {
    let dir = tempfile::tempdir().unwrap();
    let (lg, feeds) = start_logger(
        dir.path(),
        LoggerConfig::default(),
        Arc::new(RealFs),
        1 << 16,
        None,
    );
    let frames = can_inputs();
    for f in &frames {
        assert!(feeds.can.push(*f));
    }
    let (sentences, fixes) = nmea_inputs();
    for s in &sentences {
        assert!(
            feeds
                .gps
                .push(GpsRecord::Sentence(sentence(Stamp::now(), s)))
        );
    }
    for f in &fixes {
        assert!(feeds.gps.push(GpsRecord::Fix(*f)));
    }
    let ranges: Vec<RangeRecord> = (0..1000u64)
        .map(|i| RangeRecord {
            stamp: Stamp {
                boot_ns: 5_000_000_000 + i * 10_000_000,
                wall_ns: 1_700_000_000_000_000_000 + i as i64 * 10_000_000,
            },
            distance_cm: (i * 7 % 4000) as u16,
            strength: (i % 256) as u16,
            status: [RangeStatus::Ok, RangeStatus::Weak, RangeStatus::Invalid][i as usize % 3],
        })
        .collect();
    for r in &ranges {
        assert!(feeds.range.push(*r));
    }
    let session = lg.stop();

    // CAN with the ecosystem's reader, straight.
    let rd = socketcan::dump::Reader::from_file(session.dir.join("can.000.log")).unwrap();
    let got: Vec<(u64, CanRecord)> = rd
        .map(|r| {
            let r = r.unwrap();
            (r.t_us, record_from_frame(&r.frame).unwrap())
        })
        .collect();
    assert_eq!(got.len(), frames.len());
    for (i, ((t, g), w)) in got.iter().zip(&frames).enumerate() {
        assert_eq!(
            (g.id, g.len, g.payload()),
            (w.id, w.len, w.payload()),
            "frame {i}"
        );
        assert_eq!(*t, (w.stamp.wall_ns / 1000) as u64, "frame {i} time");
    }

    let nmea = std::fs::read(session.dir.join("gps.000.nmea")).unwrap();
    let lines: Vec<&[u8]> = nmea.split_inclusive(|&b| b == b'\n').collect();
    assert_eq!(lines.len(), sentences.len());
    for (g, w) in lines.iter().zip(&sentences) {
        assert_eq!(*g, &w[..]);
    }

    let read_rows = |name: &str| -> Vec<String> {
        io::BufReader::new(std::fs::File::open(session.dir.join(name)).unwrap())
            .lines()
            .skip(1)
            .map(Result::unwrap)
            .collect()
    };
    let got: Vec<_> = read_rows("rangefinder.000.csv")
        .iter()
        .map(|l| parse_range(l).unwrap())
        .collect();
    assert_eq!(got, ranges);
    let got: Vec<_> = read_rows("gps-fix.000.csv")
        .iter()
        .map(|l| parse_fix(l).unwrap())
        .collect();
    assert_eq!(got.len(), fixes.len());
    for (g, w) in got.iter().zip(&fixes) {
        assert!((g.lat_deg.unwrap() - w.lat_deg.unwrap()).abs() < 1e-8);
        assert!((g.lon_deg.unwrap() - w.lon_deg.unwrap()).abs() < 1e-8);
        assert_eq!(
            (g.alt_msl_m, g.quality, g.satellites, g.hdop),
            (w.alt_msl_m, w.quality, w.satellites, w.hdop)
        );
        assert_eq!(
            (g.speed_mps, g.course_deg, g.utc_ns),
            (w.speed_mps, w.course_deg, w.utc_ns)
        );
    }
    // Every file passes the checker.
    for r in harmony::logtools::check::check_session(&session.dir, false).unwrap() {
        assert!(r.ok() && r.torn.is_none(), "{r:?}");
    }
    // Issue #11: the closed manifest is made after the final flush: nothing dropped, so every
    // file says written == received, and the sizes are the files' sizes on disk.
    let m = manifest(&session.dir);
    assert!(m.closed && !m.degraded, "{m:?}");
    let want = [
        ("can", frames.len()),
        ("gps", sentences.len()),
        ("gps-fix", fixes.len()),
        ("rangefinder", ranges.len()),
    ];
    for (file, n) in want {
        let r = m.records.iter().find(|r| r.file == file).unwrap();
        assert_eq!(
            (r.received, r.written, r.dropped_disk),
            (n as u64, n as u64, 0),
            "{file}: received, written, dropped"
        );
    }
    for f in &m.files {
        let len = std::fs::metadata(session.dir.join(&f.name)).unwrap().len();
        assert_eq!(f.bytes, len, "{}", f.name);
    }
    for t in &m.segments {
        assert_eq!((t.count, t.first_listed), (1, 0), "{t:?}");
        let on_disk: u64 = m
            .files
            .iter()
            .filter(|f| f.name.starts_with(&format!("{}.", t.file)))
            .map(|f| f.bytes)
            .sum();
        assert_eq!(t.bytes, on_disk, "{t:?}");
    }
}

fn manifest(dir: &Path) -> harmony::logger::Manifest {
    serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).unwrap()).unwrap()
}

/// Issue #4: files rotate by size and on the `rotate` signal (SIGHUP's), with segment numbers in
/// the names and a line in events.log; the segments together hold every record in order.
#[test]
fn rotation_by_size_and_signal() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = LoggerConfig {
        rotate_bytes: 40_000,
        ..LoggerConfig::default()
    };
    let (lg, feeds) = start_logger(dir.path(), cfg, Arc::new(RealFs), 1 << 16, None);
    let frames = can_inputs();
    for f in &frames[..1000] {
        assert!(feeds.can.push(*f));
    }
    assert!(wait_until(secs(5), || lg.metric("can_received") == 1000));
    lg.registry
        .send_signal(
            Signal::new("rotate", Origin::Control).unwrap(),
            Some("logger"),
        )
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    for f in &frames[1000..] {
        assert!(feeds.can.push(*f));
    }
    let session = lg.stop();
    let segs = segments(&session.dir, CAN);
    assert!(segs.len() >= 4, "{segs:?}");
    let mut got = Vec::new();
    for s in &segs {
        assert!(std::fs::metadata(s).unwrap().len() <= 40_000 + 16 * 1024);
        for r in socketcan::dump::Reader::from_file(s).unwrap() {
            got.push(record_from_frame(&r.unwrap().frame).unwrap());
        }
    }
    assert_eq!(got.len(), frames.len());
    assert!(
        got.iter()
            .zip(&frames)
            .all(|(g, w)| g.id == w.id && g.payload() == w.payload())
    );
    let events = std::fs::read_to_string(session.dir.join("events.log")).unwrap();
    assert!(
        events.contains("rotate file=can.001.log reason=size"),
        "{events}"
    );
    assert!(events.contains("reason=signal"), "{events}");
    for k in [NMEA, FIX, RANGE] {
        assert!(
            segments(&session.dir, k).len() >= 2,
            "every file rotates on the signal"
        );
    }
}

/// A file system whose writes block while a stall is on (an SD card pausing).
struct StallFs {
    until: Arc<Mutex<Option<Instant>>>,
}

struct StallFile {
    inner: Box<dyn LogFile>,
    until: Arc<Mutex<Option<Instant>>>,
}

impl LogFile for StallFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let until = *self.until.lock().unwrap();
        if let Some(t) = until {
            while Instant::now() < t {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        self.inner.write(buf)
    }
    fn sync(&mut self) -> io::Result<()> {
        self.inner.sync()
    }
    fn truncate(&mut self, len: u64) -> io::Result<()> {
        self.inner.truncate(len)
    }
}

impl FileSystem for StallFs {
    fn open_append(&self, path: &Path) -> io::Result<(Box<dyn LogFile>, u64)> {
        let (f, len) = RealFs.open_append(path)?;
        Ok((
            Box::new(StallFile {
                inner: f,
                until: self.until.clone(),
            }),
            len,
        ))
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        RealFs.sync_dir(dir)
    }
    fn free_bytes(&self, dir: &Path) -> io::Result<u64> {
        RealFs.free_bytes(dir)
    }
    fn write_atomic(&self, path: &Path, data: &[u8]) -> io::Result<()> {
        RealFs.write_atomic(path, data)
    }
}

/// Feeds CAN frames at a saturated bus's 16,000 frames/s (16 per millisecond tick).
struct Bus16k {
    tx: Producer<CanRecord>,
    n: u32,
    produced: Arc<AtomicU64>,
}

impl Loop for Bus16k {
    fn name(&self) -> &str {
        "can"
    }
    fn work(&mut self, _ctx: &Context) -> Result<Step, BoxError> {
        for _ in 0..16 {
            self.n += 1;
            let mut r = CanRecord {
                stamp: Stamp::now(),
                id: CAN_EFF_FLAG | self.n,
                len: 8,
                data: [0; 8],
            };
            r.data[..4].copy_from_slice(&self.n.to_le_bytes());
            self.tx.push(r);
            self.produced.fetch_add(1, Ordering::SeqCst);
        }
        Ok(Step::Continue)
    }
}

fn can_lines(dir: &Path) -> Vec<u32> {
    let mut ids = Vec::new();
    for s in segments(dir, CAN) {
        for r in socketcan::dump::Reader::from_file(&s).unwrap() {
            ids.push(record_from_frame(&r.unwrap().frame).unwrap().raw_id());
        }
    }
    ids
}

/// Issue #4: an SD card that stalls: with the default queue (2 s of a saturated bus) a 2 s
/// stall at 16,000 frames/s loses nothing; a 5 s stall drops, counts, and leaves a dropout
/// record with count and first/last time; written + dropped = produced.
#[test]
fn stalls_up_to_2_s_lose_nothing_longer_ones_drop_with_dropout_records() {
    let dir = tempfile::tempdir().unwrap();
    let until = Arc::new(Mutex::new(None));
    let fs = Arc::new(StallFs {
        until: until.clone(),
    });
    let produced = Arc::new(AtomicU64::new(0));
    let p2 = produced.clone();
    let default_capacity = harmony::board::Board::sim().queue_sizes().can_logger;
    let (lg, _feeds) = start_logger(
        dir.path(),
        LoggerConfig::default(),
        fs,
        default_capacity,
        Some(Box::new(move |tx| {
            Box::new(LoopProcessor::with_config(
                Bus16k {
                    tx,
                    n: 0,
                    produced: p2,
                },
                LoopConfig::every(Duration::from_millis(1)),
            ))
        })),
    );
    let dropped = || lg.metric("queue_dropped");
    std::thread::sleep(Duration::from_millis(500));

    // 2 s stall: absorbed.
    *until.lock().unwrap() = Some(Instant::now() + Duration::from_secs(2));
    std::thread::sleep(Duration::from_millis(3500));
    assert_eq!(dropped(), 0, "a 2 s stall at 16,000 frames/s loses nothing");
    let before_long = produced.load(Ordering::SeqCst);
    assert!(before_long > 40_000, "the bus ran at speed: {before_long}");

    // 5 s stall: drops, counted.
    *until.lock().unwrap() = Some(Instant::now() + Duration::from_secs(5));
    std::thread::sleep(Duration::from_millis(6500));
    let session = lg.stop();
    let total = produced.load(Ordering::SeqCst);
    let written = can_lines(&session.dir);
    let events = std::fs::read_to_string(session.dir.join("events.log")).unwrap();
    let dropouts: Vec<&str> = events.lines().filter(|l| l.contains(" dropout ")).collect();
    assert!(!dropouts.is_empty(), "{events}");
    let counted: u64 = dropouts
        .iter()
        .map(|l| {
            assert!(
                l.contains("source=can sink=logger")
                    && l.contains("first_mono=")
                    && l.contains("last_mono=")
            );
            l.split("count=")
                .nth(1)
                .unwrap()
                .split(' ')
                .next()
                .unwrap()
                .parse::<u64>()
                .unwrap()
        })
        .sum();
    assert!(counted > 10_000, "about 3 s of frames dropped: {counted}");
    assert_eq!(
        written.len() as u64 + counted,
        total,
        "written + dropped = produced"
    );
    // What was written is in order and never repeated, with gaps only where drops were (a
    // dropout record may sum drops from more than one burst, e.g. under qemu-user's timing).
    assert!(
        written.windows(2).all(|w| w[1] > w[0]),
        "frames out of order"
    );
    let missing: u64 = written.windows(2).map(|w| u64::from(w[1] - w[0] - 1)).sum();
    assert!(
        missing > 0 && missing <= counted,
        "{missing} missing, {counted} dropped"
    );
}

/// A file system that reports free space from a shared counter.
struct SmallDisk {
    free: Arc<AtomicU64>,
}

impl FileSystem for SmallDisk {
    fn open_append(&self, path: &Path) -> io::Result<(Box<dyn LogFile>, u64)> {
        RealFs.open_append(path)
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        RealFs.sync_dir(dir)
    }
    fn free_bytes(&self, dir: &Path) -> io::Result<u64> {
        // Free space grows by what was deleted under the data directory.
        let used: u64 = harmony::logger::session::list_sessions(dir)
            .unwrap()
            .iter()
            .flat_map(|s| std::fs::read_dir(s).unwrap().filter_map(Result::ok))
            .filter_map(|e| e.metadata().ok())
            .map(|m| m.len())
            .sum();
        Ok(self.free.load(Ordering::SeqCst).saturating_sub(used))
    }
    fn write_atomic(&self, path: &Path, data: &[u8]) -> io::Result<()> {
        RealFs.write_atomic(path, data)
    }
}

/// Issue #4: below the free-space floor the logger deletes the oldest finished sessions, never
/// the current one, and says so in events.log.
#[test]
fn free_space_floor_deletes_oldest_sessions_only() {
    let dir = tempfile::tempdir().unwrap();
    let mut old = Vec::new();
    for i in 0..3 {
        let s = Session::create_at(
            dir.path(),
            Stamp {
                boot_ns: 0,
                wall_ns: 1_600_000_000_000_000_000 + i * 1_000_000_000,
            },
        )
        .unwrap();
        std::fs::write(s.dir.join("can.000.log"), vec![b'x'; 100_000]).unwrap();
        old.push(s.dir);
        std::thread::sleep(Duration::from_millis(20));
    }
    // 400 kB "disk": 300 kB used by old sessions; floor 250 kB => delete the two oldest.
    let fs = Arc::new(SmallDisk {
        free: Arc::new(AtomicU64::new(400_000)),
    });
    let cfg = LoggerConfig {
        min_free_bytes: 250_000,
        ..LoggerConfig::default()
    };
    let (lg, _feeds) = start_logger(dir.path(), cfg, fs, 1024, None);
    assert!(wait_until(secs(10), || !old[1].exists()));
    std::thread::sleep(Duration::from_millis(300));
    let session = lg.stop();
    assert!(!old[0].exists() && !old[1].exists(), "the two oldest went");
    assert!(old[2].exists(), "enough space: the third stays");
    assert!(session.dir.exists(), "never the current one");
    let events = std::fs::read_to_string(session.dir.join("events.log")).unwrap();
    assert_eq!(events.matches("session-deleted").count(), 2, "{events}");
    assert!(events.contains("reason=free-space-floor"));
}

/// Issue #4: without a plausible clock (before 2020) sessions are numbered `sessNNN`; the
/// logger records the implausible clock and, when GPS time arrives, the offset.
#[test]
fn sessions_without_a_clock_are_numbered_and_gps_time_is_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let early = Stamp {
        boot_ns: 1_000_000_000,
        wall_ns: 86_400 * 1_000_000_000 * 365,
    };
    let a = Session::create_at(dir.path(), early).unwrap();
    let b = Session::create_at(dir.path(), early).unwrap();
    assert_eq!((a.name.as_str(), b.name.as_str()), ("sess001", "sess002"));
    assert!(!a.clock_valid);
    let (hk, pool) = Housekeeping::new("housekeeping", 1, Duration::from_millis(100));
    let backend = LoggerBackend::new(LoggerConfig::default(), b.clone(), Arc::new(RealFs), &hk);
    let (gt, gr) = queue(64, "gps");
    let (_rt, rr) = queue(16, "r");
    let (_ct, cr) = queue(16, "c");
    let sink = SinkLoop::new(
        "logger",
        SinkInputs {
            gps: gr,
            range: rr,
            can: cr,
        },
        backend,
        Duration::from_millis(10),
    );
    let mut root = Runner::new("root")
        .child(pool)
        .child(LoopProcessor::new(sink));
    let reg = Registry::new();
    let r2 = reg.clone();
    let h = std::thread::spawn(move || run_tree(&r2, &mut root));
    let mut fb = FixBuilder::default();
    let mut f = None;
    for s in [
        &b"$GPRMC,092750.000,A,5321.6802,N,00630.3372,W,0.02,31.66,280511,,,A*43"[..],
        b"$GPGGA,092750.000,5321.6802,N,00630.3372,W,1,8,1.03,61.7,M,55.2,M,,*76",
    ] {
        fb.update(Stamp::now(), s, |x| f = Some(x));
    }
    fb.flush(Stamp::now(), |x| f = Some(x));
    gt.push(GpsRecord::Fix(f.unwrap()));
    std::thread::sleep(Duration::from_millis(1500));
    reg.request_stop_all(StopReason::Requested("test".into()));
    h.join().unwrap();
    let events = std::fs::read_to_string(b.dir.join("events.log")).unwrap();
    assert!(
        events.contains("clock system-clock-implausible"),
        "{events}"
    );
    assert!(
        events.contains("clock gps-time-known gps_utc=2011-05-28T09:27:50.000000Z offset_s="),
        "{events}"
    );
    let m: harmony::logger::Manifest =
        serde_json::from_slice(&std::fs::read(b.dir.join("manifest.json")).unwrap()).unwrap();
    assert!(!m.clock_valid_at_start && m.closed);
    assert!(m.gps_time.is_some());
}

/// Issue #11: rotation requests are rate-limited at the logger's mailbox, whichever way they
/// come: of ten requests in a burst (radio, control socket, SIGHUP's `hup`) one rotates, nine
/// are refused at once with a reason (what the control socket and the radio's ACK report),
/// counted in `rotations_refused`; a second later one is taken again. On the old code every
/// request rotated every file.
#[test]
fn rotation_requests_are_rate_limited() {
    let dir = tempfile::tempdir().unwrap();
    let (lg, feeds) = start_logger(
        dir.path(),
        LoggerConfig::default(),
        Arc::new(RealFs),
        1 << 16,
        None,
    );
    let origins = [Origin::Ground, Origin::Control, Origin::Os];
    let mut results = Vec::new();
    for i in 0..10 {
        let name = if i % 3 == 2 { "hup" } else { "rotate" };
        let sig = Signal::new(name, origins[i % 3]).unwrap();
        results.push(lg.registry.send_signal(sig, Some("logger")));
    }
    assert!(results[0].is_ok(), "{:?}", results[0]);
    for r in &results[1..] {
        let e = r.as_ref().unwrap_err();
        assert!(
            matches!(e, harmony::concurrency::LookupError::RateLimited { .. }),
            "{e:?}"
        );
        assert!(e.to_string().contains("at most once every 1000 ms"), "{e}");
    }
    // Broadcast (SIGHUP's way) is refused the same way.
    let e = lg
        .registry
        .send_signal(Signal::new("hup", Origin::Os).unwrap(), None)
        .unwrap_err();
    assert!(e.to_string().contains("refused"), "{e}");
    assert!(wait_until(secs(5), || lg.metric("rotations_refused") == 10));
    std::thread::sleep(Duration::from_millis(1100));
    lg.registry
        .send_signal(Signal::new("rotate", Origin::Control).unwrap(), None)
        .unwrap();
    for f in &can_inputs()[..10] {
        assert!(feeds.can.push(*f));
    }
    std::thread::sleep(Duration::from_millis(200));
    let session = lg.stop();
    assert_eq!(segments(&session.dir, CAN).len(), 3, "two rotations taken");
    let events = std::fs::read_to_string(session.dir.join("events.log")).unwrap();
    assert_eq!(events.matches("rotate file=can.").count(), 2, "{events}");
}

/// A file system whose syncs fail with EIO while `fail` is set (a failing card).
struct FaultFs {
    fail: Arc<std::sync::atomic::AtomicBool>,
}

struct FaultFile {
    inner: Box<dyn LogFile>,
    fail: Arc<std::sync::atomic::AtomicBool>,
}

fn eio() -> io::Error {
    io::Error::from_raw_os_error(nix::libc::EIO)
}

impl LogFile for FaultFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.inner.write(buf)
    }
    fn sync(&mut self) -> io::Result<()> {
        if self.fail.load(Ordering::SeqCst) {
            return Err(eio());
        }
        self.inner.sync()
    }
    fn truncate(&mut self, len: u64) -> io::Result<()> {
        self.inner.truncate(len)
    }
}

impl FileSystem for FaultFs {
    fn open_append(&self, path: &Path) -> io::Result<(Box<dyn LogFile>, u64)> {
        let (f, len) = RealFs.open_append(path)?;
        Ok((
            Box::new(FaultFile {
                inner: f,
                fail: self.fail.clone(),
            }),
            len,
        ))
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        if self.fail.load(Ordering::SeqCst) {
            return Err(eio());
        }
        RealFs.sync_dir(dir)
    }
    fn free_bytes(&self, dir: &Path) -> io::Result<u64> {
        RealFs.free_bytes(dir)
    }
    fn write_atomic(&self, path: &Path, data: &[u8]) -> io::Result<()> {
        RealFs.write_atomic(path, data)
    }
}

/// Issue #11: an fsync that fails (EIO from a fault-injecting file backend behind the
/// writer's `FileSystem` trait) degrades the logger: `degraded` and `fsync_errors` in its
/// metrics, DEGRADED in its note, its error count, a `degraded cause=fsync` line in events.log;
/// records keep being written; when syncs work again it resumes and says so. On the old code
/// the error was ignored: none of this happened.
#[test]
fn fsync_errors_degrade_the_logger() {
    let dir = tempfile::tempdir().unwrap();
    let fail = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let fs = Arc::new(FaultFs { fail: fail.clone() });
    let cfg = LoggerConfig {
        fsync: harmony::logger::FsyncPolicy::Interval(Duration::from_millis(100)),
        ..LoggerConfig::default()
    };
    let (lg, feeds) = start_logger(dir.path(), cfg, fs, 1 << 16, None);
    let frames = can_inputs();
    let entry = lg.registry.find("logger").unwrap();
    for f in &frames[..100] {
        assert!(feeds.can.push(*f));
    }
    assert!(wait_until(secs(5), || lg.metric("can_written") == 100));
    assert_eq!(lg.metric("degraded"), 0);

    fail.store(true, Ordering::SeqCst);
    for f in &frames[100..200] {
        assert!(feeds.can.push(*f));
    }
    assert!(
        wait_until(secs(5), || lg.metric("degraded") == 1
            && lg.metric("fsync_errors") > 0
            && entry.note().contains("DEGRADED")),
        "degraded {} fsync_errors {} note {:?}",
        lg.metric("degraded"),
        lg.metric("fsync_errors"),
        entry.note()
    );
    assert!(entry.note().contains("fsync"), "{}", entry.note());
    assert!(entry.errors() > 0, "counted in the processor's errors");
    // The writes themselves still work: records are not dropped for a failed sync.
    assert!(wait_until(secs(5), || lg.metric("can_written") == 200));

    fail.store(false, Ordering::SeqCst);
    for f in &frames[200..300] {
        assert!(feeds.can.push(*f));
    }
    assert!(wait_until(secs(5), || lg.metric("degraded") == 0));
    let session = lg.stop();
    let events = std::fs::read_to_string(session.dir.join("events.log")).unwrap();
    assert!(
        events.contains(" degraded cause=fsync file=can.000.log"),
        "{events}"
    );
    assert!(events.contains("(os error 5)"), "EIO named: {events}");
    assert!(events.contains(" resumed "), "{events}");
    let m = manifest(&session.dir);
    assert!(m.fsync_errors > 0 && !m.degraded, "{m:?}");
}

/// Issue #11: the session directory could not be synced when it was made: the logger starts
/// degraded and says so in events.log, then resumes at the first good sync.
#[test]
fn a_failed_session_directory_sync_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let mut session = Session::create(dir.path()).unwrap();
    assert_eq!(session.sync_error, None);
    session.sync_error = Some("cannot sync /data: Input/output error".into());
    let (hk, pool) = Housekeeping::new("housekeeping", 1, Duration::from_millis(100));
    let backend = LoggerBackend::new(
        LoggerConfig::default(),
        session.clone(),
        Arc::new(RealFs),
        &hk,
    );
    let (_gt, gr) = queue(16, "g");
    let (_rt, rr) = queue(16, "r");
    let (_ct, cr) = queue(16, "c");
    let sink = SinkLoop::new(
        "logger",
        SinkInputs {
            gps: gr,
            range: rr,
            can: cr,
        },
        backend,
        Duration::from_millis(10),
    );
    let mut root = Runner::new("root")
        .child(pool)
        .child(LoopProcessor::new(sink));
    let reg = Registry::new();
    let r2 = reg.clone();
    let h = std::thread::spawn(move || run_tree(&r2, &mut root));
    std::thread::sleep(Duration::from_millis(1500));
    reg.request_stop_all(StopReason::Requested("test".into()));
    h.join().unwrap();
    let events = std::fs::read_to_string(session.dir.join("events.log")).unwrap();
    assert!(events.contains(" degraded cause=fsync"), "{events}");
    assert!(events.contains("cannot sync /data"), "{events}");
    assert!(events.contains(" resumed "), "{events}");
    assert_eq!(
        reg.find("logger").unwrap().snapshot().metrics["fsync_errors"],
        1
    );
}

/// Issue #11: manifest.json stays bounded however many segments a session has: it names the
/// newest MANIFEST_SEGMENTS segments of each file (with sizes) and counts all of them. On the
/// old code it listed every segment.
#[test]
fn the_manifest_stays_bounded_with_many_segments() {
    use harmony::logger::MANIFEST_SEGMENTS;
    let dir = tempfile::tempdir().unwrap();
    let cfg = LoggerConfig {
        rotate_bytes: 4096,
        ..LoggerConfig::default()
    };
    let (lg, feeds) = start_logger(dir.path(), cfg, Arc::new(RealFs), 1 << 16, None);
    let frames = can_inputs();
    for f in frames.iter().cycle().take(8000) {
        assert!(feeds.can.push(*f));
    }
    let session = lg.stop();
    let segs = segments(&session.dir, CAN);
    assert!(
        segs.len() > 3 * MANIFEST_SEGMENTS as usize,
        "{}",
        segs.len()
    );
    let m = manifest(&session.dir);
    let listed: Vec<&str> = m
        .files
        .iter()
        .filter(|f| f.name.starts_with("can."))
        .map(|f| f.name.as_str())
        .collect();
    assert_eq!(listed.len(), MANIFEST_SEGMENTS as usize, "{listed:?}");
    let newest: Vec<String> = segs[segs.len() - MANIFEST_SEGMENTS as usize..]
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(listed, newest);
    let t = m.segments.iter().find(|t| t.file == "can").unwrap();
    assert_eq!(t.count as usize, segs.len());
    assert_eq!(
        t.first_listed as usize,
        segs.len() - MANIFEST_SEGMENTS as usize
    );
    let on_disk: u64 = segs
        .iter()
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum();
    assert_eq!(t.bytes, on_disk, "all segments' bytes");
    let r = m.records.iter().find(|r| r.file == "can").unwrap();
    assert_eq!((r.received, r.written), (8000, 8000));
    let size = std::fs::metadata(session.dir.join("manifest.json"))
        .unwrap()
        .len();
    assert!(size < 8192, "manifest.json is {size} bytes");
}

/// A file system whose housekeeping calls (statvfs, the manifest's replacement) stall while
/// `stalled` is set (an SD card pausing under the housekeeping pool).
struct SlowHousekeepingFs {
    stalled: Arc<std::sync::atomic::AtomicBool>,
}

impl SlowHousekeepingFs {
    fn stall(&self) {
        while self.stalled.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl FileSystem for SlowHousekeepingFs {
    fn open_append(&self, path: &Path) -> io::Result<(Box<dyn LogFile>, u64)> {
        RealFs.open_append(path)
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        RealFs.sync_dir(dir)
    }
    fn free_bytes(&self, dir: &Path) -> io::Result<u64> {
        self.stall();
        RealFs.free_bytes(dir)
    }
    fn write_atomic(&self, path: &Path, data: &[u8]) -> io::Result<()> {
        self.stall();
        RealFs.write_atomic(path, data)
    }
}

/// Issue #11: the free-space look (statvfs) and the manifest run in the housekeeping pool, not
/// on the logger thread: with both stalled for over 3 s (longer than the 2 s the queues hold)
/// at a saturated bus, the logger keeps writing and drops nothing, and the stall is visible in
/// the pool's metrics (`free-space.running_ms`) and note. On the old code the logger thread
/// made the statvfs call itself, stalled, and the queue overflowed.
#[test]
fn a_stalled_housekeeping_job_does_not_stall_logging() {
    let dir = tempfile::tempdir().unwrap();
    let stalled = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let fs = Arc::new(SlowHousekeepingFs {
        stalled: stalled.clone(),
    });
    let produced = Arc::new(AtomicU64::new(0));
    let p2 = produced.clone();
    let default_capacity = harmony::board::Board::sim().queue_sizes().can_logger;
    let (lg, _feeds) = start_logger(
        dir.path(),
        LoggerConfig::default(),
        fs,
        default_capacity,
        Some(Box::new(move |tx| {
            Box::new(LoopProcessor::with_config(
                Bus16k {
                    tx,
                    n: 0,
                    produced: p2,
                },
                LoopConfig::every(Duration::from_millis(1)),
            ))
        })),
    );
    let hk = lg.registry.find("housekeeping").unwrap();
    let hk_metric = |m: &str| hk.snapshot().metrics.get(m).copied().unwrap_or(0);
    // The jobs are stuck from the start; the logger must not be.
    std::thread::sleep(Duration::from_millis(2000));
    let w1 = lg.metric("can_written");
    std::thread::sleep(Duration::from_millis(1500));
    let w2 = lg.metric("can_written");
    assert!(w2 > w1 + 2_000, "the logger kept writing: {w1} -> {w2}");
    assert!(
        hk_metric("free-space.running_ms") >= 3000,
        "{:?}",
        hk.snapshot().metrics
    );
    assert!(hk.note().contains("running for"), "{}", hk.note());
    assert_eq!(hk_metric("free-space.runs"), 0);
    assert_eq!(
        lg.metric("queue_dropped"),
        0,
        "nothing dropped during the stall"
    );
    // After the stall the jobs finish and are counted.
    stalled.store(false, Ordering::SeqCst);
    assert!(wait_until(secs(10), || hk_metric("free-space.runs") >= 1
        && hk_metric("manifest.runs") >= 1));
    assert!(hk_metric("free-space.last_ms") >= 3000);
    let session = lg.stop();
    assert_eq!(lg_dropped(&session), 0, "nothing dropped");
    let total = produced.load(Ordering::SeqCst);
    assert_eq!(can_lines(&session.dir).len() as u64, total);
}

fn lg_dropped(session: &Session) -> u64 {
    let m = manifest(&session.dir);
    m.queue_drops.can + m.records.iter().map(|r| r.dropped_disk).sum::<u64>()
}
