//! `harmony log check DIR [--repair]`: every file of a session against its format.
//!
//! A run of bad lines at the end of a file (including a last line without a newline) is a torn
//! tail: what a power cut can leave. `--repair` cuts it off and keeps the cut bytes in
//! `FILE.torn`. A bad line followed by good ones is corruption in the middle: reported by line
//! number, never "repaired" away.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::formats::csv::{FIX_HEADER, RANGE_HEADER, parse_fix, parse_range};
use crate::formats::nmea::{Event, Intake};
use crate::logger::events;

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
}

impl FileKind {
    pub fn of(name: &str) -> Option<Self> {
        Some(if name == "events.log" {
            FileKind::Events
        } else if name == "harmony.log" {
            FileKind::AppLog
        } else if name == "manifest.json" {
            FileKind::Manifest
        } else if name.starts_with("can.") && name.ends_with(".log") {
            FileKind::Candump
        } else if name.starts_with("gps.") && name.ends_with(".nmea") {
            FileKind::Nmea
        } else if name.starts_with("gps-fix.") && name.ends_with(".csv") {
            FileKind::FixCsv
        } else if name.starts_with("rangefinder.") && name.ends_with(".csv") {
            FileKind::RangeCsv
        } else {
            return None;
        })
    }
}

/// The verdict on one file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileReport {
    pub path: PathBuf,
    pub kind: FileKind,
    pub records: u64,
    /// Byte offset and length of a torn tail.
    pub torn: Option<(u64, u64)>,
    /// Bad lines in the middle: (line number, what is wrong).
    pub corrupt: Vec<(u64, String)>,
    pub repaired: bool,
}

impl FileReport {
    pub fn ok(&self) -> bool {
        self.corrupt.is_empty() && (self.torn.is_none() || self.repaired)
    }
}

/// Why a check could not be done.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

fn nmea_ok(line: &[u8]) -> bool {
    let mut i = Intake::new();
    let mut ok = false;
    let mut with_nl = line.to_vec();
    with_nl.push(b'\n');
    i.feed(&with_nl, |e| ok = matches!(e, Event::Accepted(_)));
    ok && i.counters.accepted == 1 && i.counters.rejected() == 0
}

/// Line numbers of the bad candump lines in `data` (one pass of socketcan's reader).
fn candump_bad_lines(data: &[u8]) -> std::collections::HashSet<u64> {
    use crate::formats::candump::{DumpError, DumpReader};
    let mut r = DumpReader::new(data, Path::new("-"));
    let mut bad = std::collections::HashSet::new();
    loop {
        match r.next_frame() {
            Ok(Some(_)) => {}
            Ok(None) => break,
            Err(DumpError::Malformed { line, .. } | DumpError::Fd { line, .. }) => {
                bad.insert(line);
            }
            Err(DumpError::Io { .. }) => break,
        }
    }
    bad
}

/// Whether `line` (without its newline) is valid for `kind`; `first` for CSV headers.
pub fn line_ok(kind: FileKind, line: &[u8], first: bool) -> Result<(), String> {
    let text = || std::str::from_utf8(line).map_err(|_| "not UTF-8".to_owned());
    match kind {
        // Checked for the whole file at once in `check_file`.
        FileKind::Candump => Ok(()),
        FileKind::Nmea => nmea_ok(line)
            .then_some(())
            .ok_or_else(|| "not a sentence with a valid checksum".into()),
        FileKind::FixCsv if first => (text()? == FIX_HEADER)
            .then_some(())
            .ok_or_else(|| "wrong header".into()),
        FileKind::RangeCsv if first => (text()? == RANGE_HEADER)
            .then_some(())
            .ok_or_else(|| "wrong header".into()),
        FileKind::FixCsv => parse_fix(text()?).map(|_| ()).map_err(|e| e.to_string()),
        FileKind::RangeCsv => parse_range(text()?).map(|_| ()).map_err(|e| e.to_string()),
        FileKind::Events => events::valid(text()?)
            .then_some(())
            .ok_or_else(|| "not an event line".into()),
        FileKind::AppLog => text().map(|_| ()),
        FileKind::Manifest => Ok(()),
    }
}

