//! A UART (the GPS) opened and configured with POSIX termios.
//!
//! Raw mode, 8N1, no flow control, non-blocking, at a standard rate; locked with `flock` so two
//! processes do not split one receiver's bytes. Reads are driven by `poll(2)` in the source
//! together with the processor's waker, so stop and pause never wait for a byte.
//!
//! Why termios through `nix` rather than serialport's `open`: serialport configures the port
//! with the Linux `termios2` ioctls, which qemu-user does not emulate, so the aarch64 tests
//! under `qemu-aarch64-static` could not open a port at all. Every rate a GPS receiver uses
//! (4800 to 921600) is a standard termios rate, so this path is complete, and it is the same
//! code on the Pi, on a laptop and under qemu. serialport still provides the simulator's
//! pseudo-terminal pairs.

use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};
use nix::sys::termios::{self, BaudRate, ControlFlags, FlushArg, SetArg};

/// The rates gpsd hunts through, in its order.
pub const HUNT_RATES: [u32; 9] = [
    4800, 9600, 19200, 38400, 57600, 115200, 230400, 460800, 921600,
];

/// Errors of this driver; each says what to check.
#[derive(Debug, thiserror::Error)]
pub enum SerialError {
    #[error(
        "{path}: no such device (is the receiver plugged in / the UART enabled in config.txt?)"
    )]
    NotFound { path: PathBuf },
    #[error("{path}: permission denied (is the service user in the dialout group?)")]
    Permission { path: PathBuf },
    #[error("{path}: in use by another process")]
    Busy { path: PathBuf },
    #[error("{path}: not a terminal device: {source}")]
    NotATty { path: PathBuf, source: nix::Error },
    #[error("{baud} is not a supported baud rate (use one of {HUNT_RATES:?})")]
    BadBaud { baud: u32 },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path}: cannot configure: {source}")]
    Termios { path: PathBuf, source: nix::Error },
}

pub fn baud_rate(baud: u32) -> Option<BaudRate> {
    Some(match baud {
        4800 => BaudRate::B4800,
        9600 => BaudRate::B9600,
        19200 => BaudRate::B19200,
        38400 => BaudRate::B38400,
        57600 => BaudRate::B57600,
        115200 => BaudRate::B115200,
        230400 => BaudRate::B230400,
        460800 => BaudRate::B460800,
        921600 => BaudRate::B921600,
        _ => return None,
    })
}

/// An open UART.
pub struct Uart {
    file: Flock<File>,
    path: PathBuf,
    baud: u32,
}

impl Uart {
    /// Opens `path` at `baud`, raw 8N1.
    pub fn open(path: &Path, baud: u32) -> Result<Self, SerialError> {
        let rate = baud_rate(baud).ok_or(SerialError::BadBaud { baud })?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(nix::libc::O_NOCTTY | nix::libc::O_NONBLOCK)
            .open(path)
            .map_err(|source| match source.kind() {
                io::ErrorKind::NotFound => SerialError::NotFound {
                    path: path.to_owned(),
                },
                io::ErrorKind::PermissionDenied => SerialError::Permission {
                    path: path.to_owned(),
                },
                _ => SerialError::Io {
                    path: path.to_owned(),
                    source,
                },
            })?;
        let file =
            Flock::lock(file, FlockArg::LockExclusiveNonblock).map_err(|_| SerialError::Busy {
                path: path.to_owned(),
            })?;
        let mut t = termios::tcgetattr(&*file).map_err(|source| SerialError::NotATty {
            path: path.to_owned(),
            source,
        })?;
        termios::cfmakeraw(&mut t);
        t.control_flags |= ControlFlags::CLOCAL | ControlFlags::CREAD;
        t.control_flags &= !(ControlFlags::CSTOPB | ControlFlags::PARENB | ControlFlags::CRTSCTS);
        let set = |t: &mut termios::Termios| -> Result<(), nix::Error> {
            termios::cfsetspeed(t, rate)?;
            termios::tcsetattr(&*file, SetArg::TCSANOW, t)
        };
        set(&mut t).map_err(|source| SerialError::Termios {
            path: path.to_owned(),
            source,
        })?;
        let _ = termios::tcflush(&*file, FlushArg::TCIFLUSH);
        Ok(Uart {
            file,
            path: path.to_owned(),
            baud,
        })
    }

    /// Changes the rate (baud hunting) and drops what was received at the old one.
    pub fn set_baud(&mut self, baud: u32) -> Result<(), SerialError> {
        let rate = baud_rate(baud).ok_or(SerialError::BadBaud { baud })?;
        let err = |source| SerialError::Termios {
            path: self.path.clone(),
            source,
        };
        let mut t = termios::tcgetattr(&*self.file).map_err(err)?;
        termios::cfsetspeed(&mut t, rate).map_err(err)?;
        termios::tcsetattr(&*self.file, SetArg::TCSANOW, &t).map_err(err)?;
        self.flush_input();
        self.baud = baud;
        Ok(())
    }

    pub fn baud(&self) -> u32 {
        self.baud
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Drops buffered input (after a pause, so old sentences are not taken for new ones).
    pub fn flush_input(&self) {
        let _ = termios::tcflush(&*self.file, FlushArg::TCIFLUSH);
    }

    /// Reads what is available; `Ok(0)` means nothing now (the port is non-blocking).
    /// A hung-up or vanished device is an error.
    pub fn read_available(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match (&*self.file).read(buf) {
            Ok(0) => Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "device hung up",
            )),
            Ok(n) => Ok(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(0),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(0),
            Err(e) => Err(e),
        }
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }
}
