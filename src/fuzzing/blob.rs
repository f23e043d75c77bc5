//! The blob service's parsers an outsider feeds: XML request bodies (Put Block List, Set
//! Container ACL) and the reader the CLI and the extension downloader use for bodies from
//! elsewhere; the HTTP framing follower of each connection ([`crate::blob::http::wire`]); SAS query
//! strings and SharedKey `Authorization` headers (`crate::blob::http::auth`).
//!
//! Invariants, checked by panicking:
//! - XML: an accepted block list names at most 50,000 valid block ids, an accepted ACL at most 5
//!   identifiers with valid ids; a refusal is one of the cloud's codes; a block list the store
//!   refuses leaves the blob's committed blocks as they were, one it takes commits exactly the
//!   blocks named, in order.
//! - Wire: what the follower learns does not depend on how the bytes were split into reads or
//!   writes, and a re-casing only ever changes the case of the bytes it covers.
//! - Auth: no request is taken as the key holder's or as a SAS unless signed with the account's
//!   key (a request taken so is refused by the same account name with another key), and a
//!   refusal is a 403.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

use hyper::header::{HeaderName, HeaderValue};
use hyper::HeaderMap;

use crate::blob::blobs::Access;
use crate::blob::http::auth::{self, Principal};
use crate::blob::http::xml;
use crate::blob::http::xml_bodies::{self as bodies, MAX_BLOCKS, MAX_IDENTIFIERS};
use crate::blob::store::{AccessPolicy, Account, HttpProps, PublicAccess};
use crate::blob::Store;

const ACCOUNT: &str = "fuzz";
const CONTAINER: &str = "c";
const BLOB: &str = "b";
/// The blocks staged (uncommitted) for the block lists to name: base64 of `AAA`, `BBB`, `CCC`.
pub const STAGED: [&str; 3] = ["QUFB", "QkJC", "Q0ND"];

/// Commits between two stagings of [`STAGED`] (staging is file work, most of a commit's cost).
const STAGE_EVERY: u64 = 8;

/// What the XML target made of one input.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct XmlOutcome {
    /// Read as a block list.
    pub block_list: bool,
    /// ... and committed by the store.
    pub committed: bool,
    /// Read as a container ACL.
    pub acl: bool,
}

/// The XML bodies against a store of its own (a temporary directory): one per fuzzing thread.
pub struct XmlTarget {
    _dir: tempfile::TempDir,
    store: Store,
    commits: u64,
}

impl XmlTarget {
    /// # Panics
    /// If the temporary store cannot be made.
    pub fn new() -> XmlTarget {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let store = Store::new(dir.path().join("blobs"));
        store
            .add_account(ACCOUNT, &[&crate::blob::new_account_key()])
            .expect("an account");
        store
            .create_container(ACCOUNT, CONTAINER, BTreeMap::new(), PublicAccess::Off)
            .expect("a container");
        let t = XmlTarget {
            _dir: dir,
            store,
            commits: 0,
        };
        t.stage();
        t
    }

    /// Stages [`STAGED`] as uncommitted blocks of the blob (a commit consumes them).
    fn stage(&self) {
        let tmp = self.store.blob_paths(ACCOUNT, CONTAINER, BLOB).tmp;
        std::fs::create_dir_all(&tmp).expect("the store's tmp dir");
        for id in STAGED {
            let file = tmp.join(format!("stage-{id}"));
            std::fs::write(&file, id).expect("a staged block");
            self.store
                .put_block(ACCOUNT, CONTAINER, BLOB, id, &file, &Access::default())
                .expect("Put Block");
        }
    }

    /// The blob's committed block ids (none before the first commit).
    fn committed(&self) -> Vec<String> {
        let (_, committed, _) = self
            .store
            .block_list(ACCOUNT, CONTAINER, BLOB, None, &Access::default())
            .expect("Get Block List");
        committed.into_iter().map(|b| b.id).collect()
    }

