//! One session directory per run under the board's data directory.
//!
//! Named from the UTC start time (`20261123T040506Z`) when the wall clock is plausible; the
//! Pi has no real-time clock, so before NTP or GPS has set it (a clock before 2020) the
//! session is `sessNNN`, numbered after the existing ones, and the logger records when GPS time
//! becomes known and the offset, so times can be corrected afterwards.
//! A `latest` symlink in the data directory points at the running session, for `tail -f`.
//!
//! The new directory and `latest` are synced (an `fsync` of the data directory, and of its
//! parent when the data directory itself is new), so after a power cut the session's files are
//! not orphaned by a lost directory entry. A failed sync does not stop the recording: it is kept
//! in [`Session::sync_error`] and the logger starts degraded and says so.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::clock::{Stamp, wall_clock_plausible};
use crate::control::state_files::sync_dir;
use crate::timefmt::compact_utc;

/// Why a session directory could not be made.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("cannot create session directory {path}: {source} (is the data directory writable?)")]
    Create { path: PathBuf, source: io::Error },
    #[error("cannot list data directory {path}: {source}")]
    List { path: PathBuf, source: io::Error },
}

/// The running session.
#[derive(Clone, Debug)]
pub struct Session {
    pub data_dir: PathBuf,
    pub dir: PathBuf,
    pub name: String,
    pub started: Stamp,
    /// Whether the wall clock looked right (after 2020) at the start.
    pub clock_valid: bool,
    /// Why the new directory entries could not be synced, if they could not (the logger
    /// reports it as a write fault: degraded, counted, in `events.log`).
    pub sync_error: Option<String>,
}

fn sess_number(name: &str) -> Option<u32> {
    name.strip_prefix("sess")?.parse().ok()
}

/// Whether a directory name is a session's (`20261123T040506Z`, `sess007`, with an optional
/// `-N` suffix for a second run in the same second).
pub fn is_session_name(name: &str) -> bool {
    let name = match name.rsplit_once('-') {
        Some((base, n)) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => base,
        _ => name,
    };
    sess_number(name).is_some()
        || (name.len() == 16
            && name.ends_with('Z')
            && name.as_bytes()[8] == b'T'
            && name[..8].bytes().all(|b| b.is_ascii_digit()))
}

/// Session directories under `data_dir`, oldest first (by modification time, then name).
pub fn list_sessions(data_dir: &Path) -> Result<Vec<PathBuf>, SessionError> {
    let rd = match fs::read_dir(data_dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(SessionError::List {
                path: data_dir.to_owned(),
                source,
            });
        }
    };
    let mut v: Vec<(std::time::SystemTime, PathBuf)> = rd
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter(|e| is_session_name(&e.file_name().to_string_lossy()))
        .map(|e| {
            let t = e
                .metadata()
                .and_then(|m| m.modified())
                .unwrap_or(std::time::UNIX_EPOCH);
            (t, e.path())
        })
        .collect();
    v.sort();
    Ok(v.into_iter().map(|(_, p)| p).collect())
}

impl Session {
    /// Creates the session directory for a run starting now.
    pub fn create(data_dir: &Path) -> Result<Self, SessionError> {
        Self::create_at(data_dir, Stamp::now())
    }

    /// Creates the session directory for a run started at `started` (tests set the clock).
    pub fn create_at(data_dir: &Path, started: Stamp) -> Result<Self, SessionError> {
        let clock_valid = wall_clock_plausible(started.wall_ns);
        let new_data_dir = !data_dir.exists();
        fs::create_dir_all(data_dir).map_err(|source| SessionError::Create {
            path: data_dir.to_owned(),
            source,
        })?;
        let mut name = if clock_valid {
            compact_utc(started.wall_ns)
        } else {
            let next = list_sessions(data_dir)?
                .iter()
                .filter_map(|p| sess_number(&p.file_name()?.to_string_lossy()))
                .max()
                .map_or(1, |n| n + 1);
            format!("sess{next:03}")
        };
        // Two runs within one second (or a clock set back): add a suffix.
        let mut dir = data_dir.join(&name);
        let mut n = 1;
        while dir.exists() {
            n += 1;
            name = format!("{}-{n}", name.split('-').next().unwrap_or(&name));
            dir = data_dir.join(&name);
        }
        fs::create_dir(&dir).map_err(|source| SessionError::Create {
            path: dir.clone(),
            source,
        })?;
        let latest = data_dir.join("latest");
        let tmp = data_dir.join(".latest.tmp");
        let _ = fs::remove_file(&tmp);
        if std::os::unix::fs::symlink(&name, &tmp).is_ok() {
            let _ = fs::rename(&tmp, &latest);
        }
        // Make the new entries durable: the session directory and `latest` in the data
        // directory, and the data directory in its parent when it was made just now.
        let mut sync_error = None;
        let parent = data_dir.parent().filter(|p| !p.as_os_str().is_empty());
        let dirs = [new_data_dir.then_some(parent).flatten(), Some(data_dir)];
        for d in dirs.into_iter().flatten() {
            if let Err(e) = sync_dir(d) {
                log::error!("cannot sync directory {}: {e}", d.display());
                sync_error.get_or_insert_with(|| format!("cannot sync {}: {e}", d.display()));
            }
        }
        Ok(Session {
            data_dir: data_dir.to_owned(),
            dir,
            name,
            started,
            clock_valid,
            sync_error,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_names() {
        assert!(is_session_name("20261123T040506Z"));
        assert!(is_session_name("sess007"));
        assert!(!is_session_name("latest"));
        assert!(!is_session_name("run"));
        let d = tempfile::tempdir().unwrap();
        let s = Session::create(d.path()).unwrap();
        assert!(s.clock_valid);
        assert!(is_session_name(&s.name), "{}", s.name);
        let s2 = Session::create(d.path()).unwrap();
        assert_ne!(s.dir, s2.dir);
        assert_eq!(
            fs::read_link(d.path().join("latest")).unwrap(),
            PathBuf::from(&s2.name)
        );
        assert_eq!(list_sessions(d.path()).unwrap().len(), 2);
    }
}
