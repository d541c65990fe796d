//! A GPS receiver simulator: a real capture written into a pseudo-terminal pair.
//!
//! The capture's `#` comment lines are skipped (receivers never send them). It starts once the
//! reader has opened the port: the GPS source drops stale input when it opens a UART
//! (`tcflush`), which would eat the capture's first epochs, so the pty runs in packet mode
//! (`TIOCPKT`) and the simulator waits for that flush to show before writing the first line.
//! Pacing follows the receiver's own clock: when a GGA/RMC/GLL/ZDA time field moves to a new
//! epoch, the next epoch is due one epoch length (scaled by `speed`, at most 2 s; across
//! midnight from 23:59:59 to 00:00:00 as well) after the previous one was, so delays do not
//! add up; a loop starts again one epoch after the capture's last. Writes never block the
//! thread: when the terminal's buffer is full the simulator waits for room (no byte of the
//! capture is lost), parked, so stop still reaches it at once. Any byte may be in a capture.

use std::io;
use std::os::fd::AsFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{FcntlArg, OFlag, fcntl};
use nix::poll::PollTimeout;
use nix::pty::{PtyMaster, grantpt, posix_openpt, ptsname_r, unlockpt};

use crate::concurrency::{BoxError, Context, Loop, Step};

/// Packet-mode status bit: the slave's input queue was flushed (`<linux/tty.h>`).
const TIOCPKT_FLUSHREAD: u8 = 1;

nix::ioctl_write_ptr_bad!(set_packet_mode, nix::libc::TIOCPKT, nix::libc::c_int);

/// Seconds of day from a sentence's time field, for the sentences that carry the epoch.
pub fn epoch_of(line: &[u8]) -> Option<f64> {
    if line.len() < 7 || line[0] != b'$' {
        return None;
    }
    let field = match &line[3..6] {
        b"GGA" | b"RMC" | b"ZDA" => 1,
        b"GLL" => 5,
        _ => return None,
    };
    let t = line.split(|&b| b == b',' || b == b'*').nth(field)?;
    let t = std::str::from_utf8(t).ok()?;
    if t.len() < 6 || !t.is_ascii() {
        return None;
    }
    let h: f64 = t[0..2].parse().ok()?;
    let m: f64 = t[2..4].parse().ok()?;
    let sec: f64 = t[4..].parse().ok()?;
    let v = h * 3600.0 + m * 60.0 + sec;
    v.is_finite().then_some(v)
}

/// Seconds from one epoch to the next, across midnight too, at most 2 s.
fn epoch_gap(prev: f64, next: f64) -> f64 {
    let mut d = next - prev;
    if d < -43_200.0 {
        d += 86_400.0;
    }
    d.clamp(0.0, 2.0)
}

/// The capture's receiver lines (comments dropped), each with its original terminator.
pub fn receiver_lines(capture: &[u8]) -> Vec<Vec<u8>> {
    capture
        .split_inclusive(|&b| b == b'\n')
        .filter(|l| !l.starts_with(b"#"))
        .map(<[u8]>::to_vec)
        .collect()
}

/// The simulator processor.
pub struct GpsSim {
    name: String,
    master: PtyMaster,
    /// Held open so the slave path stays valid while the source closes and reopens it.
    _slave: std::fs::File,
    slave_path: PathBuf,
    lines: Vec<Vec<u8>>,
    idx: usize,
    /// Bytes of the current line already written (after a partial write).
    offset: usize,
    speed: f64,
    looped: bool,
    /// The reader has opened the port (its flush was seen, or packet mode is unavailable).
    started: bool,
    last_epoch: Option<f64>,
    /// The last gap between epochs, s (the pause before a loop starts again).
    last_gap: f64,
    /// When the epoch being written was due.
    epoch_due: Option<Instant>,
    /// The line at this index already waited for its epoch.
    released: Option<usize>,
    due: Option<Instant>,
    scratch: [u8; 256],
}

