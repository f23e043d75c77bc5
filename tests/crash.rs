//! kill -9 of the daemon in the middle of create, start, stop and delete: each kill comes at a
//! moment the VM was seen with its operation in flight (`Creating`, `VM starting`, …; a
//! delete, too quick to be seen, is found unfinished by the restarted daemon), and
//! after a restart the node is consistent — no orphan QEMU, tap, lease or disk; a running VM
//! is re-adopted with the same pid; whatever was interrupted can be finished. (Each crash
//! point of these operations, one by one: tests/crash_points.rs.)

mod common;

use std::time::{Duration, Instant};

use common::consistency::consistent;
use common::{qemu_pids_with, Node};
use serde_json::Value;

/// (provisioning state, power state) of `vm`, as `vm show` has them.
fn states(node: &Node, vm: &str) -> (String, String) {
    let v = node.json(&["vm", "show", "-g", "rg", "-n", vm]);
    let s = |v: &Value| v.as_str().unwrap_or_default().to_string();
    (
        s(&v["properties"]["provisioningState"]),
        s(&v["powerState"]),
    )
}

/// Polls `vm` until `in_flight` holds for its states, kills the daemon (SIGKILL) right then and
/// starts it again; returns the states seen just before the kill. Fails if the operation
/// ended before it was ever seen in flight.
fn kill_while(
    node: &mut Node,
    vm: &str,
    what: &str,
    in_flight: impl Fn(&Node, &(String, String)) -> bool,
) -> (String, String) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let seen = loop {
        let st = states(node, vm);
        if in_flight(node, &st) {
            break st;
        }
        assert!(
            Instant::now() < deadline,
            "{vm}: never seen {what}; last {st:?}"
        );
    };
    node.kill_daemon();
    eprintln!("{vm}: killed the daemon while {what}: {seen:?}");
    node.spawn_daemon();
    seen
}

fn vm_id(node: &Node, vm: &str) -> String {
    node.json(&["vm", "show", "-g", "rg", "-n", vm])["properties"]["vmId"]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn kill_9_during_create_start_stop_and_delete() {
    let mut node = Node::start();
    node.ok(&["group", "create", "-n", "rg"]);

    // During create: twice, as soon as the VM is recorded, and once its QEMU runs (its pidfile
    // written) while the create is not done yet.
    for (name, qemu_started) in [("c0", false), ("c1", true)] {
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
        let id = vm_id(&node, name);
        let pidfile = node.run.join("vms").join(&id).join("qemu.pid");
        let what = if qemu_started {
            "creating, its QEMU started"
        } else {
            "creating"
        };
        kill_while(&mut node, name, what, |_, (p, _)| {
            p == "Creating" && (!qemu_started || pidfile.exists())
        });
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
    node.kill_daemon();
    node.spawn_daemon();
    consistent(&node);
    assert_eq!(
        qemu_pids_with(&id),
        vec![pid],
        "a running VM must be re-adopted with the same pid"
    );

    // A graceful stop: the guest powers off on ACPI, which takes it a moment.
    node.wait_for_log("rg", "v", "VMNODE-BOOT: ready", Duration::from_secs(120));
    node.ok(&["vm", "stop", "-g", "rg", "-n", "v", "--no-wait"]);
    kill_while(&mut node, "v", "stopping", |_, (_, s)| s == "VM stopping");
    consistent(&node);
    // Bring it to stopped whatever the crash left, then crash during start.
    node.ok(&["vm", "stop", "-g", "rg", "-n", "v", "--skip-shutdown"]);
    node.ok(&["vm", "start", "-g", "rg", "-n", "v", "--no-wait"]);
    kill_while(&mut node, "v", "starting", |_, (_, s)| s == "VM starting");
    consistent(&node);

    // A delete is over too soon to be seen by polling: the daemon is killed as soon as it has
    // accepted it, and the restarted daemon says it found the delete unfinished.
    let resumed_deletes = |node: &Node| {
        node.daemon_log()
            .matches("resuming an interrupted delete")
            .count()
    };
    let before = resumed_deletes(&node);
    node.ok(&["vm", "delete", "-g", "rg", "-n", "v", "--yes", "--no-wait"]);
    node.kill_daemon();
    node.spawn_daemon();
    let deadline = Instant::now() + Duration::from_secs(30);
    while resumed_deletes(&node) == before {
        assert!(
            Instant::now() < deadline,
            "the restarted daemon found no delete in flight: the kill came after it"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
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
