//! Opening what is in a session directory without following links (issue #17).
//!
//! The log tools run as root on the Pi, and whoever can write the data directory can put a
//! symbolic link, a FIFO or a hard link where a log file should be. So everything inside a
//! session is reached through an open directory descriptor with `openat(2)`:
//!
//! * files are opened with `O_NOFOLLOW | O_NONBLOCK` and must be regular files (`fstat`): a
//!   link is refused (`ELOOP`), a FIFO or device cannot block the tool or be written to;
//! * a file that is cut or appended to (`check --repair` and its `FILE.torn`) must also have
//!   exactly one hard link, so a hard link to a file elsewhere is refused too;
//! * a session inside a data directory is opened with `O_DIRECTORY | O_NOFOLLOW`, so a link
//!   named like a session is refused, and swapping a directory for a link while the tool runs
//!   changes nothing: names are resolved relative to the descriptor, never by path again.
//!
//! The directory named on the command line is the user's choice and is followed when the
//! tool only reads. For repairs ([`ArgDir::Strict`]) it may be a link only as the logger's
//! `latest`: a link named `latest` whose target is one session name in the same directory
//! (what [`crate::logger::session`] writes); anything else is refused.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, open, openat};
use nix::sys::stat::{FileStat, Mode, SFlag, fstat, fstatat};

use crate::logger::session::is_session_name;

/// Why something in a session could not be opened, or was refused.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("{0}: no such file or directory")]
    Missing(PathBuf),
    #[error("{0}: is a symbolic link: not followed")]
    Link(PathBuf),
    #[error("{path}: is a {what}, not a regular file: refused")]
    NotRegular { path: PathBuf, what: &'static str },
    #[error("{0}: not a directory")]
    NotDir(PathBuf),
    #[error("{path}: has {links} hard links: not modified (it is also a file elsewhere)")]
    HardLinks { path: PathBuf, links: u64 },
    #[error(
        "{path}: a link may only be `latest` pointing at a session in the same directory \
         (it points at {target}): give the directory itself to --repair"
    )]
    BadLatest { path: PathBuf, target: PathBuf },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

impl FileError {
    fn from_errno(path: PathBuf, e: Errno) -> Self {
        match e {
            Errno::ENOENT => FileError::Missing(path),
            Errno::ELOOP => FileError::Link(path),
            Errno::ENOTDIR => FileError::NotDir(path),
            e => FileError::Io {
                path,
                source: e.into(),
            },
        }
    }

    /// What is wrong, without the path (for reports that name the file already).
    pub fn reason(&self) -> String {
        match self {
            FileError::Missing(_) => "no such file or directory".into(),
            FileError::Link(_) => "is a symbolic link: not followed".into(),
            FileError::NotRegular { what, .. } => {
                format!("is a {what}, not a regular file: refused")
            }
            FileError::NotDir(_) => "not a directory".into(),
            FileError::HardLinks { links, .. } => {
                format!("has {links} hard links: not modified (it is also a file elsewhere)")
            }
            FileError::BadLatest { target, .. } => format!(
                "a link may only be `latest` pointing at a session in the same directory (it \
                 points at {}): give the directory itself to --repair",
                target.display()
            ),
            FileError::Io { source, .. } => source.to_string(),
        }
    }

    /// Whether the thing is simply not there.
    pub fn is_missing(&self) -> bool {
        matches!(self, FileError::Missing(_))
    }
}

/// How the directory named on the command line may be reached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArgDir {
    /// Reading only: follow it as the user named it.
    Follow,
    /// Modifying: a link only as the logger's `latest` (see the module docs).
    Strict,
}

/// The kind of a directory entry, not following links.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryKind {
    File,
    Dir,
    Link,
    Other(&'static str),
}

