//! The signing state on disk, saved off the uplink's thread (issue #11: only the writer
//! touches the SD card; a card stall must not hold the radio loop or its watchdog pings).
//!
//! The uplink [`Persister::publish`]es its signing timestamp and the verifier's per-stream
//! table into a [`StateSlot`]: a seqlock of atomics, newest wins, the uplink never waits. A
//! housekeeping caller runs [`Persister::save_pending`], which writes what is new to a
//! temporary file, syncs it, renames it over the state file and syncs the directory. In the
//! firmware that caller is the `signing-state` job of the housekeeping pool ([`add_job`]):
//! every second, and once more when the pool stops, after the uplink (which publishes its final
//! state in `after`). A tree without a housekeeping pool (tests, tools) uses a
//! [`SaverThread`] instead.
//!
//! File format (text, at most [`MAX_STREAMS`] `stream` lines):
//! ```text
//! ts 123456789012
//! stream LINK SYSTEM COMPONENT TIMESTAMP
//! ```
//! A file holding one bare number (the format before) is read as the timestamp.

use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering, fence};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::signing::MAX_STREAMS;
use crate::control::state_files::{Durability, write_atomic};

/// The most of a state file that is read (a `ts` line and MAX_STREAMS `stream` lines fit).
const MAX_FILE_BYTES: u64 = 64 * 1024;

/// One verifier stream: `((link id, system, component), last timestamp)`.
pub type StreamEntry = ((u8, u32, u8), u64);

/// Why the signing state could not be read or saved.
#[derive(Debug, thiserror::Error)]
pub enum SigningError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path}: line {line}: not a signing state line")]
    Format { path: PathBuf, line: usize },
}

/// What was loaded at start.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Loaded {
    pub ticks: Option<u64>,
    pub streams: Vec<StreamEntry>,
}

fn pack(k: (u8, u32, u8)) -> u64 {
    (k.0 as u64) << 40 | (k.2 as u64) << 32 | k.1 as u64
}

fn unpack(v: u64) -> (u8, u32, u8) {
    ((v >> 40) as u8, v as u32, (v >> 32) as u8)
}

/// The newest state to save: written by the uplink only, read by the saver.
pub struct StateSlot {
    seq: AtomicU64,
    ticks: AtomicU64,
    len: AtomicU64,
    keys: [AtomicU64; MAX_STREAMS],
    stamps: [AtomicU64; MAX_STREAMS],
}

