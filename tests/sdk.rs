//! The official Azure SDKs for Python (azure-mgmt-resource, -network, -compute, -storage and
//! azure-storage-blob from PyPI) drive a node unmodified, over HTTPS with the node's CA and
//! bearer token, against real guests.

mod common;

use std::process::Command;

use common::Node;

/// Runs `tests/sdk/{script}` as `script BASE_URL SUBSCRIPTION TOKEN CA` with a Python that has
/// `packages`, and asserts it succeeded and printed `ok_marker`.
fn run_sdk_script(node: &Node, packages: &[&str], script: &str, ok_marker: &str) {
    let python = common::python_with(packages);
    let tok = node.json(&["account", "get-access-token"]);
    let path = format!("{}/tests/sdk/{script}", env!("CARGO_MANIFEST_DIR"));
    let out = Command::new(python)
        .arg(path)
        .arg(format!("https://127.0.0.1:{}", node.port))
        .arg(tok["subscription"].as_str().unwrap())
        .arg(tok["accessToken"].as_str().unwrap())
        .arg(node.state.join("tls/ca.pem"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains(ok_marker),
        "{script} failed:\n{stdout}\n{stderr}"
    );
}

#[test]
fn azure_sdks_drive_the_node() {
    let node = Node::start();
    let packages = [
        "azure-mgmt-compute",
        "azure-mgmt-network",
        "azure-mgmt-resource",
        "azure-mgmt-storage",
    ];
    run_sdk_script(&node, &packages, "compute_network.py", "sdk-ok");
}

#[test]
fn storage_accounts_through_the_sdks() {
    let node = Node::start();
    node.ok(&["group", "create", "-n", "sa"]);
    let packages = ["azure-mgmt-storage", "azure-storage-blob"];
    run_sdk_script(&node, &packages, "storage_accounts.py", "storage-ok");
}

#[test]
fn template_deployments_through_the_sdk() {
    let node = Node::start();
    let packages = [
        "azure-mgmt-compute",
        "azure-mgmt-network",
        "azure-mgmt-resource",
        "azure-mgmt-resource-deployments",
    ];
    run_sdk_script(&node, &packages, "deployments.py", "deploy-ok");
}
