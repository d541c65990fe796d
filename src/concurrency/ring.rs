//! Record rings in shared memory: the process-crossing twin of [`super::queue`], with the same
//! contract. Fixed-size `Copy` records ([`Plain`]), one producer, one consumer; the producer
//! never blocks (a full ring drops the record and counts it, with the boot-clock time of the
//! first and last drop for the sink's dropout marker); the consumer sleeps until woken.
//!
//! The ring is a classic single-producer single-consumer array: the producer writes a slot, then
//! publishes it by storing `tail` (release); the consumer reads it and frees it by storing
//! `head`. Those two stores are the only commit points, so a producer process killed at any
//! instruction leaves every record it had published intact and nothing half-written visible,
//! and a producer restarted in a new process simply continues from `tail`. The producer reads
//! `head` only when its cached copy says the ring is full, so a busy ring costs each side one
//! shared cache line write per record.
//!
//! Waking crosses the process boundary through the region's bells: a consumer announces sleep in
//! the ring; a producer that sees it marks the ring rung and rings the bell of the consumer's
//! process; that process's relay thread wakes the consumer's [`Waker`]. As in-process, a
//! consumer that is busy costs the producer no system call.
//!
//! A ring shared with a process that is not trusted (the sandboxed radio child) must carry
//! records for which every bit pattern is valid (integers and byte arrays: no `bool`, `enum` or
//! `Option`), and the consumer validates what it reads; indices that make no sense are treated
//! as an empty ring, never as an out-of-bounds access.

use std::marker::PhantomData;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering, fence};
use std::sync::{Arc, Mutex, Weak};

use super::queue::DropReport;
use super::shm::{Mapping, R_RING};
use super::wake::Waker;
use crate::clock::boot_ns;

/// Records that may be copied into shared memory and read back in another process of the same
/// binary: `Copy`, no pointers or references (addresses differ between processes).
///
/// # Safety
/// The type must hold no pointers, references or handles, and must be valid for the bit
/// patterns its own code writes. For rings fed by an untrusted process it must be valid for
/// every bit pattern.
pub unsafe trait Plain: Copy + Send + 'static {}

macro_rules! plain {
    ($($t:ty),*) => { $(unsafe impl Plain for $t {})* };
}
plain!(u8, u16, u32, u64, i8, i16, i32, i64, usize, isize, f32, f64);
unsafe impl<T: Plain, const N: usize> Plain for [T; N] {}
unsafe impl<A: Plain, B: Plain> Plain for (A, B) {}

/// The shared state of one ring; the records follow it.
#[repr(C, align(128))]
pub(crate) struct RingHeader {
    // Written by the producer. `tail` counts every record ever published: the ring's
    // `accepted` count is the tail itself, exact even if the producer was killed mid-push.
    tail: AtomicU64,
    dropped: AtomicU64,
    drops_unreported: AtomicU64,
    drop_first_ns: AtomicU64,
    drop_last_ns: AtomicU64,
    _p1: [u8; 88],
    // Written by the consumer.
    head: AtomicU64,
    _p2: [u8; 120],
    // The doorbell.
    sleeping: AtomicU32,
    rung: AtomicU32,
    /// Bell index (+1) of the consumer's process; 0 before a consumer announced itself.
    consumer_bell: AtomicU32,
    _p3: [u8; 116],
}

/// Bytes a ring of `cap` records of `rec` bytes occupies (header included).
pub(crate) fn ring_bytes(cap: u64, rec: usize) -> usize {
    std::mem::size_of::<RingHeader>() + cap as usize * rec
}

/// A ring located in a mapping.
pub(crate) struct RawRing {
    hdr: *const RingHeader,
    data: *mut u8,
    mask: u64,
    cap: u64,
    map: Arc<Mapping>,
    name: String,
}

// SAFETY: the pointers target the mapping that `map` keeps alive; access follows the SPSC
// protocol described in the module docs.
unsafe impl Send for RawRing {}
unsafe impl Sync for RawRing {}

impl RawRing {
    /// # Safety
    /// `offset` must point at a ring of `cap` (a power of two) records of `size_of::<T>()`
    /// bytes inside `map`, header aligned to 128.
    pub(crate) unsafe fn new(map: Arc<Mapping>, offset: usize, cap: u64, name: String) -> Self {
        let base = map.base();
        RawRing {
            // SAFETY: per the contract.
            hdr: unsafe { base.add(offset) } as *const RingHeader,
            data: unsafe { base.add(offset + std::mem::size_of::<RingHeader>()) },
            mask: cap - 1,
            cap,
            map,
            name,
        }
    }

