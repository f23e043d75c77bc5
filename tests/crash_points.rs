//! Every crash point of create, start, stop, deallocate, delete and data disk attach/detach
//! (src/failpoint.rs), in turn, on a real daemon and real tiny guests (issue 9, R1): the daemon
//! is started with `FAILPOINTS=<point>=return`, the operation that reaches the point is asked
//! for, and the daemon kills itself there (SIGKILL). The restarted daemon must leave the node
//! consistent (`common::consistency`): no orphan QEMU, tap, DHCP lease, blob lease or disk
//! file, no disk open in two QEMUs; a running VM re-adopted on the same pid; a disk no VM lists
//! quarantined, never deleted. Then the VM can be deleted cleanly.
//!
//! A create cut before its QEMU started ends Failed with nothing running; cut after, it is
//! re-adopted running. The boot's points are also reached by a create that resumes a boot
//! snapshot (on by default): re-adopted, the resumed QEMU is continued and its guest takes its
//! own identity.
//!
//! The points are split across five tests (create, resumed create, power, delete, disks) that
//! nextest runs side by side; together they must cover the daemon's whole list
//! (`every_crash_point_is_tested`).

mod common;

use std::time::{Duration, Instant};

use common::consistency::consistent;
use common::{qemu_pids_with, snapshots, walk, Node};

const LIMIT: Duration = Duration::from_secs(120);

/// The state a point's VM is brought to before the point is armed.
#[derive(Clone, Copy, PartialEq)]
enum Pre {
    /// No VM yet (the operation creates it).
    Nothing,
    /// Created, its QEMU running (not waited to boot).
    Running,
    /// Booted to its ready line (the guest answers ACPI and releases hot-unplugged disks).
    Booted,
    /// Booted, with data disk `d0` at LUN 0.
    BootedWithDisk,
    /// Stopped.
    Stopped,
}

#[derive(Clone, Copy, PartialEq)]
enum Op {
    Create,
    Start,
    Stop,
    Deallocate,
    Delete,
    Attach,
    Detach,
}

fn argv(op: Op, vm: &str) -> Vec<String> {
    let v = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    match op {
        Op::Create => v(&[
            "vm",
            "create",
            "-g",
            "rg",
            "-n",
            vm,
            "--image",
            "vmnode:tiny:1:latest",
            "--size",
            "Standard_B1s",
            "--no-wait",
        ]),
        Op::Start => v(&["vm", "start", "-g", "rg", "-n", vm, "--no-wait"]),
        Op::Stop => v(&[
            "vm",
            "stop",
            "-g",
            "rg",
            "-n",
            vm,
            "--skip-shutdown",
            "--no-wait",
        ]),
        Op::Deallocate => v(&["vm", "deallocate", "-g", "rg", "-n", vm, "--no-wait"]),
        Op::Delete => v(&["vm", "delete", "-g", "rg", "-n", vm, "--yes", "--no-wait"]),
        Op::Attach => v(&[
            "vm",
            "disk",
            "attach",
            "-g",
            "rg",
            "--vm-name",
            vm,
            "-n",
            "d0",
            "--new",
            "--size-gb",
            "1",
        ]),
        Op::Detach => v(&[
            "vm",
            "disk",
            "detach",
            "-g",
            "rg",
            "--vm-name",
            vm,
            "-n",
            "d0",
        ]),
    }
}

fn vm_id(node: &Node, vm: &str) -> String {
    node.json(&["vm", "show", "-g", "rg", "-n", vm])["properties"]["vmId"]
        .as_str()
        .unwrap()
        .to_string()
}

fn prepare(node: &Node, vm: &str, pre: Pre) {
    if pre == Pre::Nothing {
        return;
    }
    node.create_vm("rg", vm, &[]);
    if matches!(pre, Pre::Booted | Pre::BootedWithDisk) {
        node.wait_for_log("rg", vm, "VMNODE-BOOT: ready", LIMIT);
    }
    if pre == Pre::BootedWithDisk {
        node.ok(&argv(Op::Attach, vm)
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>());
    }
    if pre == Pre::Stopped {
        node.ok(&["vm", "stop", "-g", "rg", "-n", vm, "--skip-shutdown"]);
    }
}

