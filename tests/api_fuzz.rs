//! The management API fuzzed from its own OpenAPI document (issue 9, R5).
//!
//! `docs/openapi.json` (written by `docs/openapi.py`) lists every operation; this test checks it
//! names every route of `src/api/routes.rs`, then sends a few thousand mutated requests to a real
//! daemon (`Node::start_bare`: no image, so no VM can boot) over its unix socket, written by hand
//! so nothing tidies them: path parameters with `..`, `%2F`, NUL, bad UTF-8 and very long names;
//! unknown, empty and repeated `api-version`s and other query parameters; other methods; valid
//! example bodies with fields removed, retyped, oversized, unicode or NaN-like; wrong JSON, wrong
//! content types and bodies over the size limit. Asserted:
//! * no response is a 5xx, and every request gets a response;
//! * every 4xx carries the cloud's error shape `{"error": {"code", "message"}}` (the viewer's HTML
//!   pages for browsers excepted);
//! * the listable state (groups, VMs, vnets, NICs, storage accounts, deployments) changed only
//!   where a request succeeded: each difference is under the path of a request that got a 2xx;
//! * the same new group, vnet, NIC, storage account and deployment PUT by 8 clients at once: no
//!   5xx (`races`).
//!
//! The seed is printed; `VMNODE_FUZZ_SEED=N` replays a run, `VMNODE_FUZZ_REQUESTS=N` changes its
//! length (default 10,000).

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::Node;
use serde_json::{json, Value};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn openapi() -> Value {
    let text = std::fs::read_to_string(root().join("docs/openapi.json")).unwrap();
    serde_json::from_str(&text).expect("docs/openapi.json is JSON")
}

// ---------------------------------------------------------------------------------------------
// routes.rs ↔ openapi.json

/// String constants of a Rust source (`const VM: &str = "...";`, possibly over two lines).
fn consts(src: &str) -> HashMap<String, String> {
    let mut out = HashMap::new();
    let mut rest = src;
    while let Some(at) = rest.find("const ") {
        rest = &rest[at + 6..];
        let Some(colon) = rest.find(':') else { break };
        let name = rest[..colon].trim().to_string();
        let decl_end = rest.find(';').unwrap_or(rest.len());
        let decl = &rest[..decl_end];
        if decl.contains("&str") {
            if let Some(q) = decl.find('"') {
                let lit = &decl[q + 1..];
                if let Some(e) = lit.find('"') {
                    out.insert(name, lit[..e].to_string());
                }
            }
        }
    }
    out
}

/// Expands a `format!` string of routes.rs: `{NAME}` is a constant, `{}` the next argument,
/// `{{`/`}}` a brace.
fn expand(fmt: &str, args: &[String], consts: &HashMap<String, String>) -> String {
    let mut out = String::new();
    let mut args = args.iter();
    let mut it = fmt.chars().peekable();
    while let Some(c) = it.next() {
        match c {
            '{' if it.peek() == Some(&'{') => {
                it.next();
                out.push('{');
            }
            '}' if it.peek() == Some(&'}') => {
                it.next();
                out.push('}');
            }
            '{' => {
                let name: String = it.by_ref().take_while(|c| *c != '}').collect();
                let v = if name.is_empty() {
                    args.next().expect("a format argument").clone()
                } else {
                    consts.get(&name).expect("a known constant").clone()
                };
                out.push_str(&v);
            }
            c => out.push(c),
        }
    }
    out
}

/// Every (method, path) `.route(...)` of routes.rs serves, read from its source.
fn routes_in_source() -> BTreeSet<(String, String)> {
    let src = std::fs::read_to_string(root().join("src/api/routes.rs")).unwrap();
    let viewer = std::fs::read_to_string(root().join("src/api/viewer.rs")).unwrap();
    let mut cs = consts(&src);
    for (k, v) in consts(&viewer) {
        cs.insert(format!("viewer::{k}"), v);
    }
    let lookup = |ident: &str| -> String {
        cs.get(ident.trim())
            .unwrap_or_else(|| panic!("constant {ident} of routes.rs"))
            .clone()
    };
    let body = &src[src.find("Router::new()").unwrap()..src.find(".fallback(").unwrap()];
    let mut out = BTreeSet::new();
    for chunk in body.split(".route(").skip(1) {
        let chunk = chunk.trim_start();
        let (path, rest) = if let Some(lit) = chunk.strip_prefix('"') {
            let e = lit.find('"').unwrap();
            (lit[..e].to_string(), &lit[e + 1..])
        } else if let Some(f) = chunk.strip_prefix("&format!(\"") {
            let e = f.find('"').unwrap();
            let after = &f[e + 1..];
            let close = after.find(')').unwrap();
            let args: Vec<String> = after[..close]
                .split(',')
                .map(str::trim)
                .filter(|a| !a.is_empty())
                .map(&lookup)
                .collect();
            (expand(&f[..e], &args, &cs), &after[close + 1..])
        } else {
            let e = chunk.find(',').unwrap();
            (lookup(&chunk[..e]), &chunk[e..])
        };
        let bytes = rest.as_bytes();
        for m in ["get", "put", "post", "patch", "delete"] {
            let pat = format!("{m}(");
            let mut from = 0;
            while let Some(i) = rest[from..].find(&pat) {
                let at = from + i;
                let before = if at == 0 { b' ' } else { bytes[at - 1] };
                if !(before.is_ascii_alphanumeric() || before == b'_' || before == b':') {
                    out.insert((m.to_string(), path.clone()));
                }
                from = at + pat.len();
            }
        }
    }
    out
}

