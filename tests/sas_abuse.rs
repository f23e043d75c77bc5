//! SAS abuse against the blob service (issue 9, R5): take a valid service SAS (blob, container,
//! stored access policy) and a valid account SAS, then
//! * mutate, drop or add every field one at a time → 403 AuthenticationFailed;
//! * flip every bit of the signature → 403;
//! * duplicate parameters → 403 (the cloud refuses a SAS with a repeated parameter rather than
//!   pick one), re-encoded names and values → the same answer as the plain form, and a raw `+`
//!   in `sig` is a space (as the cloud decodes a query) → 403, `%2B` → 200;
//! * `..` and encoded-slash paths never reach another container or leave the store;
//! * ±1 s around `se`: allowed just before, 403 from `se` on.
//!
//! Requests are written by hand over TCP (no SDK rewrites what is sent), signed here
//! independently of the service's code.

mod common;
#[path = "blob/harness.rs"]
mod harness;

use std::io::{Read, Write};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use harness::{Blob, Node};
use hmac::Mac;

const SV: &str = "2025-11-05";
const PUBLIC: &[u8] = b"alpha: readable with alpha's SAS";
const SECRET: &[u8] = b"beta: never readable with alpha's SAS";

struct Resp {
    status: u16,
    code: String,
    body: Vec<u8>,
}

impl std::fmt::Debug for Resp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {} {}",
            self.status,
            self.code,
            String::from_utf8_lossy(&self.body)
        )
    }
}

fn b64(b: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(b)
}

fn hmac(key: &[u8], sts: &str) -> Vec<u8> {
    let mut m = hmac::Hmac::<sha2::Sha256>::new_from_slice(key).unwrap();
    m.update(sts.as_bytes());
    m.finalize().into_bytes().to_vec()
}

