//! The application log (the seed's `LogManager` + `LogQueueStreamProcessor`).
//!
//! Every thread logs through the `log` facade. The facade's logger formats the message into a
//! fixed-size record on the calling thread and offers it to a bounded lock-free queue; a full
//! queue drops the message and counts it, so a logging call never blocks a sensor thread. One
//! sink thread drains the queue and hands each message to simplelog, which writes it to the log
//! file and to stderr. The sink reports how many messages were dropped.
//!
//! Start-up comes before the sink: the board is read and the topology built (the uplink warns
//! about a missing signing key, an unreadable signing state, or its own failure to start)
//! before the session directory that holds the log file is known. [`capture_early`] installs
//! the queue logger at once, so those messages wait in the same bounded queue (dropped and
//! counted beyond [`QUEUE_CAPACITY`], like any other); [`LogSink::install`] then takes the
//! queue over and writes them first, filtered by the level finally chosen. If the process gives
//! up before a sink exists, dropping the [`EarlyLog`] guard prints them to stderr, so a
//! warning is never lost unseen.

use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;

use crossbeam_queue::ArrayQueue;
use heapless::String as HString;
use log::{Level, LevelFilter, Log, Metadata, Record};
use simplelog::{CombinedLogger, ConfigBuilder, SharedLogger, WriteLogger};

use crate::clock::wall_ns;
use crate::concurrency::Doorbell;
use crate::concurrency::wake::{Waker, park_until};

/// Messages the queue holds before it drops.
pub const QUEUE_CAPACITY: usize = 1024;
const TEXT_MAX: usize = 400;

struct Msg {
    level: Level,
    wall_ns: i64,
    thread: HString<16>,
    target: HString<48>,
    text: HString<TEXT_MAX>,
}

/// Writes what fits, marks the cut with `…`.
struct Truncating<'a, const N: usize>(&'a mut HString<N>, bool);

impl<const N: usize> std::fmt::Write for Truncating<'_, N> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        if self.1 {
            return Ok(());
        }
        if self.0.push_str(s).is_ok() {
            return Ok(());
        }
        let room = N.saturating_sub(self.0.len() + '…'.len_utf8());
        let mut cut = room.min(s.len());
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        let _ = self.0.push_str(&s[..cut]);
        let _ = self.0.push('…');
        self.1 = true;
        Ok(())
    }
}

fn fill<const N: usize>(dst: &mut HString<N>, args: std::fmt::Arguments<'_>) {
    let _ = Truncating(dst, false).write_fmt(args);
}

struct Shared {
    queue: ArrayQueue<Msg>,
    bell: Doorbell,
    dropped: AtomicU64,
    closed: AtomicBool,
    /// A `LevelFilter` as usize: raised or lowered when the sink takes over the early queue.
    level: AtomicUsize,
    /// A sink thread has taken the queue (only one ever does).
    sink_taken: AtomicBool,
}

impl Shared {
    fn new(level: LevelFilter) -> Self {
        Shared {
            queue: ArrayQueue::new(QUEUE_CAPACITY),
            bell: Doorbell::default(),
            dropped: AtomicU64::new(0),
            closed: AtomicBool::new(false),
            level: AtomicUsize::new(level as usize),
            sink_taken: AtomicBool::new(false),
        }
    }

    fn level(&self) -> LevelFilter {
        match self.level.load(Ordering::Relaxed) {
            0 => LevelFilter::Off,
            1 => LevelFilter::Error,
            2 => LevelFilter::Warn,
            3 => LevelFilter::Info,
            4 => LevelFilter::Debug,
            _ => LevelFilter::Trace,
        }
    }
}

/// The `log::Log` implementation: never blocks.
struct QueueLogger {
    s: Arc<Shared>,
}

impl Log for QueueLogger {
    fn enabled(&self, m: &Metadata<'_>) -> bool {
        m.level() <= self.s.level()
    }

