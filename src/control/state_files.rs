//! Writes each processor's state to `<run_dir>/state/NAME.state` (the seed's `StateInFile`).
//!
//! One thread, woken when any entry changes and once a second for counters, writes a file only
//! when its text changed: write a temporary file, then rename it over the old one, so a reader
//! (`cat`, a shell script, `harmony top`) never sees half a file. The state files live in
//! `/run` (tmpfs), so they are not synced ([`Durability::Volatile`]); [`write_atomic`] is also
//! what the card's files use, durably (signing state, `manifest.json`).

use std::collections::HashMap;
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::concurrency::Registry;
use crate::concurrency::wake::{Waker, park_until};

/// How often counters are refreshed in the files when nothing else changed.
pub const REFRESH: Duration = Duration::from_secs(1);

/// Whether a replaced file must survive a power cut: the one choice [`write_atomic`] makes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// Rename only. For files on tmpfs (`/run`: the state files, rewritten every second and
    /// gone at reboot anyway): a sync there costs time and buys nothing.
    Volatile,
    /// The file is synced before the rename and its directory after it, so a power cut leaves
    /// the old or the new contents, never neither. For what lives on the card (the signing
    /// state, `manifest.json`).
    Durable,
}

/// Replaces `path` with `text` atomically: writes `<path>.tmp` (created with `mode`), then
/// renames it over `path`, so a reader never sees half a file; with [`Durability::Durable`]
/// also syncs the file before the rename and the directory after it. The one mechanism for
/// every whole-file replacement in the firmware.
pub fn write_atomic(path: &Path, text: &[u8], mode: u32, durability: Durability) -> io::Result<()> {
    let sync = durability == Durability::Durable;
    let tmp = path.with_extension("tmp");
    {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)?;
        f.write_all(text)?;
        if sync {
            f.sync_all()?;
        }
    }
    fs::rename(&tmp, path)?;
    if sync {
        sync_parent(path)?;
    }
    Ok(())
}

/// Syncs the directory holding `path`, so a new or renamed entry in it survives a power cut.
pub fn sync_parent(path: &Path) -> io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    sync_dir(dir)
}

/// Syncs a directory's entries (`fsync` on the directory).
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    fs::File::open(dir)?.sync_all()
}

/// The state file of processor `name`.
pub fn state_path(run_dir: &Path, name: &str) -> PathBuf {
    run_dir.join("state").join(format!("{name}.state"))
}

struct Writer {
    run_dir: PathBuf,
    last: HashMap<String, String>,
    failed_once: bool,
}

impl Writer {
    fn write_all(&mut self, registry: &Registry) {
        for snap in registry.snapshot() {
            let text = snap.to_state_file();
            if self.last.get(&snap.name) == Some(&text) {
                continue;
            }
            let path = state_path(&self.run_dir, &snap.name);
            match write_atomic(&path, text.as_bytes(), 0o666, Durability::Volatile) {
                Ok(()) => {
                    self.last.insert(snap.name, text);
                }
                Err(e) if !self.failed_once => {
                    self.failed_once = true;
                    log::error!("cannot write state file {}: {e}", path.display());
                }
                Err(_) => {}
            }
        }
    }
}

/// The running state-file writer.
pub struct StateFiles {
    stop: Arc<AtomicBool>,
    waker: Arc<Waker>,
    thread: Option<JoinHandle<()>>,
    run_dir: PathBuf,
    registry: Arc<Registry>,
}

impl StateFiles {
    pub fn start(registry: Arc<Registry>, run_dir: &Path) -> io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let waker = Waker::new();
        registry.set_watcher(waker.clone());
        let (r, s, w) = (registry.clone(), stop.clone(), waker.clone());
        let mut writer = Writer {
            run_dir: run_dir.to_owned(),
            last: HashMap::new(),
            failed_once: false,
        };
        let thread = std::thread::Builder::new()
            .name("state-files".into())
            .spawn(move || {
                w.bind_current();
                let mut next = Instant::now();
                while !s.load(Ordering::Acquire) {
                    if r.take_changed() || Instant::now() >= next {
                        writer.write_all(&r);
                        next = Instant::now() + REFRESH;
                    }
                    park_until(Some(next));
                }
            })?;
        Ok(StateFiles {
            stop,
            waker,
            thread: Some(thread),
            run_dir: run_dir.to_owned(),
            registry,
        })
    }

    /// Stops the thread and writes every file one last time (the final states).
    pub fn finish(mut self) {
        self.stop.store(true, Ordering::Release);
        self.waker.wake();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let mut w = Writer {
            run_dir: self.run_dir.clone(),
            last: HashMap::new(),
            failed_once: false,
        };
        w.write_all(&self.registry);
    }
}

/// Reads a state file back into `key -> value` pairs.
pub fn read_state_file(path: &Path) -> io::Result<HashMap<String, String>> {
    let text = fs::read_to_string(path)?;
    Ok(text
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect())
}
