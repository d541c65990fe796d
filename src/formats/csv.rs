//! The logger's CSV files and the project's readers for them.
//!
//! Plain RFC 4180 CSV with a header row, numbers in SI units, both timestamps on every row
//! (`mono_s`: boot clock in seconds, `utc`: wall clock), so pandas, a spreadsheet or gnuplot
//! read them as they are. Empty fields mean "not reported".
//!
//! * rangefinder: `mono_s,utc,distance_m,strength,status`
//! * GPS fixes:   `mono_s,utc,gps_utc,lat,lon,alt_msl_m,quality,satellites,hdop,speed_mps,course_deg`

use std::io::Write;

use super::utc::{parse_utc, write_mono, write_utc};
use crate::records::{Fix, FixQuality, RangeRecord, RangeStatus};

pub const RANGE_HEADER: &str = "mono_s,utc,distance_m,strength,status";
pub const FIX_HEADER: &str =
    "mono_s,utc,gps_utc,lat,lon,alt_msl_m,quality,satellites,hdop,speed_mps,course_deg";

/// Appends one rangefinder row (with `\n`).
pub fn write_range(out: &mut Vec<u8>, r: &RangeRecord) {
    write_mono(out, r.stamp.boot_ns);
    out.push(b',');
    write_utc(out, r.stamp.wall_ns);
    let _ = writeln!(
        out,
        ",{}.{:02},{},{}",
        r.distance_cm / 100,
        r.distance_cm % 100,
        r.strength,
        r.status.as_str()
    );
}

fn opt<T: std::fmt::Display>(out: &mut Vec<u8>, v: Option<T>) {
    out.push(b',');
    if let Some(v) = v {
        let _ = write!(out, "{v}");
    }
}

/// Appends one fix row (with `\n`).
pub fn write_fix(out: &mut Vec<u8>, f: &Fix) {
    write_mono(out, f.stamp.boot_ns);
    out.push(b',');
    write_utc(out, f.stamp.wall_ns);
    out.push(b',');
    if let Some(ns) = f.utc_ns {
        write_utc(out, ns);
    }
    for v in [f.lat_deg, f.lon_deg] {
        out.push(b',');
        if let Some(v) = v {
            let _ = write!(out, "{v:.8}");
        }
    }
    opt(out, f.alt_msl_m);
    let _ = write!(out, ",{}", f.quality.as_str());
    opt(out, f.satellites);
    opt(out, f.hdop);
    opt(out, f.speed_mps);
    opt(out, f.course_deg);
    out.push(b'\n');
}

/// Why a CSV row was refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum RowError {
    #[error("expected {expected} fields, found {found}")]
    Fields { expected: usize, found: usize },
    #[error("field `{field}`: cannot read '{value}'")]
    Value { field: &'static str, value: String },
}

fn num<T: std::str::FromStr>(field: &'static str, v: &str) -> Result<T, RowError> {
    v.parse().map_err(|_| RowError::Value {
        field,
        value: v.to_owned(),
    })
}

fn opt_num<T: std::str::FromStr>(field: &'static str, v: &str) -> Result<Option<T>, RowError> {
    if v.is_empty() {
        Ok(None)
    } else {
        num(field, v).map(Some)
    }
}

fn mono_ns(v: &str) -> Result<u64, RowError> {
    let f: f64 = num("mono_s", v)?;
    if f.is_nan() || f < 0.0 {
        return Err(RowError::Value {
            field: "mono_s",
            value: v.to_owned(),
        });
    }
    Ok((f * 1e9).round() as u64)
}

fn utc_ns(field: &'static str, v: &str) -> Result<i64, RowError> {
    parse_utc(v).ok_or_else(|| RowError::Value {
        field,
        value: v.to_owned(),
    })
}