fn routes_in_openapi(doc: &Value) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            out.insert((method.clone(), path.clone()));
        }
    }
    out
}

#[test]
fn openapi_names_every_route() {
    let src = routes_in_source();
    assert!(src.len() > 60, "routes.rs parsed badly: {src:?}");
    let doc = routes_in_openapi(&openapi());
    let missing: Vec<_> = src.difference(&doc).collect();
    let stale: Vec<_> = doc.difference(&src).collect();
    assert!(
        missing.is_empty() && stale.is_empty(),
        "docs/openapi.json is out of date with src/api/routes.rs (run `python3 docs/openapi.py` after \
         adding the route to its OPS table):\n  routes missing from the document: {missing:?}\n  \
         operations no route serves: {stale:?}"
    );
}

/// The document is valid OpenAPI 3.0 (checked by openapi-spec-validator from PyPI) and is what
/// docs/openapi.py writes now.
#[test]
fn openapi_document_is_valid_and_current() {
    let py = common::python_with(&["openapi-spec-validator"]);
    let doc = root().join("docs/openapi.json");
    let out = std::process::Command::new(&py)
        .args(["-m", "openapi_spec_validator"])
        .arg(&doc)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "docs/openapi.json is not valid OpenAPI: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let script = r#"import importlib.util, json, sys
spec = importlib.util.spec_from_file_location("openapi", sys.argv[1])
m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)
print(json.dumps(m.build()))"#;
    let out = std::process::Command::new(&py)
        .args(["-c", script])
        .arg(root().join("docs/openapi.py"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let built: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        built == openapi(),
        "docs/openapi.json is not what docs/openapi.py writes: run `python3 docs/openapi.py`"
    );
}

// ---------------------------------------------------------------------------------------------
// A seeded RNG (splitmix64): the run replays from its seed.

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

// ---------------------------------------------------------------------------------------------
// HTTP/1.1 over the daemon's unix socket, by hand.

struct Resp {
    status: u16,
    head: String,
    body: Vec<u8>,
}

impl Resp {
    fn header(&self, name: &str) -> Option<String> {
        self.head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_string())
        })
    }
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(nl) = b.windows(2).position(|w| w == b"\r\n") else {
            return out;
        };
        let size = std::str::from_utf8(&b[..nl])
            .ok()
            .and_then(|s| usize::from_str_radix(s.split(';').next()?.trim(), 16).ok())
            .unwrap_or(0);
        if size == 0 || b.len() < nl + 2 + size {
            return out;
        }
        out.extend_from_slice(&b[nl + 2..nl + 2 + size]);
        b = &b[(nl + 4 + size).min(b.len())..];
    }
}

struct Client {
    sock: PathBuf,
    token: String,
}

impl Client {
    /// Sends one request (`target` is sent as is); `None` if no response came back.
    fn send(
        &self,
        method: &str,
        target: &str,
        ctype: Option<&str>,
        body: &[u8],
    ) -> std::io::Result<Resp> {
        let mut s = UnixStream::connect(&self.sock)?;
        s.set_read_timeout(Some(Duration::from_secs(30)))?;
        s.set_write_timeout(Some(Duration::from_secs(30)))?;
        let mut head = format!(
            "{method} {target} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {}\r\nConnection: close\r\n",
            self.token
        );
        if let Some(c) = ctype {
            head.push_str(&format!("Content-Type: {c}\r\n"));
        }
        if !body.is_empty() || method != "GET" {
            head.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        head.push_str("\r\n");
        let mut req = head.into_bytes();
        req.extend_from_slice(body);
        // The server may answer (405, 413) without reading all of a body and close: write from
        // a thread and read here at once, so the answer is read before the close resets the
        // connection; what was read before a reset counts.
        let mut w = s.try_clone()?;
        let writer = std::thread::spawn(move || {
            let _ = w.write_all(&req);
        });
        let mut buf = Vec::new();
        let mut chunk = [0u8; 65536];
        let read_err = loop {
            match s.read(&mut chunk) {
                Ok(0) => break None,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                Err(e) => break Some(e),
            }
        };
        let _ = s.shutdown(std::net::Shutdown::Both);
        let _ = writer.join();
        if let Some(e) = read_err {
            if !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                return Err(e);
            }
        }
        let split = buf
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .ok_or_else(|| std::io::Error::other("no response head"))?;
        let head = String::from_utf8_lossy(&buf[..split]).to_string();
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| std::io::Error::other("no status"))?;
        let mut resp = Resp {
            status,
            head,
            body: buf[split + 4..].to_vec(),
        };
        if resp
            .header("transfer-encoding")
            .is_some_and(|t| t.contains("chunked"))
        {
            resp.body = dechunk(&resp.body);
        }
        Ok(resp)
    }

    fn ok(&self, method: &str, target: &str, body: Option<&Value>) -> Value {
        let bytes = body.map(|b| b.to_string().into_bytes()).unwrap_or_default();
        let r = self
            .send(method, target, body.map(|_| "application/json"), &bytes)
            .unwrap();
        assert!(
            (200..300).contains(&r.status),
            "{method} {target}: {} {}",
            r.status,
            String::from_utf8_lossy(&r.body)
        );
        r.json()
    }
}