    #[inline]
    fn h(&self) -> &RingHeader {
        // SAFETY: see `new`.
        unsafe { &*self.hdr }
    }
}

/// The producing end of a shared-memory ring (one per ring at a time).
pub struct ShmProducer<T> {
    raw: RawRing,
    /// This side's copy of `head`; only ever behind the real one.
    head_cache: AtomicU64,
    _t: PhantomData<T>,
}

/// The consuming end of a shared-memory ring.
pub struct ShmConsumer<T> {
    raw: RawRing,
    tail_cache: AtomicU64,
    my_bell: u32,
    wakers: Arc<Mutex<Vec<ConsumerReg>>>,
    index: usize,
    _t: PhantomData<T>,
}

/// A consumer's waker, woken by this process's relay when the ring is rung.
pub(crate) struct ConsumerReg {
    pub(crate) index: usize,
    pub(crate) hdr: *const RingHeader,
    pub(crate) waker: Weak<Waker>,
    pub(crate) _map: Arc<Mapping>,
}

// SAFETY: `hdr` points into the mapping `_map` keeps alive.
unsafe impl Send for ConsumerReg {}

impl ConsumerReg {
    /// Wakes the consumer if its ring was rung.
    pub(crate) fn wake_if_rung(&self) {
        // SAFETY: see the Send impl.
        let h = unsafe { &*self.hdr };
        if h.rung.swap(0, Ordering::AcqRel) != 0
            && let Some(w) = self.waker.upgrade()
        {
            w.wake();
        }
    }
}

impl<T: Plain> ShmProducer<T> {
    /// # Safety
    /// As [`RawRing::new`], with records of type `T`.
    pub(crate) unsafe fn new(raw: RawRing) -> Self {
        ShmProducer {
            raw,
            head_cache: AtomicU64::new(0),
            _t: PhantomData,
        }
    }
}

impl<T> ShmProducer<T> {
    /// Offers a record; a full ring hands it back without counting a drop.
    #[inline]
    pub fn try_push(&self, item: T) -> Result<(), T> {
        let h = self.raw.h();
        let t = h.tail.load(Ordering::Relaxed);
        let mut head = self.head_cache.load(Ordering::Relaxed);
        if t.wrapping_sub(head) >= self.raw.cap {
            head = h.head.load(Ordering::Acquire);
            self.head_cache.store(head, Ordering::Relaxed);
            if t.wrapping_sub(head) >= self.raw.cap {
                // Full (or a consumer that ran past the tail: treated the same).
                return Err(item);
            }
        }
        let slot = (t & self.raw.mask) as usize;
        // SAFETY: the slot is inside the ring and not readable by the consumer until `tail`
        // moves past it; `T: Plain` (checked when the ring was attached).
        unsafe {
            std::ptr::write(
                self.raw.data.add(slot * std::mem::size_of::<T>()) as *mut T,
                item,
            )
        };
        h.tail.store(t.wrapping_add(1), Ordering::Release);
        self.ring();
        Ok(())
    }

    /// Offers a record. Never blocks: a full ring drops it, counts it, and returns `false`.
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

    #[inline]
    fn ring(&self) {
        let h = self.raw.h();
        // Pairs with the fence in `sleep_ready`: either the consumer sees the record, or we see
        // that it sleeps and wake it.
        fence(Ordering::SeqCst);
        if h.sleeping.load(Ordering::Relaxed) != 0 && h.sleeping.swap(0, Ordering::AcqRel) != 0 {
            h.rung.store(1, Ordering::Release);
            let b = h.consumer_bell.load(Ordering::Acquire);
            if b > 0 {
                self.raw.map.ring_bell(b - 1, R_RING);
            }
        }
    }

    #[cold]
    pub(crate) fn count_drop(&self) {
        let h = self.raw.h();
        let now = boot_ns();
        h.dropped.fetch_add(1, Ordering::Relaxed);
        if h.drops_unreported.fetch_add(1, Ordering::AcqRel) == 0 {
            h.drop_first_ns.store(now, Ordering::Relaxed);
        }
        h.drop_last_ns.store(now, Ordering::Release);
    }

    pub fn name(&self) -> &str {
        &self.raw.name
    }

