//! MAVLink 2 message signing with a timestamp the firmware owns.
//!
//! The `mavlink` crate signs with a timestamp it starts at zero and cannot be seeded, and its
//! reader drops bad frames without saying why. The Pi has no real-time clock, so the signing
//! guide's rules need both: start from the larger of the persisted timestamp and the clock,
//! and count each kind of rejection. So this module signs raw frames itself (with the crate's
//! SHA-256/48 over the frame) and verifies them itself:
//!
//! * [`Signer`]: timestamps in 10 µs units since 2015-01-01, each at least one above the last,
//!   never behind the wall clock, and advancing with the boot clock when the wall clock is
//!   unset. A higher timestamp from a correctly signed frame moves it on (the key holder's
//!   clock); GPS time only up to [`GPS_MAX_AHEAD_TICKS`] past the boot-anchored estimate, so a
//!   spoofed or broken receiver cannot push it (and the saved state) years ahead.
//! * [`Verifier`]: rejects unsigned frames, bad signatures, a stream's old or repeated
//!   timestamps, and new streams more than a minute behind (the guide's rules). Its per-stream
//!   table is saved with the timestamp ([`super::persist`]), so a frame recorded before a
//!   restart is still refused after it.
//!
//! At start the signer uses `max(clock, stored)` (the guide's rule): the state is saved every
//! `signing_save_s` and at stop, so quick restarts do not drift ahead of a correctly clocked
//! ground. After a crash up to one save interval of our own timestamps may be used again; a
//! ground that heard them ignores our frames until our clock passes them (seconds), which is
//! the cost of not drifting: drift locks out every new ground that speaks first.

use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use mavlink::consts::v2::{IFLAG_SIGNED, SIGNATURE_VALUE_SIZE};
use mavlink::{MAVLinkMessageRaw, MAVLinkV2MessageRaw};

/// A MAVLink signing key's length.
pub const KEY_LEN: usize = 32;
/// 2015-01-01T00:00:00Z in Unix seconds: the signing timestamps' epoch.
pub const EPOCH_2015_S: u64 = 1_420_070_400;
/// One minute in signing ticks (10 µs): how far behind a new stream may start.
pub const MINUTE_TICKS: u64 = 6_000_000;
/// How often the timestamp is written out (the guide asks for at least once a minute).
pub const PERSIST_EVERY: Duration = Duration::from_secs(30);
/// How far GPS time may move the signer past its boot-anchored estimate (30 s): below the
/// verifier's one-minute window, so even a saved GPS lead leaves a correctly clocked ground
/// accepted after a restart.
pub const GPS_MAX_AHEAD_TICKS: u64 = MINUTE_TICKS / 2;
/// Streams remembered by a verifier; the stalest is forgotten beyond this.
pub const MAX_STREAMS: usize = 32;

/// Why a key file was refused.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("{path} is not a regular file")]
    NotAFile { path: PathBuf },
    #[error(
        "{path} is accessible by group or others (mode {mode:03o}); it must be readable by the service user only (chmod 600)"
    )]
    Permissions { path: PathBuf, mode: u32 },
    #[error(
        "{path} holds {len} bytes; a signing key is exactly 32 raw bytes (head -c 32 /dev/urandom > FILE)"
    )]
    Size { path: PathBuf, len: u64 },
}

impl KeyError {
    /// The file is not there (yet): on the Pi the image makes it on first boot.
    pub fn is_missing(&self) -> bool {
        matches!(self, KeyError::Read { source, .. } if source.kind() == io::ErrorKind::NotFound)
    }
}

/// Reads a 32-byte key, refusing files others could read and files of the wrong size.
pub fn load_key(path: &Path) -> Result<[u8; KEY_LEN], KeyError> {
    let read = |source| KeyError::Read {
        path: path.to_owned(),
        source,
    };
    let meta = fs::metadata(path).map_err(read)?;
    if !meta.is_file() {
        return Err(KeyError::NotAFile {
            path: path.to_owned(),
        });
    }
    let mode = meta.mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(KeyError::Permissions {
            path: path.to_owned(),
            mode,
        });
    }
    if meta.len() != KEY_LEN as u64 {
        return Err(KeyError::Size {
            path: path.to_owned(),
            len: meta.len(),
        });
    }
    let bytes = fs::read(path).map_err(read)?;
    bytes.as_slice().try_into().map_err(|_| KeyError::Size {
        path: path.to_owned(),
        len: bytes.len() as u64,
    })
}

