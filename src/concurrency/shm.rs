//! One shared-memory region per process subtree: what a parent and its child processes share.
//!
//! A region is a `memfd` (nothing named in `/dev/shm`, so nothing goes stale after a `kill -9`),
//! sized once, sealed against growing and shrinking (a peer can never truncate it under us,
//! which would turn every access into SIGBUS), mapped by the parent, and handed to each child
//! across `exec` as an inherited descriptor. It holds, at fixed offsets computed the same way
//! by every process of the same binary:
//!
//! | part          | what                                                                 |
//! |---------------|----------------------------------------------------------------------|
//! | header        | magic, version, layout check, the stop-all request, bells, ring table |
//! | entries       | one [`Cells`] record per processor of the subtree (state, counters, note, metrics, mailbox, its stop and pause flags) |
//! | flags         | waiting flags the subtree shares (the tree's pause flag, groups, ...)  |
//! | rings         | the log ring and the record rings declared by the topology            |
//!
//! # Waking across processes: bells and relays
//! Every process attached to a region owns a *bell*: a futex word in the header. Whoever changes
//! something another process must react to (a flag, a mailbox, a ring its consumer sleeps on, a
//! state the state-file writer shows) sets a reason bit and wakes that process's bell. In each
//! process one *relay* thread per region sleeps on its bell (no timeout, no polling) and turns the
//! reasons into local wake-ups: flag subscribers, mailbox owners, ring consumers, the state-file
//! writer; in the region's creator it also forwards the children's log records to the
//! application log, adopts the entries children registered into the tree's registry, and takes a
//! stop-all a child asked for.
//!
//! Flags are one atomic word in the region, read directly in hot loops, as in-process. A flag
//! that lives in the parent (the tree's pause flag, a waiting group) is *mirrored* into a region
//! word (see [`super::flag`]).
//!
//! # Trust
//! The creator keeps its own copy of the layout and never follows an offset read from the
//! region; whatever a child writes is bounded and validated where it is read (see
//! [`super::cells`]). A region is shared by one subtree only, so a sandboxed child can at worst
//! spoil its own subtree's status.

use std::io;
use std::num::NonZeroUsize;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::thread::JoinHandle;

use nix::fcntl::{FcntlArg, SealFlag, fcntl};
use nix::sys::memfd::{MFdFlags, memfd_create};
use nix::sys::mman::{MapFlags, ProtFlags, mmap, munmap};

use super::cells::{Cells, Keep, LOCK_TRIES, NOTE_WORDS, ShmLock, Text, cut, my_pid};
use super::flag::{Flag, Remote};
use super::registry::{Registry, StopReason};
use super::ring::{ConsumerReg, Plain, RawRing, ShmConsumer, ShmProducer, ring_bytes};
use super::state::{Entry, Kind, Link, Parts};
use super::wake::Waker;

/// Processors one region holds (a process subtree's whole tree).
pub const MAX_ENTRIES: usize = 32;
/// Shared waiting flags one region holds.
pub const MAX_FLAGS: usize = 64;
/// Processes attached to one region at a time (the parent, its child, nested children).
pub const MAX_BELLS: usize = 8;
/// Rings one region holds, the log ring included.
pub const MAX_RINGS: usize = 16;
/// Log records the log ring holds before it drops.
pub const LOG_SLOTS: u64 = 256;

const MAGIC: u64 = u64::from_le_bytes(*b"HRMNYSHM");
const VERSION: u32 = 1;

/// Bell reasons.
pub(crate) const R_FLAGS: u32 = 1;
pub(crate) const R_MAIL: u32 = 2;
pub(crate) const R_RING: u32 = 4;
pub(crate) const R_DIRTY: u32 = 8;
pub(crate) const R_NEW: u32 = 16;
pub(crate) const R_STARTED: u32 = 32;
const R_QUIT: u32 = 1 << 31;

/// Why a region could not be made or used.
#[derive(Debug, thiserror::Error)]
pub enum ShmError {
    #[error("cannot create the shared memory of {name}: {source}")]
    Create { name: String, source: io::Error },
    #[error("shared memory is not a harmony region of this build ({0})")]
    Foreign(&'static str),
    #[error("shared memory {region}: no ring named '{ring}'")]
    NoRing { region: String, ring: String },
    #[error("shared memory {region}: ring '{ring}' holds another record type")]
    RingType { region: String, ring: String },
    #[error("shared memory {region}: no room for another {what} (at most {max})")]
    Full {
        region: String,
        what: &'static str,
        max: usize,
    },
    #[error("shared memory {region}: its table is locked by a process that does not let go")]
    Locked { region: String },
}

fn err(name: &str) -> impl FnOnce(nix::errno::Errno) -> ShmError + '_ {
    move |e| ShmError::Create {
        name: name.to_owned(),
        source: io::Error::from(e),
    }
}

/// The futex word of one attached process.
#[repr(C)]
struct Bell {
    pid: AtomicU32,
    seq: AtomicU32,
    reasons: AtomicU32,
    waiting: AtomicU32,
}

#[repr(C)]
struct RingDesc {
    name: Text<6>,
    rec_size: AtomicU64,
    type_id: AtomicU64,
    cap: AtomicU64,
    offset: AtomicU64,
}

#[repr(C)]
struct Header {
    magic: AtomicU64,
    version: AtomicU32,
    layout: AtomicU32,
    size: AtomicU64,
    alloc: ShmLock,
    entries_used: AtomicU32,
    flags_used: AtomicU32,
    rings_used: AtomicU32,
    /// A stop-all asked for inside the subtree: 0 none, 1 finished, 2 failure, 3 requested.
    stop_kind: AtomicU32,
    stop_text: Text<NOTE_WORDS>,
    log_lock: ShmLock,
    bells: [Bell; MAX_BELLS],
    rings: [RingDesc; MAX_RINGS],
}