fn enc(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// Every byte as `%XX`, letters too.
fn enc_all(s: &str) -> String {
    s.bytes().map(|b| format!("%{b:02X}")).collect()
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn iso(secs: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(secs)
        .unwrap()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap()
}

/// Seconds since the epoch of a time [`iso`] wrote (`YYYY-MM-DDTHH:MM:SSZ`).
fn secs_of(t: &str) -> i64 {
    let n = |r: std::ops::Range<usize>| t[r].parse::<i64>().unwrap();
    let month = time::Month::try_from(n(5..7) as u8).unwrap();
    let day = time::Date::from_calendar_date(n(0..4) as i32, month, n(8..10) as u8).unwrap();
    day.midnight().assume_utc().unix_timestamp() + n(11..13) * 3600 + n(14..16) * 60 + n(17..19)
}

/// A node with containers `alpha` (blob `pub.txt`, stored access policies `pol1` = r and
/// `pol2` = rl) and `beta` (blob `secret.txt`).
struct Lab {
    node: Node,
    acct: String,
    key: Vec<u8>,
}

impl Lab {
    fn new() -> Lab {
        let node = Node::start_bare();
        let account = node.account();
        let acct = account["name"].as_str().unwrap().to_string();
        let key = base64::engine::general_purpose::STANDARD
            .decode(account["key"].as_str().unwrap())
            .unwrap();
        let lab = Lab { node, acct, key };
        for c in ["alpha", "beta"] {
            let r = lab.keyed(
                "PUT",
                &format!("/{c}"),
                &[("restype", "container")],
                &[],
                b"",
            );
            assert_eq!(r.status, 201, "create {c}: {r:?}");
        }
        for (path, data) in [("/alpha/pub.txt", PUBLIC), ("/beta/secret.txt", SECRET)] {
            let r = lab.keyed(
                "PUT",
                path,
                &[],
                &[("x-ms-blob-type", "BlockBlob".into())],
                data,
            );
            assert_eq!(r.status, 201, "put {path}: {r:?}");
        }
        let expiry = iso(now_secs() + 3600);
        let acl = format!(
            "<?xml version=\"1.0\" encoding=\"utf-8\"?><SignedIdentifiers>\
             <SignedIdentifier><Id>pol1</Id><AccessPolicy><Expiry>{expiry}</Expiry>\
             <Permission>r</Permission></AccessPolicy></SignedIdentifier>\
             <SignedIdentifier><Id>pol2</Id><AccessPolicy><Expiry>{expiry}</Expiry>\
             <Permission>rl</Permission></AccessPolicy></SignedIdentifier></SignedIdentifiers>"
        );
        let r = lab.keyed(
            "PUT",
            "/alpha",
            &[("comp", "acl"), ("restype", "container")],
            &[("content-type", "application/xml".into())],
            acl.as_bytes(),
        );
        assert_eq!(r.status, 200, "set acl: {r:?}");
        lab
    }

    /// A raw HTTP/1.1 request; `target` is the path and query exactly as sent.
    fn send(&self, method: &str, target: &str, headers: &[(&str, String)], body: &[u8]) -> Resp {
        let host = format!("127.0.0.1:{}", self.node.blob_port);
        let mut s = std::net::TcpStream::connect(&host).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut head =
            format!("{method} {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n");
        for (k, v) in headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        if method == "PUT" {
            head.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        head.push_str("\r\n");
        s.write_all(head.as_bytes()).unwrap();
        s.write_all(body).unwrap();
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).unwrap();
        let split = buf
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .unwrap_or_else(|| panic!("no response head: {}", String::from_utf8_lossy(&buf)));
        let head = String::from_utf8_lossy(&buf[..split]).to_string();
        let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
        let code = head
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("x-ms-error-code")
                    .then(|| v.trim().to_string())
            })
            .unwrap_or_default();
        Resp {
            status,
            code,
            body: buf[split + 4..].to_vec(),
        }
    }

    /// GET `/{account}{path}?{query}`.
    fn get(&self, path: &str, query: &str) -> Resp {
        self.send("GET", &format!("/{}{path}?{query}", self.acct), &[], b"")
    }

    /// A request signed with the account key (SharedKey); `query` decoded, without special
    /// characters.
    fn keyed(
        &self,
        method: &str,
        path: &str,
        query: &[(&str, &str)],
        extra: &[(&str, String)],
        body: &[u8],
    ) -> Resp {
        let mut headers: Vec<(&str, String)> = vec![
            ("x-ms-date", httpdate::fmt_http_date(SystemTime::now())),
            ("x-ms-version", SV.into()),
        ];
        headers.extend(extra.iter().cloned());
        let h = |n: &str| {
            headers
                .iter()
                .find(|(k, _)| *k == n)
                .map(|(_, v)| v.as_str())
                .unwrap_or("")
        };
        let len = if body.is_empty() {
            String::new()
        } else {
            body.len().to_string()
        };
        let mut ms: Vec<(&str, &str)> = headers
            .iter()
            .filter(|(k, _)| k.starts_with("x-ms-"))
            .map(|(k, v)| (*k, v.as_str()))
            .collect();
        ms.sort();
        let mut q = query.to_vec();
        q.sort();
        let sts = format!(
            "{method}\n\n\n{len}\n\n{}\n\n\n\n\n\n\n{}/{acct}/{acct}{path}{}",
            h("content-type"),
            ms.iter()
                .map(|(k, v)| format!("{k}:{v}\n"))
                .collect::<String>(),
            q.iter()
                .map(|(k, v)| format!("\n{k}:{v}"))
                .collect::<String>(),
            acct = self.acct,
        );
        headers.push((
            "Authorization",
            format!("SharedKey {}:{}", self.acct, b64(&hmac(&self.key, &sts))),
        ));
        let qs: Vec<String> = query.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let target = format!("/{}{path}?{}", self.acct, qs.join("&"));
        self.send(method, &target, &headers, body)
    }

    /// A service SAS for `/alpha/pub.txt` (`sr=b`) with every optional field set.
    fn blob_sas(&self) -> Sas {
        Sas::service(
            &format!("/blob/{}/alpha/pub.txt", self.acct),
            &[
                ("sv", SV.into()),
                ("sr", "b".into()),
                ("sp", "r".into()),
                ("st", iso(now_secs() - 600)),
                ("se", iso(now_secs() + 3600)),
                ("sip", "127.0.0.1".into()),
                ("spr", "https,http".into()),
                ("rscc", "no-cache".into()),
                ("rscd", "inline".into()),
                ("rsce", "identity".into()),
                ("rscl", "en".into()),
                ("rsct", "text/plain".into()),
            ],
        )
        .signed(&self.key)
    }

    /// A service SAS for container `alpha` (`sr=c`, read and list).
    fn container_sas(&self, sp: &str) -> Sas {
        Sas::service(
            &format!("/blob/{}/alpha", self.acct),
            &[
                ("sv", SV.into()),
                ("sr", "c".into()),
                ("sp", sp.into()),
                ("se", iso(now_secs() + 3600)),
                ("spr", "https,http".into()),
            ],
        )
        .signed(&self.key)
    }

    /// A service SAS for `/alpha/pub.txt` under stored access policy `pol1`.
    fn policy_sas(&self) -> Sas {
        Sas::service(
            &format!("/blob/{}/alpha/pub.txt", self.acct),
            &[("sv", SV.into()), ("sr", "b".into()), ("si", "pol1".into())],
        )
        .signed(&self.key)
    }

    /// An account SAS: blob service, every resource type, read and list.
    fn account_sas(&self) -> Sas {
        Sas::account(
            &self.acct,
            &[
                ("sv", SV.into()),
                ("ss", "b".into()),
                ("srt", "sco".into()),
                ("sp", "rl".into()),
                ("st", iso(now_secs() - 600)),
                ("se", iso(now_secs() + 3600)),
                ("sip", "127.0.0.0-127.0.0.255".into()),
                ("spr", "https,http".into()),
            ],
        )
        .signed(&self.key)
    }
}

