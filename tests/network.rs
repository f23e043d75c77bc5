//! Virtual networks with real guests: names, DHCP ledger, isolation, anti-spoofing, lease
//! persistence. Guests are driven through their own agent (`guest-exec`).

mod common;

use std::time::Duration;

use common::{guest_exec, Node};

const BOOT: Duration = Duration::from_secs(120);

fn vm_id(v: &serde_json::Value) -> String {
    v["properties"]["vmId"].as_str().unwrap().to_string()
}

#[test]
fn two_guests_on_a_vnet_resolve_each_other_and_other_vnets_are_unreachable() {
    let mut node = Node::start();
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
    node.ok(&[
        "network",
        "vnet",
        "create",
        "-g",
        "rg",
        "-n",
        "net2",
        "--address-prefixes",
        "10.3.0.0/16",
        "--subnet-name",
        "s1",
    ]);
    let a = node.create_vm("rg", "alpha", &["--vnet-name", "net1", "--subnet", "s1"]);
    let b = node.create_vm("rg", "beta", &["--vnet-name", "net1", "--subnet", "s1"]);
    let c = node.create_vm("rg", "gamma", &["--vnet-name", "net2", "--subnet", "s1"]);
    assert_eq!(a["privateIps"], "10.2.0.4");
    assert_eq!(b["privateIps"], "10.2.0.5");
    assert_eq!(c["privateIps"], "10.3.0.4");
    for n in ["alpha", "beta", "gamma"] {
        node.wait_for_log("rg", n, "VMNODE-BOOT: ready", BOOT);
    }
    let log = node.ok(&[
        "vm",
        "boot-diagnostics",
        "get-boot-log",
        "-g",
        "rg",
        "-n",
        "alpha",
    ]);
    let vnet = node.json(&["network", "vnet", "show", "-g", "rg", "-n", "net1"]);
    let domain = vnet["properties"]["internalDomainNameSuffix"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        log.contains(&format!("hostname=alpha domain={domain}")),
        "{log}"
    );

    // Each resolves the other by name (short and FQDN) with the guest's own nslookup.
    let (code, out) = guest_exec(&node, &vm_id(&a), &["/bin/nslookup", "beta"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("10.2.0.5"), "{out}");
    let (code, out) = guest_exec(
        &node,
        &vm_id(&b),
        &["/bin/nslookup", &format!("alpha.{domain}")],
    );
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("10.2.0.4"), "{out}");
    // Names of another vnet are not served here.
    let (_, out) = guest_exec(&node, &vm_id(&a), &["/bin/nslookup", "gamma"]);
    assert!(!out.contains("10.3.0.4"), "{out}");

    // Same vnet: reachable. Another vnet: not.
    let (code, out) = guest_exec(
        &node,
        &vm_id(&a),
        &["/bin/ping", "-c", "2", "-W", "3", "10.2.0.5"],
    );
    assert_eq!(code, 0, "alpha cannot reach beta: {out}");
    let (code, out) = guest_exec(
        &node,
        &vm_id(&a),
        &["/bin/ping", "-c", "2", "-W", "3", "10.3.0.4"],
    );
    assert_ne!(code, 0, "alpha reached gamma on another vnet: {out}");

    // The ledger shows the 4-way exchange of each NIC.
    let ledger = node.json(&["network", "dhcp", "ledger"]);
    let alpha = ledger
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["nic"] == "alphaVMNic")
        .unwrap()
        .clone();
    let kinds: Vec<String> = alpha["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"]["type"].as_str().unwrap().to_string())
        .collect();
    let pos = |k: &str| {
        kinds
            .iter()
            .position(|x| x == k)
            .unwrap_or_else(|| panic!("no {k} in {kinds:?}"))
    };
    assert!(
        pos("discover") < pos("offer")
            && pos("offer") < pos("request")
            && pos("request") < pos("ack"),
        "{kinds:?}"
    );

    // Spoofing: another source address from alpha is dropped, and counted.
    let (_, _) = guest_exec(
        &node,
        &vm_id(&a),
        &["/bin/ip", "addr", "add", "10.2.0.99/24", "dev", "eth0"],
    );
    let (code, out) = guest_exec(
        &node,
        &vm_id(&a),
        &[
            "/bin/ping",
            "-c",
            "2",
            "-W",
            "2",
            "-I",
            "10.2.0.99",
            "10.2.0.5",
        ],
    );
    assert_ne!(code, 0, "a spoofed source got through: {out}");
    let nic = node.json(&["network", "nic", "show", "-g", "rg", "-n", "alphaVMNic"]);
    assert!(
        nic["properties"]["spoofedFramesDropped"].as_u64().unwrap() > 0,
        "{nic}"
    );

    // Leases persist: after a daemon restart the same MAC renews the same address.
    node.kill_daemon();
    node.spawn_daemon();
    let (code, out) = guest_exec(&node, &vm_id(&b), &["/bin/killall", "-USR1", "udhcpc"]);
    assert_eq!(code, 0, "{out}");
    let log = node.wait_for_count("rg", "beta", "dhcp-renew ip=10.2.0.5", 1, BOOT);
    assert!(log.contains("dhcp-renew ip=10.2.0.5"), "{log}");
    let ledger = node.json(&["network", "dhcp", "ledger"]);
    let beta = ledger
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["nic"] == "betaVMNic")
        .unwrap()
        .clone();
    assert!(
        beta["entries"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["kind"]["type"] == "ack" && e["ip"] == "10.2.0.5"),
        "{beta}"
    );
}

