//! IMDS from inside a real guest: the tiny image's busybox `wget` asks 169.254.169.254 (reached
//! through the guest's default route, the vnet's bridge) for `/metadata/instance`, and the answer
//! names the VM the API shows — its vmId, name and DIP; without `Metadata: true` it is refused;
//! a leaf with `format=text` is the bare value.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{exec_when_ready, wait_in_guest, Netns, Node};
use serde_json::Value;

const BOOT: Duration = Duration::from_secs(120);
const URL: &str = "http://169.254.169.254/metadata/instance";

/// `wget` in the guest (once its agent answers): (exit code, what it printed).
fn wget(node: &Node, vm_id: &str, header: bool, target: &str) -> (i64, String) {
    let mut argv = vec!["/bin/wget", "-q", "-O", "-"];
    if header {
        argv.extend(["--header", "Metadata: true"]);
    }
    argv.push(target);
    exec_when_ready(node, vm_id, &argv, BOOT)
}

#[test]
fn a_guest_reads_its_own_instance_document() {
    let node = Node::start();
    node.ok(&["group", "create", "-n", "rg1"]);
    let vm = node.create_vm("rg1", "imds-1", &["--computer-name", "imds-guest"]);
    let vm_id = vm["properties"]["vmId"].as_str().unwrap().to_string();
    node.wait_for_log("rg1", "imds-1", "VMNODE-BOOT: network ", BOOT);
    let show = node.json(&["vm", "show", "-g", "rg1", "-n", "imds-1"]);

    let (code, out) = wget(
        &node,
        &vm_id,
        true,
        &format!("{URL}?api-version=2021-02-01"),
    );
    assert_eq!(code, 0, "{out}\n{}", node.daemon_log());
    let doc: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(doc["compute"]["vmId"], show["properties"]["vmId"], "{doc}");
    assert_eq!(doc["compute"]["name"], "imds-1");
    assert_eq!(doc["compute"]["resourceGroupName"], "rg1");
    assert_eq!(doc["compute"]["osProfile"]["computerName"], "imds-guest");
    let nic = &doc["network"]["interface"][0];
    assert_eq!(
        nic["ipv4"]["ipAddress"][0]["privateIpAddress"], show["privateIps"],
        "{doc}"
    );
    assert_eq!(
        nic["macAddress"],
        show["macAddresses"].as_str().unwrap().replace('-', "")
    );
    assert_eq!(nic["ipv4"]["subnet"][0]["prefix"], "24");

    // No header: the cloud's 400, which busybox wget reports as a failure.
    let (code, out) = wget(
        &node,
        &vm_id,
        false,
        &format!("{URL}?api-version=2021-02-01"),
    );
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("400"), "{out}");

    // A leaf, as text.
    let (code, out) = wget(
        &node,
        &vm_id,
        true,
        &format!("{URL}/compute/name?api-version=2021-02-01&format=text"),
    );
    assert_eq!((code, out.as_str()), (0, "imds-1"));

    // A host network restart takes the bridge away: the watch rebuilds it, IMDS's listener too.
    let del = Command::new("ip")
        .args(["-n", &node.netns, "link", "del", "vnbr0"])
        .status()
        .unwrap();
    assert!(del.success());
    let again = format!(
        "timeout 5 wget -q -O - --header 'Metadata: true' \
         '{URL}/compute/vmId?api-version=2021-02-01&format=text'"
    );
    wait_in_guest(&node, &vm_id, &again, |out| out == vm_id, BOOT);
}

/// Asks IMDS from the namespace `ns` (Python's urllib: the host's busybox wget crashes under
/// `ip netns exec`): (status, body).
fn ask_from(ns: &str, target: &str) -> (u16, String) {
    const ASK: &str = "import sys, urllib.request, urllib.error
r = urllib.request.Request('http://169.254.169.254' + sys.argv[1], headers={'Metadata': 'true'})
try:
    with urllib.request.urlopen(r, timeout=10) as a: print(a.status); print(a.read().decode())
except urllib.error.HTTPError as e: print(e.code); print(e.read().decode())";
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "/usr/bin/python3", "-c", ASK, target])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (status, body) = text.split_once('\n').unwrap_or_else(|| {
        panic!("{text}{}", String::from_utf8_lossy(&out.stderr));
    });
    (status.parse().unwrap(), body.trim_end().to_string())
}

/// The host's end of the default vnet's veth (10.1.0.2, in a namespace of the test's own) is on
/// the bridge but is no VM's: IMDS answers it only what needs no VM, and refuses the document.
#[test]
fn a_caller_no_vm_holds_gets_no_document() {
    let outer = Netns::add("vmim");
    let node = Node::start_with_host_netns(&outer.0);
    let route = Command::new("ip")
        .args([
            "-n",
            &outer.0,
            "route",
            "add",
            "169.254.169.254/32",
            "via",
            "10.1.0.1",
        ])
        .status()
        .unwrap();
    assert!(route.success());
    let (status, body) = ask_from(&outer.0, "/metadata/versions");
    assert_eq!(status, 200, "{body}\n{}", node.daemon_log());
    assert!(body.contains("2021-02-01"), "{body}");
    let (status, body) = ask_from(&outer.0, "/metadata/instance?api-version=2021-02-01");
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("No virtual machine"), "{body}");
    drop(node);
}

/// Two vnets with the same address space: each has its own IMDS listener, so the two guests at
/// 10.1.0.4 are told apart by the bridge their request came in on, and each reads only its own
/// name. A guest that sends from an address it does not hold is dropped by the tap's filter.
#[test]
fn guests_at_one_address_on_two_vnets_each_read_their_own() {
    let node = Node::start();
    node.ok(&["group", "create", "-n", "rg"]);
    node.create_vnet("rg", "twin", "10.1.0.0/16", "10.1.0.0/24");
    let left = node.create_vm("rg", "left", &[]);
    let right = node.create_vm("rg", "right", &["--vnet-name", "twin", "--subnet", "s1"]);
    assert_eq!(left["privateIps"], right["privateIps"]);
    let name = format!("{URL}/compute/name?api-version=2021-02-01&format=text");
    for (vm, want) in [(&left, "left"), (&right, "right")] {
        let id = vm["properties"]["vmId"].as_str().unwrap();
        node.wait_for_log("rg", want, "VMNODE-BOOT: network ", BOOT);
        assert_eq!(wget(&node, id, true, &name), (0, want.to_string()));
    }
    // The left guest takes an address no NIC holds as its source for IMDS (replacing the route DHCP
    // option 121 installed): nothing comes back
    // (the tap's filter drops it, and counts it).
    let id = left["properties"]["vmId"].as_str().unwrap();
    let spoof = format!(
        "ip addr add 10.1.0.99/24 dev eth0 && ip route replace 169.254.169.254/32 via 10.1.0.1 src 10.1.0.99 \
         && timeout 5 wget -q -O - --header 'Metadata: true' '{name}'; echo \"rc=$?\""
    );
    let (_, out) = exec_when_ready(&node, id, &["/bin/sh", "-c", &spoof], BOOT);
    // Cut by `timeout` (busybox wget's own -T crashes in 1.35): SIGTERM, 128 + 15.
    assert!(out.contains("rc=143"), "{out}");
    assert!(!out.contains("left"), "{out}");
    let nic = node.json(&["network", "nic", "show", "-g", "rg", "-n", "leftVMNic"]);
    assert!(
        nic["properties"]["spoofedFramesDropped"].as_u64().unwrap() > 0,
        "{nic}"
    );
}
