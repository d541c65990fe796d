//! NMEA 0183 intake: bytes from a receiver in, checksum-verified sentences and fixes out.
//!
//! Framing follows gpsd's packet lexer, so the firmware accepts what gpsd accepts (the tests
//! check this against gpsd's own regression captures):
//! * a sentence starts at `$` (or `!`) and ends at `\n`; `\r` before it is kept as received;
//! * a `$` inside a sentence starts a new one, the unfinished one is dropped (a receiver that
//!   loses bytes runs two sentences together);
//! * a non-printable byte inside a sentence drops it; bytes between sentences are noise;
//! * a sentence needs `*hh` and a matching checksum;
//! * a sentence longer than 130 bytes including its terminator (gpsd's `NMEA_MAX`) is dropped.
//!
//! Accepted sentences are parsed with the `nmea` crate; GGA / RMC / GLL / VTG / ZDA feed a
//! [`FixBuilder`], which emits one [`Fix`] per epoch, merged from that epoch's sentences only
//! (gpsd's cycle rules, see [`FixBuilder`]). Sentences the parser does not know are still
//! accepted and logged, and counted as `unparsed`; a number read as infinity or NaN keeps its
//! sentence out of the fix and is counted as `non_finite`. Nothing here allocates.

use chrono::{Datelike, NaiveDate, NaiveTime, Timelike};

use crate::clock::Stamp;
use crate::records::{Fix, FixQuality, NMEA_MAX, Sentence};

/// Why a candidate sentence was dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reject {
    /// `*hh` present but wrong.
    BadChecksum,
    /// No `*hh` at the end.
    NoChecksum,
    /// Longer than [`NMEA_MAX`] bytes.
    Overlong,
    /// Cut short by a new `$`, or broken by a non-printable byte.
    Fragment,
}

/// Counters of everything the intake saw. `accepted + rejected()` = sentences seen.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IntakeCounters {
    pub bytes: u64,
    pub accepted: u64,
    pub bad_checksum: u64,
    pub no_checksum: u64,
    pub overlong: u64,
    pub fragments: u64,
    /// Bytes outside any sentence.
    pub noise_bytes: u64,
    /// Accepted sentences the `nmea` parser did not understand (still logged).
    pub unparsed: u64,
    /// Accepted sentences with an infinite or NaN number (logged raw, not merged into a fix).
    pub non_finite: u64,
}

impl IntakeCounters {
    pub fn rejected(&self) -> u64 {
        self.bad_checksum + self.no_checksum + self.overlong + self.fragments
    }
}

/// What the intake reports for each candidate sentence.
#[derive(Debug, PartialEq, Eq)]
pub enum Event<'a> {
    /// A valid sentence, exactly as received (terminator included).
    Accepted(&'a [u8]),
    Rejected(Reject),
}

/// Splits a byte stream into sentences (see the module docs).
pub struct Intake {
    buf: [u8; NMEA_MAX],
    len: usize,
    in_sentence: bool,
    overlong: bool,
    pub counters: IntakeCounters,
}

impl Default for Intake {
    fn default() -> Self {
        Self::new()
    }
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Checks `$....*hh` (terminator already stripped).
fn verify(s: &[u8]) -> Result<(), Reject> {
    let Some(star) = s.iter().rposition(|&b| b == b'*') else {
        return Err(Reject::NoChecksum);
    };
    let tail = &s[star + 1..];
    if tail.len() != 2 {
        return Err(Reject::NoChecksum);
    }
    let (Some(h), Some(l)) = (hex(tail[0]), hex(tail[1])) else {
        return Err(Reject::NoChecksum);
    };
    let sum = s[1..star].iter().fold(0u8, |a, &b| a ^ b);
    if sum == (h << 4 | l) {
        Ok(())
    } else {
        Err(Reject::BadChecksum)
    }
}

impl Intake {
    pub fn new() -> Self {
        Intake {
            buf: [0; NMEA_MAX],
            len: 0,
            in_sentence: false,
            overlong: false,
            counters: IntakeCounters::default(),
        }
    }

    /// Forgets a partial sentence (after a reopen or a baud change).
    pub fn reset(&mut self) {
        self.len = 0;
        self.in_sentence = false;
        self.overlong = false;
    }