/// A shared waiting flag.
#[repr(C)]
struct FlagSlot {
    /// 0 free, 1 being filled, 2 ready.
    used: AtomicU32,
    word: AtomicU32,
    /// The process whose local flag this slot mirrors (it imports changes others make).
    owner_pid: AtomicU32,
    name: Text<6>,
}

const fn up(n: usize, a: usize) -> usize {
    n.div_ceil(a) * a
}

const ENTRIES_OFF: usize = up(std::mem::size_of::<Header>(), 128);
const FLAGS_OFF: usize = ENTRIES_OFF + up(MAX_ENTRIES * std::mem::size_of::<Cells>(), 128);
const RINGS_OFF: usize = FLAGS_OFF + up(MAX_FLAGS * std::mem::size_of::<FlagSlot>(), 128);

fn layout_id() -> u32 {
    let v = [
        std::mem::size_of::<Header>(),
        std::mem::size_of::<Cells>(),
        std::mem::size_of::<FlagSlot>(),
        std::mem::size_of::<super::ring::RingHeader>(),
        std::mem::size_of::<LogRec>(),
        MAX_ENTRIES,
        MAX_FLAGS,
        MAX_BELLS,
        MAX_RINGS,
    ];
    v.iter()
        .fold(2166136261u32, |h, x| (h ^ *x as u32).wrapping_mul(16777619))
}

/// A stable identity of a record type within one binary.
fn type_id_of<T>() -> u64 {
    let name = std::any::type_name::<T>();
    let h = name.bytes().fold(0xcbf29ce484222325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100000001b3)
    });
    h ^ (std::mem::size_of::<T>() as u64) << 48 ^ (std::mem::align_of::<T>() as u64) << 56
}

/// A mapping of a region (unmapped when the last user lets go).
pub struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is plain shared memory; all access goes through atomics or the ring
// protocol.
unsafe impl Send for Mapping {}
unsafe impl Sync for Mapping {}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: mapped by us with this length; nobody holds a reference any more (every
        // holder keeps an `Arc<Mapping>`).
        let _ = unsafe { munmap(self.ptr.cast(), self.len) };
    }
}

impl Mapping {
    pub(crate) fn base(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    fn header(&self) -> &Header {
        // SAFETY: every mapping is at least RINGS_OFF bytes (checked when made or attached).
        unsafe { &*(self.ptr.as_ptr() as *const Header) }
    }

    fn cells(&self, i: usize) -> &Cells {
        debug_assert!(i < MAX_ENTRIES);
        // SAFETY: inside the entries table.
        unsafe {
            &*(self
                .ptr
                .as_ptr()
                .add(ENTRIES_OFF + i * std::mem::size_of::<Cells>()) as *const Cells)
        }
    }

    fn flag_slot(&self, i: usize) -> &FlagSlot {
        debug_assert!(i < MAX_FLAGS);
        // SAFETY: inside the flags table.
        unsafe {
            &*(self
                .ptr
                .as_ptr()
                .add(FLAGS_OFF + i * std::mem::size_of::<FlagSlot>())
                as *const FlagSlot)
        }
    }

    /// Wakes process bell `i` with `reasons`.
    pub(crate) fn ring_bell(&self, i: u32, reasons: u32) {
        let Some(b) = self.header().bells.get(i as usize) else {
            return;
        };
        b.reasons.fetch_or(reasons, Ordering::SeqCst);
        b.seq.fetch_add(1, Ordering::SeqCst);
        if b.waiting.load(Ordering::SeqCst) != 0 {
            futex_wake(&b.seq);
        }
    }

    /// Wakes every attached process but `me`.
    pub(crate) fn ring_others(&self, me: u32, reasons: u32) {
        for (i, b) in self.header().bells.iter().enumerate() {
            if i as u32 != me && b.pid.load(Ordering::Acquire) != 0 {
                self.ring_bell(i as u32, reasons);
            }
        }
    }
}

fn futex_wait(word: &AtomicU32, expected: u32) {
    // SAFETY: FUTEX_WAIT on a valid, aligned word of a shared mapping (not private: the other
    // processes wake it); no timeout.
    unsafe {
        nix::libc::syscall(
            nix::libc::SYS_futex,
            word as *const AtomicU32,
            nix::libc::FUTEX_WAIT,
            expected,
            std::ptr::null::<nix::libc::timespec>(),
            std::ptr::null::<u32>(),
            0u32,
        );
    }
}

fn futex_wake(word: &AtomicU32) {
    // SAFETY: FUTEX_WAKE on a valid, aligned word of a shared mapping.
    unsafe {
        nix::libc::syscall(
            nix::libc::SYS_futex,
            word as *const AtomicU32,
            nix::libc::FUTEX_WAKE,
            i32::MAX,
            std::ptr::null::<nix::libc::timespec>(),
            std::ptr::null::<u32>(),
            0u32,
        );
    }
}

/// Rings the other processes when a shared flag changes.
struct FlagRemote {
    map: Arc<Mapping>,
    me: u32,
}

impl Remote for FlagRemote {
    fn changed(&self) {
        self.map.ring_others(self.me, R_FLAGS);
    }
}

/// What an entry in shared memory tells the other processes.
struct EntryLink {
    map: Arc<Mapping>,
    me: u32,
}

impl Link for EntryLink {
    fn mail(&self, cells: &Cells) {
        let b = cells.bell.load(Ordering::Acquire);
        if b > 0 && b - 1 != self.me {
            self.map.ring_bell(b - 1, R_MAIL);
        }
    }

