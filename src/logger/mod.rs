//! The flash-card logger (issue #4): everything the sources accepted, in the formats their
//! ecosystems read, safe against a yanked battery, a stalling or full SD card.
//!
//! Two threads (PX4's logger splits the same way):
//! * the logger thread ([`LoggerBackend`], run by a [`SinkLoop`]) drains the sources' queues,
//!   formats records into per-file chunks of complete lines, and hands full chunks (16 KiB,
//!   so every write is at least 4 KiB) to
//! * the writer thread ([`writer`]), the only one writing the data files: appends, fsyncs at
//!   most every second (or after every batch with `fsync = "always"`), rotates segments, writes
//!   `events.log`.
//!
//! The logger thread does no file-system call at all (issue #11): what is slow on a card and
//! not a data write runs as jobs of the housekeeping pool ([`Housekeeping`]): `manifest`
//! (serialise and replace `manifest.json`, durably; on request, every `manifest_every` and at
//! close) and `free-space` (`statvfs` every 5 s, and the free-space floor: deleting the oldest
//! finished sessions). The logger thread hands them state through a slot and atomics, and
//! forwards the events they raise (`session-deleted`) to the writer.
//!
//! Both run at a lower scheduling priority than the sources (nice +10). A stall in the writer
//! fills the bounded channel between them; the logger thread then stops draining and the
//! sources' queues (2 s of worst-case traffic by default) absorb it; beyond that the queues drop
//! and count, and the logger writes a dropout record with count and first/last time.
//!
//! Files in the session directory (`<data_dir>/<session>/`, see [`session`]):
//! `can.NNN.log` (candump `-l`), `gps.NNN.nmea` (raw sentences), `gps-fix.NNN.csv`,
//! `rangefinder.NNN.csv`, `events.log`, `harmony.log` (the application log), `manifest.json`.
//! `NNN` is the segment: files rotate at `rotate_mib` and on SIGHUP / the `rotate` signal, at
//! most once per [`ROTATE_MIN_INTERVAL`]: the logger limits its `hup` and `rotate` signals at
//! its mailbox ([`crate::concurrency::Entry::limit_signals`]), so a request from the radio, the
//! control socket or SIGHUP beyond that is refused at delivery, counted in
//! `rotations_refused`, and the requester told where there is a reply.
//!
//! Power cut: chunks are whole lines, and a failed write is cut back to the last whole line,
//! so after a crash at most the last line of a file can be torn (only by the kernel, at a
//! power loss); `harmony log check --repair` finds and cuts it.
//!
//! `manifest.json` stays small however long the session: `files` lists the last
//! [`MANIFEST_SEGMENTS`] segments of each data file with their sizes, and `segments` gives, per
//! data file, the number of segments, the bytes in all of them and the first one listed. The
//! closed manifest is made after the writer has written and synced everything, so its
//! `written` counts are final (`written == received` when nothing was dropped).

pub mod events;
pub mod fs;
pub mod session;
pub mod space;
pub mod writer;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TrySendError, bounded};
use crossbeam_queue::ArrayQueue;
use serde::Serialize;

use self::fs::FileSystem;
use self::session::Session;
use self::writer::{FAULT_SYNC, FAULT_WRITE, FileId, Msg, Writer, WriterStats};
use crate::concurrency::{
    BoxError, Context, Counter, DropReport, Housekeeping, JobHandle, ProcState, Signal,
};
use crate::formats::candump::{MAX_LINE, format_line};
use crate::formats::csv::{FIX_HEADER, RANGE_HEADER, write_fix, write_range};
use crate::formats::dronecan::TransferCounter;
use crate::formats::utc::{write_mono, write_utc};
use crate::records::{CanRecord, GpsRecord, RangeRecord};
use crate::sinks::drain::{Backend, Source};

/// When to fsync.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// At most every `interval` (default 1 s), and at close.
    Interval(Duration),
    /// After every batch the logger writes.
    Always,
}