/// Reads one rangefinder row (no trailing newline).
pub fn parse_range(line: &str) -> Result<RangeRecord, RowError> {
    let f: Vec<&str> = line.split(',').collect();
    if f.len() != 5 {
        return Err(RowError::Fields {
            expected: 5,
            found: f.len(),
        });
    }
    let m: f64 = num("distance_m", f[2])?;
    Ok(RangeRecord {
        stamp: crate::clock::Stamp {
            boot_ns: mono_ns(f[0])?,
            wall_ns: utc_ns("utc", f[1])?,
        },
        distance_cm: (m * 100.0).round() as u16,
        strength: num("strength", f[3])?,
        status: RangeStatus::parse(f[4]).ok_or_else(|| RowError::Value {
            field: "status",
            value: f[4].to_owned(),
        })?,
    })
}

fn quality(s: &str) -> Option<FixQuality> {
    use FixQuality::*;
    [
        Invalid, Gps, DGps, Pps, Rtk, FloatRtk, Estimated, Manual, Simulation,
    ]
    .into_iter()
    .find(|q| q.as_str() == s)
}

/// Reads one fix row (no trailing newline).
pub fn parse_fix(line: &str) -> Result<Fix, RowError> {
    let f: Vec<&str> = line.split(',').collect();
    if f.len() != 11 {
        return Err(RowError::Fields {
            expected: 11,
            found: f.len(),
        });
    }
    Ok(Fix {
        stamp: crate::clock::Stamp {
            boot_ns: mono_ns(f[0])?,
            wall_ns: utc_ns("utc", f[1])?,
        },
        utc_ns: if f[2].is_empty() {
            None
        } else {
            Some(utc_ns("gps_utc", f[2])?)
        },
        time_of_day_s: None,
        lat_deg: opt_num("lat", f[3])?,
        lon_deg: opt_num("lon", f[4])?,
        alt_msl_m: opt_num("alt_msl_m", f[5])?,
        quality: quality(f[6]).ok_or_else(|| RowError::Value {
            field: "quality",
            value: f[6].to_owned(),
        })?,
        satellites: opt_num("satellites", f[7])?,
        hdop: opt_num("hdop", f[8])?,
        speed_mps: opt_num("speed_mps", f[9])?,
        course_deg: opt_num("course_deg", f[10])?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::Stamp;

    #[test]
    fn range_rows_round_trip() {
        let r = RangeRecord {
            stamp: Stamp {
                boot_ns: 12_345_678_000,
                wall_ns: 1_700_000_000_123_456_000,
            },
            distance_cm: 1234,
            strength: 200,
            status: RangeStatus::Saturated,
        };
        let mut b = Vec::new();
        write_range(&mut b, &r);
        let s = String::from_utf8(b).unwrap();
        assert_eq!(
            s,
            "12.345678,2023-11-14T22:13:20.123456Z,12.34,200,saturated\n"
        );
        assert_eq!(parse_range(s.trim_end()).unwrap(), r);
    }

    #[test]
    fn fix_rows_round_trip() {
        let f = Fix {
            stamp: Stamp {
                boot_ns: 5_000_000_000,
                wall_ns: 1_700_000_000_000_000_000,
            },
            utc_ns: Some(1_306_574_870_000_000_000),
            time_of_day_s: None,
            lat_deg: Some(53.36133667),
            lon_deg: Some(-6.50562),
            alt_msl_m: Some(61.7),
            quality: FixQuality::Rtk,
            satellites: Some(8),
            hdop: Some(1.03),
            speed_mps: None,
            course_deg: Some(31.66),
        };
        let mut b = Vec::new();
        write_fix(&mut b, &f);
        let s = String::from_utf8(b).unwrap();
        assert_eq!(s.split(',').count(), 11);
        assert_eq!(parse_fix(s.trim_end()).unwrap(), f);
        assert!(parse_fix("1,2,3").is_err());
        assert!(parse_range("x,2023-11-14T22:13:20.123456Z,1.00,1,ok").is_err());
    }
}