    fn reject(&mut self, r: Reject, f: &mut impl FnMut(Event<'_>)) {
        match r {
            Reject::BadChecksum => self.counters.bad_checksum += 1,
            Reject::NoChecksum => self.counters.no_checksum += 1,
            Reject::Overlong => self.counters.overlong += 1,
            Reject::Fragment => self.counters.fragments += 1,
        }
        f(Event::Rejected(r));
    }

    /// Feeds received bytes; calls `f` for every sentence completed or dropped.
    pub fn feed(&mut self, bytes: &[u8], mut f: impl FnMut(Event<'_>)) {
        self.counters.bytes += bytes.len() as u64;
        for &b in bytes {
            match b {
                b'$' | b'!' => {
                    if self.in_sentence {
                        self.reject(Reject::Fragment, &mut f);
                    }
                    self.in_sentence = true;
                    self.overlong = false;
                    self.buf[0] = b;
                    self.len = 1;
                }
                _ if !self.in_sentence => self.counters.noise_bytes += 1,
                b'\n' => {
                    self.in_sentence = false;
                    if self.overlong || self.len + 1 > NMEA_MAX {
                        self.reject(Reject::Overlong, &mut f);
                        continue;
                    }
                    self.buf[self.len] = b'\n';
                    let whole = self.len + 1;
                    let mut end = self.len;
                    while end > 0 && self.buf[end - 1] == b'\r' {
                        end -= 1;
                    }
                    match verify(&self.buf[..end]) {
                        Ok(()) => {
                            self.counters.accepted += 1;
                            f(Event::Accepted(&self.buf[..whole]));
                        }
                        Err(r) => self.reject(r, &mut f),
                    }
                }
                b'\r' | 0x20..=0x7e => {
                    if self.len < NMEA_MAX {
                        self.buf[self.len] = b;
                        self.len += 1;
                    } else {
                        self.overlong = true;
                    }
                }
                _ => {
                    // Non-printable inside a sentence: line noise, as gpsd's lexer sees it.
                    self.in_sentence = false;
                    self.counters.noise_bytes += 1;
                    self.reject(Reject::Fragment, &mut f);
                }
            }
        }
    }
}

/// Builds a [`Sentence`] record from accepted bytes.
pub fn sentence(stamp: Stamp, bytes: &[u8]) -> Sentence {
    // The intake never accepts more than NMEA_MAX bytes.
    Sentence {
        stamp,
        bytes: crate::records::Bytes::from_slice(&bytes[..bytes.len().min(NMEA_MAX)]),
    }
}

/// Knots to metres per second (1852 m per nautical mile), as gpsd's `KNOTS_TO_MPS`.
const KNOT_MPS: f32 = 1852.0 / 3600.0;

const DAY_NS: i64 = 86_400_000_000_000;

/// gpsd starts a new cycle when a sentence's time moves by more than 10 ms.
const EPOCH_SLACK_NS: i64 = 10_000_000;

fn tod_ns(t: &NaiveTime) -> i64 {
    t.num_seconds_from_midnight() as i64 * 1_000_000_000 + t.nanosecond().min(999_999_999) as i64
}

fn days_from_ce(d: NaiveDate) -> i64 {
    d.num_days_from_ce() as i64 - 719_163
}

fn quality(q: Option<nmea::sentences::FixType>) -> FixQuality {
    use nmea::sentences::FixType as F;
    match q {
        Some(F::Gps) => FixQuality::Gps,
        Some(F::DGps) => FixQuality::DGps,
        Some(F::Pps) => FixQuality::Pps,
        Some(F::Rtk) => FixQuality::Rtk,
        Some(F::FloatRtk) => FixQuality::FloatRtk,
        Some(F::Estimated) => FixQuality::Estimated,
        Some(F::Manual) => FixQuality::Manual,
        Some(F::Simulation) => FixQuality::Simulation,
        _ => FixQuality::Invalid,
    }
}

/// What [`FixBuilder::update`] made of a sentence.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Parsed {
    /// Merged into the epoch (or a sentence without fix data, such as GSV).
    Understood,
    /// The parser does not know it (still logged raw, counted as `unparsed`).
    Unparsed,
    /// A number field read as infinity or NaN: the sentence is not merged (counted).
    NonFinite,
}

/// The sentences whose time marks an epoch (gpsd's "fractional time" sentences; ZDA only
/// dates, as in gpsd, so a receiver that sends it now and then keeps a steady cycle).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Tag {
    Gga,
    Rmc,
    Gll,
}

/// Whether a field of a fix sentence reads as infinity or NaN (`inf`, `-NaN`, `Infinity`...),
/// which Rust's float parsing would accept but no receiver means.
fn has_non_finite_field(text: &str) -> bool {
    let kind = text.get(3..6).unwrap_or("");
    if !matches!(kind, "GGA" | "RMC" | "GLL" | "VTG" | "ZDA") {
        return false;
    }
    let body = text.split('*').next().unwrap_or(text);
    body.split(',').any(|f| {
        let f = f.trim_start_matches(['+', '-']);
        ["inf", "nan", "infinity"]
            .iter()
            .any(|w| f.eq_ignore_ascii_case(w))
    })
}

fn finite64(v: &[Option<f64>]) -> bool {
    v.iter().flatten().all(|x| x.is_finite())
}

fn finite32(v: &[Option<f32>]) -> bool {
    v.iter().flatten().all(|x| x.is_finite())
}

/// Merges the sentences of one epoch into one fix, epoch by epoch, as gpsd does.
///
/// An epoch starts with the first sentence whose time of day differs from the epoch's (by more
/// than 10 ms); that clears the fix. It ends with its cycle ender: the kind of the last
/// timestamped sentence of an epoch, learned per receiver (GGA-first receivers end with RMC,
/// RMC-first ones with GGA or GLL). The fix goes out when the ender arrives, or, if it never
/// does (first epoch, lost sentence), when the next epoch starts. So position, speed and course
/// always come from the same epoch, and each epoch gives at most one fix. Unlike gpsd, which
/// only ever adds enders (and then reports several times per epoch), the ender moves: at once
/// to a later sentence when timestamped sentences follow it in its epoch, and to the epoch's
/// last one when it is missing from two epochs in a row (one lost sentence does not move it).
///
/// The date comes from RMC/ZDA; a fix is dated with the last date known, rolled over to the
/// next (or previous) day when its time of day is more than 12 h away from the dated one, so
/// the date turns at UTC midnight with the time. Before any date a fix has no `utc_ns`.
#[derive(Default)]
pub struct FixBuilder {
    fix: Fix,
    /// Time of day of the epoch being merged, ns.
    epoch: Option<i64>,
    /// Something was merged into the epoch's fix.
    pending: bool,
    /// The epoch's fix went out (later sentences of the epoch merge but give no second fix).
    done: bool,
    /// Kind of the last timestamped sentence of this epoch.
    last_tag: Option<Tag>,
    /// The cycle ender learned so far.
    ender: Option<Tag>,
    /// The ender arrived in this epoch.
    ender_seen: bool,
    /// Epochs in a row the ender was missing from.
    missed: u8,
    /// Last known date: days since 1970-01-01 and the time of day it held at, ns.
    date: Option<(i64, i64)>,
}

impl FixBuilder {
    /// Dates a time of day with the last known date (rolling over at midnight).
    fn utc(&mut self, tod: i64) -> Option<i64> {
        let (day, at) = self.date?;
        let day = if tod - at > DAY_NS / 2 {
            day - 1
        } else if at - tod > DAY_NS / 2 {
            day + 1
        } else {
            day
        };
        self.date = Some((day, tod));
        day.checked_mul(DAY_NS)?.checked_add(tod)
    }

