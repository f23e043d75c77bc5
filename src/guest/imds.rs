//! The Instance Metadata Service (`http://169.254.169.254`) as a pure function: a request
//! (method, path, query, headers) and a way to find the calling VM's [`Facts`] in, a response
//! (status, content type, body) out. The socket loop is `guest::http`; who the caller is,
//! `guest::attribution`. The rules are the cloud's (design note §6.1):
//!
//! - `Metadata: true` is required, compared case-insensitively (waagent sends `True`), and a
//!   request with `X-Forwarded-For` (one that came through a proxy) is refused: both 400;
//! - only GET: 405 for other verbs;
//! - a query parameter given twice: 400;
//! - `api-version` is required and must be one the cloud knows, except on `/metadata/versions`:
//!   400 with the cloud's body and its `newest-versions`;
//! - `/metadata/instance[/elem/...]`: an element path into the document (array elements by
//!   index); a leaf needs `format=text` and comes back bare, an object or array is JSON
//!   (`format=text` on one is 400); an unknown element is 404;
//! - `extended` only with `extended=true` and an api-version of 2021-03-01 or later.
//!
//! Fields are not filtered by api-version (the cloud hides those newer than the version asked):
//! every version gets the whole document.

pub mod document;

use serde_json::{json, Value};

pub use document::Facts;

/// The api-versions the cloud knows, oldest first (its `/metadata/versions`).
pub const API_VERSIONS: &[&str] = &[
    "2017-03-01",
    "2017-04-02",
    "2017-08-01",
    "2017-10-01",
    "2017-12-01",
    "2018-02-01",
    "2018-04-02",
    "2018-10-01",
    "2019-02-01",
    "2019-03-11",
    "2019-04-30",
    "2019-06-01",
    "2019-06-04",
    "2019-08-01",
    "2019-08-15",
    "2019-11-01",
    "2020-06-01",
    "2020-07-15",
    "2020-09-01",
    "2020-10-01",
    "2020-12-01",
    "2021-01-01",
    "2021-02-01",
    "2021-03-01",
    "2021-05-01",
    "2021-08-01",
    "2021-10-01",
    "2021-11-01",
    "2021-11-15",
    "2021-12-13",
    "2022-02-01",
    "2022-03-01",
    "2022-07-01",
    "2022-08-01",
    "2022-09-01",
    "2023-07-01",
];

/// The first api-version with the `extended` section.
const EXTENDED_SINCE: &str = "2021-03-01";
/// The longest request path or query considered; longer ones are 400 before they are read.
const MAX_TARGET: usize = 4096;

/// One request as the socket loop read it. Header values that are not UTF-8 are given lossily.
#[derive(Clone, Debug, Default)]
pub struct Request {
    pub method: String,
    /// The path, undecoded.
    pub path: String,
    /// The raw query (after `?`, "" if none).
    pub query: String,
    pub headers: Vec<(String, String)>,
}

/// What the service answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub content_type: &'static str,
    pub body: String,
}

pub const JSON: &str = "application/json; charset=utf-8";
pub const TEXT: &str = "text/plain; charset=utf-8";

impl Response {
    fn json(status: u16, body: &Value) -> Response {
        Response {
            status,
            content_type: JSON,
            body: body.to_string(),
        }
    }

    /// The cloud's error shape, `{"error": "..."}`.
    pub fn error(status: u16, message: &str) -> Response {
        Response::json(status, &json!({ "error": message }))
    }
}

fn header<'a>(req: &'a Request, name: &str) -> impl Iterator<Item = &'a str> + 'a {
    let name = name.to_string();
    req.headers
        .iter()
        .filter(move |(k, _)| k.eq_ignore_ascii_case(&name))
        .map(|(_, v)| v.trim())
}

