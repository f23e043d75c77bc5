//! The DHCP side of the Azure guest protocol (issue 20, item 2) in a real guest: the node's DHCP
//! sends option 245 (the WireServer) and option 121 (RFC 3442 routes) unrequested, and the tiny
//! image's udhcpc script installs the routes, so the guest routes 168.63.129.16 and
//! 169.254.169.254 through its subnet's gateway, as waagent and cloud-init expect of Azure.
//! The guest is read through its own agent (`guest-exec`).

mod common;

use std::time::Duration;

use common::{guest_exec, Node};

const BOOT: Duration = Duration::from_secs(120);

/// The guest's routing table (`ip -4 route show`).
fn routes(node: &Node, vm_id: &str) -> String {
    let (code, out) = guest_exec(node, vm_id, &["/bin/ip", "-4", "route", "show"]);
    assert_eq!(code, 0, "{out}");
    out
}

/// The platform and metadata /32s and the default route, each via `gw` on eth0.
fn assert_routes(table: &str, gw: &str) {
    for dest in ["default", "168.63.129.16", "169.254.169.254"] {
        let want = format!("{dest} via {gw} dev eth0");
        assert!(
            table.lines().any(|l| l.trim_start().starts_with(&want)),
            "no `{want}` in the guest's routes:\n{table}"
        );
    }
}

#[test]
fn the_guest_routes_the_platform_and_metadata_addresses_through_its_gateway() {
    let node = Node::start();
    node.ok(&["group", "create", "-n", "rg"]);
    // A subnet that is neither the default nor a /24, so the gateway is the subnet's own.
    node.create_vnet("rg", "az", "10.7.0.0/16", "10.7.4.0/22");
    let vm = node.create_vm("rg", "vm1", &["--vnet-name", "az", "--subnet", "s1"]);
    assert_eq!(vm["privateIps"], "10.7.4.4");
    let id = vm["properties"]["vmId"].as_str().unwrap().to_string();
    let log = node.wait_for_log("rg", "vm1", "VMNODE-BOOT: ready", BOOT);

    // What the client was given, as its script reports it on the console.
    let gw = "10.7.4.1";
    let given = format!(
        "routes=0.0.0.0/0>{gw},168.63.129.16/32>{gw},169.254.169.254/32>{gw} wireserver=a83f8110"
    );
    assert!(
        log.contains(&given),
        "no `{given}` in the serial log:\n{log}"
    );
    assert!(log.contains(&format!("router={gw} ")), "{log}");

    // What the guest's kernel routes by.
    assert_routes(&routes(&node, &id), gw);
    // waagent's first check: /proc/net/route holds destination 168.63.129.16, little-endian.
    let (code, table) = guest_exec(&node, &id, &["/bin/cat", "/proc/net/route"]);
    assert_eq!(code, 0, "{table}");
    assert!(
        table.lines().any(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.get(1) == Some(&"10813FA8") && f.get(2) == Some(&"0104070A")
        }),
        "no 168.63.129.16 via 10.7.4.1 in /proc/net/route:\n{table}"
    );

    // A renewal (the address flushed and set again) keeps them.
    let (code, out) = guest_exec(&node, &id, &["/bin/killall", "-USR1", "udhcpc"]);
    assert_eq!(code, 0, "{out}");
    let log = node.wait_for_count("rg", "vm1", "dhcp-renew ip=10.7.4.4", 1, BOOT);
    let renew = log.lines().find(|l| l.contains("dhcp-renew")).unwrap();
    assert!(renew.contains(&given), "{renew}");
    assert_routes(&routes(&node, &id), gw);

    // The node's ledger shows the exchange ending in ACKs of the NIC's address.
    let ledger = node.json(&["network", "dhcp", "ledger"]);
    let nic = ledger
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["nic"] == "vm1VMNic")
        .unwrap_or_else(|| panic!("no vm1VMNic in {ledger}"));
    let acks = nic["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"]["type"] == "ack" && e["ip"] == "10.7.4.4")
        .count();
    assert!(acks >= 2, "a bound and a renewal ACK: {nic}");
}
