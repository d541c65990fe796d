//! Waking one processor thread, wherever it sleeps.
//!
//! A processor thread sleeps in one of two ways: parked (`std::thread::park_timeout`) when it
//! only waits for flags, mail or records, or inside `poll(2)` when it also waits for a device.
//! A [`Waker`] reaches both: it unparks the thread and, if the processor asked for one, writes
//! to an eventfd that the processor includes in its `poll` set. Park tokens and eventfd counters
//! both remember a wake that arrives before the sleep, so no wake-up is ever lost.
//!
//! The waker outlives a single thread: when the runner restarts a processor on a new thread it
//! rebinds the same waker, so flags and queues that hold it keep working.

use std::os::fd::{AsFd, BorrowedFd};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::{self, Thread};
use std::time::{Duration, Instant};

use nix::sys::eventfd::{EfdFlags, EventFd};

/// Wakes the thread a processor currently runs on (see the module docs).
#[derive(Debug, Default)]
pub struct Waker {
    thread: Mutex<Option<Thread>>,
    fd: OnceLock<EventFd>,
}

impl Waker {
    /// A waker bound to no thread yet.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// A waker bound to the calling thread.
    pub fn for_current() -> Arc<Self> {
        let w = Self::new();
        w.bind_current();
        w
    }

    /// Binds the waker to the calling thread (called by the runner on every (re)start).
    pub fn bind_current(&self) {
        let mut slot = self.thread.lock().unwrap_or_else(|e| e.into_inner());
        *slot = Some(thread::current());
    }

    /// Wakes the thread: unparks it, and signals the eventfd if one was requested.
    pub fn wake(&self) {
        if let Some(t) = self
            .thread
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
        {
            t.unpark();
        }
        if let Some(fd) = self.fd.get() {
            // EAGAIN only when the counter is saturated, which still means "woken".
            let _ = fd.write(1);
        }
    }

    /// The eventfd to include in a `poll(2)` set; created on first use.
    ///
    /// Returns `None` only if the kernel refuses an eventfd (out of descriptors); the caller
    /// then falls back to a bounded poll timeout.
    pub fn fd(&self) -> Option<BorrowedFd<'_>> {
        if self.fd.get().is_none() {
            let fd = EventFd::from_flags(EfdFlags::EFD_NONBLOCK | EfdFlags::EFD_CLOEXEC).ok()?;
            let _ = self.fd.set(fd);
        }
        self.fd.get().map(|f| f.as_fd())
    }

    /// Clears a pending eventfd wake after `poll` reported it.
    pub fn clear_fd(&self) {
        if let Some(fd) = self.fd.get() {
            let _ = fd.read();
        }
    }
}

/// Parks the calling thread until `deadline` (or forever with `None`), or until it is woken.
///
/// Spurious returns are possible, as with `park`; callers re-check their conditions.
pub fn park_until(deadline: Option<Instant>) {
    match deadline {
        None => thread::park(),
        Some(d) => {
            let now = Instant::now();
            if d > now {
                thread::park_timeout(d - now);
            }
        }
    }
}

/// Parks for at most `d` (or until woken).
pub fn park_for(d: Duration) {
    thread::park_timeout(d);
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

    #[test]
    fn wake_before_park_is_not_lost() {
        let w = Waker::for_current();
        w.wake();
        let t0 = Instant::now();
        park_until(Some(Instant::now() + Duration::from_secs(5)));
        assert!(t0.elapsed() < Duration::from_secs(1));
    }

    #[test]
    fn eventfd_wakes_poll() {
        let w = Waker::new();
        let w2 = w.clone();
        let h = thread::spawn(move || {
            thread::sleep(Duration::from_millis(20));
            w2.wake();
        });
        let fd = w.fd().expect("eventfd");
        let mut fds = [PollFd::new(fd, PollFlags::POLLIN)];
        let n = poll(&mut fds, PollTimeout::from(5000u16)).unwrap();
        assert_eq!(n, 1);
        w.clear_fd();
        h.join().unwrap();
    }
}
