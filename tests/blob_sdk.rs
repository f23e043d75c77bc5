//! The blob service end to end with the real azure-storage-blob SDK from PyPI: each test starts
//! its own daemon and runs one section of tests/blob/sdk_test.py against it.

#[path = "blob/harness.rs"]
mod harness;

use harness::BlobNode;

#[test]
fn sdk_containers() {
    BlobNode::start().sdk("containers");
}

#[test]
fn sdk_page_blobs() {
    BlobNode::start().sdk("pages");
}

#[test]
fn sdk_snapshots_and_conditions() {
    BlobNode::start().sdk("snapshots");
}

#[test]
fn sdk_leases() {
    BlobNode::start().sdk("leases");
}

#[test]
fn sdk_leases_survive_a_daemon_restart() {
    let mut node = BlobNode::start();
    node.sdk("lease-persist-1");
    node.kill();
    node.spawn();
    node.sdk("lease-persist-2");
}

#[test]
fn sdk_sas() {
    BlobNode::start().sdk("sas");
}

#[test]
fn sdk_anonymous_access() {
    BlobNode::start().sdk("anonymous");
}

#[test]
fn sdk_block_blobs() {
    BlobNode::start().sdk("blocks");
}

#[test]
fn sdk_metadata_names_keep_their_case() {
    BlobNode::start().sdk("metadata-case");
}

#[test]
fn sdk_key2_signs_requests() {
    let node = BlobNode::start();
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
