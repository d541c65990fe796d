//! The fixed layout of a processor's live record: one [`Cells`] per processor, on the heap for a
//! processor of this process, or in a shared-memory region ([`super::shm`]) for a processor of a
//! process subtree, read and written by both processes.
//!
//! Everything in it is an atomic or a fixed-size array of atomics, so all-zero bytes are a valid
//! empty record (a fresh memfd page is zero), two processes can use it at once without locks on
//! the hot paths, and a process that dies half-way through a write leaves nothing worse than one
//! stale value:
//!
//! * counters and stamps are single atomics;
//! * text (the note, the exit cause, names) is a [`Text`]: a sequence-counted copy that a reader
//!   retries when a writer was in the middle, written under a [`ShmLock`] whose holder, if it
//!   died, is taken over;
//! * metrics are a table of name + value slots filled under a lock and then only updated by
//!   atomic stores, so a [`Counter`] is a plain pointer to its `AtomicU64`;
//! * the mailbox is a single-consumer ring of fixed signal records, producers serialised by a
//!   [`ShmLock`]; a full mailbox refuses (and counts) rather than waits.
//!
//! Nothing read from here is trusted beyond its bounds: lengths are clamped, text is checked as
//! UTF-8, enumerations fall back to a default. A sandboxed child can scribble over its own region;
//! the parent then shows nonsense for that child, but never panics or reads out of bounds.

use std::fmt;
use std::ops::Deref;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering, fence};

use super::signal::{ARG_MAX, NAME_MAX, Origin, Signal};

/// The current process's id, cached (no fork after start, so it never changes).
pub fn my_pid() -> u32 {
    static PID: AtomicU32 = AtomicU32::new(0);
    match PID.load(Ordering::Relaxed) {
        0 => {
            let p = std::process::id();
            PID.store(p, Ordering::Relaxed);
            p
        }
        p => p,
    }
}

/// Whether process `pid` still exists (a zombie counts as gone for lock take-over purposes only
/// once reaped, which its parent does promptly).
pub fn pid_alive(pid: u32) -> bool {
    if pid == 0 || pid > i32::MAX as u32 {
        return false;
    }
    // Signal 0 checks existence and permission without sending anything.
    match nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), None) {
        Ok(()) => true,
        Err(nix::errno::Errno::EPERM) => true,
        Err(_) => false,
    }
}

/// A lock that works across processes: the holder's pid in one word. Never blocks for long: a
/// holder that died is taken over, and a caller that cannot get it within its spin budget is
/// told so (and drops what it wanted to write, counting it where that matters).
#[repr(C)]
#[derive(Default)]
pub struct ShmLock {
    owner: AtomicU32,
}

/// Held [`ShmLock`]; released on drop.
pub struct ShmGuard<'a> {
    lock: &'a ShmLock,
}

impl Drop for ShmGuard<'_> {
    fn drop(&mut self) {
        self.lock.owner.store(0, Ordering::Release);
    }
}

impl ShmLock {
    /// Takes the lock, spinning (and yielding) at most `tries` rounds.
    pub fn lock(&self, tries: u32) -> Option<ShmGuard<'_>> {
        let me = my_pid();
        for i in 0..tries.max(1) {
            match self
                .owner
                .compare_exchange(0, me, Ordering::Acquire, Ordering::Relaxed)
            {
                Ok(_) => return Some(ShmGuard { lock: self }),
                Err(holder) => {
                    if i % 64 == 63 {
                        if holder != me
                            && !pid_alive(holder)
                            && self
                                .owner
                                .compare_exchange(holder, me, Ordering::Acquire, Ordering::Relaxed)
                                .is_ok()
                        {
                            return Some(ShmGuard { lock: self });
                        }
                        std::thread::yield_now();
                    } else {
                        std::hint::spin_loop();
                    }
                }
            }
        }
        None
    }
}

/// Spin rounds for locks taken off the hot paths (notes, metrics, mail, log records).
pub const LOCK_TRIES: u32 = 64 * 200;

