//! Stop and waiting flags: an atomic word that wakes whoever waits on it.
//!
//! The seed shared `multiprocessing.Event`s; here a flag is one atomic, so a hot loop reads it
//! with a single load, plus a list of [`Waker`]s that are woken when it changes. The list is
//! only locked to subscribe and to change the flag, never to read it.
//!
//! Across processes ([`super::process`]) the word may live in a shared-memory region: such a
//! flag ([`Flag::shared`]) reads and writes the region's word, and after a change it rings the
//! other processes' bells ([`Remote`]); their relay threads wake their own subscribers. A flag
//! of this process that a child must see (the whole tree's pause flag, a waiting group) keeps
//! its own word and gets *mirrors*: words in regions it copies its value into on every change,
//! and from which it takes a change a child made (see `shm::Region`'s relay).

use std::fmt;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, Weak};

use super::wake::Waker;

/// Tells the other processes sharing a flag's word that it changed.
pub trait Remote: Send + Sync {
    fn changed(&self);
}

/// A shared-memory copy of a flag of this process.
struct Mirror {
    word: *const AtomicU32,
    remote: Arc<dyn Remote>,
    /// What this process last wrote there: a different value was written by another process.
    last: u32,
}

struct Inner {
    name: String,
    /// The word: `_own` below, or one in a shared-memory region that `remote` keeps mapped.
    word: *const AtomicU32,
    _own: Option<Box<AtomicU32>>,
    remote: Option<Arc<dyn Remote>>,
    subscribers: Mutex<Vec<Weak<Waker>>>,
    mirrors: Mutex<Vec<Mirror>>,
}

// SAFETY: `word` points at an atomic kept alive by `own` or by `remote` (which holds the
// mapping); mirror words likewise by their `remote`.
unsafe impl Send for Inner {}
unsafe impl Sync for Inner {}

/// A shared boolean with wake-ups on change. Cloning shares the same flag.
#[derive(Clone)]
pub struct Flag(Arc<Inner>);

impl Flag {
    /// A new, cleared flag. The name shows up in status and is how `harmony ctl` finds a group.
    pub fn new(name: impl Into<String>) -> Self {
        let own = Box::new(AtomicU32::new(0));
        Flag(Arc::new(Inner {
            name: name.into(),
            word: &*own,
            _own: Some(own),
            remote: None,
            subscribers: Mutex::new(Vec::new()),
            mirrors: Mutex::new(Vec::new()),
        }))
    }

    /// A flag whose word is `word` in shared memory; `remote` keeps it mapped and tells the
    /// other processes about changes.
    ///
    /// # Safety
    /// `word` must stay valid as long as `remote` is alive.
    pub unsafe fn shared(
        name: impl Into<String>,
        word: *const AtomicU32,
        remote: Arc<dyn Remote>,
    ) -> Self {
        Flag(Arc::new(Inner {
            name: name.into(),
            word,
            _own: None,
            remote: Some(remote),
            subscribers: Mutex::new(Vec::new()),
            mirrors: Mutex::new(Vec::new()),
        }))
    }

    /// Copies this flag into `word` now and on every change (see the module docs).
    ///
    /// # Safety
    /// `word` must stay valid as long as `remote` is alive.
    pub unsafe fn add_mirror(&self, word: *const AtomicU32, remote: Arc<dyn Remote>) {
        let mut m = self.0.mirrors.lock().unwrap_or_else(|e| e.into_inner());
        let v = self.word().load(Ordering::Acquire);
        // SAFETY: per this function's contract.
        unsafe { &*word }.store(v, Ordering::Release);
        m.push(Mirror {
            word,
            remote,
            last: v,
        });
    }

    /// The value another process wrote into mirror `word` since this process last wrote it,
    /// if any. Mirrors are written under the same lock, so a change of ours still on its way
    /// into the mirror is never mistaken for someone else's.
    pub fn foreign_write(&self, word: *const AtomicU32) -> Option<bool> {
        let mut m = self.0.mirrors.lock().unwrap_or_else(|e| e.into_inner());
        let x = m.iter_mut().find(|x| std::ptr::eq(x.word, word))?;
        // SAFETY: kept valid by `x.remote` (see `add_mirror`).
        let now = unsafe { &*x.word }.load(Ordering::Acquire);
        (now != x.last).then(|| {
            x.last = now;
            now != 0
        })
    }

    /// Takes the value another process wrote into a mirror of this flag.
    pub fn import(&self, v: bool) -> bool {
        self.store(v)
    }

    /// The word itself (for finding which region slot backs a flag).
    pub fn word_ptr(&self) -> *const AtomicU32 {
        self.0.word
    }

    #[inline]
    fn word(&self) -> &AtomicU32 {
        // SAFETY: see `Inner`'s Send/Sync.
        unsafe { &*self.0.word }
    }

    pub fn name(&self) -> &str {
        &self.0.name
    }

    /// One atomic load: cheap enough for every iteration of a hot loop.
    #[inline]
    pub fn is_set(&self) -> bool {
        self.word().load(Ordering::Acquire) != 0
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
        let changed = (self.word().swap(v as u32, Ordering::SeqCst) != 0) != v;
        if changed {
            {
                // Under the lock, and with the value as it is now: concurrent changes leave
                // every mirror with the last value.
                let mut m = self.0.mirrors.lock().unwrap_or_else(|e| e.into_inner());
                let now = self.word().load(Ordering::SeqCst);
                for x in m.iter_mut() {
                    // SAFETY: kept valid by `x.remote` (see `add_mirror`).
                    unsafe { &*x.word }.store(now, Ordering::SeqCst);
                    x.last = now;
                    x.remote.changed();
                }
            }
            if let Some(r) = &self.0.remote {
                r.changed();
            }
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

    struct Nobody;
    impl Remote for Nobody {
        fn changed(&self) {}
    }

    /// Issue #14: a change another process made to a mirror is taken; our own change on its
    /// way into the mirror is not mistaken for one (it would undo a pause).
    #[test]
    fn mirrors_tell_foreign_writes_from_our_own() {
        let f = Flag::new("all");
        let word = Box::new(AtomicU32::new(7));
        // SAFETY: `word` outlives the flag's use in this test.
        unsafe { f.add_mirror(&*word, Arc::new(Nobody)) };
        assert_eq!(
            word.load(Ordering::Relaxed),
            0,
            "the mirror takes our value"
        );
        assert_eq!(f.foreign_write(&*word), None);
        f.set();
        assert_eq!(word.load(Ordering::Relaxed), 1);
        assert_eq!(f.foreign_write(&*word), None, "our own write");
        word.store(0, Ordering::Relaxed); // a child clears it
        assert_eq!(f.foreign_write(&*word), Some(false));
        f.import(false);
        assert!(!f.is_set());
        assert_eq!(f.foreign_write(&*word), None);
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