/// The data disk `d0` file of `vm`, if its record lists one.
fn data_disk(node: &Node, vm: &str) -> Option<String> {
    let v = node.json(&["vm", "show", "-g", "rg", "-n", vm]);
    v["properties"]["storageProfile"]["dataDisks"][0]["vhd"]["uri"]
        .as_str()
        .map(|u| u.rsplit('/').next().unwrap().to_string())
}

fn quarantined(node: &Node) -> Vec<String> {
    walk(&node.state.join("blobs"))
        .into_iter()
        .map(|p| p.to_string_lossy().to_string())
        .filter(|p| p.contains("/quarantine/") && !p.contains("/.") && p.ends_with(".vhd"))
        .collect()
}

/// Where a create cut at `point` ends after the restart: (provisioning state, power state).
/// Cut before its QEMU was spawned, it failed and nothing of it runs; cut after, the restarted
/// daemon re-adopts the QEMU and the create succeeded.
fn create_ends(point: &str) -> (&'static str, &'static str) {
    match point {
        "create.recorded" | "create.disk_cloned" | "create.disk_leased" | "boot.tap_made" => {
            ("Failed", "VM stopped")
        }
        _ => ("Succeeded", "VM running"),
    }
}

/// A VM whose create resumed a boot snapshot and was cut after QEMU started, re-adopted: its
/// QEMU is the resumed one, continued by the restarted daemon, and its guest took its own
/// identity (MAC) and went on to the network.
fn assert_resumed_and_up(node: &Node, point: &str, vm: &str) {
    let v = node.json(&["vm", "show", "-g", "rg", "-n", vm]);
    let id = v["properties"]["vmId"].as_str().unwrap();
    let pid = node.qemu_pid(id);
    assert!(
        snapshots::resumed(pid),
        "{point}: not a resumed QEMU: {}",
        snapshots::cmdline(pid)
    );
    let mac = v["macAddresses"]
        .as_str()
        .unwrap()
        .replace('-', ":")
        .to_lowercase();
    let log = node.wait_for_log("rg", vm, "VMNODE-BOOT: network ", LIMIT);
    assert!(
        log.contains(&format!("VMNODE-BOOT: resumed mac={mac}")),
        "{point}: the guest did not take its MAC {mac}: {log}"
    );
    assert_eq!(node.qemu_pid(id), pid, "{point}: not the same QEMU");
}

