//! The free-space floor: delete the oldest finished sessions, never the running one, until the
//! data file system has the configured space free again.

use std::path::Path;

use super::fs::FileSystem;
use super::session::list_sessions;

fn dir_bytes(p: &Path) -> u64 {
    std::fs::read_dir(p)
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .sum()
}

/// Deletes oldest sessions under `data_dir` (except `current`) until `floor` bytes are free.
/// Returns the deleted sessions' names and sizes.
pub fn free_up(
    fs: &dyn FileSystem,
    data_dir: &Path,
    current: &Path,
    floor: u64,
) -> Vec<(String, u64)> {
    let mut deleted = Vec::new();
    let Ok(sessions) = list_sessions(data_dir) else {
        return deleted;
    };
    for s in sessions {
        if fs.free_bytes(data_dir).is_ok_and(|f| f >= floor) {
            break;
        }
        if s == current || current.starts_with(&s) {
            continue;
        }
        let bytes = dir_bytes(&s);
        let name = s
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        match std::fs::remove_dir_all(&s) {
            Ok(()) => deleted.push((name, bytes)),
            Err(e) => log::warn!("free-space floor: cannot delete {}: {e}", s.display()),
        }
    }
    deleted
}