fn kind_of(st: &FileStat) -> EntryKind {
    match SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits()) {
        SFlag::S_IFREG => EntryKind::File,
        SFlag::S_IFDIR => EntryKind::Dir,
        SFlag::S_IFLNK => EntryKind::Link,
        SFlag::S_IFIFO => EntryKind::Other("FIFO"),
        SFlag::S_IFSOCK => EntryKind::Other("socket"),
        SFlag::S_IFCHR => EntryKind::Other("character device"),
        SFlag::S_IFBLK => EntryKind::Other("block device"),
        _ => EntryKind::Other("special file"),
    }
}

fn what(k: EntryKind) -> &'static str {
    match k {
        EntryKind::File => "regular file",
        EntryKind::Dir => "directory",
        EntryKind::Link => "symbolic link",
        EntryKind::Other(w) => w,
    }
}

/// A regular file opened inside a [`Dir`], with what `fstat` said when it was opened.
pub struct OpenFile {
    pub file: File,
    pub path: PathBuf,
    pub len: u64,
    pub dev: u64,
    pub ino: u64,
    pub links: u64,
}

impl OpenFile {
    /// Refuses a file that is also reachable under another name (a hard link).
    pub fn single_link(&self) -> Result<(), FileError> {
        if self.links == 1 {
            Ok(())
        } else {
            Err(FileError::HardLinks {
                path: self.path.clone(),
                links: self.links,
            })
        }
    }
}

/// An open directory: everything in it is opened relative to its descriptor.
pub struct Dir {
    fd: OwnedFd,
    path: PathBuf,
}

const DIR_FLAGS: OFlag = OFlag::O_RDONLY
    .union(OFlag::O_DIRECTORY)
    .union(OFlag::O_CLOEXEC);

impl Dir {
    /// Opens the directory named on the command line (see [`ArgDir`]).
    pub fn open_arg(path: &Path, how: ArgDir) -> Result<Dir, FileError> {
        let meta = std::fs::symlink_metadata(path).map_err(|source| {
            if source.kind() == io::ErrorKind::NotFound {
                FileError::Missing(path.to_owned())
            } else {
                FileError::Io {
                    path: path.to_owned(),
                    source,
                }
            }
        })?;
        if how == ArgDir::Strict && meta.file_type().is_symlink() {
            return Self::open_latest(path);
        }
        let flags = match how {
            ArgDir::Follow => DIR_FLAGS,
            ArgDir::Strict => DIR_FLAGS | OFlag::O_NOFOLLOW,
        };
        let fd =
            open(path, flags, Mode::empty()).map_err(|e| FileError::from_errno(path.into(), e))?;
        Ok(Dir {
            fd,
            path: path.to_owned(),
        })
    }