/// A SAS as its fields (decoded, in the order sent) and how it is signed.
#[derive(Clone)]
struct Sas {
    /// `Some(canonical resource)` for a service SAS, `None` for an account SAS.
    resource: Option<String>,
    account: String,
    fields: Vec<(String, String)>,
}

impl Sas {
    fn service(resource: &str, fields: &[(&str, String)]) -> Sas {
        Sas {
            resource: Some(resource.into()),
            account: String::new(),
            fields: fields
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
        }
    }

    fn account(account: &str, fields: &[(&str, String)]) -> Sas {
        Sas {
            resource: None,
            account: account.into(),
            fields: fields
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
        }
    }

    fn field(&self, n: &str) -> &str {
        self.fields
            .iter()
            .find(|(k, _)| k == n)
            .map(|(_, v)| v.as_str())
            .unwrap_or("")
    }

    /// The string-to-sign of version 2020-12-06 and later.
    fn string_to_sign(&self) -> String {
        let f = |n| self.field(n);
        match &self.resource {
            Some(res) => format!(
                "{}\n{}\n{}\n{res}\n{}\n{}\n{}\n{}\n{}\n\n{}\n{}\n{}\n{}\n{}\n{}",
                f("sp"),
                f("st"),
                f("se"),
                f("si"),
                f("sip"),
                f("spr"),
                f("sv"),
                f("sr"),
                f("ses"),
                f("rscc"),
                f("rscd"),
                f("rsce"),
                f("rscl"),
                f("rsct"),
            ),
            None => format!(
                "{}\n{}\n{}\n{}\n{}\n{}\n{}\n{}\n{}\n{}\n",
                self.account,
                f("sp"),
                f("ss"),
                f("srt"),
                f("st"),
                f("se"),
                f("sip"),
                f("spr"),
                f("sv"),
                f("ses"),
            ),
        }
    }

    fn signed(mut self, key: &[u8]) -> Sas {
        self.fields.retain(|(k, _)| k != "sig");
        let sig = b64(&hmac(key, &self.string_to_sign()));
        self.fields.push(("sig".into(), sig));
        self
    }

    /// The same fields (signature kept) with `name` set to `value`, or dropped for `None`.
    fn with(&self, name: &str, value: Option<&str>) -> Sas {
        let mut s = self.clone();
        match (s.fields.iter().position(|(k, _)| k == name), value) {
            (Some(i), Some(v)) => s.fields[i].1 = v.into(),
            (Some(i), None) => {
                s.fields.remove(i);
            }
            (None, Some(v)) => s.fields.insert(0, (name.into(), v.into())),
            (None, None) => {}
        }
        s
    }

