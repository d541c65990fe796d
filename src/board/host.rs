//! What a board file names, checked against this machine before anything starts (issue #11).
//!
//! [`Board::parse`](super::Board::parse) checks values only (it never looks at the disk, so
//! `harmony ctl`, `top` and `log` can read the built-in board whatever lies in the working
//! directory). [`Board::check_host`](super::Board::check_host) then checks every field that
//! names a path or a group, *before* the run directory is locked and before the data
//! directory is touched, so a refused start leaves nothing behind. These helpers only look
//! (`stat`, `statvfs`, `access`, opening a capture for reading): they never create, write or
//! remove anything. Each returns the message of a board error; the caller names the field.
//! What looking cannot tell (a file system that refuses new files although its permissions
//! allow them, such as `/sys` for root) is found out when the start makes the directory; that
//! error names the field too (`board.run_dir`, `board.data_dir`), and a session made by then is
//! removed again (`app::Provisional`).
//!
//! Devices that may come and go at run time (a USB radio or GPS, `/dev/i2c-N`, the CAN
//! interface) are not required to exist: only the directory they live in, and that they are
//! not something else (a directory). The sources reopen them every 2 s.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use nix::sys::statvfs::{FsFlags, statvfs};
use nix::unistd::{AccessFlags, Gid, Group, access, getegid, geteuid, getgroups};

/// `p`, or `.` for the empty parent of a relative name.
fn dir_or_cwd(p: &Path) -> &Path {
    if p.as_os_str().is_empty() {
        Path::new(".")
    } else {
        p
    }
}

/// The nearest ancestor of `p` (or `p` itself) that exists, following symlinks.
fn nearest_existing(p: &Path) -> Option<(PathBuf, fs::Metadata)> {
    let mut cur = p;
    loop {
        let here = dir_or_cwd(cur);
        if let Ok(m) = fs::metadata(here) {
            return Some((here.to_owned(), m));
        }
        cur = cur.parent()?;
    }
}

/// A directory the firmware will create files in: not on a read-only file system, and
/// writable (and searchable) by this process.
fn can_write_in(dir: &Path) -> Result<(), String> {
    if let Ok(s) = statvfs(dir)
        && s.flags().contains(FsFlags::ST_RDONLY)
    {
        return Err(format!("{} is on a read-only file system", dir.display()));
    }
    access(dir, AccessFlags::W_OK | AccessFlags::X_OK).map_err(|e| {
        format!(
            "{} is not writable by this user (uid {}): {}",
            dir.display(),
            geteuid(),
            e.desc()
        )
    })
}

/// A directory the firmware writes in (`data_dir`, `run_dir`): there and writable, or
/// creatable (its nearest existing ancestor is a writable directory).
pub fn writable_dir(p: &Path) -> Result<(), String> {
    let p = dir_or_cwd(p);
    match fs::metadata(p) {
        Ok(m) if !m.is_dir() => Err(format!("{} is not a directory", p.display())),
        Ok(_) => can_write_in(p),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            if fs::symlink_metadata(p).is_ok() {
                return Err(format!(
                    "{} is a symbolic link to nothing (a dangling link)",
                    p.display()
                ));
            }
            let Some((anc, m)) = nearest_existing(p) else {
                return Err(format!(
                    "cannot create {}: no part of it exists",
                    p.display()
                ));
            };
            if !m.is_dir() {
                return Err(format!(
                    "cannot create {}: {} is not a directory",
                    p.display(),
                    anc.display()
                ));
            }
            can_write_in(&anc).map_err(|why| format!("cannot create {}: {why}", p.display()))
        }
        Err(e) => Err(format!("{}: {e}", p.display())),
    }
}

/// A file the firmware rewrites with temp + rename (the signing state): if there, a regular
/// file (not a link, not a directory) that can be written; its directory writable. With
/// `parent_may_be_created` (the default place, inside `data_dir`) a missing directory is
/// fine when it can be created.
pub fn writable_file(p: &Path, parent_may_be_created: bool) -> Result<(), String> {
    match fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => return Err(format!("{} is a directory", p.display())),
        Ok(m) if !m.is_file() => {
            return Err(format!("{} is there but not a regular file", p.display()));
        }
        Ok(_) => {
            if let Err(e) = access(p, AccessFlags::W_OK) {
                return Err(format!("{} cannot be written: {}", p.display(), e.desc()));
            }
        }
        Err(_) => {}
    }
    let parent = dir_or_cwd(p.parent().unwrap_or(Path::new("")));
    if !parent_may_be_created && !parent.is_dir() {
        return Err(format!("directory {} does not exist", parent.display()));
    }
    writable_dir(parent)
}

/// A capture the simulator reads: a regular file this process can open, of at most `max`
/// bytes when it is read whole into memory.
pub fn readable_file(p: &Path, max: Option<u64>) -> Result<(), String> {
    let m = fs::metadata(p).map_err(|e| format!("cannot read '{}': {e}", p.display()))?;
    if m.is_dir() {
        return Err(format!(
            "'{}' is a directory, not a capture file",
            p.display()
        ));
    }
    if !m.is_file() {
        return Err(format!("'{}' is not a regular file", p.display()));
    }
    if let Some(max) = max
        && m.len() > max
    {
        return Err(format!(
            "'{}' is {} bytes; at most {max} are read into memory",
            p.display(),
            m.len()
        ));
    }
    fs::File::open(p)
        .map(drop)
        .map_err(|e| format!("cannot read '{}': {e}", p.display()))
}

/// A device that may come and go (USB serial, a UART): its directory exists; if the device is
/// there it is not a directory.
pub fn device(p: &Path) -> Result<(), String> {
    if let Some(parent) = p.parent()
        && !parent.as_os_str().is_empty()
        && !parent.is_dir()
    {
        return Err(format!("directory {} does not exist", parent.display()));
    }
    if p.is_dir() {
        return Err(format!("{} is a directory, not a device", p.display()));
    }
    Ok(())
}

/// A symbolic link the firmware (re)makes at start (the simulated radio's): absent or a link,
/// in a directory it can write in (made if missing).
pub fn link(p: &Path) -> Result<(), String> {
    match fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => {
            return Err(format!(
                "{} is a directory (it must be free for a symbolic link)",
                p.display()
            ));
        }
        Ok(m) if !m.file_type().is_symlink() => {
            return Err(format!(
                "{} exists and is not a symbolic link (it must be free for one)",
                p.display()
            ));
        }
        _ => {}
    }
    writable_dir(dir_or_cwd(p.parent().unwrap_or(Path::new(""))))
}

/// A group the firmware hands its control socket to: it exists, and this process may give
/// files to it (root, or a member).
pub fn group(name: &str) -> Result<(), String> {
    let gid = match Group::from_name(name) {
        Ok(Some(g)) => g.gid,
        Ok(None) => return Err(format!("group '{name}' does not exist on this system")),
        Err(e) => return Err(format!("cannot look up group '{name}': {}", e.desc())),
    };
    if geteuid().is_root() || is_member(gid) {
        Ok(())
    } else {
        Err(format!(
            "this user (uid {}) is not in group '{name}', so it cannot give the control socket to it",
            geteuid()
        ))
    }
}

fn is_member(gid: Gid) -> bool {
    getegid() == gid || getgroups().is_ok_and(|gs| gs.contains(&gid))
}
