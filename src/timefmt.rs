//! Wall-clock formatting for logs, state files and file names (UTC, RFC 3339).

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use time::macros::format_description;

/// `2026-11-23T04:05:06.789Z` from milliseconds since the Unix epoch.
pub fn rfc3339_ms(ms: u64) -> String {
    rfc3339_ns(ms as i64 * 1_000_000)
}

/// `2026-11-23T04:05:06.789Z` from nanoseconds since the Unix epoch.
pub fn rfc3339_ns(ns: i64) -> String {
    let ms_ns = ns - ns.rem_euclid(1_000_000);
    OffsetDateTime::from_unix_timestamp_nanos(ms_ns as i128)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| format!("@{ns}ns"))
}

/// `20261123T040506Z`: a file-name-safe UTC time.
pub fn compact_utc(ns: i64) -> String {
    let f = format_description!("[year][month][day]T[hour][minute][second]Z");
    OffsetDateTime::from_unix_timestamp_nanos(ns as i128)
        .ok()
        .and_then(|t| t.format(&f).ok())
        .unwrap_or_else(|| format!("{}", ns / 1_000_000_000))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(rfc3339_ms(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
        assert_eq!(compact_utc(1_700_000_000_123_000_000), "20231114T221320Z");
    }
}
