//! The file backend the writer thread talks to, behind a trait so tests can inject an SD card
//! that stalls or fills up. [`RealFs`] is the one that flies.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// An open log file: appends, syncs, and can be cut back after a partial write.
pub trait LogFile: Send {
    /// Writes some of `buf` (like `write(2)`).
    fn write(&mut self, buf: &[u8]) -> io::Result<usize>;
    /// Makes written data durable (`fdatasync(2)`).
    fn sync(&mut self) -> io::Result<()>;
    /// Cuts the file back to `len` bytes (after a write that failed half-way).
    fn truncate(&mut self, len: u64) -> io::Result<()>;
}

/// Where log files live.
pub trait FileSystem: Send + Sync + 'static {
    /// Opens `path` for appending, creating it; returns the handle and its current length.
    fn open_append(&self, path: &Path) -> io::Result<(Box<dyn LogFile>, u64)>;
    /// Makes a directory's entries durable (new files survive a power cut).
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    /// Bytes available to unprivileged users on the file system holding `dir`.
    fn free_bytes(&self, dir: &Path) -> io::Result<u64>;
    /// The length of the file at `path` (the manifest lists segment sizes).
    fn file_len(&self, path: &Path) -> io::Result<u64> {
        std::fs::metadata(path).map(|m| m.len())
    }
    /// Replaces `path` with `data` atomically and durably (temp file, fsync, rename, fsync of
    /// the directory: `control::state_files::write_atomic` with `Durability::Durable`).
    fn write_atomic(&self, path: &Path, data: &[u8]) -> io::Result<()>;
}

struct RealFile(File);

impl LogFile for RealFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf)
    }
    fn sync(&mut self) -> io::Result<()> {
        self.0.sync_data()
    }
    fn truncate(&mut self, len: u64) -> io::Result<()> {
        self.0.set_len(len)
    }
}

/// The real file system.
#[derive(Clone, Copy, Debug, Default)]
pub struct RealFs;

impl FileSystem for RealFs {
    fn open_append(&self, path: &Path) -> io::Result<(Box<dyn LogFile>, u64)> {
        let f = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o644)
            .open(path)?;
        let len = f.metadata()?.len();
        Ok((Box::new(RealFile(f)), len))
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        crate::control::state_files::sync_dir(dir)
    }

    fn free_bytes(&self, dir: &Path) -> io::Result<u64> {
        let s = nix::sys::statvfs::statvfs(dir).map_err(io::Error::from)?;
        Ok(s.blocks_available() as u64 * s.fragment_size() as u64)
    }

    fn write_atomic(&self, path: &Path, data: &[u8]) -> io::Result<()> {
        use crate::control::state_files::{Durability, write_atomic};
        write_atomic(path, data, 0o644, Durability::Durable)
    }
}