// ---------------------------------------------------------------------------------------------
// The operations, their valid values and their mutations.

struct Op {
    method: String,
    path: String,
    params: Vec<String>,
    query: Vec<String>,
    example: Option<Value>,
}

fn operations(doc: &Value) -> Vec<Op> {
    let mut ops = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let mut params = Vec::new();
            let mut query = Vec::new();
            for p in op["parameters"].as_array().unwrap() {
                let name = p["name"].as_str().unwrap().to_string();
                match p["in"].as_str().unwrap() {
                    "path" => params.push(name),
                    _ => query.push(name),
                }
            }
            let example = op["requestBody"]["content"]["application/json"]["example"].clone();
            ops.push(Op {
                method: method.to_uppercase(),
                path: path.clone(),
                params,
                query,
                example: (!example.is_null()).then_some(example),
            });
        }
    }
    ops
}

/// Percent-encodes everything but unreserved characters.
fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn pct_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("zz");
            if let Ok(v) = u8::from_str_radix(hex, 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A path parameter made hostile, already encoded for the request line.
fn bad_segment(rng: &mut Rng, valid: &str) -> String {
    let long = |n: usize| "a".repeat(n);
    match rng.below(24) {
        0 => "..".into(),
        1 => ".".into(),
        2 => "%2e%2e".into(),
        3 => "..%2F..%2F..%2Fetc%2Fpasswd".into(),
        4 => format!("{valid}%2F..%2F{valid}"),
        5 => "%2F".into(),
        6 => format!("{valid}%00"),
        7 => "%FF%FE".into(),
        8 => long(rng.pick(&[64, 65, 90, 91, 255, 256, 1000, 5000]).to_owned()),
        9 => enc("ünïcødé-名前-😀"),
        10 => enc("\u{202e}evil\u{200b}"),
        11 => format!("{valid}%20"),
        12 => "%0D%0ASet-Cookie:%20x=1".into(),
        13 => enc("$(reboot)`id`;|&"),
        14 => enc("' OR 1=1; DROP TABLE kv;--"),
        15 => "NaN".into(),
        16 => "-1".into(),
        17 => enc("{rg}"),
        18 => "%25".into(),
        19 => "%".into(),
        20 => format!("{valid}.."),
        21 => enc("\\..\\..\\windows"),
        22 => "~".into(),
        _ => format!("fuzz{}", rng.next() % 100_000),
    }
}

const NAN_LIKE: &[&str] = &[
    "NaN",
    "-NaN",
    "Infinity",
    "-Infinity",
    "1e309",
    "-0",
    "0x10",
    "",
    " ",
    "null",
    "true",
    "\u{0}",
    "ünïcødé-名前-😀",
    "\u{202e}\u{200b}",
    "../../../etc/passwd",
    "/subscriptions/x/resourceGroups/../../etc",
];

fn bad_value(rng: &mut Rng, old: &Value) -> Value {
    match rng.below(12) {
        0 => Value::Null,
        1 => json!(rng.pick(NAN_LIKE)),
        2 => json!("x".repeat(*rng.pick(&[256, 4096, 100_000]))),
        3 => json!(-1),
        4 => json!(1e308),
        5 => json!(u64::MAX),
        6 => json!(true),
        7 => json!([old.clone(), old.clone()]),
        8 => json!({ "value": old.clone() }),
        9 => json!(old.to_string()),
        10 => json!(3.5),
        _ => json!([]),
    }
}

/// Every JSON pointer of a document's objects' fields and arrays' items.
fn pointers(v: &Value, at: String, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, c) in m {
                let p = format!("{at}/{}", k.replace('~', "~0").replace('/', "~1"));
                out.push(p.clone());
                pointers(c, p, out);
            }
        }
        Value::Array(a) => {
            for (i, c) in a.iter().enumerate() {
                let p = format!("{at}/{i}");
                out.push(p.clone());
                pointers(c, p, out);
            }
        }
        _ => {}
    }
}

fn remove_at(v: &mut Value, ptr: &str) {
    let (parent, last) = ptr.rsplit_once('/').unwrap();
    let key = last.replace("~1", "/").replace("~0", "~");
    match v.pointer_mut(parent) {
        Some(Value::Object(m)) => {
            m.remove(&key);
        }
        Some(Value::Array(a)) => {
            if let Ok(i) = key.parse::<usize>() {
                if i < a.len() {
                    a.remove(i);
                }
            }
        }
        _ => {}
    }
}

