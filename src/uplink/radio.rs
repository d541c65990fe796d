//! The radio as the uplink sees it: a serial tty (the SiK / RFD900 radio's UART, opened with
//! the project's termios driver) or, on the simulated board, the near side of a
//! pseudo-terminal pair whose far side the ground station opens.
//!
//! Both are non-blocking: a write takes what the device accepts now and the rest waits for
//! `POLLOUT`, so a slow or stuck radio never holds the thread. The simulated radio behaves like
//! a real one in the air: when nobody reads the far side and the terminal's buffer fills up,
//! what was queued is discarded instead of piling up as stale telemetry.

use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use nix::fcntl::{FcntlArg, OFlag, fcntl};
use nix::pty::{PtyMaster, grantpt, posix_openpt, ptsname_r, unlockpt};

use crate::drivers::serial::{SerialError, Uart};

/// The simulated radio: a pseudo-terminal pair made when the uplink is built.
pub struct SimRadio {
    near: PtyMaster,
    /// Our handle on the far side keeps the terminal alive while no ground station has it
    /// open (otherwise the near side reports a hang-up in a loop), and lets us discard what
    /// nobody read.
    far_keepalive: std::fs::File,
    far_path: PathBuf,
    link: Option<PathBuf>,
}

impl SimRadio {
    /// Creates the pair; `link`, when given, becomes a symlink to the far side's path.
    pub fn new(link: Option<&Path>) -> io::Result<Self> {
        let near = posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC)?;
        grantpt(&near)?;
        unlockpt(&near)?;
        let far_path = PathBuf::from(ptsname_r(&near)?);
        let keep = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(nix::libc::O_NOCTTY | nix::libc::O_NONBLOCK)
            .open(&far_path)?;
        // Raw: no echo of the ground's bytes back to us, no line editing of telemetry.
        if let Ok(mut t) = nix::sys::termios::tcgetattr(&keep) {
            nix::sys::termios::cfmakeraw(&mut t);
            let _ = nix::sys::termios::tcsetattr(&keep, nix::sys::termios::SetArg::TCSANOW, &t);
        }
        let fl = fcntl(&near, FcntlArg::F_GETFL)?;
        fcntl(
            &near,
            FcntlArg::F_SETFL(OFlag::from_bits_truncate(fl) | OFlag::O_NONBLOCK),
        )?;
        let link = match link {
            Some(l) => {
                if let Some(parent) = l.parent()
                    && !parent.as_os_str().is_empty()
                {
                    std::fs::create_dir_all(parent)?;
                }
                match std::fs::symlink_metadata(l) {
                    Ok(m) if m.file_type().is_symlink() => std::fs::remove_file(l)?,
                    Ok(_) => {
                        return Err(io::Error::new(
                            io::ErrorKind::AlreadyExists,
                            format!("{} exists and is not a symlink", l.display()),
                        ));
                    }
                    Err(_) => {}
                }
                std::os::unix::fs::symlink(&far_path, l)?;
                Some(l.to_owned())
            }
            None => None,
        };
        Ok(SimRadio {
            near,
            far_keepalive: keep,
            far_path,
            link,
        })
    }

    /// The device the ground station opens.
    pub fn ground_path(&self) -> &Path {
        &self.far_path
    }

    /// The symlink to [`SimRadio::ground_path`], if one was made.
    pub fn link(&self) -> Option<&Path> {
        self.link.as_deref()
    }

    /// Whether the far side has bytes it has not read yet.
    fn far_side_unread(&self) -> bool {
        let mut fds = [nix::poll::PollFd::new(
            self.far_keepalive.as_fd(),
            nix::poll::PollFlags::POLLIN,
        )];
        matches!(nix::poll::poll(&mut fds, nix::poll::PollTimeout::ZERO), Ok(n) if n > 0)
    }

    /// Drops what the far side has not read (the radio "sent it into the air").
    fn discard_unread(&self) {
        let _ =
            nix::sys::termios::tcflush(&self.far_keepalive, nix::sys::termios::FlushArg::TCIFLUSH);
    }
}

impl Drop for SimRadio {
    fn drop(&mut self) {
        // Only our own link, and only while it still points at our terminal.
        if let Some(l) = &self.link
            && std::fs::read_link(l).is_ok_and(|t| t == self.far_path)
        {
            let _ = std::fs::remove_file(l);
        }
    }
}

/// An open radio.
pub enum Port {
    Uart(Uart),
    Sim(Box<SimRadio>),
}

/// What a write achieved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wrote {
    /// This many bytes (possibly fewer than offered; the rest waits for POLLOUT).
    Bytes(usize),
    /// The simulated radio's buffer was full and nobody read it: discarded, try again.
    Discarded,
}

impl Port {
    /// Opens a serial radio.
    pub fn open(path: &Path, baud: u32) -> Result<Self, SerialError> {
        Uart::open(path, baud).map(Port::Uart)
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        match self {
            Port::Uart(u) => u.fd(),
            Port::Sim(s) => s.near.as_fd(),
        }
    }

    /// Reads what is there; `Ok(0)` when nothing is. A vanished or hung-up device is an
    /// error.
    pub fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Port::Uart(u) => u.read_available(buf),
            Port::Sim(s) => match nix::unistd::read(s.near.as_fd(), buf) {
                Ok(n) => Ok(n),
                Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::EINTR) => Ok(0),
                Err(e) => Err(e.into()),
            },
        }
    }

    /// Whether bytes written may still be on their way: the simulated radio's far side has
    /// not read everything yet. (A UART's driver drains its queue on close by itself.)
    pub fn in_transit(&self) -> bool {
        match self {
            Port::Uart(_) => false,
            Port::Sim(s) => s.far_side_unread(),
        }
    }

    /// Writes without blocking.
    pub fn write(&mut self, bytes: &[u8]) -> io::Result<Wrote> {
        match nix::unistd::write(self.fd(), bytes) {
            Ok(n) => Ok(Wrote::Bytes(n)),
            Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::EINTR) => match self {
                Port::Sim(s) => {
                    s.discard_unread();
                    Ok(Wrote::Discarded)
                }
                Port::Uart(_) => Ok(Wrote::Bytes(0)),
            },
            Err(e) => Err(e.into()),
        }
    }
}
