//! The byte budget: a token bucket whose burst is small enough that no 10 s window can hold
//! more than ten seconds of budget, and a meter of the bytes actually written per window.
//!
//! A bucket of rate `r` and depth `b` lets at most `b + r·T` bytes through in any window of
//! length `T`. With `b = max(0.1·B, largest frame)` and `r = B − b/10` that is exactly `10·B`
//! for `T = 10 s`, while a saturated link still carries `r ≈ 0.99·B` on average. Tokens are
//! taken for a whole frame before its first byte is written, so a partial write can only
//! make the real figure smaller.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// The window the budget is promised over.
pub const WINDOW: Duration = Duration::from_secs(10);
/// Room for the largest frame the uplink sends (a signed STATUSTEXT chunk is 79 bytes).
pub const MAX_FRAME: f64 = 80.0;

/// The token bucket.
#[derive(Clone, Debug)]
pub struct Budget {
    rate: f64,
    burst: f64,
    tokens: f64,
    at: Instant,
}

impl Budget {
    /// A full bucket for `bytes_per_s`.
    pub fn new(bytes_per_s: f64, now: Instant) -> Self {
        let burst = (bytes_per_s * WINDOW.as_secs_f64() / 100.0).max(MAX_FRAME);
        let rate = (bytes_per_s - burst / WINDOW.as_secs_f64()).max(1.0);
        Budget {
            rate,
            burst,
            tokens: burst,
            at: now,
        }
    }

    /// The long-run rate (bytes/s).
    pub fn rate(&self) -> f64 {
        self.rate
    }

    pub fn burst(&self) -> f64 {
        self.burst
    }

    fn refill(&mut self, now: Instant) {
        if now > self.at {
            let dt = (now - self.at).as_secs_f64();
            self.tokens = (self.tokens + dt * self.rate).min(self.burst);
            self.at = now;
        }
    }

    /// Takes `n` bytes if the bucket holds them.
    pub fn try_take(&mut self, n: usize, now: Instant) -> bool {
        self.try_take_keeping(n, 0.0, now)
    }

    /// Takes `n` bytes if the bucket holds them and `keep` more (set aside for more important
    /// frames; capped so that `n` can always go from a full bucket).
    pub fn try_take_keeping(&mut self, n: usize, keep: f64, now: Instant) -> bool {
        self.refill(now);
        let keep = keep.min(self.burst - n as f64).max(0.0);
        if self.tokens >= n as f64 + keep {
            self.tokens -= n as f64;
            true
        } else {
            false
        }
    }

    /// When `n` bytes (and `keep`, as in [`Budget::try_take_keeping`]) will be available.
    pub fn available_at(&mut self, n: usize, keep: f64, now: Instant) -> Instant {
        self.refill(now);
        let keep = keep.min(self.burst - n as f64).max(0.0);
        let missing = n as f64 + keep - self.tokens;
        if missing <= 0.0 {
            now
        } else {
            now + Duration::from_secs_f64(missing / self.rate)
        }
    }
}

/// The most bytes written within any [`WINDOW`], measured from the writes themselves.
#[derive(Debug)]
pub struct WindowMeter {
    writes: VecDeque<(Instant, u32)>,
    sum: u64,
    max: u64,
}

impl Default for WindowMeter {
    fn default() -> Self {
        WindowMeter {
            writes: VecDeque::with_capacity(4096),
            sum: 0,
            max: 0,
        }
    }
}

impl WindowMeter {
    /// Records `n` bytes written at `now`; returns the bytes in the window ending now.
    pub fn record(&mut self, now: Instant, n: usize) -> u64 {
        while let Some(&(t, b)) = self.writes.front() {
            if now.duration_since(t) >= WINDOW {
                self.sum -= b as u64;
                self.writes.pop_front();
            } else {
                break;
            }
        }
        self.writes.push_back((now, n as u32));
        self.sum += n as u64;
        self.max = self.max.max(self.sum);
        self.sum
    }

    /// The largest window so far.
    pub fn max(&self) -> u64 {
        self.max
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Drives the bucket greedily with `frame`-byte frames at 1 ms steps for `secs`; returns
    /// the meter.
    fn saturate(budget: f64, frame: usize, secs: u64) -> (WindowMeter, u64) {
        let t0 = Instant::now();
        let mut b = Budget::new(budget, t0);
        let mut m = WindowMeter::default();
        let mut total = 0;
        for ms in 0..secs * 1000 {
            let now = t0 + Duration::from_millis(ms);
            while b.try_take(frame, now) {
                m.record(now, frame);
                total += frame as u64;
            }
        }
        (m, total)
    }

    #[test]
    fn no_window_exceeds_the_budget_and_saturation_uses_it() {
        for (budget, frame) in [(2880.0, 41), (2880.0, 76), (120.0, 76), (46080.0, 26)] {
            let (m, total) = saturate(budget, frame, 60);
            assert!(
                m.max() as f64 <= budget * 10.0,
                "{budget} {frame}: {} in 10 s",
                m.max()
            );
            let used = total as f64 / (budget * 60.0);
            assert!(used > 0.93 && used <= 1.0, "{budget} {frame}: {used}");
        }
    }

    #[test]
    fn availability_is_predicted() {
        let t0 = Instant::now();
        let mut b = Budget::new(1000.0, t0);
        assert!(b.try_take(100, t0));
        assert!(!b.try_take(50, t0));
        let at = b.available_at(50, 0.0, t0);
        assert!(at > t0 && at < t0 + Duration::from_millis(100));
        assert!(b.try_take(50, at + Duration::from_micros(10)));
        // What is kept for more important frames is not handed out.
        let t1 = at + Duration::from_secs(10);
        assert!(b.try_take(30, t1));
        assert!(
            !b.try_take_keeping(40, 40.0, t1),
            "70 in the bucket, 40 + 40 asked"
        );
        assert!(b.try_take_keeping(40, 30.0, t1));
        // A keep larger than the bucket allows still lets the frame go from a full bucket.
        assert!(b.try_take_keeping(10, 1000.0, t1 + Duration::from_secs(10)));
    }
}
