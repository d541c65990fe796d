//! `harmony log check DIR [--repair]`: every byte of every file of a session against its
//! format (issue #4, #17).
//!
//! * Every line is read, in bounded memory ([`Lines`]): a line longer than its format allows
//!   is an error and the lines after it are still checked; a byte that is not UTF-8 is an
//!   error on its line, never the end of the check.
//! * Each line is checked whole against the format the logger writes: candump lines byte by
//!   byte (time, interface, ID, data: [`candump_line`]), NMEA sentences as the GPS intake
//!   accepts them (one sentence, nothing before or after it, checksum), CSV rows with the
//!   logger's readers plus finite numbers ([`super::rows`]), `events.log` lines by their
//!   shape, `harmony.log` as text, `manifest.json` as a JSON object with the manifest's keys.
//! * Torn tail: the logger writes whole lines, so a power cut can only leave bytes after the
//!   last newline (a partial line, or zeros). That unterminated last line is the torn tail;
//!   `--repair` moves it to `FILE.torn` and cuts the file at the last newline. Nothing else is
//!   ever cut: a bad line followed by anything, or a bad complete last line, is corruption,
//!   reported by line number and left alone.
//! * Missing files: every session the logger made has `events.log` and `manifest.json` (both
//!   are written when the session starts), so a session without one FAILS the check. A
//!   manifest that is not `closed` is only a WARNING: a crashed run (or one still running)
//!   legitimately leaves it open.
//! * Links: nothing inside a session is followed, and repairs refuse anything that is not a
//!   regular file with one link, `FILE.torn` included ([`super::files`]).

use std::ffi::{OsStr, OsString};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use super::files::{ArgDir, Dir, EntryKind, FileError};
use super::lines::Lines;
use super::rows;
use crate::formats::csv::{FIX_HEADER, RANGE_HEADER};
use crate::formats::nmea::{Event, Intake};
use crate::logger::events;
use crate::logger::session::is_session_name;
use crate::records::NMEA_MAX;

/// What kind of file, by name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileKind {
    Candump,
    Nmea,
    FixCsv,
    RangeCsv,
    Events,
    AppLog,
    Manifest,
    /// A session directory itself (for problems reaching it).
    Session,
}

/// `STEM.NNN.EXT` with NNN digits.
fn is_segment(name: &str, stem: &str, ext: &str) -> bool {
    name.strip_prefix(stem)
        .and_then(|n| n.strip_prefix('.'))
        .and_then(|n| n.strip_suffix(ext))
        .and_then(|n| n.strip_suffix('.'))
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

impl FileKind {
    pub fn of(name: &str) -> Option<Self> {
        Some(match name {
            "events.log" => FileKind::Events,
            "harmony.log" => FileKind::AppLog,
            "manifest.json" => FileKind::Manifest,
            n if is_segment(n, "can", "log") => FileKind::Candump,
            n if is_segment(n, "gps", "nmea") => FileKind::Nmea,
            n if is_segment(n, "gps-fix", "csv") => FileKind::FixCsv,
            n if is_segment(n, "rangefinder", "csv") => FileKind::RangeCsv,
            _ => return None,
        })
    }

    /// Longest line (without `\n`) the format can have; a longer one is an error and is
    /// read in bounded memory.
    pub fn max_line(self) -> usize {
        match self {
            // A candump line is at most 64 bytes (`formats::candump::MAX_LINE`); room for
            // a 20-digit time and a long interface name.
            FileKind::Candump => 128,
            // gpsd's limit, terminator included.
            FileKind::Nmea => NMEA_MAX - 1,
            FileKind::FixCsv | FileKind::RangeCsv => 1024,
            // Notes and log messages are short; multi-line messages are split into lines.
            FileKind::Events | FileKind::AppLog => 16 * 1024,
            FileKind::Manifest | FileKind::Session => 0,
        }
    }
}

/// Corrupt lines listed per file (all are counted).
pub const MAX_LISTED: usize = 100;

/// Largest manifest read (it is a few KiB).
pub const MANIFEST_MAX: u64 = 1 << 20;

/// The verdict on one file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileReport {
    pub path: PathBuf,
    pub kind: FileKind,
    pub records: u64,
    /// Byte offset and length of a torn tail.
    pub torn: Option<(u64, u64)>,
    /// Bad lines, the first [`MAX_LISTED`]: (line number, what is wrong).
    pub corrupt: Vec<(u64, String)>,
    /// All bad lines.
    pub corrupt_lines: u64,
    /// The file could not be checked or repaired: missing, a link, unreadable, refused.
    pub problem: Option<String>,
    /// Worth saying, not a failure (an open manifest).
    pub warnings: Vec<String>,
    pub repaired: bool,
}