    /// The query string, values percent-encoded as the SDKs do.
    fn query(&self) -> String {
        self.fields
            .iter()
            .map(|(k, v)| format!("{k}={}", enc(v)))
            .collect::<Vec<_>>()
            .join("&")
    }
}

fn assert_ok(r: &Resp, what: &str) {
    assert_eq!(r.status, 200, "{what}: {r:?}");
    assert_eq!(r.body, PUBLIC, "{what}");
}

fn assert_auth_failed(r: &Resp, what: &str) {
    assert_eq!(
        (r.status, r.code.as_str()),
        (403, "AuthenticationFailed"),
        "{what}: {r:?}"
    );
}

/// Another plausible value for a field: what an attacker would try (more rights, a longer
/// window, another address), or just a different one.
fn mutations(name: &str, value: &str) -> Vec<String> {
    let shift = |secs: i64| iso(secs_of(value) + secs);
    match name {
        "sv" => vec![
            "2020-12-06".into(),
            "2025-11-06".into(),
            "2015-04-05".into(),
        ],
        "sr" => vec!["c".into(), "bs".into(), "b".into(), "x".into()]
            .into_iter()
            .filter(|v| v != value)
            .collect(),
        "sp" => vec!["rw".into(), "rwdl".into(), "w".into(), "racwdl".into()]
            .into_iter()
            .filter(|v| v != value)
            .collect(),
        "st" => vec![shift(-1), shift(-86400)],
        "se" => vec![shift(1), shift(86400 * 365)],
        "sip" => vec![
            "127.0.0.0-127.255.255.255".into(),
            "0.0.0.0-255.255.255.255".into(),
        ],
        "spr" => vec!["http".into(), "https".into()],
        "ss" => vec!["bf".into(), "bqtf".into()],
        "srt" => vec!["sc".into(), "o".into()],
        "si" => vec!["pol2".into(), "nope".into(), "POL1".into()],
        _ => vec![format!("{value}x"), String::new()],
    }
}

/// Every field of each SAS changed, dropped, or added when absent: never 200.
#[test]
fn every_sas_field_mutated_is_refused() {
    let lab = Lab::new();
    let blob_fields = [
        "sv", "sr", "sp", "st", "se", "sip", "spr", "si", "ses", "rscc", "rscd", "rsce", "rscl",
        "rsct", "ss", "srt",
    ];
    let account_fields = ["sv", "ss", "srt", "sp", "st", "se", "sip", "spr", "ses"];
    // Fields of a user delegation SAS: the cloud signs them, this service issues no such keys.
    let delegation = [
        "skoid", "sktid", "skt", "ske", "sks", "skv", "saoid", "suoid", "scid",
    ];
    let mut refused = 0;
    for (label, base, path, fields) in [
        (
            "blob SAS",
            lab.blob_sas(),
            "/alpha/pub.txt",
            &blob_fields[..],
        ),
        (
            "policy SAS",
            lab.policy_sas(),
            "/alpha/pub.txt",
            &blob_fields[..],
        ),
        (
            "account SAS",
            lab.account_sas(),
            "/alpha/pub.txt",
            &account_fields[..],
        ),
    ] {
        assert_ok(&lab.get(path, &base.query()), label);
        for &name in fields.iter().chain(delegation.iter()) {
            let value = base.field(name).to_string();
            let mut variants: Vec<Option<String>> = Vec::new();
            if value.is_empty() {
                // Absent: added with a value (an empty one signs the same as none).
                variants.push(Some(match name {
                    "st" => iso(now_secs() - 60),
                    "se" => iso(now_secs() + 60),
                    "sp" => "r".into(),
                    "sip" => "127.0.0.1".into(),
                    "spr" => "http".into(),
                    "sr" => "b".into(),
                    "ss" => "b".into(),
                    "srt" => "sco".into(),
                    "si" => "pol2".into(),
                    _ => "x".into(),
                }));
            } else {
                variants.push(None);
                variants.extend(
                    mutations(name, &value)
                        .into_iter()
                        .filter(|v| !v.is_empty())
                        .map(Some),
                );
            }
            for v in variants {
                let what = format!("{label} with {name}={v:?} (was {value:?})");
                let r = lab.get(path, &base.with(name, v.as_deref()).query());
                assert_auth_failed(&r, &what);
                refused += 1;
            }
        }
    }
    // The signature itself: dropped, the request is anonymous (a private container: 404,
    // as the cloud answers); empty, truncated, or from another key: 403.
    let base = lab.blob_sas();
    let r = lab.get("/alpha/pub.txt", &base.with("sig", None).query());
    assert_eq!(
        (r.status, r.code.as_str()),
        (404, "ResourceNotFound"),
        "{r:?}"
    );
    let sig = base.field("sig").to_string();
    for bad in [
        String::new(),
        sig[..sig.len() - 4].to_string(),
        b64(&hmac(b"another key", &base.string_to_sign())),
        format!("{sig} "),
        format!(" {sig}"),
    ] {
        let r = lab.get("/alpha/pub.txt", &base.with("sig", Some(&bad)).query());
        assert_auth_failed(&r, &format!("sig={bad:?}"));
        refused += 1;
    }
    eprintln!("{refused} mutated SAS refused");
}