/// Signing ticks (10 µs since 2015) of a Unix time in nanoseconds; 0 before 2015.
pub fn ticks_of_unix_ns(ns: i64) -> u64 {
    let us = (ns.max(0) as u64) / 1000;
    us.saturating_sub(EPOCH_2015_S * 1_000_000) / 10
}

/// Signing ticks of the wall clock now (0 while the Pi's clock is unset, i.e. before 2015).
pub fn clock_ticks() -> u64 {
    ticks_of_unix_ns(crate::clock::wall_ns())
}

/// Outgoing timestamps (see the module docs).
pub struct Signer {
    key: [u8; KEY_LEN],
    link_id: u8,
    last: u64,
    /// The boot-anchored estimate: `anchor_ticks` at `anchor_at`, advancing with the boot
    /// clock; set at start and moved by correctly signed frames, never by GPS.
    anchor_at: Instant,
    anchor_ticks: u64,
    /// Whether the estimate stands on anything (a set clock or a stored timestamp). Without
    /// one (first boot, clock unset) the first GPS time is taken whole.
    anchored: bool,
}

impl Signer {
    /// A signer whose first timestamp is above `start` (and above the clock).
    pub fn new(key: [u8; KEY_LEN], link_id: u8, start: u64) -> Self {
        let start = start.max(clock_ticks());
        Signer {
            key,
            link_id,
            last: start,
            anchor_at: Instant::now(),
            anchor_ticks: start,
            anchored: start > 0,
        }
    }

    pub fn key(&self) -> &[u8; KEY_LEN] {
        &self.key
    }

    /// The boot-anchored estimate of the time (or the wall clock, if later).
    pub fn estimate(&self) -> u64 {
        let mono = self.anchor_ticks + (self.anchor_at.elapsed().as_micros() / 10) as u64;
        mono.max(clock_ticks())
    }

    /// The current time as this signer knows it: the estimate, or the last timestamp used or
    /// adopted, whichever is larger.
    pub fn now(&self) -> u64 {
        self.last.max(self.estimate())
    }

    /// The last timestamp used or adopted.
    pub fn last(&self) -> u64 {
        self.last
    }

    /// Adopts a later time from a correctly signed frame (the key holder's clock).
    pub fn observe(&mut self, ticks: u64) {
        if ticks > self.now() {
            self.last = ticks;
            self.anchor_at = Instant::now();
            self.anchor_ticks = ticks;
            self.anchored = true;
        }
    }

    /// Adopts GPS time, at most [`GPS_MAX_AHEAD_TICKS`] past the estimate (taken whole while
    /// the estimate stands on nothing). Returns whether it was held back.
    pub fn observe_gps(&mut self, ticks: u64) -> bool {
        if !self.anchored {
            self.observe(ticks);
            return false;
        }
        let cap = self.estimate().saturating_add(GPS_MAX_AHEAD_TICKS);
        if ticks.min(cap) > self.last {
            self.last = ticks.min(cap);
        }
        ticks > cap
    }

    fn next(&mut self) -> u64 {
        let t = self.now().max(self.last + 1);
        self.last = t;
        t
    }

    /// Stamps and signs a frame serialized with `serialize_message_for_signing`.
    pub fn sign(&mut self, raw: &mut MAVLinkV2MessageRaw) {
        *raw.signature_link_id_mut() = self.link_id;
        let ts = self.next().to_le_bytes();
        raw.signature_timestamp_bytes_mut()
            .copy_from_slice(&ts[..6]);
        let mut sig = [0u8; SIGNATURE_VALUE_SIZE];
        raw.calculate_signature(&self.key, &mut sig);
        raw.signature_value_mut().copy_from_slice(&sig);
    }
}