impl FileReport {
    fn new(path: PathBuf, kind: FileKind) -> Self {
        FileReport {
            path,
            kind,
            records: 0,
            torn: None,
            corrupt: Vec::new(),
            corrupt_lines: 0,
            problem: None,
            warnings: Vec::new(),
            repaired: false,
        }
    }

    fn problem(path: PathBuf, kind: FileKind, why: String) -> Self {
        let mut r = Self::new(path, kind);
        r.problem = Some(why);
        r
    }

    fn bad_line(&mut self, no: u64, why: String) {
        self.corrupt_lines += 1;
        if self.corrupt.len() < MAX_LISTED {
            self.corrupt.push((no, why));
        }
    }

    pub fn ok(&self) -> bool {
        self.problem.is_none() && self.corrupt_lines == 0 && (self.torn.is_none() || self.repaired)
    }
}

/// Why a check could not be done at all.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error(transparent)]
    File(#[from] FileError),
    #[error("{0}: neither a session directory nor a data directory with sessions")]
    NotASession(PathBuf),
}

fn hex_value(s: &[u8]) -> Option<u32> {
    if s.is_empty() || s.len() > 8 || !s.iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    u32::from_str_radix(std::str::from_utf8(s).ok()?, 16).ok()
}

/// One candump `-l` line as [`crate::formats::candump::format_line`] writes it, every byte:
/// `(SECONDS.USECS) IFACE ID#DATA`.
pub fn candump_line(l: &[u8]) -> Result<(), String> {
    let e = |w: &str| Err(w.to_owned());
    let Some(rest) = l.strip_prefix(b"(") else {
        return e("does not start with '(' and a time");
    };
    let Some(close) = rest.iter().position(|&b| b == b')') else {
        return e("no ')' after the time");
    };
    let (time, rest) = (&rest[..close], &rest[close + 1..]);
    let digits = |s: &[u8]| s.iter().all(u8::is_ascii_digit);
    match time.iter().position(|&b| b == b'.') {
        Some(dot)
            if (1..=20).contains(&dot)
                && digits(&time[..dot])
                && time.len() - dot - 1 == 6
                && digits(&time[dot + 1..]) => {}
        _ => return e("time is not SECONDS.MICROSECONDS"),
    }
    let Some(rest) = rest.strip_prefix(b" ") else {
        return e("no space after the time");
    };
    let Some(sp) = rest.iter().position(|&b| b == b' ') else {
        return e("no interface name");
    };
    let iface = &rest[..sp];
    if !(1..=15).contains(&iface.len())
        || !iface
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b"_-.@".contains(&b))
    {
        return e("bad interface name");
    }
    let frame = &rest[sp + 1..];
    let Some(hash) = frame.iter().position(|&b| b == b'#') else {
        return e("no '#' after the CAN ID");
    };
    let (id, data) = (&frame[..hash], &frame[hash + 1..]);
    let error_frame = match (id.len(), hex_value(id)) {
        (3, Some(v)) if v <= 0x7ff => false,
        (8, Some(v)) if v <= 0x3fff_ffff => v & 0x2000_0000 != 0,
        _ => return e("bad CAN ID (3 hex digits up to 7FF, or 8 up to 3FFFFFFF)"),
    };
    match data {
        [b'R'] if !error_frame => Ok(()),
        [b'R', b'0'..=b'8'] if !error_frame => Ok(()),
        d if d.len() % 2 == 0 && d.len() <= 16 && d.iter().all(u8::is_ascii_hexdigit) => Ok(()),
        _ => e("bad data (up to 8 bytes as hex pairs, or R for a remote frame)"),
    }
}