/// Each of the 256 bits of the signature flipped, in a service and an account SAS.
#[test]
fn every_signature_bit_flipped_is_refused() {
    let lab = Lab::new();
    for (label, base) in [
        ("blob SAS", lab.blob_sas()),
        ("account SAS", lab.account_sas()),
    ] {
        assert_ok(&lab.get("/alpha/pub.txt", &base.query()), label);
        let sig = base64::engine::general_purpose::STANDARD
            .decode(base.field("sig"))
            .unwrap();
        assert_eq!(sig.len(), 32);
        for bit in 0..256 {
            let mut flipped = sig.clone();
            flipped[bit / 8] ^= 1 << (bit % 8);
            let r = lab.get(
                "/alpha/pub.txt",
                &base.with("sig", Some(&b64(&flipped))).query(),
            );
            assert_auth_failed(&r, &format!("{label} with bit {bit} flipped"));
        }
    }
}

/// A repeated SAS parameter is refused, whatever its case or encoding; a re-encoded one alone
/// means what it says; `sig` takes `+` only as `%2B`.
#[test]
fn duplicate_and_reencoded_parameters() {
    let lab = Lab::new();
    let path = "/alpha/pub.txt";
    let base = lab.blob_sas();
    let q = base.query();
    assert_ok(&lab.get(path, &q), "the SAS as signed");
    let se = enc(base.field("se"));
    let sig = enc(base.field("sig"));
    for extra in [
        "sp=r".to_string(),
        "sp=rw".into(),
        "SP=rw".into(),
        "%73p=rw".into(),
        "%73%70=r".into(),
        format!("se={se}"),
        format!("sig={sig}"),
        format!("%73ig={sig}"),
        "sr=c".into(),
        "sv=2020-12-06".into(),
        "rscd=attachment".into(),
    ] {
        for query in [format!("{q}&{extra}"), format!("{extra}&{q}")] {
            let r = lab.get(path, &query);
            assert_auth_failed(&r, &format!("duplicate {extra}"));
        }
    }
    // Names and values spelt another way mean the same SAS.
    let renamed = q
        .replacen("sp=", "%73p=", 1)
        .replacen("sig=", "%73%69%67=", 1);
    assert_ok(&lab.get(path, &renamed), "percent-encoded names");
    let spelt: Vec<String> = base
        .fields
        .iter()
        .map(|(k, v)| format!("{}={}", enc_all(k), enc_all(v)))
        .collect();
    assert_ok(
        &lab.get(path, &spelt.join("&")),
        "every byte percent-encoded",
    );
    let raw_colons = q.replace("%3A", ":");
    assert!(raw_colons != q);
    assert_ok(&lab.get(path, &raw_colons), "se and st with raw colons");
    // The account SAS too.
    let acc = lab.account_sas();
    assert_ok(&lab.get(path, &acc.query()), "account SAS");
    for extra in ["ss=b", "srt=o", "SRT=sco", "sp=rl"] {
        let r = lab.get(path, &format!("{}&{extra}", acc.query()));
        assert_auth_failed(&r, &format!("account SAS + {extra}"));
    }

    // A signature with a `+` in it (about half have one): `%2B` is a `+`; a raw `+` is a space
    // (as the cloud decodes a query), and so is `%20`: both fail.
    let with_plus = (0..200)
        .map(|i| {
            base.with("rscc", Some(&format!("max-age={i}")))
                .signed(&lab.key)
        })
        .find(|s| s.field("sig").contains('+'))
        .expect("no signature with a +");
    let q = with_plus.query();
    assert!(q.contains("%2B"));
    assert_ok(&lab.get(path, &q), "sig with %2B");
    let raw = q.replace("%2B", "+");
    assert_auth_failed(&lab.get(path, &raw), "sig with a raw +");
    let space = q.replace("%2B", "%20");
    assert_auth_failed(&lab.get(path, &space), "sig with %20 for +");
    // The bare name in another case is not `sig`, and no SAS with it is accepted.
    assert_auth_failed(&lab.get(path, &q.replace("sig=", "SIG=")), "SIG=");
}