    /// One body, as Put Block List and as Set Container ACL would read it, and through the
    /// general reader.
    pub fn run(&mut self, body: &[u8]) -> XmlOutcome {
        if let Ok(text) = std::str::from_utf8(body) {
            let _ = xml::parse(text);
        }
        let mut out = XmlOutcome {
            acl: self.acl(body),
            ..XmlOutcome::default()
        };
        let list = match bodies::block_list(body) {
            Ok(list) => list,
            Err(e) => {
                assert!(
                    matches!(
                        e.code,
                        "InvalidXmlDocument"
                            | "InvalidXmlNodeValue"
                            | "BlockListTooLong"
                            | "RequestBodyTooLarge"
                    ),
                    "a block list refused with {}",
                    e.code
                );
                return out;
            }
        };
        out.block_list = true;
        assert!(list.len() <= MAX_BLOCKS, "{} blocks taken", list.len());
        assert!(list.iter().all(|(_, id)| bodies::valid_block_id(id)));
        let before = self.committed();
        let put = self.store.put_block_list(
            ACCOUNT,
            CONTAINER,
            BLOB,
            &list,
            HttpProps::default(),
            BTreeMap::new(),
            &Access::default(),
        );
        let named: Vec<&str> = list.iter().map(|(_, id)| id.as_str()).collect();
        match put {
            Err(e) => {
                assert_eq!(
                    self.committed(),
                    before,
                    "a block list refused ({}) changed the blob",
                    e.code
                );
            }
            Ok(m) => {
                let ids: Vec<&str> = m.blocks.iter().map(|b| b.id.as_str()).collect();
                assert_eq!(ids, named, "the blocks committed are not those named");
                assert_eq!(self.committed(), named);
                assert_eq!(m.size, m.blocks.iter().map(|b| b.size).sum::<u64>());
                out.committed = true;
                // Staged again now and then, not after every commit: until then, lists that
                // name uncommitted blocks are refused, the path whose invariant is "no change".
                self.commits += 1;
                if self.commits % STAGE_EVERY == 0 {
                    self.stage();
                }
            }
        }
        out
    }

    fn acl(&self, body: &[u8]) -> bool {
        match bodies::signed_identifiers(body) {
            Ok(ids) => {
                assert!(
                    ids.len() <= MAX_IDENTIFIERS,
                    "{} identifiers taken",
                    ids.len()
                );
                assert!(ids
                    .iter()
                    .all(|p| !p.id.is_empty() && p.id.chars().count() <= 64));
                true
            }
            Err(e) => {
                assert!(
                    matches!(
                        e.code,
                        "InvalidXmlDocument" | "InvalidXmlNodeValue" | "RequestBodyTooLarge"
                    ),
                    "an ACL refused with {}",
                    e.code
                );
                false
            }
        }
    }
}

impl Default for XmlTarget {
    fn default() -> Self {
        Self::new()
    }
}

/// The framing follower: the first byte sets the size of the pieces the rest is read and written
/// in. Returns the number of requests it followed.
pub fn wire(data: &[u8]) -> usize {
    let piece = data.first().map_or(1, |b| usize::from(*b % 64) + 1);
    crate::blob::http::wire::fuzz::check(data.get(1..).unwrap_or_default(), piece)
}

/// How a request was taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthOutcome {
    Key,
    Sas,
    Anonymous,
    Refused,
}

/// Authentication against an account with known keys and a stored access policy `p1`.
pub struct AuthTarget {
    right: Account,
    wrong: Account,
}

/// key1 and key2 of the fuzzing account.
const KEYS: [&[u8]; 2] = [
    b"vmnode fuzzing key one, 32 bytes",
    b"vmnode fuzzing key two, 32 bytes",
];

impl AuthTarget {
    pub fn new() -> AuthTarget {
        AuthTarget {
            right: Account {
                name: ACCOUNT.into(),
                keys: KEYS.iter().map(|k| k.to_vec()).collect(),
            },
            wrong: Account {
                name: ACCOUNT.into(),
                keys: vec![b"not the account's key".to_vec()],
            },
        }
    }

    /// A request in the text form the target reads: a request line (`METHOD path?query`), then
    /// `name: value` lines.
    pub fn run(&self, data: &[u8]) -> AuthOutcome {
        let text = String::from_utf8_lossy(data);
        let Some(req) = Parsed::new(&text) else {
            return AuthOutcome::Refused;
        };
        let policy = |id: &str| {
            (id == "p1").then(|| AccessPolicy {
                id: "p1".into(),
                start: None,
                expiry: Some("2099-01-01T00:00:00Z".into()),
                permission: Some("r".into()),
            })
        };
        let r = req.request();
        let outcome = match auth::authenticate(&r, &self.right, &policy) {
            Ok(Principal::Key) => AuthOutcome::Key,
            Ok(Principal::Sas(_)) => AuthOutcome::Sas,
            Ok(Principal::Anonymous) => AuthOutcome::Anonymous,
            Err(e) => {
                assert!(
                    e.status.as_u16() == 403,
                    "refused with {} {}",
                    e.status,
                    e.code
                );
                AuthOutcome::Refused
            }
        };
        if matches!(outcome, AuthOutcome::Key | AuthOutcome::Sas) {
            // What the key holder's account takes, the same account name with another key
            // refuses: the signature, not its shape, is what lets a request in.
            let wrong = auth::authenticate(&r, &self.wrong, &policy);
            assert!(
                !matches!(wrong, Ok(Principal::Key | Principal::Sas(_))),
                "taken as signed without the account's key: {wrong:?}"
            );
        }
        outcome
    }