    /// `latest` -> `SESSION`, one name in the same directory: opens that session, itself not
    /// followed if it is a link.
    fn open_latest(path: &Path) -> Result<Dir, FileError> {
        let target = std::fs::read_link(path).map_err(|source| FileError::Io {
            path: path.to_owned(),
            source,
        })?;
        let bad = || FileError::BadLatest {
            path: path.to_owned(),
            target: target.clone(),
        };
        let mut comps = target.components();
        let (Some(Component::Normal(name)), None) = (comps.next(), comps.next()) else {
            return Err(bad());
        };
        if path.file_name() != Some(OsStr::new("latest"))
            || !is_session_name(&name.to_string_lossy())
        {
            return Err(bad());
        }
        let parent = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        Dir::open_arg(parent, ArgDir::Follow)?.dir(name)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn child(&self, name: &OsStr) -> PathBuf {
        self.path.join(name)
    }

    /// What `name` is, without following it.
    pub fn kind(&self, name: &OsStr) -> Result<EntryKind, FileError> {
        fstatat(&self.fd, name, AtFlags::AT_SYMLINK_NOFOLLOW)
            .map(|st| kind_of(&st))
            .map_err(|e| FileError::from_errno(self.child(name), e))
    }

    /// The names in this directory (without `.` and `..`), sorted.
    pub fn names(&self) -> Result<Vec<OsString>, FileError> {
        let mut d = nix::dir::Dir::openat(&self.fd, ".", DIR_FLAGS, Mode::empty())
            .map_err(|e| FileError::from_errno(self.path.clone(), e))?;
        let mut v = Vec::new();
        for e in d.iter() {
            let e = e.map_err(|e| FileError::from_errno(self.path.clone(), e))?;
            let n = e.file_name().to_bytes();
            if n != b"." && n != b".." {
                v.push(OsStr::from_bytes(n).to_owned());
            }
        }
        v.sort();
        Ok(v)
    }

    /// Opens the subdirectory `name`; a link is refused.
    pub fn dir(&self, name: &OsStr) -> Result<Dir, FileError> {
        let path = self.child(name);
        match openat(&self.fd, name, DIR_FLAGS | OFlag::O_NOFOLLOW, Mode::empty()) {
            Ok(fd) => Ok(Dir { fd, path }),
            // O_DIRECTORY | O_NOFOLLOW on a link gives ENOTDIR on some kernels: say what it is.
            Err(e @ (Errno::ENOTDIR | Errno::ELOOP)) => Err(match self.kind(name) {
                Ok(EntryKind::Link) => FileError::Link(path),
                _ => FileError::from_errno(path, e),
            }),
            Err(e) => Err(FileError::from_errno(path, e)),
        }
    }

    fn regular(&self, name: &OsStr, flags: OFlag, mode: Mode) -> Result<OpenFile, FileError> {
        let path = self.child(name);
        // O_NONBLOCK: opening a FIFO must not wait for a writer.
        let flags = flags | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC;
        let fd = match openat(&self.fd, name, flags, mode) {
            Ok(fd) => fd,
            Err(Errno::ENXIO | Errno::EISDIR) => {
                let k = self.kind(name)?;
                return Err(FileError::NotRegular {
                    path,
                    what: what(k),
                });
            }
            Err(e) => return Err(FileError::from_errno(path, e)),
        };
        let st = fstat(fd.as_fd()).map_err(|e| FileError::from_errno(path.clone(), e))?;
        let k = kind_of(&st);
        if k != EntryKind::File {
            return Err(FileError::NotRegular {
                path,
                what: what(k),
            });
        }
        // O_NONBLOCK means nothing for a regular file's reads and writes; drop it anyway.
        let _ = nix::fcntl::fcntl(&fd, nix::fcntl::FcntlArg::F_SETFL(flags & OFlag::O_APPEND));
        Ok(OpenFile {
            file: File::from(fd),
            path,
            len: st.st_size as u64,
            dev: st.st_dev as u64,
            ino: st.st_ino as u64,
            links: st.st_nlink as u64,
        })
    }

    /// Opens the regular file `name` for reading.
    pub fn read(&self, name: &OsStr) -> Result<OpenFile, FileError> {
        self.regular(name, OFlag::O_RDONLY, Mode::empty())
    }

    /// Opens the regular file `name` for reading and writing; it must have one link only.
    pub fn modify(&self, name: &OsStr) -> Result<OpenFile, FileError> {
        let f = self.regular(name, OFlag::O_RDWR, Mode::empty())?;
        f.single_link()?;
        Ok(f)
    }

    /// Opens (creating it, mode 0640) the regular file `name` to append to; one link only.
    pub fn append(&self, name: &OsStr) -> Result<OpenFile, FileError> {
        let f = self.regular(
            name,
            OFlag::O_WRONLY | OFlag::O_APPEND | OFlag::O_CREAT,
            Mode::from_bits_truncate(0o640),
        )?;
        f.single_link()?;
        Ok(f)
    }

    /// Reads the regular file `name` whole, refusing more than `max` bytes.
    pub fn read_bounded(&self, name: &OsStr, max: u64) -> Result<Result<Vec<u8>, u64>, FileError> {
        let f = self.read(name)?;
        let mut v = Vec::with_capacity(f.len.min(max) as usize);
        let path = f.path.clone();
        f.file
            .take(max + 1)
            .read_to_end(&mut v)
            .map_err(|source| FileError::Io { path, source })?;
        Ok(if v.len() as u64 > max {
            Err(f.len.max(v.len() as u64))
        } else {
            Ok(v)
        })
    }

    /// Makes a change to the directory's entries durable (a created `.torn` file).
    pub fn sync(&self) -> Result<(), FileError> {
        nix::unistd::fsync(&self.fd).map_err(|e| FileError::from_errno(self.path.clone(), e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn links_fifos_and_hard_links_are_refused() {
        let d = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let target = outside.path().join("precious");
        std::fs::write(&target, b"keep").unwrap();
        let s = d.path().join("sess001");
        std::fs::create_dir(&s).unwrap();
        symlink(&target, s.join("can.000.log")).unwrap();
        std::fs::hard_link(&target, s.join("gps.000.nmea")).unwrap();
        nix::unistd::mkfifo(&s.join("events.log"), Mode::from_bits_truncate(0o600)).unwrap();
        std::fs::write(s.join("manifest.json"), b"{}").unwrap();
        let dir = Dir::open_arg(&s, ArgDir::Strict).unwrap();
        let name = |n: &str| OsString::from(n);
        assert!(matches!(
            dir.read(&name("can.000.log")),
            Err(FileError::Link(_))
        ));
        assert!(matches!(
            dir.append(&name("can.000.log")),
            Err(FileError::Link(_))
        ));
        assert!(matches!(
            dir.modify(&name("gps.000.nmea")),
            Err(FileError::HardLinks { links: 2, .. })
        ));
        assert!(dir.read(&name("gps.000.nmea")).is_ok(), "reading is fine");
        assert!(matches!(
            dir.read(&name("events.log")),
            Err(FileError::NotRegular { what: "FIFO", .. })
        ));
        assert!(dir.modify(&name("manifest.json")).is_ok());
        assert_eq!(std::fs::read(&target).unwrap(), b"keep");
        assert_eq!(
            dir.names().unwrap(),
            ["can.000.log", "events.log", "gps.000.nmea", "manifest.json"]
        );
    }

    #[test]
    fn only_latest_may_be_a_link_when_modifying() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("sess001")).unwrap();
        symlink("sess001", d.path().join("latest")).unwrap();
        let l = Dir::open_arg(&d.path().join("latest"), ArgDir::Strict).unwrap();
        assert_eq!(l.path(), d.path().join("sess001"));
        // A `latest` pointing elsewhere, or any other link, is refused.
        let other = tempfile::tempdir().unwrap();
        symlink(other.path(), d.path().join("elsewhere")).unwrap();
        assert!(matches!(
            Dir::open_arg(&d.path().join("elsewhere"), ArgDir::Strict),
            Err(FileError::BadLatest { .. })
        ));
        std::fs::remove_file(d.path().join("latest")).unwrap();
        symlink(other.path(), d.path().join("latest")).unwrap();
        assert!(matches!(
            Dir::open_arg(&d.path().join("latest"), ArgDir::Strict),
            Err(FileError::BadLatest { .. })
        ));
        assert!(Dir::open_arg(&d.path().join("elsewhere"), ArgDir::Follow).is_ok());
        // A session name that is itself a link, behind `latest`.
        symlink(other.path(), d.path().join("sess002")).unwrap();
        std::fs::remove_file(d.path().join("latest")).unwrap();
        symlink("sess002", d.path().join("latest")).unwrap();
        assert!(matches!(
            Dir::open_arg(&d.path().join("latest"), ArgDir::Strict),
            Err(FileError::Link(_))
        ));
        assert!(matches!(
            Dir::open_arg(&d.path().join("nope"), ArgDir::Follow),
            Err(FileError::Missing(_))
        ));
    }
}