    fn dirty(&self) {
        if self.me != 0 {
            self.map.ring_bell(0, R_DIRTY);
        }
    }
}

/// One application log record from a child process.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct LogRec {
    pub level: u32,
    pub pid: u32,
    pub wall_ns: i64,
    /// thread length | target length << 8 | text length << 16
    lens: u32,
    thread: [u8; 16],
    target: [u8; 48],
    text: [u8; 400],
}

// SAFETY: integers and byte arrays only; every bit pattern is valid.
unsafe impl Plain for LogRec {}

impl LogRec {
    pub fn new(level: log::Level, wall_ns: i64, thread: &str, target: &str, text: &str) -> Self {
        fn put<const N: usize>(dst: &mut [u8; N], s: &str) -> u32 {
            let s = cut(s, N);
            dst[..s.len()].copy_from_slice(s.as_bytes());
            s.len() as u32
        }
        let mut r = LogRec {
            level: level as u32,
            pid: my_pid(),
            wall_ns,
            lens: 0,
            thread: [0; 16],
            target: [0; 48],
            text: [0; 400],
        };
        let a = put(&mut r.thread, thread);
        let b = put(&mut r.target, target);
        let c = put(&mut r.text, text);
        r.lens = a | b << 8 | c << 16;
        r
    }

    pub fn level(&self) -> log::Level {
        match self.level {
            1 => log::Level::Error,
            2 => log::Level::Warn,
            3 => log::Level::Info,
            4 => log::Level::Debug,
            _ => log::Level::Trace,
        }
    }

    fn field(b: &[u8], len: u32) -> std::borrow::Cow<'_, str> {
        String::from_utf8_lossy(&b[..(len as usize).min(b.len())])
    }

    pub fn thread(&self) -> std::borrow::Cow<'_, str> {
        Self::field(&self.thread, self.lens & 0xff)
    }

    pub fn target(&self) -> std::borrow::Cow<'_, str> {
        Self::field(&self.target, self.lens >> 8 & 0xff)
    }

    pub fn text(&self) -> std::borrow::Cow<'_, str> {
        Self::field(&self.text, self.lens >> 16 & 0xffff)
    }
}

/// Where a child's log records go in the creator (default: the `log` facade).
pub type LogForwarder = fn(&LogRec);

static FORWARDER: std::sync::OnceLock<LogForwarder> = std::sync::OnceLock::new();

/// Sets how children's log records reach this process's log (the application log sets it).
pub fn set_log_forwarder(f: LogForwarder) {
    let _ = FORWARDER.set(f);
}

fn forward(r: &LogRec) {
    match FORWARDER.get() {
        Some(f) => f(r),
        None => log::log!(
            target: "child",
            r.level(),
            "[{} pid {}] {}: {}",
            r.thread(),
            r.pid,
            r.target(),
            r.text()
        ),
    }
}

struct RingSpec {
    name: String,
    rec: usize,
    type_id: u64,
    cap: u64,
}

/// Declares a region's rings, then makes it.
pub struct RegionBuilder {
    name: String,
    rings: Vec<RingSpec>,
}

impl RegionBuilder {
    /// Declares a ring of at least `capacity` records of `T` (rounded up to a power of two).
    pub fn ring<T: Plain>(mut self, name: &str, capacity: usize) -> Self {
        self.rings.push(RingSpec {
            name: name.to_owned(),
            rec: std::mem::size_of::<T>().max(1),
            type_id: type_id_of::<T>(),
            cap: (capacity.max(2) as u64).next_power_of_two(),
        });
        self
    }

    /// Creates, sizes, seals and maps the region; this process becomes its creator.
    pub fn build(self) -> Result<Arc<Region>, ShmError> {
        let mut rings = vec![RingSpec {
            name: "log".into(),
            rec: std::mem::size_of::<LogRec>(),
            type_id: type_id_of::<LogRec>(),
            cap: LOG_SLOTS,
        }];
        rings.extend(self.rings);
        if rings.len() > MAX_RINGS {
            return Err(ShmError::Full {
                region: self.name,
                what: "ring",
                max: MAX_RINGS - 1,
            });
        }
        let mut off = RINGS_OFF;
        let mut offsets = Vec::new();
        for r in &rings {
            offsets.push(off);
            off = up(off + ring_bytes(r.cap, r.rec), 128);
        }
        let size = up(off, 4096);
        let fd = memfd_create(
            format!("harmony-{}", cut(&self.name, 40)).as_str(),
            MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING,
        )
        .map_err(err(&self.name))?;
        nix::unistd::ftruncate(&fd, size as i64).map_err(err(&self.name))?;
        fcntl(
            &fd,
            FcntlArg::F_ADD_SEALS(
                SealFlag::F_SEAL_SHRINK | SealFlag::F_SEAL_GROW | SealFlag::F_SEAL_SEAL,
            ),
        )
        .map_err(err(&self.name))?;
        let map = map_fd(&fd, size).map_err(err(&self.name))?;
        let h = map.header();
        h.version.store(VERSION, Ordering::Relaxed);
        h.layout.store(layout_id(), Ordering::Relaxed);
        h.size.store(size as u64, Ordering::Relaxed);
        for (i, (r, o)) in rings.iter().zip(&offsets).enumerate() {
            let d = &h.rings[i];
            d.name.set(&r.name);
            d.rec_size.store(r.rec as u64, Ordering::Relaxed);
            d.type_id.store(r.type_id, Ordering::Relaxed);
            d.cap.store(r.cap, Ordering::Relaxed);
            d.offset.store(*o as u64, Ordering::Relaxed);
        }
        h.rings_used.store(rings.len() as u32, Ordering::Relaxed);
        h.bells[0].pid.store(my_pid(), Ordering::Relaxed);
        h.magic.store(MAGIC, Ordering::Release);
        let region = Region::new(self.name, map, fd, 0, rings.len());
        Ok(region)
    }
}

