//! Who is asking: SharedKey (the account key), a SAS (service SAS for a blob or container,
//! account SAS), or nobody (anonymous, limited by the container's public access level).
//!
//! Signatures are HMAC-SHA256 over the cloud's string-to-sign, compared in constant time
//! (`Mac::verify_slice`). For path-style URLs the SDK signs `/{account}/{account}/{container}`
//! (the account is in the path as well): both that and the cloud's host-style form are
//! accepted, since both can only come from the key holder.

use std::net::IpAddr;

use base64::Engine;
use hmac::{Hmac, Mac};
use hyper::HeaderMap;

use crate::blob::error::{BlobError, Result};
use crate::blob::store::{AccessPolicy, Account};

type HmacSha256 = Hmac<sha2::Sha256>;

/// The request as auth sees it.
pub struct Request<'a> {
    pub method: &'a str,
    /// The path as sent (still percent-encoded).
    pub raw_path: &'a str,
    pub raw_query: &'a str,
    pub headers: &'a HeaderMap,
    pub account: &'a str,
    pub container: Option<&'a str>,
    pub blob: Option<&'a str>,
    /// The `snapshot` query parameter.
    pub snapshot: Option<&'a str>,
    pub peer: IpAddr,
}

/// A SAS that checked out: what it allows.
#[derive(Clone, Debug)]
pub struct Grant {
    pub permissions: String,
    /// `b`, `bs`, `c` for a service SAS; `account` for an account SAS.
    pub resource: String,
    /// Account SAS resource types (`s`, `c`, `o`).
    pub resource_types: String,
}

impl Grant {
    /// Does it include any of `perms`?
    pub fn allows(&self, perms: &str) -> bool {
        perms.chars().any(|c| self.permissions.contains(c))
    }
}

#[derive(Clone, Debug)]
pub enum Principal {
    Key,
    Sas(Grant),
    Anonymous,
}

fn header<'a>(h: &'a HeaderMap, name: &str) -> &'a str {
    h.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
}

fn decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

/// Query parameters, names and values percent-decoded (`+` stays `+`, as the SDK signs it).
pub fn query_pairs(raw: &str) -> Vec<(String, String)> {
    raw.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (n, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(n), decode(v))
        })
        .collect()
}

fn mac(key: &[u8]) -> HmacSha256 {
    // HMAC takes keys of any length.
    HmacSha256::new_from_slice(key).unwrap_or_else(|_| unreachable!())
}

