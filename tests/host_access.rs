//! The host reaches guests on the default vnet through a veth pair whose host end carries
//! 10.1.0.2/24. The test puts that end in a namespace of its own (never the real host's).

mod common;

use std::process::Command;
use std::time::Duration;

use common::{Netns, Node};

#[test]
fn the_host_end_of_the_veth_reaches_a_guest() {
    let outer = Netns::add("vmho");
    let node = Node::start_with_host_netns(&outer.0);
    node.ok(&["group", "create", "-n", "rg"]);
    let vm = node.create_vm("rg", "reach", &[]);
    assert_eq!(vm["privateIps"], "10.1.0.4");
    node.wait_for_log(
        "rg",
        "reach",
        "VMNODE-BOOT: ready",
        Duration::from_secs(120),
    );
    let addrs = Command::new("ip")
        .args(["-n", &outer.0, "-o", "addr"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&addrs.stdout).contains("10.1.0.2/24"));
    let ping = Command::new("ip")
        .args([
            "netns", "exec", &outer.0, "busybox", "ping", "-c", "2", "-W", "3", "10.1.0.4",
        ])
        .output()
        .unwrap();
    assert!(
        ping.status.success(),
        "the host side cannot reach the guest: {}",
        String::from_utf8_lossy(&ping.stdout)
    );
    drop(node);
}
