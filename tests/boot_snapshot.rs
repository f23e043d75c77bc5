//! Boot snapshots (src/vm/snapshot.rs), with real guests: the first VM of a shape boots cold and
//! the node makes the shape's snapshot; later VMs resume it and come up with their own MAC,
//! DHCP address, clock and random numbers; a restart of a resumed VM boots its kernel; a
//! snapshot QEMU cannot load is deleted, the VM boots cold and the snapshot is made again.

mod common;

use std::time::Duration;

use common::snapshots::{cmdline, wait_for_snapshot};
use common::{guest_exec, Node};

const BOOT: Duration = Duration::from_secs(180);

/// The value after `key=` on the guest's `VMNODE-BOOT: <step>` line.
fn field(log: &str, step: &str, key: &str) -> String {
    let line = log
        .lines()
        .rev()
        .find(|l| l.starts_with(&format!("VMNODE-BOOT: {step} ")))
        .unwrap_or_else(|| panic!("no {step} line in {log}"));
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("no {key}= in {line}"))
        .to_string()
}

struct Vm {
    name: String,
    id: String,
    ip: String,
    mac: String,
}

fn create(node: &Node, name: &str) -> Vm {
    let vm = node.create_vm("rg", name, &[]);
    let show = node.json(&["vm", "show", "-g", "rg", "-n", name]);
    Vm {
        name: name.into(),
        id: show["properties"]["vmId"].as_str().unwrap().into(),
        ip: vm["privateIps"].as_str().unwrap().into(),
        mac: show["macAddresses"]
            .as_str()
            .unwrap()
            .replace('-', ":")
            .to_lowercase(),
    }
}