fn map_fd(fd: &OwnedFd, size: usize) -> nix::Result<Arc<Mapping>> {
    let len = NonZeroUsize::new(size).ok_or(nix::errno::Errno::EINVAL)?;
    // SAFETY: a fresh shared mapping of a sealed memfd at least `size` bytes long.
    let p = unsafe {
        mmap(
            None,
            len,
            ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
            MapFlags::MAP_SHARED,
            fd,
            0,
        )?
    };
    Ok(Arc::new(Mapping {
        ptr: p.cast(),
        len: size,
    }))
}

/// A process's own view of a region: the flags, entries and consumers it has handles for.
struct Local {
    flags: Vec<Option<Flag>>,
    /// The slot mirrors a local flag of this process (changes others make are imported).
    mirrored: Vec<bool>,
    stops: Vec<Option<Flag>>,
    pauses: Vec<Option<Flag>>,
    /// Entries whose processors run in this process (their mail wakes them).
    runs_here: Vec<Weak<Entry>>,
    /// Creator: entry slots adopted into `registry` so far.
    adopted: Vec<bool>,
    registry: Weak<Registry>,
    /// Wakers of runners waiting for a child's ordered start.
    listeners: Vec<Weak<Waker>>,
    log: Option<ShmConsumer<LogRec>>,
    log_dropped_seen: u64,
}

struct Relay {
    quit: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// One process subtree's shared memory, as seen by this process (see the module docs).
pub struct Region {
    name: String,
    map: Arc<Mapping>,
    fd: OwnedFd,
    me: u32,
    rings: usize,
    local: Mutex<Local>,
    consumers: Arc<Mutex<Vec<ConsumerReg>>>,
    log_producer: Mutex<Option<ShmProducer<LogRec>>>,
    relay: Mutex<Option<Relay>>,
}

impl std::fmt::Debug for Region {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Region({})", self.name)
    }
}

/// Watch references: 1 + flag slot, or `PAUSE_REF` + entry slot (its pause flag).
const PAUSE_REF: u32 = 0x1_0000;

impl Region {
    pub fn builder(name: impl Into<String>) -> RegionBuilder {
        RegionBuilder {
            name: name.into(),
            rings: Vec::new(),
        }
    }

    fn new(name: String, map: Arc<Mapping>, fd: OwnedFd, me: u32, rings: usize) -> Arc<Region> {
        let local = Local {
            flags: vec![None; MAX_FLAGS],
            mirrored: vec![false; MAX_FLAGS],
            stops: vec![None; MAX_ENTRIES],
            pauses: vec![None; MAX_ENTRIES],
            runs_here: Vec::new(),
            adopted: vec![false; MAX_ENTRIES],
            registry: Weak::new(),
            listeners: Vec::new(),
            log: None,
            log_dropped_seen: 0,
        };
        let r = Arc::new(Region {
            name,
            map,
            fd,
            me,
            rings,
            local: Mutex::new(local),
            consumers: Arc::new(Mutex::new(Vec::new())),
            log_producer: Mutex::new(None),
            relay: Mutex::new(None),
        });
        if me == 0 {
            // The relay is the log ring's consumer; producers ring its bell.
            let log = r.ring_raw::<LogRec>("log").ok().map(|(raw, i)| {
                // SAFETY: checked by `ring_raw`.
                unsafe { ShmConsumer::new(raw, i, 0, r.consumers.clone()) }
            });
            if let Some(c) = &log {
                c.set_waker(&Waker::new());
            }
            r.lock_local().log = log;
        } else {
            *r.log_producer.lock().unwrap_or_else(|e| e.into_inner()) = r
                .ring_raw::<LogRec>("log")
                .ok()
                // SAFETY: checked by `ring_raw`.
                .map(|(raw, _)| unsafe { ShmProducer::new(raw) });
        }
        r
    }

