//! The power lifecycle on a real guest: stop, start, restart, deallocate, redeploy, and the
//! transitions that must be refused.

mod common;

use std::time::Duration;

use common::{qemu_pids_with, Node};

fn boots(log: &str) -> usize {
    log.matches("VMNODE-BOOT: init ").count()
}

#[test]
fn power_lifecycle_on_a_real_guest() {
    let node = Node::start();
    node.ok(&["group", "create", "-n", "rg"]);
    let vm = node.create_vm("rg", "life", &["--os-disk-size-gb", "2"]);
    assert_eq!(
        vm["properties"]["storageProfile"]["osDisk"]["diskSizeGB"],
        2
    );
    let vm_id = vm["properties"]["vmId"].as_str().unwrap().to_string();
    let show = || node.json(&["vm", "show", "-g", "rg", "-n", "life"]);
    let id = ["-g", "rg", "-n", "life"];
    let run = |verb: &str, extra: &[&str]| {
        let mut a = vec!["vm", verb];
        a.extend(id);
        a.extend(extra);
        node.ok(&a)
    };
    // The temporary resource disk of the size (Standard_B1s: 4096 MiB) is the guest's vdb.
    let log = node.wait_for_log("rg", "life", "VMNODE-BOOT: ready", Duration::from_secs(120));
    assert!(
        log.contains("disk vdb sectors=8388608 serial=resource"),
        "{log}"
    );
    // The OS disk was grown to 2 GiB (sparse) and the guest sees it.
    assert!(log.contains("disk vda sectors=4194304 "), "{log}");
    let temp = node.state.join("local").join(&vm_id).join("resource.raw");
    assert!(temp.exists());
    let tap = node.json(&["network", "nic", "show", "-g", "rg", "-n", "lifeVMNic"])["properties"]
        ["tapName"]
        .as_str()
        .unwrap()
        .to_string();

    // Stop: the guest is asked to shut down and does; QEMU and its tap are gone, the DIP stays.
    run("stop", &[]);
    assert_eq!(show()["powerState"], "VM stopped");
    let log = node.ok(&[
        "vm",
        "boot-diagnostics",
        "get-boot-log",
        "-g",
        "rg",
        "-n",
        "life",
    ]);
    assert!(
        log.contains("VMNODE-BOOT: shutdown requested"),
        "the guest was not asked: {log}"
    );
    assert!(
        qemu_pids_with(&vm_id).is_empty(),
        "QEMU still running after stop"
    );
    assert!(!node.links().contains(&tap), "tap left after stop");
    assert!(temp.exists(), "a stopped VM keeps its temp disk");
    assert_eq!(show()["privateIps"], "10.1.0.4");

    // Illegal transitions are refused with a clear 409.
    let e = node.fails(&["vm", "restart", "-g", "rg", "-n", "life"]);
    assert!(
        e.contains("OperationNotAllowed") && e.contains("not running"),
        "{e}"
    );

    // Start: a new QEMU boots the same disk and gets the same address.
    run("start", &[]);
    assert_eq!(show()["powerState"], "VM running");
    let log = node.wait_for_count(
        "rg",
        "life",
        "dhcp-bound ip=10.1.0.4",
        2,
        Duration::from_secs(120),
    );
    assert_eq!(boots(&log), 2, "{log}");
    let pid1 = node.qemu_pid(&vm_id);

    // Restart: the same QEMU, a new boot.
    node.wait_for_count(
        "rg",
        "life",
        "VMNODE-BOOT: ready",
        2,
        Duration::from_secs(120),
    );
    run("restart", &[]);
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let log = node.ok(&[
            "vm",
            "boot-diagnostics",
            "get-boot-log",
            "--all",
            "-g",
            "rg",
            "-n",
            "life",
        ]);
        if boots(&log) == 3 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no reboot seen: {log}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    assert_eq!(
        qemu_pids_with(&vm_id),
        vec![pid1],
        "restart must not replace QEMU"
    );

    // Deallocate: QEMU and the temp disk go; the OS disk and DIP stay.
    run("deallocate", &[]);
    assert_eq!(show()["powerState"], "VM deallocated");
    assert!(qemu_pids_with(&vm_id).is_empty());
    assert!(!temp.exists(), "deallocate must drop the temp disk");
    assert_eq!(show()["privateIps"], "10.1.0.4");
    let view = node.json(&["vm", "get-instance-view", "-g", "rg", "-n", "life"]);
    assert_eq!(
        view["statuses"][1]["code"], "PowerState/deallocated",
        "{view}"
    );

    // Redeploy from deallocated: a fresh QEMU and a fresh temp disk, running.
    run("redeploy", &[]);
    assert_eq!(show()["powerState"], "VM running");
    assert!(temp.exists());
    let pid2 = node.qemu_pid(&vm_id);
    assert_ne!(pid1, pid2);
    node.wait_for_count(
        "rg",
        "life",
        "dhcp-bound ip=10.1.0.4",
        4,
        Duration::from_secs(120),
    );

    // Stop without asking the guest.
    let before = node.ok(&[
        "vm",
        "boot-diagnostics",
        "get-boot-log",
        "-g",
        "rg",
        "-n",
        "life",
    ]);
    run("stop", &["--skip-shutdown"]);
    let after = node.ok(&[
        "vm",
        "boot-diagnostics",
        "get-boot-log",
        "-g",
        "rg",
        "-n",
        "life",
    ]);
    assert_eq!(
        before.matches("shutdown requested").count(),
        after.matches("shutdown requested").count(),
        "--skip-shutdown must not ask the guest"
    );
    assert!(qemu_pids_with(&vm_id).is_empty());
    // Start of a stopped VM runs it; of a running one, it is a no-op: the same QEMU runs on.
    run("start", &[]);
    assert_eq!(show()["powerState"], "VM running");
    let pid3 = node.qemu_pid(&vm_id);
    run("start", &[]);
    assert_eq!(show()["powerState"], "VM running");
    assert_eq!(qemu_pids_with(&vm_id), vec![pid3]);
}

#[test]
fn guest_initiated_poweroff_frees_everything() {
    let node = Node::start();
    node.ok(&["group", "create", "-n", "rg"]);
    let vm = node.create_vm("rg", "selfstop", &[]);
    let vm_id = vm["properties"]["vmId"].as_str().unwrap().to_string();
    node.wait_for_log(
        "rg",
        "selfstop",
        "VMNODE-BOOT: ready",
        Duration::from_secs(120),
    );
    // The guest powers itself off (run inside it through its own agent: busybox poweroff).
    // QEMU exits; the daemon notices, shows the VM stopped, and nothing is left running.
    let qga = node.run.join("vms").join(&vm_id).join("qga.sock");
    let mut s = std::os::unix::net::UnixStream::connect(&qga).unwrap();
    use std::io::Write;
    s.write_all(b"\xff{\"execute\":\"guest-sync-delimited\",\"arguments\":{\"id\":7}}\n")
        .unwrap();
    s.write_all(b"{\"execute\":\"guest-exec\",\"arguments\":{\"path\":\"/bin/poweroff\"}}\n")
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        if node.json(&["vm", "show", "-g", "rg", "-n", "selfstop"])["powerState"] == "VM stopped" {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "QEMU's exit was not noticed"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(qemu_pids_with(&vm_id).is_empty());
    let log = node.ok(&[
        "vm",
        "boot-diagnostics",
        "get-boot-log",
        "-g",
        "rg",
        "-n",
        "selfstop",
    ]);
    assert!(log.contains("reboot: Power down"), "{log}");
}
