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
//! Accepted sentences are parsed with the `nmea` crate; GGA / RMC / VTG / ZDA update a
//! [`FixBuilder`], which emits a [`Fix`] per GGA (or per RMC from receivers without GGA).
//! Sentences the parser does not know are still accepted and logged, and counted as
//! `unparsed`. Nothing here allocates.

use chrono::{NaiveDate, NaiveTime, Timelike};

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
    let mut v = heapless::Vec::new();
    // The intake never accepts more than NMEA_MAX bytes.
    let _ = v.extend_from_slice(&bytes[..bytes.len().min(NMEA_MAX)]);
    Sentence { stamp, bytes: v }
}

const KNOT_MPS: f32 = 0.514_444;

fn seconds_of_day(t: &NaiveTime) -> f64 {
    t.num_seconds_from_midnight() as f64 + t.nanosecond() as f64 * 1e-9
}

fn utc_ns(date: NaiveDate, tod_s: f64) -> Option<i64> {
    let midnight = date.and_hms_opt(0, 0, 0)?.and_utc().timestamp();
    Some(midnight * 1_000_000_000 + (tod_s * 1e9).round() as i64)
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

/// Merges the sentences of an epoch into fixes.
#[derive(Default)]
pub struct FixBuilder {
    fix: Fix,
    date: Option<NaiveDate>,
    last_gga_tod: Option<f64>,
}

impl FixBuilder {
    fn finish(&mut self, stamp: Stamp, tod: Option<f64>) -> Fix {
        self.fix.stamp = stamp;
        self.fix.time_of_day_s = tod;
        self.fix.utc_ns = match (self.date, tod) {
            (Some(d), Some(t)) => utc_ns(d, t),
            _ => None,
        };
        self.fix
    }

    /// Parses an accepted sentence; returns a fix when this sentence completes one, and whether
    /// the parser understood the sentence.
    pub fn update(&mut self, stamp: Stamp, sentence: &[u8]) -> (Option<Fix>, bool) {
        let text = match std::str::from_utf8(sentence) {
            Ok(t) => t.trim_end_matches(['\r', '\n']),
            Err(_) => return (None, false),
        };
        let parsed = match nmea::parse_str(text) {
            Ok(p) => p,
            Err(_) => return (None, false),
        };
        use nmea::ParseResult as P;
        match parsed {
            P::GGA(g) => {
                let tod = g.fix_time.as_ref().map(seconds_of_day);
                self.fix.lat_deg = g.latitude;
                self.fix.lon_deg = g.longitude;
                self.fix.alt_msl_m = g.altitude;
                self.fix.quality = quality(g.fix_type);
                self.fix.satellites = g.fix_satellites.map(|s| s.min(255) as u8);
                self.fix.hdop = g.hdop;
                self.last_gga_tod = tod;
                (Some(self.finish(stamp, tod)), true)
            }
            P::RMC(r) => {
                if let Some(d) = r.fix_date {
                    self.date = Some(d);
                }
                self.fix.speed_mps = r.speed_over_ground.map(|k| k * KNOT_MPS);
                self.fix.course_deg = r.true_course;
                let tod = r.fix_time.as_ref().map(seconds_of_day);
                let valid = matches!(
                    r.status_of_fix,
                    nmea::sentences::rmc::RmcStatusOfFix::Autonomous
                        | nmea::sentences::rmc::RmcStatusOfFix::Differential
                );
                if tod.is_some() && tod == self.last_gga_tod {
                    return (None, true);
                }
                // A receiver without (valid) GGA: RMC carries the fix.
                if valid {
                    self.fix.lat_deg = r.lat;
                    self.fix.lon_deg = r.lon;
                    if self.fix.quality == FixQuality::Invalid {
                        self.fix.quality = FixQuality::Gps;
                    }
                } else {
                    self.fix.quality = FixQuality::Invalid;
                }
                (Some(self.finish(stamp, tod)), true)
            }
            P::VTG(v) => {
                self.fix.speed_mps = v.speed_over_ground.map(|k| k * KNOT_MPS);
                self.fix.course_deg = v.true_course;
                (None, true)
            }
            P::ZDA(z) => {
                if let Some(d) = z.utc_date() {
                    self.date = Some(d);
                }
                (None, true)
            }
            P::Unsupported(_) => (None, false),
            _ => (None, true),
        }
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

    #[test]
    fn gga_and_rmc_make_a_fix_with_date_speed_and_course() {
        let mut b = FixBuilder::default();
        let rmc = "$GPRMC,092750.000,A,5321.6802,N,00630.3372,W,0.02,31.66,280511,,,A*43";
        let (f, ok) = b.update(Stamp::default(), rmc.as_bytes());
        assert!(ok);
        assert!(f.is_some(), "RMC before any GGA carries the fix");
        let (f, ok) = b.update(Stamp::default(), GGA.as_bytes());
        assert!(ok);
        let f = f.unwrap();
        assert!((f.lat_deg.unwrap() - 53.361_336).abs() < 1e-5);
        assert!((f.lon_deg.unwrap() + 6.505_62).abs() < 1e-5);
        assert_eq!(f.alt_msl_m, Some(61.7));
        assert_eq!(f.quality, FixQuality::Gps);
        assert_eq!(f.satellites, Some(8));
        assert!((f.speed_mps.unwrap() - 0.02 * KNOT_MPS).abs() < 1e-6);
        assert_eq!(f.course_deg, Some(31.66));
        // 2011-05-28T09:27:50Z
        assert_eq!(f.utc_ns, Some(1_306_574_870_000_000_000));
        // RMC of the same epoch after GGA: no second fix.
        assert_eq!(b.update(Stamp::default(), rmc.as_bytes()).0, None);
    }

    #[test]
    fn unknown_sentences_are_not_understood_but_harmless() {
        let mut b = FixBuilder::default();
        let (f, ok) = b.update(Stamp::default(), b"$PFST,FIX*00");
        assert!(f.is_none() && !ok);
    }
}
