//! The walking skeleton, end to end with real guests: image → OS disk → QEMU → network + DHCP
//! → serial log → API/CLI → clean delete.

mod common;

use std::time::Duration;

use common::{qemu_pids_with, Node};

const BOOT: Duration = Duration::from_secs(120);

#[test]
fn guest_reports_its_dhcp_address_router_and_hostname() {
    let node = Node::start();
    node.ok(&["group", "create", "-n", "rg1"]);
    let vm = node.create_vm("rg1", "web-1", &["--computer-name", "guest-one"]);
    assert_eq!(vm["privateIps"], "10.1.0.4", "{vm}");

    // The guest itself reports what it holds, read back from its own kernel.
    let log = node.wait_for_log("rg1", "web-1", "VMNODE-BOOT: network ", BOOT);
    let line = log
        .lines()
        .find(|l| l.starts_with("VMNODE-BOOT: network "))
        .unwrap();
    assert!(line.contains("address=10.1.0.4/24"), "{line}");
    assert!(line.contains("router=10.1.0.1 "), "{line}");
    assert!(line.contains("dns=168.63.129.16"), "{line}");
    assert!(line.contains("hostname=guest-one "), "{line}");
    assert!(line.contains(".internal.cloudapp.net"), "{line}");
    // The OS disk the guest sees is its own copy of the image's disk.
    assert!(log.contains("label=VMNODE-TINY-DISK v1"), "{log}");

    let show = node.json(&["vm", "show", "-g", "rg1", "-n", "web-1"]);
    assert_eq!(show["privateIps"], "10.1.0.4");
    assert_eq!(show["powerState"], "VM running");
    let p = &show["properties"];
    assert_eq!(p["provisioningState"], "Succeeded");
    assert_eq!(p["osProfile"]["computerName"], "guest-one");
    assert_eq!(p["hardwareProfile"]["vmSize"], "Standard_B1s");
    assert_eq!(p["storageProfile"]["imageReference"]["version"], "latest");
    assert_eq!(
        p["storageProfile"]["imageReference"]["exactVersion"],
        tiny_version()
    );
    let uri = p["storageProfile"]["osDisk"]["vhd"]["uri"]
        .as_str()
        .unwrap();
    assert!(
        uri.contains("/vhds/web-1-osdisk-") && uri.ends_with(".vhd"),
        "{uri}"
    );
    assert!(uuid_like(p["vmId"].as_str().unwrap()));

    // The lease table agrees, and the NIC resource carries the address.
    let leases = node.json(&["network", "dhcp", "leases"]);
    assert_eq!(leases[0]["ipAddress"], "10.1.0.4");
    assert_eq!(leases[0]["hostname"], "guest-one");
    assert_eq!(leases[0]["macAddress"], show["macAddresses"]);
    assert!(show["macAddresses"]
        .as_str()
        .unwrap()
        .starts_with("00-0D-3A-"));

    // The instance view carries the NIC's DHCP ledger (the 4-way exchange) and no diagnosis.
    let view = node.json(&["vm", "get-instance-view", "-g", "rg1", "-n", "web-1"]);
    let nic = &view["networkInterfaces"][0];
    let kinds: Vec<&str> = nic["dhcpLedger"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"]["type"].as_str().unwrap())
        .collect();
    assert!(
        kinds.contains(&"discover") && kinds.contains(&"ack"),
        "{view}"
    );
    assert!(nic["dhcpDiagnosis"].is_null(), "{view}");

    // The catalog lists the image with its URN, one row per version.
    let images = node.json(&["vm", "image", "list"]);
    let urn = format!("vmnode:tiny:1:{}", tiny_version());
    assert_eq!(images[0]["urn"], urn.as_str(), "{images}");
    let table = node.ok(&["vm", "image", "list", "--publisher", "vmnode"]);
    assert!(
        table.starts_with("Architecture") && table.contains(&urn),
        "{table}"
    );
    // The token the daemon issued is what the CLI prints, az-style.
    let tok = node.json(&["account", "get-access-token"]);
    assert_eq!(tok["tokenType"], "Bearer");
    assert_eq!(
        tok["accessToken"].as_str().unwrap(),
        std::fs::read_to_string(node.state.join("token"))
            .unwrap()
            .trim()
    );

    // The second VM gets the next address.
    let vm2 = node.create_vm("rg1", "web-2", &[]);
    assert_eq!(vm2["privateIps"], "10.1.0.5", "{vm2}");
}

fn uuid_like(s: &str) -> bool {
    s.len() == 36 && s.chars().filter(|c| *c == '-').count() == 4
}

#[test]
fn vm_survives_daemon_sigkill_and_is_readopted() {
    let mut node = Node::start();
    node.ok(&["group", "create", "-n", "rg"]);
    let vm = node.create_vm("rg", "vm1", &[]);
    let vm_id = vm["properties"]["vmId"].as_str().unwrap().to_string();
    let pid = node.qemu_pid(&vm_id);
    assert_eq!(qemu_pids_with(&vm_id), vec![pid]);

    node.kill_daemon();
    std::thread::sleep(Duration::from_millis(500));
    // QEMU lives on its own.
    assert_eq!(
        qemu_pids_with(&vm_id),
        vec![pid],
        "QEMU died with the daemon"
    );

    node.spawn_daemon();
    let show = node.json(&["vm", "show", "-g", "rg", "-n", "vm1"]);
    assert_eq!(show["powerState"], "VM running", "{show}");
    assert_eq!(show["properties"]["provisioningState"], "Succeeded");
    assert_eq!(show["privateIps"], "10.1.0.4");
    // The record answers as soon as the daemon is up; the actor logs its re-adoption just after.
    node.wait_for_daemon_log(
        &format!("re-adopted running QEMU pid={pid}"),
        Duration::from_secs(30),
    );
    // Same process, not a new one.
    assert_eq!(qemu_pids_with(&vm_id), vec![pid]);

    // The re-adopted VM is fully managed: delete works and takes QEMU down.
    node.ok(&["vm", "delete", "-g", "rg", "-n", "vm1", "--yes"]);
    assert!(qemu_pids_with(&vm_id).is_empty());
}

#[test]
fn delete_leaves_nothing_behind() {
    let node = Node::start();
    node.ok(&["group", "create", "-n", "rg"]);
    let vm = node.create_vm("rg", "gone", &[]);
    let vm_id = vm["properties"]["vmId"].as_str().unwrap().to_string();
    let disk_dir = node.state.join("blobs");
    let disks = || {
        common::walk(&disk_dir)
            .into_iter()
            .filter(|p| p.to_string_lossy().ends_with(".vhd"))
            .count()
    };
    assert_eq!(disks(), 1);
    let nic = node.json(&["network", "nic", "show", "-g", "rg", "-n", "goneVMNic"]);
    let tap = nic["properties"]["tapName"].as_str().unwrap().to_string();
    assert!(
        node.links().contains(&tap),
        "tap {tap} missing: {}",
        node.links()
    );
    assert_eq!(
        node.json(&["network", "dhcp", "leases"])
            .as_array()
            .unwrap()
            .len(),
        1
    );

    node.ok(&["vm", "delete", "-g", "rg", "-n", "gone", "--yes"]);

    assert!(qemu_pids_with(&vm_id).is_empty(), "QEMU still running");
    assert!(!node.links().contains(&tap), "tap left: {}", node.links());
    assert_eq!(
        node.json(&["network", "dhcp", "leases"]),
        serde_json::json!([])
    );
    assert_eq!(disks(), 0, "OS disk left behind");
    assert!(
        !node.run.join("vms").join(&vm_id).exists(),
        "run dir left behind"
    );
    assert!(node
        .fails(&["vm", "show", "-g", "rg", "-n", "gone"])
        .contains("ResourceNotFound"));
    assert!(node
        .fails(&["network", "nic", "show", "-g", "rg", "-n", "goneVMNic"])
        .contains("ResourceNotFound"));
    // The address is free again: the next VM gets .4 back.
    let again = node.create_vm("rg", "again", &["--ip-timeout", "0"]);
    assert_eq!(again["properties"]["provisioningState"], "Succeeded");
    let nic = node.json(&["network", "nic", "show", "-g", "rg", "-n", "againVMNic"]);
    assert_eq!(
        nic["properties"]["ipConfigurations"][0]["properties"]["privateIPAddress"],
        "10.1.0.4"
    );
}

#[test]
fn bad_input_is_refused_clearly_and_creates_nothing() {
    let node = Node::start();
    node.ok(&["group", "create", "-n", "rg"]);
    let nothing_made = |node: &Node| {
        assert_eq!(node.json(&["vm", "list"]).as_array().unwrap().len(), 0);
        assert!(
            common::walk(&node.state.join("blobs")).is_empty(),
            "a disk was left"
        );
        assert_eq!(
            node.json(&["network", "dhcp", "leases"]),
            serde_json::json!([])
        );
        assert!(
            !node.links().contains(" vt"),
            "a tap was left: {}",
            node.links()
        );
    };
    let create = |rg: &str, name: &str, image: &str, size: &str| {
        let name = format!("--name={name}");
        node.fails(&[
            "vm", "create", "-g", rg, &name, "--image", image, "--size", size,
        ])
    };
    let e = create("rg", "vm1", "vmnode:nope:1:latest", "Standard_B1s");
    assert!(
        e.contains("PlatformImageNotFound")
            && e.contains(&format!("vmnode:tiny:1:{}", tiny_version())),
        "{e}"
    );
    let e = create("rg", "vm1", "vmnode:tiny:1:9.9.9", "Standard_B1s");
    assert!(e.contains("PlatformImageNotFound"), "{e}");
    let e = create("rg", "vm1", "not-a-urn", "Standard_B1s");
    assert!(e.contains("is not an image URN"), "{e}");
    let e = create("rg", "vm1", "vmnode:tiny:1:latest", "Standard_Huge_v9");
    assert!(
        e.contains("Standard_Huge_v9") && e.contains("Standard_DS1_v2"),
        "{e}"
    );
    let e = create("rg", "-bad", "vmnode:tiny:1:latest", "Standard_B1s");
    assert!(e.contains("VM name '-bad' is invalid"), "{e}");
    let e = create("rg", "bad.", "vmnode:tiny:1:latest", "Standard_B1s");
    assert!(e.contains("invalid"), "{e}");
    let e = create("nosuchrg", "vm1", "vmnode:tiny:1:latest", "Standard_B1s");
    assert!(
        e.contains("ResourceGroupNotFound") && e.contains("nosuchrg"),
        "{e}"
    );
    let e = node.fails(&[
        "vm",
        "create",
        "-g",
        "rg",
        "-n",
        "vm_1",
        "--image",
        "vmnode:tiny:1:latest",
    ]);
    assert!(e.contains("computer name 'vm_1' is invalid"), "{e}");
    // A size larger than the host is a clear capacity error: the smallest size with more
    // vCPUs than this host has cores.
    let cores = std::thread::available_parallelism().unwrap().get() as u64;
    let sizes = node.json(&["vm", "list-sizes"]);
    let big = sizes
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["numberOfCores"].as_u64().unwrap() > cores)
        .min_by_key(|s| s["numberOfCores"].as_u64().unwrap())
        .unwrap_or_else(|| panic!("no size has more than this host's {cores} cores: {sizes}"));
    let e = create(
        "rg",
        "big",
        "vmnode:tiny:1:latest",
        big["name"].as_str().unwrap(),
    );
    assert!(
        e.contains("AllocationFailed")
            && e.contains(&format!("{} vCPUs", big["numberOfCores"]))
            && e.contains(&format!("this host has {cores} cores")),
        "{e}"
    );
    nothing_made(&node);

    // A duplicate name is refused and the first VM is untouched.
    let vm = node.create_vm("rg", "dup", &["--ip-timeout", "0"]);
    let e = node.fails(&[
        "vm",
        "create",
        "-g",
        "rg",
        "-n",
        "DUP",
        "--image",
        "vmnode:tiny:1:latest",
    ]);
    assert!(e.contains("already exists"), "{e}");
    let show = node.json(&["vm", "show", "-g", "rg", "-n", "dup"]);
    assert_eq!(show["properties"]["vmId"], vm["properties"]["vmId"]);
    assert_eq!(node.json(&["vm", "list"]).as_array().unwrap().len(), 1);

    // Without the token the API refuses; over HTTPS with the node's CA it answers.
    let out = std::process::Command::new(common::BIN)
        .args(["group", "list"])
        .env("VMNODE_STATE_DIR", &node.state)
        .env("VMNODE_RUN_DIR", &node.run)
        .env("VMNODE_TOKEN", "wrong")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("AuthenticationFailed"));
    let url = format!("https://127.0.0.1:{}", node.port);
    let rows = node.json(&["group", "list", "--url", &url]);
    assert_eq!(rows[0]["name"], "rg");
}

/// The tiny image's version, as its recipe publishes it.
fn tiny_version() -> String {
    let c: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/images/catalog.json"))
            .unwrap(),
    )
    .unwrap();
    c["recipes"]["tiny"]["version"]
        .as_str()
        .unwrap()
        .to_string()
}