    pub fn accepted(&self) -> u64 {
        self.raw.h().tail.load(Ordering::Acquire)
    }

    pub fn dropped(&self) -> u64 {
        self.raw.h().dropped.load(Ordering::Relaxed)
    }

    pub fn len(&self) -> usize {
        let h = self.raw.h();
        let n = h
            .tail
            .load(Ordering::Relaxed)
            .wrapping_sub(h.head.load(Ordering::Relaxed));
        n.min(self.raw.cap) as usize
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn capacity(&self) -> usize {
        self.raw.cap as usize
    }
}

impl<T: Plain> ShmConsumer<T> {
    /// # Safety
    /// As [`RawRing::new`], with records of type `T`.
    pub(crate) unsafe fn new(
        raw: RawRing,
        index: usize,
        my_bell: u32,
        wakers: Arc<Mutex<Vec<ConsumerReg>>>,
    ) -> Self {
        ShmConsumer {
            tail_cache: AtomicU64::new(raw.h().tail.load(Ordering::Acquire)),
            raw,
            my_bell,
            wakers,
            index,
            _t: PhantomData,
        }
    }
}

impl<T> ShmConsumer<T> {
    /// Registers the waker rung when a record arrives while the consumer sleeps.
    pub fn set_waker(&self, w: &Arc<Waker>) {
        let mut regs = self.wakers.lock().unwrap_or_else(|e| e.into_inner());
        regs.retain(|r| r.index != self.index);
        regs.push(ConsumerReg {
            index: self.index,
            hdr: self.raw.hdr,
            waker: Arc::downgrade(w),
            _map: self.raw.map.clone(),
        });
        self.raw
            .h()
            .consumer_bell
            .store(self.my_bell + 1, Ordering::Release);
    }

    #[inline]
    pub fn pop(&self) -> Option<T> {
        let h = self.raw.h();
        let hd = h.head.load(Ordering::Relaxed);
        let mut t = self.tail_cache.load(Ordering::Relaxed);
        if hd == t {
            t = h.tail.load(Ordering::Acquire);
            self.tail_cache.store(t, Ordering::Relaxed);
            if hd == t {
                return None;
            }
        }
        if t.wrapping_sub(hd) > self.raw.cap {
            // Indices no producer following the protocol can make: give up what is there.
            h.head.store(t, Ordering::Release);
            return None;
        }
        let slot = (hd & self.raw.mask) as usize;
        // SAFETY: published by the producer's release store of `tail`, which we acquired.
        let v = unsafe {
            std::ptr::read(self.raw.data.add(slot * std::mem::size_of::<T>()) as *const T)
        };
        h.head.store(hd.wrapping_add(1), Ordering::Release);
        Some(v)
    }

    /// Announces that the consumer is about to sleep; `true` if the ring is still empty.
    pub fn sleep_ready(&self) -> bool {
        let h = self.raw.h();
        h.sleeping.store(1, Ordering::Relaxed);
        fence(Ordering::SeqCst);
        if self.is_empty() {
            true
        } else {
            h.sleeping.store(0, Ordering::Relaxed);
            false
        }
    }

    /// Drops since the last call, or `None` when there were none.
    pub fn take_drops(&self) -> Option<DropReport> {
        let h = self.raw.h();
        let n = h.drops_unreported.swap(0, Ordering::AcqRel);
        (n > 0).then(|| DropReport {
            count: n,
            first_ns: h.drop_first_ns.load(Ordering::Relaxed),
            last_ns: h.drop_last_ns.load(Ordering::Acquire),
        })
    }

    pub fn name(&self) -> &str {
        &self.raw.name
    }

    pub fn len(&self) -> usize {
        let h = self.raw.h();
        let n = h
            .tail
            .load(Ordering::Acquire)
            .wrapping_sub(h.head.load(Ordering::Relaxed));
        n.min(self.raw.cap) as usize
    }

    pub fn is_empty(&self) -> bool {
        let h = self.raw.h();
        h.head.load(Ordering::Relaxed) == h.tail.load(Ordering::Acquire)
    }

    pub fn capacity(&self) -> usize {
        self.raw.cap as usize
    }

    pub fn accepted(&self) -> u64 {
        self.raw.h().tail.load(Ordering::Acquire)
    }

    pub fn dropped(&self) -> u64 {
        self.raw.h().dropped.load(Ordering::Relaxed)
    }
}
