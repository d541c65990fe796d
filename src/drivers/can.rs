//! The CAN bus through a socketcan raw socket (`can0` on the Pi's CAN HAT).
//!
//! Non-blocking, all error frames delivered (recorded by the logger as candump writes them),
//! kernel receive timestamps (`SO_TIMESTAMPNS`) where the driver provides them.

use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::time::UNIX_EPOCH;

use socketcan::{CanAnyFrame, CanSocket, Socket, SocketOptions};

use crate::clock::{Stamp, boot_ns, wall_ns};
use crate::formats::candump::record_from_frame;
use crate::records::CanRecord;

/// Errors of this driver.
#[derive(Debug, thiserror::Error)]
pub enum CanError {
    #[error(
        "{iface}: no such CAN interface (is the CAN HAT's overlay in config.txt and the interface up?): {source}"
    )]
    NoInterface { iface: String, source: io::Error },
    #[error("{iface}: {source}")]
    Io { iface: String, source: io::Error },
}

/// An open raw CAN socket.
pub struct CanBus {
    sock: CanSocket,
    iface: String,
    timestamps: bool,
}

impl CanBus {
    pub fn open(iface: &str) -> Result<Self, CanError> {
        let sock = CanSocket::open(iface).map_err(|source| match source.raw_os_error() {
            Some(nix::libc::ENODEV) => CanError::NoInterface {
                iface: iface.to_owned(),
                source,
            },
            _ => CanError::Io {
                iface: iface.to_owned(),
                source,
            },
        })?;
        let io = |source| CanError::Io {
            iface: iface.to_owned(),
            source,
        };
        sock.set_nonblocking(true).map_err(io)?;
        sock.set_error_filter_accept_all().map_err(io)?;
        let timestamps = sock.set_recv_timestamp(true).is_ok();
        Ok(CanBus {
            sock,
            iface: iface.to_owned(),
            timestamps,
        })
    }

    pub fn iface(&self) -> &str {
        &self.iface
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.sock.as_fd()
    }

    /// The next frame, or `Ok(None)` when none is waiting. CAN FD frames are skipped (`Some`
    /// of nothing is never returned for them; they count as `Ok(None)` after being read).
    pub fn read(&self) -> io::Result<Option<CanRecord>> {
        let res = if self.timestamps {
            self.sock
                .read_frame_with_timestamp()
                .map(|(f, t)| (f, Some(t)))
        } else {
            self.sock.read_frame().map(|f| (f, None))
        };
        match res {
            Ok((frame, ts)) => {
                let Some(mut r) = record_from_frame(&CanAnyFrame::from(frame)) else {
                    return Ok(None);
                };
                let wall = ts
                    .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                    .map(|d| d.as_nanos() as i64)
                    .unwrap_or_else(wall_ns);
                r.stamp = Stamp {
                    boot_ns: boot_ns(),
                    wall_ns: wall,
                };
                Ok(Some(r))
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
            Err(e) => Err(e),
        }
    }
}
