//! The boot-diagnostics viewer in a real browser: a real guest boots, then Debian's headless
//! Chromium opens the page the daemon serves (HTTPS, the node's own CA, pinned by its key) and
//! must show the VM, its verdict, a screenshot that loaded from its SAS link and the serial
//! tail; without the token it is refused. A screenshot of the page is kept as a CI artifact.
//!
//! Chromium talks to nothing but loopback: background services are off, every other host is
//! sent to a dead proxy and fails to resolve.

mod common;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use common::Node;
use sha2::Digest;

const BOOT: Duration = Duration::from_secs(120);

/// Waits until the VM's current boot is judged booted.
fn wait_booted(node: &Node, vm: &str) {
    let deadline = Instant::now() + BOOT;
    loop {
        let v = node.json(&["vm", "boot-diagnostics", "boots", "-g", "rg", "-n", vm]);
        let last = v.as_array().and_then(|a| a.last()).cloned();
        if last
            .as_ref()
            .is_some_and(|b| b["verdict"]["outcome"] == "booted")
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{vm} not booted after {BOOT:?}: {last:#?}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// One HTTPS request to the node, trusting only its CA: (status, headers lower-cased, body).
fn https(node: &Node, path: &str, headers: &[(&str, &str)]) -> (u16, String, String) {
    let ca = node.state.join("tls/ca.pem");
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pemfile::certs(&mut std::io::BufReader::new(
        std::fs::File::open(&ca).unwrap(),
    )) {
        roots.add(c.unwrap()).unwrap();
    }
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let conn = rustls::ClientConnection::new(Arc::new(cfg), name).unwrap();
    let tcp = std::net::TcpStream::connect(("127.0.0.1", node.port)).unwrap();
    let mut s = rustls::StreamOwned::new(conn, tcp);
    let mut req = format!(
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nConnection: close\r\n",
        node.port
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    let mut buf = Vec::new();
    // The server may close without close_notify; what was read is the answer.
    let _ = s.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, head.to_lowercase(), body.to_string())
}

/// base64(sha256(SubjectPublicKeyInfo)) of the node's server certificate: Chromium accepts
/// exactly this key (`--ignore-certificate-errors-spki-list`), nothing else.
fn spki_pin(cert_pem: &Path) -> String {
    let der = rustls_pemfile::certs(&mut std::io::BufReader::new(
        std::fs::File::open(cert_pem).unwrap(),
    ))
    .next()
    .unwrap()
    .unwrap();
    // DER: (tag, header length, content length) of the element at the start of `b`.
    fn tlv(b: &[u8]) -> (u8, usize, usize) {
        let (tag, l) = (b[0], b[1] as usize);
        if l < 0x80 {
            return (tag, 2, l);
        }
        let n = l & 0x7f;
        let len = b[2..2 + n]
            .iter()
            .fold(0usize, |a, x| (a << 8) | *x as usize);
        (tag, 2 + n, len)
    }
    let (_, h, _) = tlv(&der); // Certificate
    let tbs = &der[h..];
    let (_, h, len) = tlv(tbs); // TBSCertificate
    let mut rest = &tbs[h..h + len];
    if rest[0] == 0xa0 {
        let (_, h, len) = tlv(rest); // [0] version
        rest = &rest[h + len..];
    }
    // serial, signature, issuer, validity, subject, then subjectPublicKeyInfo.
    for _ in 0..5 {
        let (_, h, len) = tlv(rest);
        rest = &rest[h + len..];
    }
    let (tag, h, len) = tlv(rest);
    assert_eq!(tag, 0x30, "SubjectPublicKeyInfo is a SEQUENCE");
    base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(&rest[..h + len]))
}

/// Headless Chromium on `url` with `extra` (`--dump-dom`, `--screenshot=...`); returns stdout.
fn chromium(node: &Node, url: &str, extra: &[&str]) -> String {
    let profile = tempfile::Builder::new()
        .prefix("vmnode-chromium-")
        .tempdir()
        .unwrap();
    let pin = spki_pin(&node.state.join("tls/server.pem"));
    let out = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-default-apps",
            "--disable-extensions",
            "--disable-breakpad",
            "--disable-domain-reliability",
            "--disable-client-side-phishing-detection",
            "--no-pings",
            "--metrics-recording-only",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-features=Translate,OptimizationHints,MediaRouter,AutofillServerCommunication",
            // Anything but loopback goes to a dead proxy (loopback bypasses proxies) and does
            // not resolve.
            "--proxy-server=http://127.0.0.1:9",
            "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
            "--hide-scrollbars",
            "--window-size=1280,1800",
            "--virtual-time-budget=6000",
        ])
        .arg(format!("--ignore-certificate-errors-spki-list={pin}"))
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(extra)
        .arg(url)
        .output()
        .expect("chromium (apt-get install chromium)");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "chromium failed ({}):\n{}\n{stdout}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// The PNG's size and how many distinct colours it has (a blank page has one or two).
fn png_colours(path: &Path) -> (u32, u32, usize) {
    let dec = png::Decoder::new(std::fs::File::open(path).unwrap());
    let mut reader = dec.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).unwrap();
    let px = info.color_type.samples();
    let colours: std::collections::HashSet<&[u8]> =
        buf[..info.buffer_size()].chunks(px).step_by(7).collect();
    (info.width, info.height, colours.len())
}