/// One sentence exactly as the GPS intake accepts it, and nothing else on the line.
fn nmea_line(line: &[u8]) -> Result<(), String> {
    if !matches!(line.first(), Some(b'$' | b'!')) {
        return Err("does not start with '$' or '!'".into());
    }
    let mut i = Intake::new();
    let mut ok = false;
    i.feed(line, |_| {});
    i.feed(b"\n", |ev| ok = matches!(ev, Event::Accepted(_)));
    let c = i.counters;
    if ok && c.accepted == 1 && c.rejected() == 0 && c.noise_bytes == 0 {
        Ok(())
    } else {
        Err("not one NMEA sentence with a valid checksum".into())
    }
}

/// Text for humans: UTF-8 without control characters (but tab, and `\r` when `cr`).
fn text_line(line: &[u8], cr: bool) -> Result<&str, String> {
    let t = std::str::from_utf8(line)
        .map_err(|e| format!("not UTF-8 (byte {})", e.valid_up_to() + 1))?;
    match t
        .bytes()
        .position(|b| b.is_ascii_control() && b != b'\t' && !(cr && b == b'\r'))
    {
        Some(at) => Err(format!(
            "control byte 0x{:02x} at byte {}",
            line[at],
            at + 1
        )),
        None => Ok(t),
    }
}

/// Whether `line` (complete, without its newline) is valid for `kind`; `first` for CSV headers.
pub fn line_ok(kind: FileKind, line: &[u8], first: bool) -> Result<(), String> {
    let header = |want: &str| {
        if line == want.as_bytes() {
            Ok(())
        } else {
            Err("wrong header".to_owned())
        }
    };
    match kind {
        FileKind::Candump => candump_line(line),
        FileKind::Nmea => nmea_line(line),
        FileKind::FixCsv if first => header(FIX_HEADER),
        FileKind::RangeCsv if first => header(RANGE_HEADER),
        FileKind::FixCsv => rows::fix(line).map(|_| ()),
        FileKind::RangeCsv => rows::range(line).map(|_| ()),
        FileKind::Events => {
            if events::valid(text_line(line, false)?) {
                Ok(())
            } else {
                Err("not an event line (UTC mono=SECONDS KIND ...)".into())
            }
        }
        FileKind::AppLog => text_line(line, true).map(|_| ()),
        FileKind::Manifest | FileKind::Session => Ok(()),
    }
}

fn manifest(dir: &Dir, name: &OsStr, r: &mut FileReport) -> Result<(), FileError> {
    let data = match dir.read_bounded(name, MANIFEST_MAX)? {
        Ok(d) => d,
        Err(len) => {
            r.bad_line(1, format!("{len} bytes, larger than a manifest can be"));
            return Ok(());
        }
    };
    let v: serde_json::Value = match serde_json::from_slice(&data) {
        Ok(v) => v,
        Err(e) => {
            r.bad_line(e.line() as u64, format!("not JSON: {e}"));
            return Ok(());
        }
    };
    let keys = [
        "firmware",
        "session",
        "started_utc",
        "updated_utc",
        "closed",
    ];
    match keys.iter().find(|k| v.get(**k).is_none()) {
        Some(k) => r.bad_line(1, format!("not a manifest: no \"{k}\"")),
        None => {
            r.records = 1;
            if v["closed"] != serde_json::Value::Bool(true) {
                r.warnings.push(
                    "not closed: the run crashed or is still running (its counters are from \
                     the last update)"
                        .into(),
                );
            }
        }
    }
    Ok(())
}