/// Settings of the logger.
#[derive(Clone, Debug)]
pub struct LoggerConfig {
    pub rotate_bytes: u64,
    pub fsync: FsyncPolicy,
    /// Keep at least this much free on the data file system by deleting the oldest finished
    /// sessions (0: never delete).
    pub min_free_bytes: u64,
    pub manifest_every: Duration,
    /// CAN interface name written into candump lines.
    pub can_iface: String,
    pub board: String,
    /// Which sources the board has (files are only made for those).
    pub has_gps: bool,
    pub has_range: bool,
    pub has_can: bool,
}

impl Default for LoggerConfig {
    fn default() -> Self {
        LoggerConfig {
            rotate_bytes: 64 << 20,
            fsync: FsyncPolicy::Interval(Duration::from_secs(1)),
            min_free_bytes: 0,
            manifest_every: Duration::from_secs(5),
            can_iface: "can0".into(),
            board: "unknown".into(),
            has_gps: true,
            has_range: true,
            has_can: true,
        }
    }
}

/// The data files, in writer file-id order.
pub const CAN: FileId = 0;
pub const NMEA: FileId = 1;
pub const FIX: FileId = 2;
pub const RANGE: FileId = 3;
const FILES: usize = 4;

/// File name stem, extension and header of each data file.
pub const FILE_KINDS: [(&str, &str, Option<&str>); FILES] = [
    ("can", "log", None),
    ("gps", "nmea", None),
    ("gps-fix", "csv", Some(FIX_HEADER)),
    ("rangefinder", "csv", Some(RANGE_HEADER)),
];

/// The name of segment `seg` of data file `file`.
pub fn file_name(file: FileId, seg: u32) -> String {
    let (stem, ext, _) = FILE_KINDS[file];
    format!("{stem}.{seg:03}.{ext}")
}

/// How many segments of each data file `manifest.json` lists by name (the newest ones).
pub const MANIFEST_SEGMENTS: u32 = 16;
/// How often the `free-space` job reads the free space (and applies the floor).
pub const SPACE_EVERY: Duration = Duration::from_secs(5);
/// Rotation requests (`rotate`, `hup`; from the radio, the control socket or SIGHUP) are taken
/// at most once per this interval; the others are refused at delivery, counted
/// (`rotations_refused`) and the requester told where there is a reply.
pub const ROTATE_MIN_INTERVAL: Duration = Duration::from_secs(1);
/// Events raised by housekeeping jobs, waiting for the logger thread to forward them.
const JOB_EVENTS: usize = 64;

/// A chunk is handed to the writer when it reaches this size.
pub const CHUNK: usize = 16 * 1024;
/// Messages in flight to the writer; the logger stops draining at half of it.
const CHANNEL: usize = 128;

struct Stream {
    enabled: bool,
    buf: Vec<u8>,
    records: u32,
    segment: u32,
    segment_bytes: u64,
    received: u64,
}

#[derive(Default)]
struct QueueDrops {
    gps: u64,
    range: u64,
    can: u64,
}

/// What the logger thread shares with its housekeeping jobs.
struct Shared {
    fs: Arc<dyn FileSystem>,
    session: Session,
    min_free_bytes: u64,
    /// The newest manifest to write (newest wins; the job fills in the file sizes).
    manifest: Mutex<Option<Manifest>>,
    /// Complete `events.log` lines from the jobs, forwarded by the logger thread.
    events: ArrayQueue<Vec<u8>>,
    events_dropped: AtomicU64,
    /// Free bytes on the data file system at the last look (`u64::MAX`: not known yet).
    disk_free: AtomicU64,
}

