//! Stop and waiting flags: an atomic bool that wakes whoever waits on it.
//!
//! The seed shared `multiprocessing.Event`s; here a flag is one atomic, so a hot loop reads it
//! with a single load, plus a list of [`Waker`]s that are woken when it changes. The list is
//! only locked to subscribe and to change the flag, never to read it.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};

use super::wake::Waker;

struct Inner {
    name: String,
    set: AtomicBool,
    subscribers: Mutex<Vec<Weak<Waker>>>,
}

/// A shared boolean with wake-ups on change. Cloning shares the same flag.
#[derive(Clone)]
pub struct Flag(Arc<Inner>);

impl Flag {
    /// A new, cleared flag. The name shows up in status and is how `harmony ctl` finds a group.
    pub fn new(name: impl Into<String>) -> Self {
        Flag(Arc::new(Inner {
            name: name.into(),
            set: AtomicBool::new(false),
            subscribers: Mutex::new(Vec::new()),
        }))
    }

    pub fn name(&self) -> &str {
        &self.0.name
    }

    /// One atomic load: cheap enough for every iteration of a hot loop.
    #[inline]
    pub fn is_set(&self) -> bool {
        self.0.set.load(Ordering::Acquire)
    }

    /// Sets the flag; wakes subscribers if it changed. Returns whether it changed.
    pub fn set(&self) -> bool {
        self.store(true)
    }

    /// Clears the flag; wakes subscribers if it changed. Returns whether it changed.
    pub fn clear(&self) -> bool {
        self.store(false)
    }

    fn store(&self, v: bool) -> bool {
        let changed = self.0.set.swap(v, Ordering::SeqCst) != v;
        if changed {
            self.wake_all();
        }
        changed
    }

    /// Wakes every live subscriber and forgets the dead ones.
    pub fn wake_all(&self) {
        let mut subs = self.0.subscribers.lock().unwrap_or_else(|e| e.into_inner());
        subs.retain(|w| match w.upgrade() {
            Some(w) => {
                w.wake();
                true
            }
            None => false,
        });
    }

    /// Makes `waker` be woken whenever this flag changes.
    pub fn subscribe(&self, waker: &Arc<Waker>) {
        let mut subs = self.0.subscribers.lock().unwrap_or_else(|e| e.into_inner());
        if !subs
            .iter()
            .any(|w| w.upgrade().is_some_and(|w| Arc::ptr_eq(&w, waker)))
        {
            subs.push(Arc::downgrade(waker));
        }
    }

    /// Whether two handles are the same flag.
    pub fn same(&self, other: &Flag) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl fmt::Debug for Flag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Flag({}={})", self.0.name, self.is_set())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn set_wakes_a_parked_subscriber() {
        let f = Flag::new("t");
        let f2 = f.clone();
        let h = std::thread::spawn(move || {
            let w = Waker::for_current();
            f2.subscribe(&w);
            let t0 = Instant::now();
            while !f2.is_set() && t0.elapsed() < Duration::from_secs(5) {
                std::thread::park_timeout(Duration::from_secs(5));
            }
            f2.is_set()
        });
        std::thread::sleep(Duration::from_millis(20));
        assert!(f.set());
        assert!(!f.set(), "second set is not a change");
        assert!(h.join().unwrap());
    }

    #[test]
    fn dead_subscribers_are_dropped() {
        let f = Flag::new("t");
        {
            let w = Waker::new();
            f.subscribe(&w);
        }
        f.set();
        assert!(f.0.subscribers.lock().unwrap().is_empty());
    }
}