/// Scans one regular file; fills `r`; returns the bytes scanned.
fn scan(dir: &Dir, name: &OsStr, r: &mut FileReport) -> Result<(u64, u64, u64), FileError> {
    let f = dir.read(name)?;
    let (dev, ino) = (f.dev, f.ino);
    let path = f.path.clone();
    let csv = matches!(r.kind, FileKind::FixCsv | FileKind::RangeCsv);
    let mut lines = Lines::new(f.file, r.kind.max_line());
    loop {
        let l = match lines.next_line() {
            Ok(Some(l)) => l,
            Ok(None) => break,
            Err(source) => return Err(FileError::Io { path, source }),
        };
        if !l.complete {
            r.torn = Some((l.offset, l.len));
            break;
        }
        let verdict = if l.overlong() {
            Err(format!(
                "line of {} bytes, longer than this format allows ({})",
                l.len,
                r.kind.max_line()
            ))
        } else {
            line_ok(r.kind, l.bytes, l.no == 1)
        };
        match verdict {
            Ok(()) if csv && l.no == 1 => {}
            Ok(()) => r.records += 1,
            Err(why) => r.bad_line(l.no, why),
        }
    }
    Ok((lines.position(), dev, ino))
}

fn torn_name(name: &OsStr) -> OsString {
    let mut n = name.to_owned();
    n.push(".torn");
    n
}

/// Moves the torn tail `at..scanned` to `NAME.torn` and cuts the file at `at`.
fn cut(
    dir: &Dir,
    name: &OsStr,
    at: u64,
    scanned: u64,
    (dev, ino): (u64, u64),
) -> Result<(), String> {
    let mut f = dir.modify(name).map_err(|e| e.reason())?;
    if (f.dev, f.ino) != (dev, ino) || f.len != scanned {
        return Err(
            "changed while being checked (is the firmware still writing it?): \
                    not repaired"
                .into(),
        );
    }
    let torn = torn_name(name);
    let mut aside = dir
        .append(&torn)
        .map_err(|e| format!("{}: {}: not repaired", torn.to_string_lossy(), e.reason()))?;
    fn io(p: &Path) -> impl FnOnce(io::Error) -> String + '_ {
        move |e| format!("{}: {e}", p.display())
    }
    f.file.seek(SeekFrom::Start(at)).map_err(io(&f.path))?;
    let copied =
        io::copy(&mut (&f.file).take(scanned - at), &mut aside.file).map_err(io(&aside.path))?;
    if copied != scanned - at {
        return Err(format!(
            "{}: shorter than checked: not repaired",
            f.path.display()
        ));
    }
    aside.file.flush().map_err(io(&aside.path))?;
    aside.file.sync_all().map_err(io(&aside.path))?;
    dir.sync().map_err(|e| e.to_string())?;
    f.file.set_len(at).map_err(io(&f.path))?;
    f.file.sync_all().map_err(io(&f.path))?;
    Ok(())
}

/// Checks (and with `repair`, repairs) the file `name` of the session `dir`.
pub fn check_entry(dir: &Dir, name: &OsStr, kind: FileKind, repair: bool) -> FileReport {
    let mut r = FileReport::new(dir.path().join(name), kind);
    if kind == FileKind::Manifest {
        if let Err(e) = manifest(dir, name, &mut r) {
            r.problem = Some(e.reason());
        }
        return r;
    }
    match scan(dir, name, &mut r) {
        Err(e) => r.problem = Some(e.reason()),
        Ok((scanned, dev, ino)) => {
            if let (Some((at, _)), true) = (r.torn, repair) {
                match cut(dir, name, at, scanned, (dev, ino)) {
                    Ok(()) => r.repaired = true,
                    Err(why) => r.problem = Some(why),
                }
            }
        }
    }
    r
}

