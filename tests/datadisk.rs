//! Data disks: attached to a running guest by hot-plug (QMP blockdev-add + device_add), seen by
//! the guest, limited by the size, detached by hot-unplug, kept across stop/start.

mod common;

use std::time::{Duration, Instant};

use common::{guest_exec, snapshots, Node};

fn serials(node: &Node, vm_id: &str) -> String {
    guest_exec(node, vm_id, &["/bin/sh", "-c", "for d in /sys/block/vd*; do echo $(basename $d):$(cat $d/serial 2>/dev/null):$(cat $d/size); done"]).1
}

fn wait_serials(node: &Node, vm_id: &str, want: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let s = serials(node, vm_id);
        if want(&s) {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "the guest never saw the change: {s}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// The first VM of its shape on a fresh node: it boots cold.
#[test]
fn data_disks_hot_plug_into_a_running_guest() {
    let node = Node::start();
    node.ok(&["group", "create", "-n", "rg"]);
    let vm = node.create_vm("rg", "dd", &[]);
    assert!(!snapshots::resumed(
        node.qemu_pid(vm["properties"]["vmId"].as_str().unwrap())
    ));
    hot_plug_and_keep(&node, &vm);
}

/// A guest resumed from its shape's boot snapshot takes hot-plugged disks too: its PCI slots
/// and their hot-plug state came in the saved state, not from a boot.
#[test]
fn data_disks_hot_plug_into_a_resumed_guest() {
    let node = Node::start();
    node.ok(&["group", "create", "-n", "rg"]);
    node.create_vm("rg", "first", &[]);
    snapshots::wait_for_snapshot(&node, 0);
    node.ok(&["vm", "delete", "-g", "rg", "-n", "first", "--yes"]);
    let vm = node.create_vm("rg", "dd", &[]);
    let pid = node.qemu_pid(vm["properties"]["vmId"].as_str().unwrap());
    assert!(snapshots::resumed(pid), "{}", snapshots::cmdline(pid));
    hot_plug_and_keep(&node, &vm);
}

/// Two disks hot-plugged into the running VM `dd`, a third refused by its size, one detached;
/// the other kept across stop/start, and deleted with the VM.
fn hot_plug_and_keep(node: &Node, vm: &serde_json::Value) {
    let id = vm["properties"]["vmId"].as_str().unwrap().to_string();
    node.wait_for_log("rg", "dd", "VMNODE-BOOT: ready", Duration::from_secs(120));
    let attach = |name: &str, gb: &str| {
        node.cli(&[
            "vm",
            "disk",
            "attach",
            "-g",
            "rg",
            "--vm-name",
            "dd",
            "-n",
            name,
            "--new",
            "--size-gb",
            gb,
        ])
    };

    assert!(attach("d0", "1").status.success());
    let s = wait_serials(node, &id, |s| s.contains(":lun0:"));
    // The agent answers: an error it gives (a program the guest does not have) fails the
    // harness's call at once, as one that cannot succeed, and is not retried until a deadline.
    let r = common::agent::try_guest_exec(
        node,
        &id,
        &["/no/such/program"],
        Instant::now() + Duration::from_secs(60),
    );
    assert!(
        matches!(r, Err(common::agent::ExecError::Failed(_))),
        "{r:?}"
    );
    assert!(
        s.contains(":lun0:2097152"),
        "1 GiB disk at LUN 0 expected: {s}"
    );
    assert!(attach("d1", "2").status.success());
    let s = wait_serials(node, &id, |s| s.contains(":lun1:"));
    assert!(s.contains(":lun1:4194304"), "{s}");
    // Standard_B1s allows two.
    let e = node.fails(&[
        "vm",
        "disk",
        "attach",
        "-g",
        "rg",
        "--vm-name",
        "dd",
        "-n",
        "d2",
        "--new",
    ]);
    assert!(
        e.contains("maximum number of data disks") && e.contains("2"),
        "{e}"
    );
    let show = node.json(&["vm", "show", "-g", "rg", "-n", "dd"]);
    let disks = show["properties"]["storageProfile"]["dataDisks"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(disks.len(), 2, "{show}");
    assert!(disks[0]["vhd"]["uri"]
        .as_str()
        .unwrap()
        .ends_with("/vhds/d0.vhd"));

    // Detach: the guest lets go of the device.
    node.ok(&[
        "vm",
        "disk",
        "detach",
        "-g",
        "rg",
        "--vm-name",
        "dd",
        "-n",
        "d0",
    ]);
    wait_serials(node, &id, |s| !s.contains(":lun0:"));
    let show = node.json(&["vm", "show", "-g", "rg", "-n", "dd"]);
    assert_eq!(
        show["properties"]["storageProfile"]["dataDisks"]
            .as_array()
            .unwrap()
            .len(),
        1
    );

    // A stopped VM boots with its data disk attached.
    node.ok(&["vm", "stop", "-g", "rg", "-n", "dd", "--skip-shutdown"]);
    node.ok(&["vm", "start", "-g", "rg", "-n", "dd"]);
    node.wait_for_count(
        "rg",
        "dd",
        "VMNODE-BOOT: ready",
        2,
        Duration::from_secs(120),
    );
    let log = node.ok(&[
        "vm",
        "boot-diagnostics",
        "get-boot-log",
        "-g",
        "rg",
        "-n",
        "dd",
    ]);
    assert!(log.contains("serial=lun1"), "{log}");

    // Delete takes the VM's data disks with it; the detached one stays in the store.
    node.ok(&["vm", "delete", "-g", "rg", "-n", "dd", "--yes"]);
    let left: Vec<String> = common::walk(&node.state.join("blobs"))
        .iter()
        .filter(|p| p.to_string_lossy().ends_with(".vhd"))
        .map(|p| p.file_name().unwrap().to_string_lossy().to_string())
        .collect();
    assert_eq!(left, vec!["d0.vhd".to_string()], "{left:?}");
}