#[test]
fn vnets_and_nics_as_resources() {
    let node = Node::start();
    node.ok(&["group", "create", "-n", "rg"]);
    // Bad input: a subnet outside the space, overlapping subnets.
    let e = node.fails(&[
        "network",
        "vnet",
        "create",
        "-g",
        "rg",
        "-n",
        "v",
        "--address-prefixes",
        "10.5.0.0/16",
        "--subnet-name",
        "s",
        "--subnet-prefixes",
        "10.6.0.0/24",
    ]);
    assert!(e.contains("not inside the address space"), "{e}");
    node.ok(&[
        "network",
        "vnet",
        "create",
        "-g",
        "rg",
        "-n",
        "v",
        "--address-prefixes",
        "10.5.0.0/16",
        "--subnet-name",
        "s",
        "--subnet-prefixes",
        "10.5.0.0/24",
    ]);
    let e = node.fails(&[
        "network",
        "vnet",
        "subnet",
        "create",
        "-g",
        "rg",
        "--vnet-name",
        "v",
        "-n",
        "s2",
        "--address-prefixes",
        "10.5.0.128/25",
    ]);
    assert!(e.contains("overlap"), "{e}");
    // NICs: dynamic gets .4, static gets what it asked, a reserved address is refused.
    let n1 = node.json(&[
        "network",
        "nic",
        "create",
        "-g",
        "rg",
        "-n",
        "n1",
        "--vnet-name",
        "v",
        "--subnet",
        "s",
    ]);
    assert_eq!(
        n1["properties"]["ipConfigurations"][0]["properties"]["privateIPAddress"],
        "10.5.0.4"
    );
    assert!(n1["properties"]["macAddress"]
        .as_str()
        .unwrap()
        .starts_with("00-0D-3A-"));
    let n2 = node.json(&[
        "network",
        "nic",
        "create",
        "-g",
        "rg",
        "-n",
        "n2",
        "--vnet-name",
        "v",
        "--subnet",
        "s",
        "--private-ip-address",
        "10.5.0.50",
    ]);
    assert_eq!(
        n2["properties"]["ipConfigurations"][0]["properties"]["privateIPAddress"],
        "10.5.0.50"
    );
    let e = node.fails(&[
        "network",
        "nic",
        "create",
        "-g",
        "rg",
        "-n",
        "n3",
        "--vnet-name",
        "v",
        "--subnet",
        "s",
        "--private-ip-address",
        "10.5.0.2",
    ]);
    assert!(e.contains("10.5.0.2") && e.contains("not usable"), "{e}");
    // A VM on an existing NIC; the NIC cannot be deleted while in use, and survives the VM.
    let vm = node.create_vm("rg", "onnic", &["--nics", "n2"]);
    assert_eq!(vm["privateIps"], "10.5.0.50");
    let e = node.fails(&["network", "nic", "delete", "-g", "rg", "-n", "n2"]);
    assert!(e.contains("NicInUse"), "{e}");
    let e = node.fails(&["network", "vnet", "delete", "-g", "rg", "-n", "v"]);
    assert!(e.contains("InUseSubnetCannotBeDeleted"), "{e}");
    node.ok(&["vm", "delete", "-g", "rg", "-n", "onnic", "--yes"]);
    let n2 = node.json(&["network", "nic", "show", "-g", "rg", "-n", "n2"]);
    assert!(n2["properties"].get("virtualMachine").is_none(), "{n2}");
    node.ok(&["network", "nic", "delete", "-g", "rg", "-n", "n2"]);
    node.ok(&["network", "nic", "delete", "-g", "rg", "-n", "n1"]);
    node.ok(&["network", "vnet", "delete", "-g", "rg", "-n", "v"]);
    assert!(node
        .fails(&["network", "vnet", "show", "-g", "rg", "-n", "v"])
        .contains("ResourceNotFound"));
}
