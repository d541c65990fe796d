//! `harmony log export --mcap`: one session as one MCAP file, for Foxglove and PlotJuggler
//! (issue #13).
//!
//! MCAP is written *after* the flight from the crash-safe logs, never as the flight log: a file
//! cut before its summary has no index. The file is chunked (1 MiB, uncompressed: the `mcap`
//! crate's compressors compile C, which the static aarch64 build cannot link) and indexed
//! (chunk indexes, message indexes, statistics, summary offsets), so viewers seek at once.
//!
//! One channel per source, messages JSON (`json` encoding) with a JSON Schema (`jsonschema`),
//! which both viewers show without plugins:
//!
//! | topic           | schema                 | one message per                                  |
//! |-----------------|------------------------|--------------------------------------------------|
//! | `/can`          | `harmony.CanFrame`     | line of `can.NNN.log`                            |
//! | `/gps/nmea`     | `harmony.NmeaSentence` | sentence of `gps.NNN.nmea`                       |
//! | `/gps/fix`      | `harmony.GpsFix`       | row of `gps-fix.NNN.csv`                         |
//! | `/gps/location` | `foxglove.LocationFix` | fix with a position (Foxglove's map panel)       |
//! | `/rangefinder`  | `harmony.Range`        | row of `rangefinder.NNN.csv`                     |
//! | `/events`       | `foxglove.Log`         | line of `events.log` (Foxglove's log panel)      |
//!
//! **Times.** A message's `log_time` is the time the firmware recorded (the CSV `utc`, the
//! candump time, the event's UTC), corrected when the Pi's clock was not set: a session that
//! started with an implausible clock (before 2020, see `clock_valid_at_start`) and later learned
//! GPS time has the offset in its manifest and `events.log` (`clock gps-time-known offset_s=`);
//! every recorded time still before 2020 gets that offset added. `publish_time` is the time as
//! recorded, uncorrected. Within a channel `log_time` never goes backwards: a record stamped
//! before its predecessor (the system clock stepped back) gets its predecessor's time, and is
//! counted in the report.
//!
//! Raw NMEA sentences carry no time of their own in the log. They are replayed through the
//! same [`FixBuilder`] the GPS source runs: a fix row the firmware logged is stamped with the
//! receipt time of the sentence that completed it, so that sentence's time is exact, and every
//! sentence takes the time of the next completing one (never earlier than its receipt, at most
//! one epoch late). The row is found by its content, so a dropped record does not shift the
//! rest; sentences with no such row after them take the last known time (counted).
//!
//! **Hostile files.** Files are opened inside the session directory without following links
//! ([`super::files::Dir`]); lines are read bounded (64 KiB), the manifest at most 1 MiB.
//!
//! **Crashed sessions.** The manifest may be missing (the times are then read from
//! `events.log`), and a file may end in a torn line: everything readable is exported, and what
//! is not is reported per file with a count and the reason (torn tail, malformed line, bad
//! checksum ...). The report is also stored in the file as metadata `harmony.export`.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use ::mcap::records::{MessageHeader, Metadata};
use ::mcap::{WriteOptions, Writer};
use serde::Serialize;
use serde_json::{Value, json};

use super::files::{Dir, FileError};
use crate::clock::wall_clock_plausible;
use crate::formats::candump::{DumpError, DumpReader};
use crate::formats::csv::{FIX_HEADER, RANGE_HEADER, parse_fix, parse_range};
use crate::formats::dronecan::{self, Transfer};
use crate::formats::nmea::{Event, FixBuilder, Intake, Reject};
use crate::formats::utc::parse_utc;
use crate::logger::{CAN, FIX, Manifest, NMEA, RANGE, events, segments};
use crate::records::{Fix, FixQuality};

/// Longest line read from a CSV or event file (longer ones are reported, not exported).
const MAX_LINE: usize = 64 * 1024;
/// Sentences waiting for their epoch's fix before they take the last known time.
const MAX_PENDING: usize = 4096;
/// How far ahead a replayed fix is looked for among the logged rows.
const FIX_LOOKAHEAD: usize = 64;

/// Why an export failed as a whole (what is merely unreadable is in the [`Report`]).
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path}: MCAP: {source}")]
    Mcap {
        path: PathBuf,
        source: ::mcap::McapError,
    },
    #[error("{0}: no session files (no events.log, no data files)")]
    Empty(PathBuf),
    #[error(transparent)]
    File(#[from] FileError),
}

/// Records of one file that were not exported, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Skipped {
    pub file: String,
    pub count: u64,
    pub reason: String,
    /// First line number concerned (0 when not line-based).
    pub first_line: u64,
}

/// What an export wrote and what it could not.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Report {
    /// Messages per topic.
    pub messages: BTreeMap<String, u64>,
    pub skipped: Vec<Skipped>,
    /// Offset added to recorded times before 2020, in seconds (clock unset at start).
    pub clock_offset_s: Option<f64>,
    /// Why no correction was possible when one was needed.
    pub clock_note: Option<String>,
    /// Records whose time went backwards in their channel (given their predecessor's time).
    pub stepped_back: u64,
    /// Sentences that got no fix time of their own (the last known one, or the session start).
    pub nmea_approximate: u64,
    /// Anything else worth knowing (a missing manifest).
    pub notes: Vec<String>,
}

impl Report {
    fn skip(&mut self, file: &Path, count: u64, first_line: u64, reason: impl Into<String>) {
        let file = file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let reason = reason.into();
        // One entry per file and reason: a thousand bad lines are one line of the report.
        if let Some(s) = self
            .skipped
            .iter_mut()
            .find(|s| s.file == file && s.reason == reason)
        {
            s.count += count;
            return;
        }
        self.skipped.push(Skipped {
            file,
            count,
            reason,
            first_line,
        });
    }

