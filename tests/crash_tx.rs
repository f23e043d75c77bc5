//! Multi-step writes are transactions: a daemon killed (SIGKILL, at a crash point) inside a NIC
//! delete or inside a VM create leaves no address held for a NIC that is not there and no NIC
//! whose address is free, so the address is never handed out twice.

mod common;

use std::time::Duration;

use common::consistency::consistent;
use common::Node;

const LIMIT: Duration = Duration::from_secs(60);

/// Kills the daemon at `point` while it runs `args`, then starts it again.
fn die_at(node: &mut Node, point: &str, args: &[&str]) {
    node.crash_at_point(point, args, LIMIT);
    node.spawn_daemon();
}

fn address_findings(node: &Node) -> serde_json::Value {
    node.json(&["network", "dhcp", "check"])
}

fn nic_ip(node: &Node, name: &str) -> String {
    let n = node.json(&["network", "nic", "show", "-g", "rg", "-n", name]);
    n["properties"]["ipConfigurations"][0]["properties"]["privateIPAddress"]
        .as_str()
        .unwrap_or_else(|| panic!("{n}"))
        .to_string()
}

const NIC: &[&str] = &[
    "network",
    "nic",
    "create",
    "-g",
    "rg",
    "--vnet-name",
    "net1",
    "--subnet",
    "s1",
];

/// Killed after the NIC's address was freed and before the NIC was deleted: the transaction
/// never committed, so after the restart the NIC is whole with its address still reserved, and
/// a new NIC gets another address.
#[test]
fn a_nic_delete_cut_halfway_leaves_the_nic_whole() {
    let mut node = Node::start_bare();
    node.ok(&["group", "create", "-n", "rg"]);
    node.ok(&[
        "network",
        "vnet",
        "create",
        "-g",
        "rg",
        "-n",
        "net1",
        "--address-prefixes",
        "10.2.0.0/16",
        "--subnet-name",
        "s1",
        "--subnet-prefixes",
        "10.2.0.0/24",
    ]);
    node.ok(&[NIC, &["-n", "n1"]].concat());
    let ip = nic_ip(&node, "n1");
    assert_eq!(address_findings(&node), serde_json::json!([]));

    die_at(
        &mut node,
        "nic.addr_freed",
        &["network", "nic", "delete", "-g", "rg", "-n", "n1"],
    );
    assert_eq!(nic_ip(&node, "n1"), ip, "the NIC is there with its address");
    assert_eq!(address_findings(&node), serde_json::json!([]));
    node.ok(&[NIC, &["-n", "n2"]].concat());
    assert_ne!(
        nic_ip(&node, "n2"),
        ip,
        "the address was not handed out twice"
    );

    node.ok(&["network", "nic", "delete", "-g", "rg", "-n", "n1"]);
    assert_eq!(address_findings(&node), serde_json::json!([]));
    node.ok(&[NIC, &["-n", "n3"]].concat());
    assert_eq!(
        nic_ip(&node, "n3"),
        ip,
        "a finished delete frees the address"
    );
}

/// Killed inside the create's transaction (address reserved, VM stored, NIC not yet): none of
/// it is on disk after the restart, and the same create then gets the same, lowest address.
#[test]
fn a_create_cut_inside_its_transaction_leaves_nothing() {
    let mut node = Node::start();
    node.ok(&["group", "create", "-n", "rg"]);
    let create = [
        "vm",
        "create",
        "-g",
        "rg",
        "-n",
        "c1",
        "--image",
        "vmnode:tiny:1:latest",
        "--size",
        "Standard_B1s",
        "--no-wait",
    ];
    die_at(&mut node, "create.addr_allocated", &create);
    assert!(consistent(&node).is_empty(), "no VM after the cut create");
    assert_eq!(address_findings(&node), serde_json::json!([]));
    let nics = node.json(&["network", "nic", "list", "-g", "rg"]);
    assert_eq!(nics, serde_json::json!([]), "no NIC left: {nics}");

    node.ok(&create);
    let vm = node.json(&["vm", "show", "-g", "rg", "-n", "c1"]);
    let nic = vm["properties"]["networkProfile"]["networkInterfaces"][0]["id"].clone();
    assert!(nic.is_string(), "{vm}");
    assert_eq!(
        nic_ip(&node, "c1VMNic"),
        "10.1.0.4",
        "the lowest address, never leaked"
    );
    assert_eq!(address_findings(&node), serde_json::json!([]));
    node.ok(&["vm", "delete", "-g", "rg", "-n", "c1", "--yes"]);
    assert!(consistent(&node).is_empty());
}
