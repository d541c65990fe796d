//! The run directory: control socket and state files, private to the service user (and an
//! optional group, so operators in that group can use `harmony ctl`).

use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use nix::unistd::{Gid, Group, chown};

/// Why the run directory or its socket could not be prepared.
#[derive(Debug, thiserror::Error)]
pub enum RunDirError {
    #[error("cannot create run directory {path}: {source}")]
    Create { path: PathBuf, source: io::Error },
    #[error("cannot set permissions on {path}: {source}")]
    Permissions { path: PathBuf, source: io::Error },
    #[error("group '{0}' (board setting socket_group) does not exist on this system")]
    NoSuchGroup(String),
    #[error("cannot look up group '{group}': {source}")]
    GroupLookup { group: String, source: nix::Error },
    #[error("cannot give {path} to group '{group}': {source} (is the service user in that group?)")]
    Chown {
        path: PathBuf,
        group: String,
        source: nix::Error,
    },
}

/// Resolves a group name to its id.
pub fn group_id(name: &str) -> Result<Gid, RunDirError> {
    match Group::from_name(name) {
        Ok(Some(g)) => Ok(g.gid),
        Ok(None) => Err(RunDirError::NoSuchGroup(name.to_owned())),
        Err(source) => Err(RunDirError::GroupLookup {
            group: name.to_owned(),
            source,
        }),
    }
}

/// Sets `mode` on `path` and, with a group, hands it to that group.
pub fn restrict(path: &Path, mode: u32, group: Option<(&str, Gid)>) -> Result<(), RunDirError> {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(|source| {
        RunDirError::Permissions {
            path: path.to_owned(),
            source,
        }
    })?;
    if let Some((name, gid)) = group {
        chown(path, None, Some(gid)).map_err(|source| RunDirError::Chown {
            path: path.to_owned(),
            group: name.to_owned(),
            source,
        })?;
    }
    Ok(())
}

/// Creates the run directory and its `state/` subdirectory: mode 0700, or 0750 with a group.
pub fn prepare(run_dir: &Path, group: Option<&str>) -> Result<(), RunDirError> {
    let gid = group.map(|g| group_id(g).map(|id| (g, id))).transpose()?;
    let mode = if gid.is_some() { 0o750 } else { 0o700 };
    for d in [run_dir.to_owned(), run_dir.join("state")] {
        fs::create_dir_all(&d).map_err(|source| RunDirError::Create {
            path: d.clone(),
            source,
        })?;
        restrict(&d, mode, gid)?;
    }
    Ok(())
}

/// Where `harmony ctl` and `harmony top` look for a running firmware when not told: the sim
/// board's run directory if its socket exists (a laptop), else `/run/harmony` (the Pi).
pub fn default_run_dir() -> PathBuf {
    let sim = crate::board::Board::sim().board.run_dir;
    if crate::control::server::socket_path(&sim).exists() {
        sim
    } else {
        PathBuf::from("/run/harmony")
    }
}