/// Arms `point`, runs `op` on a VM brought to `pre`, checks the daemon died there and what the
/// restarted daemon made of it; then deletes the VM and checks again. With `resumed`, a create
/// resumes the node's boot snapshot (there must be one).
fn crash_at(node: &mut Node, n: usize, point: &str, pre: Pre, op: Op, resumed: bool) {
    let vm = format!("p{n}");
    prepare(node, &vm, pre);
    if resumed {
        assert!(!snapshots::made(node).is_empty(), "{point}: no snapshot");
    }
    let before = (pre != Pre::Nothing).then(|| {
        let id = vm_id(node, &vm);
        let pid = node.qemu_pid(&id);
        (id, pid)
    });
    let quarantine_before = quarantined(node).len();

    let args = argv(op, &vm);
    node.crash_at_point(
        point,
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
        LIMIT,
    );

    node.spawn_daemon();
    let vms = consistent(node);
    let shown = vms
        .iter()
        .find(|v| v["name"] == vm.as_str())
        .map(|v| v["powerState"].as_str().unwrap_or("").to_string());
    eprintln!("{point}: after restart {vm} is {shown:?}");
    // A VM that was running and still is: re-adopted, same pid.
    if let (Some((id, pid)), Some("VM running")) = (&before, shown.as_deref()) {
        assert_eq!(qemu_pids_with(id), vec![*pid], "{point}: not the same QEMU");
    }
    match op {
        // Cut inside the create's transaction: nothing of it was stored.
        Op::Create if point == "create.addr_allocated" => {
            assert_eq!(
                shown, None,
                "{point}: a VM record survived its rolled-back create"
            );
            return;
        }
        // Cut before its QEMU was spawned, a start is lost: the VM is still stopped, and starts
        // when asked again (the delete below goes through a stopped VM's path).
        Op::Start => assert_eq!(shown.as_deref(), Some("VM stopped"), "{point}"),
        // An interrupted stop or deallocate is finished by the restarted daemon.
        Op::Stop => assert_eq!(shown.as_deref(), Some("VM stopped"), "{point}"),
        Op::Deallocate => assert_eq!(shown.as_deref(), Some("VM deallocated"), "{point}"),
        // The delete is finished by the restarted daemon.
        Op::Delete => {
            let deadline = Instant::now() + Duration::from_secs(60);
            while node
                .json(&["vm", "list"])
                .as_array()
                .unwrap()
                .iter()
                .any(|v| v["name"] == vm.as_str())
            {
                assert!(
                    Instant::now() < deadline,
                    "{point}: the delete was never finished"
                );
                std::thread::sleep(Duration::from_millis(200));
            }
        }
        // Cut before the record listed the disk: it is quarantined, not lost, not attached.
        Op::Attach if point == "attach.disk_leased" => {
            assert_eq!(data_disk(node, &vm), None, "{point}");
            assert_eq!(
                quarantined(node).len(),
                quarantine_before + 1,
                "{point}: not quarantined"
            );
        }
        // The record lists the disk: the re-adopted QEMU holds it (plugged again if need be).
        Op::Attach | Op::Detach => {
            let disk = data_disk(node, &vm).unwrap_or_else(|| panic!("{point}: no d0 listed"));
            let (id, pid) = before.clone().unwrap();
            let deadline = Instant::now() + Duration::from_secs(30);
            while qemu_pids_with(&disk) != vec![pid] {
                assert!(
                    Instant::now() < deadline,
                    "{point}: QEMU {pid} of {id} does not hold {disk}: {:?}",
                    qemu_pids_with(&disk)
                );
                std::thread::sleep(Duration::from_millis(200));
            }
            assert_eq!(quarantined(node).len(), quarantine_before, "{point}");
        }
        Op::Create => {
            let v = vms.iter().find(|v| v["name"] == vm.as_str());
            let got = v.map(|v| {
                (
                    v["properties"]["provisioningState"].as_str().unwrap_or(""),
                    v["powerState"].as_str().unwrap_or(""),
                )
            });
            assert_eq!(got, Some(create_ends(point)), "{point}");
            if resumed && create_ends(point).1 == "VM running" {
                assert_resumed_and_up(node, point, &vm);
            }
        }
    }
    if op != Op::Delete {
        node.ok(&["vm", "delete", "-g", "rg", "-n", &vm, "--yes"]);
    }
    let vms = consistent(node);
    assert!(vms.iter().all(|v| v["name"] != vm.as_str()), "{point}");
}

fn run(points: &[(&str, Pre, Op)]) {
    let mut node = Node::start();
    node.ok(&["group", "create", "-n", "rg"]);
    for (n, (point, pre, op)) in points.iter().enumerate() {
        crash_at(&mut node, n, point, *pre, *op, false);
    }
    assert!(consistent(&node).is_empty());
}

/// The create points from the start of the boot on, with the create resuming the node's boot
/// snapshot (made first, by a VM of the same shape that is then deleted).
fn run_resumed(points: &[(&str, Pre, Op)]) {
    let mut node = Node::start();
    node.ok(&["group", "create", "-n", "rg"]);
    node.create_vm("rg", "maker", &[]);
    snapshots::wait_for_snapshot(&node, 0);
    snapshots::wait_idle(&node);
    node.ok(&["vm", "delete", "-g", "rg", "-n", "maker", "--yes"]);
    for (n, (point, pre, op)) in points.iter().enumerate() {
        crash_at(&mut node, n, point, *pre, *op, true);
    }
    assert!(consistent(&node).is_empty());
    // Every create resumed the one snapshot: none was found bad and discarded.
    assert_eq!(snapshots::made(&node).len(), 1);
    assert!(!node.daemon_log().contains("discarding a boot snapshot"));
}

