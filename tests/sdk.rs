//! The official Azure SDKs for Python (azure-mgmt-resource, -network, -compute, -storage and
//! azure-storage-blob from PyPI) drive a node unmodified, over HTTPS with the node's CA and
//! bearer token, against real guests.

mod common;

use common::Node;

#[test]
fn azure_sdks_drive_the_node() {
    let node = Node::start();
    let packages = [
        "azure-mgmt-compute",
        "azure-mgmt-network",
        "azure-mgmt-resource",
        "azure-mgmt-storage",
    ];
    common::run_sdk_script(&node, &packages, "compute_network.py", "sdk-ok");
}

#[test]
fn storage_accounts_through_the_sdks() {
    let node = Node::start();
    node.ok(&["group", "create", "-n", "sa"]);
    let packages = ["azure-mgmt-storage", "azure-storage-blob"];
    common::run_sdk_script(&node, &packages, "storage_accounts.py", "storage-ok");
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
    common::run_sdk_script(&node, &packages, "deployments.py", "deploy-ok");
}
