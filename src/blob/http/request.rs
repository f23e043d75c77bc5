//! What a request brings, read once: [`Req`] (everything a handler needs, owned), and the
//! header and query readers of the cloud's conventions (metadata names as sent, HTTP properties,
//! ranges, conditions, lease actions).

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::Arc;

use hyper::{HeaderMap, StatusCode};

use crate::blob::blobs::{Access, Cond};
use crate::blob::error::{BlobError, Result};
use crate::blob::lease;
use crate::blob::pages::PAGE;
use crate::blob::store::{HttpProps, Store};

/// Everything a handler needs, owned (handlers run on blocking threads).
pub(super) struct Req {
    pub(super) store: Arc<Store>,
    pub(super) endpoint: String,
    pub(super) account: String,
    pub(super) container: String,
    pub(super) blob: String,
    pub(super) q: Vec<(String, String)>,
    pub(super) h: HeaderMap,
    pub(super) head: bool,
    pub(super) access: Access,
    /// The request's `x-ms-meta-*` names as sent (hyper's `h` has them lower-cased).
    pub(super) meta_names: Vec<String>,
}

impl Req {
    pub(super) fn q(&self, name: &str) -> Option<&str> {
        self.q
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub(super) fn h(&self, name: &str) -> Option<&str> {
        header(&self.h, name)
    }
    /// The request's user metadata, names spelt as sent.
    pub(super) fn metadata(&self) -> Result<BTreeMap<String, String>> {
        metadata(&self.h, &self.meta_names)
    }
}

pub(super) fn decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

fn date_secs(h: &HeaderMap, name: &str) -> Result<Option<u64>> {
    match header(h, name) {
        None => Ok(None),
        Some(v) => httpdate::parse_http_date(v)
            .map(|t| {
                Some(
                    t.duration_since(std::time::UNIX_EPOCH)
                        .map(|d| d.as_secs())
                        .unwrap_or(0),
                )
            })
            .map_err(|_| BlobError::invalid_header(name, v)),
    }
}

pub(super) fn access_of(h: &HeaderMap) -> Result<Access> {
    Ok(Access {
        lease_id: header(h, "x-ms-lease-id").map(String::from),
        cond: Cond {
            if_match: header(h, "if-match").map(String::from),
            if_none_match: header(h, "if-none-match").map(String::from),
            if_modified_since: date_secs(h, "if-modified-since")?,
            if_unmodified_since: date_secs(h, "if-unmodified-since")?,
        },
    })
}

pub(super) fn max_results(r: &Req) -> Result<usize> {
    match r.q("maxresults") {
        None => Ok(5000),
        Some(v) => match v.parse::<usize>() {
            Ok(n) if n > 0 => Ok(n.min(5000)),
            _ => Err(BlobError::invalid_query("maxresults", v)),
        },
    }
}

pub(super) fn u64_header(r: &Req, name: &str) -> Result<Option<u64>> {
    match r.h(name) {
        None => Ok(None),
        Some(v) => v
            .parse()
            .map(Some)
            .map_err(|_| BlobError::invalid_header(name, v)),
    }
}

/// The aligned page range of a Put Page / Get Page Ranges request.
pub(super) fn page_range(r: &Req, required: bool) -> Result<Option<Range<u64>>> {
    match range(&r.h)? {
        None if required => Err(BlobError::missing_header("x-ms-range")),
        None => Ok(None),
        Some((name, a, b)) => {
            let raw = r
                .h(if name == "Range" { "range" } else { name })
                .unwrap_or("");
            let end = match b {
                Some(b) => b + 1,
                None if required => return Err(BlobError::invalid_header(name, raw)),
                None => u64::MAX,
            };
            if required && (a % PAGE != 0 || end % PAGE != 0) {
                return Err(BlobError::invalid_header(name, raw));
            }
            Ok(Some(a..end))
        }
    }
}

pub(super) fn is_guid(s: &str) -> bool {
    uuid::Uuid::parse_str(s).is_ok()
}

/// The lease operation a request asks for, validated like the cloud does.
pub(super) fn lease_op(r: &Req) -> Result<lease::Op> {
    let action = r
        .h("x-ms-lease-action")
        .ok_or_else(|| BlobError::missing_header("x-ms-lease-action"))?;
    let id = |name: &'static str| -> Result<String> {
        let v = r.h(name).ok_or_else(|| BlobError::missing_header(name))?;
        if !is_guid(v) {
            return Err(BlobError::invalid_header(name, v));
        }
        Ok(v.to_string())
    };
    match action.to_ascii_lowercase().as_str() {
        "acquire" => {
            let d = r.h("x-ms-lease-duration").unwrap_or("-1");
            let duration: i64 = d
                .parse()
                .ok()
                .filter(|d| *d == -1 || (15..=60).contains(d))
                .ok_or_else(|| BlobError::invalid_header("x-ms-lease-duration", d))?;
            let proposed = match r.h("x-ms-proposed-lease-id") {
                Some(_) => Some(id("x-ms-proposed-lease-id")?),
                None => None,
            };
            Ok(lease::Op::Acquire { duration, proposed })
        }
        "renew" => Ok(lease::Op::Renew {
            id: id("x-ms-lease-id")?,
        }),
        "change" => Ok(lease::Op::Change {
            id: id("x-ms-lease-id")?,
            proposed: id("x-ms-proposed-lease-id")?,
        }),
        "release" => Ok(lease::Op::Release {
            id: id("x-ms-lease-id")?,
        }),
        "break" => {
            let period = match r.h("x-ms-lease-break-period") {
                None => None,
                Some(p) => Some(
                    p.parse::<i64>()
                        .ok()
                        .filter(|p| (0..=60).contains(p))
                        .ok_or_else(|| BlobError::invalid_header("x-ms-lease-break-period", p))?,
                ),
            };
            Ok(lease::Op::Break { period })
        }
        _ => Err(BlobError::invalid_header("x-ms-lease-action", action)),
    }
}