impl GpsSim {
    /// Creates the pseudo-terminal pair; the GPS source opens [`GpsSim::device_path`].
    pub fn new(name: &str, capture: &[u8], speed: f64, looped: bool) -> io::Result<Self> {
        let master = posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC)?;
        grantpt(&master)?;
        unlockpt(&master)?;
        let slave_path = PathBuf::from(ptsname_r(&master)?);
        // Our own handle on the slave keeps the path valid while the source reopens it; raw
        // mode means no echo back into the master and no line editing.
        let keep = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(nix::libc::O_NOCTTY)
            .open(&slave_path)?;
        if let Ok(mut t) = nix::sys::termios::tcgetattr(&keep) {
            nix::sys::termios::cfmakeraw(&mut t);
            let _ = nix::sys::termios::tcsetattr(&keep, nix::sys::termios::SetArg::TCSANOW, &t);
        }
        // Non-blocking: a full buffer makes the write wait for room, never the thread.
        let fl = fcntl(&master, FcntlArg::F_GETFL)?;
        fcntl(
            &master,
            FcntlArg::F_SETFL(OFlag::from_bits_truncate(fl) | OFlag::O_NONBLOCK),
        )?;
        let on: nix::libc::c_int = 1;
        // SAFETY: TIOCPKT reads one int through the pointer, which is valid for the call.
        let packet = unsafe { set_packet_mode(std::os::fd::AsRawFd::as_raw_fd(&master), &on) };
        if let Err(e) = packet {
            log::warn!("{name}: no pty packet mode ({e}): writing before the reader opens");
        }
        Ok(GpsSim {
            name: name.to_owned(),
            master,
            _slave: keep,
            slave_path,
            lines: receiver_lines(capture),
            idx: 0,
            offset: 0,
            speed: if speed > 0.0 && speed.is_finite() {
                speed
            } else {
                1.0
            },
            looped,
            started: packet.is_err(),
            last_epoch: None,
            last_gap: 1.0,
            epoch_due: None,
            released: None,
            due: None,
            scratch: [0; 256],
        })
    }

    pub fn device_path(&self) -> PathBuf {
        self.slave_path.clone()
    }

    /// Reads what the master has (packet-mode status bytes, anything the reader wrote);
    /// returns whether the reader flushed its input, i.e. has opened the port.
    fn drain(&mut self) -> bool {
        let mut flushed = false;
        loop {
            match nix::unistd::read(&self.master, &mut self.scratch) {
                // A packet: a status byte, then data when the status is 0 (TIOCPKT_DATA).
                Ok(n) if n > 0 => flushed |= self.scratch[0] & TIOCPKT_FLUSHREAD != 0,
                _ => return flushed,
            }
        }
    }

    /// Waits for the reader to open the port.
    fn wait_for_reader(&mut self, ctx: &Context) -> Result<Step, BoxError> {
        if self.drain() {
            self.started = true;
            return Ok(Step::Continue);
        }
        ctx.set_note("waiting for the reader to open the port");
        match crate::sources::wait_readable(ctx, self.master.as_fd(), PollTimeout::NONE) {
            Ok(_) | Err(Errno::EINTR) => Ok(Step::Continue),
            Err(e) => Err(Box::new(io::Error::from(e))),
        }
    }

    /// When the epoch starting at line `idx` (time `t`) is due.
    fn epoch_start(&mut self, now: Instant, t: f64) -> Option<Instant> {
        let gap = match self.last_epoch {
            Some(l) if l != t => epoch_gap(l, t),
            Some(_) => return None,
            None if self.epoch_due.is_some() => self.last_gap,
            None => {
                self.epoch_due = Some(now);
                return None;
            }
        };
        self.last_gap = gap;
        let prev = self.epoch_due.unwrap_or(now);
        let mut due = prev + Duration::from_secs_f64(gap / self.speed);
        // Far behind (the thread was paused): start the pace again from now.
        if due + Duration::from_secs(1) < now {
            due = now;
        }
        self.epoch_due = Some(due);
        Some(due)
    }
}

impl Loop for GpsSim {
    fn name(&self) -> &str {
        &self.name
    }

    fn work(&mut self, ctx: &Context) -> Result<Step, BoxError> {
        if !self.started {
            return self.wait_for_reader(ctx);
        }
        let now = Instant::now();
        if let Some(d) = self.due {
            if now < d {
                return Ok(Step::IdleUntil(d));
            }
            self.due = None;
        }
        let written = ctx.metric("lines_written");
        while self.idx < self.lines.len() {
            if self.offset == 0
                && self.released != Some(self.idx)
                && let Some(t) = epoch_of(&self.lines[self.idx])
            {
                let due = self.epoch_start(now, t);
                self.last_epoch = Some(t);
                self.released = Some(self.idx);
                if let Some(d) = due
                    && d > now
                {
                    self.drain();
                    self.due = Some(d);
                    return Ok(Step::IdleUntil(d));
                }
            }
            let line = &self.lines[self.idx];
            match nix::unistd::write(&self.master, &line[self.offset..]) {
                Ok(n) if self.offset + n < line.len() => {
                    self.offset += n;
                    continue;
                }
                Ok(_) => {
                    written.fetch_add(1, Ordering::Relaxed);
                    self.offset = 0;
                    self.idx += 1;
                }
                Err(_) => {
                    // The terminal's buffer is full (nobody is reading fast enough): wait for
                    // room rather than lose bytes, and never block the thread.
                    return Ok(Step::IdleUntil(now + Duration::from_millis(2)));
                }
            }
        }
        if self.looped {
            self.idx = 0;
            self.last_epoch = None;
            self.released = None;
            Ok(Step::Continue)
        } else {
            ctx.set_note("capture finished");
            Ok(Step::Idle)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epochs_come_from_time_fields() {
        assert_eq!(
            epoch_of(b"$GPGGA,092750.000,5321.6802,N,00630.3372,W,1,8,1.03,61.7,M,55.2,M,,*76\r\n"),
            Some(9.0 * 3600.0 + 27.0 * 60.0 + 50.0)
        );
        assert_eq!(
            epoch_of(b"$GPGLL,2638.1726,N,08011.3892,W,030129.000,A,A*47"),
            Some(10889.0)
        );
        assert_eq!(epoch_of(b"$GPGSV,3,1,11*76"), None);
    }

    // Issue #17: any bytes, never a panic; issue #16: midnight is one epoch on.
    #[test]
    fn epochs_of_odd_bytes_and_across_midnight() {
        for l in [
            "$Gé GA,120000.00*00".as_bytes(),
            "$GPGGA,1é0000.00*00".as_bytes(),
            b"$GPRMC,12\xff\xfe00.00,A*00",
            "$GPGLL,1,N,2,E,ééé00.0,A*00".as_bytes(),
            b"$GPGGA,inf000,x*00",
            b"$\xc3",
        ] {
            assert_eq!(epoch_of(l), None);
        }
        assert_eq!(epoch_gap(86_399.0, 0.0), 1.0);
        assert!((epoch_gap(86_399.8, 0.0) - 0.2).abs() < 1e-6);
        assert_eq!(epoch_gap(10.0, 9.0), 0.0);
        assert_eq!(epoch_gap(10.0, 30.0), 2.0);
    }

    #[test]
    fn comments_are_not_receiver_output() {
        let l = receiver_lines(b"# Name: x\r\n$GPGGA,1*00\r\n$GPRMC,2*00\n");
        assert_eq!(l, [b"$GPGGA,1*00\r\n".to_vec(), b"$GPRMC,2*00\n".to_vec()]);
    }
}
