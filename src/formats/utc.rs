//! UTC timestamps written into a byte buffer without allocating: `2026-11-23T04:05:06.123456Z`.
//!
//! The logger writes one per CSV row and per event; `time`'s formatter allocates a `String`
//! each time, this does not. Civil-from-days after Howard Hinnant's `chrono`-compatible
//! algorithm (public domain).

/// Days since 1970-01-01 to (year, month, day).
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn put(out: &mut Vec<u8>, v: u64, digits: usize) {
    let mut b = [b'0'; 20];
    let mut v = v;
    for i in (0..digits).rev() {
        b[i] = b'0' + (v % 10) as u8;
        v /= 10;
    }
    out.extend_from_slice(&b[..digits]);
}

/// Appends `YYYY-MM-DDThh:mm:ss.uuuuuuZ` for `ns` nanoseconds since the Unix epoch.
pub fn write_utc(out: &mut Vec<u8>, ns: i64) {
    let secs = ns.div_euclid(1_000_000_000);
    let us = (ns.rem_euclid(1_000_000_000) / 1000) as u64;
    let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
    let sod = secs.rem_euclid(86_400) as u64;
    put(out, y.clamp(0, 9999) as u64, 4);
    out.push(b'-');
    put(out, m as u64, 2);
    out.push(b'-');
    put(out, d as u64, 2);
    out.push(b'T');
    put(out, sod / 3600, 2);
    out.push(b':');
    put(out, sod / 60 % 60, 2);
    out.push(b':');
    put(out, sod % 60, 2);
    out.push(b'.');
    put(out, us, 6);
    out.push(b'Z');
}

/// Appends boot-clock nanoseconds as seconds with microseconds: `1234.567890`.
pub fn write_mono(out: &mut Vec<u8>, ns: u64) {
    let s = ns / 1_000_000_000;
    let us = ns % 1_000_000_000 / 1000;
    let mut b = [0u8; 20];
    let mut n = 0;
    let mut v = s;
    loop {
        b[n] = b'0' + (v % 10) as u8;
        n += 1;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    b[..n].reverse();
    out.extend_from_slice(&b[..n]);
    out.push(b'.');
    put(out, us, 6);
}

/// Parses what [`write_utc`] writes (and RFC 3339 `Z` times with up to 9 fractional digits).
pub fn parse_utc(s: &str) -> Option<i64> {
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()?;
    i64::try_from(t.unix_timestamp_nanos()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_time_crate() {
        for ns in [
            0i64,
            1_700_000_000_123_456_000,
            951_782_400_000_000_000,
            4_102_444_799_999_999_000,
        ] {
            let mut b = Vec::new();
            write_utc(&mut b, ns);
            let s = String::from_utf8(b).unwrap();
            assert_eq!(parse_utc(&s), Some(ns / 1000 * 1000), "{s}");
        }
        let mut b = Vec::new();
        write_utc(&mut b, 1_700_000_000_123_456_789);
        assert_eq!(b, b"2023-11-14T22:13:20.123456Z");
        b.clear();
        write_mono(&mut b, 12_000_345_678);
        assert_eq!(b, b"12.000345");
    }
}