/// A request body and its content type: a mutated example, or something that is not one.
fn bad_body(rng: &mut Rng, example: Option<&Value>) -> (Option<String>, Vec<u8>, &'static str) {
    const JSON: &str = "application/json";
    let base = example.cloned().unwrap_or_else(|| json!({}));
    match rng.below(20) {
        0..=9 => {
            let mut v = base;
            for _ in 0..=rng.below(3) {
                let mut ptrs = Vec::new();
                pointers(&v, String::new(), &mut ptrs);
                if ptrs.is_empty() {
                    break;
                }
                let p = rng.pick(&ptrs).clone();
                if rng.chance(40) {
                    remove_at(&mut v, &p);
                } else if let Some(slot) = v.pointer_mut(&p) {
                    *slot = bad_value(rng, &slot.clone());
                }
            }
            (Some(JSON.into()), v.to_string().into_bytes(), "fields")
        }
        10 => {
            let s = base.to_string();
            let cut = rng.below(s.len().max(1));
            (Some(JSON.into()), s.as_bytes()[..cut].to_vec(), "truncated")
        }
        11 => {
            let junk: &[&str] = &[
                "",
                "{",
                "}",
                "null",
                "[]",
                "\"s\"",
                "1",
                "NaN",
                "{\"a\":NaN}",
                "{'a':1}",
                "{\"a\":1,}",
                "\u{feff}{}",
                "{\"properties\":{},\"properties\":[]}",
            ];
            let j = rng.pick(junk);
            (Some(JSON.into()), j.as_bytes().to_vec(), "wrong JSON")
        }
        12 => {
            let depth = *rng.pick(&[100, 129, 1000, 100_000]);
            let b = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
            (Some(JSON.into()), b.into_bytes(), "deep")
        }
        13 => {
            // Over axum's 2 MiB body limit.
            let b = format!("{{\"tags\":{{\"a\":\"{}\"}}}}", "x".repeat(3 << 20));
            (Some(JSON.into()), b.into_bytes(), "huge")
        }
        14 => (
            Some(JSON.into()),
            vec![b'{', b'"', 0xff, 0xfe, b'"', b':', b'1', b'}'],
            "bad UTF-8",
        ),
        15 => {
            let ct = rng.pick(&[
                "text/plain",
                "application/xml",
                "application/x-www-form-urlencoded",
                "application/json; charset=utf-16",
                "application/jsonx",
                "",
            ]);
            (
                Some(ct.to_string()),
                base.to_string().into_bytes(),
                "content type",
            )
        }
        16 => (None, base.to_string().into_bytes(), "no content type"),
        17 => {
            let mut b = base.to_string().into_bytes();
            b.extend_from_slice(b" trailing");
            (Some(JSON.into()), b, "trailing")
        }
        18 => {
            let big = format!("{{\"n\":{}}}", "9".repeat(5000));
            (Some(JSON.into()), big.into_bytes(), "big number")
        }
        _ => (Some(JSON.into()), Vec::new(), "empty"),
    }
}

fn query_value(rng: &mut Rng, name: &str, hostile: bool) -> String {
    let good: &[&str] = match name {
        "api-version" => &["2024-07-01", "2022-09-01", "2023-01-01"],
        "$expand" => &["instanceView", "userData"],
        "$top" => &["1", "0"],
        "$orderby" => &["name desc"],
        "monitor" => &["true"],
        "skipShutdown" => &["true", "false"],
        "format" => &["bmp", "png"],
        "fragment" => &["1"],
        _ => &["1", "60"],
    };
    if !hostile || rng.chance(40) {
        let g: &&str = rng.pick(good);
        return enc(g);
    }
    let bad = [
        "",
        "1900-01-01",
        "9999-99-99-preview",
        "garbage",
        "-1",
        "99999999999999999999999",
        "1e3",
        "NaN",
        "%FF",
        "%ZZ",
        "%",
        "a%00b",
    ];
    let v = rng.pick(&bad);
    if v.starts_with('%') || v.contains("%00") {
        v.to_string()
    } else {
        enc(v)
    }
}

// ---------------------------------------------------------------------------------------------
// The listable state.

fn snapshot(c: &Client, sub: &str) -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    let q = "api-version=2024-07-01";
    let mut put = |v: &Value| {
        for r in v["value"].as_array().unwrap() {
            let mut r = r.clone();
            // Times that move on their own are not state.
            if let Some(p) = r["properties"].as_object_mut() {
                p.remove("duration");
            }
            out.insert(r["id"].as_str().unwrap().to_lowercase(), r);
        }
    };
    let rgs = c.ok(
        "GET",
        &format!("/subscriptions/{sub}/resourceGroups?{q}"),
        None,
    );
    put(&rgs);
    for rg in rgs["value"].as_array().unwrap() {
        let base = format!(
            "/subscriptions/{sub}/resourceGroups/{}",
            enc(rg["name"].as_str().unwrap())
        );
        for kind in [
            "Microsoft.Compute/virtualMachines",
            "Microsoft.Network/virtualNetworks",
            "Microsoft.Network/networkInterfaces",
            "Microsoft.Storage/storageAccounts",
            "Microsoft.Resources/deployments",
        ] {
            put(&c.ok("GET", &format!("{base}/providers/{kind}?{q}"), None));
        }
    }
    put(&c.ok(
        "GET",
        &format!("/subscriptions/{sub}/providers/Microsoft.Compute/virtualMachines?{q}"),
        None,
    ));
    out
}

