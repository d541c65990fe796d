//! GPX 1.1 export of the GPS fixes (Google Earth, QGIS, gpsbabel, Strava read it).
//!
//! Written by hand: a fixed schema of a dozen elements, numbers and ISO times only (nothing to
//! escape but the track name). Each fix with a finite position and a valid quality becomes a
//! `<trkpt>` with elevation, time, fix kind, satellites and HDOP. The time is the receiver's
//! UTC only: a fix the receiver had not dated yet (a GGA before any RMC/ZDA) keeps its
//! position but gets no `<time>` (GPX allows that; gpsbabel leaves it out too), since the
//! system clock may be hours off and would make the track run backwards. A row the log tools
//! do not accept ([`super::rows`]: a number that is not finite, a line that is not UTF-8 or
//! too long) is skipped and counted (issue #17): the GPX never holds `inf` or `NaN`. The
//! document is written as it is read, so memory does not grow with the session.

use std::ffi::OsString;
use std::io::Write;

use super::files::Dir;
use super::lines::Lines;
use super::{Progress, ToolError, rows};
use crate::formats::utc::write_utc;
use crate::records::FixQuality;

/// The CSV lines are short; a longer one is skipped.
const MAX_LINE: usize = 1024;

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// What the export wrote.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GpxStats {
    pub points: u64,
    /// Rows that were unreadable or held a non-finite number.
    pub skipped: u64,
}

/// Writes the GPX document for the fix CSV segments `files` of `dir`, in order, to `out`.
pub fn export(
    dir: &Dir,
    files: &[OsString],
    name: &str,
    out: &mut dyn Write,
) -> Result<GpxStats, ToolError> {
    let total: u64 = files
        .iter()
        .filter_map(|f| dir.read(f).ok())
        .map(|f| f.len)
        .sum();
    let mut progress = Progress::new("export", total);
    let mut stats = GpxStats::default();
    let mut pt = Vec::with_capacity(256);
    let mut t = Vec::with_capacity(32);
    let werr = |source| ToolError::Io {
        path: "<output>".into(),
        source,
    };
    write!(
        out,
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<gpx version=\"1.1\" creator=\"harmony {}\" \
         xmlns=\"http://www.topografix.com/GPX/1/1\">\n<trk><name>{}</name><trkseg>\n",
        crate::version::short(),
        escape(name)
    )
    .map_err(werr)?;
    let mut done = 0;
    for f in files {
        let file = dir.read(f)?;
        let path = file.path.clone();
        let mut lines = Lines::new(file.file, MAX_LINE);
        while let Some(l) = lines.next_line().map_err(|source| ToolError::Io {
            path: path.clone(),
            source,
        })? {
            progress.at(done + l.offset);
            if l.no == 1 {
                continue;
            }
            let fix = match (l.overlong(), rows::fix(l.bytes)) {
                (false, Ok(f)) => f,
                _ => {
                    stats.skipped += 1;
                    continue;
                }
            };
            let (Some(lat), Some(lon)) = (fix.lat_deg, fix.lon_deg) else {
                continue;
            };
            if fix.quality == FixQuality::Invalid || !(lat.abs() <= 90.0 && lon.abs() <= 180.0) {
                continue;
            }
            pt.clear();
            let _ = write!(pt, "<trkpt lat=\"{lat:.8}\" lon=\"{lon:.8}\">");
            if let Some(e) = fix.alt_msl_m.filter(|e| e.is_finite()) {
                let _ = write!(pt, "<ele>{e}</ele>");
            }
            if let Some(ns) = fix.utc_ns {
                t.clear();
                write_utc(&mut t, ns);
                pt.extend_from_slice(b"<time>");
                pt.extend_from_slice(&t);
                pt.extend_from_slice(b"</time>");
            }
            let kind = match fix.quality {
                FixQuality::DGps | FixQuality::Rtk | FixQuality::FloatRtk => "dgps",
                _ => "3d",
            };
            let _ = write!(pt, "<fix>{kind}</fix>");
            if let Some(s) = fix.satellites {
                let _ = write!(pt, "<sat>{s}</sat>");
            }
            if let Some(h) = fix.hdop.filter(|h| h.is_finite()) {
                let _ = write!(pt, "<hdop>{h}</hdop>");
            }
            pt.extend_from_slice(b"</trkpt>\n");
            out.write_all(&pt).map_err(werr)?;
            stats.points += 1;
        }
        done += lines.position();
    }
    out.write_all(b"</trkseg></trk>\n</gpx>\n").map_err(werr)?;
    out.flush().map_err(werr)?;
    progress.done();
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEAD: &str =
        "mono_s,utc,gps_utc,lat,lon,alt_msl_m,quality,satellites,hdop,speed_mps,course_deg\n";

    fn gpx_of(rows: &str) -> String {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("gps-fix.000.csv");
        std::fs::write(&f, format!("{HEAD}{rows}")).unwrap();
        let d = Dir::open_arg(dir.path(), super::super::files::ArgDir::Strict).unwrap();
        let mut out = Vec::new();
        let stats = export(&d, &["gps-fix.000.csv".into()], "t", &mut out).unwrap();
        let g = String::from_utf8(out).unwrap();
        assert_eq!(stats.points as usize, g.matches("<trkpt").count());
        g
    }

    // Issue #15: a fix without the receiver's date gets no time, never the system clock's.
    #[test]
    fn undated_fixes_get_no_system_time() {
        let g = gpx_of(
            "10.0,2030-01-01T00:00:00.000000Z,,48.1,11.5,545.4,gps,8,0.9,,\n\
             11.0,2030-01-01T00:00:01.000000Z,2026-08-04T12:00:01.000000Z,48.2,11.5,545.4,gps,8,0.9,,\n",
        );
        assert_eq!(g.matches("<trkpt").count(), 2, "{g}");
        assert!(!g.contains("2030-"), "system time used: {g}");
        assert_eq!(g.matches("<time>").count(), 1, "{g}");
        assert!(
            g.contains("<time>2026-08-04T12:00:01.000000Z</time>"),
            "{g}"
        );
    }

    // Issue #17: whatever the CSV holds, the GPX has no inf or NaN: such rows are skipped.
    #[test]
    fn non_finite_values_are_never_written() {
        let g = gpx_of(
            "10.0,2026-08-04T12:00:00.000000Z,2026-08-04T12:00:00.000000Z,48.1,11.5,inf,gps,8,NaN,,\n\
             11.0,2026-08-04T12:00:01.000000Z,2026-08-04T12:00:01.000000Z,NaN,11.5,1.0,gps,8,0.9,,\n\
             12.0,2026-08-04T12:00:02.000000Z,2026-08-04T12:00:02.000000Z,48.1,-inf,1.0,gps,8,0.9,,\n\
             13.0,2026-08-04T12:00:03.000000Z,2026-08-04T12:00:03.000000Z,48.1,11.5,-infinity,gps,8,0.9,,\n\
             14.0,2026-08-04T12:00:04.000000Z,2026-08-04T12:00:04.000000Z,48.1,11.5,1e308,gps,8,0.9,,\n\
             15.0,2026-08-04T12:00:05.000000Z,2026-08-04T12:00:05.000000Z,48.1,11.5,2.5,gps,8,0.9,,\n",
        );
        assert_eq!(g.matches("<trkpt").count(), 1, "{g}");
        assert!(g.contains("<ele>2.5</ele>"), "{g}");
        let lower = g.to_ascii_lowercase();
        assert!(!lower.contains("inf") && !lower.contains("nan"), "{g}");
        assert!(!g.contains("<hdop>NaN"), "{g}");
    }
}
