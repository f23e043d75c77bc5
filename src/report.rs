//! Two small helpers every layer uses, kept below all of them so that none reaches up into
//! `api/` or `vm/` for them: an error with its causes as one line, and the cloud's timestamp.

/// An error and its `source()` chain, `: `-separated (printed once, at the edge).
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// Now, as RFC 3339 UTC (the cloud's timestamps).
pub fn time_now() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}