/// Checks (and with `repair`, repairs) one file.
pub fn check_file(path: &Path, kind: FileKind, repair: bool) -> Result<FileReport, CheckError> {
    let io = |source| CheckError::Io {
        path: path.to_owned(),
        source,
    };
    let data = fs::read(path).map_err(io)?;
    let mut report = FileReport {
        path: path.to_owned(),
        kind,
        records: 0,
        torn: None,
        corrupt: Vec::new(),
        repaired: false,
    };
    if kind == FileKind::Manifest {
        if let Err(e) = serde_json::from_slice::<serde_json::Value>(&data) {
            report.corrupt.push((1, format!("not JSON: {e}")));
        }
        return Ok(report);
    }
    let bad_frames = if kind == FileKind::Candump {
        candump_bad_lines(&data)
    } else {
        Default::default()
    };
    // Walk the lines; remember where the current run of bad lines began.
    let mut offset = 0usize;
    let mut line_no = 0u64;
    let mut bad_run: Vec<(u64, usize, String)> = Vec::new();
    let mut good_after_bad = Vec::new();
    while offset < data.len() {
        let end = data[offset..]
            .iter()
            .position(|&b| b == b'\n')
            .map(|i| offset + i);
        line_no += 1;
        let (line, next, complete) = match end {
            Some(e) => (&data[offset..e], e + 1, true),
            None => (&data[offset..], data.len(), false),
        };
        let verdict = if bad_frames.contains(&line_no) {
            Err("not a candump frame line".into())
        } else if kind == FileKind::Candump && complete && line.trim_ascii().is_empty() {
            Err("empty line".into())
        } else if complete {
            line_ok(kind, line, line_no == 1)
        } else {
            Err("no newline at the end (torn)".into())
        };
        match verdict {
            Ok(()) => {
                if !bad_run.is_empty() {
                    good_after_bad.append(&mut bad_run);
                }
                if !(line_no == 1 && matches!(kind, FileKind::FixCsv | FileKind::RangeCsv)) {
                    report.records += 1;
                }
            }
            Err(why) => bad_run.push((line_no, offset, why)),
        }
        offset = next;
    }
    report.corrupt = good_after_bad
        .into_iter()
        .map(|(n, _, why)| (n, why))
        .collect();
    if let Some((_, at, _)) = bad_run.first() {
        let at = *at as u64;
        report.torn = Some((at, data.len() as u64 - at));
        if repair {
            let aside = path.with_extension(format!(
                "{}.torn",
                path.extension().and_then(|e| e.to_str()).unwrap_or("")
            ));
            let mut f = fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&aside)
                .map_err(io)?;
            f.write_all(&data[at as usize..]).map_err(io)?;
            f.sync_all().map_err(io)?;
            let file = fs::OpenOptions::new().write(true).open(path).map_err(io)?;
            file.set_len(at).map_err(io)?;
            file.sync_all().map_err(io)?;
            report.repaired = true;
        }
    }
    Ok(report)
}

/// Checks every known file in a session directory.
pub fn check_session(dir: &Path, repair: bool) -> Result<Vec<FileReport>, CheckError> {
    let mut names: Vec<PathBuf> = fs::read_dir(dir)
        .map_err(|source| CheckError::Io {
            path: dir.to_owned(),
            source,
        })?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    names.sort();
    let mut out = Vec::new();
    for p in names {
        let Some(kind) = p
            .file_name()
            .and_then(|n| FileKind::of(&n.to_string_lossy()))
        else {
            continue;
        };
        out.push(check_file(&p, kind, repair)?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert!(r.ok() && r.repaired);
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
        assert!(
            line_ok(
                FileKind::Nmea,
                b"$GPGLL,2638.1726,N,08011.3892,W,030129.000,A,A*47\r",
                false
            )
            .is_ok()
        );
        assert!(
            line_ok(
                FileKind::Nmea,
                b"$GPGLL,2638.1726,N,08011.3892,W,030129.000,A,A*48",
                false
            )
            .is_err()
        );
    }
}
