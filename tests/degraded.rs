//! A degraded host (issue 9, R2), on real daemons and real tiny guests, each in its own namespace:
//! a QEMU monitor that stops answering or whose socket is gone, a state dir that is full or takes
//! no writes, and a host network restart that deletes the vnet's bridge and a running VM's tap.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{guest_exec, walk, Node};
use serde_json::Value;

const LIMIT: Duration = Duration::from_secs(120);

fn show(node: &Node, name: &str) -> Value {
    node.json(&["vm", "show", "-g", "rg", "-n", name])
}

fn power(node: &Node, name: &str) -> String {
    show(node, name)["powerState"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// Waits until the VM shows `want` as its power state.
fn wait_power(node: &Node, name: &str, want: &str) {
    let deadline = Instant::now() + LIMIT;
    loop {
        let got = power(node, name);
        if got == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{name} still '{got}', not '{want}', after {LIMIT:?}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Whether process `pid` exists and is not a zombie; its state letter.
fn proc_state(pid: i32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let st = stat.rsplit(')').next()?.trim_start().chars().next()?;
    (st != 'Z').then_some(st)
}

fn sh(cmd: &str) -> (bool, String) {
    let out = Command::new("sh").args(["-c", cmd]).output().unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn boot(node: &Node, name: &str) -> (String, i32) {
    let vm = node.create_vm("rg", name, &[]);
    let vm_id = vm["properties"]["vmId"].as_str().unwrap().to_string();
    node.wait_for_log("rg", name, "VMNODE-BOOT: ready", LIMIT);
    wait_power(node, name, "VM running");
    let pid = node.qemu_pid(&vm_id);
    (vm_id, pid)
}

/// QMP unreachable, two ways, each with the code path it exercises:
/// 1. QEMU stopped (SIGSTOP): the connection stays open and `query-status` times out (the
///    actor's periodic probe) → unknown; SIGCONT → the next probe answers → running.
/// 2. The socket path gone while the daemon restarts (renamed away): re-adoption finds QEMU alive
///    without a monitor → unknown; the probe keeps reconnecting, and when the path is back it
///    connects → running.
///
/// Neither kills QEMU: the same pid lives throughout and the guest answers afterwards.
///
/// The VM is one resumed from its shape's boot snapshot (made first, by a VM then deleted): a
/// resumed QEMU's monitor must go through the same.
#[test]
fn qmp_unreachable_shows_unknown_never_kills_and_comes_back() {
    let mut node = Node::start();
    node.ok(&["group", "create", "-n", "rg"]);
    node.create_vm("rg", "first", &[]);
    common::snapshots::wait_for_snapshot(&node, 0);
    node.ok(&["vm", "delete", "-g", "rg", "-n", "first", "--yes"]);
    let (vm_id, pid) = boot(&node, "q");
    assert!(
        common::snapshots::resumed(pid),
        "{}",
        common::snapshots::cmdline(pid)
    );

    // 1. A monitor that does not answer.
    sh(&format!("kill -STOP {pid}"));
    let t = Instant::now();
    wait_power(&node, "q", "VM status unknown");
    eprintln!("SIGSTOP → unknown in {:?}", t.elapsed());
    let view = node.json(&["vm", "get-instance-view", "-g", "rg", "-n", "q"]);
    assert_eq!(view["statuses"][1]["code"], "PowerState/unknown", "{view}");
    assert_eq!(view["statuses"][1]["displayStatus"], "VM status unknown");
    // Several probes later it is still unknown and QEMU is still there, stopped: never killed.
    std::thread::sleep(Duration::from_secs(15));
    assert_eq!(power(&node, "q"), "VM status unknown");
    assert_eq!(proc_state(pid), Some('T'), "QEMU {pid} was killed");
    sh(&format!("kill -CONT {pid}"));
    let t = Instant::now();
    wait_power(&node, "q", "VM running");
    eprintln!("SIGCONT → running in {:?}", t.elapsed());
    assert_eq!(node.qemu_pid(&vm_id), pid);

    // 2. A monitor socket that cannot be reached (while the daemon restarts).
    let run = node.run.join("vms").join(&vm_id);
    node.kill_daemon();
    std::fs::rename(run.join("qmp.sock"), run.join("qmp.sock.away")).unwrap();
    node.spawn_daemon();
    wait_power(&node, "q", "VM status unknown");
    std::thread::sleep(Duration::from_secs(12));
    assert_eq!(power(&node, "q"), "VM status unknown");
    assert!(proc_state(pid).is_some(), "QEMU {pid} was killed");
    std::fs::rename(run.join("qmp.sock.away"), run.join("qmp.sock")).unwrap();
    let t = Instant::now();
    wait_power(&node, "q", "VM running");
    eprintln!("socket back → running in {:?}", t.elapsed());
    assert_eq!(node.qemu_pid(&vm_id), pid);
    assert!(node.daemon_log().contains("QMP reconnected"));
    // The node's OS provisioning, which waited for the agent to answer (here only once the
    // monitor was back), is done first: a reset in its middle would leave its call waiting on
    // the agent, and the agent taken, for up to its step limit.
    let deadline = Instant::now() + LIMIT;
    loop {
        let view = node.json(&["vm", "get-instance-view", "-g", "rg", "-n", "q"]);
        if view["statuses"]
            .as_array()
            .is_some_and(|s| s.iter().any(|s| s["code"] == "OSProvisioningComplete"))
        {
            break;
        }
        assert!(Instant::now() < deadline, "never provisioned: {view}");
        std::thread::sleep(Duration::from_millis(500));
    }
    // The monitor works again (a restart goes through QMP), and so does the guest.
    node.ok(&["vm", "restart", "-g", "rg", "-n", "q"]);
    node.wait_for_count("rg", "q", "VMNODE-BOOT: ready", 2, LIMIT);
    assert_eq!(node.qemu_pid(&vm_id), pid);
    let (code, out) = guest_exec(&node, &vm_id, &["/bin/echo", "alive"]);
    assert_eq!((code, out.trim()), (0, "alive"));
}

/// The state dir on its own small tmpfs, unmounted when the test ends (after its daemon and
/// QEMU are gone).
struct OnTmpfs {
    node: Node,
    mnt: PathBuf,
}

impl Drop for OnTmpfs {
    fn drop(&mut self) {
        self.node.kill_daemon();
        for pid in common::qemu_pids_with(&self.node.dir.path().to_string_lossy()) {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        }
        std::thread::sleep(Duration::from_millis(300));
        let m = self.mnt.display();
        let _ = sh(&format!(
            "chattr -i {m} {m}/blobs 2>/dev/null; umount {m} || umount -l {m}"
        ));
    }
}

/// Every file under `dir` but the filler, SQLite's own files (which a refused request may touch
/// only by reading) and those of the running VM `keep` (its flight recorder goes on, or fails
/// to, on its own).
fn files(dir: &Path, keep: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = walk(dir)
        .into_iter()
        .filter(|p| {
            let n = p.file_name().unwrap().to_string_lossy();
            n != "filler"
                && !n.contains(".db")
                && !n.contains("sqlite")
                && !p.to_string_lossy().contains(keep)
        })
        .collect();
    v.sort();
    v
}

#[test]
fn a_full_or_unwritable_state_dir_refuses_new_work_and_keeps_vms_running() {
    let node = Node::new("off", &[]);
    std::fs::create_dir_all(&node.state).unwrap();
    let (ok, out) = sh(&format!(
        "mount -t tmpfs -o size=384m vmnode-degraded {}",
        node.state.display()
    ));
    assert!(ok, "mount: {out}");
    let mnt = node.state.clone();
    let mut t = OnTmpfs { node, mnt };
    let out = t.node.cli(&["image", "build", "tiny"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    t.node.spawn_daemon();
    let node = &t.node;
    node.ok(&["group", "create", "-n", "rg"]);
    let (vm_id, pid) = boot(node, "keep");
    node.ok(&["storage", "container", "create", "-n", "data"]);
    let src = node.dir.path().join("upload.bin");
    std::fs::write(&src, vec![7u8; 4096]).unwrap();
    let upload = |name: &str| {
        node.cli(&[
            "storage",
            "blob",
            "upload",
            "-c",
            "data",
            "-n",
            name,
            "-f",
            src.to_str().unwrap(),
        ])
    };

    // Full: fill the filesystem to the last block.
    let fill = || {
        use std::io::Write;
        let mut f = std::fs::File::create(node.state.join("filler")).unwrap();
        let chunk = vec![0u8; 1 << 20];
        while f.write_all(&chunk).is_ok() {}
        while f.write_all(&chunk[..4096]).is_ok() {}
    };
    fill();
    let before = files(&node.state, &vm_id);
    let err = node.fails(&[
        "vm",
        "create",
        "-g",
        "rg",
        "-n",
        "more",
        "--image",
        "vmnode:tiny:1:latest",
        "--size",
        "Standard_B1s",
    ]);
    assert!(err.contains("InsufficientStorage (507)"), "{err}");
    assert!(err.contains("free space"), "{err}");
    eprintln!("create on a full state dir: {err}");
    // Nothing half-made: no file, no VM, no NIC, no address.
    assert_eq!(files(&node.state, &vm_id), before);
    let list = node.json(&["vm", "list", "-g", "rg"]);
    assert_eq!(list.as_array().map(Vec::len), Some(1), "{list}");
    node.fails(&["network", "nic", "show", "-g", "rg", "-n", "moreVMNic"]);
    let out = upload("refused.bin");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(err.contains("InsufficientStorage"), "{err}");
    assert_eq!(files(&node.state, &vm_id), before);
    // The running VM runs on: same QEMU, and its guest answers.
    assert_eq!(power(node, "keep"), "VM running");
    assert!(proc_state(pid).is_some());
    let (code, out) = guest_exec(node, &vm_id, &["/bin/echo", "still"]);
    assert_eq!((code, out.trim()), (0, "still"));
    // A guest that writes its (sparse) resource disk now is paused by QEMU on ENOSPC; QEMU is
    // kept, and the guest resumes once there is room again.
    let (code, out) = guest_exec(
        node,
        &vm_id,
        &[
            "/bin/sh",
            "-c",
            "dd if=/dev/urandom of=/dev/vdb bs=1M count=16 conv=fsync >/dev/null 2>&1 &",
        ],
    );
    assert_eq!(code, 0, "{out}");
    let deadline = Instant::now() + LIMIT;
    while !node.daemon_log().contains("paused by a failed disk write") {
        assert!(
            Instant::now() < deadline,
            "the guest was not paused: {}",
            node.daemon_log()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    assert_eq!(power(node, "keep"), "VM running");
    assert!(proc_state(pid).is_some());
    std::fs::remove_file(node.state.join("filler")).unwrap();
    let t = Instant::now();
    while !node
        .daemon_log()
        .contains("the guest paused by a failed disk write is resumed")
    {
        assert!(
            Instant::now() < deadline + LIMIT,
            "the guest was not resumed"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let (code, out) = guest_exec(node, &vm_id, &["/bin/sh", "-c", "sync; echo resumed"]);
    assert_eq!((code, out.trim()), (0, "resumed"));
    eprintln!(
        "guest paused on ENOSPC resumed {:?} after space returned",
        t.elapsed()
    );
    assert_eq!(node.qemu_pid(&vm_id), pid);
    fill();
    // Stopping takes nothing and goes; starting needs room and is refused.
    node.ok(&["vm", "stop", "-g", "rg", "-n", "keep", "--skip-shutdown"]);
    let err = node.fails(&["vm", "start", "-g", "rg", "-n", "keep"]);
    assert!(err.contains("InsufficientStorage (507)"), "{err}");
    assert_eq!(power(node, "keep"), "VM stopped");

    // Space returns: everything works again, no restart needed.
    std::fs::remove_file(node.state.join("filler")).unwrap();
    node.ok(&["vm", "start", "-g", "rg", "-n", "keep"]);
    wait_power(node, "keep", "VM running");
    let pid = node.qemu_pid(&vm_id);
    assert!(upload("after.bin").status.success());
    node.create_vm("rg", "more", &[]);
    wait_power(node, "more", "VM running");

    // Unwritable: the state dir and the blob store take no new entries (the immutable attribute
    // stops root too; a read-only remount is refused while the daemon holds its database open).
    let m = node.state.display();
    let (ok, out) = sh(&format!("chattr +i {m} {m}/blobs"));
    assert!(ok, "chattr: {out}");
    // A successful probe write vouches for a directory for 1 s (storage::health::PROBE_TRUST).
    std::thread::sleep(Duration::from_millis(1500));
    let err = node.fails(&[
        "vm",
        "create",
        "-g",
        "rg",
        "-n",
        "third",
        "--image",
        "vmnode:tiny:1:latest",
        "--size",
        "Standard_B1s",
    ]);
    assert!(err.contains("StateDirUnwritable (503)"), "{err}");
    assert!(err.contains("make it writable"), "{err}");
    eprintln!("create on an unwritable state dir: {err}");
    let out = upload("refused2.bin");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("StateDirUnwritable"));
    assert_eq!(power(node, "keep"), "VM running");
    assert_eq!(node.qemu_pid(&vm_id), pid);
    let (ok, out) = sh(&format!("chattr -i {m} {m}/blobs"));
    assert!(ok, "chattr: {out}");
    node.create_vm("rg", "third", &[]);
    assert!(upload("after2.bin").status.success());
    let list = node.json(&["storage", "blob", "list", "-c", "data"]);
    let names = list.to_string();
    assert!(
        names.contains("after.bin") && names.contains("after2.bin"),
        "{names}"
    );
    assert!(!names.contains("refused"), "{names}");
}

/// A host network restart: the vnet's bridge and a running VM's tap deleted in the daemon's
/// namespace (`ip link del`; the tap's link vanishes although QEMU holds its descriptor). The
/// daemon's watch rebuilds both; the guest keeps its address, renews it with the re-bound DHCP
/// responder and answers pings, on the same QEMU.
#[test]
fn a_deleted_bridge_and_tap_are_rebuilt_and_the_guest_keeps_its_address() {
    let node = Node::start();
    node.ok(&["group", "create", "-n", "rg"]);
    let (vm_id, pid) = boot(&node, "net");
    node.wait_for_log("rg", "net", "dhcp-bound", LIMIT);
    let nic = node.json(&["network", "nic", "show", "-g", "rg", "-n", "netVMNic"]);
    let ip = nic["properties"]["ipConfigurations"][0]["properties"]["privateIPAddress"]
        .as_str()
        .unwrap()
        .to_string();
    let tap = nic["properties"]["tapName"].as_str().unwrap().to_string();
    let ns = node.netns.clone();
    let ping = || sh(&format!("ip netns exec {ns} busybox ping -c 1 -W 2 {ip}")).0;
    let wait_ping = || {
        let deadline = Instant::now() + LIMIT;
        while !ping() {
            assert!(Instant::now() < deadline, "{ip} does not answer pings");
        }
    };
    wait_ping();

    // The tap's interface index: a re-made tap is a new link with a new index.
    let index = |out: &str| -> Option<String> {
        out.lines()
            .find(|l| l.contains(&format!(" {tap}:")))
            .and_then(|l| l.split(':').next())
            .map(|i| i.trim().to_string())
    };
    let before = index(&sh(&format!("ip -n {ns} -o link")).1).expect("the tap before");
    let (ok, out) = sh(&format!(
        "ip -n {ns} link del {tap} && ip -n {ns} link del vnbr0 && ip -n {ns} -o link"
    ));
    assert!(ok, "{out}");
    // What really happens: both links are gone (QEMU's open descriptor does not keep the tap);
    // the watch may already have re-made the tap by now, as a new link.
    eprintln!("links right after the deletes:\n{out}");
    assert_ne!(index(&out).as_deref(), Some(before.as_str()), "{out}");

    let t = Instant::now();
    let deadline = Instant::now() + LIMIT;
    loop {
        let (_, link) = sh(&format!("ip -n {ns} -o link show {tap}"));
        let (_, addr) = sh(&format!("ip -n {ns} -o addr show vnbr0"));
        if link.contains("master vnbr0")
            && link.contains(",UP")
            && addr.contains("10.1.0.1/24")
            && addr.contains("168.63.129.16/32")
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not rebuilt: {link} {addr}\n{}",
            node.daemon_log()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    eprintln!("bridge and tap rebuilt {:?} after the deletes", t.elapsed());
    let log = node.daemon_log();
    assert!(log.contains("rebuilding it"), "{log}");
    assert!(log.contains("re-made on QEMU's descriptor"), "{log}");
    // The same QEMU carries the guest's traffic again.
    wait_ping();
    eprintln!("guest answers pings {:?} after the deletes", t.elapsed());
    assert_eq!(node.qemu_pid(&vm_id), pid);
    // The responder listens on the new bridge: a renewal now is answered, with the same address.
    let renewals = |log: &str| log.matches("dhcp-renew").count();
    let before = renewals(&node.ok(&[
        "vm",
        "boot-diagnostics",
        "get-boot-log",
        "-g",
        "rg",
        "-n",
        "net",
    ]));
    let (code, out) = guest_exec(&node, &vm_id, &["/bin/sh", "-c", "killall -USR1 udhcpc"]);
    assert_eq!(code, 0, "{out}");
    let log = node.wait_for_count("rg", "net", "dhcp-renew", before + 1, LIMIT);
    let last = log
        .lines()
        .rev()
        .find(|l| l.contains("dhcp-renew"))
        .unwrap();
    assert!(last.contains(&format!("ip={ip} ")), "{last}");
    eprintln!("renewal after the rebuild: {last}");
    wait_ping();
}