/// `..` and encoded slashes stay inside the container the SAS names: 403, 400 or 404, never
/// another container's blob, and writes never leave the container's directory.
#[test]
fn dot_dot_and_encoded_slash_paths_stay_in_their_container() {
    let lab = Lab::new();
    let read = lab.container_sas("rl");
    let q = read.query();
    assert_ok(&lab.get("/alpha/pub.txt", &q), "container SAS");
    let cases: [(&str, u16); 16] = [
        ("/beta/secret.txt", 403),
        ("/alpha/../beta/secret.txt", 404),
        ("/alpha/./../beta/secret.txt", 404),
        ("/alpha/%2e%2e/beta/secret.txt", 404),
        ("/alpha/%2E%2E%2Fbeta%2Fsecret.txt", 404),
        ("/alpha/..%2fbeta%2fsecret.txt", 404),
        ("/alpha/..%5cbeta%5csecret.txt", 404),
        ("/alpha/..%2F..%2F..%2F..%2F..%2Fetc%2Fpasswd", 404),
        ("/alpha/%2e%2e%2f%2e%2e%2fstorage", 404),
        ("/alpha/pub.txt/../../beta/secret.txt", 404),
        ("/alpha%2F..%2Fbeta/secret.txt", 400),
        ("/alpha%2f%2e%2e%2fbeta/secret.txt", 400),
        ("/alpha%2F..%2Fbeta%2Fsecret.txt", 400),
        ("/%2e%2e/beta/secret.txt", 400),
        ("/./beta/secret.txt", 400),
        ("/alpha%00/../beta/secret.txt", 400),
    ];
    for (path, want) in cases {
        let r = lab.get(path, &q);
        assert!(
            !r.body.windows(SECRET.len()).any(|w| w == SECRET),
            "{path} read beta's blob: {r:?}"
        );
        assert_eq!(r.status, want, "{path}: {r:?}");
    }
    // The account part of the path: only the URL's account is ever served.
    for path in [
        "/../{acct}/beta/secret.txt",
        "/%2e%2e%2f{acct}/beta/secret.txt",
    ] {
        let target = format!("{}?{q}", path.replace("{acct}", &lab.acct));
        let r = lab.send("GET", &target, &[], b"");
        assert!(r.status == 404 || r.status == 400, "{target}: {r:?}");
        assert!(!r.body.windows(SECRET.len()).any(|w| w == SECRET));
    }
    // A snapshot id is no path either.
    for snap in ["..%2F..%2Fbeta%2Fsecret.txt", "%2e%2e", "..%2Fpub.txt"] {
        let r = lab.get("/alpha/pub.txt", &format!("{q}&snapshot={snap}"));
        assert!(r.status >= 400, "snapshot={snap}: {r:?}");
        assert!(!r.body.windows(SECRET.len()).any(|w| w == SECRET));
    }
    // The blob SAS for alpha/pub.txt does not stretch to a path that walks out of it.
    let blob = lab.blob_sas();
    for path in [
        "/alpha/pub.txt/../../beta/secret.txt",
        "/beta/secret.txt",
        "/alpha/pub.txt%2F..",
    ] {
        assert_auth_failed(&lab.get(path, &blob.query()), path);
    }

    // Writes with a container SAS: blobs named with `..` land inside alpha, as names.
    let write = lab.container_sas("rwl");
    for name in [
        "..%2Fbeta%2Fsecret.txt",
        "..%2F..%2F..%2Fpwned",
        "%2e%2e/%2e%2e/pwned2",
    ] {
        let r = lab.send(
            "PUT",
            &format!("/{}/alpha/{name}?{}", lab.acct, write.query()),
            &[("x-ms-blob-type", "BlockBlob".into())],
            b"overwritten?",
        );
        assert_eq!(r.status, 201, "put {name}: {r:?}");
    }
    let r = lab.keyed("GET", "/beta/secret.txt", &[], &[], b"");
    assert_eq!(
        (r.status, &r.body[..]),
        (200, SECRET),
        "beta's blob changed"
    );
    let listing = lab.get("/alpha", &format!("restype=container&comp=list&{q}"));
    assert_eq!(listing.status, 200, "{listing:?}");
    let text = String::from_utf8_lossy(&listing.body);
    for name in ["../beta/secret.txt", "../../../pwned", "../../pwned2"] {
        assert!(
            text.contains(&format!("<Name>{name}</Name>")),
            "{name} not listed in alpha: {text}"
        );
    }
    // Nothing was written outside alpha's directory.
    let alpha = lab.node.state.join("blobs").join(&lab.acct).join("alpha");
    for f in common::walk(lab.node.dir.path()) {
        let name = f.file_name().unwrap().to_string_lossy().to_string();
        if name.contains("pwned") || name.contains("overwritten") {
            assert!(f.starts_with(&alpha), "{} is outside alpha", f.display());
        }
    }
}