    /// Requests signed now with the account's key: SharedKey (dated now, so they pass for 15
    /// minutes) and service SAS tokens (valid until 2099), in the form [`AuthTarget::run`] reads.
    pub fn signed_seeds(&self) -> Vec<Vec<u8>> {
        let date = httpdate::fmt_http_date(std::time::SystemTime::now());
        let mut out = Vec::new();
        for (method, target, extra) in [
            (
                "PUT",
                "/fuzz/c/b?comp=blocklist",
                "x-ms-meta-Key: v\ncontent-length: 120\n",
            ),
            (
                "GET",
                "/fuzz/c?restype=container&comp=list&prefix=a%2Fb",
                "",
            ),
            (
                "PUT",
                "/fuzz/c/b",
                "x-ms-blob-type: BlockBlob\ncontent-type: text/plain\n",
            ),
            (
                "GET",
                "/fuzz/c/b",
                "range: bytes=0-511\nif-match: \"0x1\"\n",
            ),
        ] {
            let head =
                format!("{method} {target}\nx-ms-date: {date}\nx-ms-version: 2025-11-05\n{extra}");
            let parsed = Parsed::new(&head).expect("a seed parses");
            let sts = &auth::shared_key_candidates(&parsed.request(), ACCOUNT)[0];
            let sig = auth::sign(KEYS[0], sts);
            out.push(format!("{head}authorization: SharedKey {ACCOUNT}:{sig}\n").into_bytes());
        }
        let sas = |blob: Option<&str>, perms: &str, ip: Option<&str>| {
            auth::service_sas(
                &self.right,
                CONTAINER,
                blob,
                perms,
                Some("2020-01-01T00:00:00Z"),
                "2099-01-01T00:00:00Z",
                ip,
                false,
            )
        };
        for (method, target, token) in [
            (
                "PUT",
                "/fuzz/c/b?comp=blocklist",
                sas(Some(BLOB), "rw", None),
            ),
            ("GET", "/fuzz/c/b", sas(Some(BLOB), "r", Some("127.0.0.1"))),
            (
                "GET",
                "/fuzz/c?restype=container&comp=list",
                sas(None, "rl", None),
            ),
            (
                "GET",
                "/fuzz/c/b",
                "sv=2025-11-05&sr=b&si=p1&sig=AAAA".to_string(),
            ),
        ] {
            let sep = if target.contains('?') { '&' } else { '?' };
            out.push(
                format!("{method} {target}{sep}{token}\nx-ms-version: 2025-11-05\n").into_bytes(),
            );
        }
        out
    }
}

impl Default for AuthTarget {
    fn default() -> Self {
        Self::new()
    }
}

/// A request read from the target's text form, cut as the blob server cuts a URL.
struct Parsed<'a> {
    method: &'a str,
    path: &'a str,
    query: &'a str,
    headers: HeaderMap,
    account: String,
    container: Option<String>,
    blob: Option<String>,
    snapshot: Option<String>,
}

impl<'a> Parsed<'a> {
    fn new(text: &'a str) -> Option<Parsed<'a>> {
        let mut lines = text.split('\n');
        let (method, target) = lines.next()?.trim_end_matches('\r').split_once(' ')?;
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        let mut headers = HeaderMap::new();
        for line in lines {
            let Some((n, v)) = line.trim_end_matches('\r').split_once(':') else {
                continue;
            };
            if let (Ok(n), Ok(v)) = (
                HeaderName::from_bytes(n.trim().as_bytes()),
                HeaderValue::from_str(v.trim()),
            ) {
                headers.append(n, v);
            }
        }
        let decode = |s: &str| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8_lossy()
                .into_owned()
        };
        let mut segs = path.trim_start_matches('/').splitn(3, '/');
        let account = decode(segs.next().unwrap_or(""));
        let container = segs.next().filter(|s| !s.is_empty()).map(decode);
        let blob = segs.next().filter(|s| !s.is_empty()).map(decode);
        let snapshot = auth::query_pairs(query)
            .into_iter()
            .find(|(k, _)| k == "snapshot")
            .map(|(_, v)| v);
        Some(Parsed {
            method,
            path,
            query,
            headers,
            account,
            container,
            blob,
            snapshot,
        })
    }

    fn request(&self) -> auth::Request<'_> {
        auth::Request {
            method: self.method,
            raw_path: self.path,
            raw_query: self.query,
            headers: &self.headers,
            account: &self.account,
            container: self.container.as_deref(),
            blob: self.blob.as_deref(),
            snapshot: self.snapshot.as_deref(),
            peer: IpAddr::V4(Ipv4Addr::LOCALHOST),
        }
    }
}
