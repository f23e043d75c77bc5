//! The cloud's timestamps and the shapes it writes them in (`Last-Modified`, ETags, snapshots).

use std::time::{SystemTime, UNIX_EPOCH};

pub fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

pub fn now_ms() -> i64 {
    (now_ns() / 1_000_000) as i64
}

/// RFC 1123 (`Last-Modified`, `Date`).
pub fn http_date(ns: u64) -> String {
    httpdate::fmt_http_date(UNIX_EPOCH + std::time::Duration::from_nanos(ns))
}

/// The cloud's ETag shape: `"0x8DC..."`.
pub fn etag(ns: u64) -> String {
    format!("\"0x{ns:X}\"")
}

/// `x-ms-snapshot` shape: `2024-05-01T12:34:56.1234567Z`.
pub fn snapshot_time(ns: u64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(ns as i128)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:07}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.nanosecond() / 100
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_times_have_seven_digits() {
        let s = snapshot_time(1_700_000_000_123_456_789);
        assert_eq!(s, "2023-11-14T22:13:20.1234567Z");
    }
}