    /// Maps a region inherited from the parent (in a child process) and claims a bell.
    pub fn attach(fd: OwnedFd, name: &str) -> Result<Arc<Region>, ShmError> {
        let st = nix::sys::stat::fstat(&fd).map_err(err(name))?;
        let size = st.st_size as usize;
        if size < RINGS_OFF {
            return Err(ShmError::Foreign("too small"));
        }
        let seals = fcntl(&fd, FcntlArg::F_GET_SEALS).map_err(err(name))?;
        if seals & SealFlag::F_SEAL_SHRINK.bits() == 0 {
            return Err(ShmError::Foreign("not sealed"));
        }
        let map = map_fd(&fd, size).map_err(err(name))?;
        let h = map.header();
        if h.magic.load(Ordering::Acquire) != MAGIC
            || h.version.load(Ordering::Relaxed) != VERSION
            || h.layout.load(Ordering::Relaxed) != layout_id()
            || h.size.load(Ordering::Relaxed) != size as u64
        {
            return Err(ShmError::Foreign("another layout"));
        }
        let rings = (h.rings_used.load(Ordering::Relaxed) as usize).min(MAX_RINGS);
        let me = (1..MAX_BELLS)
            .find(|&i| {
                let b = &h.bells[i];
                let cur = b.pid.load(Ordering::Acquire);
                (cur == 0 || !super::cells::pid_alive(cur))
                    && b.pid
                        .compare_exchange(cur, my_pid(), Ordering::AcqRel, Ordering::Relaxed)
                        .is_ok()
            })
            .ok_or_else(|| ShmError::Full {
                region: name.to_owned(),
                what: "process",
                max: MAX_BELLS,
            })?;
        Ok(Region::new(name.to_owned(), map, fd, me as u32, rings))
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The region's descriptor (inherited by a child across `exec`).
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// This process's bell index.
    pub(crate) fn me(&self) -> u32 {
        self.me
    }

    fn lock_local(&self) -> std::sync::MutexGuard<'_, Local> {
        self.local.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn ring_raw<T: Plain>(&self, name: &str) -> Result<(RawRing, usize), ShmError> {
        let h = self.map.header();
        for i in 0..self.rings {
            let d = &h.rings[i];
            if !d.name.is(name) {
                continue;
            }
            let cap = d.cap.load(Ordering::Relaxed);
            let off = d.offset.load(Ordering::Relaxed) as usize;
            if d.type_id.load(Ordering::Relaxed) != type_id_of::<T>()
                || d.rec_size.load(Ordering::Relaxed) != std::mem::size_of::<T>().max(1) as u64
            {
                return Err(ShmError::RingType {
                    region: self.name.clone(),
                    ring: name.to_owned(),
                });
            }
            if !cap.is_power_of_two()
                || off < RINGS_OFF
                || !off.is_multiple_of(128)
                || off
                    .checked_add(ring_bytes(cap, std::mem::size_of::<T>()))
                    .is_none_or(|end| end > self.map.len)
            {
                return Err(ShmError::Foreign("ring outside the region"));
            }
            // SAFETY: bounds and alignment checked above; type identity checked.
            let raw = unsafe { RawRing::new(self.map.clone(), off, cap, name.to_owned()) };
            return Ok((raw, i));
        }
        Err(ShmError::NoRing {
            region: self.name.clone(),
            ring: name.to_owned(),
        })
    }

    /// The producing end of ring `name` (one producer at a time).
    pub fn producer<T: Plain>(&self, name: &str) -> Result<super::Producer<T>, ShmError> {
        let (raw, _) = self.ring_raw::<T>(name)?;
        // SAFETY: checked by `ring_raw`.
        Ok(super::Producer::from_shm(unsafe { ShmProducer::new(raw) }))
    }

    /// The consuming end of ring `name` (one consumer at a time).
    pub fn consumer<T: Plain>(&self, name: &str) -> Result<super::Consumer<T>, ShmError> {
        let (raw, i) = self.ring_raw::<T>(name)?;
        // SAFETY: checked by `ring_raw`.
        let c = unsafe { ShmConsumer::new(raw, i, self.me, self.consumers.clone()) };
        Ok(super::Consumer::from_shm(c))
    }

    fn remote(&self) -> Arc<dyn Remote> {
        Arc::new(FlagRemote {
            map: self.map.clone(),
            me: self.me,
        })
    }

    fn link(&self) -> Arc<dyn Link> {
        Arc::new(EntryLink {
            map: self.map.clone(),
            me: self.me,
        })
    }

    /// This process's flag over entry slot `i`'s stop word.
    fn stop_flag(&self, local: &mut Local, i: usize, name: &str) -> Flag {
        if let Some(f) = &local.stops[i] {
            return f.clone();
        }
        // SAFETY: the word is inside the mapping `remote` keeps alive.
        let f = unsafe {
            Flag::shared(
                format!("{name}.stop"),
                &self.map.cells(i).stop_word,
                self.remote(),
            )
        };
        local.stops[i] = Some(f.clone());
        f
    }

    /// This process's flag over entry slot `i`'s pause word.
    fn pause_flag(&self, local: &mut Local, i: usize, name: &str) -> Flag {
        if let Some(f) = &local.pauses[i] {
            return f.clone();
        }
        // SAFETY: as above.
        let f = unsafe { Flag::shared(name, &self.map.cells(i).pause_word, self.remote()) };
        local.pauses[i] = Some(f.clone());
        f
    }

    /// The reference of `f` in this region, exporting it (as a mirror of this process's flag)
    /// if it is not in the region yet.
    fn flag_ref(&self, local: &mut Local, f: &Flag) -> Result<u32, ShmError> {
        for (i, x) in local.flags.iter().enumerate() {
            if x.as_ref().is_some_and(|x| x.same(f)) {
                return Ok(1 + i as u32);
            }
        }
        for (i, x) in local.pauses.iter().enumerate() {
            if x.as_ref().is_some_and(|x| x.same(f)) {
                return Ok(PAUSE_REF + i as u32);
            }
        }
        let h = self.map.header();
        let _g = h.alloc.lock(LOCK_TRIES).ok_or_else(|| ShmError::Locked {
            region: self.name.clone(),
        })?;
        let n = h.flags_used.load(Ordering::Acquire) as usize;
        if n >= MAX_FLAGS {
            return Err(ShmError::Full {
                region: self.name.clone(),
                what: "shared flag",
                max: MAX_FLAGS,
            });
        }
        let s = self.map.flag_slot(n);
        s.used.store(1, Ordering::Relaxed);
        s.name.set(f.name());
        s.owner_pid.store(my_pid(), Ordering::Relaxed);
        // SAFETY: the word is inside the mapping `remote` keeps alive.
        unsafe { f.add_mirror(&s.word, self.remote()) };
        s.used.store(2, Ordering::Release);
        h.flags_used.store(n as u32 + 1, Ordering::Release);
        local.flags[n] = Some(f.clone());
        local.mirrored[n] = true;
        drop(_g);
        self.map.ring_others(self.me, R_NEW);
        Ok(1 + n as u32)
    }

    /// The flag a watch reference names, as this process sees it.
    fn flag_of(&self, local: &mut Local, r: u32) -> Option<Flag> {
        if r >= PAUSE_REF {
            let i = (r - PAUSE_REF) as usize;
            if i >= MAX_ENTRIES
                || i >= self.map.header().entries_used.load(Ordering::Acquire) as usize
            {
                return None;
            }
            let name = self.map.cells(i).name.get();
            return Some(self.pause_flag(local, i, &name));
        }
        let i = r.checked_sub(1)? as usize;
        if i >= MAX_FLAGS || i >= self.map.header().flags_used.load(Ordering::Acquire) as usize {
            return None;
        }
        if let Some(f) = &local.flags[i] {
            return Some(f.clone());
        }
        let s = self.map.flag_slot(i);
        if s.used.load(Ordering::Acquire) != 2 {
            return None;
        }
        // SAFETY: the word is inside the mapping `remote` keeps alive.
        let f = unsafe { Flag::shared(s.name.get(), &s.word, self.remote()) };
        local.flags[i] = Some(f.clone());
        Some(f)
    }

    /// Claims (or, for a path seen before, reuses) the entry slot of a processor, and returns
    /// this process's [`Entry`] over it. `runs_here`: the processor runs in this process (its
    /// mail wakes it here, its pid is ours).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn register(
        &self,
        registry: &Arc<Registry>,
        name: &str,
        path: &str,
        kind: Kind,
        watch_above: &[Flag],
        accepts: Vec<String>,
        runs_here: bool,
    ) -> Result<Arc<Entry>, ShmError> {
        let mut local = self.lock_local();
        let mut refs = Vec::new();
        for f in watch_above {
            refs.push(self.flag_ref(&mut local, f)?);
        }
        let h = self.map.header();
        let i = {
            let _g = h.alloc.lock(LOCK_TRIES).ok_or_else(|| ShmError::Locked {
                region: self.name.clone(),
            })?;
            let n = (h.entries_used.load(Ordering::Acquire) as usize).min(MAX_ENTRIES);
            match (0..n).find(|&i| self.map.cells(i).path.is(path)) {
                Some(i) => i,
                None if n < MAX_ENTRIES => {
                    let c = self.map.cells(n);
                    c.used.store(1, Ordering::Relaxed);
                    c.name.set(name);
                    c.path.set(path);
                    c.kind.store(kind.to_u32(), Ordering::Relaxed);
                    c.accepts.set(&accepts.join(","));
                    for (k, w) in c.watch.iter().enumerate() {
                        w.store(refs.get(k).copied().unwrap_or(0), Ordering::Relaxed);
                    }
                    c.used.store(2, Ordering::Release);
                    h.entries_used.store(n as u32 + 1, Ordering::Release);
                    n
                }
                None => {
                    return Err(ShmError::Full {
                        region: self.name.clone(),
                        what: "processor",
                        max: MAX_ENTRIES,
                    });
                }
            }
        };
        if self.me == 0 {
            // The creator registers this entry in its own registry itself.
            local.adopted[i] = true;
        }
        let e = self.entry_locked(&mut local, registry, i, watch_above.to_vec());
        if runs_here {
            self.run_here(&mut local, &e, i);
        }
        drop(local);
        self.map.ring_others(self.me, R_NEW);
        Ok(e)
    }