/// What the verifier made of a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Correctly signed and new; its timestamp.
    Accepted(u64),
    /// MAVLink 1, or MAVLink 2 without a signature.
    Unsigned,
    BadSignature,
    /// Correctly signed, but not newer than the stream's last frame, or a new stream more
    /// than a minute behind.
    Replayed,
}

/// Rejections counted by a [`Verifier`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Rejections {
    pub unsigned: u64,
    pub bad_signature: u64,
    pub replayed: u64,
}

impl Rejections {
    pub fn total(&self) -> u64 {
        self.unsigned + self.bad_signature + self.replayed
    }
}

/// Incoming frames (see the module docs).
pub struct Verifier {
    key: [u8; KEY_LEN],
    /// `(link id, system, component)` -> last accepted timestamp.
    streams: Vec<((u8, u32, u8), u64)>,
    pub rejected: Rejections,
    pub accepted: u64,
}

impl Verifier {
    pub fn new(key: [u8; KEY_LEN]) -> Self {
        Verifier {
            key,
            streams: Vec::with_capacity(MAX_STREAMS),
            rejected: Rejections::default(),
            accepted: 0,
        }
    }

    /// The per-stream table: `((link id, system, component), last timestamp)`.
    pub fn streams(&self) -> &[((u8, u32, u8), u64)] {
        &self.streams
    }

    /// Takes back a saved table (at most [`MAX_STREAMS`] entries, the newest kept).
    pub fn restore(&mut self, streams: &[((u8, u32, u8), u64)]) {
        self.streams.clear();
        self.streams.extend_from_slice(streams);
        if self.streams.len() > MAX_STREAMS {
            self.streams.sort_by_key(|(_, t)| std::cmp::Reverse(*t));
            self.streams.truncate(MAX_STREAMS);
        }
    }

    /// Judges `raw` against the local time `now` (signing ticks) and counts the outcome.
    pub fn check(&mut self, raw: &MAVLinkMessageRaw, now: u64) -> Verdict {
        let v = self.judge(raw, now);
        match v {
            Verdict::Accepted(_) => self.accepted += 1,
            Verdict::Unsigned => self.rejected.unsigned += 1,
            Verdict::BadSignature => self.rejected.bad_signature += 1,
            Verdict::Replayed => self.rejected.replayed += 1,
        }
        v
    }