    /// Records not exported, in all.
    pub fn skipped_total(&self) -> u64 {
        self.skipped.iter().map(|s| s.count).sum()
    }
}

/// How recorded wall times are corrected (see the module docs).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct TimeBase {
    /// Added to a recorded time before 2020, ns.
    offset_ns: Option<i64>,
    /// Session start as recorded (fallback time for sentences before any fix).
    start_ns: i64,
}

impl TimeBase {
    /// The corrected time of a recorded wall time, ns since the Unix epoch (never negative).
    pub fn correct(&self, wall_ns: i64) -> u64 {
        let t = match self.offset_ns {
            Some(off) if !wall_clock_plausible(wall_ns) => wall_ns.saturating_add(off),
            _ => wall_ns,
        };
        t.max(0) as u64
    }
}

/// One parsed `events.log` line.
#[derive(Clone, Debug, PartialEq)]
pub struct EventLine {
    pub utc_ns: i64,
    pub mono_s: f64,
    pub kind: String,
    /// `key=value` pairs (quotes removed).
    pub fields: BTreeMap<String, String>,
    /// Everything after the kind, as written.
    pub text: String,
}

/// Reads an `events.log` line (`UTC mono=S KIND key=value ...`); `None` if it is not one.
pub fn parse_event(line: &str) -> Option<EventLine> {
    if !events::valid(line) {
        return None;
    }
    let mut f = line.splitn(4, ' ');
    let utc_ns = parse_utc(f.next()?)?;
    let mono_s = f.next()?.strip_prefix("mono=")?.parse().ok()?;
    let kind = f.next()?.to_owned();
    let text = f.next().unwrap_or("").to_owned();
    let mut fields = BTreeMap::new();
    let mut rest = text.as_str();
    while !rest.is_empty() {
        rest = rest.trim_start_matches(' ');
        let word_end = rest.find([' ', '=']).unwrap_or(rest.len());
        if rest[word_end..].starts_with('=') {
            let key = &rest[..word_end];
            let after = &rest[word_end + 1..];
            let (value, next) = match after.strip_prefix('"') {
                Some(q) => match q.find('"') {
                    Some(e) => (&q[..e], &q[e + 1..]),
                    None => (q, ""),
                },
                None => {
                    let e = after.find(' ').unwrap_or(after.len());
                    (&after[..e], &after[e..])
                }
            };
            fields.insert(key.to_owned(), value.to_owned());
            rest = next;
        } else {
            let e = rest.find(' ').unwrap_or(rest.len());
            rest = &rest[e..];
        }
    }
    Some(EventLine {
        utc_ns,
        mono_s,
        kind,
        fields,
        text,
    })
}

/// The time base of a session: from its manifest, else from `events.log`.
pub fn time_base(
    manifest: Option<&Manifest>,
    events: &[EventLine],
    report: &mut Report,
) -> TimeBase {
    let start = events.iter().find(|e| e.kind == "session-start");
    let clock_valid = match (manifest, start) {
        (Some(m), _) => m.clock_valid_at_start,
        (None, Some(s)) => s.fields.get("clock_valid").is_none_or(|v| v != "false"),
        (None, None) => true,
    };
    let start_ns = manifest
        .and_then(|m| parse_utc(&m.started_utc))
        .or(start.map(|s| s.utc_ns))
        .unwrap_or(0);
    let mut tb = TimeBase {
        offset_ns: None,
        start_ns,
    };
    if clock_valid {
        return tb;
    }
    // The GPS offset, if it was measured while the clock was still unset; if the clock was set
    // (NTP) before GPS time came, the step itself is the correction for what came before.
    let gps = events
        .iter()
        .find(|e| e.kind == "clock" && e.text.starts_with("gps-time-known"));
    let gps_off = manifest
        .and_then(|m| m.gps_time.as_ref().map(|g| g.offset_s))
        .or_else(|| gps.and_then(|e| e.fields.get("offset_s")?.parse().ok()));
    let gps_while_unset = gps.is_none_or(|e| !wall_clock_plausible(e.utc_ns));
    let step = events
        .iter()
        .filter(|e| e.kind == "clock" && e.text.starts_with("system-clock-changed"))
        .find(|e| wall_clock_plausible(e.utc_ns))
        .and_then(|e| e.fields.get("by_s")?.parse::<f64>().ok());
    let off = match (gps_off, gps_while_unset, step) {
        (Some(o), true, _) => Some(o),
        (_, _, Some(s)) => Some(s),
        (Some(o), false, None) => Some(o),
        (None, _, None) => None,
    };
    match off.filter(|o| o.is_finite()) {
        Some(o) => {
            tb.offset_ns = Some((o * 1e9).round() as i64);
            report.clock_offset_s = Some(o);
        }
        None => {
            report.clock_note = Some(
                "the clock was unset at start and GPS time never became known: times before \
                 2020 are the unset clock's"
                    .into(),
            )
        }
    }
    tb
}

/// Length of the part of a file that ends in a newline (a torn last line is not in it).
fn whole_len(f: &mut File) -> io::Result<u64> {
    let len = f.metadata()?.len();
    let mut end = len;
    let mut buf = [0u8; 4096];
    while end > 0 {
        let start = end.saturating_sub(buf.len() as u64);
        let n = (end - start) as usize;
        f.seek(SeekFrom::Start(start))?;
        f.read_exact(&mut buf[..n])?;
        if let Some(i) = buf[..n].iter().rposition(|&b| b == b'\n') {
            f.seek(SeekFrom::Start(0))?;
            return Ok(start + i as u64 + 1);
        }
        end = start;
    }
    f.seek(SeekFrom::Start(0))?;
    Ok(0)
}

