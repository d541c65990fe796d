//! A GPS receiver simulator: a real capture written into a pseudo-terminal pair.
//!
//! The capture's `#` comment lines are skipped (receivers never send them). Pacing follows the
//! receiver's own clock: when a GGA/RMC/GLL/ZDA time field moves to a new epoch, the simulator
//! waits the epoch's length (scaled by `speed`, at most 2 s) before writing on. Writes never
//! block the thread: when the terminal's buffer is full the simulator waits for room (no byte
//! of the capture is lost), parked, so stop still reaches it at once.

use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serialport::TTYPort;

use crate::concurrency::{BoxError, Context, Loop, Step};

/// Seconds of day from a sentence's time field, for the sentences that carry the epoch.
pub fn epoch_of(line: &[u8]) -> Option<f64> {
    let s = std::str::from_utf8(line).ok()?;
    if s.len() < 7 || !s.starts_with('$') {
        return None;
    }
    let kind = &s[3..6];
    let field = match kind {
        "GGA" | "RMC" | "ZDA" => 1,
        "GLL" => 5,
        _ => return None,
    };
    let t = s.split([',', '*']).nth(field)?;
    if t.len() < 6 {
        return None;
    }
    let h: f64 = t[0..2].parse().ok()?;
    let m: f64 = t[2..4].parse().ok()?;
    let sec: f64 = t[4..].parse().ok()?;
    Some(h * 3600.0 + m * 60.0 + sec)
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
    master: TTYPort,
    /// Held open so the slave path stays valid while the source closes and reopens it.
    _slave: std::fs::File,
    slave_path: PathBuf,
    lines: Vec<Vec<u8>>,
    idx: usize,
    /// Bytes of the current line already written (after a partial write).
    offset: usize,
    speed: f64,
    looped: bool,
    last_epoch: Option<f64>,
    due: Option<Instant>,
}

impl GpsSim {
    /// Creates the pseudo-terminal pair; the GPS source opens [`GpsSim::device_path`].
    pub fn new(name: &str, capture: &[u8], speed: f64, looped: bool) -> io::Result<Self> {
        let (master, slave) = TTYPort::pair().map_err(io::Error::from)?;
        let slave_path = serialport::SerialPort::name(&slave)
            .map(PathBuf::from)
            .ok_or_else(|| io::Error::other("pseudo-terminal without a name"))?;
        // Our own handle on the slave keeps the path valid while the source reopens it; raw
        // mode means no echo back into the master and no line editing.
        let keep = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(nix::libc::O_NOCTTY)
            .open(&slave_path)?;
        drop(slave);
        if let Ok(mut t) = nix::sys::termios::tcgetattr(&keep) {
            nix::sys::termios::cfmakeraw(&mut t);
            let _ = nix::sys::termios::tcsetattr(&keep, nix::sys::termios::SetArg::TCSANOW, &t);
        }
        // A zero write timeout makes writes non-blocking: a full buffer drops the line.
        let mut master = master;
        serialport::SerialPort::set_timeout(&mut master, Duration::ZERO)
            .map_err(io::Error::from)?;
        Ok(GpsSim {
            name: name.to_owned(),
            master,
            _slave: keep,
            slave_path,
            lines: receiver_lines(capture),
            idx: 0,
            offset: 0,
            speed: if speed > 0.0 { speed } else { 1.0 },
            looped,
            last_epoch: None,
            due: None,
        })
    }

    pub fn device_path(&self) -> PathBuf {
        self.slave_path.clone()
    }
}

impl Loop for GpsSim {
    fn name(&self) -> &str {
        &self.name
    }

    fn work(&mut self, ctx: &Context) -> Result<Step, BoxError> {
        let now = Instant::now();
        if let Some(d) = self.due {
            if now < d {
                return Ok(Step::IdleUntil(d));
            }
            self.due = None;
        }
        let written = ctx.metric("lines_written");
        let mut first = true;
        while self.idx < self.lines.len() {
            let line = &self.lines[self.idx];
            if self.offset == 0
                && let Some(t) = epoch_of(line)
            {
                if let Some(l) = self.last_epoch
                    && t != l
                    && !first
                {
                    let dt = (t - l).clamp(0.0, 2.0) / self.speed;
                    self.last_epoch = Some(t);
                    let d = now + Duration::from_secs_f64(dt);
                    self.due = Some(d);
                    return Ok(Step::IdleUntil(d));
                }
                self.last_epoch = Some(t);
            }
            first = false;
            match self.master.write(&line[self.offset..]) {
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

    #[test]
    fn comments_are_not_receiver_output() {
        let l = receiver_lines(b"# Name: x\r\n$GPGGA,1*00\r\n$GPRMC,2*00\n");
        assert_eq!(l, [b"$GPGGA,1*00\r\n".to_vec(), b"$GPRMC,2*00\n".to_vec()]);
    }
}
