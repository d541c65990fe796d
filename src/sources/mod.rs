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

use std::os::fd::BorrowedFd;
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

use crate::concurrency::{Context, Producer, QueueGauge};

/// A source's two queues (to the logger and to the uplink) and their gauges: the set-up every
/// source shares. The queues may be in-process or shared-memory rings to another process
/// (see `concurrency::ring`); the source does not know which.
pub struct SourceOutputs<T> {
    pub logger: Producer<T>,
    pub uplink: Producer<T>,
    gauges: Option<[QueueGauge; 2]>,
}

impl<T> SourceOutputs<T> {
    pub fn new(logger: Producer<T>, uplink: Producer<T>) -> Self {
        SourceOutputs {
            logger,
            uplink,
            gauges: None,
        }
    }

    /// Publishes each queue's fill, capacity and drops as metrics (`queue.logger.*`,
    /// `queue.uplink.*`); call from `before`.
    pub fn publish(&mut self, ctx: &Context) {
        self.gauges = Some([
            QueueGauge::new(ctx, "logger", &self.logger),
            QueueGauge::new(ctx, "uplink", &self.uplink),
        ]);
    }

    /// Refreshes the gauges: once per batch, not per record.
    #[inline]
    pub fn update(&self) {
        if let Some([l, u]) = &self.gauges {
            l.update(&self.logger);
            u.update(&self.uplink);
        }
    }
}

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

/// Sleeps in `poll(2)` until `fd` is readable, the processor is woken (stop, pause, a signal),
/// or `timeout`; returns the device's poll flags (empty when it was not the device).
///
/// The time spent here is not work as far as the watchdog is concerned (see
/// `Context::wait_io`). Without an eventfd (out of descriptors) the wait is capped at 100 ms so
/// stop is still seen.
pub fn wait_readable(
    ctx: &Context,
    fd: BorrowedFd<'_>,
    timeout: PollTimeout,
) -> nix::Result<PollFlags> {
    let wake = ctx.waker().fd();
    let mut fds = [
        PollFd::new(fd, PollFlags::POLLIN),
        PollFd::new(wake.unwrap_or(fd), PollFlags::POLLIN),
    ];
    let t = if wake.is_some() {
        timeout
    } else {
        PollTimeout::from(100u16)
    };
    match ctx.wait_io(|| poll(&mut fds, t)) {
        Ok(_) | Err(nix::errno::Errno::EINTR) => {}
        Err(e) => return Err(e),
    }
    let rev = fds[0].revents().unwrap_or(PollFlags::empty());
    ctx.waker().clear_fd();
    Ok(rev)
}
