//! The sensor sources: each a loop on its own thread, pushing records into one bounded queue
//! per sink. A source never blocks on a sink: a full queue drops the record and counts it
//! (per source and sink), and the sink later writes a dropout marker.
//!
//! A device that vanishes (unplugged GPS, rangefinder not answering, CAN interface down) is
//! reopened by the source itself every 2 s at most, with its state note saying so; the rest of
//! the firmware is unaffected.

pub mod can;
pub mod gps;
pub mod rangefinder;

use std::time::{Duration, Instant};

/// How often a vanished device is tried again.
pub const REOPEN_EVERY: Duration = Duration::from_secs(2);

/// Tracks reopen attempts of a device and whether its failure was already logged.
#[derive(Debug)]
pub struct Reopen {
    next: Instant,
    failures: u64,
}

impl Default for Reopen {
    fn default() -> Self {
        Reopen {
            next: Instant::now(),
            failures: 0,
        }
    }
}

impl Reopen {
    /// Whether an attempt may be made now.
    pub fn due(&self, now: Instant) -> bool {
        now >= self.next
    }

    pub fn next(&self) -> Instant {
        self.next
    }

    /// Records an attempt at `now`; the next one is at least [`REOPEN_EVERY`] later.
    pub fn attempted(&mut self, now: Instant) {
        self.next = now + REOPEN_EVERY;
    }

    /// Records a failed attempt; returns true for the first failure in a row (log it once).
    pub fn failed(&mut self) -> bool {
        self.failures += 1;
        self.failures == 1
    }

    pub fn succeeded(&mut self) {
        self.failures = 0;
    }
}