    fn run_here(&self, local: &mut Local, e: &Arc<Entry>, i: usize) {
        let c = self.map.cells(i);
        c.reset_live();
        c.pid.store(my_pid(), Ordering::Relaxed);
        c.bell.store(self.me + 1, Ordering::Release);
        local.runs_here.retain(|w| w.strong_count() > 0);
        local.runs_here.push(Arc::downgrade(e));
    }

    /// This process's entry over slot `i` (watching `watch`, or the flags the slot names).
    fn entry_locked(
        &self,
        local: &mut Local,
        registry: &Arc<Registry>,
        i: usize,
        watch: Vec<Flag>,
    ) -> Arc<Entry> {
        let c = self.map.cells(i);
        let name = c.name.get();
        let stop = self.stop_flag(local, i, &name);
        let pause = self.pause_flag(local, i, &name);
        let watch = if watch.is_empty() {
            let refs: Vec<u32> = c
                .watch
                .iter()
                .map(|w| w.load(Ordering::Relaxed))
                .take_while(|r| *r != 0)
                .collect();
            refs.into_iter()
                .filter_map(|r| self.flag_of(local, r))
                .collect()
        } else {
            watch
        };
        let accepts: Vec<String> = c
            .accepts
            .get()
            .split(',')
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect();
        Entry::from_parts(
            registry,
            Parts {
                name,
                path: c.path.get(),
                kind: Kind::from_u32(c.kind.load(Ordering::Relaxed)),
                accepts,
                cells: c,
                keep: Keep::Shared(self.map.clone()),
                link: Some(self.link()),
                stop,
                pause,
            },
            &watch,
        )
    }

    /// In a child: this process's entry over slot `i`, which the parent registered and which
    /// runs here.
    pub(crate) fn adopt_own(&self, registry: &Arc<Registry>, i: usize) -> Option<Arc<Entry>> {
        let h = self.map.header();
        if i >= (h.entries_used.load(Ordering::Acquire) as usize).min(MAX_ENTRIES) {
            return None;
        }
        let mut local = self.lock_local();
        let e = self.entry_locked(&mut local, registry, i, Vec::new());
        self.run_here(&mut local, &e, i);
        Some(e)
    }