const CREATE: &[(&str, Pre, Op)] = &[
    ("create.addr_allocated", Pre::Nothing, Op::Create),
    ("create.recorded", Pre::Nothing, Op::Create),
    ("create.disk_cloned", Pre::Nothing, Op::Create),
    ("create.disk_leased", Pre::Nothing, Op::Create),
    ("boot.tap_made", Pre::Nothing, Op::Create),
    ("boot.qemu_forked", Pre::Nothing, Op::Create),
    ("boot.qemu_spawned", Pre::Nothing, Op::Create),
    ("boot.qmp_connected", Pre::Nothing, Op::Create),
    ("create.running", Pre::Nothing, Op::Create),
];
/// The points of a create from its boot on, reached by a create that resumes a boot snapshot.
const RESUMED: &[(&str, Pre, Op)] = CREATE.split_at(4).1;
const POWER: &[(&str, Pre, Op)] = &[
    ("start.starting", Pre::Stopped, Op::Start),
    ("stop.stopping", Pre::Running, Op::Stop),
    ("stop.qemu_quit", Pre::Running, Op::Stop),
    ("deallocate.qemu_stopped", Pre::Booted, Op::Deallocate),
];
const DELETE: &[(&str, Pre, Op)] = &[
    ("delete.marked", Pre::Running, Op::Delete),
    ("delete.qemu_stopped", Pre::Running, Op::Delete),
    ("delete.tap_removed", Pre::Running, Op::Delete),
    ("nic.addr_freed", Pre::Running, Op::Delete),
    ("delete.nic_released", Pre::Running, Op::Delete),
    ("delete.disks_deleted", Pre::Running, Op::Delete),
    ("delete.record_removed", Pre::Running, Op::Delete),
];
const DISKS: &[(&str, Pre, Op)] = &[
    ("attach.disk_leased", Pre::Booted, Op::Attach),
    ("attach.recorded", Pre::Booted, Op::Attach),
    ("attach.plugged", Pre::Booted, Op::Attach),
    ("detach.unplugged", Pre::BootedWithDisk, Op::Detach),
    ("detach.released", Pre::BootedWithDisk, Op::Detach),
];

#[test]
fn crash_points_of_create() {
    run(CREATE);
}

#[test]
fn crash_points_of_a_create_that_resumes_a_boot_snapshot() {
    run_resumed(RESUMED);
}

#[test]
fn crash_points_of_start_stop_and_deallocate() {
    run(POWER);
}

#[test]
fn crash_points_of_delete() {
    run(DELETE);
}

#[test]
fn crash_points_of_data_disk_attach_and_detach() {
    run(DISKS);
}

/// The four tests above cover every point the daemon has (src/failpoint.rs `POINTS`), and
/// every point in that list is placed in the daemon's code.
#[test]
fn every_crash_point_is_tested() {
    let src = include_str!("../src/failpoint.rs");
    let list = &src[src.find("POINTS: &[&str] = &[").unwrap()..];
    let list = &list[..list.find("];").unwrap()];
    let mut have: Vec<&str> = list.split('"').skip(1).step_by(2).collect();
    let mut tested: Vec<&str> = [CREATE, POWER, DELETE, DISKS]
        .concat()
        .iter()
        .map(|(p, _, _)| *p)
        .collect();
    have.sort();
    tested.sort();
    // The resumed create's points: the boot's, and the create's end.
    let resumed: Vec<&str> = RESUMED.iter().map(|(p, _, _)| *p).collect();
    assert_eq!(
        resumed,
        [
            "boot.tap_made",
            "boot.qemu_forked",
            "boot.qemu_spawned",
            "boot.qmp_connected",
            "create.running"
        ]
    );
    assert!(have.len() >= 20, "{have:?}");
    assert_eq!(have, tested);
    let code: String = walk(std::path::Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/src"
    )))
    .iter()
    .filter(|p| p.extension().is_some_and(|e| e == "rs"))
    .map(|p| std::fs::read_to_string(p).unwrap())
    .collect();
    for p in have {
        assert!(
            code.contains(&format!("crash_point(\"{p}\")")),
            "{p} is listed but placed nowhere"
        );
    }
}