/// base64(HMAC-SHA256(key, sts)): what a client puts in `sig` or the Authorization header.
pub fn sign(key: &[u8], sts: &str) -> String {
    let mut m = mac(key);
    m.update(sts.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(m.finalize().into_bytes())
}

/// Checks a base64 signature of a string-to-sign against each of the account's keys (key1,
/// key2), each comparison in constant time. The signature is taken as it is: a space (or a raw
/// `+` in a SAS, which decodes to one) makes it fail.
fn verify(account: &Account, sts: &str, sig_b64: &str) -> bool {
    let Ok(sig) = base64::engine::general_purpose::STANDARD.decode(sig_b64) else {
        return false;
    };
    account.keys.iter().any(|key| {
        let mut m = mac(key);
        m.update(sts.as_bytes());
        m.verify_slice(&sig).is_ok()
    })
}

// The service's header order, as the Python SDK emulates it (`_storage_header_sort`): letters
// and digits by weight, `-` ignored at the first level and weighed at the second.
fn weight(level: usize, c: char) -> u32 {
    let c = c as u32;
    if level == 0 {
        match c {
            0x21 => 0x71c,
            0x23..=0x26 => [0x71f, 0x721, 0x723, 0x725][(c - 0x23) as usize],
            0x2a => 0x72d,
            0x2b => 0x803,
            0x2e => 0x733,
            0x30..=0x39 => [
                0xd03, 0xd1a, 0xd1c, 0xd1e, 0xd20, 0xd22, 0xd24, 0xd26, 0xd28, 0xd2a,
            ][(c - 0x30) as usize],
            0x41..=0x5a | 0x61..=0x7a => {
                let i = if c >= 0x61 { c - 0x61 } else { c - 0x41 };
                [
                    0xe02, 0xe09, 0xe0a, 0xe1a, 0xe21, 0xe23, 0xe25, 0xe2c, 0xe32, 0xe35, 0xe36,
                    0xe48, 0xe51, 0xe70, 0xe7c, 0xe7e, 0xe89, 0xe8a, 0xe91, 0xe99, 0xe9f, 0xea2,
                    0xea4, 0xea6, 0xea7, 0xea9,
                ][i as usize]
            }
            0x5e => 0x743,
            0x5f => 0x744,
            0x60 => 0x748,
            0x7c => 0x74c,
            0x7e => 0x750,
            _ => 0,
        }
    } else {
        match c {
            0x27 => 0x8012,
            0x2d => 0x8212,
            _ => 0,
        }
    }
}

fn service_cmp(l: &str, r: &str) -> std::cmp::Ordering {
    use std::cmp::Ordering::*;
    let (l, r): (Vec<char>, Vec<char>) = (l.chars().collect(), r.chars().collect());
    let (mut level, mut i, mut j) = (0, 0, 0);
    while level < 2 {
        if level == 1 && i != j {
            return if i > j { Less } else { Greater };
        }
        let w1 = l.get(i).map(|c| weight(level, *c)).unwrap_or(1);
        let w2 = r.get(j).map(|c| weight(level, *c)).unwrap_or(1);
        if w1 == 1 && w2 == 1 {
            i = 0;
            j = 0;
            level += 1;
        } else if w1 == w2 {
            i += 1;
            j += 1;
        } else if w1 == 0 {
            i += 1;
        } else if w2 == 0 {
            j += 1;
        } else {
            return w1.cmp(&w2);
        }
    }
    Equal
}

fn canonical_headers(h: &HeaderMap, service_order: bool) -> String {
    let mut names: Vec<&str> = h
        .keys()
        .map(|k| k.as_str())
        .filter(|k| k.starts_with("x-ms-"))
        .collect();
    names.dedup();
    if service_order {
        names.sort_by(|a, b| service_cmp(a, b));
    } else {
        names.sort();
    }
    let mut out = String::new();
    for n in names {
        let vals: Vec<&str> = h
            .get_all(n)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        out.push_str(n);
        out.push(':');
        out.push_str(&vals.join(","));
        out.push('\n');
    }
    out
}

/// The SharedKey string-to-sign candidates for this request (the first is what the SDKs sign;
/// the fuzz loops sign their seeds with it).
pub(crate) fn shared_key_candidates(r: &Request<'_>, account: &str) -> Vec<String> {
    let h = r.headers;
    let len = match header(h, "content-length") {
        "0" => "",
        v => v,
    };
    let mut q = query_pairs(r.raw_query);
    for p in q.iter_mut() {
        p.0 = p.0.to_lowercase();
    }
    q.sort();
    let query: String = q.iter().map(|(n, v)| format!("\n{n}:{v}")).collect();
    // Path-style: the SDK signs "/{account}{path}" with the account in the path too; the
    // cloud's host-style form has it once.
    let host_style = r
        .raw_path
        .strip_prefix(&format!("/{}", r.account))
        .unwrap_or(r.raw_path);
    let host_style = if host_style.is_empty() {
        "/"
    } else {
        host_style
    };
    let mut out = Vec::new();
    for range in [header(h, "range"), ""] {
        let std_headers = [
            header(h, "content-encoding"),
            header(h, "content-language"),
            len,
            header(h, "content-md5"),
            header(h, "content-type"),
            header(h, "date"),
            header(h, "if-modified-since"),
            header(h, "if-match"),
            header(h, "if-none-match"),
            header(h, "if-unmodified-since"),
            range,
        ]
        .join("\n");
        for order in [true, false] {
            for path in [r.raw_path, host_style] {
                out.push(format!(
                    "{}\n{}\n{}/{account}{path}{query}",
                    r.method,
                    std_headers,
                    canonical_headers(h, order)
                ));
            }
        }
        if range.is_empty() {
            break;
        }
    }
    out
}

fn check_date(h: &HeaderMap) -> Result<()> {
    let d = match header(h, "x-ms-date") {
        "" => header(h, "date"),
        d => d,
    };
    let Ok(t) = httpdate::parse_http_date(d) else {
        return Err(BlobError::auth_failed(
            "Request date header not specified or not valid (x-ms-date or Date).",
        ));
    };
    let now = std::time::SystemTime::now();
    let skew = match now.duration_since(t) {
        Ok(d) => d,
        Err(e) => e.duration(),
    };
    if skew > std::time::Duration::from_secs(15 * 60) {
        return Err(BlobError::auth_failed(format!(
            "Request date header too old: '{d}'"
        )));
    }
    Ok(())
}

/// `Authorization: SharedKey {account}:{signature}`.
fn shared_key(r: &Request<'_>, value: &str, account: &Account) -> Result<Principal> {
    let Some((name, sig)) = value
        .strip_prefix("SharedKey ")
        .and_then(|v| v.trim().split_once(':'))
    else {
        return Err(BlobError::auth_failed(
            "The Authorization header is not SharedKey {account}:{signature}.",
        ));
    };
    if name != account.name {
        return Err(BlobError::auth_failed(format!(
            "The account in the Authorization header ('{name}') is not the account of the URL ('{}').",
            account.name
        )));
    }
    check_date(r.headers)?;
    let sig = sig.trim();
    for sts in shared_key_candidates(r, &account.name) {
        if verify(account, &sts, sig) {
            return Ok(Principal::Key);
        }
    }
    Err(BlobError::auth_failed(format!(
        "The MAC signature found in the HTTP request '{sig}' is not the same as any computed signature."
    )))
}

/// Parses the ISO 8601 times SAS tokens carry (`2024-01-01`, `2024-01-01T00:00:00Z`,
/// fractions, `+hh:mm` offsets) into seconds since the epoch.
pub fn parse_iso(s: &str) -> Option<i64> {
    let s = s.trim();
    // Exactly `n` ASCII digits (no sign, no space), at most `max`. `get`, never slicing: the
    // text comes from a request and may hold multi-byte characters anywhere.
    let digits = |t: Option<&str>, n: usize, max: i64| {
        t.filter(|t| t.len() == n && t.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|t| t.parse::<i64>().ok())
            .filter(|v| *v <= max)
    };
    let sep = |t: &str, at: usize, c: &str| t.get(at..at + 1) == Some(c);
    if !(sep(s, 4, "-") && sep(s, 7, "-")) {
        return None;
    }
    let (y, m, d) = (
        digits(s.get(..4), 4, 9999)?,
        digits(s.get(5..7), 2, 12)?,
        digits(s.get(8..10), 2, 31)?,
    );
    let month = time::Month::try_from(u8::try_from(m).ok()?).ok()?;
    let day = time::Date::from_calendar_date(i32::try_from(y).ok()?, month, u8::try_from(d).ok()?)
        .ok()?;
    let mut secs = day.midnight().assume_utc().unix_timestamp();
    let rest = s.get(10..)?;
    if rest.is_empty() {
        return Some(secs);
    }
    let rest = rest.strip_prefix('T')?;
    if !sep(rest, 2, ":") {
        return None;
    }
    let (hh, mm) = (
        digits(rest.get(..2), 2, 23)?,
        digits(rest.get(3..5), 2, 59)?,
    );
    let mut tail = rest.get(5..)?;
    let mut ss = 0;
    if let Some(t) = tail.strip_prefix(':') {
        ss = digits(t.get(..2), 2, 59)?;
        tail = t.get(2..)?;
    }
    if let Some(t) = tail.strip_prefix('.') {
        let n = t.bytes().take_while(u8::is_ascii_digit).count();
        tail = t.get(n..)?;
    }
    secs += hh * 3600 + mm * 60 + ss;
    match tail {
        "" | "Z" => Some(secs),
        t if t.len() == 6 && (t.starts_with('+') || t.starts_with('-')) && sep(t, 3, ":") => {
            let off = digits(t.get(1..3), 2, 23)? * 3600 + digits(t.get(4..6), 2, 59)? * 60;
            Some(if t.starts_with('+') {
                secs - off
            } else {
                secs + off
            })
        }
        _ => None,
    }
}

fn ip_allowed(sip: &str, peer: IpAddr) -> bool {
    let peer = match peer {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(peer),
        p => p,
    };
    let parse = |s: &str| s.trim().parse::<IpAddr>().ok();
    match sip.split_once('-') {
        Some((a, b)) => match (parse(a), parse(b)) {
            (Some(a), Some(b)) => a <= peer && peer <= b,
            _ => false,
        },
        None => parse(sip) == Some(peer),
    }
}

/// Service versions order as strings (`YYYY-MM-DD`).
fn at_least(sv: &str, v: &str) -> bool {
    sv >= v
}

/// The query parameters a SAS is made of (a service SAS, an account SAS, or a user delegation
/// SAS, which the cloud signs with its own fields). Each may be given once.
const SAS_FIELDS: [&str; 29] = [
    "sv", "ss", "srt", "sp", "st", "se", "sip", "spr", "sr", "si", "sig", "ses", "sdd", "rscc",
    "rscd", "rsce", "rscl", "rsct", "skoid", "sktid", "skt", "ske", "sks", "skv", "saoid", "suoid",
    "scid", "skdutid", "sduoid",
];

/// The fields of a user delegation SAS (signed with a key from Get User Delegation Key, which
/// this service does not issue). The cloud signs them, so a service SAS that gains one is not
/// the SAS that was signed.
const DELEGATION_FIELDS: [&str; 11] = [
    "skoid", "sktid", "skt", "ske", "sks", "skv", "saoid", "suoid", "scid", "skdutid", "sduoid",
];

/// A SAS's query parameters decoded as the cloud decodes a query: percent-escapes, and `+` as a
/// space (so a signature must carry `+` as `%2B`, as every SDK sends it). Names are decoded too
/// (`%73p` is `sp`). A SAS field given twice (in any case or spelling) is refused rather than
/// read one way here and another elsewhere, and so is a user delegation field.
fn sas_pairs(raw: &str) -> Result<Vec<(String, String)>> {
    let form = |s: &str| decode(&s.replace('+', " "));
    let mut pairs: Vec<(String, String)> = Vec::new();
    for p in raw.split('&').filter(|p| !p.is_empty()) {
        let (n, v) = p.split_once('=').unwrap_or((p, ""));
        let (n, v) = (form(n), form(v));
        let lower = n.to_ascii_lowercase();
        if SAS_FIELDS.contains(&lower.as_str())
            && pairs.iter().any(|(k, _)| k.eq_ignore_ascii_case(&lower))
        {
            return Err(BlobError::auth_failed(format!(
                "The SAS parameter '{lower}' is given more than once."
            )));
        }
        if DELEGATION_FIELDS.contains(&lower.as_str()) {
            return Err(BlobError::auth_failed(format!(
                "'{lower}' is a field of a user delegation SAS, which this service does not \
                 issue: use a service or account SAS signed with the account key."
            )));
        }
        pairs.push((n, v));
    }
    Ok(pairs)
}

/// A SAS in the query: signature, time window, IP and protocol. `policy` looks up a stored
/// access policy of the container by id.
fn sas(
    r: &Request<'_>,
    account: &Account,
    policy: &dyn Fn(&str) -> Option<AccessPolicy>,
) -> Result<Principal> {
    let q = sas_pairs(r.raw_query)?;
    let get = |n: &str| {
        q.iter()
            .find(|(k, _)| k == n)
            .map(|(_, v)| v.as_str())
            .unwrap_or("")
    };
    let sig = get("sig");
    let sv = get("sv");
    if sv.is_empty() {
        return Err(BlobError::auth_failed("sv is mandatory."));
    }
    let account_sas = !get("ss").is_empty() || !get("srt").is_empty();
    let (mut sp, mut st, mut se) = (
        get("sp").to_string(),
        get("st").to_string(),
        get("se").to_string(),
    );
    let sts = if account_sas {
        let mut s = format!(
            "{}\n{sp}\n{}\n{}\n{st}\n{se}\n{}\n{}\n{sv}\n",
            account.name,
            get("ss"),
            get("srt"),
            get("sip"),
            get("spr")
        );
        if at_least(sv, "2020-12-06") {
            s.push_str(get("ses"));
            s.push('\n');
        }
        s
    } else {
        let sr = get("sr");
        let resource = match (sr, r.container, r.blob) {
            ("c", Some(c), _) => format!("/blob/{}/{c}", account.name),
            ("b" | "bs" | "bv", Some(c), Some(b)) => format!("/blob/{}/{c}/{b}", account.name),
            ("b" | "bs" | "bv" | "c", _, _) => {
                return Err(BlobError::auth_failed(format!(
                    "Signature did not match: sr={sr} does not fit this resource."
                )))
            }
            _ => {
                return Err(BlobError::auth_failed(format!(
                    "Signed resource (sr) '{sr}' is not supported."
                )))
            }
        };
        let si = get("si");
        let signed_snapshot = if sr == "bs" {
            r.snapshot.unwrap_or("")
        } else {
            ""
        };
        let mut s = format!("{sp}\n{st}\n{se}\n{resource}\n{si}\n");
        if at_least(sv, "2015-04-05") {
            s.push_str(&format!("{}\n{}\n", get("sip"), get("spr")));
        }
        s.push_str(sv);
        s.push('\n');
        if at_least(sv, "2018-11-09") {
            s.push_str(&format!("{sr}\n{signed_snapshot}\n"));
        }
        if at_least(sv, "2020-12-06") {
            s.push_str(get("ses"));
            s.push('\n');
        }
        s.push_str(&format!(
            "{}\n{}\n{}\n{}\n{}",
            get("rscc"),
            get("rscd"),
            get("rsce"),
            get("rscl"),
            get("rsct")
        ));
        if !si.is_empty() {
            let p = policy(si).ok_or_else(|| {
                BlobError::auth_failed(format!("Signed identifier '{si}' was not found."))
            })?;
            for (field, from_policy) in [(&mut sp, &p.permission), (&mut se, &p.expiry)] {
                match (field.is_empty(), from_policy) {
                    (true, Some(v)) => *field = v.clone(),
                    (false, Some(_)) => {
                        return Err(BlobError::auth_failed(
                            "A field is given both in the SAS and in its stored access policy.",
                        ))
                    }
                    _ => {}
                }
            }
            if st.is_empty() {
                st = p.start.clone().unwrap_or_default();
            }
        }
        s
    };
    if !verify(account, &sts, sig) {
        return Err(BlobError::auth_failed(format!(
            "Signature did not match. String to sign used was {}",
            sts.replace('\n', "\\n")
        )));
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let expiry = parse_iso(&se)
        .ok_or_else(|| BlobError::auth_failed(format!("Signed expiry '{se}' is not valid.")))?;
    let start =
        if st.is_empty() {
            None
        } else {
            Some(parse_iso(&st).ok_or_else(|| {
                BlobError::auth_failed(format!("Signed start '{st}' is not valid."))
            })?)
        };
    if now >= expiry || start.is_some_and(|s| now < s) {
        return Err(BlobError::auth_failed(format!(
            "Signed expiry time [{se}] has to be after signed start time [{st}] and the current time."
        )));
    }
    let sip = get("sip");
    if !sip.is_empty() && !ip_allowed(sip, r.peer) {
        return Err(BlobError::ip_mismatch());
    }
    // This endpoint speaks plain HTTP: an https-only SAS cannot be used here.
    let spr = get("spr");
    if !spr.is_empty() && !spr.split(',').any(|p| p.trim() == "http") {
        return Err(BlobError::protocol_mismatch());
    }
    if account_sas {
        if !get("ss").contains('b') {
            return Err(BlobError::resource_type_mismatch());
        }
        return Ok(Principal::Sas(Grant {
            permissions: sp,
            resource: "account".into(),
            resource_types: get("srt").to_string(),
        }));
    }
    Ok(Principal::Sas(Grant {
        permissions: sp,
        resource: get("sr").to_string(),
        resource_types: String::new(),
    }))
}

/// Authenticates a request: SharedKey if it has an Authorization header, a SAS if its query has
/// `sig`, anonymous otherwise.
pub fn authenticate(
    r: &Request<'_>,
    account: &Account,
    policy: &dyn Fn(&str) -> Option<AccessPolicy>,
) -> Result<Principal> {
    let auth = header(r.headers, "authorization");
    if !auth.is_empty() {
        return shared_key(r, auth, account);
    }
    // Decoded names, so `%73ig=` is a SAS too (and checked as one), not an anonymous request.
    if query_pairs(r.raw_query)
        .iter()
        .any(|(n, _)| n.eq_ignore_ascii_case("sig"))
    {
        return sas(r, account, policy);
    }
    Ok(Principal::Anonymous)
}

/// Builds a service SAS token (the CLI's `generate-sas`), the string-to-sign of sv=2020-12-06+.
#[allow(clippy::too_many_arguments)]
pub fn service_sas(
    account: &Account,
    container: &str,
    blob: Option<&str>,
    permissions: &str,
    start: Option<&str>,
    expiry: &str,
    ip: Option<&str>,
    https_only: bool,
) -> String {
    const SV: &str = "2025-11-05";
    let sr = if blob.is_some() { "b" } else { "c" };
    let resource = match blob {
        Some(b) => format!("/blob/{}/{container}/{b}", account.name),
        None => format!("/blob/{}/{container}", account.name),
    };
    let spr = if https_only { "https" } else { "https,http" };
    let sts = format!(
        "{permissions}\n{}\n{expiry}\n{resource}\n\n{}\n{spr}\n{SV}\n{sr}\n\n\n\n\n\n\n",
        start.unwrap_or(""),
        ip.unwrap_or("")
    );
    let sig = sign(account.signing_key(), &sts);
    let enc = |s: &str| {
        percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
    };
    let mut q = vec![format!("sv={SV}")];
    if let Some(s) = start {
        q.push(format!("st={}", enc(s)));
    }
    q.push(format!("se={}", enc(expiry)));
    q.push(format!("sr={sr}"));
    q.push(format!("sp={permissions}"));
    if let Some(i) = ip {
        q.push(format!("sip={i}"));
    }
    q.push(format!("spr={}", enc(spr)));
    q.push(format!("sig={}", enc(&sig)));
    q.join("&")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso_times() {
        assert_eq!(parse_iso("1970-01-02"), Some(86400));
        assert_eq!(parse_iso("1970-01-01T01:00:00Z"), Some(3600));
        assert_eq!(parse_iso("1970-01-01T01:00:00.1234567Z"), Some(3600));
        assert_eq!(parse_iso("1970-01-01T01:00Z"), Some(3600));
        assert_eq!(parse_iso("1970-01-01T02:00:00+01:00"), Some(3600));
        assert_eq!(parse_iso("yesterday"), None);
        // Out of range or signed fields are no time.
        for bad in [
            "2030-01-01T24:00Z",
            "2030-01-01T10:60Z",
            "2030-01-01T10:00:60Z",
            "2030-01-01T-1:00Z",
            "2030-01-01T+1:00Z",
            "2030-13-01",
            "2030-+1-01",
            "2030-01-01T10:00+25:00",
            "2030-01-01T10-00Z",
        ] {
            assert_eq!(parse_iso(bad), None, "{bad}");
        }
        // A multi-byte character where an offset's digits would be (a panic before).
        assert_eq!(parse_iso("2030-01-01T10:00+0\u{e9}00"), None);
        assert_eq!(parse_iso("2030-01-01T10:00:0\u{e9}"), None);
        assert_eq!(parse_iso("2030-01-0\u{e9}"), None);
    }

    proptest::proptest! {
        /// Whatever a SAS's `st`/`se` holds: an answer, never a panic.
        #[test]
        fn parse_iso_never_panics(s in "[0-9T:Z+.\\-]{0,30}|\\PC{0,30}") {
            let _ = parse_iso(&s);
        }

        /// Any query string: a SAS's fields or a refusal, never a panic.
        #[test]
        fn sas_pairs_never_panic(s in "\\PC{0,80}") {
            let _ = sas_pairs(&s);
            let _ = query_pairs(&s);
        }
    }

    #[test]
    fn header_order_matches_the_sdk() {
        let mut v = vec![
            "x-ms-meta-b",
            "x-ms-date",
            "x-ms-meta-a",
            "x-ms-version",
            "x-ms-blob-type",
        ];
        v.sort_by(|a, b| service_cmp(a, b));
        assert_eq!(
            v,
            vec![
                "x-ms-blob-type",
                "x-ms-date",
                "x-ms-meta-a",
                "x-ms-meta-b",
                "x-ms-version"
            ]
        );
    }

    #[test]
    fn sas_fields_are_decoded_like_the_cloud_and_given_once() {
        let q = sas_pairs("%73p=r&sig=a+b%2Bc&se=2030-01-01T00%3A00%3A00Z&comp=x&comp=y").unwrap();
        let get = |n: &str| q.iter().find(|(k, _)| k == n).map(|(_, v)| v.as_str());
        assert_eq!(get("sp"), Some("r"));
        // A raw `+` is a space, as the cloud decodes it; `%2B` is a `+`.
        assert_eq!(get("sig"), Some("a b+c"));
        assert_eq!(get("se"), Some("2030-01-01T00:00:00Z"));
        // Parameters that are not the SAS's are not its business.
        assert_eq!(get("comp"), Some("x"));
        for dup in [
            "sp=r&sp=rw",
            "sp=r&sp=r",
            "sp=r&SP=rw",
            "sp=r&%73p=rw",
            "sig=a&sig=b",
            "se=1&Se=2",
            "rscd=a&rscd=b",
        ] {
            let e = sas_pairs(dup).unwrap_err();
            assert_eq!(
                (e.status.as_u16(), e.code),
                (403, "AuthenticationFailed"),
                "{dup}"
            );
        }
        for delegation in [
            "skoid=x",
            "sktid=x",
            "ske=2030-01-01",
            "%73kv=2020-02-10",
            "saoid=x",
        ] {
            let e = sas_pairs(&format!("sv=2025-11-05&{delegation}")).unwrap_err();
            assert_eq!(e.status.as_u16(), 403, "{delegation}");
        }
    }

    #[test]
    fn ip_ranges() {
        let p: IpAddr = "127.0.0.1".parse().unwrap();
        assert!(ip_allowed("127.0.0.1", p));
        assert!(ip_allowed("127.0.0.0-127.0.0.9", p));
        assert!(!ip_allowed("10.0.0.1", p));
        assert!(ip_allowed("127.0.0.1", "::ffff:127.0.0.1".parse().unwrap()));
    }
}
