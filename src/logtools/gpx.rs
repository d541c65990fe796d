//! GPX 1.1 export of the GPS fixes (Google Earth, QGIS, gpsbabel, Strava read it).
//!
//! Written by hand: a fixed schema of a dozen elements, numbers and ISO times only (nothing to
//! escape but the track name). Each fix with a position and a valid quality becomes a
//! `<trkpt>` with elevation, time (the receiver's UTC when known, else the system's), fix kind,
//! satellites and HDOP.

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
            if fix.quality == FixQuality::Invalid {
                continue;
            }
            let _ = write!(out, "<trkpt lat=\"{lat:.8}\" lon=\"{lon:.8}\">");
            if let Some(e) = fix.alt_msl_m {
                let _ = write!(out, "<ele>{e}</ele>");
            }
            t.clear();
            write_utc(&mut t, fix.utc_ns.unwrap_or(fix.stamp.wall_ns));
            let _ = write!(out, "<time>{}</time>", String::from_utf8_lossy(&t));
            let kind = match fix.quality {
                FixQuality::DGps | FixQuality::Rtk | FixQuality::FloatRtk => "dgps",
                _ => "3d",
            };
            let _ = write!(out, "<fix>{kind}</fix>");
            if let Some(s) = fix.satellites {
                let _ = write!(out, "<sat>{s}</sat>");
            }
            if let Some(h) = fix.hdop {
                let _ = write!(out, "<hdop>{h}</hdop>");
            }
            out.push_str("</trkpt>\n");
        }
    }
    out.push_str("</trkseg></trk>\n</gpx>\n");
    progress.done();
    Ok(out)
}
