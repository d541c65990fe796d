//! What `harmony log plot` draws besides the sensor series (issue #13): the CAN bus load in
//! frames per second per DroneCAN node (or per CAN id, for frames that are not DroneCAN), and
//! the dropouts from `events.log`, all on the plot's time axis (boot clock seconds).
//!
//! The candump log is stamped with the wall clock only; a frame's boot-clock time is its wall
//! time minus the session's wall-minus-boot offset, taken from the `session-start` event (its
//! UTC and `mono=`). A clock step during the session shifts the frames after it by the step;
//! `events.log` says when that happened (`clock system-clock-changed`).
//!
//! Bounded whatever the files hold: files are opened without following links
//! ([`super::files::Dir`]), event lines are read at most 64 KiB each, at most [`MAX_KEYS`]
//! nodes or ids are told apart (the rest count as "other"), and the series have at most
//! [`super::plot::COLUMNS`] bins: a log whose times span years gets wider bins, not more.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::io::{BufRead, BufReader};

use super::files::Dir;
use crate::formats::candump::DumpReader;
use crate::formats::dronecan;
use crate::formats::utc::parse_utc;
use crate::logger::{CAN, segments};

/// Series drawn at most (the busiest; the rest is summed into "other").
pub const MAX_SERIES: usize = 8;
/// Nodes or ids told apart at most while reading.
pub const MAX_KEYS: usize = 1024;

/// Frames per second over time, one series per node or id.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CanLoad {
    /// `(label, [(boot seconds at the bin's start, frames/s)])`, busiest first, then "other".
    pub series: Vec<(String, Vec<(f64, f64)>)>,
    /// Frames in all.
    pub frames: u64,
    /// Lines that were not frames.
    pub skipped: u64,
}

/// A dropout: a queue was full from `first` to `last` (boot seconds).
#[derive(Clone, Debug, PartialEq)]
pub struct Dropout {
    pub first: f64,
    pub last: f64,
    pub source: String,
    pub count: u64,
}

/// `(session-start UTC ns - its mono ns)`: wall minus boot clock at the start.
fn wall_minus_boot(events: &[String]) -> Option<i64> {
    events.iter().find_map(|l| {
        let e = super::mcap::parse_event(l)?;
        (e.kind == "session-start").then(|| e.utc_ns - (e.mono_s * 1e9).round() as i64)
    })
}

fn event_lines(session: &Dir) -> Vec<String> {
    let Ok(f) = session.read(OsStr::new("events.log")) else {
        return Vec::new();
    };
    let f = f.file;
    let mut out = Vec::new();
    let mut r = BufReader::new(f);
    let mut line = Vec::new();
    loop {
        line.clear();
        // Bounded lines: a corrupt file cannot make one line eat the memory.
        match std::io::Read::take(&mut r, 64 * 1024).read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => return out,
            Ok(_) if line.ends_with(b"\n") => {
                line.pop();
                out.push(String::from_utf8_lossy(&line).into_owned());
            }
            Ok(_) => {
                // Torn or over-long: skip to the next newline.
                let mut sink = Vec::new();
                let _ = r.read_until(b'\n', &mut sink);
            }
        }
    }
}

/// The dropouts recorded in `events.log`.
pub fn dropouts(session: &Dir) -> Vec<Dropout> {
    event_lines(session)
        .iter()
        .filter_map(|l| super::mcap::parse_event(l))
        .filter(|e| e.kind == "dropout")
        .filter_map(|e| {
            let n = |k: &str| {
                e.fields
                    .get(k)?
                    .parse::<f64>()
                    .ok()
                    .filter(|v| v.is_finite())
            };
            Some(Dropout {
                first: n("first_mono")?,
                last: n("last_mono")?.max(n("first_mono")?),
                source: e.fields.get("source").cloned().unwrap_or_default(),
                count: n("count").unwrap_or(0.0) as u64,
            })
        })
        .collect()
}