// ---------------------------------------------------------------------------------------------

fn error_code(r: &Resp) -> String {
    let v = r.json();
    assert!(
        v["error"]["message"].is_string(),
        "{} without the error shape: {}",
        r.status,
        String::from_utf8_lossy(&r.body)
    );
    v["error"]["code"].as_str().unwrap_or_default().to_string()
}

/// What the fuzzer found, checked every run.
fn regressions(c: &Client, node: &Node, rg: &str) {
    let q = "?api-version=2022-09-01";
    let tpl = br#"{"properties":{"mode":"Incremental","template":{"resources":[]}}}"#;
    // A deployment's name is its record's file name: `%2F` led out of the deployments
    // directory (201 and a file written elsewhere), a long name was a 500 (ENAMETOOLONG).
    for name in [
        "..%2F..%2Fescaped".to_string(),
        "a%2Fb".into(),
        "a".repeat(300),
        "x%00y".into(),
    ] {
        let r = c
            .send(
                "PUT",
                &format!("{rg}/providers/Microsoft.Resources/deployments/{name}{q}"),
                Some("application/json"),
                tpl,
            )
            .unwrap();
        assert_eq!(
            r.status,
            400,
            "deployment '{name}': {}",
            String::from_utf8_lossy(&r.body)
        );
        assert_eq!(error_code(&r), "InvalidDeploymentName");
    }
    let escaped: Vec<_> = common::walk(node.dir.path())
        .into_iter()
        .filter(|p| p.to_string_lossy().contains("escaped"))
        .collect();
    assert!(
        escaped.is_empty(),
        "a deployment record left its directory: {escaped:?}"
    );
    // NICs and subnets were created under any name (`$(reboot)`, a trailing space).
    let net = format!("{rg}/providers/Microsoft.Network");
    let nic = br#"{"properties":{"ipConfigurations":[{"properties":{"subnet":{"id":"/x/resourceGroups/fuzzrg/providers/Microsoft.Network/virtualNetworks/fuzzvnet/subnets/default"}}}]}}"#;
    for name in ["%24%28reboot%29", "fuzznic%20", "-a", "a.", &"a".repeat(81)] {
        let r = c
            .send(
                "PUT",
                &format!("{net}/networkInterfaces/{name}{q}"),
                Some("application/json"),
                nic,
            )
            .unwrap();
        assert_eq!(
            (r.status, error_code(&r).as_str()),
            (400, "InvalidResourceName"),
            "NIC '{name}'"
        );
        let r = c
            .send(
                "PUT",
                &format!("{net}/virtualNetworks/fuzzvnet/subnets/{name}{q}"),
                Some("application/json"),
                br#"{"properties":{"addressPrefix":"10.77.9.0/24"}}"#,
            )
            .unwrap();
        assert_eq!(
            (r.status, error_code(&r).as_str()),
            (400, "InvalidResourceName"),
            "subnet '{name}'"
        );
    }
    // The errors axum answers by itself, in the cloud's shape.
    let r = c
        .send(
            "PUT",
            &format!("{rg}{q}"),
            Some("application/json"),
            b"{\"location\":",
        )
        .unwrap();
    assert_eq!(
        (r.status, error_code(&r).as_str()),
        (400, "InvalidRequestContent")
    );
    let r = c
        .send("PUT", &format!("{rg}{q}"), Some("text/plain"), b"{}")
        .unwrap();
    assert_eq!(
        (r.status, error_code(&r).as_str()),
        (415, "UnsupportedMediaType")
    );
    let r = c.send("PATCH", &format!("{rg}{q}"), None, b"").unwrap();
    assert_eq!(
        (r.status, error_code(&r).as_str()),
        (405, "MethodNotAllowed")
    );
    assert!(
        r.header("allow").is_some_and(|a| a.contains("PUT")),
        "{}",
        r.head
    );
    let r = c
        .send(
            "GET",
            &format!("{rg}/providers/Microsoft.Network/networkInterfaces/%FF{q}"),
            None,
            b"",
        )
        .unwrap();
    assert_eq!(
        (r.status, error_code(&r).as_str()),
        (400, "InvalidParameter")
    );
    let huge = format!("{{\"tags\":{{\"a\":\"{}\"}}}}", "x".repeat(3 << 20));
    let r = c
        .send(
            "PUT",
            &format!("{rg}{q}"),
            Some("application/json"),
            huge.as_bytes(),
        )
        .unwrap();
    assert_eq!(
        (r.status, error_code(&r).as_str()),
        (413, "RequestEntityTooLarge")
    );
}