/// Checks one file given by path (its directory is followed, the file itself is not).
pub fn check_file(path: &Path, kind: FileKind, repair: bool) -> Result<FileReport, CheckError> {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let dir = Dir::open_arg(parent, ArgDir::Follow)?;
    let name = path.file_name().unwrap_or_default();
    Ok(check_entry(&dir, name, kind, repair))
}

/// Checks every file of an open session directory.
pub fn check_session_dir(dir: &Dir, repair: bool) -> Result<Vec<FileReport>, CheckError> {
    let mut out = Vec::new();
    let mut seen = (false, false);
    for name in dir.names()? {
        let Some(kind) = FileKind::of(&name.to_string_lossy()) else {
            continue;
        };
        seen.0 |= kind == FileKind::Events;
        seen.1 |= kind == FileKind::Manifest;
        out.push(match dir.kind(&name) {
            Ok(EntryKind::File) => check_entry(dir, &name, kind, repair),
            Ok(_) | Err(_) => {
                // Say what it is (a link, a FIFO ...) without opening it.
                let why = match dir.read(&name) {
                    Err(e) => e.reason(),
                    Ok(_) => "changed while being checked".into(),
                };
                FileReport::problem(dir.path().join(&name), kind, why)
            }
        });
    }
    for (present, name, kind) in [
        (seen.0, "events.log", FileKind::Events),
        (seen.1, "manifest.json", FileKind::Manifest),
    ] {
        if !present {
            out.push(FileReport::problem(
                dir.path().join(name),
                kind,
                "MISSING: every session has one from its start (deleted, or the run died at \
                 once?)"
                    .into(),
            ));
        }
    }
    Ok(out)
}

/// Checks the session directory `dir` (its name may be a link only as `latest` when repairing).
pub fn check_session(dir: &Path, repair: bool) -> Result<Vec<FileReport>, CheckError> {
    let how = if repair {
        ArgDir::Strict
    } else {
        ArgDir::Follow
    };
    check_session_dir(&Dir::open_arg(dir, how)?, repair)
}