/// The query's parameters, percent-decoded (`+` a space); `None` if one is given twice (names
/// compared case-insensitively) or a name is not UTF-8 after decoding.
fn query(raw: &str) -> Option<Vec<(String, String)>> {
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(&s.replace('+', " "))
            .decode_utf8()
            .map(|c| c.into_owned())
            .ok()
    };
    let mut out: Vec<(String, String)> = Vec::new();
    for pair in raw.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let (k, v) = (decode(k)?, decode(v)?);
        if out.iter().any(|(o, _)| o.eq_ignore_ascii_case(&k)) {
            return None;
        }
        out.push((k, v));
    }
    Some(out)
}

fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

fn bad_version() -> Response {
    let newest: Vec<&str> = API_VERSIONS.iter().rev().take(3).copied().collect();
    Response::json(
        400,
        &json!({
            "error": "Bad request. api-version is invalid or was not specified in the request. For more information refer to aka.ms/azureimds",
            "newest-versions": newest,
        }),
    )
}

/// Answers one request. `facts` finds the calling VM; it is called only for a request that
/// passed the rules and needs the VM, and `None` (no VM holds the caller's address on this
/// network) is 403.
pub fn answer(req: &Request, facts: impl FnOnce() -> Option<Facts>) -> Response {
    if header(req, "x-forwarded-for").next().is_some() {
        return Response::error(
            400,
            "Bad request. The request must not contain an X-Forwarded-For header.",
        );
    }
    if !header(req, "metadata").any(|v| v.eq_ignore_ascii_case("true")) {
        return Response::error(400, "Bad request. Required metadata header not specified");
    }
    if req.method != "GET" {
        return Response::error(405, "Method not allowed.");
    }
    if req.path.len() > MAX_TARGET || req.query.len() > MAX_TARGET {
        return Response::error(400, "Bad request. The request is too long.");
    }
    let Some(params) = query(&req.query) else {
        return Response::error(
            400,
            "Bad request. A query parameter is repeated or malformed.",
        );
    };
    let path = req.path.trim_end_matches('/');
    if path == "/metadata/versions" {
        return Response::json(200, &json!({ "apiVersions": API_VERSIONS }));
    }
    let rest = match path.strip_prefix("/metadata/instance") {
        Some(r) if r.is_empty() || r.starts_with('/') => r,
        _ => return Response::error(404, "Not found"),
    };
    let version = match param(&params, "api-version") {
        Some(v) if API_VERSIONS.contains(&v) => v,
        _ => return bad_version(),
    };
    let text = match param(&params, "format") {
        None | Some("json") => false,
        Some("text") => true,
        Some(_) => return Response::error(400, "Bad request. Unknown format."),
    };
    let extended = param(&params, "extended") == Some("true") && version >= EXTENDED_SINCE;
    let Some(f) = facts() else {
        return Response::error(
            403,
            "Forbidden. No virtual machine on this network holds the request's source address.",
        );
    };
    let doc = document::instance(&f, extended);
    let Some(elem) = select(&doc, rest) else {
        return Response::error(404, "Not found");
    };
    match (elem, text) {
        (Value::Object(_) | Value::Array(_), true) => Response::error(
            400,
            "Bad request. format=text is only for leaf elements; ask for JSON.",
        ),
        (Value::Object(_) | Value::Array(_), false) => Response::json(200, elem),
        (leaf, true) => Response {
            status: 200,
            content_type: TEXT,
            body: match leaf {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            },
        },
        (_, false) => Response::error(
            400,
            "Bad request. Leaf elements are only served with format=text.",
        ),
    }
}

/// The element `rest` (`/compute/name`, `/network/interface/0/...`; "" the whole document)
/// names in `doc`: object members by name, array elements by decimal index.
fn select<'a>(doc: &'a Value, rest: &str) -> Option<&'a Value> {
    rest.split('/')
        .filter(|s| !s.is_empty())
        .try_fold(doc, |v, seg| match v {
            Value::Object(o) => o.get(seg),
            Value::Array(a) => a.get(seg.parse::<usize>().ok()?),
            _ => None,
        })
}

#[cfg(test)]
mod tests;
