//! The record queue between one source and one sink: bounded, lock-free, never blocking the
//! producer.
//!
//! A full queue drops the new record and counts it, with the boot-clock time of the first and
//! last drop since the sink last looked, so the sink can write a dropout marker (PX4's logger
//! does the same). The consumer sleeps while its queues are empty and is woken by the next
//! record: the producer rings the consumer's [`Waker`] only when the consumer has said it is
//! going to sleep (an eventcount), so a busy consumer costs the producer no system call.

use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering, fence};

use crossbeam_queue::ArrayQueue;

use super::wake::Waker;
use crate::clock::boot_ns;

/// An eventcount: the producer side rings, the consumer side announces sleep.
#[derive(Default)]
pub struct Doorbell {
    sleeping: AtomicBool,
    waker: OnceLock<Arc<Waker>>,
}

impl Doorbell {
    pub fn set_waker(&self, w: &Arc<Waker>) {
        let _ = self.waker.set(w.clone());
    }

    /// Called after publishing an item: wakes the consumer if it announced sleep.
    #[inline]
    pub fn ring(&self) {
        // Pairs with the fence in `sleep_ready`: either the consumer sees the item, or we see
        // that it sleeps and wake it.
        fence(Ordering::SeqCst);
        if self.sleeping.load(Ordering::Relaxed)
            && self.sleeping.swap(false, Ordering::AcqRel)
            && let Some(w) = self.waker.get()
        {
            w.wake();
        }
    }

    /// Announces sleep; returns `true` if `is_empty` still holds (park now), `false` if an item
    /// slipped in (drain again).
    pub fn sleep_ready(&self, is_empty: impl FnOnce() -> bool) -> bool {
        self.sleeping.store(true, Ordering::Relaxed);
        fence(Ordering::SeqCst);
        if is_empty() {
            true
        } else {
            self.sleeping.store(false, Ordering::Relaxed);
            false
        }
    }
}

/// Pads a value to its own cache line, so the producer's and the consumer's counters do not
/// share one.
#[repr(align(128))]
#[derive(Default)]
struct Padded<T>(T);

struct Shared<T> {
    q: ArrayQueue<T>,
    name: String,
    /// Written by the producer only.
    accepted: Padded<AtomicU64>,
    dropped: Padded<AtomicU64>,
    drops_unreported: AtomicU64,
    drop_first_ns: AtomicU64,
    drop_last_ns: AtomicU64,
    bell: Padded<Doorbell>,
}

/// Creates a queue of `capacity` records; `name` is "source->sink" for reports.
pub fn queue<T>(capacity: usize, name: impl Into<String>) -> (Producer<T>, Consumer<T>) {
    let s = Arc::new(Shared {
        q: ArrayQueue::new(capacity.max(1)),
        name: name.into(),
        accepted: Padded::default(),
        dropped: Padded::default(),
        drops_unreported: AtomicU64::new(0),
        drop_first_ns: AtomicU64::new(0),
        drop_last_ns: AtomicU64::new(0),
        bell: Padded::default(),
    });
    (Producer { s: s.clone() }, Consumer { s })
}

/// The source's end. Not `Clone`: one producer per queue keeps its counter a plain store.
pub struct Producer<T> {
    s: Arc<Shared<T>>,
}

impl<T> Producer<T> {
    /// Offers a record. Never blocks: a full queue drops it, counts it, and returns `false`.
    #[inline]
    pub fn push(&self, item: T) -> bool {
        match self.try_push(item) {
            Ok(()) => true,
            Err(_) => {
                self.count_drop();
                false
            }
        }
    }

    /// Offers a record; a full queue hands it back without counting a drop (for callers that
    /// retry, such as benchmarks of the transport itself).
    #[inline]
    pub fn try_push(&self, item: T) -> Result<(), T> {
        let s = &*self.s;
        s.q.push(item)?;
        let a = &s.accepted.0;
        a.store(a.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
        s.bell.0.ring();
        Ok(())
    }

    #[cold]
    fn count_drop(&self) {
        let s = &*self.s;
        let now = boot_ns();
        s.dropped.0.fetch_add(1, Ordering::Relaxed);
        if s.drops_unreported.fetch_add(1, Ordering::AcqRel) == 0 {
            s.drop_first_ns.store(now, Ordering::Relaxed);
        }
        s.drop_last_ns.store(now, Ordering::Release);
    }

    pub fn name(&self) -> &str {
        &self.s.name
    }

    pub fn accepted(&self) -> u64 {
        self.s.accepted.0.load(Ordering::Relaxed)
    }

    pub fn dropped(&self) -> u64 {
        self.s.dropped.0.load(Ordering::Relaxed)
    }

    pub fn len(&self) -> usize {
        self.s.q.len()
    }

    pub fn is_empty(&self) -> bool {
        self.s.q.is_empty()
    }

    pub fn capacity(&self) -> usize {
        self.s.q.capacity()
    }
}

/// Publishes a queue's fill and drops as metrics of the producing processor
/// (`queue.<sink>.len`, `.capacity`, `.dropped`), for `harmony top` and the state files.
pub struct QueueGauge {
    len: Arc<AtomicU64>,
    dropped: Arc<AtomicU64>,
}

impl QueueGauge {
    pub fn new<T>(ctx: &super::Context, sink: &str, p: &Producer<T>) -> Self {
        ctx.metric(&format!("queue.{sink}.capacity"))
            .store(p.capacity() as u64, Ordering::Relaxed);
        QueueGauge {
            len: ctx.metric(&format!("queue.{sink}.len")),
            dropped: ctx.metric(&format!("queue.{sink}.dropped")),
        }
    }

