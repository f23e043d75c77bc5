//! Hostile XML bodies against a real daemon with a running guest (issue 18): a Put Block List
//! nested 35,000 deep, sent with a write SAS as anyone holding one could, once aborted the whole
//! node (the reader recursed per level). Now it is a 400 in the cloud's shape, and the daemon,
//! the guest's QEMU and its DHCP go on. The cloud's caps hold too: 50,000 blocks taken, 50,001
//! refused, a sixth signed identifier refused.
//!
//! Requests are written by hand over TCP (no SDK reshapes a body).

mod common;
#[path = "blob/harness.rs"]
mod harness;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, SystemTime};

use base64::Engine;
use common::guest_exec;
use harness::{Blob, Node};
use hmac::Mac;

const BOOT: Duration = Duration::from_secs(180);
const SV: &str = "2025-11-05";

#[derive(Debug)]
struct Resp {
    status: u16,
    code: String,
    head: String,
}

/// One request on a fresh connection; the answer's status, `x-ms-error-code` and head.
fn send(port: u16, method: &str, target: &str, headers: &[(&str, String)], body: &[u8]) -> Resp {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    let mut req = format!(
        "{method} {target} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\
         Content-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    let text = String::from_utf8_lossy(&out);
    let head = text.split("\r\n\r\n").next().unwrap_or("").to_string();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let code = head
        .lines()
        .find_map(|l| l.strip_prefix("x-ms-error-code: "))
        .unwrap_or("")
        .to_string();
    Resp { status, code, head }
}

/// What the daemon needs of the blob service here: the port, a write SAS for one blob and the
/// account key (Set Container ACL takes only the key).
struct Blobs {
    port: u16,
    acct: String,
    key: Vec<u8>,
    /// `/{account}/{container}/{blob}` and its SAS query.
    path: String,
    sas: String,
}

impl Blobs {
    fn new(node: &Node, container: &str, blob: &str) -> Blobs {
        node.ok(&["storage", "container", "create", "-n", container]);
        let uri = node.ok(&[
            "storage",
            "blob",
            "generate-sas",
            "-c",
            container,
            "-n",
            blob,
            "--permissions",
            "rw",
            "--full-uri",
        ]);
        let after_host = uri.trim().splitn(4, '/').nth(3).unwrap().to_string();
        let (path, sas) = after_host.split_once('?').unwrap();
        let account = node.account();
        Blobs {
            port: node.blob_port,
            acct: node.account_name(),
            key: base64::engine::general_purpose::STANDARD
                .decode(account["key"].as_str().unwrap())
                .unwrap(),
            path: format!("/{path}"),
            sas: sas.to_string(),
        }
    }

    /// `PUT {blob}?{query}&{sas}`.
    fn put(&self, query: &str, body: &[u8]) -> Resp {
        let target = format!("{}?{query}&{}", self.path, self.sas);
        send(
            self.port,
            "PUT",
            &target,
            &[("x-ms-version", SV.into())],
            body,
        )
    }

    fn head(&self) -> Resp {
        let target = format!("{}?{}", self.path, self.sas);
        send(
            self.port,
            "HEAD",
            &target,
            &[("x-ms-version", SV.into())],
            b"",
        )
    }

    /// Set Container ACL with the account key (SharedKey, path-style as the SDKs sign it).
    fn set_acl(&self, container: &str, body: &[u8]) -> Resp {
        let date = httpdate::fmt_http_date(SystemTime::now());
        let sts = format!(
            "PUT\n\n\n{}\n\n\n\n\n\n\n\n\nx-ms-date:{date}\nx-ms-version:{SV}\n\
             /{a}/{a}/{container}\ncomp:acl\nrestype:container",
            body.len(),
            a = self.acct
        );
        let mut m = hmac::Hmac::<sha2::Sha256>::new_from_slice(&self.key).unwrap();
        m.update(sts.as_bytes());
        let sig = base64::engine::general_purpose::STANDARD.encode(m.finalize().into_bytes());
        let target = format!("/{}/{container}?restype=container&comp=acl", self.acct);
        let headers = [
            ("x-ms-date", date),
            ("x-ms-version", SV.into()),
            ("Authorization", format!("SharedKey {}:{sig}", self.acct)),
        ];
        send(self.port, "PUT", &target, &headers, body)
    }
}

fn block_list(n: usize, id: &str) -> Vec<u8> {
    let mut s = String::from("<?xml version=\"1.0\" encoding=\"utf-8\"?><BlockList>");
    s.push_str(&format!("<Latest>{id}</Latest>").repeat(n));
    s.push_str("</BlockList>");
    s.into_bytes()
}

fn acl(n: usize) -> Vec<u8> {
    let one = |i: usize| {
        format!(
            "<SignedIdentifier><Id>p{i}</Id><AccessPolicy><Expiry>2099-01-01T00:00:00Z</Expiry>\
             <Permission>r</Permission></AccessPolicy></SignedIdentifier>"
        )
    };
    let ids: String = (0..n).map(one).collect();
    format!(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?><SignedIdentifiers>{ids}</SignedIdentifiers>"
    )
    .into_bytes()
}

/// The NIC's DHCP ledger entries of one kind.
fn ledger_entries(node: &Node, nic: &str, kind: &str) -> Vec<serde_json::Value> {
    let ledger = node.json(&["network", "dhcp", "ledger"]);
    ledger
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["nic"] == nic)
        .flat_map(|n| n["entries"].as_array().cloned().unwrap_or_default())
        .filter(|e| e["kind"]["type"] == kind)
        .collect()
}

