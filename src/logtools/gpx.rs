//! GPX 1.1 export of the GPS fixes (Google Earth, QGIS, gpsbabel, Strava read it).
//!
//! Written by hand: a fixed schema of a dozen elements, numbers and ISO times only (nothing to
//! escape but the track name). Each fix with a finite position and a valid quality becomes a
//! `<trkpt>` with elevation, time, fix kind, satellites and HDOP. The time is the receiver's
//! UTC only: a fix the receiver had not dated yet (a GGA before any RMC/ZDA) keeps its
//! position but gets no `<time>` (GPX allows that; gpsbabel leaves it out too), since the
//! system clock may be hours off and would make the track run backwards. A non-finite number
//! in the CSV is never written: no point without a finite position, no `<ele>`/`<hdop>` that is
//! not finite.

use std::fmt::Write as _;
use std::io::BufRead;
use std::path::PathBuf;

use super::{Progress, ToolError, io_err};
use crate::formats::csv::parse_fix;
use crate::formats::utc::write_utc;
use crate::records::FixQuality;

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The GPX document for the fix CSV segments `files`, in order.
pub fn export(files: &[PathBuf], name: &str) -> Result<String, ToolError> {
    let total: u64 = files
        .iter()
        .filter_map(|f| std::fs::metadata(f).ok())
        .map(|m| m.len())
        .sum();
    let mut progress = Progress::new("export", total);
    let mut done = 0u64;
    let mut out = String::with_capacity(4096);
    let _ = write!(
        out,
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<gpx version=\"1.1\" creator=\"harmony {}\" \
         xmlns=\"http://www.topografix.com/GPX/1/1\">\n<trk><name>{}</name><trkseg>\n",
        crate::version::short(),
        escape(name)
    );
    let mut t = Vec::with_capacity(32);
    for f in files {
        let file = std::fs::File::open(f).map_err(io_err(f))?;
        for (i, line) in std::io::BufReader::new(file).lines().enumerate() {
            let line = line.map_err(io_err(f))?;
            done += line.len() as u64 + 1;
            progress.at(done);
            if i == 0 {
                continue;
            }
            let Ok(fix) = parse_fix(&line) else { continue };
            let (Some(lat), Some(lon)) = (fix.lat_deg, fix.lon_deg) else {
                continue;
            };
            if fix.quality == FixQuality::Invalid || !(lat.abs() <= 90.0 && lon.abs() <= 180.0) {
                continue;
            }
            let _ = write!(out, "<trkpt lat=\"{lat:.8}\" lon=\"{lon:.8}\">");
            if let Some(e) = fix.alt_msl_m.filter(|e| e.is_finite()) {
                let _ = write!(out, "<ele>{e}</ele>");
            }
            if let Some(ns) = fix.utc_ns {
                t.clear();
                write_utc(&mut t, ns);
                let _ = write!(out, "<time>{}</time>", String::from_utf8_lossy(&t));
            }
            let kind = match fix.quality {
                FixQuality::DGps | FixQuality::Rtk | FixQuality::FloatRtk => "dgps",
                _ => "3d",
            };
            let _ = write!(out, "<fix>{kind}</fix>");
            if let Some(s) = fix.satellites {
                let _ = write!(out, "<sat>{s}</sat>");
            }
            if let Some(h) = fix.hdop.filter(|h| h.is_finite()) {
                let _ = write!(out, "<hdop>{h}</hdop>");
            }
            out.push_str("</trkpt>\n");
        }
    }
    out.push_str("</trkseg></trk>\n</gpx>\n");
    progress.done();
    Ok(out)
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
        export(&[f], "t").unwrap()
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

    // Issue #17: whatever the CSV holds, the GPX has no inf or NaN.
    #[test]
    fn non_finite_values_are_never_written() {
        let g = gpx_of(
            "10.0,2026-08-04T12:00:00.000000Z,2026-08-04T12:00:00.000000Z,48.1,11.5,inf,gps,8,NaN,,\n\
             11.0,2026-08-04T12:00:01.000000Z,2026-08-04T12:00:01.000000Z,NaN,11.5,1.0,gps,8,0.9,,\n\
             12.0,2026-08-04T12:00:02.000000Z,2026-08-04T12:00:02.000000Z,48.1,-inf,1.0,gps,8,0.9,,\n\
             13.0,2026-08-04T12:00:03.000000Z,2026-08-04T12:00:03.000000Z,48.1,11.5,-infinity,gps,8,0.9,,\n",
        );
        assert_eq!(g.matches("<trkpt").count(), 2, "{g}");
        let lower = g.to_ascii_lowercase();
        assert!(!lower.contains("inf") && !lower.contains("nan"), "{g}");
        assert!(!g.contains("<ele>") && !g.contains("<hdop>NaN"), "{g}");
    }
}