    /// The reference of `f` in this region (exported as a mirror if needed), for a child.
    pub(crate) fn export(&self, f: &Flag) -> Result<u32, ShmError> {
        let mut local = self.lock_local();
        self.flag_ref(&mut local, f)
    }

    /// In a child: the tree's stop-all and pause flags, from the references its parent gave.
    pub(crate) fn tree_flags(&self, stop_ref: u32, pause_ref: u32) -> (Flag, Flag) {
        let mut local = self.lock_local();
        let stop = self
            .flag_of(&mut local, stop_ref)
            .unwrap_or_else(|| Flag::new("stop-all"));
        let pause = self
            .flag_of(&mut local, pause_ref)
            .unwrap_or_else(|| Flag::new("all"));
        (stop, pause)
    }

    /// Tells the state-file writer (in the region's creator) that entries changed.
    pub(crate) fn dirty_here(&self) {
        if self.me == 0 {
            if let Some(r) = self.lock_local().registry.upgrade() {
                r.notify_changed();
            }
        } else {
            self.map.ring_bell(0, R_DIRTY);
        }
    }

    /// The raw record of slot `i` (for the supervisor).
    pub(crate) fn cells(&self, i: usize) -> Option<&Cells> {
        (i < MAX_ENTRIES).then(|| self.map.cells(i))
    }

    /// Slots in use.
    pub(crate) fn entries_used(&self) -> usize {
        (self.map.header().entries_used.load(Ordering::Acquire) as usize).min(MAX_ENTRIES)
    }

    /// The slot index of `e` in this region, if it lives here.
    pub(crate) fn slot_of(&self, e: &Entry) -> Option<usize> {
        let p = e.cells() as *const Cells as usize;
        let base = self.map.base() as usize + ENTRIES_OFF;
        let sz = std::mem::size_of::<Cells>();
        (p >= base && (p - base).is_multiple_of(sz) && (p - base) / sz < MAX_ENTRIES)
            .then(|| (p - base) / sz)
    }

    /// Makes `registry` the one this process's relay reports to (adoptions, stop-all, dirty).
    pub(crate) fn set_registry(&self, registry: &Arc<Registry>) {
        self.lock_local().registry = Arc::downgrade(registry);
    }

    /// Wakes `w` whenever a child's processor finished starting.
    pub(crate) fn listen(&self, w: &Arc<Waker>) {
        let mut l = self.lock_local();
        l.listeners.retain(|x| x.strong_count() > 0);
        if !l
            .listeners
            .iter()
            .any(|x| x.upgrade().is_some_and(|x| Arc::ptr_eq(&x, w)))
        {
            l.listeners.push(Arc::downgrade(w));
        }
    }

    /// Marks slot `i` started (its `before` finished) and tells the parent.
    pub(crate) fn mark_started(&self, i: usize) {
        if let Some(c) = self.cells(i) {
            c.started.store(1, Ordering::Release);
        }
        self.map.ring_others(self.me, R_STARTED);
    }