/// Checks `path`: a session directory (named like one, or `latest`), a data directory holding
/// sessions (each checked), or a directory holding session files (a session copied under
/// another name). A missing directory, or one that is none of these, is an error.
pub fn check_dir(path: &Path, repair: bool) -> Result<Vec<FileReport>, CheckError> {
    let how = if repair {
        ArgDir::Strict
    } else {
        ArgDir::Follow
    };
    let dir = Dir::open_arg(path, how)?;
    let names = dir.names()?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if is_session_name(&name) || name == "latest" {
        return check_session_dir(&dir, repair);
    }
    let sessions: Vec<&OsString> = names
        .iter()
        .filter(|n| is_session_name(&n.to_string_lossy()))
        .collect();
    // A data directory (it may hold `harmony demo`'s harmony.log too).
    if !sessions.is_empty() {
        let mut out = Vec::new();
        for s in sessions {
            match dir.dir(s) {
                Ok(sd) => out.extend(check_session_dir(&sd, repair)?),
                Err(e) => out.push(FileReport::problem(
                    dir.path().join(s),
                    FileKind::Session,
                    e.reason(),
                )),
            }
        }
        return Ok(out);
    }
    // A session copied under another name.
    if names
        .iter()
        .any(|n| FileKind::of(&n.to_string_lossy()).is_some())
    {
        return check_session_dir(&dir, repair);
    }
    Err(CheckError::NotASession(path.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn torn_tail_is_found_and_cut_and_kept_aside() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("can.000.log");
        fs::write(&p, "(1.000000) can0 123#11\n(1.000001) can0 124#22\n(1.00").unwrap();
        let r = check_file(&p, FileKind::Candump, false).unwrap();
        assert_eq!(r.records, 2);
        assert_eq!(r.torn, Some((46, 5)));
        assert!(!r.ok());
        let r = check_file(&p, FileKind::Candump, true).unwrap();
        assert!(r.ok() && r.repaired, "{r:?}");
        assert_eq!(fs::read(&p).unwrap().len(), 46);
        assert_eq!(
            fs::read(d.path().join("can.000.log.torn")).unwrap(),
            b"(1.00"
        );
        let r = check_file(&p, FileKind::Candump, false).unwrap();
        assert_eq!((r.torn, r.records), (None, 2));
    }

    #[test]
    fn corruption_in_the_middle_is_not_a_torn_tail() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("rangefinder.000.csv");
        fs::write(
            &p,
            format!(
                "{RANGE_HEADER}\n1.000000,2023-11-14T22:13:20.123456Z,1.00,1,ok\nxx\n2.000000,2023-11-14T22:13:21.123456Z,1.00,1,ok\n"
            ),
        )
        .unwrap();
        let r = check_file(&p, FileKind::RangeCsv, true).unwrap();
        assert_eq!(r.corrupt.len(), 1);
        assert_eq!(r.corrupt[0].0, 3);
        assert!(!r.ok());
        assert!(!r.repaired);
    }

    #[test]
    fn nmea_lines_need_valid_checksums() {
        let good = b"$GPGLL,2638.1726,N,08011.3892,W,030129.000,A,A*47\r";
        assert!(line_ok(FileKind::Nmea, good, false).is_ok());
        assert!(
            line_ok(
                FileKind::Nmea,
                b"$GPGLL,2638.1726,N,08011.3892,W,030129.000,A,A*48",
                false
            )
            .is_err()
        );
        // Issue #17: nothing but the sentence on the line.
        let mut noisy = b"xx".to_vec();
        noisy.extend_from_slice(good);
        assert!(line_ok(FileKind::Nmea, &noisy, false).is_err());
    }

    /// Issue #17: every line the logger's candump writer can produce passes, and a change to
    /// any single byte of a frame line into a byte that does not belong there is caught.
    #[test]
    fn candump_lines_are_checked_byte_by_byte() {
        use crate::formats::candump::{MAX_LINE, format_line};
        use crate::records::{CAN_EFF_FLAG, CAN_ERR_FLAG, CAN_RTR_FLAG, CanRecord};
        let mut recs = Vec::new();
        for (id, len) in [
            (0x123, 8),
            (0x7ff, 0),
            (0x1801_550a | CAN_EFF_FLAG, 3),
            (0x1fff_ffff | CAN_EFF_FLAG, 8),
            (0x123 | CAN_RTR_FLAG, 0),
            (0x123 | CAN_RTR_FLAG, 4),
            (0x10 | CAN_EFF_FLAG | CAN_RTR_FLAG, 8),
            (0x4 | CAN_ERR_FLAG, 8),
        ] {
            recs.push(CanRecord {
                id,
                len,
                data: [0xa5; 8],
                ..Default::default()
            });
        }
        let mut b = [0u8; MAX_LINE];
        for (i, r) in recs.iter().enumerate() {
            for t in [0, 1_700_000_000_123_456, u64::MAX / 2] {
                let n = format_line(&mut b, t, if i % 2 == 0 { "can0" } else { "vcan15" }, r);
                let line = &b[..n - 1];
                assert_eq!(
                    candump_line(line),
                    Ok(()),
                    "{}",
                    String::from_utf8_lossy(line)
                );
            }
        }
        let line = b"(1700000000.123456) can0 1801550A#DEADBEEF";
        for i in 0..line.len() {
            for bad in [b'\xff', b'\0', b' ', b'(', b'G'] {
                let mut l = line.to_vec();
                if l[i] == bad || (bad == b'G' && i > 19 && i < 24) {
                    continue; // the same byte; a G in the interface name is fine
                }
                l[i] = bad;
                assert!(candump_line(&l).is_err(), "{}", String::from_utf8_lossy(&l));
            }
        }
    }
}
