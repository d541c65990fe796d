//! CAN replay: frames from a candump capture, emitted at their recorded timing (optionally
//! scaled), at a fixed frame rate, or as fast as possible. Stands in for `can0` where the
//! kernel has no CAN (the build machines).
//!
//! Frames are read with socketcan's `dump` reader ([`DumpReader`]). A malformed line is logged
//! with its file and line number and counted, and the replay goes on. Frames due within the
//! same millisecond are emitted together, so a 16,000 frames/s replay wakes its thread at most
//! about a thousand times a second, like a real socket delivering bursts.

use std::io::Read;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::clock::Stamp;
use crate::formats::candump::{DumpError, DumpFrame, DumpReader};
use crate::records::CanRecord;

/// How replayed frames are paced.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Timing {
    /// At the recorded times, `speed` times faster.
    Recorded { speed: f64 },
    /// Evenly at this many frames per second, ignoring the recorded times.
    Fps(f64),
    /// As fast as the consumer takes them.
    Fast,
}

/// Where a capture comes from.
#[derive(Clone, Debug)]
pub enum Capture {
    Builtin(&'static str, &'static [u8]),
    File(PathBuf),
}

impl Capture {
    pub fn name(&self) -> String {
        match self {
            Capture::Builtin(n, _) => format!("builtin:{n}"),
            Capture::File(p) => p.display().to_string(),
        }
    }

    fn open(&self) -> Result<DumpReader<Box<dyn Read + Send>>, DumpError> {
        match self {
            Capture::Builtin(n, b) => Ok(DumpReader::new(
                Box::new(*b) as Box<dyn Read + Send>,
                &PathBuf::from(format!("builtin:{n}")),
            )),
            Capture::File(p) => {
                let f = std::fs::File::open(p).map_err(|source| DumpError::Io {
                    path: p.clone(),
                    source,
                })?;
                Ok(DumpReader::new(Box::new(f) as Box<dyn Read + Send>, p))
            }
        }
    }
}

/// How far ahead of its time a frame may go: the replay wakes about once per this much
/// (a few hundred times a second at a saturated bus), not once per frame or millisecond. A
/// real bus's frames also reach a reader in bursts (socket buffer, interrupt coalescing).
pub const EARLY: Duration = Duration::from_millis(4);

/// What the replay has next.
#[derive(Debug, PartialEq)]
pub enum ReplayStep {
    Frame(CanRecord),
    /// Nothing due before this moment.
    WaitUntil(Instant),
    /// The capture is done (and not looping).
    Finished,
}

/// Replays one capture.
pub struct CanReplay {
    capture: Capture,
    reader: DumpReader<Box<dyn Read + Send>>,
    timing: Timing,
    looped: bool,
    t0: Instant,
    first_us: Option<u64>,
    index: u64,
    pending: Option<DumpFrame>,
    malformed: u64,
    frames: u64,
    passes: u64,
}

/// Malformed lines logged one by one before only the count goes on.
const LOG_MALFORMED: u64 = 20;

impl CanReplay {
    pub fn open(capture: Capture, timing: Timing, looped: bool) -> Result<Self, DumpError> {
        let reader = capture.open()?;
        Ok(CanReplay {
            capture,
            reader,
            timing,
            looped,
            t0: Instant::now(),
            first_us: None,
            index: 0,
            pending: None,
            malformed: 0,
            frames: 0,
            passes: 0,
        })
    }

    pub fn capture_name(&self) -> String {
        self.capture.name()
    }

    /// Malformed lines seen so far.
    pub fn malformed(&self) -> u64 {
        self.malformed
    }

    /// Frames emitted so far.
    pub fn frames(&self) -> u64 {
        self.frames
    }

    /// Completed passes through the capture.
    pub fn passes(&self) -> u64 {
        self.passes
    }

    fn due(&self, f: &DumpFrame) -> Instant {
        match self.timing {
            Timing::Fast => self.t0,
            Timing::Fps(fps) => {
                self.t0 + Duration::from_secs_f64(self.index as f64 / fps.max(1e-3))
            }
            Timing::Recorded { speed } => {
                let rel = f.t_us.saturating_sub(self.first_us.unwrap_or(f.t_us));
                self.t0 + Duration::from_secs_f64(rel as f64 / 1e6 / speed.max(1e-6))
            }
        }
    }

    fn restart(&mut self) -> Result<(), DumpError> {
        self.reader = self.capture.open()?;
        self.t0 = Instant::now();
        self.first_us = None;
        self.index = 0;
        self.passes += 1;
        Ok(())
    }

    /// The next frame if it is due by `now` (up to [`EARLY`] ahead), else when to ask again. The frame
    /// carries `stamp` (the caller reads the clocks once for a batch of frames due together).
    pub fn next(&mut self, now: Instant, stamp: Stamp) -> Result<ReplayStep, DumpError> {
        loop {
            if self.pending.is_none() {
                match self.reader.next_frame() {
                    Ok(Some(f)) => {
                        if self.first_us.is_none() {
                            self.first_us = Some(f.t_us);
                        }
                        self.pending = Some(f);
                    }
                    Ok(None) => {
                        if self.looped && self.index > 0 {
                            self.restart()?;
                            continue;
                        }
                        if self.index > 0 {
                            self.passes += 1;
                            self.index = 0;
                        }
                        return Ok(ReplayStep::Finished);
                    }
                    Err(DumpError::Io { path, source }) => {
                        return Err(DumpError::Io { path, source });
                    }
                    Err(e) => {
                        self.malformed += 1;
                        if self.malformed <= LOG_MALFORMED {
                            log::warn!("CAN replay: {e}; skipped");
                        } else if self.malformed == LOG_MALFORMED + 1 {
                            log::warn!("CAN replay: more malformed lines; counting them quietly");
                        }
                        continue;
                    }
                }
            }
            let f = self.pending.as_ref().expect("set above");
            let due = self.due(f);
            if due > now + EARLY {
                return Ok(ReplayStep::WaitUntil(due));
            }
            let f = self.pending.take().expect("set above");
            self.index += 1;
            self.frames += 1;
            let mut r = f.record;
            r.stamp = stamp;
            return Ok(ReplayStep::Frame(r));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_replay_of_the_builtin_capture_delivers_every_frame() {
        let data = crate::sim::builtin("canboat").unwrap();
        let mut r =
            CanReplay::open(Capture::Builtin("canboat", data), Timing::Fast, false).unwrap();
        let mut n = 0;
        while let ReplayStep::Frame(f) = r.next(Instant::now(), Stamp::now()).unwrap() {
            assert!(f.is_extended());
            n += 1;
        }
        assert_eq!(n, 2368);
        assert_eq!(r.malformed(), 0);
    }

    #[test]
    fn fixed_rate_paces_frames() {
        let data = crate::sim::builtin("canboat").unwrap();
        let mut r =
            CanReplay::open(Capture::Builtin("canboat", data), Timing::Fps(100.0), false).unwrap();
        let now = Instant::now();
        assert!(matches!(
            r.next(now, Stamp::now()).unwrap(),
            ReplayStep::Frame(_)
        ));
        match r.next(now, Stamp::now()).unwrap() {
            ReplayStep::WaitUntil(t) => {
                let d = t - now;
                assert!(
                    d > Duration::from_millis(5) && d < Duration::from_millis(15),
                    "{d:?}"
                );
            }
            s => panic!("{s:?}"),
        }
    }
}
