//! The writer thread: the only thread that writes the data files (PX4's logger splits the same
//! way: the logger thread formats, a writer thread writes). The rest of the card work (the
//! manifest, free space, old sessions, the signing state) is the housekeeping pool's; the timed
//! threads (logger, uplink, sources) make no file-system call.
//!
//! It receives whole chunks of complete lines, appends them, fsyncs when told (at most once a
//! second by default), rotates segments, and writes `events.log`. A stall
//! here (an SD card pausing for seconds) fills the bounded channel; the logger thread then
//! stops draining and the sources' queues absorb the stall.
//!
//! Disk full (ENOSPC) or any write error: the chunk is dropped and counted, the file is cut
//! back to its last complete line (so no torn record is left in the middle), the logger is
//! marked degraded, and one write per second probes whether space is back; everything else
//! that arrives meanwhile is dropped and counted. Events raised while writes fail are kept (up
//! to a bound) and written when writing resumes.
//!
//! An fsync error (EIO from a failing card, on a data file, `events.log` or the directory) is
//! never ignored (issue #11): the logger is degraded, the error counted (`fsync_errors`) and
//! written to `events.log` (what was written since the last good sync may not be on the card).
//! Writing goes on (the writes themselves still succeed); the logger resumes when a later sync
//! of every file succeeds. Linux reports a writeback error once per file, so a later success
//! means the later data is durable, not that the earlier data was.

use std::collections::VecDeque;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};

use super::fs::{FileSystem, LogFile};
use crate::concurrency::state::now_ms;

/// Index of a data file (one per stream).
pub type FileId = usize;

/// What the logger thread asks the writer to do.
pub enum Msg {
    /// Starts segment `path` of file `file` (closing, after a sync, the previous one).
    Open {
        file: FileId,
        path: PathBuf,
        header: Option<&'static str>,
    },
    /// Complete lines for `file`, holding `records` records.
    Data {
        file: FileId,
        buf: Vec<u8>,
        records: u32,
    },
    /// One complete `events.log` line.
    Event(Vec<u8>),
    /// fsync every file written since the last sync.
    Sync,
    /// Sync and close everything, then exit.
    Close,
}

/// Counters the writer publishes (read by the logger thread for metrics and the manifest).
pub struct WriterStats {
    pub written_records: Vec<AtomicU64>,
    pub written_bytes: Vec<AtomicU64>,
    pub dropped_records: Vec<AtomicU64>,
    pub degraded: AtomicBool,
    /// What degrades the logger: [`FAULT_WRITE`] and/or [`FAULT_SYNC`] bits.
    pub faults: AtomicU8,
    pub last_fsync_ms: AtomicU64,
    pub write_errors: AtomicU64,
    pub fsync_errors: AtomicU64,
    pub events_dropped: AtomicU64,
}

/// Writes are failing (disk full, I/O error): records are dropped and counted.
pub const FAULT_WRITE: u8 = 1;
/// A sync failed: what was written since the last good one may not be on the card.
pub const FAULT_SYNC: u8 = 2;

impl WriterStats {
    pub fn new(files: usize) -> Self {
        let v = || (0..files).map(|_| AtomicU64::new(0)).collect();
        WriterStats {
            written_records: v(),
            written_bytes: v(),
            dropped_records: v(),
            degraded: AtomicBool::new(false),
            faults: AtomicU8::new(0),
            last_fsync_ms: AtomicU64::new(0),
            write_errors: AtomicU64::new(0),
            fsync_errors: AtomicU64::new(0),
            events_dropped: AtomicU64::new(0),
        }
    }
}

struct Open {
    handle: Option<Box<dyn LogFile>>,
    path: PathBuf,
    header: Option<&'static str>,
    len: u64,
    dirty: bool,
}

/// How long to wait between write attempts while degraded.
pub const PROBE_EVERY: Duration = Duration::from_secs(1);
const MAX_PENDING_EVENTS: usize = 1000;

