//! The blob service end to end with the real azure-storage-blob SDK from PyPI: each test starts
//! its own daemon and runs one section of tests/blob/sdk_test.py against it.

mod common;
#[path = "blob/harness.rs"]
mod harness;

use harness::{Blob, Node};

#[test]
fn sdk_containers() {
    Node::start_bare().sdk("containers");
}

#[test]
fn sdk_page_blobs() {
    Node::start_bare().sdk("pages");
}

#[test]
fn sdk_snapshots_and_conditions() {
    Node::start_bare().sdk("snapshots");
}

#[test]
fn sdk_leases() {
    Node::start_bare().sdk("leases");
}

#[test]
fn sdk_leases_survive_a_daemon_restart() {
    let mut node = Node::start_bare();
    node.sdk("lease-persist-1");
    node.kill_daemon();
    node.spawn_daemon();
    node.sdk("lease-persist-2");
}

#[test]
fn sdk_sas() {
    Node::start_bare().sdk("sas");
}

#[test]
fn sdk_anonymous_access() {
    Node::start_bare().sdk("anonymous");
}

#[test]
fn sdk_block_blobs() {
    Node::start_bare().sdk("blocks");
}

#[test]
fn sdk_metadata_names_keep_their_case() {
    Node::start_bare().sdk("metadata-case");
}

#[test]
fn sdk_key2_signs_requests() {
    let node = Node::start_bare();
    let conn2 = node
        .ok(&[
            "storage",
            "account",
            "show-connection-string",
            "--key",
            "secondary",
        ])
        .trim()
        .to_string();
    assert_ne!(conn2, node.connection_string());
    node.sdk_with("key2", &[("VMNODE_CONN2", conn2.as_str())]);
}