    /// A child asks the whole tree to stop.
    pub(crate) fn request_stop_all(&self, reason: &StopReason) {
        let h = self.map.header();
        let (k, text) = match reason {
            StopReason::Finished(t) => (1, t),
            StopReason::Failure(t) => (2, t),
            StopReason::Requested(t) => (3, t),
        };
        if h.stop_kind
            .compare_exchange(0, u32::MAX, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
        {
            h.stop_text.set(text);
            h.stop_kind.store(k, Ordering::Release);
        }
    }

    /// Sends one log record to the creator's log (dropped and counted when the ring is full).
    pub(crate) fn log(&self, rec: LogRec) {
        let p = self.log_producer.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(p) = p.as_ref() {
            let h = self.map.header();
            match h.log_lock.lock(LOCK_TRIES) {
                Some(_g) => {
                    p.push(rec);
                }
                None => p.count_drop(),
            }
        }
    }

    /// Starts this process's relay thread for the region (once).
    pub fn start_relay(self: &Arc<Self>) -> io::Result<()> {
        let mut slot = self.relay.lock().unwrap_or_else(|e| e.into_inner());
        if slot.is_some() {
            return Ok(());
        }
        let quit = Arc::new(AtomicBool::new(false));
        let (weak, map, me, q) = (
            Arc::downgrade(self),
            self.map.clone(),
            self.me,
            quit.clone(),
        );
        let thread = std::thread::Builder::new()
            .name(format!("relay-{}", cut(&self.name, 9)))
            .spawn(move || relay_loop(&weak, &map, me, &q))?;
        *slot = Some(Relay {
            quit,
            thread: Some(thread),
        });
        Ok(())
    }

    /// Handles whatever is pending now (the relay does this on every wake-up).
    fn handle(self: &Arc<Self>, reasons: u32) {
        let h = self.map.header();
        let registry = self.lock_local().registry.upgrade();
        if self.me == 0 {
            if reasons & R_NEW != 0 || reasons & R_STARTED != 0 {
                self.adopt_new(registry.as_ref());
            }
            // A stop-all asked for in the subtree, with its reason, before its flag is taken.
            let k = h.stop_kind.load(Ordering::Acquire);
            if (1..=3).contains(&k)
                && let Some(r) = &registry
                && !r.is_stopping()
            {
                let text = h.stop_text.get();
                r.request_stop_all(match k {
                    1 => StopReason::Finished(text),
                    2 => StopReason::Failure(text),
                    _ => StopReason::Requested(text),
                });
            }
            self.drain_log();
        }
        if reasons & R_FLAGS != 0 {
            let (imports, handles) = {
                let l = self.lock_local();
                let mut imports = Vec::new();
                let mut handles = Vec::new();
                for (i, f) in l.flags.iter().enumerate() {
                    if let Some(f) = f {
                        if l.mirrored[i] {
                            if let Some(v) = f.foreign_write(&self.map.flag_slot(i).word) {
                                imports.push((f.clone(), v));
                            }
                        } else {
                            handles.push(f.clone());
                        }
                    }
                }
                handles.extend(l.stops.iter().chain(l.pauses.iter()).flatten().cloned());
                (imports, handles)
            };
            for (f, v) in imports {
                f.import(v);
            }
            for f in handles {
                f.wake_all();
            }
        }
        if reasons & R_MAIL != 0 {
            let entries: Vec<Arc<Entry>> = self
                .lock_local()
                .runs_here
                .iter()
                .filter_map(Weak::upgrade)
                .collect();
            for e in entries {
                if e.has_mail() {
                    e.waker.wake();
                }
            }
        }
        if reasons & R_RING != 0 {
            let regs = self.consumers.lock().unwrap_or_else(|e| e.into_inner());
            for r in regs.iter() {
                r.wake_if_rung();
            }
        }
        if reasons & R_DIRTY != 0
            && let Some(r) = &registry
        {
            r.notify_changed();
        }
        if reasons & R_STARTED != 0 {
            let ls: Vec<Arc<Waker>> = self
                .lock_local()
                .listeners
                .iter()
                .filter_map(Weak::upgrade)
                .collect();
            for w in ls {
                w.wake();
            }
        }
    }

    /// Creator: registers entries (and groups) children added into the tree's registry.
    fn adopt_new(&self, registry: Option<&Arc<Registry>>) {
        let Some(registry) = registry else {
            return;
        };
        let n = self.entries_used();
        let mut local = self.lock_local();
        for i in 0..n {
            if local.adopted[i] || self.map.cells(i).used.load(Ordering::Acquire) != 2 {
                continue;
            }
            local.adopted[i] = true;
            let e = self.entry_locked(&mut local, registry, i, Vec::new());
            if let Err(why) = registry.adopt(e) {
                log::warn!("{}: {why}", self.name);
            }
        }
        // Waiting groups made inside the subtree become findable by name.
        let flags = (self.map.header().flags_used.load(Ordering::Acquire) as usize).min(MAX_FLAGS);
        for i in 0..flags {
            if !local.mirrored[i]
                && let Some(f) = self.flag_of(&mut local, 1 + i as u32)
            {
                registry.add_group(&f);
            }
        }
    }

    /// Creator: forwards children's log records to this process's log.
    fn drain_log(&self) {
        let mut l = self.lock_local();
        let Some(c) = l.log.as_ref() else {
            return;
        };
        loop {
            while let Some(r) = c.pop() {
                forward(&r);
            }
            if c.sleep_ready() {
                break;
            }
        }
        let d = c.dropped();
        if d != l.log_dropped_seen {
            let new = d - l.log_dropped_seen;
            l.log_dropped_seen = d;
            drop(l);
            log::warn!(
                "{}: child log ring full: {new} messages dropped ({d} in total)",
                self.name
            );
        }
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        if let Some(r) = self
            .relay
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            r.quit.store(true, Ordering::Release);
            self.map.ring_bell(self.me, R_QUIT);
            // Not joined: the last reference may be dropped on the relay thread itself.
            drop(r.thread);
        }
        if self.me != 0 {
            self.map.header().bells[self.me as usize]
                .pid
                .store(0, Ordering::Release);
        }
    }
}

fn relay_loop(weak: &Weak<Region>, map: &Arc<Mapping>, me: u32, quit: &AtomicBool) {
    let b = &map.header().bells[me as usize];
    // Whatever happened before the relay started.
    let mut reasons = !R_QUIT;
    loop {
        if quit.load(Ordering::Acquire) {
            return;
        }
        if reasons != 0 {
            match weak.upgrade() {
                Some(r) => r.handle(reasons),
                None => return,
            }
        }
        b.waiting.store(1, Ordering::SeqCst);
        let seq = b.seq.load(Ordering::SeqCst);
        reasons = b.reasons.swap(0, Ordering::SeqCst) & !R_QUIT;
        if reasons == 0 && !quit.load(Ordering::Acquire) {
            futex_wait(&b.seq, seq);
            reasons = b.reasons.swap(0, Ordering::SeqCst) & !R_QUIT;
        }
        b.waiting.store(0, Ordering::SeqCst);
    }
}

/// Tests of the region in one process (two views of the same memory stand in for two
/// processes; tests/framework.rs runs real ones).
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attach_checks_the_region() {
        let r = Region::builder("t").ring::<u64>("n", 8).build().unwrap();
        let dup = r.fd().try_clone_to_owned().unwrap();
        let child = Region::attach(dup, "t").unwrap();
        assert_eq!(child.me(), 1);
        let p = child.producer::<u64>("n").unwrap();
        let c = r.consumer::<u64>("n").unwrap();
        assert!(p.push(7));
        assert_eq!(c.pop(), Some(7));
        assert!(matches!(
            child.producer::<u32>("n"),
            Err(ShmError::RingType { .. })
        ));
        assert!(matches!(
            child.producer::<u64>("x"),
            Err(ShmError::NoRing { .. })
        ));
        // A memfd that is not a region is refused.
        let other = memfd_create("x", MFdFlags::MFD_ALLOW_SEALING).unwrap();
        nix::unistd::ftruncate(&other, RINGS_OFF as i64 + 4096).unwrap();
        assert!(Region::attach(other, "x").is_err());
    }
}