    fn judge(&mut self, raw: &MAVLinkMessageRaw, now: u64) -> Verdict {
        let MAVLinkMessageRaw::V2(m) = raw else {
            return Verdict::Unsigned;
        };
        if m.incompatibility_flags() & IFLAG_SIGNED == 0 {
            return Verdict::Unsigned;
        }
        let mut sig = [0u8; SIGNATURE_VALUE_SIZE];
        m.calculate_signature(&self.key, &mut sig);
        if sig != m.signature_value() {
            return Verdict::BadSignature;
        }
        let ts = m.signature_timestamp();
        let key = (m.signature_link_id(), m.system_id(), m.component_id());
        match self.streams.iter_mut().find(|(k, _)| *k == key) {
            Some((_, last)) => {
                if ts <= *last {
                    return Verdict::Replayed;
                }
                *last = ts;
            }
            None => {
                if ts + MINUTE_TICKS < now {
                    return Verdict::Replayed;
                }
                if self.streams.len() >= MAX_STREAMS
                    && let Some(i) = self
                        .streams
                        .iter()
                        .enumerate()
                        .min_by_key(|(_, (_, t))| *t)
                        .map(|(i, _)| i)
                {
                    self.streams.swap_remove(i);
                }
                self.streams.push((key, ts));
            }
        }
        Verdict::Accepted(ts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mavlink::dialects::common::{MavMessage, MavState, MavType};
    use mavlink::{MavHeader, MavlinkReader, MavlinkVersion, SigningConfig, SigningData};

    fn ping() -> MavMessage {
        crate::uplink::frame::heartbeat(MavType::MAV_TYPE_GCS, MavState::MAV_STATE_ACTIVE)
    }

    fn signed(s: &mut Signer, sys: u32) -> MAVLinkV2MessageRaw {
        let mut raw = MAVLinkV2MessageRaw::new();
        raw.serialize_message_for_signing(
            MavHeader {
                system_id: sys,
                component_id: 1,
                sequence: 0,
            },
            &ping(),
        );
        s.sign(&mut raw);
        raw
    }

    #[test]
    fn our_signatures_verify_with_the_crate_and_ours() {
        let mut s = Signer::new([5; 32], 3, 0);
        let raw = signed(&mut s, 1);
        let crate_rx = SigningData::from_config(SigningConfig::new([5; 32], 0, false, false));
        let mut r = MavlinkReader::new(raw.raw_bytes());
        let (_, m) = r
            .read_message_signed::<MavMessage>(MavlinkVersion::V2, Some(&crate_rx))
            .unwrap();
        assert_eq!(m, ping());
        let mut v = Verifier::new([5; 32]);
        let now = s.now();
        let r2 = MAVLinkMessageRaw::V2(raw);
        assert!(matches!(v.check(&r2, now), Verdict::Accepted(_)));
        assert_eq!(v.check(&r2, now), Verdict::Replayed);
        let mut wrong = Verifier::new([6; 32]);
        assert_eq!(wrong.check(&r2, now), Verdict::BadSignature);
        let mut unsigned = MAVLinkV2MessageRaw::new();
        unsigned.serialize_message(MavHeader::default(), &ping());
        assert_eq!(
            v.check(&MAVLinkMessageRaw::V2(unsigned), now),
            Verdict::Unsigned
        );
        assert_eq!(
            v.rejected,
            Rejections {
                unsigned: 1,
                bad_signature: 0,
                replayed: 1
            }
        );
    }

    #[test]
    fn timestamps_rise_and_start_beyond_the_stored_one() {
        let future = clock_ticks() + 1000 * MINUTE_TICKS;
        let mut s = Signer::new([0; 32], 0, future);
        let a = signed(&mut s, 1).signature_timestamp();
        let b = signed(&mut s, 1).signature_timestamp();
        assert!(a > future, "{a} {future}");
        assert!(b > a);
        // A new stream a minute behind is refused; one within the minute is taken.
        let mut old = Signer::new([0; 32], 0, 0);
        let mut v = Verifier::new([0; 32]);
        let r = MAVLinkMessageRaw::V2(signed(&mut old, 9));
        assert_eq!(v.check(&r, future), Verdict::Replayed);
        assert!(matches!(v.check(&r, old.now()), Verdict::Accepted(_)));
        // Adopting a later time moves the signer on.
        s.observe(future + 5 * MINUTE_TICKS);
        assert!(signed(&mut s, 1).signature_timestamp() > future + 5 * MINUTE_TICKS);
    }

    // Issue #11: a GPS years ahead moves the signer at most GPS_MAX_AHEAD_TICKS past its
    // estimate; a correctly signed frame (the key holder's clock) moves it freely.
    #[test]
    fn gps_time_is_bounded_by_the_boot_anchored_estimate() {
        let now = clock_ticks();
        let mut s = Signer::new([0; 32], 0, now);
        let years = now + 3 * 365 * 24 * 60 * MINUTE_TICKS;
        assert!(s.observe_gps(years), "held back");
        assert!(s.now() <= s.estimate() + GPS_MAX_AHEAD_TICKS, "{}", s.now());
        assert!(s.now() >= now + GPS_MAX_AHEAD_TICKS);
        assert!(
            !s.observe_gps(now + 100),
            "a GPS time within the bound is not held back"
        );
        s.observe(years);
        assert!(s.now() >= years);
        // With nothing to stand on (clock unset, nothing stored) the first GPS time is taken.
        let mut bare = Signer {
            anchored: false,
            anchor_ticks: 0,
            last: 0,
            ..Signer::new([0; 32], 0, 0)
        };
        assert!(!bare.observe_gps(years));
        assert!(bare.now() >= years);
    }

    #[test]
    fn verifier_table_restores_bounded() {
        let mut v = Verifier::new([0; 32]);
        let table: Vec<_> = (0..40u32).map(|i| ((1, i, 1), 100 + i as u64)).collect();
        v.restore(&table);
        assert_eq!(v.streams().len(), MAX_STREAMS);
        assert!(v.streams().iter().all(|(_, t)| *t >= 108));
    }
}