/// Opens a session file (no link followed), reports a torn tail, and returns its path and a
/// reader over its whole lines.
fn open_whole(
    dir: &Dir,
    name: &OsStr,
    report: &mut Report,
) -> Result<(PathBuf, io::Take<File>), ExportError> {
    let of = dir.read(name)?;
    let path = of.path.clone();
    let mut f = of.file;
    let io = |source| ExportError::Io {
        path: path.clone(),
        source,
    };
    let len = f.metadata().map_err(io)?.len();
    let whole = whole_len(&mut f).map_err(io)?;
    if whole < len {
        report.skip(
            &path,
            1,
            0,
            format!("torn tail: {} bytes without a newline", len - whole),
        );
    }
    Ok((path, f.take(whole)))
}

/// The names of a data file's segments in `dir`, in order.
fn names(dir: &Dir, file: crate::logger::writer::FileId) -> Vec<std::ffi::OsString> {
    segments(dir.path(), file)
        .into_iter()
        .filter_map(|p| p.file_name().map(|n| n.to_owned()))
        .collect()
}

/// Whole lines of a reader, each at most [`MAX_LINE`] bytes; calls `f(line_no, line)`.
fn for_lines(
    path: &Path,
    r: impl Read,
    report: &mut Report,
    mut f: impl FnMut(u64, &[u8], &mut Report),
) -> Result<(), ExportError> {
    let mut r = BufReader::new(r);
    let mut line = Vec::with_capacity(256);
    let mut no = 0u64;
    loop {
        line.clear();
        let n = (&mut r)
            .take(MAX_LINE as u64 + 1)
            .read_until(b'\n', &mut line)
            .map_err(|source| ExportError::Io {
                path: path.to_owned(),
                source,
            })?;
        if n == 0 {
            return Ok(());
        }
        no += 1;
        if !line.ends_with(b"\n") {
            // Over-long: skip to the end of it.
            report.skip(path, 1, no, "line longer than 64 KiB");
            let mut sink = Vec::new();
            let _ = r.read_until(b'\n', &mut sink);
            continue;
        }
        line.pop();
        f(no, &line, report);
    }
}

/// A JSON message ready to write.
struct Msg {
    recorded_ns: i64,
    data: Vec<u8>,
}

fn time_json(ns: u64) -> Value {
    json!({"sec": ns / 1_000_000_000, "nsec": ns % 1_000_000_000})
}

fn finite(v: Option<f64>) -> Option<f64> {
    v.filter(|x| x.is_finite())
}

/// An `f32` as the decimal the CSV holds (`286.35`, not `286.3500061035156`).
fn finite32(v: Option<f32>) -> Option<f64> {
    finite(v.and_then(|x| x.to_string().parse().ok()))
}

fn fix_json(f: &Fix, tb: &TimeBase) -> Value {
    json!({
        "timestamp": time_json(tb.correct(f.stamp.wall_ns)),
        "mono_s": f.stamp.boot_ns as f64 / 1e9,
        "gps_time": f.utc_ns.map(|t| time_json(t.max(0) as u64)),
        "latitude": finite(f.lat_deg),
        "longitude": finite(f.lon_deg),
        "altitude_msl_m": finite32(f.alt_msl_m),
        "quality": f.quality.as_str(),
        "quality_code": f.quality as u8,
        "satellites": f.satellites,
        "hdop": finite32(f.hdop),
        "speed_mps": finite32(f.speed_mps),
        "course_deg": finite32(f.course_deg),
    })
}

/// A fix with a position, as Foxglove's `foxglove.LocationFix`.
fn location_json(f: &Fix, tb: &TimeBase) -> Option<Value> {
    let (lat, lon) = (finite(f.lat_deg)?, finite(f.lon_deg)?);
    if f.quality == FixQuality::Invalid || lat.abs() > 90.0 || lon.abs() > 180.0 {
        return None;
    }
    Some(json!({
        "timestamp": time_json(tb.correct(f.stamp.wall_ns)),
        "frame_id": "gps",
        "latitude": lat,
        "longitude": lon,
        "altitude": finite32(f.alt_msl_m).unwrap_or(0.0),
        "position_covariance": ([0.0f64; 9]),
        "position_covariance_type": 0,
    }))
}

fn to_msg(recorded_ns: i64, v: &Value) -> Msg {
    Msg {
        recorded_ns,
        data: serde_json::to_vec(v).unwrap_or_default(),
    }
}

/// The fix rows of a session, in order.
fn read_fixes(dir: &Dir, report: &mut Report) -> Result<Vec<Fix>, ExportError> {
    let mut out = Vec::new();
    for n in names(dir, FIX) {
        let (p, r) = open_whole(dir, &n, report)?;
        for_lines(&p, r, report, |no, line, report| {
            let text = std::str::from_utf8(line).unwrap_or("\u{fffd}");
            if no == 1 {
                if text != FIX_HEADER {
                    report.skip(&p, 1, no, "wrong CSV header");
                }
                return;
            }
            match parse_fix(text) {
                Ok(f) => out.push(f),
                Err(e) => report.skip(&p, 1, no, format!("unreadable row: {e}")),
            }
        })?;
    }
    Ok(out)
}

fn same_fix(a: &Fix, b: &Fix) -> bool {
    let close = |x: Option<f64>, y: Option<f64>| match (x, y) {
        (Some(x), Some(y)) => (x - y).abs() < 1e-7,
        (None, None) => true,
        _ => false,
    };
    a.quality == b.quality
        && a.utc_ns == b.utc_ns
        && close(a.lat_deg, b.lat_deg)
        && close(a.lon_deg, b.lon_deg)
        && a.satellites == b.satellites
}