/// `se` is exact to the second: a request in the second before it is allowed, one at or after
/// it is refused. Whether a request fell in the second before is read from the clock around
/// it (a slow request is retried, never asserted on).
#[test]
fn expiry_is_exact_to_the_second() {
    let lab = Lab::new();
    let sleep_until = |secs: i64, ms: u64| {
        let target = UNIX_EPOCH + Duration::from_secs(secs as u64) + Duration::from_millis(ms);
        if let Ok(d) = target.duration_since(SystemTime::now()) {
            std::thread::sleep(d);
        }
    };
    let mut checked_before = false;
    for _ in 0..5 {
        let se = now_secs() + 3;
        let sas = Sas::service(
            &format!("/blob/{}/alpha/pub.txt", lab.acct),
            &[
                ("sv", SV.into()),
                ("sr", "b".into()),
                ("sp", "r".into()),
                ("se", iso(se)),
            ],
        )
        .signed(&lab.key);
        // Inside the last second before `se`.
        sleep_until(se - 1, 50);
        let started = SystemTime::now();
        let r = lab.get("/alpha/pub.txt", &sas.query());
        let ended = now_secs();
        assert!(started >= UNIX_EPOCH + Duration::from_secs((se - 1) as u64));
        if ended < se {
            assert_ok(&r, "one second before se");
            checked_before = true;
        }
        // At `se` and one second after: refused.
        for at in [se, se + 1] {
            sleep_until(at, 50);
            let r = lab.get("/alpha/pub.txt", &sas.query());
            assert_auth_failed(&r, &format!("{}s after se", at - se));
            assert!(
                String::from_utf8_lossy(&r.body).contains("Signed expiry time"),
                "{r:?}"
            );
        }
        if checked_before {
            break;
        }
    }
    assert!(
        checked_before,
        "no request finished within the second before se in 5 tries"
    );
    // The signed protocol and address, with a good signature, get the cloud's own codes.
    for (field, value, code) in [
        ("spr", "https", "AuthorizationProtocolMismatch"),
        ("sip", "10.9.8.7", "AuthorizationSourceIPMismatch"),
    ] {
        let sas = lab.blob_sas().with(field, Some(value)).signed(&lab.key);
        let r = lab.get("/alpha/pub.txt", &sas.query());
        assert_eq!(
            (r.status, r.code.as_str()),
            (403, code),
            "{field}={value}: {r:?}"
        );
    }
}
