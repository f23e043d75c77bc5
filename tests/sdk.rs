//! The official Azure SDKs for Python (azure-mgmt-resource, -network, -compute from PyPI) drive a
//! node unmodified, over HTTPS with the node's CA and bearer token, against a real guest.

mod common;

use std::process::Command;

use common::Node;

#[test]
fn azure_sdks_drive_the_node() {
    let node = Node::start();
    let python = common::python_with(&[
        "azure-mgmt-compute",
        "azure-mgmt-network",
        "azure-mgmt-resource",
    ]);
    let tok = node.json(&["account", "get-access-token"]);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/sdk/compute_network.py");
    let out = Command::new(python)
        .arg(script)
        .arg(format!("https://127.0.0.1:{}", node.port))
        .arg(tok["subscription"].as_str().unwrap())
        .arg(tok["accessToken"].as_str().unwrap())
        .arg(node.state.join("tls/ca.pem"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("sdk-ok"),
        "SDK run failed:\n{stdout}\n{stderr}"
    );
}

#[test]
fn storage_accounts_through_the_sdks() {
    let node = Node::start();
    node.ok(&["group", "create", "-n", "sa"]);
    let python = common::python_with(&["azure-mgmt-storage", "azure-storage-blob"]);
    let tok = node.json(&["account", "get-access-token"]);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/sdk/storage_accounts.py");
    let out = Command::new(python)
        .arg(script)
        .arg(format!("https://127.0.0.1:{}", node.port))
        .arg(tok["subscription"].as_str().unwrap())
        .arg(tok["accessToken"].as_str().unwrap())
        .arg(node.state.join("tls/ca.pem"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("storage-ok"),
        "storage SDK run failed:\n{stdout}\n{stderr}"
    );
}