/// The CAN frames per second of `session`, in bins of one second (boot clock), or wider when
/// the times span more than [`super::plot::COLUMNS`] seconds.
pub fn can_load(session: &Dir) -> CanLoad {
    let files = segments(session.path(), CAN);
    let offset = wall_minus_boot(&event_lines(session));
    let mut load = CanLoad::default();
    // key -> bin -> frames
    let mut bins: BTreeMap<String, BTreeMap<i64, u64>> = BTreeMap::new();
    let mut totals: BTreeMap<String, u64> = BTreeMap::new();
    for f in &files {
        let Some(Ok(of)) = f.file_name().map(|n| session.read(n)) else {
            continue;
        };
        let mut rd = DumpReader::new(of.file, &of.path);
        loop {
            match rd.next_frame() {
                Ok(None) => break,
                Ok(Some(fr)) => {
                    let wall = (fr.t_us as i128 * 1000) as f64;
                    let t = match offset {
                        Some(o) => (wall - o as f64) / 1e9,
                        None => wall / 1e9,
                    };
                    if !t.is_finite() {
                        load.skipped += 1;
                        continue;
                    }
                    let mut key = match dronecan::decode(&fr.record) {
                        Some(d) => format!("node {}", d.source),
                        None => format!("id {:X}", fr.record.raw_id()),
                    };
                    if bins.len() >= MAX_KEYS && !bins.contains_key(&key) {
                        key = "other".into();
                    }
                    let b = t.floor().clamp(-1e15, 1e15) as i64;
                    *bins.entry(key.clone()).or_default().entry(b).or_default() += 1;
                    *totals.entry(key).or_default() += 1;
                    load.frames += 1;
                }
                Err(crate::formats::candump::DumpError::Io { .. }) => break,
                Err(_) => load.skipped += 1,
            }
        }
    }
    let mut keys: Vec<(String, u64)> = totals.into_iter().collect();
    keys.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    let (lo, hi) = bins
        .values()
        .flat_map(|m| m.keys().copied())
        .fold((i64::MAX, i64::MIN), |(a, b), k| (a.min(k), b.max(k)));
    if lo > hi {
        return load;
    }
    // Wider bins when the span is longer than the chart is wide.
    let cols = super::plot::COLUMNS as i64;
    let width = ((hi - lo) / cols + 1).max(1);
    let bin_s = width as f64;
    let rebin = |m: &BTreeMap<i64, u64>| -> BTreeMap<i64, u64> {
        let mut out = BTreeMap::new();
        for (b, n) in m {
            *out.entry(lo + (b - lo) / width).or_insert(0) += n;
        }
        out
    };
    let bins: BTreeMap<String, BTreeMap<i64, u64>> =
        bins.iter().map(|(k, m)| (k.clone(), rebin(m))).collect();
    let hi = lo + (hi - lo) / width;
    let series_of = |m: &BTreeMap<i64, u64>| -> Vec<(f64, f64)> {
        (lo..=hi)
            .map(|b| {
                (
                    (lo + (b - lo) * width) as f64,
                    m.get(&b).copied().unwrap_or(0) as f64 / bin_s,
                )
            })
            .collect()
    };
    let mut other: BTreeMap<i64, u64> = BTreeMap::new();
    for (i, (k, _)) in keys.iter().enumerate() {
        let m = &bins[k];
        if i < MAX_SERIES && k != "other" {
            load.series.push((k.clone(), series_of(m)));
        } else {
            for (b, n) in m {
                *other.entry(*b).or_default() += n;
            }
        }
    }
    if !other.is_empty() {
        load.series.push(("other".into(), series_of(&other)));
    }
    load
}

/// The boot-clock time of a wall time in `session`, if its start is known (for tests).
pub fn boot_of_wall(session: &Dir, utc: &str) -> Option<f64> {
    let o = wall_minus_boot(&event_lines(session))?;
    Some((parse_utc(utc)? - o) as f64 / 1e9)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue #13: frames per second per DroneCAN node (and per id for other frames), on the
    /// boot clock; dropouts read from events.log.
    #[test]
    fn can_load_per_node_and_dropouts() {
        let d = tempfile::tempdir().unwrap();
        // Session started at wall 1_785_844_800.0 with the boot clock at 100.0 s.
        std::fs::write(
            d.path().join("events.log"),
            "2026-08-04T12:00:00.000000Z mono=100.000000 session-start session=s clock_valid=true\n\
             2026-08-04T12:00:03.000000Z mono=103.000000 dropout source=can sink=logger count=42 first_mono=102.5 last_mono=102.9\n",
        )
        .unwrap();
        // Node 76 (DroneCAN, tail byte 0xC0): 3 frames in second 0, 1 in second 1.
        let mut can = String::from(
            "(1785844800.100000) can0 09F1124C#01C0\n\
             (1785844800.200000) can0 09F1124C#01C0\n\
             (1785844800.300000) can0 09F1124C#01C0\n\
             (1785844801.500000) can0 09F1124C#01C0\n",
        );
        // A standard frame, not DroneCAN.
        can.push_str("(1785844801.700000) can0 123#11\n");
        std::fs::write(d.path().join("can.000.log"), can).unwrap();
        let dir = Dir::open_arg(d.path(), super::super::files::ArgDir::Follow).unwrap();
        let l = can_load(&dir);
        assert_eq!(l.frames, 5);
        assert_eq!(l.series[0].0, "node 76", "{l:?}");
        assert_eq!(l.series[0].1, vec![(100.0, 3.0), (101.0, 1.0)]);
        assert_eq!(l.series[1].0, "id 123");
        assert_eq!(l.series[1].1, vec![(100.0, 0.0), (101.0, 1.0)]);
        let dr = dropouts(&dir);
        assert_eq!(
            dr,
            vec![Dropout {
                first: 102.5,
                last: 102.9,
                source: "can".into(),
                count: 42
            }]
        );
        assert_eq!(boot_of_wall(&dir, "2026-08-04T12:00:01Z"), Some(101.0));
    }

    /// Issue #13: times spanning years (a corrupt or clock-stepped log) give wider bins, never
    /// more than the chart's columns.
    #[test]
    fn long_spans_are_bounded() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(
            d.path().join("can.000.log"),
            "(0000000001.000000) can0 123#11\n(1785844800.000000) can0 123#11\n",
        )
        .unwrap();
        let dir = Dir::open_arg(d.path(), super::super::files::ArgDir::Follow).unwrap();
        let l = can_load(&dir);
        assert_eq!(l.frames, 2);
        let n = l.series[0].1.len();
        assert!(n <= super::super::plot::COLUMNS + 1, "{n}");
    }
}