    fn log(&self, r: &Record<'_>) {
        if !self.enabled(r.metadata()) {
            return;
        }
        let mut m = Msg {
            level: r.level(),
            wall_ns: wall_ns(),
            thread: HString::new(),
            target: HString::new(),
            text: HString::new(),
        };
        if let Some(n) = std::thread::current().name() {
            fill(&mut m.thread, format_args!("{n}"));
        }
        fill(&mut m.target, format_args!("{}", r.target()));
        fill(&mut m.text, *r.args());
        if self.s.closed.load(Ordering::Acquire) {
            // After shutdown: straight to stderr, nothing queues up unseen.
            eprintln!("{}", line(&m));
            return;
        }
        if self.s.queue.push(m).is_ok() {
            self.s.bell.ring();
        } else {
            self.s.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn flush(&self) {}
}

fn line(m: &Msg) -> String {
    format!(
        "{} [{}] {}: {}",
        crate::timefmt::rfc3339_ns(m.wall_ns),
        m.thread,
        m.target,
        m.text
    )
}

/// Why the application log could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("cannot open log file {path}: {source} (check that the data directory is writable)")]
    Open { path: PathBuf, source: io::Error },
    #[error("a logger is already installed in this process")]
    AlreadyInstalled,
    #[error("cannot start the log sink thread: {0}")]
    Spawn(io::Error),
}

static SHARED: OnceLock<Arc<Shared>> = OnceLock::new();

/// The process's queue logger, installed on first call (at `level`).
fn shared(level: LevelFilter) -> Result<&'static Arc<Shared>, LogError> {
    let mut fresh = false;
    let s = SHARED.get_or_init(|| {
        fresh = true;
        Arc::new(Shared::new(level))
    });
    if fresh {
        log::set_boxed_logger(Box::new(QueueLogger { s: s.clone() }))
            .map_err(|_| LogError::AlreadyInstalled)?;
        log::set_max_level(level);
    }
    Ok(s)
}

/// Keeps messages logged before the sink exists; see the module docs.
#[must_use = "dropping the guard ends the early capture (printing what it kept to stderr)"]
pub struct EarlyLog {
    shared: Option<&'static Arc<Shared>>,
}

/// Starts keeping log messages (up to `level`) until [`LogSink::install`] writes them. Call
/// first thing in a command that will install a sink.
pub fn capture_early(level: LevelFilter) -> EarlyLog {
    EarlyLog {
        shared: shared(level).ok(),
    }
}

impl Drop for EarlyLog {
    /// No sink took over (start-up failed): what was kept goes to stderr, and so does anything
    /// logged from now on.
    fn drop(&mut self) {
        let Some(s) = self.shared else { return };
        if s.sink_taken.load(Ordering::Acquire) {
            return;
        }
        s.closed.store(true, Ordering::Release);
        let level = s.level();
        while let Some(m) = s.queue.pop() {
            if m.level <= level {
                eprintln!("{}", line(&m));
            }
        }
    }
}

/// The running sink thread; [`LogSink::shutdown`] drains and stops it.
pub struct LogSink {
    shared: Arc<Shared>,
    stop: Arc<AtomicBool>,
    waker: Arc<Waker>,
    thread: Option<JoinHandle<()>>,
    file: Arc<Mutex<Option<PathBuf>>>,
}

fn simple_config() -> simplelog::Config {
    ConfigBuilder::new()
        .set_time_level(LevelFilter::Off)
        .set_thread_level(LevelFilter::Off)
        .set_target_level(LevelFilter::Off)
        .set_location_level(LevelFilter::Off)
        .build()
}

fn open_file(path: &Path) -> Result<File, LogError> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|source| LogError::Open {
            path: path.to_owned(),
            source,
        })
}

impl LogSink {
    /// Installs the queue logger as the process's logger (or takes over the one
    /// [`capture_early`] installed, with what it kept) and starts the sink thread writing to
    /// `file` (if any) and, when `stderr` is set, to standard error.
    pub fn install(
        level: LevelFilter,
        file: Option<&Path>,
        stderr: bool,
    ) -> Result<Self, LogError> {
        let mut outputs: Vec<Box<dyn SharedLogger>> = Vec::new();
        if let Some(p) = file {
            outputs.push(WriteLogger::new(level, simple_config(), open_file(p)?));
        }
        if stderr {
            outputs.push(WriteLogger::new(level, simple_config(), io::stderr()));
        }
        let shared = shared(level)?.clone();
        if shared.sink_taken.swap(true, Ordering::AcqRel) {
            return Err(LogError::AlreadyInstalled);
        }
        shared.level.store(level as usize, Ordering::Relaxed);
        log::set_max_level(level);
        crate::concurrency::shm::set_log_forwarder(forward_child);
        let out = Arc::new(Mutex::new(CombinedLogger::new(outputs)));
        let stop = Arc::new(AtomicBool::new(false));
        let waker = Waker::new();
        shared.bell.set_waker(&waker);
        let (s2, stop2, w2, out2) = (shared.clone(), stop.clone(), waker.clone(), out.clone());
        let thread = std::thread::Builder::new()
            .name("log-sink".into())
            .spawn(move || {
                w2.bind_current();
                sink_loop(&s2, &stop2, &out2)
            })
            .map_err(LogError::Spawn)?;
        Ok(LogSink {
            shared,
            stop,
            waker,
            thread: Some(thread),
            file: Arc::new(Mutex::new(file.map(Path::to_owned))),
        })
    }