impl Default for StateSlot {
    fn default() -> Self {
        StateSlot {
            seq: AtomicU64::new(0),
            ticks: AtomicU64::new(0),
            len: AtomicU64::new(0),
            keys: std::array::from_fn(|_| AtomicU64::new(0)),
            stamps: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

impl StateSlot {
    /// Stores a new state (one writer: the uplink). Never blocks, never allocates.
    fn publish(&self, ticks: u64, streams: &[StreamEntry]) {
        let n = streams.len().min(MAX_STREAMS);
        self.seq.fetch_add(1, Ordering::Relaxed);
        fence(Ordering::Release);
        self.ticks.store(ticks, Ordering::Relaxed);
        for (i, (k, t)) in streams[..n].iter().enumerate() {
            self.keys[i].store(pack(*k), Ordering::Relaxed);
            self.stamps[i].store(*t, Ordering::Relaxed);
        }
        self.len.store(n as u64, Ordering::Relaxed);
        self.seq.fetch_add(1, Ordering::Release);
    }

    /// A consistent copy and its generation (even; 0 = nothing published yet).
    fn read(&self, streams: &mut Vec<StreamEntry>) -> (u64, u64) {
        loop {
            let s1 = self.seq.load(Ordering::Acquire);
            if s1 % 2 == 1 {
                std::thread::yield_now();
                continue;
            }
            let ticks = self.ticks.load(Ordering::Relaxed);
            let n = (self.len.load(Ordering::Relaxed) as usize).min(MAX_STREAMS);
            streams.clear();
            for i in 0..n {
                streams.push((
                    unpack(self.keys[i].load(Ordering::Relaxed)),
                    self.stamps[i].load(Ordering::Relaxed),
                ));
            }
            fence(Ordering::Acquire);
            if self.seq.load(Ordering::Relaxed) == s1 {
                return (s1, ticks);
            }
        }
    }
}

/// Loads and saves the signing state file (see the module docs).
pub struct Persister {
    path: PathBuf,
    slot: StateSlot,
    /// The generation last written; held while writing, so two savers never interleave.
    saved: Mutex<u64>,
    errors: AtomicU64,
}

impl Persister {
    pub fn new(path: PathBuf) -> Self {
        Persister {
            path,
            slot: StateSlot::default(),
            saved: Mutex::new(0),
            errors: AtomicU64::new(0),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Saves that failed so far.
    pub fn errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }

    fn err(&self, source: io::Error) -> SigningError {
        SigningError::Io {
            path: self.path.clone(),
            source,
        }
    }

    /// Checks at start that the state can be written where it is configured (its directory
    /// exists and takes a new file), by creating and removing the temporary file.
    pub fn check_writable(&self) -> Result<(), SigningError> {
        if fs::symlink_metadata(&self.path).is_ok_and(|m| !m.is_file()) {
            return Err(self.err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "is there but not a regular file",
            )));
        }
        let tmp = self.tmp_path();
        fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| self.err(e))?;
        fs::remove_file(&tmp).map_err(|e| self.err(e))
    }

    /// The saved state; empty when there is none yet.
    pub fn load(&self) -> Result<Loaded, SigningError> {
        // A file on the card is outside input: read at most what MAX_STREAMS lines can take.
        let mut text = String::new();
        match fs::File::open(&self.path) {
            Ok(f) => {
                f.take(MAX_FILE_BYTES)
                    .read_to_string(&mut text)
                    .map_err(|e| self.err(e))?;
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Loaded::default()),
            Err(e) => return Err(self.err(e)),
        }
        let mut out = Loaded::default();
        for (i, line) in text.lines().enumerate() {
            let bad = || SigningError::Format {
                path: self.path.clone(),
                line: i + 1,
            };
            let words: Vec<&str> = line.split_whitespace().collect();
            match words.as_slice() {
                [] => {}
                [n] => out.ticks = Some(n.parse().map_err(|_| bad())?),
                ["ts", n] => out.ticks = Some(n.parse().map_err(|_| bad())?),
                ["stream", l, s, c, t] if out.streams.len() < MAX_STREAMS => {
                    let k = (
                        l.parse().map_err(|_| bad())?,
                        s.parse().map_err(|_| bad())?,
                        c.parse().map_err(|_| bad())?,
                    );
                    out.streams.push((k, t.parse().map_err(|_| bad())?));
                }
                ["stream", ..] => {}
                _ => return Err(bad()),
            }
        }
        Ok(out)
    }

    /// Hands the newest state to the saver (the uplink's side: no I/O, no waiting).
    pub fn publish(&self, ticks: u64, streams: &[StreamEntry]) {
        self.slot.publish(ticks, streams);
    }

    /// Writes the newest published state if it was not written yet: temporary file, fsync,
    /// rename, fsync of the directory (so a power cut leaves the old or the new state).
    pub fn save_pending(&self) -> Result<(), SigningError> {
        let mut saved = self.saved.lock().unwrap_or_else(|p| p.into_inner());
        let mut streams = Vec::with_capacity(MAX_STREAMS);
        let (generation, ticks) = self.slot.read(&mut streams);
        if generation == 0 || generation == *saved {
            return Ok(());
        }
        let r = self.write(ticks, &streams);
        match &r {
            Ok(()) => *saved = generation,
            Err(_) => {
                self.errors.fetch_add(1, Ordering::Relaxed);
            }
        }
        r
    }

    /// The temporary file [`write_atomic`] writes before its rename.
    fn tmp_path(&self) -> PathBuf {
        self.path.with_extension("tmp")
    }

    fn write(&self, ticks: u64, streams: &[StreamEntry]) -> Result<(), SigningError> {
        let mut text = format!("ts {ticks}\n");
        for ((l, s, c), t) in streams {
            text.push_str(&format!("stream {l} {s} {c} {t}\n"));
        }
        write_atomic(&self.path, text.as_bytes(), 0o600, Durability::Durable)
            .map_err(|e| self.err(e))
    }
}

/// Adds the `signing-state` job to a housekeeping pool: [`Persister::save_pending`] every
/// `every` and once more when the pool stops. Failures are counted in the job's metrics and
/// logged there (never on the uplink's thread).
pub fn add_job(
    persister: Arc<Persister>,
    housekeeping: &crate::concurrency::Housekeeping,
    every: Duration,
) -> crate::concurrency::JobHandle {
    housekeeping.add("signing-state", Some(every), true, move || {
        persister.save_pending().map_err(Into::into)
    })
}

/// A thread that runs [`Persister::save_pending`] every `every`, and once more when dropped,
/// for a tree without a housekeeping pool (tests, tools; see the module docs).
pub struct SaverThread {
    persister: Arc<Persister>,
    stop: Arc<AtomicBool>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl SaverThread {
    pub fn spawn(persister: Arc<Persister>, every: Duration) -> io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let (p, s) = (persister.clone(), stop.clone());
        let handle = std::thread::Builder::new()
            .name("signing-saver".into())
            .spawn(move || {
                while !s.load(Ordering::Acquire) {
                    save_logged(&p);
                    std::thread::park_timeout(every);
                }
            })?;
        Ok(SaverThread {
            persister,
            stop,
            handle: Some(handle),
        })
    }
}

/// One save; the first failure (and every 100th) is logged, all are counted.
pub fn save_logged(p: &Persister) {
    if let Err(e) = p.save_pending()
        && p.errors() % 100 == 1
    {
        log::error!("uplink: cannot save the signing state: {e}");
    }
}

impl Drop for SaverThread {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(h) = self.handle.take() {
            h.thread().unpark();
            let _ = h.join();
        }
        // The final save: the uplink published its last state when it stopped.
        save_logged(&self.persister);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Issue #11: the state (timestamp and per-stream table) round-trips; only new states are
    // written; the old one-number format still loads.
    #[test]
    fn state_round_trips_and_only_new_states_are_written() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state");
        let p = Persister::new(path.clone());
        p.check_writable().unwrap();
        assert_eq!(p.load().unwrap(), Loaded::default());
        p.save_pending().unwrap();
        assert!(!path.exists(), "nothing published, nothing written");
        let streams = [((1, 255, 190), 77), ((0, 300_000, 1), 78)];
        p.publish(1234, &streams);
        p.save_pending().unwrap();
        let l = Persister::new(path.clone()).load().unwrap();
        assert_eq!(l.ticks, Some(1234));
        assert_eq!(l.streams, streams);
        std::fs::remove_file(&path).unwrap();
        p.save_pending().unwrap();
        assert!(!path.exists(), "the same generation is not written twice");
        std::fs::write(&path, "555\n").unwrap();
        assert_eq!(p.load().unwrap().ticks, Some(555));
        std::fs::write(&path, "garbage here\n").unwrap();
        assert!(matches!(
            p.load(),
            Err(SigningError::Format { line: 1, .. })
        ));
    }

    #[test]
    fn check_writable_names_the_missing_directory() {
        let dir = tempfile::tempdir().unwrap();
        let p = Persister::new(dir.path().join("nope/state"));
        let e = p.check_writable().unwrap_err().to_string();
        assert!(e.contains("nope/state"), "{e}");
    }
}
