//! kill -9 of the daemon in the middle of create, start, stop and delete: after a restart the
//! node is consistent — no orphan QEMU, tap, lease or disk; a running VM is re-adopted with the
//! same pid; whatever was interrupted can be finished.

mod common;

use std::time::{Duration, Instant};

use common::consistency::consistent;
use common::{qemu_pids_with, Node};

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