/// The same new resource PUT by 8 clients at once, 4 times for each kind: no 5xx, and it exists
/// once afterwards.
fn races(c: &Client, rg: &str, bodies: &[(String, Value)]) {
    let q = "?api-version=2024-07-01";
    let mut errors = Vec::new();
    let mut sent = 0;
    for (prefix, body) in bodies {
        for round in 0..4 {
            // A new group, or a new resource in the fuzz's group; vnets get their own space.
            let name = format!("race{}{round}", prefix.len());
            let target = match prefix.as_str() {
                "" => format!("{}/{name}{q}", rg.rsplit_once('/').unwrap().0),
                p => format!("{rg}{p}{name}{q}"),
            };
            let mut body = body.clone();
            if prefix.contains("virtualNetworks") {
                let space = format!("10.{}.0.0/16", 100 + round);
                body["properties"]["addressSpace"]["addressPrefixes"] = json!([space]);
                body["properties"]["subnets"][0]["properties"]["addressPrefix"] =
                    json!(format!("10.{}.0.0/24", 100 + round));
            }
            let bytes = body.to_string().into_bytes();
            let answers: Vec<std::io::Result<Resp>> = std::thread::scope(|s| {
                let hs: Vec<_> = (0..8)
                    .map(|_| s.spawn(|| c.send("PUT", &target, Some("application/json"), &bytes)))
                    .collect();
                hs.into_iter().map(|h| h.join().unwrap()).collect()
            });
            sent += answers.len();
            for a in answers {
                match a {
                    Ok(r) if r.status < 500 => {}
                    Ok(r) => errors.push(format!(
                        "{} PUT {target}: {}",
                        r.status,
                        String::from_utf8_lossy(&r.body)
                    )),
                    Err(e) => errors.push(format!("PUT {target}: no answer: {e}")),
                }
            }
            c.ok("GET", &target, None);
        }
    }
    eprintln!(
        "api_fuzz: {sent} racing PUTs (8 at once), {} ≥ 500",
        errors.len()
    );
    assert!(errors.is_empty(), "racing PUTs:\n  {}", errors.join("\n  "));
}

const METHODS: &[&str] = &[
    "GET", "PUT", "POST", "PATCH", "DELETE", "HEAD", "OPTIONS", "TRACE", "FUZZ",
];