    fn emit(&mut self, stamp: Stamp, out: &mut impl FnMut(Fix)) {
        if !self.pending || self.done {
            return;
        }
        self.done = true;
        let mut f = self.fix;
        f.stamp = stamp;
        f.time_of_day_s = self.epoch.map(|t| t as f64 * 1e-9);
        f.utc_ns = self.epoch.and_then(|t| self.utc(t));
        out(f);
    }

    /// A timestamped sentence: a new time of day ends the epoch in progress and starts one.
    fn mark(&mut self, stamp: Stamp, tag: Tag, tod: i64, out: &mut impl FnMut(Fix)) {
        let new = self.epoch.is_none_or(|e| (tod - e).abs() > EPOCH_SLACK_NS);
        if new {
            self.emit(stamp, out);
            if self.epoch.is_some() {
                self.learn_ender();
            }
            self.fix = Fix::default();
            self.epoch = Some(tod);
            self.pending = false;
            self.done = false;
        }
        self.last_tag = Some(tag);
    }

    /// At the end of an epoch: what ended it becomes the ender (see the type's docs).
    fn learn_ender(&mut self) {
        if self.ender_seen {
            self.missed = 0;
            self.ender = self.last_tag;
        } else {
            self.missed = self.missed.saturating_add(1);
            if self.ender.is_none() || self.missed >= 2 {
                self.ender = self.last_tag;
                self.missed = 0;
            }
        }
        self.ender_seen = false;
    }

