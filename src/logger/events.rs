//! `events.log`: one line per event, `UTC mono=SECONDS KIND key=value ...`, for humans and grep.
//!
//! Kinds: `session-start`, `session-end`, `dropout` (a queue was full: source, sink, count,
//! first and last time), `state` (a processor's state or note changed: device lost, reopened,
//! paused ...), `clock` (GPS time known with the offset to the system clock, or the system
//! clock jumped), `rotate`, `degraded` / `resumed` (`cause=write`: disk full or write errors;
//! `cause=fsync`: a sync failed, with the file), `session-deleted` (free-space floor, from the
//! housekeeping pool's `free-space` job).

use std::io::Write;

use crate::clock::{boot_ns, wall_ns};
use crate::formats::utc::{write_mono, write_utc};

/// A complete event line stamped now.
pub fn line(kind: &str, args: std::fmt::Arguments<'_>) -> Vec<u8> {
    let mut v = Vec::with_capacity(128);
    write_utc(&mut v, wall_ns());
    v.extend_from_slice(b" mono=");
    write_mono(&mut v, boot_ns());
    let _ = write!(v, " {kind} {args}");
    v.retain(|&b| b != b'\n');
    v.push(b'\n');
    v
}

/// Checks an `events.log` line's shape (for `harmony log check`).
pub fn valid(line: &str) -> bool {
    let mut f = line.splitn(4, ' ');
    let (Some(t), Some(m), Some(k)) = (f.next(), f.next(), f.next()) else {
        return false;
    };
    crate::formats::utc::parse_utc(t).is_some()
        && m.strip_prefix("mono=")
            .is_some_and(|s| s.parse::<f64>().is_ok())
        && !k.is_empty()
        && k.bytes().all(|b| b.is_ascii_lowercase() || b == b'-')
}