    /// Messages dropped because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }

    /// The current log file.
    pub fn file(&self) -> Option<PathBuf> {
        self.file.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Drains the queue, stops the sink thread; later messages go straight to stderr.
    pub fn shutdown(mut self) {
        self.stop_thread();
    }

    fn stop_thread(&mut self) {
        self.stop.store(true, Ordering::Release);
        self.waker.wake();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.shared.closed.store(true, Ordering::Release);
    }
}

impl Drop for LogSink {
    fn drop(&mut self) {
        self.stop_thread();
    }
}

/// A child process's log record (forwarded by its region's relay), with the child's thread
/// name and time, into the same queue.
fn forward_child(r: &crate::concurrency::shm::LogRec) {
    let Some(s) = SHARED.get() else {
        return;
    };
    if r.level() > s.level() {
        return;
    }
    let mut m = Msg {
        level: r.level(),
        wall_ns: r.wall_ns,
        thread: HString::new(),
        target: HString::new(),
        text: HString::new(),
    };
    fill(&mut m.thread, format_args!("{}", r.thread()));
    fill(&mut m.target, format_args!("{}", r.target()));
    fill(&mut m.text, format_args!("{}", r.text()));
    if s.closed.load(Ordering::Acquire) {
        eprintln!("{}", line(&m));
        return;
    }
    if s.queue.push(m).is_ok() {
        s.bell.ring();
    } else {
        s.dropped.fetch_add(1, Ordering::Relaxed);
    }
}

/// Messages dropped so far by the process's logger (0 before [`LogSink::install`]).
pub fn dropped_messages() -> u64 {
    SHARED
        .get()
        .map(|s| s.dropped.load(Ordering::Relaxed))
        .unwrap_or(0)
}

fn write_out(out: &Mutex<Box<CombinedLogger>>, m: &Msg) {
    let out = out.lock().unwrap_or_else(|e| e.into_inner());
    let text = line(m);
    out.log(
        &Record::builder()
            .level(m.level)
            .target(&m.target)
            .args(format_args!("{text}"))
            .build(),
    );
}

fn sink_loop(s: &Shared, stop: &AtomicBool, out: &Mutex<Box<CombinedLogger>>) {
    let mut reported = 0u64;
    loop {
        // The level test matters for messages kept from before the sink (captured wider).
        let level = s.level();
        while let Some(m) = s.queue.pop() {
            if m.level <= level {
                write_out(out, &m);
            }
        }
        let dropped = s.dropped.load(Ordering::Relaxed);
        if dropped != reported {
            let mut m = Msg {
                level: Level::Warn,
                wall_ns: wall_ns(),
                thread: HString::new(),
                target: HString::new(),
                text: HString::new(),
            };
            fill(&mut m.thread, format_args!("log-sink"));
            fill(&mut m.target, format_args!("harmony::applog"));
            fill(
                &mut m.text,
                format_args!(
                    "log queue full: {} messages dropped ({dropped} in total)",
                    dropped - reported
                ),
            );
            write_out(out, &m);
            reported = dropped;
        }
        if stop.load(Ordering::Acquire) {
            if s.queue.is_empty() {
                out.lock().unwrap_or_else(|e| e.into_inner()).flush();
                return;
            }
            continue;
        }
        if s.bell.sleep_ready(|| s.queue.is_empty()) && !stop.load(Ordering::Acquire) {
            park_until(None);
        }
    }
}