    /// Call once per batch, not per record.
    #[inline]
    pub fn update<T>(&self, p: &Producer<T>) {
        self.len.store(p.len() as u64, Ordering::Relaxed);
        self.dropped.store(p.dropped(), Ordering::Relaxed);
    }
}

/// Drops on one queue since the sink last asked: what a dropout marker records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DropReport {
    pub count: u64,
    /// Boot-clock nanoseconds of the first and the last drop in this run of drops.
    pub first_ns: u64,
    pub last_ns: u64,
}

/// The sink's end.
pub struct Consumer<T> {
    s: Arc<Shared<T>>,
}

impl<T> Consumer<T> {
    /// Registers the waker rung when a record arrives while the consumer sleeps.
    pub fn set_waker(&self, w: &Arc<Waker>) {
        self.s.bell.0.set_waker(w);
    }

    #[inline]
    pub fn pop(&self) -> Option<T> {
        self.s.q.pop()
    }

    /// Announces that the consumer is about to sleep; returns `true` if the queue is still
    /// empty (sleep now), `false` if a record slipped in (drain again). Call for every queue
    /// the consumer drains, then park; the producer's next push wakes it.
    pub fn sleep_ready(&self) -> bool {
        self.s.bell.0.sleep_ready(|| self.s.q.is_empty())
    }

    /// Drops since the last call, or `None` when there were none.
    pub fn take_drops(&self) -> Option<DropReport> {
        let s = &*self.s;
        let n = s.drops_unreported.swap(0, Ordering::AcqRel);
        (n > 0).then(|| DropReport {
            count: n,
            first_ns: s.drop_first_ns.load(Ordering::Relaxed),
            last_ns: s.drop_last_ns.load(Ordering::Acquire),
        })
    }

    pub fn name(&self) -> &str {
        &self.s.name
    }

    pub fn len(&self) -> usize {
        self.s.q.len()
    }

    pub fn is_empty(&self) -> bool {
        self.s.q.is_empty()
    }

    pub fn capacity(&self) -> usize {
        self.s.q.capacity()
    }

    /// Records the producer handed over (pushed successfully) so far.
    pub fn accepted(&self) -> u64 {
        self.s.accepted.0.load(Ordering::Relaxed)
    }

    /// Records dropped because the queue was full, in total.
    pub fn dropped(&self) -> u64 {
        self.s.dropped.0.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn full_queue_drops_and_reports() {
        let (p, c) = queue::<u32>(2, "t");
        assert!(p.push(1));
        assert!(p.push(2));
        assert!(!p.push(3));
        assert!(!p.push(4));
        let r = c.take_drops().unwrap();
        assert_eq!(r.count, 2);
        assert!(r.last_ns >= r.first_ns);
        assert_eq!(c.take_drops(), None);
        assert_eq!((c.accepted(), c.dropped()), (2, 2));
        assert_eq!(c.pop(), Some(1));
    }

    #[test]
    fn sleeping_consumer_is_woken_by_a_push() {
        let (p, c) = queue::<u32>(8, "t");
        let h = std::thread::spawn(move || {
            let w = Waker::for_current();
            c.set_waker(&w);
            let t0 = Instant::now();
            loop {
                if let Some(v) = c.pop() {
                    return (v, t0.elapsed());
                }
                if c.sleep_ready() {
                    std::thread::park_timeout(Duration::from_secs(10));
                }
            }
        });
        std::thread::sleep(Duration::from_millis(50));
        p.push(7);
        let (v, took) = h.join().unwrap();
        assert_eq!(v, 7);
        assert!(
            took < Duration::from_secs(5),
            "woken by the push, not the timeout"
        );
    }
}