impl Shared {
    fn event(&self, kind: &str, args: std::fmt::Arguments<'_>) {
        if self.events.push(events::line(kind, args)).is_err() {
            self.events_dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The `manifest` job: the newest manifest, with the listed files' sizes, replaced
    /// atomically and durably.
    fn write_manifest(&self) -> Result<(), BoxError> {
        let taken = self
            .manifest
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        let Some(mut m) = taken else { return Ok(()) };
        for f in &mut m.files {
            f.bytes = self
                .fs
                .file_len(&self.session.dir.join(&f.name))
                .unwrap_or(0);
        }
        let mut j = serde_json::to_vec_pretty(&m)?;
        j.push(b'\n');
        self.fs
            .write_atomic(&self.session.dir.join("manifest.json"), &j)
            .map_err(|e| format!("manifest.json: {e}"))?;
        Ok(())
    }

    /// The `free-space` job: reads the free space and keeps the floor.
    fn free_space(&self) -> Result<(), BoxError> {
        let s = &self.session;
        let free = self
            .fs
            .free_bytes(&s.data_dir)
            .map_err(|e| format!("statvfs {}: {e}", s.data_dir.display()))?;
        self.disk_free.store(free, Ordering::Relaxed);
        if self.min_free_bytes > 0 && free < self.min_free_bytes {
            for (name, bytes) in space::free_up(&*self.fs, &s.data_dir, &s.dir, self.min_free_bytes)
            {
                log::warn!("free-space floor: deleted old session {name} ({bytes} bytes)");
                self.event(
                    "session-deleted",
                    format_args!("name={name} bytes={bytes} reason=free-space-floor"),
                );
            }
            if let Ok(free) = self.fs.free_bytes(&s.data_dir) {
                self.disk_free.store(free, Ordering::Relaxed);
            }
        }
        Ok(())
    }
}

struct Metrics {
    bytes_written: Counter,
    records_written: Counter,
    records_dropped: Counter,
    queue_dropped: Counter,
    degraded: Counter,
    write_errors: Counter,
    fsync_errors: Counter,
    disk_free_mb: Counter,
    last_fsync_ms: Counter,
    per_file: Vec<[Counter; 3]>,
}

/// The logger thread's half (see the module docs).
pub struct LoggerBackend {
    cfg: LoggerConfig,
    session: Session,
    fs: Arc<dyn FileSystem>,
    shared: Arc<Shared>,
    manifest_job: JobHandle,
    /// Write and fsync errors already added to the entry's error count.
    errors_seen: u64,
    /// The writer's faults the note and the `degraded` metric show.
    shown_faults: u8,
    streams: Vec<Stream>,
    tx: Option<Sender<Msg>>,
    free: Receiver<Vec<u8>>,
    free_tx: Sender<Vec<u8>>,
    writer: Option<std::thread::JoinHandle<()>>,
    stats: Arc<WriterStats>,
    metrics: Option<Metrics>,
    next_sync: Instant,
    next_manifest: Instant,
    next_look: Instant,
    transfers: TransferCounter,
    drops: QueueDrops,
    gps_offset: Option<(u64, f64)>,
    clock_delta: Option<i64>,
    states: Vec<(String, ProcState, String)>,
    line: [u8; MAX_LINE],
}

fn lower_priority() {
    // SAFETY: setpriority on the calling thread (tid) with a plain integer; lowering one's own
    // priority is always allowed and touches no memory.
    unsafe {
        nix::libc::setpriority(
            nix::libc::PRIO_PROCESS,
            nix::unistd::gettid().as_raw() as nix::libc::id_t,
            10,
        );
    }
}

impl LoggerBackend {
    /// A logger writing `session` through `fs`; its `manifest` and `free-space` jobs run on
    /// `housekeeping`'s pool (which must run in the same tree, before the logger).
    pub fn new(
        cfg: LoggerConfig,
        session: Session,
        fs: Arc<dyn FileSystem>,
        housekeeping: &Housekeeping,
    ) -> Self {
        let (free_tx, free) = bounded(CHANNEL + FILES);
        let enabled = [cfg.has_can, cfg.has_gps, cfg.has_gps, cfg.has_range];
        let shared = Arc::new(Shared {
            fs: fs.clone(),
            session: session.clone(),
            min_free_bytes: cfg.min_free_bytes,
            manifest: Mutex::new(None),
            events: ArrayQueue::new(JOB_EVENTS),
            events_dropped: AtomicU64::new(0),
            disk_free: AtomicU64::new(u64::MAX),
        });
        let s = shared.clone();
        let manifest_job = housekeeping.add("manifest", None, false, move || s.write_manifest());
        let s = shared.clone();
        housekeeping.add("free-space", Some(SPACE_EVERY), false, move || {
            s.free_space()
        });
        LoggerBackend {
            shared,
            manifest_job,
            errors_seen: 0,
            shown_faults: 0,
            streams: enabled
                .iter()
                .map(|&e| Stream {
                    enabled: e,
                    buf: Vec::with_capacity(CHUNK + 256),
                    records: 0,
                    segment: 0,
                    segment_bytes: 0,
                    received: 0,
                })
                .collect(),
            cfg,
            session,
            fs,
            tx: None,
            free,
            free_tx,
            writer: None,
            stats: Arc::new(WriterStats::new(FILES)),
            metrics: None,
            next_sync: Instant::now(),
            next_manifest: Instant::now(),
            next_look: Instant::now(),
            transfers: TransferCounter::default(),
            drops: QueueDrops::default(),
            gps_offset: None,
            clock_delta: None,
            states: Vec::new(),
            line: [0; MAX_LINE],
        }
    }

    pub fn session(&self) -> &Session {
        &self.session
    }

    fn send(&self, m: Msg) {
        let Some(tx) = &self.tx else { return };
        match tx.try_send(m) {
            Ok(()) => {}
            // Rare: `ready` keeps the channel half empty; block the logger thread (never a
            // source) rather than lose accepted data.
            Err(TrySendError::Full(m)) => {
                let _ = tx.send(m);
            }
            Err(TrySendError::Disconnected(_)) => {}
        }
    }

    fn event(&self, kind: &str, args: std::fmt::Arguments<'_>) {
        self.send(Msg::Event(events::line(kind, args)));
    }

    fn open_segment(&mut self, file: FileId) {
        let seg = self.streams[file].segment;
        let path = self.session.dir.join(file_name(file, seg));
        self.send(Msg::Open {
            file,
            path,
            header: FILE_KINDS[file].2,
        });
    }

    /// Hands the stream's buffered lines to the writer.
    fn flush(&mut self, file: FileId) {
        let s = &mut self.streams[file];
        if s.buf.is_empty() {
            return;
        }
        let fresh = self
            .free
            .try_recv()
            .unwrap_or_else(|_| Vec::with_capacity(CHUNK + 256));
        let buf = std::mem::replace(&mut s.buf, fresh);
        s.segment_bytes += buf.len() as u64;
        let records = std::mem::take(&mut s.records);
        self.send(Msg::Data { file, buf, records });
    }

    fn rotate(&mut self, file: FileId, reason: &str) {
        if !self.streams[file].enabled {
            return;
        }
        self.flush(file);
        let s = &mut self.streams[file];
        s.segment += 1;
        s.segment_bytes = 0;
        let name = file_name(file, s.segment);
        self.open_segment(file);
        self.event("rotate", format_args!("file={name} reason={reason}"));
    }

    #[inline]
    fn appended(&mut self, file: FileId) {
        let s = &mut self.streams[file];
        s.records += 1;
        s.received += 1;
        if s.buf.len() >= CHUNK {
            self.flush(file);
        }
        let s = &self.streams[file];
        if s.segment_bytes + s.buf.len() as u64 >= self.cfg.rotate_bytes {
            self.rotate(file, "size");
        }
    }

    fn look_at_states(&mut self, ctx: &Context) {
        for e in ctx.registry().entries() {
            let (state, note) = (e.state(), e.note());
            let changed = match self.states.iter_mut().find(|(p, _, _)| *p == e.path) {
                Some((_, s, n)) if *s == state && *n == note => false,
                Some((_, s, n)) => {
                    *s = state;
                    n.clone_from(&note);
                    true
                }
                None => {
                    self.states.push((e.path.clone(), state, note.clone()));
                    !note.is_empty() || state != ProcState::Active
                }
            };
            if changed {
                self.event(
                    "state",
                    format_args!(
                        "proc={} state={state} note=\"{}\"",
                        e.path,
                        note.replace('"', "'")
                    ),
                );
            }
        }
    }

    fn check_clock(&mut self) {
        let now = crate::clock::Stamp::now();
        let delta = now.wall_ns - now.boot_ns as i64;
        if let Some(prev) = self.clock_delta
            && (delta - prev).abs() > 1_000_000_000
        {
            self.event(
                "clock",
                format_args!(
                    "system-clock-changed by_s={:.3}",
                    (delta - prev) as f64 / 1e9
                ),
            );
        }
        self.clock_delta = Some(delta);
    }

    fn publish(&self) {
        let Some(m) = &self.metrics else { return };
        let st = &self.stats;
        let sum = |v: &Vec<AtomicU64>| v.iter().map(|x| x.load(Ordering::Relaxed)).sum::<u64>();
        m.bytes_written
            .store(sum(&st.written_bytes), Ordering::Relaxed);
        m.records_written
            .store(sum(&st.written_records), Ordering::Relaxed);
        m.records_dropped
            .store(sum(&st.dropped_records), Ordering::Relaxed);
        m.queue_dropped.store(
            self.drops.gps + self.drops.range + self.drops.can,
            Ordering::Relaxed,
        );
        m.degraded
            .store((self.shown_faults != 0) as u64, Ordering::Relaxed);
        m.write_errors
            .store(st.write_errors.load(Ordering::Relaxed), Ordering::Relaxed);
        m.fsync_errors
            .store(st.fsync_errors.load(Ordering::Relaxed), Ordering::Relaxed);
        if let Some(free) =
            Some(self.shared.disk_free.load(Ordering::Relaxed)).filter(|&f| f != u64::MAX)
        {
            m.disk_free_mb.store(free >> 20, Ordering::Relaxed);
        }
        m.last_fsync_ms
            .store(st.last_fsync_ms.load(Ordering::Relaxed), Ordering::Relaxed);
        for (i, pf) in m.per_file.iter().enumerate() {
            pf[0].store(
                st.written_records[i].load(Ordering::Relaxed),
                Ordering::Relaxed,
            );
            pf[1].store(
                st.dropped_records[i].load(Ordering::Relaxed),
                Ordering::Relaxed,
            );
            pf[2].store(self.streams[i].received, Ordering::Relaxed);
        }
    }

    /// The manifest's content; the listed files' sizes are filled in by the `manifest` job
    /// (the logger thread does no file-system call).
    pub fn manifest(&self, closed: bool) -> Manifest {
        let st = &self.stats;
        let enabled = || (0..FILES).filter(|&i| self.streams[i].enabled);
        let first_listed = |i: FileId| {
            self.streams[i]
                .segment
                .saturating_sub(MANIFEST_SEGMENTS - 1)
        };
        let files = enabled()
            .flat_map(|i| (first_listed(i)..=self.streams[i].segment).map(move |seg| (i, seg)))
            .map(|(i, seg)| ManifestFile {
                name: file_name(i, seg),
                bytes: 0,
            })
            .collect();
        let segments = enabled()
            .map(|i| SegmentTotals {
                file: FILE_KINDS[i].0.into(),
                count: self.streams[i].segment + 1,
                bytes: st.written_bytes[i].load(Ordering::Relaxed),
                first_listed: first_listed(i),
            })
            .collect();
        let mut started_utc = Vec::new();
        write_utc(&mut started_utc, self.session.started.wall_ns);
        let mut updated_utc = Vec::new();
        write_utc(&mut updated_utc, crate::clock::wall_ns());
        Manifest {
            firmware: crate::version::short(),
            board: self.cfg.board.clone(),
            session: self.session.name.clone(),
            started_utc: String::from_utf8_lossy(&started_utc).into_owned(),
            started_mono_s: self.session.started.boot_ns as f64 / 1e9,
            clock_valid_at_start: self.session.clock_valid,
            gps_time: self.gps_offset.map(|(at, off)| GpsTime {
                known_at_mono_s: at as f64 / 1e9,
                offset_s: off,
            }),
            updated_utc: String::from_utf8_lossy(&updated_utc).into_owned(),
            closed,
            degraded: st.degraded.load(Ordering::Relaxed),
            fsync_errors: st.fsync_errors.load(Ordering::Relaxed),
            files,
            segments,
            records: enabled()
                .map(|i| RecordCounts {
                    file: FILE_KINDS[i].0.into(),
                    received: self.streams[i].received,
                    written: st.written_records[i].load(Ordering::Relaxed),
                    dropped_disk: st.dropped_records[i].load(Ordering::Relaxed),
                })
                .collect(),
            queue_drops: QueueDropCounts {
                gps: self.drops.gps,
                rangefinder: self.drops.range,
                can: self.drops.can,
            },
            can_transfers_per_node: self
                .transfers
                .nodes()
                .map(|(n, c)| (n.to_string(), c))
                .collect(),
        }
    }

    /// Hands the manifest to the `manifest` job (newest wins) and asks for a run.
    fn write_manifest(&self, closed: bool) {
        let m = self.manifest(closed);
        *self
            .shared
            .manifest
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(m);
        self.manifest_job.request();
    }

    /// Forwards the events the housekeeping jobs raised to the writer.
    fn forward_job_events(&self) {
        while let Some(line) = self.shared.events.pop() {
            self.send(Msg::Event(line));
        }
    }
}

/// `manifest.json`.
#[derive(Clone, Debug, Serialize, serde::Deserialize, PartialEq)]
pub struct Manifest {
    pub firmware: String,
    pub board: String,
    pub session: String,
    pub started_utc: String,
    pub started_mono_s: f64,
    pub clock_valid_at_start: bool,
    pub gps_time: Option<GpsTime>,
    pub updated_utc: String,
    pub closed: bool,
    pub degraded: bool,
    /// fsync errors so far (a failing card: data may be missing even where counts say written).
    #[serde(default)]
    pub fsync_errors: u64,
    /// The last [`MANIFEST_SEGMENTS`] segments of each data file, with their sizes.
    pub files: Vec<ManifestFile>,
    /// Per data file: every segment, counted (files lists only the newest).
    #[serde(default)]
    pub segments: Vec<SegmentTotals>,
    pub records: Vec<RecordCounts>,
    pub queue_drops: QueueDropCounts,
    pub can_transfers_per_node: std::collections::BTreeMap<String, u64>,
}

#[derive(Clone, Debug, Serialize, serde::Deserialize, PartialEq)]
pub struct GpsTime {
    pub known_at_mono_s: f64,
    /// GPS UTC minus the system clock at that moment.
    pub offset_s: f64,
}

#[derive(Clone, Debug, Serialize, serde::Deserialize, PartialEq)]
pub struct ManifestFile {
    pub name: String,
    pub bytes: u64,
}

/// All the segments of one data file.
#[derive(Clone, Debug, Serialize, serde::Deserialize, PartialEq)]
pub struct SegmentTotals {
    pub file: String,
    /// Segments made (`NNN` runs from 0 to `count - 1`).
    pub count: u32,
    /// Bytes written to all of them (headers included).
    pub bytes: u64,
    /// The oldest segment listed in `files`.
    pub first_listed: u32,
}

#[derive(Clone, Debug, Serialize, serde::Deserialize, PartialEq)]
pub struct RecordCounts {
    pub file: String,
    pub received: u64,
    pub written: u64,
    pub dropped_disk: u64,
}

#[derive(Clone, Debug, Default, Serialize, serde::Deserialize, PartialEq)]
pub struct QueueDropCounts {
    pub gps: u64,
    pub rangefinder: u64,
    pub can: u64,
}

impl Backend for LoggerBackend {
    fn signals(&self) -> Vec<String> {
        vec!["hup".into(), "rotate".into()]
    }

    fn start(&mut self, ctx: &Context) -> Result<(), BoxError> {
        lower_priority();
        ctx.entry().limit_signals(
            &["hup", "rotate"],
            ROTATE_MIN_INTERVAL,
            ctx.metric("rotations_refused"),
        );
        let (tx, rx) = bounded(CHANNEL);
        let w = Writer::new(
            self.fs.clone(),
            &self.session.dir,
            FILES,
            self.stats.clone(),
            self.free_tx.clone(),
        )
        .wake_logger_below(ctx.waker().clone(), CHANNEL / 2)
        .with_sync_fault(self.session.sync_error.clone());
        self.writer = Some(
            std::thread::Builder::new()
                .name("log-writer".into())
                .spawn(move || {
                    lower_priority();
                    w.run(rx)
                })?,
        );
        self.tx = Some(tx);
        let per_file = (0..FILES)
            .map(|i| {
                let stem = FILE_KINDS[i].0.replace('-', "_");
                [
                    ctx.metric(&format!("{stem}_written")),
                    ctx.metric(&format!("{stem}_dropped_disk")),
                    ctx.metric(&format!("{stem}_received")),
                ]
            })
            .collect();
        self.metrics = Some(Metrics {
            bytes_written: ctx.metric("bytes_written"),
            records_written: ctx.metric("records_written"),
            records_dropped: ctx.metric("records_dropped"),
            queue_dropped: ctx.metric("queue_dropped"),
            degraded: ctx.metric("degraded"),
            write_errors: ctx.metric("write_errors"),
            fsync_errors: ctx.metric("fsync_errors"),
            disk_free_mb: ctx.metric("disk_free_mb"),
            last_fsync_ms: ctx.metric("last_fsync_ms"),
            per_file,
        });
        let mut t = Vec::new();
        write_mono(&mut t, self.session.started.boot_ns);
        self.event(
            "session-start",
            format_args!(
                "session={} board={} firmware={} clock_valid={} started_mono_s={}",
                self.session.name,
                self.cfg.board,
                crate::version::short(),
                self.session.clock_valid,
                String::from_utf8_lossy(&t)
            ),
        );
        if !self.session.clock_valid {
            self.event(
                "clock",
                format_args!("system-clock-implausible (before 2020): times are corrected once GPS time is known"),
            );
        }
        for f in 0..FILES {
            if self.streams[f].enabled {
                self.open_segment(f);
            }
        }
        ctx.set_note(&format!("session {}", self.session.name));
        self.write_manifest(false);
        Ok(())
    }

    fn ready(&mut self) -> bool {
        self.tx.as_ref().is_none_or(|t| t.len() < CHANNEL / 2)
    }

    fn gps(&mut self, r: &GpsRecord) {
        match r {
            GpsRecord::Sentence(s) => {
                self.streams[NMEA].buf.extend_from_slice(&s.bytes);
                self.appended(NMEA);
            }
            GpsRecord::Fix(f) => {
                if self.gps_offset.is_none()
                    && let Some(utc) = f.utc_ns
                {
                    let off = (utc - f.stamp.wall_ns) as f64 / 1e9;
                    self.gps_offset = Some((f.stamp.boot_ns, off));
                    let mut g = Vec::new();
                    write_utc(&mut g, utc);
                    self.event(
                        "clock",
                        format_args!(
                            "gps-time-known gps_utc={} offset_s={off:.3}",
                            String::from_utf8_lossy(&g)
                        ),
                    );
                }
                write_fix(&mut self.streams[FIX].buf, f);
                self.appended(FIX);
            }
        }
    }

    fn range(&mut self, r: &RangeRecord) {
        write_range(&mut self.streams[RANGE].buf, r);
        self.appended(RANGE);
    }

    #[inline]
    fn can(&mut self, r: &CanRecord) {
        self.transfers.add(r);
        let t_us = (r.stamp.wall_ns.max(0) / 1000) as u64;
        let n = format_line(&mut self.line, t_us, &self.cfg.can_iface, r);
        self.streams[CAN].buf.extend_from_slice(&self.line[..n]);
        self.appended(CAN);
    }

    fn dropout(&mut self, source: Source, d: DropReport) {
        match source {
            Source::Gps => self.drops.gps += d.count,
            Source::Range => self.drops.range += d.count,
            Source::Can => self.drops.can += d.count,
        }
        let (mut a, mut b) = (Vec::new(), Vec::new());
        write_mono(&mut a, d.first_ns);
        write_mono(&mut b, d.last_ns);
        log::warn!(
            "{} -> logger queue full: {} records dropped",
            source.as_str(),
            d.count
        );
        self.event(
            "dropout",
            format_args!(
                "source={} sink=logger count={} first_mono={} last_mono={}",
                source.as_str(),
                d.count,
                String::from_utf8_lossy(&a),
                String::from_utf8_lossy(&b)
            ),
        );
    }

    fn on_signal(&mut self, sig: &Signal, _ctx: &Context) -> Result<(), BoxError> {
        if matches!(sig.name(), "hup" | "rotate") {
            log::info!("rotating log files ({})", sig.name());
            for f in 0..FILES {
                self.rotate(f, "signal");
            }
        }
        Ok(())
    }

    fn batch_done(&mut self, ctx: &Context) -> Result<Option<Instant>, BoxError> {
        let now = Instant::now();
        let sync_due = match self.cfg.fsync {
            FsyncPolicy::Always => true,
            FsyncPolicy::Interval(_) => now >= self.next_sync,
        };
        if sync_due {
            for f in 0..FILES {
                self.flush(f);
            }
            self.send(Msg::Sync);
            if let FsyncPolicy::Interval(d) = self.cfg.fsync {
                self.next_sync = now + d;
            }
        }
        if now >= self.next_look {
            self.next_look = now + Duration::from_secs(1);
            self.look_at_states(ctx);
            self.check_clock();
            self.forward_job_events();
        }
        // The writer's failures count as the logger's errors, as they happen.
        let st = &self.stats;
        let errors =
            st.write_errors.load(Ordering::Relaxed) + st.fsync_errors.load(Ordering::Relaxed);
        if errors > self.errors_seen {
            ctx.entry().add_errors(errors - self.errors_seen);
            self.errors_seen = errors;
        }
        // The note follows the writer's faults at once (not a second later), so the note and
        // the `degraded` metric published below always agree.
        let faults = self.stats.faults.load(Ordering::Acquire);
        if faults != self.shown_faults {
            self.shown_faults = faults;
            let why = match (faults & FAULT_WRITE != 0, faults & FAULT_SYNC != 0) {
                (true, true) => Some("writes and fsync failing, dropping"),
                (true, false) => Some("writes failing, dropping"),
                (false, true) => Some("fsync failing: data may not be on the card"),
                (false, false) => None,
            };
            ctx.set_note(&match why {
                Some(why) => format!("session {}: DEGRADED ({why})", self.session.name),
                None => format!("session {}", self.session.name),
            });
        }
        if now >= self.next_manifest {
            self.next_manifest = now + self.cfg.manifest_every;
            self.write_manifest(false);
        }
        self.publish();
        let next = [self.next_sync, self.next_look, self.next_manifest]
            .into_iter()
            .min()
            .unwrap_or(now + Duration::from_secs(1));
        Ok(Some(next))
    }

    fn finish(&mut self, ctx: &Context) -> Result<(), BoxError> {
        for f in 0..FILES {
            self.flush(f);
        }
        self.look_at_states(ctx);
        self.forward_job_events();
        let total: u64 = self.streams.iter().map(|s| s.received).sum();
        self.event(
            "session-end",
            format_args!(
                "records={total} queue_drops={}",
                self.drops.gps + self.drops.range + self.drops.can
            ),
        );
        // Close syncs everything; the closed manifest is made once the writer is done, so its
        // counts are final (issue #11: it said written < received when made before).
        self.send(Msg::Close);
        self.tx = None;
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
        self.publish();
        self.write_manifest(true);
        Ok(())
    }
}

/// Paths of every segment of a data file in a session directory, in order.
pub fn segments(dir: &std::path::Path, file: FileId) -> Vec<PathBuf> {
    let (stem, ext, _) = FILE_KINDS[file];
    let mut v: Vec<(u32, PathBuf)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter_map(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            let seg = n
                .strip_prefix(stem)?
                .strip_prefix('.')?
                .strip_suffix(ext)?
                .strip_suffix('.')?
                .parse()
                .ok()?;
            Some((seg, e.path()))
        })
        .collect();
    v.sort();
    v.into_iter().map(|(_, p)| p).collect()
}