/// Text of at most `W * 8` bytes, safe to read while another process writes it.
#[repr(C)]
pub struct Text<const W: usize> {
    lock: ShmLock,
    seq: AtomicU32,
    len: AtomicU32,
    words: [AtomicU64; W],
}

impl<const W: usize> Default for Text<W> {
    fn default() -> Self {
        Text {
            lock: ShmLock::default(),
            seq: AtomicU32::new(0),
            len: AtomicU32::new(0),
            words: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

/// Cuts `s` to at most `max` bytes on a character boundary.
pub fn cut(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

fn store_words(words: &[AtomicU64], bytes: &[u8]) {
    for (i, w) in words.iter().enumerate() {
        let mut b = [0u8; 8];
        let start = i * 8;
        if start < bytes.len() {
            let end = (start + 8).min(bytes.len());
            b[..end - start].copy_from_slice(&bytes[start..end]);
        }
        w.store(u64::from_le_bytes(b), Ordering::Relaxed);
    }
}

fn load_words(words: &[AtomicU64], out: &mut [u8]) {
    for (i, w) in words.iter().enumerate() {
        let b = w.load(Ordering::Relaxed).to_le_bytes();
        let start = i * 8;
        if start >= out.len() {
            break;
        }
        let end = (start + 8).min(out.len());
        out[start..end].copy_from_slice(&b[..end - start]);
    }
}

impl<const W: usize> Text<W> {
    pub const CAPACITY: usize = W * 8;

    /// Replaces the text (cut to capacity). Returns false when the lock could not be had.
    pub fn set(&self, s: &str) -> bool {
        let Some(_g) = self.lock.lock(LOCK_TRIES) else {
            return false;
        };
        let s = cut(s, Self::CAPACITY);
        // Odd while writing; a writer that died left it odd, which this fixes.
        let odd = self.seq.load(Ordering::Relaxed) | 1;
        self.seq.store(odd, Ordering::Relaxed);
        fence(Ordering::Release);
        self.len.store(s.len() as u32, Ordering::Relaxed);
        store_words(&self.words, s.as_bytes());
        self.seq.store(odd.wrapping_add(1), Ordering::Release);
        true
    }

    /// Writes into `out` (at least `CAPACITY` bytes); returns the length, or `None` when a
    /// writer kept changing it.
    fn read_into(&self, out: &mut [u8]) -> Option<usize> {
        for _ in 0..1000 {
            let s1 = self.seq.load(Ordering::Acquire);
            if s1 & 1 == 1 {
                std::hint::spin_loop();
                continue;
            }
            let len = (self.len.load(Ordering::Relaxed) as usize).min(Self::CAPACITY);
            load_words(&self.words, &mut out[..Self::CAPACITY]);
            fence(Ordering::Acquire);
            if self.seq.load(Ordering::Relaxed) == s1 {
                return Some(len);
            }
        }
        None
    }

    /// The text; invalid UTF-8 (a corrupted region) shows up as replacement characters.
    pub fn get(&self) -> String {
        let mut buf = vec![0u8; Self::CAPACITY];
        match self.read_into(&mut buf) {
            Some(n) => String::from_utf8_lossy(&buf[..n]).into_owned(),
            None => String::new(),
        }
    }

    /// Whether the text equals `s` (without allocating when it obviously does not).
    pub fn is(&self, s: &str) -> bool {
        let s = cut(s, Self::CAPACITY);
        if self.len.load(Ordering::Relaxed) as usize != s.len() {
            return false;
        }
        self.get() == s
    }
}

/// Longest note shown beside a processor's state.
pub const NOTE_WORDS: usize = 25;
/// Metric slots per processor.
pub const METRICS_MAX: usize = 64;
/// Longest metric name (bytes).
pub const METRIC_NAME_MAX: usize = 40;
/// How many signals a mailbox holds before further ones are refused.
pub const MAILBOX_CAPACITY: usize = 16;

/// One named counter.
#[repr(C)]
pub struct MetricSlot {
    name_len: AtomicU32,
    name: [AtomicU64; METRIC_NAME_MAX / 8],
    value: AtomicU64,
}

/// One signal in a mailbox.
#[repr(C)]
struct SigSlot {
    /// name length | arg length << 8 | origin << 16
    lens: AtomicU32,
    name: [AtomicU64; NAME_MAX / 8],
    arg: [AtomicU64; ARG_MAX / 8],
}

/// A processor's mailbox: many producers (under `lock`), one consumer.
#[repr(C)]
struct Mailbox {
    lock: ShmLock,
    head: AtomicU64,
    tail: AtomicU64,
    slots: [SigSlot; MAILBOX_CAPACITY],
}

/// The live record of one processor (see the module docs). All zero is a valid empty record.
#[repr(C)]
pub struct Cells {
    // Identity, written when a shared-memory slot is claimed (unused on the heap).
    /// 0 free, 1 being filled, 2 ready.
    pub(crate) used: AtomicU32,
    pub(crate) kind: AtomicU32,
    pub(crate) name: Text<6>,
    pub(crate) path: Text<16>,
    pub(crate) accepts: Text<32>,
    /// Flag-table indices (+1; 0 = none) of the flags this processor watches, after its own
    /// pause flag.
    pub(crate) watch: [AtomicU32; 16],
    /// The process running this processor, and its bell in the region.
    pub(crate) pid: AtomicU32,
    pub(crate) bell: AtomicU32,
    /// Set once `before` finished (ordered start across a process boundary).
    pub(crate) started: AtomicU32,
    // The flags of a processor in a process subtree.
    pub(crate) stop_word: AtomicU32,
    pub(crate) pause_word: AtomicU32,
    // Live values.
    pub(crate) state: AtomicU32,
    pub(crate) restarts: AtomicU32,
    /// Boot-clock ns of the last state change.
    pub(crate) since_ns: AtomicU64,
    pub(crate) errors: AtomicU64,
    /// Boot-clock ns when the current piece of work began; 0 outside one.
    pub(crate) busy: AtomicU64,
    pub(crate) mail_dropped: AtomicU64,
    pub(crate) note: Text<NOTE_WORDS>,
    /// Why the process running this subtree ended (written by the child before it exits, or by
    /// its parent when it died).
    pub(crate) exit_cause: Text<NOTE_WORDS>,
    metrics_lock: ShmLock,
    metrics_used: AtomicU32,
    metrics: [MetricSlot; METRICS_MAX],
    mailbox: Mailbox,
}

impl Cells {
    /// A zeroed record on the heap.
    pub fn new_arc() -> Arc<Cells> {
        // SAFETY: every field is an atomic integer or an array of them; all-zero bytes are a
        // valid value of each.
        Arc::new(unsafe { std::mem::zeroed::<Cells>() })
    }

    /// The metric slot named `name`, added if absent; `None` when the table is full or its lock
    /// could not be had.
    pub(crate) fn metric_slot(&self, name: &str) -> Option<&AtomicU64> {
        let name = cut(name, METRIC_NAME_MAX);
        if let Some(v) = self.find_metric(name) {
            return Some(v);
        }
        let _g = self.metrics_lock.lock(LOCK_TRIES)?;
        if let Some(v) = self.find_metric(name) {
            return Some(v);
        }
        let n = self.metrics_used.load(Ordering::Acquire) as usize;
        if n >= METRICS_MAX {
            return None;
        }
        let slot = &self.metrics[n];
        slot.value.store(0, Ordering::Relaxed);
        store_words(&slot.name, name.as_bytes());
        slot.name_len.store(name.len() as u32, Ordering::Relaxed);
        self.metrics_used.store(n as u32 + 1, Ordering::Release);
        Some(&slot.value)
    }

    fn find_metric(&self, name: &str) -> Option<&AtomicU64> {
        let n = (self.metrics_used.load(Ordering::Acquire) as usize).min(METRICS_MAX);
        let mut buf = [0u8; METRIC_NAME_MAX];
        self.metrics[..n]
            .iter()
            .find(|s| {
                let len = (s.name_len.load(Ordering::Relaxed) as usize).min(METRIC_NAME_MAX);
                len == name.len() && {
                    load_words(&s.name, &mut buf);
                    &buf[..len] == name.as_bytes()
                }
            })
            .map(|s| &s.value)
    }

    /// Calls `f` with each metric, without allocating.
    pub(crate) fn visit_metrics(&self, mut f: impl FnMut(&str, u64)) {
        let n = (self.metrics_used.load(Ordering::Acquire) as usize).min(METRICS_MAX);
        let mut buf = [0u8; METRIC_NAME_MAX];
        for s in &self.metrics[..n] {
            let len = (s.name_len.load(Ordering::Relaxed) as usize).min(METRIC_NAME_MAX);
            load_words(&s.name, &mut buf);
            if let Ok(name) = std::str::from_utf8(&buf[..len]) {
                f(name, s.value.load(Ordering::Relaxed));
            }
        }
    }

    /// Every metric, in the order they were added.
    pub(crate) fn metrics(&self) -> Vec<(String, u64)> {
        let n = (self.metrics_used.load(Ordering::Acquire) as usize).min(METRICS_MAX);
        let mut buf = [0u8; METRIC_NAME_MAX];
        self.metrics[..n]
            .iter()
            .map(|s| {
                let len = (s.name_len.load(Ordering::Relaxed) as usize).min(METRIC_NAME_MAX);
                load_words(&s.name, &mut buf);
                (
                    String::from_utf8_lossy(&buf[..len]).into_owned(),
                    s.value.load(Ordering::Relaxed),
                )
            })
            .collect()
    }

    /// Puts a signal in the mailbox; `false` when it is full (or its lock could not be had).
    pub(crate) fn post(&self, sig: &Signal) -> bool {
        let m = &self.mailbox;
        let Some(_g) = m.lock.lock(LOCK_TRIES) else {
            return false;
        };
        let t = m.tail.load(Ordering::Relaxed);
        let h = m.head.load(Ordering::Acquire);
        if t.wrapping_sub(h) >= MAILBOX_CAPACITY as u64 {
            return false;
        }
        let slot = &m.slots[(t % MAILBOX_CAPACITY as u64) as usize];
        store_words(&slot.name, sig.name().as_bytes());
        store_words(&slot.arg, sig.arg().as_bytes());
        let origin = match sig.origin {
            Origin::Os => 0u32,
            Origin::Control => 1,
            Origin::Ground => 2,
            Origin::Internal => 3,
        };
        slot.lens.store(
            sig.name().len() as u32 | (sig.arg().len() as u32) << 8 | origin << 16,
            Ordering::Relaxed,
        );
        m.tail.store(t.wrapping_add(1), Ordering::Release);
        true
    }

    /// The next signal, if any. Only the processor itself calls this (one consumer). A record
    /// that does not make a valid signal (a corrupted region) is skipped.
    pub(crate) fn take(&self) -> Option<Signal> {
        let m = &self.mailbox;
        loop {
            let h = m.head.load(Ordering::Relaxed);
            let t = m.tail.load(Ordering::Acquire);
            if h == t {
                return None;
            }
            if t.wrapping_sub(h) > MAILBOX_CAPACITY as u64 {
                // Not something a well-behaved producer can do: start over from the tail.
                m.head.store(t, Ordering::Release);
                return None;
            }
            let slot = &m.slots[(h % MAILBOX_CAPACITY as u64) as usize];
            let lens = slot.lens.load(Ordering::Relaxed);
            let mut name = [0u8; NAME_MAX];
            let mut arg = [0u8; ARG_MAX];
            load_words(&slot.name, &mut name);
            load_words(&slot.arg, &mut arg);
            m.head.store(h.wrapping_add(1), Ordering::Release);
            let nl = ((lens & 0xff) as usize).min(NAME_MAX);
            let al = ((lens >> 8 & 0xff) as usize).min(ARG_MAX);
            let origin = match lens >> 16 & 0xff {
                0 => Origin::Os,
                1 => Origin::Control,
                2 => Origin::Ground,
                _ => Origin::Internal,
            };
            if let (Ok(n), Ok(a)) = (
                std::str::from_utf8(&name[..nl]),
                std::str::from_utf8(&arg[..al]),
            ) && let Ok(s) = Signal::with_arg(n, a, origin)
            {
                return Some(s);
            }
        }
    }

    pub(crate) fn has_mail(&self) -> bool {
        let m = &self.mailbox;
        m.head.load(Ordering::Relaxed) != m.tail.load(Ordering::Acquire)
    }

    /// Clears what a previous run of this slot left (a reused shared-memory slot).
    pub(crate) fn reset_live(&self) {
        self.started.store(0, Ordering::Relaxed);
        self.busy.store(0, Ordering::Relaxed);
    }
}

/// Keeps the memory a [`Counter`] or an entry points into alive.
#[derive(Clone)]
pub enum Keep {
    Heap(Arc<Cells>),
    Shared(Arc<dyn Send + Sync>),
    Own(Arc<AtomicU64>),
}

/// A named counter a processor publishes: an `AtomicU64` in the processor's record, which may
/// live in shared memory. Dereferences to the atomic, so updating it is one atomic operation.
#[derive(Clone)]
pub struct Counter {
    ptr: *const AtomicU64,
    _keep: Keep,
}

// SAFETY: the pointer targets an `AtomicU64` (Sync) that `_keep` keeps alive.
unsafe impl Send for Counter {}
unsafe impl Sync for Counter {}

impl Counter {
    /// A counter of its own, shown nowhere (when a processor's metric table is full).
    pub fn detached() -> Self {
        let a = Arc::new(AtomicU64::new(0));
        Counter {
            ptr: Arc::as_ptr(&a),
            _keep: Keep::Own(a),
        }
    }

    pub(crate) fn new(value: &AtomicU64, keep: Keep) -> Self {
        Counter {
            ptr: value,
            _keep: keep,
        }
    }
}

impl Deref for Counter {
    type Target = AtomicU64;
    #[inline]
    fn deref(&self) -> &AtomicU64 {
        // SAFETY: see the Send/Sync impls.
        unsafe { &*self.ptr }
    }
}

impl fmt::Debug for Counter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Counter({})", self.load(Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_round_trips_and_cuts_on_char_boundaries() {
        let t = Text::<2>::default();
        assert!(t.set("hello"));
        assert_eq!(t.get(), "hello");
        assert!(t.is("hello"));
        assert!(t.set("ééééééééé")); // 18 bytes into 16
        assert_eq!(t.get(), "éééééééé");
    }

    #[test]
    fn text_written_by_a_dead_writer_is_repaired() {
        let t = Text::<2>::default();
        t.seq.store(7, Ordering::Relaxed); // a writer died mid-write
        t.lock.owner.store(u32::MAX - 1, Ordering::Relaxed); // held by a pid that cannot exist
        assert!(t.set("ok"));
        assert_eq!(t.get(), "ok");
    }

    #[test]
    fn mailbox_refuses_when_full_and_skips_garbage() {
        let c = Cells::new_arc();
        let s = Signal::with_arg("rotate", "now", Origin::Ground).unwrap();
        for _ in 0..MAILBOX_CAPACITY {
            assert!(c.post(&s));
        }
        assert!(!c.post(&s));
        assert_eq!(c.take(), Some(s.clone()));
        // Corrupt the next record: an invalid name is skipped, not returned.
        c.mailbox.slots[1].lens.store(3, Ordering::Relaxed);
        store_words(&c.mailbox.slots[1].name, b"A!?");
        assert_eq!(c.take(), Some(s));
    }

    #[test]
    fn metric_table_is_bounded() {
        let c = Cells::new_arc();
        for i in 0..METRICS_MAX {
            c.metric_slot(&format!("m{i}"))
                .unwrap()
                .store(i as u64, Ordering::Relaxed);
        }
        assert!(c.metric_slot("one-too-many").is_none());
        assert_eq!(c.metrics()[5], ("m5".to_owned(), 5));
        assert_eq!(
            c.metric_slot("m7").unwrap().load(Ordering::Relaxed),
            7,
            "same name, same slot"
        );
    }
}