    /// After merging a sentence: the cycle ender completes the epoch.
    fn ended(&mut self, stamp: Stamp, tag: Option<Tag>, out: &mut impl FnMut(Fix)) {
        if tag.is_some() && tag == self.ender {
            self.ender_seen = true;
            self.emit(stamp, out);
        }
    }

    /// The epoch in progress, if it has not gone out yet (end of input).
    pub fn flush(&mut self, stamp: Stamp, mut out: impl FnMut(Fix)) {
        self.emit(stamp, &mut out);
    }

    /// Parses an accepted sentence and merges it; `out` gets each fix completed by it (at most
    /// two: the previous epoch when its ender was missed, and this one).
    pub fn update(&mut self, stamp: Stamp, sentence: &[u8], mut out: impl FnMut(Fix)) -> Parsed {
        let text = match std::str::from_utf8(sentence) {
            Ok(t) => t.trim_end_matches(['\r', '\n']),
            Err(_) => return Parsed::Unparsed,
        };
        if has_non_finite_field(text) {
            return Parsed::NonFinite;
        }
        let Ok(parsed) = nmea::parse_str(text) else {
            return Parsed::Unparsed;
        };
        use nmea::ParseResult as P;
        use nmea::sentences::rmc::RmcStatusOfFix as S;
        let out = &mut out;
        match parsed {
            P::GGA(g) => {
                if !finite64(&[g.latitude, g.longitude])
                    || !finite32(&[g.altitude, g.hdop, g.geoid_separation])
                {
                    return Parsed::NonFinite;
                }
                if let Some(t) = &g.fix_time {
                    self.mark(stamp, Tag::Gga, tod_ns(t), out);
                }
                let f = &mut self.fix;
                if g.latitude.is_some() && g.longitude.is_some() {
                    f.lat_deg = g.latitude;
                    f.lon_deg = g.longitude;
                }
                f.alt_msl_m = g.altitude;
                f.quality = quality(g.fix_type);
                f.satellites = g.fix_satellites.map(|s| s.min(255) as u8);
                f.hdop = g.hdop;
                self.pending = true;
                self.ended(stamp, g.fix_time.map(|_| Tag::Gga), out);
            }
            P::RMC(r) => {
                if !finite64(&[r.lat, r.lon])
                    || !finite32(&[r.speed_over_ground, r.true_course, r.magnetic_variation])
                {
                    return Parsed::NonFinite;
                }
                let valid = matches!(r.status_of_fix, S::Autonomous | S::Differential);
                // As gpsd: an invalid RMC's time may be bogus (MTK), so it marks no epoch.
                let tag = match (&r.fix_time, valid) {
                    (Some(t), true) => {
                        let tod = tod_ns(t);
                        self.mark(stamp, Tag::Rmc, tod, out);
                        if let Some(d) = r.fix_date {
                            self.date = Some((days_from_ce(d), tod));
                        }
                        Some(Tag::Rmc)
                    }
                    _ => None,
                };
                let f = &mut self.fix;
                if r.speed_over_ground.is_some() {
                    f.speed_mps = r.speed_over_ground.map(|k| k * KNOT_MPS);
                }
                if r.true_course.is_some() {
                    f.course_deg = r.true_course;
                }
                if valid {
                    if r.lat.is_some() && r.lon.is_some() {
                        f.lat_deg = r.lat;
                        f.lon_deg = r.lon;
                    }
                    if f.quality == FixQuality::Invalid {
                        f.quality = match r.status_of_fix {
                            S::Differential => FixQuality::DGps,
                            _ => FixQuality::Gps,
                        };
                    }
                } else {
                    f.quality = FixQuality::Invalid;
                }
                self.pending = true;
                self.ended(stamp, tag, out);
            }
            P::GLL(g) => {
                if !finite64(&[g.latitude, g.longitude]) {
                    return Parsed::NonFinite;
                }
                if let Some(t) = &g.fix_time {
                    self.mark(stamp, Tag::Gll, tod_ns(t), out);
                }
                let f = &mut self.fix;
                if g.valid {
                    if g.latitude.is_some() && g.longitude.is_some() {
                        f.lat_deg = g.latitude;
                        f.lon_deg = g.longitude;
                    }
                    if f.quality == FixQuality::Invalid {
                        f.quality = FixQuality::Gps;
                    }
                } else {
                    f.quality = FixQuality::Invalid;
                }
                self.pending = true;
                self.ended(stamp, g.fix_time.map(|_| Tag::Gll), out);
            }
            P::VTG(v) => {
                if !finite32(&[v.speed_over_ground, v.true_course]) {
                    return Parsed::NonFinite;
                }
                let f = &mut self.fix;
                if v.speed_over_ground.is_some() {
                    f.speed_mps = v.speed_over_ground.map(|k| k * KNOT_MPS);
                }
                if v.true_course.is_some() {
                    f.course_deg = v.true_course;
                }
            }
            P::ZDA(z) => {
                if let (Some(d), Some(t)) = (z.utc_date(), &z.utc_time) {
                    self.date = Some((days_from_ce(d), tod_ns(t)));
                }
            }
            P::Unsupported(_) => return Parsed::Unparsed,
            _ => {}
        }
        Parsed::Understood
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(input: &[u8]) -> (Vec<String>, Vec<Reject>, IntakeCounters) {
        let mut i = Intake::new();
        let mut acc = Vec::new();
        let mut rej = Vec::new();
        i.feed(input, |e| match e {
            Event::Accepted(b) => acc.push(String::from_utf8(b.to_vec()).unwrap()),
            Event::Rejected(r) => rej.push(r),
        });
        (acc, rej, i.counters)
    }

    const GGA: &str = "$GPGGA,092750.000,5321.6802,N,00630.3372,W,1,8,1.03,61.7,M,55.2,M,,*76";

    #[test]
    fn accepts_a_valid_sentence_exactly_as_received() {
        let (acc, rej, c) = run(format!("{GGA}\r\n").as_bytes());
        assert_eq!(acc, [format!("{GGA}\r\n")]);
        assert!(rej.is_empty());
        assert_eq!(c.accepted, 1);
    }

    #[test]
    fn rejects_bad_and_missing_checksums() {
        let bad = GGA.replace("*76", "*77");
        let none = GGA.split('*').next().unwrap().to_owned();
        let (acc, rej, _) = run(format!("{bad}\r\n{none}\r\n").as_bytes());
        assert!(acc.is_empty());
        assert_eq!(rej, [Reject::BadChecksum, Reject::NoChecksum]);
    }

    #[test]
    fn dollar_inside_restarts_like_gpsd() {
        let input = b"$GPGGA,030130$GPGLL,2638.1728,N,08011.3893,W,030131.000,A,A*41\r\n";
        let (acc, rej, _) = run(input);
        assert_eq!(rej, [Reject::Fragment]);
        assert_eq!(
            acc,
            ["$GPGLL,2638.1728,N,08011.3893,W,030131.000,A,A*41\r\n"]
        );
    }

    #[test]
    fn overlong_lines_are_dropped_and_the_next_one_is_fine() {
        let long = format!("$GPTXT,{}*00\r\n", "x".repeat(200));
        let (acc, rej, _) = run(format!("{long}{GGA}\n").as_bytes());
        assert_eq!(rej, [Reject::Overlong]);
        assert_eq!(acc, [format!("{GGA}\n")]);
    }

    #[test]
    fn noise_and_binary_are_counted_not_fatal() {
        let mut input = b"\x00\xb5bgarbage".to_vec();
        input.extend_from_slice(format!("{GGA}\r\n$GP\x01xx\n").as_bytes());
        let (acc, rej, c) = run(&input);
        assert_eq!(acc.len(), 1);
        assert_eq!(rej, [Reject::Fragment]);
        assert!(c.noise_bytes > 5);
    }

    #[test]
    fn split_reads_reassemble() {
        let mut i = Intake::new();
        let mut n = 0;
        let all = format!("{GGA}\r\n");
        for chunk in all.as_bytes().chunks(3) {
            i.feed(chunk, |e| {
                if let Event::Accepted(_) = e {
                    n += 1
                }
            });
        }
        assert_eq!(n, 1);
    }

    /// `$BODY*hh` with its checksum.
    fn nmea(body: &str) -> String {
        let sum = body.bytes().fold(0u8, |a, b| a ^ b);
        format!("${body}*{sum:02X}")
    }

    fn feed(b: &mut FixBuilder, lines: &[String]) -> Vec<Fix> {
        let mut out = Vec::new();
        for l in lines {
            b.update(Stamp::default(), l.as_bytes(), |f| out.push(f));
        }
        out
    }

    #[test]
    fn gga_and_rmc_make_a_fix_with_date_speed_and_course() {
        let mut b = FixBuilder::default();
        let rmc = "$GPRMC,092750.000,A,5321.6802,N,00630.3372,W,0.02,31.66,280511,,,A*43";
        let next = nmea("GPRMC,092751.000,A,5321.6802,N,00630.3372,W,0.02,31.66,280511,,,A");
        let f = feed(&mut b, &[rmc.into(), GGA.into(), next]);
        assert_eq!(
            f.len(),
            1,
            "one fix for the epoch, when the next one starts"
        );
        let f = f[0];
        assert!((f.lat_deg.unwrap() - 53.361_336).abs() < 1e-5);
        assert!((f.lon_deg.unwrap() + 6.505_62).abs() < 1e-5);
        assert_eq!(f.alt_msl_m, Some(61.7));
        assert_eq!(f.quality, FixQuality::Gps);
        assert_eq!(f.satellites, Some(8));
        assert!((f.speed_mps.unwrap() - 0.02 * KNOT_MPS).abs() < 1e-6);
        assert_eq!(f.course_deg, Some(31.66));
        // 2011-05-28T09:27:50Z
        assert_eq!(f.utc_ns, Some(1_306_574_870_000_000_000));
    }

    fn gga(t: &str, lat: &str) -> String {
        nmea(&format!(
            "GPGGA,{t},{lat},N,00630.3372,W,1,8,1.03,61.7,M,55.2,M,,"
        ))
    }

    fn rmc(t: &str, kn: &str, date: &str) -> String {
        nmea(&format!(
            "GPRMC,{t},A,5321.6802,N,00630.3372,W,{kn},10.0,{date},,,A"
        ))
    }

    // Issue #15: a GGA-first receiver's fix pairs the position with the speed of its own epoch,
    // and goes out when the learned cycle ender (RMC) arrives.
    #[test]
    fn gga_first_epochs_merge_their_own_speed() {
        let mut b = FixBuilder::default();
        let mut out = Vec::new();
        for (i, kn) in ["1.0", "2.0", "3.0", "4.0"].iter().enumerate() {
            let t = format!("12000{i}.00");
            for l in [gga(&t, "5321.6802"), rmc(&t, kn, "040826")] {
                let before = out.len();
                b.update(Stamp::default(), l.as_bytes(), |f| out.push(f));
                if i >= 1 && l.contains("RMC") {
                    assert_eq!(out.len(), before + 1, "the RMC ends epoch {i}");
                }
            }
        }
        assert_eq!(out.len(), 4);
        for (i, f) in out.iter().enumerate() {
            let want = (i + 1) as f32 * KNOT_MPS;
            assert!(
                (f.speed_mps.unwrap() - want).abs() < 1e-6,
                "epoch {i}: {f:?}"
            );
            assert_eq!(f.time_of_day_s, Some(43200.0 + i as f64));
        }
    }

    // Issue #15: a GGA across midnight is dated with the new day.
    #[test]
    fn the_date_rolls_over_at_midnight() {
        let mut b = FixBuilder::default();
        let lines = [
            gga("235959.00", "5321.6802"),
            rmc("235959.00", "1.0", "040826"),
            gga("000000.00", "5321.6802"),
            gga("000001.00", "5321.6802"),
            gga("000002.00", "5321.6802"),
        ];
        let mut f = feed(&mut b, &lines);
        b.flush(Stamp::default(), |x| f.push(x));
        assert_eq!(f.len(), 4);
        let day = |d: i64| (d * 86_400) * 1_000_000_000;
        // 2026-08-04 is day 20669 of the Unix epoch.
        assert_eq!(f[0].utc_ns, Some(day(20669) + 86_399_000_000_000));
        assert_eq!(f[1].utc_ns, Some(day(20670)));
        assert_eq!(f[2].utc_ns, Some(day(20670) + 1_000_000_000));
        assert_eq!(f[3].utc_ns, Some(day(20670) + 2_000_000_000));
    }

    // Issue #15: one lost cycle ender does not move it; two epochs without it do.
    #[test]
    fn the_cycle_ender_survives_one_lost_sentence() {
        let mut b = FixBuilder::default();
        let mut at = Vec::new();
        let lines = [
            gga("120000.00", "5321.6802"),
            rmc("120000.00", "1.0", "040826"),
            gga("120001.00", "5321.6802"),
            rmc("120001.00", "1.0", "040826"),
            gga("120002.00", "5321.6802"), // its RMC lost
            gga("120003.00", "5321.6802"),
            rmc("120003.00", "1.0", "040826"),
            gga("120004.00", "5321.6802"), // from here on GGA only
            gga("120005.00", "5321.6802"),
            gga("120006.00", "5321.6802"),
            gga("120007.00", "5321.6802"),
        ];
        for (i, l) in lines.iter().enumerate() {
            b.update(Stamp::default(), l.as_bytes(), |f| {
                at.push((i, (f.time_of_day_s.unwrap() - 43200.0) as usize))
            });
        }
        // (line that let the fix out, epoch): RMC ends epochs 1 and 3; epoch 2 goes out when
        // epoch 3 starts; after two epochs without RMC the GGA ends them.
        assert_eq!(
            at,
            [
                (2, 0),
                (3, 1),
                (5, 2),
                (6, 3),
                (8, 4),
                (9, 5),
                (9, 6),
                (10, 7)
            ]
        );
    }

    // Issue #15: a GGA before any RMC/ZDA has no date.
    #[test]
    fn no_date_no_utc() {
        let mut b = FixBuilder::default();
        let f = feed(
            &mut b,
            &[gga("120000.00", "5321.6802"), gga("120001.00", "5321.6802")],
        );
        assert_eq!(f.len(), 2);
        assert!(
            f.iter()
                .all(|f| f.utc_ns.is_none() && f.time_of_day_s.is_some())
        );
    }

    // Issue #17: infinity or NaN in any number field keeps the sentence out of the fix.
    #[test]
    fn non_finite_numbers_are_rejected() {
        for bad in [
            nmea("GPGGA,120000.00,5321.6802,N,00630.3372,W,1,8,1.03,inf,M,55.2,M,,"),
            nmea("GPGGA,120000.00,5321.6802,N,00630.3372,W,1,8,NaN,61.7,M,55.2,M,,"),
            nmea("GPRMC,120000.00,A,5321.6802,N,00630.3372,W,inf,10.0,040826,,,A"),
            nmea("GPVTG,nan,T,,M,1.0,N,1.8,K,A"),
            nmea("GPRMC,120000.00,A,5321.6802,N,00630.3372,W,1.0,-Infinity,040826,,,A"),
        ] {
            let mut b = FixBuilder::default();
            let mut n = 0;
            assert_eq!(
                b.update(Stamp::default(), bad.as_bytes(), |_| n += 1),
                Parsed::NonFinite,
                "{bad}"
            );
            b.flush(Stamp::default(), |_| n += 1);
            assert_eq!(n, 0, "{bad}");
        }
    }

    #[test]
    fn unknown_sentences_are_not_understood_but_harmless() {
        let mut b = FixBuilder::default();
        let mut n = 0;
        assert_eq!(
            b.update(Stamp::default(), b"$PFST,FIX*00", |_| n += 1),
            Parsed::Unparsed
        );
        assert_eq!(n, 0);
    }
}
