//! kill -9 of the daemon in the middle of create, start, stop and delete: after a restart the
//! node is consistent — no orphan QEMU, tap, lease or disk; a running VM is re-adopted with the
//! same pid; whatever was interrupted can be finished.

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::{qemu_pids_with, Node};

/// Waits until no VM is in a transitional state; returns the VM list.
fn settle(node: &Node) -> Vec<serde_json::Value> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let vms = node.json(&["vm", "list"]).as_array().cloned().unwrap();
        let busy = vms.iter().any(|v| {
            let p = v["properties"]["provisioningState"].as_str().unwrap_or("");
            let s = v["powerState"].as_str().unwrap_or("");
            matches!(p, "Creating" | "Deleting")
                || s.ends_with("starting")
                || s.ends_with("stopping")
                || s.ends_with("deallocating")
        });
        if !busy {
            return vms;
        }
        assert!(Instant::now() < deadline, "VMs never settled: {vms:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Everything on the host belongs to a VM the node knows, in the state the node shows.
fn consistent(node: &Node) {
    let vms = settle(node);
    let root = node.dir.path().to_string_lossy().to_string();
    let mut running = HashSet::new();
    for v in &vms {
        let id = v["properties"]["vmId"].as_str().unwrap();
        let pids = qemu_pids_with(id);
        match v["powerState"].as_str().unwrap() {
            "VM running" => {
                assert_eq!(
                    pids.len(),
                    1,
                    "running VM {id} must have exactly one QEMU: {pids:?}"
                );
                running.insert(id.to_string());
            }
            other => assert!(
                pids.is_empty(),
                "VM {id} is '{other}' but QEMU runs: {pids:?}"
            ),
        }
    }
    // No QEMU of this node that no VM accounts for.
    let ours: usize = vms
        .iter()
        .map(|v| qemu_pids_with(v["properties"]["vmId"].as_str().unwrap()).len())
        .sum();
    assert_eq!(qemu_pids_with(&root).len(), ours, "orphan QEMU processes");
    // Taps only for running VMs' NICs.
    let taps = node.links().lines().filter(|l| l.contains(": vt")).count();
    assert_eq!(taps, running.len(), "orphan taps: {}", node.links());
    // Disks only for VMs that exist (a VM whose create was cut short may have none).
    let names: HashSet<String> = vms
        .iter()
        .map(|v| {
            format!(
                "{}.vhd",
                v["properties"]["storageProfile"]["osDisk"]["name"]
                    .as_str()
                    .unwrap()
            )
        })
        .collect();
    for d in common::walk(&node.state.join("blobs"))
        .into_iter()
        .filter(|p| p.to_string_lossy().ends_with(".vhd"))
    {
        let f = d.file_name().unwrap().to_string_lossy().to_string();
        assert!(names.contains(&f), "orphan disk {f}");
    }
    // Leases only for NICs that exist.
    let leases = node.json(&["network", "dhcp", "leases"]);
    let macs: HashSet<String> = vms
        .iter()
        .map(|v| v["macAddresses"].as_str().unwrap().to_string())
        .collect();
    for l in leases.as_array().unwrap() {
        assert!(
            macs.contains(l["macAddress"].as_str().unwrap()),
            "orphan lease {l}"
        );
    }
}

fn crash_and_restart(node: &mut Node, delay_ms: u64) {
    std::thread::sleep(Duration::from_millis(delay_ms));
    node.kill_daemon();
    node.spawn_daemon();
}

#[test]
fn kill_9_during_create_start_stop_and_delete() {
    let mut node = Node::start();
    node.ok(&["group", "create", "-n", "rg"]);

    // During create (twice: very early, and while QEMU starts).
    for (name, delay) in [("c0", 0), ("c1", 150)] {
        node.ok(&[
            "vm",
            "create",
            "-g",
            "rg",
            "-n",
            name,
            "--image",
            "vmnode:tiny:1:latest",
            "--size",
            "Standard_B1s",
            "--no-wait",
        ]);
        crash_and_restart(&mut node, delay);
        consistent(&node);
    }
    // Whatever state they ended in, they can be deleted cleanly.
    for name in ["c0", "c1"] {
        node.ok(&["vm", "delete", "-g", "rg", "-n", name, "--yes"]);
    }
    consistent(&node);
    assert!(node.json(&["vm", "list"]).as_array().unwrap().is_empty());

    // A running VM: crash with no operation at all, then during stop, start and delete.
    let vm = node.create_vm("rg", "v", &[]);
    let id = vm["properties"]["vmId"].as_str().unwrap().to_string();
    let pid = node.qemu_pid(&id);
    crash_and_restart(&mut node, 0);
    consistent(&node);
    assert_eq!(
        qemu_pids_with(&id),
        vec![pid],
        "a running VM must be re-adopted with the same pid"
    );

    node.wait_for_log("rg", "v", "VMNODE-BOOT: ready", Duration::from_secs(120));
    node.ok(&["vm", "stop", "-g", "rg", "-n", "v", "--no-wait"]);
    crash_and_restart(&mut node, 200);
    consistent(&node);
    // Bring it to stopped whatever the crash left, then crash during start.
    node.ok(&["vm", "stop", "-g", "rg", "-n", "v", "--skip-shutdown"]);
    node.ok(&["vm", "start", "-g", "rg", "-n", "v", "--no-wait"]);
    crash_and_restart(&mut node, 100);
    consistent(&node);

    node.ok(&["vm", "delete", "-g", "rg", "-n", "v", "--yes", "--no-wait"]);
    crash_and_restart(&mut node, 50);
    consistent(&node);
    // A delete interrupted by the crash was finished by the restarted daemon.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !node.json(&["vm", "list"]).as_array().unwrap().is_empty() {
        assert!(
            Instant::now() < deadline,
            "interrupted delete never finished"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    consistent(&node);
    assert!(qemu_pids_with(&id).is_empty());
}