pub(super) fn header<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty())
}

/// `x-ms-meta-*` request headers, named as in `spelt` (the names as sent; hyper's are
/// lower-case). The cloud keeps a name's case but compares names ignoring it: the same name
/// twice is 400.
pub(super) fn metadata(h: &HeaderMap, spelt: &[String]) -> Result<BTreeMap<String, String>> {
    let invalid = |why: &str| {
        BlobError::new(
            StatusCode::BAD_REQUEST,
            "InvalidMetadata",
            format!("The metadata specified is invalid. {why}"),
        )
    };
    let mut out = BTreeMap::new();
    for (k, v) in h {
        let Some(lower) = k.as_str().strip_prefix("x-ms-meta-") else {
            continue;
        };
        let ok = lower
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && lower.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !ok {
            return Err(invalid("It has characters that are not permitted."));
        }
        if h.get_all(k).iter().count() > 1 {
            return Err(invalid("A name is given more than once."));
        }
        let name = spelt
            .iter()
            .find(|s| s.eq_ignore_ascii_case(lower))
            .map_or(lower, String::as_str);
        out.insert(name.to_string(), v.to_str().unwrap_or_default().to_string());
    }
    Ok(out)
}

/// The blob's HTTP properties from `x-ms-blob-*` headers (`Content-Type` as a fallback where the
/// cloud takes it, on Put Blob). None when the request sets none of them.
pub(super) fn http_props(h: &HeaderMap, content_type_fallback: bool) -> Option<HttpProps> {
    let g = |n: &str| header(h, n).map(String::from);
    let p = HttpProps {
        content_type: g("x-ms-blob-content-type")
            .or_else(|| content_type_fallback.then(|| g("content-type")).flatten()),
        content_encoding: g("x-ms-blob-content-encoding").or_else(|| {
            content_type_fallback
                .then(|| g("content-encoding"))
                .flatten()
        }),
        content_language: g("x-ms-blob-content-language"),
        content_md5: g("x-ms-blob-content-md5"),
        cache_control: g("x-ms-blob-cache-control"),
        content_disposition: g("x-ms-blob-content-disposition"),
    };
    (p != HttpProps::default()).then_some(p)
}

/// `bytes=a-b` / `bytes=a-` from `x-ms-range` (preferred) or `Range`; the header name too.
pub(super) fn range(h: &HeaderMap) -> Result<Option<(&'static str, u64, Option<u64>)>> {
    let (name, v) = match (header(h, "x-ms-range"), header(h, "range")) {
        (Some(v), _) => ("x-ms-range", v),
        (None, Some(v)) => ("Range", v),
        (None, None) => return Ok(None),
    };
    let bad = || BlobError::invalid_header(name, v);
    let spec = v.trim().strip_prefix("bytes=").ok_or_else(bad)?;
    let (a, b) = spec.split_once('-').ok_or_else(bad)?;
    let a: u64 = a.trim().parse().map_err(|_| bad())?;
    let b = match b.trim() {
        "" => None,
        b => Some(b.parse::<u64>().map_err(|_| bad())?),
    };
    if b.is_some_and(|b| b < a) {
        return Err(bad());
    }
    Ok(Some((name, a, b)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                hyper::header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    #[test]
    fn metadata_takes_the_spelling_sent_and_refuses_a_name_twice() {
        let h = headers(&[("x-ms-meta-MyKey", "1"), ("x-ms-meta-b", "2")]);
        let md = metadata(&h, &["MyKey".into(), "b".into()]).unwrap();
        assert_eq!(
            md.into_iter().collect::<Vec<_>>(),
            [
                ("MyKey".to_string(), "1".to_string()),
                ("b".to_string(), "2".to_string())
            ]
        );
        // Without the wire's spellings: hyper's lower case.
        let md = metadata(&h, &[]).unwrap();
        assert!(md.contains_key("mykey"));
        let dup = headers(&[("x-ms-meta-Key", "1"), ("x-ms-meta-KEY", "2")]);
        let e = metadata(&dup, &["Key".into(), "KEY".into()]).unwrap_err();
        assert_eq!((e.status.as_u16(), e.code), (400, "InvalidMetadata"));
        let bad = headers(&[("x-ms-meta-1abc", "1")]);
        assert_eq!(metadata(&bad, &[]).unwrap_err().code, "InvalidMetadata");
    }
}
