//! The record queue between one source and one sink: bounded, lock-free, never blocking the
//! producer.
//!
//! A full queue drops the new record and counts it, with the boot-clock time of the first and
//! last drop since the sink last looked, so the sink can write a dropout marker (PX4's logger
//! does the same). The consumer sleeps while its queues are empty and is woken by the next
//! record: the producer rings the consumer's [`Waker`] only when the consumer has said it is
//! going to sleep (an eventcount), so a busy consumer costs the producer no system call.
//!
//! A [`Producer`] or [`Consumer`] may also be one end of a shared-memory ring between two
//! processes ([`super::ring`], made by a [`super::shm::Region`]): same contract, same methods,
//! so a source or sink does not know which kind it has.

use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering, fence};

use crossbeam_queue::ArrayQueue;

use super::ring::{ShmConsumer, ShmProducer};
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
    (
        Producer {
            imp: ProducerImpl::Local(s.clone()),
        },
        Consumer {
            imp: ConsumerImpl::Local(s),
        },
    )
}

/// The source's end. Not `Clone`: one producer per queue keeps its counter a plain store.
pub struct Producer<T> {
    imp: ProducerImpl<T>,
}

enum ProducerImpl<T> {
    Local(Arc<Shared<T>>),
    Shm(Box<ShmProducer<T>>),
}

impl<T> Producer<T> {
    pub(crate) fn from_shm(p: ShmProducer<T>) -> Self {
        Producer {
            imp: ProducerImpl::Shm(Box::new(p)),
        }
    }

    /// Offers a record. Never blocks: a full queue drops it, counts it, and returns `false`.
    #[inline]
    pub fn push(&self, item: T) -> bool {
        match &self.imp {
            ProducerImpl::Local(_) => match self.try_push(item) {
                Ok(()) => true,
                Err(_) => {
                    self.count_drop();
                    false
                }
            },
            ProducerImpl::Shm(p) => p.push(item),
        }
    }

    /// Offers a record; a full queue hands it back without counting a drop (for callers that
    /// retry, such as benchmarks of the transport itself).
    #[inline]
    pub fn try_push(&self, item: T) -> Result<(), T> {
        match &self.imp {
            ProducerImpl::Local(s) => {
                s.q.push(item)?;
                let a = &s.accepted.0;
                a.store(a.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
                s.bell.0.ring();
                Ok(())
            }
            ProducerImpl::Shm(p) => p.try_push(item),
        }
    }

    #[cold]
    fn count_drop(&self) {
        match &self.imp {
            ProducerImpl::Local(s) => {
                let now = boot_ns();
                s.dropped.0.fetch_add(1, Ordering::Relaxed);
                if s.drops_unreported.fetch_add(1, Ordering::AcqRel) == 0 {
                    s.drop_first_ns.store(now, Ordering::Relaxed);
                }
                s.drop_last_ns.store(now, Ordering::Release);
            }
            ProducerImpl::Shm(p) => p.count_drop(),
        }
    }

    pub fn name(&self) -> &str {
        match &self.imp {
            ProducerImpl::Local(s) => &s.name,
            ProducerImpl::Shm(p) => p.name(),
        }
    }

    pub fn accepted(&self) -> u64 {
        match &self.imp {
            ProducerImpl::Local(s) => s.accepted.0.load(Ordering::Relaxed),
            ProducerImpl::Shm(p) => p.accepted(),
        }
    }

    pub fn dropped(&self) -> u64 {
        match &self.imp {
            ProducerImpl::Local(s) => s.dropped.0.load(Ordering::Relaxed),
            ProducerImpl::Shm(p) => p.dropped(),
        }
    }

    pub fn len(&self) -> usize {
        match &self.imp {
            ProducerImpl::Local(s) => s.q.len(),
            ProducerImpl::Shm(p) => p.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn capacity(&self) -> usize {
        match &self.imp {
            ProducerImpl::Local(s) => s.q.capacity(),
            ProducerImpl::Shm(p) => p.capacity(),
        }
    }
}

/// Publishes a queue's fill and drops as metrics of the producing processor
/// (`queue.<sink>.len`, `.capacity`, `.dropped`), for `harmony top` and the state files.
pub struct QueueGauge {
    len: super::cells::Counter,
    dropped: super::cells::Counter,
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
    imp: ConsumerImpl<T>,
}

enum ConsumerImpl<T> {
    Local(Arc<Shared<T>>),
    Shm(Box<ShmConsumer<T>>),
}

impl<T> Consumer<T> {
    pub(crate) fn from_shm(c: ShmConsumer<T>) -> Self {
        Consumer {
            imp: ConsumerImpl::Shm(Box::new(c)),
        }
    }

    /// Registers the waker rung when a record arrives while the consumer sleeps.
    pub fn set_waker(&self, w: &Arc<Waker>) {
        match &self.imp {
            ConsumerImpl::Local(s) => s.bell.0.set_waker(w),
            ConsumerImpl::Shm(c) => c.set_waker(w),
        }
    }

    #[inline]
    pub fn pop(&self) -> Option<T> {
        match &self.imp {
            ConsumerImpl::Local(s) => s.q.pop(),
            ConsumerImpl::Shm(c) => c.pop(),
        }
    }

    /// Announces that the consumer is about to sleep; returns `true` if the queue is still
    /// empty (sleep now), `false` if a record slipped in (drain again). Call for every queue
    /// the consumer drains, then park; the producer's next push wakes it.
    pub fn sleep_ready(&self) -> bool {
        match &self.imp {
            ConsumerImpl::Local(s) => s.bell.0.sleep_ready(|| s.q.is_empty()),
            ConsumerImpl::Shm(c) => c.sleep_ready(),
        }
    }

    /// Drops since the last call, or `None` when there were none.
    pub fn take_drops(&self) -> Option<DropReport> {
        match &self.imp {
            ConsumerImpl::Local(s) => {
                let n = s.drops_unreported.swap(0, Ordering::AcqRel);
                (n > 0).then(|| DropReport {
                    count: n,
                    first_ns: s.drop_first_ns.load(Ordering::Relaxed),
                    last_ns: s.drop_last_ns.load(Ordering::Acquire),
                })
            }
            ConsumerImpl::Shm(c) => c.take_drops(),
        }
    }

    pub fn name(&self) -> &str {
        match &self.imp {
            ConsumerImpl::Local(s) => &s.name,
            ConsumerImpl::Shm(c) => c.name(),
        }
    }

    pub fn len(&self) -> usize {
        match &self.imp {
            ConsumerImpl::Local(s) => s.q.len(),
            ConsumerImpl::Shm(c) => c.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        match &self.imp {
            ConsumerImpl::Local(s) => s.q.is_empty(),
            ConsumerImpl::Shm(c) => c.is_empty(),
        }
    }

    pub fn capacity(&self) -> usize {
        match &self.imp {
            ConsumerImpl::Local(s) => s.q.capacity(),
            ConsumerImpl::Shm(c) => c.capacity(),
        }
    }

    /// Records the producer handed over (pushed successfully) so far.
    pub fn accepted(&self) -> u64 {
        match &self.imp {
            ConsumerImpl::Local(s) => s.accepted.0.load(Ordering::Relaxed),
            ConsumerImpl::Shm(c) => c.accepted(),
        }
    }

    /// Records dropped because the queue was full, in total.
    pub fn dropped(&self) -> u64 {
        match &self.imp {
            ConsumerImpl::Local(s) => s.dropped.0.load(Ordering::Relaxed),
            ConsumerImpl::Shm(c) => c.dropped(),
        }
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
