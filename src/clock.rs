//! Timestamps: the boot clock for ordering and intervals, the wall clock for humans and tools.
//!
//! The Pi has no real-time clock, so at boot the wall clock may be years off until NTP or the
//! GPS sets it; every record therefore carries both. `CLOCK_BOOTTIME` keeps counting through
//! suspend, and both reads are vDSO calls (no system call) on Linux.

use nix::time::{ClockId, clock_gettime};

/// A moment on both clocks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stamp {
    /// Nanoseconds on `CLOCK_BOOTTIME`.
    pub boot_ns: u64,
    /// Nanoseconds since the Unix epoch on `CLOCK_REALTIME` (may jump when the clock is set).
    pub wall_ns: i64,
}

impl Stamp {
    #[inline]
    pub fn now() -> Self {
        Stamp {
            boot_ns: boot_ns(),
            wall_ns: wall_ns(),
        }
    }
}

/// Nanoseconds on the boot clock.
#[inline]
pub fn boot_ns() -> u64 {
    clock_gettime(ClockId::CLOCK_BOOTTIME)
        .map(|t| t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64)
        .unwrap_or(0)
}

/// Nanoseconds since the Unix epoch on the wall clock.
#[inline]
pub fn wall_ns() -> i64 {
    clock_gettime(ClockId::CLOCK_REALTIME)
        .map(|t| t.tv_sec() * 1_000_000_000 + t.tv_nsec())
        .unwrap_or(0)
}

/// The wall clock is before 2020: the Pi booted without network or GPS time yet.
pub fn wall_clock_plausible(wall_ns: i64) -> bool {
    const Y2020: i64 = 1_577_836_800; // 2020-01-01T00:00:00Z
    wall_ns / 1_000_000_000 >= Y2020
}