#[test]
fn a_35000_deep_block_list_is_a_400_and_the_node_and_its_guest_go_on() {
    let node = Node::start();
    node.ok(&["group", "create", "-n", "rg"]);
    let vm = node.create_vm("rg", "vm1", &[]);
    let vm_id = vm["properties"]["vmId"].as_str().unwrap().to_string();
    node.wait_for_log("rg", "vm1", "VMNODE-BOOT: ready", BOOT);
    let pid = node.qemu_pid(&vm_id);
    let blobs = Blobs::new(&node, "hostile", "b");

    // About 35,000 levels (~420 KB): what aborted the daemon.
    let depth = 35_000;
    let mut deep = "<BlockList>".repeat(depth);
    deep.push_str(&"</BlockList>".repeat(depth));
    let r = blobs.put("comp=blocklist", deep.as_bytes());
    assert_eq!(
        (r.status, r.code.as_str()),
        (400, "InvalidXmlDocument"),
        "{r:?}"
    );
    assert!(r.head.contains("x-ms-request-id"), "{r:?}");

    // The daemon still answers, on the blob service and the management API.
    let r = blobs.put("comp=block&blockid=QUFB", b"AAA");
    assert_eq!(r.status, 201, "{r:?}");
    let shown = node.json(&["vm", "show", "-g", "rg", "-n", "vm1"]);
    assert_eq!(shown["properties"]["vmId"], vm_id.as_str());
    // The guest's QEMU is the same process, alive.
    assert_eq!(node.qemu_pid(&vm_id), pid);
    assert!(std::path::Path::new(&format!("/proc/{pid}")).exists());

    // Its DHCP still answers a renewal: the guest's udhcpc gets an ACK (its script logs the
    // renewal) and the node's ledger has a new ACK for its NIC.
    let acks = ledger_entries(&node, "vm1VMNic", "ack");
    let renewals = node.boot_log("rg", "vm1").matches("dhcp-renew").count();
    let (code, out) = guest_exec(&node, &vm_id, &["/bin/sh", "-c", "killall -USR1 udhcpc"]);
    assert_eq!(code, 0, "{out}");
    node.wait_for_count("rg", "vm1", "dhcp-renew", renewals + 1, BOOT);
    let after = ledger_entries(&node, "vm1VMNic", "ack");
    assert!(
        after.iter().any(|a| !acks.contains(a)),
        "no new ACK in the ledger: before {acks:?}, after {after:?}"
    );
}

#[test]
fn the_clouds_caps_on_blocks_and_signed_identifiers_hold() {
    let node = Node::start_bare();
    let blobs = Blobs::new(&node, "caps", "b");
    let r = blobs.put("comp=block&blockid=QUFB", b"AAA");
    assert_eq!(r.status, 201, "{r:?}");

    // 50,001 blocks: refused, nothing committed.
    let r = blobs.put("comp=blocklist", &block_list(50_001, "QUFB"));
    assert_eq!(
        (r.status, r.code.as_str()),
        (400, "BlockListTooLong"),
        "{r:?}"
    );
    assert_eq!(blobs.head().status, 404);
    // A bad block id in a well-formed list: the cloud's InvalidXmlNodeValue.
    let r = blobs.put(
        "comp=blocklist",
        b"<BlockList><Latest>not base64!</Latest></BlockList>",
    );
    assert_eq!(
        (r.status, r.code.as_str()),
        (400, "InvalidXmlNodeValue"),
        "{r:?}"
    );
    // 50,000 of the same staged block: taken, the blob is 50,000 copies of it.
    let r = blobs.put("comp=blocklist", &block_list(50_000, "QUFB"));
    assert_eq!(r.status, 201, "{r:?}");
    let r = blobs.head();
    assert_eq!(r.status, 200, "{r:?}");
    assert!(
        r.head
            .to_ascii_lowercase()
            .contains("content-length: 150000"),
        "{r:?}"
    );

    // Five signed identifiers are kept; a sixth makes the body invalid, as in the cloud.
    let r = blobs.set_acl("caps", &acl(5));
    assert_eq!(r.status, 200, "{r:?}");
    let r = blobs.set_acl("caps", &acl(6));
    assert_eq!(
        (r.status, r.code.as_str()),
        (400, "InvalidXmlDocument"),
        "{r:?}"
    );
}