/// Sentences of the NMEA segments, each stamped with its epoch's fix time (module docs).
fn nmea_messages(
    dir: &Dir,
    fixes: &[Fix],
    tb: &TimeBase,
    report: &mut Report,
) -> Result<Vec<Msg>, ExportError> {
    let mut out = Vec::new();
    let mut pending: Vec<Vec<u8>> = Vec::new();
    let mut last_time: Option<i64> = None;
    let mut cursor = 0usize;
    let mut builder = FixBuilder::default();
    let mut approximate = 0u64;
    let flush = |pending: &mut Vec<Vec<u8>>, t: i64, out: &mut Vec<Msg>| {
        for s in pending.drain(..) {
            let text = String::from_utf8_lossy(&s);
            let text = text.trim_end_matches(['\r', '\n']);
            let body = text.get(1..).unwrap_or("");
            let head = body.split([',', '*']).next().unwrap_or("");
            let (talker, kind) = if head.starts_with('P') || head.len() < 5 {
                ("", head)
            } else {
                head.split_at(2)
            };
            out.push(to_msg(
                t,
                &json!({
                    "timestamp": time_json(tb.correct(t)),
                    "sentence": text,
                    "talker": talker,
                    "kind": kind,
                }),
            ));
        }
    };
    for n in names(dir, NMEA) {
        let (p, mut r) = open_whole(dir, &n, report)?;
        let mut intake = Intake::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = r.read(&mut buf).map_err(|source| ExportError::Io {
                path: p.clone(),
                source,
            })?;
            if n == 0 {
                break;
            }
            let mut accepted: Vec<Vec<u8>> = Vec::new();
            let mut rejected: Vec<Reject> = Vec::new();
            intake.feed(&buf[..n], |e| match e {
                Event::Accepted(s) => accepted.push(s.to_vec()),
                Event::Rejected(why) => rejected.push(why),
            });
            for why in rejected {
                let reason = match why {
                    Reject::BadChecksum => "sentence with a bad checksum",
                    Reject::NoChecksum => "sentence without a checksum",
                    Reject::Overlong => "sentence longer than 130 bytes",
                    Reject::Fragment => "fragment of a sentence",
                };
                report.skip(&p, 1, 0, reason);
            }
            for s in accepted {
                let mut done: Vec<Fix> = Vec::new();
                builder.update(Default::default(), &s, |f| done.push(f));
                pending.push(s);
                for f in done {
                    let found = fixes[cursor.min(fixes.len())..]
                        .iter()
                        .take(FIX_LOOKAHEAD)
                        .position(|row| same_fix(row, &f));
                    if let Some(j) = found {
                        let t = fixes[cursor + j].stamp.wall_ns;
                        cursor += j + 1;
                        last_time = Some(t);
                        flush(&mut pending, t, &mut out);
                    }
                }
                if pending.len() >= MAX_PENDING {
                    approximate += pending.len() as u64;
                    flush(&mut pending, last_time.unwrap_or(tb.start_ns), &mut out);
                }
            }
        }
        if intake.counters.noise_bytes > 0 {
            report.skip(
                &p,
                intake.counters.noise_bytes,
                0,
                "bytes outside any sentence",
            );
        }
    }
    // The last epoch, if its ender never came (the firmware flushes it at stop too).
    let mut done: Vec<Fix> = Vec::new();
    builder.flush(Default::default(), |f| done.push(f));
    for f in done {
        let found = fixes[cursor.min(fixes.len())..]
            .iter()
            .take(FIX_LOOKAHEAD)
            .position(|row| same_fix(row, &f));
        if let Some(j) = found {
            let t = fixes[cursor + j].stamp.wall_ns;
            last_time = Some(t);
            flush(&mut pending, t, &mut out);
        }
    }
    approximate += pending.len() as u64;
    flush(&mut pending, last_time.unwrap_or(tb.start_ns), &mut out);
    report.nmea_approximate = approximate;
    Ok(out)
}

fn can_messages(dir: &Dir, tb: &TimeBase, report: &mut Report) -> Result<Vec<Msg>, ExportError> {
    let mut out = Vec::new();
    for n in names(dir, CAN) {
        let (p, r) = open_whole(dir, &n, report)?;
        let mut rd = DumpReader::new(r, &p);
        loop {
            match rd.next_frame() {
                Ok(None) => break,
                Ok(Some(f)) => {
                    let r = &f.record;
                    let ns = f.t_us.saturating_mul(1000).min(i64::MAX as u64) as i64;
                    let dc = dronecan::decode(r);
                    let type_id = dc.map(|d| match d.transfer {
                        Transfer::Message { type_id } => type_id,
                        Transfer::Service { type_id, .. } => type_id as u16,
                        Transfer::Anonymous { type_id_low, .. } => type_id_low as u16,
                    });
                    let data = r.payload();
                    let mut hex = String::with_capacity(16);
                    for b in data {
                        hex.push_str(&format!("{b:02X}"));
                    }
                    out.push(to_msg(
                        ns,
                        &json!({
                            "timestamp": time_json(tb.correct(ns)),
                            "interface": f.device,
                            "id": r.raw_id(),
                            "extended": r.is_extended(),
                            "remote": r.is_remote(),
                            "error": r.is_error(),
                            "len": r.len,
                            "data": data,
                            "data_hex": hex,
                            "dronecan_source_node": dc.map(|d| d.source),
                            "dronecan_type_id": type_id,
                        }),
                    ));
                }
                Err(DumpError::Malformed { line, .. }) => {
                    report.skip(&p, 1, line, "malformed candump line")
                }
                Err(DumpError::Fd { line, .. }) => {
                    report.skip(&p, 1, line, "CAN FD frame (not supported)")
                }
                Err(DumpError::Io { source, .. }) => {
                    return Err(ExportError::Io { path: p, source });
                }
            }
        }
    }
    Ok(out)
}