/// The artifact: under the workspace's `target/artifacts`, whatever CARGO_TARGET_DIR is.
fn artifact(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

#[test]
fn the_viewer_shows_a_booted_guest_in_chromium() {
    let node = Node::start();
    node.ok(&["group", "create", "-n", "rg"]);
    node.create_vm("rg", "good", &[]);
    wait_booted(&node, "good");
    let token = node.json(&["account", "get-access-token"])["accessToken"]
        .as_str()
        .unwrap()
        .to_string();

    // The URL the CLI prints carries the token once.
    let url = node.ok(&["viewer", "url", "-g", "rg", "-n", "good"]);
    let url = url.trim();
    let page = format!("https://127.0.0.1:{}/vmnode/v1/viewer/rg/good", node.port);
    assert_eq!(url, format!("{page}?token={token}"));

    // The auth design, on the wire: ?token= → a cookie and a redirect without it; the cookie
    // opens viewer pages and nothing else; a browser without it gets the 401 page.
    let html = [("accept", "text/html")];
    let (st, head, _) = https(
        &node,
        &format!("/vmnode/v1/viewer/rg/good?token={token}"),
        &html,
    );
    assert_eq!(st, 303, "{head}");
    assert!(
        head.contains("\r\nlocation: /vmnode/v1/viewer/rg/good\r\n"),
        "{head}"
    );
    let cookie_line = head
        .lines()
        .find(|l| l.starts_with("set-cookie:"))
        .unwrap_or_else(|| panic!("no cookie: {head}"));
    for part in ["httponly", "secure", "samesite=strict", "path=/vmnode/v1"] {
        assert!(cookie_line.contains(part), "{cookie_line}");
    }
    let cookie = format!("vmnode_viewer={token}");
    let with_cookie = [("accept", "text/html"), ("cookie", cookie.as_str())];
    let (st, head, body) = https(&node, "/vmnode/v1/viewer/rg/good", &with_cookie);
    assert_eq!(st, 200, "{head}");
    assert!(head.contains("content-security-policy:"), "{head}");
    assert!(
        body.contains("VMNODE-BOOT: ready"),
        "server-rendered tail: {body}"
    );
    let sub = node.json(&["account", "show"])["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (st, _, _) = https(
        &node,
        &format!("/subscriptions/{sub}/resourceGroups"),
        &with_cookie,
    );
    assert_eq!(st, 401, "the viewer's cookie does not open the API");
    let (st, _, body) = https(&node, "/vmnode/v1/viewer/rg/good", &html);
    assert_eq!(st, 401);
    assert!(body.contains("vmnode account get-access-token"), "{body}");
    let (st, _, body) = https(&node, "/vmnode/v1/viewer?token=0000", &html);
    assert_eq!(st, 401);
    assert!(body.contains("not this node"), "{body}");

    // The browser: the page loads, its JavaScript runs.
    let dom = chromium(&node, url, &["--dump-dom"]);
    let dump = artifact("viewer.dom.html");
    std::fs::write(&dump, &dom).unwrap();
    let ctx = || format!("(DOM in {})", dump.display());
    assert!(dom.contains("<h1>good</h1>"), "the VM's name {}", ctx());
    assert!(
        dom.contains("class=\"card verdict v-booted\""),
        "the verdict {}",
        ctx()
    );
    assert!(dom.contains("10.1.0.4"), "the DIP {}", ctx());
    // The latest screenshot, from its SAS link on the blob service, loaded.
    let shot = dom
        .split("<img")
        .skip(1)
        .find(|i| i.contains("class=\"shot\""))
        .unwrap_or_else(|| panic!("no screenshot img {}", ctx()));
    let shot = &shot[..shot.find('>').unwrap()];
    assert!(shot.contains("sig="), "a SAS link: {shot}");
    assert!(
        shot.contains("data-loaded=\"1\""),
        "the image loaded: {shot}"
    );
    // The serial tail, and the script polled it.
    assert!(
        dom.contains("VMNODE-BOOT: ready"),
        "the serial tail {}",
        ctx()
    );
    let tail = &dom[dom.find("id=\"tail\"").unwrap()..];
    let tail = &tail[..tail.find('>').unwrap()];
    assert!(
        tail.contains("data-polls="),
        "the script polled the tail: {tail}"
    );
    assert!(
        dom.contains("DHCP ledger") && dom.contains("ACK"),
        "the ledger {}",
        ctx()
    );

    // The list links to it.
    let list = chromium(
        &node,
        &format!(
            "https://127.0.0.1:{}/vmnode/v1/viewer?token={token}",
            node.port
        ),
        &["--dump-dom"],
    );
    assert!(
        list.contains("href=\"/vmnode/v1/viewer/rg/good\""),
        "{list}"
    );
    assert!(list.contains("running"), "{list}");

    // Without the token, the page is refused.
    let refused = chromium(&node, &page, &["--dump-dom"]);
    assert!(refused.contains("401 · a token is needed"), "{refused}");
    assert!(!refused.contains("<h1>good</h1>"), "{refused}");

    // A picture of the page, kept for CI.
    let png = artifact("viewer.png");
    let _ = std::fs::remove_file(&png);
    chromium(&node, url, &[&format!("--screenshot={}", png.display())]);
    let (w, h, colours) = png_colours(&png);
    println!("viewer screenshot: {} ({w}x{h})", png.display());
    assert_eq!((w, h), (1280, 1800));
    assert!(colours > 50, "a blank page? {colours} colours");
}