/// The writer thread's state.
pub struct Writer {
    fs: Arc<dyn FileSystem>,
    dir: PathBuf,
    files: Vec<Open>,
    events: Open,
    pending_events: VecDeque<Vec<u8>>,
    stats: Arc<WriterStats>,
    degraded_since: Option<Instant>,
    /// [`FAULT_WRITE`] | [`FAULT_SYNC`] while degraded.
    faults: u8,
    dropped_while_degraded: u64,
    /// A sync that failed before the thread started (the session directory's).
    initial_fault: Option<String>,
    next_probe: Instant,
    free: Sender<Vec<u8>>,
    /// Woken when the channel drains below `resume_below` (the logger stopped draining at it).
    logger: Option<(Arc<crate::concurrency::Waker>, usize)>,
}

fn write_all(f: &mut dyn LogFile, mut buf: &[u8]) -> io::Result<usize> {
    let mut n = 0;
    while !buf.is_empty() {
        match f.write(buf) {
            Ok(0) => return Err(io::Error::new(io::ErrorKind::WriteZero, "wrote nothing")),
            Ok(k) => {
                n += k;
                buf = &buf[k..];
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

impl Writer {
    pub fn new(
        fs: Arc<dyn FileSystem>,
        dir: &Path,
        files: usize,
        stats: Arc<WriterStats>,
        free: Sender<Vec<u8>>,
    ) -> Self {
        let closed = |p: PathBuf| Open {
            handle: None,
            path: p,
            header: None,
            len: 0,
            dirty: false,
        };
        Writer {
            fs,
            dir: dir.to_owned(),
            files: (0..files).map(|_| closed(PathBuf::new())).collect(),
            events: closed(dir.join("events.log")),
            pending_events: VecDeque::new(),
            stats,
            degraded_since: None,
            faults: 0,
            dropped_while_degraded: 0,
            initial_fault: None,
            next_probe: Instant::now(),
            free,
            logger: None,
        }
    }

    /// Wakes `w` whenever the channel's backlog falls to `resume_below` messages.
    pub fn wake_logger_below(
        mut self,
        w: Arc<crate::concurrency::Waker>,
        resume_below: usize,
    ) -> Self {
        self.logger = Some((w, resume_below));
        self
    }

    /// Starts degraded by a sync that already failed (the session directory's, at creation).
    pub fn with_sync_fault(mut self, why: Option<String>) -> Self {
        self.initial_fault = why;
        self
    }

    /// Runs until [`Msg::Close`] or until the logger thread goes away.
    pub fn run(mut self, rx: Receiver<Msg>) {
        if let Some(why) = self.initial_fault.take() {
            self.sync_failed(&io::Error::other(why), &self.dir.clone());
        }
        while let Ok(m) = rx.recv() {
            if let Some((w, below)) = &self.logger
                && rx.len() + 1 == *below
            {
                w.wake();
            }
            match m {
                Msg::Open { file, path, header } => self.open(file, path, header),
                Msg::Data { file, buf, records } => {
                    self.data(file, &buf, records);
                    let mut buf = buf;
                    buf.clear();
                    let _ = self.free.try_send(buf);
                }
                Msg::Event(line) => self.event(line),
                Msg::Sync => self.sync(),
                Msg::Close => {
                    self.sync();
                    return;
                }
            }
        }
        self.sync();
    }

    /// Whether writes are failing (records are being dropped until a probe succeeds).
    fn writes_failing(&self) -> bool {
        self.faults & FAULT_WRITE != 0
    }

    fn open_handle(&mut self, which: Option<FileId>) -> io::Result<()> {
        let fs = self.fs.clone();
        let f = match which {
            Some(i) => &mut self.files[i],
            None => &mut self.events,
        };
        if f.handle.is_some() {
            return Ok(());
        }
        let (mut h, len) = fs.open_append(&f.path)?;
        f.len = len;
        let mut header_bytes = 0;
        if len == 0
            && let Some(hdr) = f.header
        {
            let mut line = Vec::with_capacity(hdr.len() + 1);
            line.extend_from_slice(hdr.as_bytes());
            line.push(b'\n');
            if let Err(e) = write_all(&mut *h, &line) {
                let _ = h.truncate(0);
                return Err(e);
            }
            f.len = line.len() as u64;
            f.dirty = true;
            header_bytes = line.len() as u64;
        }
        f.handle = Some(h);
        if let Some(i) = which {
            self.stats.written_bytes[i].fetch_add(header_bytes, Ordering::Relaxed);
        }
        // The new file's directory entry: without it the file may vanish at a power cut.
        if let Err(e) = fs.sync_dir(&self.dir) {
            let dir = self.dir.clone();
            self.sync_failed(&e, &dir);
        }
        Ok(())
    }

    fn open(&mut self, file: FileId, path: PathBuf, header: Option<&'static str>) {
        if let Some(f) = self.files.get_mut(file) {
            if let Some(mut h) = f.handle.take()
                && f.dirty
                && let Err(e) = h.sync()
            {
                let old = f.path.clone();
                self.sync_failed(&e, &old);
            }
            let f = &mut self.files[file];
            *f = Open {
                handle: None,
                path,
                header,
                len: 0,
                dirty: false,
            };
            if let Err(e) = self.open_handle(Some(file)) {
                self.failed(&e);
            }
        }
    }

    fn data(&mut self, file: FileId, buf: &[u8], records: u32) {
        let now = Instant::now();
        if self.writes_failing() && now < self.next_probe {
            self.drop_records(file, records);
            return;
        }
        let res = self.open_handle(Some(file)).and_then(|()| {
            let f = &mut self.files[file];
            let h = f.handle.as_mut().expect("opened above");
            match write_all(&mut **h, buf) {
                Ok(n) => {
                    f.len += n as u64;
                    f.dirty = true;
                    Ok(())
                }
                Err(e) => {
                    // Leave no partial line behind: cut back to the last complete one.
                    let _ = h.truncate(f.len);
                    Err(e)
                }
            }
        });
        match res {
            Ok(()) => {
                self.stats.written_records[file].fetch_add(records as u64, Ordering::Relaxed);
                self.stats.written_bytes[file].fetch_add(buf.len() as u64, Ordering::Relaxed);
                if self.writes_failing() {
                    self.cleared(FAULT_WRITE);
                }
            }
            Err(e) => {
                self.drop_records(file, records);
                self.failed(&e);
            }
        }
    }

    fn drop_records(&mut self, file: FileId, records: u32) {
        self.stats.dropped_records[file].fetch_add(records as u64, Ordering::Relaxed);
        self.dropped_while_degraded += records as u64;
    }

    /// A write failed: degraded until a probe succeeds.
    fn failed(&mut self, e: &io::Error) {
        self.stats.write_errors.fetch_add(1, Ordering::Relaxed);
        self.next_probe = Instant::now() + PROBE_EVERY;
        if self.writes_failing() {
            return;
        }
        let full = e.raw_os_error() == Some(nix::libc::ENOSPC);
        log::error!(
            "logger degraded: {e}{}; dropping (and counting) records until writing works again",
            if full { " (disk full)" } else { "" }
        );
        let line = super::events::line(
            "degraded",
            format_args!("cause=write reason=\"{e}\" disk_full={full}"),
        );
        self.raise(FAULT_WRITE, line);
    }

    /// A sync failed: degraded until a later sync of every file succeeds. Every failure is
    /// counted and written to `events.log` (at most one a sync, so about one a second).
    fn sync_failed(&mut self, e: &io::Error, what: &Path) {
        let n = self.stats.fsync_errors.fetch_add(1, Ordering::Relaxed) + 1;
        let name = what
            .strip_prefix(&self.dir)
            .ok()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(what);
        if n == 1 || n.is_power_of_two() {
            log::error!(
                "logger degraded: fsync of {} failed: {e} ({n} so far); what was written since the last good sync may not be on the card",
                name.display()
            );
        }
        let line = super::events::line(
            "degraded",
            format_args!(
                "cause=fsync file={} reason=\"{e}\" fsync_errors={n} note=\"data since the last good sync may be lost\"",
                name.display()
            ),
        );
        self.raise(FAULT_SYNC, line);
    }

    fn raise(&mut self, fault: u8, line: Vec<u8>) {
        if self.degraded_since.is_none() {
            self.degraded_since = Some(Instant::now());
            self.dropped_while_degraded = 0;
            self.stats.degraded.store(true, Ordering::Release);
        }
        self.faults |= fault;
        self.stats.faults.store(self.faults, Ordering::Release);
        self.event(line);
    }

    /// `fault` is over; the logger resumes when no fault is left.
    fn cleared(&mut self, fault: u8) {
        self.faults &= !fault;
        self.stats.faults.store(self.faults, Ordering::Release);
        if self.faults == 0 && self.degraded_since.is_some() {
            self.resumed();
        }
    }

    fn resumed(&mut self) {
        let since = self
            .degraded_since
            .take()
            .map(|t| t.elapsed())
            .unwrap_or_default();
        self.stats.degraded.store(false, Ordering::Release);
        log::warn!(
            "logger writing again after {:.1} s; {} records were dropped meanwhile",
            since.as_secs_f64(),
            self.dropped_while_degraded
        );
        let ev = super::events::line(
            "resumed",
            format_args!(
                "after_s={:.3} dropped_records={}",
                since.as_secs_f64(),
                self.dropped_while_degraded
            ),
        );
        self.queue_event(ev);
        self.flush_events();
    }

    fn queue_event(&mut self, line: Vec<u8>) {
        if self.pending_events.len() >= MAX_PENDING_EVENTS {
            self.pending_events.pop_front();
            self.stats.events_dropped.fetch_add(1, Ordering::Relaxed);
        }
        self.pending_events.push_back(line);
    }

    fn event(&mut self, line: Vec<u8>) {
        self.queue_event(line);
        if !self.writes_failing() {
            self.flush_events();
        }
    }

    fn flush_events(&mut self) {
        if self.open_handle(None).is_err() {
            return;
        }
        while let Some(line) = self.pending_events.front() {
            let f = &mut self.events;
            let h = f.handle.as_mut().expect("opened above");
            match write_all(&mut **h, line) {
                Ok(n) => {
                    f.len += n as u64;
                    f.dirty = true;
                    self.pending_events.pop_front();
                }
                Err(_) => {
                    let _ = h.truncate(f.len);
                    return;
                }
            }
        }
    }

    /// Syncs every file written since the last sync; a failure degrades the logger (see the
    /// module docs), a round where every sync succeeds clears that.
    fn sync(&mut self) {
        let mut failed: Option<(io::Error, PathBuf)> = None;
        for f in self
            .files
            .iter_mut()
            .chain(std::iter::once(&mut self.events))
        {
            if f.dirty
                && let Some(h) = &mut f.handle
            {
                match h.sync() {
                    Ok(()) => f.dirty = false,
                    Err(e) => {
                        // Linux reports the error once: do not count the file clean again
                        // until a sync succeeds, and say which file failed.
                        failed.get_or_insert((e, f.path.clone()));
                    }
                }
            }
        }
        match failed {
            None => {
                self.stats.last_fsync_ms.store(now_ms(), Ordering::Relaxed);
                if self.faults & FAULT_SYNC != 0 {
                    self.cleared(FAULT_SYNC);
                }
            }
            Some((e, path)) => {
                self.sync_failed(&e, &path);
                // The event about it must reach the card too, if it can.
                if let Some(h) = &mut self.events.handle
                    && self.events.dirty
                    && h.sync().is_ok()
                {
                    self.events.dirty = false;
                }
            }
        }
    }
}