fn range_messages(dir: &Dir, tb: &TimeBase, report: &mut Report) -> Result<Vec<Msg>, ExportError> {
    let mut out = Vec::new();
    for n in names(dir, RANGE) {
        let (p, r) = open_whole(dir, &n, report)?;
        for_lines(&p, r, report, |no, line, report| {
            let text = std::str::from_utf8(line).unwrap_or("\u{fffd}");
            if no == 1 {
                if text != RANGE_HEADER {
                    report.skip(&p, 1, no, "wrong CSV header");
                }
                return;
            }
            match parse_range(text) {
                Ok(r) => out.push(to_msg(
                    r.stamp.wall_ns,
                    &json!({
                        "timestamp": time_json(tb.correct(r.stamp.wall_ns)),
                        "mono_s": r.stamp.boot_ns as f64 / 1e9,
                        "distance_m": r.distance_cm as f64 / 100.0,
                        "strength": r.strength,
                        "status": r.status.as_str(),
                        "status_code": r.status as u8,
                    }),
                )),
                Err(e) => report.skip(&p, 1, no, format!("unreadable row: {e}")),
            }
        })?;
    }
    Ok(out)
}

fn read_events(dir: &Dir, report: &mut Report) -> Result<Vec<(u64, EventLine)>, ExportError> {
    let (p, r) = match open_whole(dir, OsStr::new("events.log"), report) {
        Ok(x) => x,
        Err(ExportError::File(e)) if e.is_missing() => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for_lines(
        &p,
        r,
        report,
        |no, line, report| match std::str::from_utf8(line).ok().and_then(parse_event) {
            Some(e) => out.push((no, e)),
            None => report.skip(&p, 1, no, "not an event line"),
        },
    )?;
    Ok(out)
}

fn event_json(no: u64, e: &EventLine, tb: &TimeBase) -> Value {
    // foxglove.Log levels: 1 debug, 2 info, 3 warning, 4 error, 5 fatal.
    let level = match e.kind.as_str() {
        "dropout" => 3,
        "degraded" | "session-deleted" => 4,
        "state" if e.fields.get("state").is_some_and(|s| s == "failed") => 4,
        _ => 2,
    };
    let fields: serde_json::Map<String, Value> = e
        .fields
        .iter()
        .map(|(k, v)| {
            let v = match v.parse::<f64>() {
                Ok(x) if x.is_finite() && !v.is_empty() => json!(x),
                _ => json!(v),
            };
            (k.clone(), v)
        })
        .collect();
    json!({
        "timestamp": time_json(tb.correct(e.utc_ns)),
        "level": level,
        "message": format!("{} {}", e.kind, e.text),
        "name": "harmony",
        "file": "events.log",
        "line": no,
        "kind": e.kind,
        "mono_s": e.mono_s,
        "fields": Value::Object(fields),
    })
}

const TIME_SCHEMA: &str = r#"{"type":"object","title":"time","properties":{"sec":{"type":"integer","minimum":0},"nsec":{"type":"integer","minimum":0,"maximum":999999999}}}"#;

/// The topics: (topic, schema name, JSON Schema properties, required).
fn schemas() -> [(&'static str, &'static str, String); 6] {
    let t = TIME_SCHEMA;
    let num = r#"{"type":["number","null"]}"#;
    [
        (
            "/can",
            "harmony.CanFrame",
            format!(
                r#"{{"type":"object","title":"harmony.CanFrame","description":"One classic CAN frame as candump logged it","properties":{{"timestamp":{t},"interface":{{"type":"string"}},"id":{{"type":"integer","description":"11 or 29-bit identifier without flags"}},"extended":{{"type":"boolean"}},"remote":{{"type":"boolean"}},"error":{{"type":"boolean"}},"len":{{"type":"integer"}},"data":{{"type":"array","items":{{"type":"integer","minimum":0,"maximum":255}}}},"data_hex":{{"type":"string"}},"dronecan_source_node":{{"type":["integer","null"]}},"dronecan_type_id":{{"type":["integer","null"]}}}}}}"#
            ),
        ),
        (
            "/gps/nmea",
            "harmony.NmeaSentence",
            format!(
                r#"{{"type":"object","title":"harmony.NmeaSentence","description":"One checksum-verified NMEA 0183 sentence exactly as received","properties":{{"timestamp":{t},"sentence":{{"type":"string"}},"talker":{{"type":"string"}},"kind":{{"type":"string"}}}}}}"#
            ),
        ),
        (
            "/gps/fix",
            "harmony.GpsFix",
            format!(
                r#"{{"type":"object","title":"harmony.GpsFix","description":"One fix per GPS epoch (gpsd's cycle rules)","properties":{{"timestamp":{t},"mono_s":{{"type":"number"}},"gps_time":{{"oneOf":[{t},{{"type":"null"}}]}},"latitude":{num},"longitude":{num},"altitude_msl_m":{num},"quality":{{"type":"string"}},"quality_code":{{"type":"integer"}},"satellites":{{"type":["integer","null"]}},"hdop":{num},"speed_mps":{num},"course_deg":{num}}}}}"#
            ),
        ),
        (
            "/gps/location",
            "foxglove.LocationFix",
            format!(
                r#"{{"type":"object","title":"foxglove.LocationFix","properties":{{"timestamp":{t},"frame_id":{{"type":"string"}},"latitude":{{"type":"number"}},"longitude":{{"type":"number"}},"altitude":{{"type":"number"}},"position_covariance":{{"type":"array","items":{{"type":"number"}},"minItems":9,"maxItems":9}},"position_covariance_type":{{"type":"integer"}}}}}}"#
            ),
        ),
        (
            "/rangefinder",
            "harmony.Range",
            format!(
                r#"{{"type":"object","title":"harmony.Range","description":"One rangefinder reading","properties":{{"timestamp":{t},"mono_s":{{"type":"number"}},"distance_m":{{"type":"number"}},"strength":{{"type":"integer"}},"status":{{"type":"string","enum":["ok","weak","saturated","invalid","fault"]}},"status_code":{{"type":"integer"}}}}}}"#
            ),
        ),
        (
            "/events",
            "foxglove.Log",
            format!(
                r#"{{"type":"object","title":"foxglove.Log","description":"One events.log line: dropouts, state changes, clock, rotations, disk full","properties":{{"timestamp":{t},"level":{{"type":"integer"}},"message":{{"type":"string"}},"name":{{"type":"string"}},"file":{{"type":"string"}},"line":{{"type":"integer"}},"kind":{{"type":"string"}},"mono_s":{{"type":"number"}},"fields":{{"type":"object","additionalProperties":{{"type":["string","number"]}}}}}}}}"#
            ),
        ),
    ]
}

const T_CAN: usize = 0;
const T_NMEA: usize = 1;
const T_FIX: usize = 2;
const T_LOC: usize = 3;
const T_RANGE: usize = 4;
const T_EVENTS: usize = 5;

/// Exports session `dir` to the MCAP file `out` (written aside and renamed when complete).
pub fn export(dir: &Dir, out: &Path) -> Result<Report, ExportError> {
    let mut report = Report::default();
    let manifest: Option<Manifest> = dir
        .read_bounded(OsStr::new("manifest.json"), super::check::MANIFEST_MAX)
        .ok()
        .and_then(Result::ok)
        .and_then(|b| serde_json::from_slice(&b).ok());
    if manifest.is_none() {
        report
            .notes
            .push("manifest.json missing or unreadable: times from events.log".into());
    }
    let events = read_events(dir, &mut report)?;
    let ev: Vec<EventLine> = events.iter().map(|(_, e)| e.clone()).collect();
    let tb = time_base(manifest.as_ref(), &ev, &mut report);
    let has_data = [CAN, NMEA, FIX, RANGE]
        .iter()
        .any(|&f| !segments(dir.path(), f).is_empty());
    if events.is_empty() && !has_data {
        return Err(ExportError::Empty(dir.path().to_owned()));
    }

    // Every channel's messages, in file order (each file is in recording order).
    let fixes = read_fixes(dir, &mut report)?;
    let mut chans: [Vec<Msg>; 6] = Default::default();
    chans[T_CAN] = can_messages(dir, &tb, &mut report)?;
    chans[T_NMEA] = nmea_messages(dir, &fixes, &tb, &mut report)?;
    for f in &fixes {
        chans[T_FIX].push(to_msg(f.stamp.wall_ns, &fix_json(f, &tb)));
        if let Some(l) = location_json(f, &tb) {
            chans[T_LOC].push(to_msg(f.stamp.wall_ns, &l));
        }
    }
    chans[T_RANGE] = range_messages(dir, &tb, &mut report)?;
    chans[T_EVENTS] = events
        .iter()
        .map(|(no, e)| to_msg(e.utc_ns, &event_json(*no, e, &tb)))
        .collect();

    let tmp = out.with_extension("mcap.part");
    let mcap_err = |source| ExportError::Mcap {
        path: out.to_owned(),
        source,
    };
    let file = File::create(&tmp).map_err(|source| ExportError::Io {
        path: tmp.clone(),
        source,
    })?;
    let opts = WriteOptions::new()
        .compression(None)
        .profile("")
        .library(format!("harmony {}", crate::version::short()))
        .chunk_size(Some(WriteOptions::DEFAULT_CHUNK_SIZE));
    let mut w: Writer<io::BufWriter<File>> =
        opts.create(io::BufWriter::new(file)).map_err(mcap_err)?;
    let mut ids = [0u16; 6];
    for (i, (topic, name, schema)) in schemas().iter().enumerate() {
        let sid = w
            .add_schema(name, "jsonschema", schema.as_bytes())
            .map_err(mcap_err)?;
        let mut meta = BTreeMap::new();
        meta.insert("source".to_owned(), "harmony".to_owned());
        ids[i] = w.add_channel(sid, topic, "json", &meta).map_err(mcap_err)?;
    }

    // Merge the channels by corrected time; each channel's times never go backwards.
    let mut next = [0usize; 6];
    let mut floor = [0u64; 6];
    let mut seq = [0u32; 6];
    let mut stepped_back = 0u64;
    loop {
        let mut best: Option<(u64, usize)> = None;
        for c in 0..6 {
            if let Some(m) = chans[c].get(next[c]) {
                let t = tb.correct(m.recorded_ns).max(floor[c]);
                if best.is_none_or(|(bt, _)| t < bt) {
                    best = Some((t, c));
                }
            }
        }
        let Some((t, c)) = best else { break };
        let m = &chans[c][next[c]];
        if tb.correct(m.recorded_ns) < floor[c] {
            stepped_back += 1;
        }
        floor[c] = t;
        seq[c] = seq[c].wrapping_add(1);
        w.write_to_known_channel(
            &MessageHeader {
                channel_id: ids[c],
                sequence: seq[c],
                log_time: t,
                publish_time: m.recorded_ns.max(0) as u64,
            },
            &m.data,
        )
        .map_err(mcap_err)?;
        next[c] += 1;
    }
    report.stepped_back = stepped_back;
    for (i, (topic, _, _)) in schemas().iter().enumerate() {
        report
            .messages
            .insert((*topic).to_owned(), chans[i].len() as u64);
    }

    let mut meta = BTreeMap::new();
    meta.insert(
        "session".to_owned(),
        dir.path()
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
    );
    if let Some(m) = &manifest {
        meta.insert("firmware".into(), m.firmware.clone());
        meta.insert("board".into(), m.board.clone());
        meta.insert("started_utc".into(), m.started_utc.clone());
        meta.insert("closed".into(), m.closed.to_string());
        meta.insert(
            "clock_valid_at_start".into(),
            m.clock_valid_at_start.to_string(),
        );
    }
    meta.insert(
        "report".into(),
        serde_json::to_string(&report).unwrap_or_default(),
    );
    w.write_metadata(&Metadata {
        name: "harmony.export".into(),
        metadata: meta,
    })
    .map_err(mcap_err)?;
    w.finish().map_err(mcap_err)?;
    let mut inner = w.into_inner();
    let io_tmp = |source| ExportError::Io {
        path: tmp.clone(),
        source,
    };
    inner.flush().map_err(io_tmp)?;
    inner
        .into_inner()
        .map_err(|e| io_tmp(e.into_error()))?
        .sync_all()
        .map_err(io_tmp)?;
    std::fs::rename(&tmp, out).map_err(|source| ExportError::Io {
        path: out.to_owned(),
        source,
    })?;
    Ok(report)
}

/// The report as text for the terminal.
pub fn describe(out: &Path, r: &Report) -> String {
    use std::fmt::Write as _;
    let mut s = format!("{}:", out.display());
    for (topic, n) in &r.messages {
        let _ = write!(s, " {topic} {n}");
    }
    s.push('\n');
    if let Some(o) = r.clock_offset_s {
        let _ = writeln!(
            s,
            "clock unset at start: {o:+.3} s added to times before 2020"
        );
    }
    for n in r.clock_note.iter().chain(&r.notes) {
        let _ = writeln!(s, "note: {n}");
    }
    if r.stepped_back > 0 {
        let _ = writeln!(
            s,
            "note: {} records stamped before their predecessor (clock stepped back) keep its time",
            r.stepped_back
        );
    }
    if r.nmea_approximate > 0 {
        let _ = writeln!(
            s,
            "note: {} NMEA sentences had no fix of their own to take the time from",
            r.nmea_approximate
        );
    }
    for k in &r.skipped {
        let at = if k.first_line > 0 {
            format!(" (first at line {})", k.first_line)
        } else {
            String::new()
        };
        let _ = writeln!(s, "not exported: {}: {} {}{at}", k.file, k.count, k.reason);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(p: &Path) -> Dir {
        Dir::open_arg(p, super::super::files::ArgDir::Follow).unwrap()
    }

    fn session(files: &[(&str, &str)]) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        for (name, text) in files {
            std::fs::write(d.path().join(name), text).unwrap();
        }
        d
    }

    /// Issue #13: event lines are read into kind and fields, quoted values too.
    #[test]
    fn event_lines_parse() {
        let e = parse_event(
            "2026-12-02T14:30:34.949797Z mono=1218.942384 state proc=harmony/uplink state=active note=\"sim radio: x = y\"",
        )
        .unwrap();
        assert_eq!(e.kind, "state");
        assert_eq!(e.fields["proc"], "harmony/uplink");
        assert_eq!(e.fields["note"], "sim radio: x = y");
        let e = parse_event("1970-01-01T00:00:10.000000Z mono=10.000000 clock system-clock-implausible (before 2020): times are corrected").unwrap();
        assert_eq!(e.kind, "clock");
        assert!(e.fields.is_empty());
        assert!(parse_event("garbage").is_none());
    }

    /// Issue #13: a session that started with the clock unset is corrected by the GPS offset,
    /// from events.log when the manifest is missing; a valid clock is left alone.
    #[test]
    fn unset_clock_is_corrected_by_the_gps_offset() {
        let ev = [
            "1970-01-01T00:00:10.000000Z mono=10.000000 session-start session=sess001 board=sim clock_valid=false",
            "1970-01-01T00:00:20.000000Z mono=20.000000 clock gps-time-known gps_utc=2026-08-04T12:00:10.000000Z offset_s=1785844790.000",
        ];
        let ev: Vec<EventLine> = ev.iter().map(|l| parse_event(l).unwrap()).collect();
        let mut r = Report::default();
        let tb = time_base(None, &ev, &mut r);
        assert_eq!(r.clock_offset_s, Some(1785844790.0));
        // 1970-01-01T00:00:20 + offset = 2026-08-04T12:00:10
        assert_eq!(
            tb.correct(20_000_000_000),
            parse_utc("2026-08-04T12:00:10Z").unwrap() as u64
        );
        // Already-set times are not moved.
        let now = parse_utc("2026-08-04T12:05:00Z").unwrap();
        assert_eq!(tb.correct(now), now as u64);
        // A valid clock at start: nothing is corrected even with a GPS offset.
        let ev2 = [
            "2026-08-04T12:00:00.000000Z mono=10.000000 session-start session=x clock_valid=true",
            "2026-08-04T12:00:01.000000Z mono=11.000000 clock gps-time-known gps_utc=2011-01-01T00:00:00.000000Z offset_s=-5000000.0",
        ];
        let ev2: Vec<EventLine> = ev2.iter().map(|l| parse_event(l).unwrap()).collect();
        let mut r = Report::default();
        let tb = time_base(None, &ev2, &mut r);
        assert_eq!(tb.correct(now), now as u64);
        assert_eq!(r.clock_offset_s, None);
        // Unset and never learned: said so.
        let mut r = Report::default();
        time_base(None, &ev[..1], &mut r);
        assert!(r.clock_note.is_some());
    }

    /// Issue #13: a crashed session (no manifest, torn tails, a bad row in the middle) exports
    /// what is readable and reports the rest with counts and reasons.
    #[test]
    fn crashed_session_exports_what_is_readable() {
        let d = session(&[
            (
                "events.log",
                "2026-08-04T12:00:00.000000Z mono=1.000000 session-start session=s clock_valid=true\n\
                 2026-08-04T12:00:01.000000Z mono=2.000000 dropout source=can sink=logger count=12 first_mono=1.5 last_mono=1.9\n\
                 2026-08-04T12:00:0",
            ),
            (
                "can.000.log",
                "(1785844800.000000) can0 123#11\n(1785844800.100000) can0 1801550A#0102\nxx\n(1785844800.200000) can0 124#22\n(1785844800.3",
            ),
            (
                "rangefinder.000.csv",
                &format!(
                    "{RANGE_HEADER}\n1.0,2026-08-04T12:00:00.000000Z,1.50,10,ok\n2.0,2026-08-04T12:00:01.000000Z,1.60,10,weak\n3.0,2026-08"
                ),
            ),
        ]);
        let out = d.path().join("x.mcap");
        let r = export(&open(d.path()), &out).unwrap();
        assert_eq!(r.messages["/can"], 3, "{r:?}");
        assert_eq!(r.messages["/rangefinder"], 2);
        assert_eq!(r.messages["/events"], 2);
        let text = describe(&out, &r);
        for want in [
            "can.000.log: 1 malformed candump line (first at line 3)",
            "can.000.log: 1 torn tail",
            "rangefinder.000.csv: 1 torn tail",
            "events.log: 1 torn tail",
            "note: manifest.json missing",
        ] {
            assert!(text.contains(want), "{want} in\n{text}");
        }
        assert!(out.exists() && !out.with_extension("mcap.part").exists());
        let bytes = std::fs::read(&out).unwrap();
        assert!(bytes.starts_with(b"\x89MCAP0\r\n") && bytes.ends_with(b"\x89MCAP0\r\n"));
        // Read back with the crate's own reader: 3 CAN frames, in time order.
        let n = ::mcap::MessageStream::new(&bytes)
            .unwrap()
            .filter_map(Result::ok)
            .filter(|m| m.channel.topic == "/can")
            .count();
        assert_eq!(n, 3);
    }

    /// Issue #13: each NMEA sentence takes the time of the fix row its epoch completed.
    #[test]
    fn sentences_take_their_epochs_fix_time() {
        // Two epochs of GGA+RMC (RMC ends them) from gpsd's captures' shape.
        let line = |body: &str| {
            let sum = body.bytes().fold(0u8, |a, b| a ^ b);
            format!("${body}*{sum:02X}\r\n")
        };
        let nmea: String = [
            "GPGGA,120000.00,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,",
            "GPRMC,120000.00,A,4807.038,N,01131.000,E,022.4,084.4,040826,003.1,W",
            "GPGSV,1,1,01,14,79,041,29",
            "GPGGA,120001.00,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,",
            "GPRMC,120001.00,A,4807.038,N,01131.000,E,022.4,084.4,040826,003.1,W",
        ]
        .iter()
        .map(|b| line(b))
        .collect();
        let nmea = nmea.as_str();
        // The fixes the firmware logged for it (computed with the same builder).
        let mut b = FixBuilder::default();
        let mut fixes = Vec::new();
        for (i, l) in nmea.split_inclusive('\n').enumerate() {
            let stamp = crate::clock::Stamp {
                boot_ns: i as u64,
                wall_ns: 1_785_844_800_000_000_000 + i as i64 * 1_000_000_000,
            };
            b.update(stamp, l.as_bytes(), |f| fixes.push(f));
        }
        b.flush(Default::default(), |f| fixes.push(f));
        let mut csv = format!("{FIX_HEADER}\n");
        for f in &fixes {
            let mut v = Vec::new();
            crate::formats::csv::write_fix(&mut v, f);
            csv.push_str(std::str::from_utf8(&v).unwrap());
        }
        let d = session(&[("gps.000.nmea", nmea), ("gps-fix.000.csv", &csv)]);
        let mut r = Report::default();
        let tb = TimeBase::default();
        let dir = open(d.path());
        let fx = read_fixes(&dir, &mut r).unwrap();
        assert_eq!(fx.len(), fixes.len());
        let msgs = nmea_messages(&dir, &fx, &tb, &mut r).unwrap();
        assert_eq!(msgs.len(), 5);
        let t: Vec<i64> = msgs.iter().map(|m| m.recorded_ns).collect();
        assert_eq!(fx.len(), 2, "{fx:?}");
        // Each fix row is stamped with the receipt of the sentence that completed it: the first
        // epoch (its ender not learned yet) by the next GGA (line 4, +3 s), the second by its
        // RMC (+4 s). Every sentence takes the time of the next completing sentence, so that
        // one's time is exact and none is earlier than its receipt.
        let base = 1_785_844_800_000_000_000;
        let (a, b) = (fx[0].stamp.wall_ns, fx[1].stamp.wall_ns);
        assert_eq!((a, b), (base + 3_000_000_000, base + 4_000_000_000));
        assert_eq!(t, vec![a, a, a, a, b]);
        assert_eq!(r.nmea_approximate, 0, "{r:?}");
    }
}