#[test]
fn new_vms_resume_their_shapes_snapshot_with_their_own_identity() {
    let mut node = Node::start();
    node.ok(&["group", "create", "-n", "rg"]);

    // The first VM of the shape boots cold; the snapshot is made after it.
    let a = create(&node, "snap-a");
    let log = node.wait_for_log("rg", &a.name, "VMNODE-BOOT: network ", BOOT);
    assert!(!log.contains("resumed from boot snapshot"), "{log}");
    assert!(!cmdline(node.qemu_pid(&a.id)).contains("-incoming"));
    let state = wait_for_snapshot(&node, 0);
    let key = state
        .parent()
        .unwrap()
        .file_name()
        .unwrap()
        .to_string_lossy()
        .to_string();

    // Two more of the same shape resume it, each as itself.
    let b = create(&node, "snap-b");
    let c = create(&node, "snap-c");
    let mut uuids = vec![];
    for vm in [&b, &c] {
        let log = node.wait_for_log("rg", &vm.name, "VMNODE-BOOT: network ", BOOT);
        let pid = node.qemu_pid(&vm.id);
        assert!(
            cmdline(pid).contains("-incoming fd:"),
            "{} was not resumed",
            vm.name
        );
        // The console holds the snapshot guest's boot, then where it resumed.
        assert!(log.contains("Linux version"), "{log}");
        assert!(
            log.contains(&format!("vmnode: resumed from boot snapshot {key}")),
            "{log}"
        );
        // Its own MAC, and the address the node's DHCP gave that MAC.
        assert_eq!(field(&log, "resumed", "mac"), vm.mac, "{log}");
        assert_eq!(
            field(&log, "network", "address"),
            format!("{}/24", vm.ip),
            "{log}"
        );
        assert!(log.contains("label=VMNODE-TINY-DISK v1"), "{log}");
        let (code, out) = guest_exec(&node, &vm.id, &["/bin/cat", "/sys/class/net/eth0/address"]);
        assert_eq!((code, out.trim()), (0, vm.mac.as_str()));
        // The guest's clock is now, not the snapshot's.
        let (_, out) = guest_exec(&node, &vm.id, &["/bin/date", "+%s"]);
        let guest: i64 = out.trim().parse().unwrap();
        let host = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        assert!(
            (guest - host).abs() < 60,
            "guest clock {guest}, host {host}"
        );
        let (_, out) = guest_exec(&node, &vm.id, &["/bin/cat", "/proc/sys/kernel/random/uuid"]);
        uuids.push(out.trim().to_string());
        let show = node.json(&["vm", "show", "-g", "rg", "-n", &vm.name]);
        assert_eq!(show["powerState"], "VM running");
        assert_eq!(show["properties"]["provisioningState"], "Succeeded");
    }
    assert_ne!(b.ip, c.ip);
    // Copies of one guest's memory, yet their random numbers differ: they were reseeded.
    assert_ne!(
        uuids[0], uuids[1],
        "two resumed guests drew the same random numbers"
    );
    let leases = node.json(&["network", "dhcp", "leases"]);
    for vm in [&a, &b, &c] {
        let l = leases
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["ipAddress"] == vm.ip.as_str())
            .unwrap_or_else(|| panic!("no lease for {}: {leases}", vm.ip));
        assert_eq!(
            l["macAddress"]
                .as_str()
                .unwrap()
                .replace('-', ":")
                .to_lowercase(),
            vm.mac
        );
    }

    // The daemon killed right after it spawned a resuming QEMU, before it continued the guest
    // or handed it its identity: the restarted daemon re-adopts that QEMU and finishes both.
    node.kill_daemon();
    node.spawn_daemon_with_env(&[("FAILPOINTS", "boot.qemu_spawned=return")]);
    let _ = node.cli(&common::create_args("vmnode:tiny:1:latest", "rg", "snap-e"));
    let died = node.daemon_died(Duration::from_secs(120));
    assert_eq!(
        died.and_then(|s| std::os::unix::process::ExitStatusExt::signal(&s)),
        Some(9),
        "the daemon did not reach its crash point: {}",
        node.daemon_log()
    );
    node.spawn_daemon();
    let show = node.json(&["vm", "show", "-g", "rg", "-n", "snap-e"]);
    let e_id = show["properties"]["vmId"].as_str().unwrap().to_string();
    let e_mac = show["macAddresses"]
        .as_str()
        .unwrap()
        .replace('-', ":")
        .to_lowercase();
    let pid = node.qemu_pid(&e_id);
    assert!(cmdline(pid).contains("-incoming fd:"));
    let log = node.wait_for_log("rg", "snap-e", "VMNODE-BOOT: network ", BOOT);
    assert_eq!(field(&log, "resumed", "mac"), e_mac, "{log}");
    // The address the node's DHCP gave this VM's NIC (shown once the guest holds it).
    let ip = node.json(&["vm", "show", "-g", "rg", "-n", "snap-e"])["privateIps"].clone();
    assert_eq!(
        format!("{}/24", ip.as_str().unwrap()),
        field(&log, "network", "address"),
        "{log}"
    );
    assert_eq!(node.qemu_pid(&e_id), pid, "not the same QEMU");

    // A restart resets the resumed guest, which then boots its kernel with its own command line
    // (the same QEMU): the same address comes back.
    let pid = node.qemu_pid(&b.id);
    node.ok(&["vm", "restart", "-g", "rg", "-n", &b.name]);
    let log = node.wait_for_count("rg", &b.name, "VMNODE-BOOT: network ", 2, BOOT);
    assert_eq!(node.qemu_pid(&b.id), pid);
    let last = log.rsplit("VMNODE-BOOT: init ").next().unwrap();
    assert!(last.contains(&format!("address={}/24", b.ip)), "{log}");
    assert!(!last.contains("template-ready"), "{log}");

    // A snapshot QEMU cannot load: deleted, the VM boots cold, the snapshot is made again.
    std::fs::OpenOptions::new()
        .write(true)
        .open(&state)
        .unwrap()
        .set_len(4096)
        .unwrap();
    let d = create(&node, "snap-d");
    let log = node.wait_for_log("rg", &d.name, "VMNODE-BOOT: network ", BOOT);
    assert!(!cmdline(node.qemu_pid(&d.id)).contains("-incoming"));
    assert!(log.contains(&format!("address={}/24", d.ip)), "{log}");
    // Its current boot is a cold one; the failed resume is the boot before it.
    let current = node.boot_log("rg", &d.name);
    assert!(current.contains("VMNODE-BOOT: init "), "{current}");
    assert!(!current.contains("resumed from boot snapshot"), "{current}");
    let remade = wait_for_snapshot(&node, 4096);
    assert_eq!(remade, state, "the same shape, the same key");

    // No snapshot QEMU is left behind, and nothing half-made.
    assert_eq!(
        common::snapshots::half_made(&node),
        Vec::<std::path::PathBuf>::new()
    );
    let makers = common::snapshots::makers(&node);
    assert!(makers.is_empty(), "snapshot QEMUs left: {makers:?}");
}