#[test]
fn api_fuzz() {
    let seed: u64 = std::env::var("VMNODE_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                % 1_000_000_000
        });
    let total: usize = std::env::var("VMNODE_FUZZ_REQUESTS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10_000);
    eprintln!("api_fuzz: seed {seed} (replay with VMNODE_FUZZ_SEED={seed}), {total} requests");
    let mut rng = Rng(seed);

    let node = Node::start_bare();
    let client = Client {
        sock: node.run.join("vmnode.sock"),
        token: std::fs::read_to_string(node.state.join("token"))
            .unwrap()
            .trim()
            .to_string(),
    };
    let info = client.ok("GET", "/vmnode/v1/node", None);
    let sub = info["subscriptionId"].as_str().unwrap().to_string();
    let loc = info["location"].as_str().unwrap().to_string();

    // Fixtures: a group with a vnet, a NIC, a storage account and a deployment.
    let valid: HashMap<&str, String> = [
        ("sub", sub.clone()),
        ("rg", "fuzzrg".into()),
        ("vm", "fuzzvm".into()),
        ("loc", loc.clone()),
        ("id", "00000000-0000-0000-0000-000000000000".into()),
        ("name", "fuzzdep".into()),
        ("publisher", "vmnode".into()),
        ("offer", "tiny".into()),
        ("sku", "1".into()),
        ("version", "latest".into()),
        ("vnet", "fuzzvnet".into()),
        ("subnet", "default".into()),
        ("nic", "fuzznic".into()),
        ("account", "fuzzacct1".into()),
        ("op", "0000000000000000".into()),
        ("file", "viewer.css".into()),
    ]
    .into_iter()
    .collect();
    let doc = openapi();
    let ops = operations(&doc);
    let fill = |s: &str| -> String {
        let mut s = s.to_string();
        for (k, v) in &valid {
            s = s.replace(&format!("{{{k}}}"), v);
        }
        s
    };
    let example = |op_id_path: &str, method: &str| -> Value {
        let op = ops
            .iter()
            .find(|o| o.path == op_id_path && o.method == method)
            .unwrap();
        serde_json::from_str(&fill(&op.example.as_ref().unwrap().to_string())).unwrap()
    };
    let rg = format!("/subscriptions/{sub}/resourceGroups/fuzzrg");
    let q = "?api-version=2024-07-01";
    let t = |p: &str| {
        ops.iter()
            .find(|o| o.path.ends_with(p))
            .unwrap()
            .path
            .clone()
    };
    client.ok(
        "PUT",
        &format!("{rg}{q}"),
        Some(&example(&t("/resourceGroups/{rg}"), "PUT")),
    );
    for (suffix, tpath) in [
        (
            "/providers/Microsoft.Network/virtualNetworks/fuzzvnet",
            "/virtualNetworks/{vnet}",
        ),
        (
            "/providers/Microsoft.Network/networkInterfaces/fuzznic",
            "/networkInterfaces/{nic}",
        ),
        (
            "/providers/Microsoft.Storage/storageAccounts/fuzzacct1",
            "/storageAccounts/{account}",
        ),
        (
            "/providers/Microsoft.Resources/deployments/fuzzdep",
            "/deployments/{name}",
        ),
    ] {
        client.ok(
            "PUT",
            &format!("{rg}{suffix}{q}"),
            Some(&example(&t(tpath), "PUT")),
        );
    }
    // The deployment (no resources) finishes at once; wait so its record is stable.
    let dep = format!("{rg}/providers/Microsoft.Resources/deployments/fuzzdep{q}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while client.ok("GET", &dep, None)["properties"]["provisioningState"] != "Succeeded" {
        assert!(
            Instant::now() < deadline,
            "fixture deployment did not finish"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    regressions(&client, &node, &rg);
    let example_bodies: Vec<(String, Value)> = [
        ("", "/resourceGroups/{rg}"),
        (
            "/providers/Microsoft.Network/virtualNetworks/",
            "/virtualNetworks/{vnet}",
        ),
        (
            "/providers/Microsoft.Network/networkInterfaces/",
            "/networkInterfaces/{nic}",
        ),
        (
            "/providers/Microsoft.Storage/storageAccounts/",
            "/storageAccounts/{account}",
        ),
        (
            "/providers/Microsoft.Resources/deployments/",
            "/deployments/{name}",
        ),
    ]
    .iter()
    .map(|(prefix, tpath)| (prefix.to_string(), example(&t(tpath), "PUT")))
    .collect();
    let before = snapshot(&client, &sub);
    let started = Instant::now();
    // (method, decoded lowercase path) of every request that succeeded and may change state.
    let mut changed_under: Vec<(String, String)> = Vec::new();
    let mut server_errors: Vec<String> = Vec::new();
    let mut bad_shape: Vec<String> = Vec::new();
    let mut no_response: Vec<String> = Vec::new();
    let mut by_status: BTreeMap<u16, usize> = BTreeMap::new();
    let mut max_latency = (Duration::ZERO, String::new());
    let mut sent = 0usize;

    for i in 0..total {
        let op = &ops[i % ops.len()];
        // What this request gets wrong above all (the rest is valid, mostly): its path, its
        // query, its method or its body.
        let focus = match rng.below(100) {
            0..=34 => "path",
            35..=49 => "query",
            50..=59 => "method",
            _ => "body",
        };
        let mut method = op.method.clone();
        if focus == "method" || rng.chance(2) {
            method = rng.pick(METHODS).to_string();
        }
        // Path: one parameter hostile when it is the focus, now and then another.
        let mutate_one = if op.params.is_empty() || focus != "path" {
            None
        } else {
            Some(rng.below(op.params.len()))
        };
        let mut path = op.path.clone();
        let mut what = Vec::new();
        for (n, p) in op.params.iter().enumerate() {
            let good = valid[p.as_str()].clone();
            let hostile = Some(n) == mutate_one || rng.chance(3);
            // A DELETE never names a fixture: the fuzz keeps its resources to work on.
            let deleting = method == "DELETE" && n + 1 == op.params.len();
            let v = if hostile || deleting {
                let mut v = bad_segment(&mut rng, &good);
                while deleting && pct_decode(&v).eq_ignore_ascii_case(&good) {
                    v = bad_segment(&mut rng, &good);
                }
                let shown: String = v.chars().take(40).collect();
                what.push(format!("{p}={shown}"));
                v
            } else {
                enc(&good)
            };
            path = path.replace(&format!("{{{p}}}"), &v);
        }
        // Query: the operation's parameters, some hostile, some repeated, some unknown.
        let mut query: Vec<String> = Vec::new();
        let hostile_query = focus == "query";
        for name in &op.query {
            if name == "api-version" && hostile_query && rng.chance(10) {
                what.push("no api-version".into());
                continue;
            }
            if name != "api-version" && rng.chance(50) {
                continue;
            }
            let times = 1 + usize::from(hostile_query && rng.chance(30));
            for _ in 0..times {
                query.push(format!(
                    "{}={}",
                    enc(name),
                    query_value(&mut rng, name, hostile_query)
                ));
            }
        }
        if hostile_query && rng.chance(30) {
            query.push(
                rng.pick(&["%ZZ=1", "a=%FF", "=", "&&", "x", "api-version", "a[b]=c"])
                    .to_string(),
            );
        }
        if hostile_query && rng.chance(10) {
            query.push(format!("junk={}", "q".repeat(8000)));
        }
        if hostile_query && !query.is_empty() && rng.chance(30) {
            let j = rng.below(query.len());
            let dup = query[j].clone();
            query.push(dup);
        }
        let target = if query.is_empty() {
            path.clone()
        } else {
            format!("{path}?{}", query.join("&"))
        };
        // Body: the operation's example mutated, or something that is not JSON.
        let ex = op
            .example
            .as_ref()
            .map(|e| serde_json::from_str::<Value>(&fill(&e.to_string())).unwrap());
        let (ctype, body, kind) = match (focus == "body", &ex) {
            (true, _) => bad_body(&mut rng, ex.as_ref()),
            (false, Some(e)) => (
                Some("application/json".to_string()),
                e.to_string().into_bytes(),
                "valid",
            ),
            (false, None) => (None, Vec::new(), "none"),
        };
        what.push(format!("body {kind}"));
        let t0 = Instant::now();
        let res = client.send(&method, &target, ctype.as_deref(), &body);
        let took = t0.elapsed();
        sent += 1;
        let short: String = target.chars().take(200).collect();
        let label = format!("{method} {short} [{}]", what.join(", "));
        if took > max_latency.0 {
            max_latency = (took, label.clone());
        }
        let r = match res {
            Ok(r) => r,
            Err(e) => {
                no_response.push(format!("{label}: {e}"));
                continue;
            }
        };
        *by_status.entry(r.status).or_default() += 1;
        let text: String = String::from_utf8_lossy(&r.body).chars().take(400).collect();
        if r.status >= 500 {
            server_errors.push(format!("{} {label}: {text}", r.status));
        }
        let html = r
            .header("content-type")
            .is_some_and(|c| c.starts_with("text/html"));
        if (400..600).contains(&r.status) && !(html && path.starts_with("/vmnode/v1/viewer")) {
            let v = r.json();
            let shaped =
                v["error"]["code"].as_str().is_some() && v["error"]["message"].as_str().is_some();
            if !shaped && method != "HEAD" {
                bad_shape.push(format!("{} {label}: {text}", r.status));
            }
        }
        if (200..300).contains(&r.status) && !matches!(method.as_str(), "GET" | "HEAD") {
            changed_under.push((method.clone(), pct_decode(&path).to_lowercase()));
        }
    }
    let elapsed = started.elapsed();
    let after = snapshot(&client, &sub);

    let keys: BTreeSet<&String> = before.keys().chain(after.keys()).collect();
    let mut unexplained = Vec::new();
    let mut changed = 0;
    for k in keys {
        if before.get(k) == after.get(k) {
            continue;
        }
        changed += 1;
        let how = match (before.contains_key(k), after.contains_key(k)) {
            (false, _) => "created",
            (_, false) => "deleted",
            _ => "changed",
        };
        eprintln!("api_fuzz: {how} by a request that succeeded: {k}");
        // A change is explained by a request that succeeded on that resource, on a child of it
        // (a subnet changes its vnet), on a resource it names (a new NIC is listed in its
        // subnet), or by the delete of a parent.
        let texts = [before.get(k), after.get(k)].map(|v| v.map(|v| v.to_string().to_lowercase()));
        let explained = changed_under.iter().any(|(m, p)| {
            k == p
                || p.starts_with(&format!("{k}/"))
                || (m == "DELETE" && k.starts_with(&format!("{p}/")))
                || texts
                    .iter()
                    .flatten()
                    .any(|t| t.contains(&format!("\"{p}\"")))
        });
        if !explained {
            unexplained.push(format!(
                "{k}: before {:?}, after {:?}",
                before.get(k).map(|v| v.to_string()),
                after.get(k).map(|v| v.to_string())
            ));
        }
    }

    eprintln!(
        "api_fuzz: {sent} requests to {} operations in {:.1} s; statuses {by_status:?}; \
         {} requests that may change state succeeded; {changed} of {} resources changed; max latency {:.0} ms ({}); seed {seed}",
        ops.len(),
        elapsed.as_secs_f64(),
        changed_under.len(),
        before.len().max(after.len()),
        max_latency.0.as_secs_f64() * 1000.0,
        max_latency.1.chars().take(200).collect::<String>(),
    );
    let show = |v: &[String]| {
        v.iter()
            .take(15)
            .map(|s| format!("  {s}"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert!(
        server_errors.is_empty(),
        "{} responses ≥ 500 (seed {seed}):\n{}",
        server_errors.len(),
        show(&server_errors)
    );
    assert!(
        no_response.is_empty(),
        "{} requests without a response (seed {seed}):\n{}",
        no_response.len(),
        show(&no_response)
    );
    assert!(
        bad_shape.is_empty(),
        "{} 4xx without the cloud's error shape (seed {seed}):\n{}",
        bad_shape.len(),
        show(&bad_shape)
    );
    assert!(
        unexplained.is_empty(),
        "state changed where no request succeeded (seed {seed}):\n{}",
        show(&unexplained)
    );
    races(&client, &rg, &example_bodies);
    // The daemon is still there and answers.
    client.ok("GET", "/vmnode/v1/node", None);
    assert!(Path::new(&client.sock).exists());
}
