//! `vmnode storage ...` end to end: account and connection string, containers, a multi-block
//! upload with progress, download, listing, a SAS link fetched by a plain HTTP client,
//! anonymous access after set-permission, leases, page uploads that keep holes, and the
//! disk/lease consistency check.

mod common;
#[path = "blob/harness.rs"]
mod harness;

use std::io::{Read, Write};

use harness::{Blob, Node};

/// A plain HTTP/1.1 GET (no SDK, no key): (status, body).
fn http_get(url: &str) -> (u16, Vec<u8>) {
    let rest = url.strip_prefix("http://").unwrap();
    let (host, path) = rest.split_once('/').unwrap();
    let mut s = std::net::TcpStream::connect(host).unwrap();
    write!(
        s,
        "GET /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).unwrap();
    let split = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&buf[..split]).to_string();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, buf[split + 4..].to_vec())
}

#[test]
fn storage_cli_round_trip() {
    let node = Node::start_bare();
    let name = node.account_name();
    let accounts = node.ok(&["storage", "account", "list"]);
    assert!(accounts.contains(&name), "{accounts}");
    let cs = node.connection_string();
    assert!(
        cs.starts_with(&format!(
            "DefaultEndpointsProtocol=http;AccountName={name};AccountKey="
        )) && cs.ends_with(&format!(
            ";BlobEndpoint=http://127.0.0.1:{}/{name};",
            node.blob_port
        )),
        "{cs}"
    );
    // The key file the CLI reads is private.
    let key_file = node.state.join("storage").join(format!("{name}.json"));
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&key_file).unwrap().permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);

    node.ok(&["storage", "container", "create", "-n", "scripts"]);
    let dir = tempfile::tempdir().unwrap();
    // 9 MiB + a bit: three blocks, with progress on stderr.
    let big: Vec<u8> = (0..(9 << 20) + 77).map(|i| (i * 31 % 251) as u8).collect();
    let src = dir.path().join("big.bin");
    std::fs::write(&src, &big).unwrap();
    let out = node.cli(&[
        "storage",
        "blob",
        "upload",
        "-c",
        "scripts",
        "-f",
        src.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("MiB"),
        "no progress shown"
    );
    // Uploading again without --overwrite is refused.
    let again = node.cli(&[
        "storage",
        "blob",
        "upload",
        "-c",
        "scripts",
        "-f",
        src.to_str().unwrap(),
    ]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("BlobAlreadyExists"));
    let dst = dir.path().join("back.bin");
    node.ok(&[
        "storage",
        "blob",
        "download",
        "-c",
        "scripts",
        "-n",
        "big.bin",
        "-f",
        dst.to_str().unwrap(),
    ]);
    assert!(std::fs::read(&dst).unwrap() == big, "download differs");

    // The seed's flow: upload a script, pass a SAS link.
    let script = dir.path().join("hello.sh");
    std::fs::write(&script, b"#!/bin/sh\necho hello\n").unwrap();
    node.ok(&[
        "storage",
        "blob",
        "upload",
        "-c",
        "scripts",
        "-f",
        script.to_str().unwrap(),
    ]);
    let sas = node.ok(&[
        "storage",
        "blob",
        "generate-sas",
        "-c",
        "scripts",
        "-n",
        "hello.sh",
        "--permissions",
        "r",
        "--full-uri",
    ]);
    let (status, body) = http_get(sas.trim());
    assert_eq!(
        (status, body.as_slice()),
        (200, &b"#!/bin/sh\necho hello\n"[..])
    );
    let url = node.ok(&["storage", "blob", "url", "-c", "scripts", "-n", "hello.sh"]);
    assert_eq!(
        http_get(url.trim()).0,
        404,
        "private container must not be readable"
    );
    node.ok(&[
        "storage",
        "container",
        "set-permission",
        "-n",
        "scripts",
        "--public-access",
        "blob",
    ]);
    assert_eq!(http_get(url.trim()).0, 200);
    let listed: serde_json::Value =
        serde_json::from_str(&node.ok(&["storage", "blob", "list", "-c", "scripts", "-o", "json"]))
            .unwrap();
    let names: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["big.bin", "hello.sh"]);
    assert_eq!(listed[0]["size"], big.len());

    // Leases: a leased blob refuses deletion without its id.
    let lease: serde_json::Value = serde_json::from_str(&node.ok(&[
        "storage", "blob", "lease", "acquire", "-c", "scripts", "-n", "hello.sh", "-o", "json",
    ]))
    .unwrap();
    let id = lease["leaseId"].as_str().unwrap().to_string();
    let err = node.fails(&[
        "storage", "blob", "delete", "-c", "scripts", "-n", "hello.sh",
    ]);
    assert!(err.contains("LeaseIdMissing"), "{err}");
    node.ok(&[
        "storage",
        "blob",
        "delete",
        "-c",
        "scripts",
        "-n",
        "hello.sh",
        "--lease-id",
        &id,
    ]);

    // A sparse disk image uploads as a page blob, holes and all.
    let img = dir.path().join("disk.img");
    let mut f = std::fs::File::create(&img).unwrap();
    f.set_len(32 << 20).unwrap();
    f.write_all(b"bootsector").unwrap();
    drop(f);
    node.ok(&["storage", "container", "create", "-n", "images"]);
    node.ok(&[
        "storage",
        "blob",
        "upload",
        "-c",
        "images",
        "-f",
        img.to_str().unwrap(),
        "--type",
        "page",
    ]);
    let listed: serde_json::Value =
        serde_json::from_str(&node.ok(&["storage", "blob", "list", "-c", "images", "-o", "json"]))
            .unwrap();
    assert_eq!(listed[0]["blobType"], "PageBlob");
    let stored = node
        .state
        .join("blobs")
        .join(&name)
        .join("images")
        .join("disk.img");
    let blocks = std::os::unix::fs::MetadataExt::blocks(&std::fs::metadata(&stored).unwrap());
    assert!(
        blocks * 512 < 8 << 20,
        "the page blob is not sparse ({} bytes)",
        blocks * 512
    );

    // No finding at all (not a table that happens to hold the word "consistent").
    assert_eq!(node.json(&["storage", "check"]), serde_json::json!([]));
    node.ok(&["storage", "container", "delete", "-n", "images"]);
    let containers = node.ok(&["storage", "container", "list"]);
    assert!(
        containers.contains("scripts") && !containers.contains("images"),
        "{containers}"
    );
}
