//! The CSV rows as the log tools accept them: parsed with the logger's own readers
//! ([`crate::formats::csv`]), and then every number finite and within what the logger can
//! write (issue #17). Rust's float parsing takes `inf`, `NaN` and `1e308`; no sensor means
//! them, the firmware rejects them at intake, and a tool that met one in a file used to hang
//! (`log plot`) or write it out (`<ele>inf</ele>`). `check` reports such a row; `plot` and
//! `export` skip it and say how many they skipped.

use crate::formats::csv::{parse_fix, parse_range};
use crate::records::{Fix, RangeRecord};

/// Largest `mono_s` the logger can write: the boot clock in u64 nanoseconds.
const MONO_MAX_S: f64 = u64::MAX as f64 / 1e9;

/// Largest `distance_m`: the record holds centimetres in a u16.
const DISTANCE_MAX_M: f64 = u16::MAX as f64 / 100.0;

fn text(line: &[u8]) -> Result<&str, String> {
    std::str::from_utf8(line).map_err(|e| format!("not UTF-8 (byte {})", e.valid_up_to() + 1))
}

/// The boot-clock field, which the reader rounds into u64 nanoseconds (saturating).
fn mono(field: Option<&str>) -> Result<(), String> {
    let v: f64 = field.unwrap_or("").parse().unwrap_or(f64::NAN);
    if (0.0..=MONO_MAX_S).contains(&v) {
        Ok(())
    } else {
        Err(format!(
            "mono_s {:?} is not a boot-clock time",
            field.unwrap_or("")
        ))
    }
}

fn finite(name: &str, v: Option<f64>) -> Result<(), String> {
    match v {
        Some(x) if !x.is_finite() => Err(format!("{name} is not a finite number")),
        _ => Ok(()),
    }
}

/// A `gps-fix.NNN.csv` data row (no header, no newline).
pub fn fix(line: &[u8]) -> Result<Fix, String> {
    let t = text(line)?;
    let f = parse_fix(t).map_err(|e| e.to_string())?;
    mono(t.split(',').next())?;
    finite("lat", f.lat_deg)?;
    finite("lon", f.lon_deg)?;
    finite("alt_msl_m", f.alt_msl_m.map(f64::from))?;
    finite("hdop", f.hdop.map(f64::from))?;
    finite("speed_mps", f.speed_mps.map(f64::from))?;
    finite("course_deg", f.course_deg.map(f64::from))?;
    Ok(f)
}

/// A `rangefinder.NNN.csv` data row (no header, no newline).
pub fn range(line: &[u8]) -> Result<RangeRecord, String> {
    let t = text(line)?;
    let r = parse_range(t).map_err(|e| e.to_string())?;
    let mut fields = t.split(',');
    mono(fields.next())?;
    let d = fields.nth(1).unwrap_or("");
    if !d
        .parse::<f64>()
        .is_ok_and(|m| (0.0..=DISTANCE_MAX_M).contains(&m))
    {
        return Err(format!(
            "distance_m {d:?} is not a distance the sensor reports"
        ));
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    const UTC: &str = "2023-11-14T22:13:20.123456Z";

    /// Issue #17: non-finite and out-of-range numbers are refused, whatever their spelling.
    #[test]
    fn non_finite_and_absurd_numbers_are_refused() {
        assert!(range(format!("1.000000,{UTC},1.00,1,ok").as_bytes()).is_ok());
        for bad in [
            "inf",
            "NaN",
            "1e308",
            "-1e308",
            "-0.5",
            "655.36",
            "+Infinity",
        ] {
            let row = format!("1.000000,{UTC},{bad},1,ok");
            assert!(range(row.as_bytes()).is_err(), "{row}");
            let row = format!("{bad},{UTC},1.00,1,ok");
            if bad != "655.36" {
                assert!(range(row.as_bytes()).is_err(), "{row}");
            }
        }
        let fix_row = |alt: &str, lat: &str| format!("10.0,{UTC},,{lat},11.5,{alt},gps,8,0.9,,");
        assert!(fix(fix_row("545.4", "48.1").as_bytes()).is_ok());
        for bad in ["inf", "nan", "1e308", "-1e308", "-infinity"] {
            assert!(fix(fix_row(bad, "48.1").as_bytes()).is_err(), "alt {bad}");
            if bad != "1e308" && bad != "-1e308" {
                // Finite in f64: the position is kept as the receiver said it.
                assert!(fix(fix_row("1.0", bad).as_bytes()).is_err(), "lat {bad}");
            }
        }
        assert!(range(b"1.000000,\xff,1.00,1,ok").is_err());
    }
}
