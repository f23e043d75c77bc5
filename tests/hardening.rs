//! R3, QEMU hardening, on a real guest booted through the daemon: every QEMU thread is under
//! its seccomp filter (`-sandbox`), QEMU runs as the unprivileged QEMU user with no way back to
//! root, and it holds only the files vmnode handed it — while the guest still boots, gets its
//! DIP, is screenshotted, logs its console, takes a hot-plugged data disk and outlives a daemon
//! restart. The same holds for the two other QEMUs boot snapshots (on by default) run: the one
//! that makes the shape's snapshot after its first VM (`vmnode.template`, off the network) and
//! a VM that resumed the snapshot (`-incoming fd:N`).

mod common;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use common::snapshots::{self, cmdline};
use common::{guest_exec, Node};

const BOOT: Duration = Duration::from_secs(240);

/// `Name:\tvalue` from a /proc status file.
fn field(status: &str, name: &str) -> String {
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name}:")))
        .unwrap_or_else(|| panic!("no {name} in {status}"))
        .trim()
        .to_string()
}

fn qemu_user_ids() -> (String, String) {
    let id = |flag: &str| {
        let out = std::process::Command::new("id")
            .args([flag, "vmnode-qemu"])
            .output()
            .unwrap();
        assert!(out.status.success(), "no vmnode-qemu user");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    (id("-u"), id("-g"))
}

/// Every thread of `pid` has its seccomp filter on (mode 2) and no new privileges.
fn assert_confined(pid: i32) -> usize {
    let mut threads = 0;
    for t in std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .flatten()
    {
        let Ok(status) = std::fs::read_to_string(t.path().join("status")) else {
            continue; // a thread that just ended
        };
        let name = field(&status, "Name");
        assert_eq!(field(&status, "Seccomp"), "2", "thread {name} of {pid}");
        assert_eq!(field(&status, "NoNewPrivs"), "1", "thread {name} of {pid}");
        threads += 1;
    }
    // QEMU runs a main loop, vCPU and RCU threads at least.
    assert!(threads >= 3, "only {threads} threads in {pid}");
    threads
}

/// The unprivileged user's uid and gid, in every slot (real, effective, saved, fs); no root group.
fn assert_unprivileged(pid: i32) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let (uid, gid) = qemu_user_ids();
    assert_ne!(uid, "0");
    for (f, want) in [("Uid", &uid), ("Gid", &gid)] {
        let v: Vec<String> = field(&status, f)
            .split_whitespace()
            .map(str::to_string)
            .collect();
        assert_eq!(v, vec![want.clone(); 4], "{f} of QEMU: {status}");
    }
    let groups = field(&status, "Groups");
    assert!(
        !groups.split_whitespace().any(|g| g == "0"),
        "QEMU is in group root: {groups}"
    );
    assert_eq!(field(&status, "CapEff"), "0000000000000000", "{status}");
    assert_eq!(field(&status, "CapPrm"), "0000000000000000", "{status}");
}

/// `/proc/<pid>/fd`: number → target.
fn fds(pid: i32) -> BTreeMap<i32, String> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let n = e.file_name().to_string_lossy().parse().ok()?;
            let t = std::fs::read_link(e.path()).ok()?;
            Some((n, t.to_string_lossy().into_owned()))
        })
        .collect()
}

/// What fd `n` of a table from [`fds`] is; it must be there.
fn fd_at(table: &BTreeMap<i32, String>, n: i32) -> &str {
    table
        .get(&n)
        .unwrap_or_else(|| panic!("no fd {n}: {table:#?}"))
}

/// What QEMU opens itself: eventfds, its epoll and signalfd, sockets, pipes, /dev/null.
fn made_by_qemu(t: &str) -> bool {
    ["anon_inode:", "socket:", "pipe:"]
        .iter()
        .any(|p| t.starts_with(p))
        || t == "/dev/null"
}

/// What QEMU holds is what vmnode passed (at the numbers argv.rs gives them) plus what QEMU
/// makes itself (eventfds, its epoll, signalfd, sockets of accepted connections, pipes) and its
/// own dups of the passed files. Returns the table, for the report.
fn assert_only_passed(
    pid: i32,
    node: &Node,
    vm_id: &str,
    data_disks: &[&str],
) -> BTreeMap<i32, String> {
    let table = fds(pid);
    let show = || format!("{table:#?}");
    let at = |n: i32| fd_at(&table, n);
    let state = node.state.to_string_lossy().into_owned();
    let run_dir = node.run.join("vms").join(vm_id);
    let in_state = |p: &str| p.starts_with(&state);
    assert_eq!(at(0), "/dev/null");
    let log = run_dir.join("qemu.log").to_string_lossy().into_owned();
    assert_eq!((at(1), at(2)), (log.as_str(), log.as_str()));
    assert_eq!(at(3), "/dev/net/tun", "the tap");
    assert!(at(4).starts_with("socket:"), "QMP listener: {}", show());
    assert!(at(5).starts_with("socket:"), "agent listener: {}", show());
    // Fd-set members (spool, disks) are re-numbered by QEMU (`-add-fd` keeps a dup), and each
    // is held twice while in use (the set's copy and the one QEMU opened from it).
    let held = |what: &str, ok: &dyn Fn(&str) -> bool| -> String {
        let hits: Vec<&String> = table.values().filter(|t| ok(t)).collect();
        assert!(!hits.is_empty(), "{what} not held: {}", show());
        assert!(
            hits.iter().all(|h| *h == hits[0]),
            "two {what}s: {}",
            show()
        );
        hits[0].clone()
    };
    let spool = held("serial spool", &|t| {
        in_state(t) && t.ends_with(".vmnode/serial.spool") && t.contains(vm_id)
    });
    let (kernel, initrd) = (at(7), at(8));
    assert!(
        in_state(kernel) && kernel.ends_with("/vmlinux"),
        "{}",
        show()
    );
    assert!(
        in_state(initrd) && initrd.ends_with("/initrd.cpio"),
        "{}",
        show()
    );
    let os_disk = held("OS disk", &|t| {
        in_state(t) && t.contains("/vhds/") && t.contains("osdisk") && t.ends_with(".vhd")
    });
    let temp = node
        .state
        .join("local")
        .join(vm_id)
        .join("resource.raw")
        .to_string_lossy()
        .into_owned();
    held("temp disk", &|t| t == temp);
    // A screendump in flight (a boot screenshot may be under way at any moment) holds the
    // file the daemon handed over for it: the VM's own screen.ppm, passed with add-fd.
    let screen = run_dir.join("screen.ppm").to_string_lossy().into_owned();
    let mut own: Vec<String> = vec![
        screen,
        log.clone(),
        spool,
        kernel.into(),
        initrd.into(),
        os_disk,
        temp.clone(),
    ];
    for d in data_disks {
        let held = table
            .values()
            .find(|t| in_state(t) && t.ends_with(&format!("/vhds/{d}.vhd")))
            .unwrap_or_else(|| panic!("data disk {d} not held: {}", show()));
        own.push(held.clone());
    }
    for (n, t) in &table {
        let made_by_qemu = made_by_qemu(t) || t == "/dev/net/tun" || t == "/dev/kvm";
        assert!(
            made_by_qemu || own.contains(t),
            "fd {n} -> {t} is none of the VM's own files: {}",
            show()
        );
    }
    // A resumed QEMU got the snapshot's state file as the fd after all the others, read-only
    // (argv.rs); it closes it once the state is loaded, so no VM's QEMU holds a file of the
    // node's snapshots, which every VM of the shape resumes from.
    if snapshots::resumed(pid) {
        let first_free = 7 + 4; // kernel, initrd, OS disk, temp disk
        assert!(
            cmdline(pid).contains(&format!(" -incoming fd:{first_free}")),
            "{}",
            cmdline(pid)
        );
    }
    let snaps = node.state.join("snapshots").to_string_lossy().into_owned();
    assert!(
        !table.values().any(|t| t.starts_with(&snaps)),
        "a VM's QEMU holds a snapshot's file: {}",
        show()
    );
    // The QMP and agent sockets are the daemon's, in a 0700 directory QEMU cannot even enter.
    let mode = std::fs::metadata(&run_dir).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o700, "{}", run_dir.display());
    assert!(run_dir.join("qmp.sock").exists() && run_dir.join("qga.sock").exists());
    table
}

/// The QEMU making a boot snapshot holds only its own files: its disks and console in its
/// `.making-*` dir, its log in its run dir, the image's kernel and initrd; no tap (fd 3 is
/// /dev/null: its NIC is on no network) and nothing of any VM. Its run dir is 0700 too.
fn assert_maker_holds_only_its_own(pid: i32, node: &Node) -> BTreeMap<i32, String> {
    let table = fds(pid);
    let show = || format!("{table:#?}");
    let at = |n: i32| fd_at(&table, n).to_string();
    let making = snapshots::half_made(node);
    assert_eq!(making.len(), 1, "{making:?}");
    let making = making[0].to_string_lossy().into_owned();
    let key = making
        .rsplit_once("/.making-")
        .unwrap()
        .1
        .split('-')
        .next()
        .unwrap()
        .to_string();
    let run_dir = node.run.join("snapshots").join(&key);
    let log = run_dir.join("qemu.log").to_string_lossy().into_owned();
    assert_eq!(at(0), "/dev/null");
    assert_eq!((at(1), at(2)), (log.clone(), log.clone()));
    assert_eq!(at(3), "/dev/null", "no tap: {}", show());
    assert!(at(4).starts_with("socket:"), "QMP listener: {}", show());
    assert!(at(5).starts_with("socket:"), "agent listener: {}", show());
    let images = node.state.join("images").to_string_lossy().into_owned();
    for (n, name) in [(7, "/vmlinux"), (8, "/initrd.cpio")] {
        let t = at(n);
        assert!(t.starts_with(&images) && t.ends_with(name), "{}", show());
    }
    for f in ["console.log", "os.raw"] {
        let want = format!("{making}/{f}");
        assert!(
            table.values().any(|t| *t == want),
            "{f} not held: {}",
            show()
        );
    }
    for (n, t) in &table {
        let made_by_qemu = made_by_qemu(t);
        let own = t.starts_with(&format!("{making}/")) || *t == log || (*n == 7 || *n == 8);
        assert!(
            made_by_qemu || own,
            "fd {n} -> {t} is none of the snapshot's own files: {}",
            show()
        );
    }
    let mode = std::fs::metadata(&run_dir).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o700, "{}", run_dir.display());
    table
}

/// The argv names no host path and no TCP anything, and asks for the sandbox.
fn assert_argv_clean(pid: i32, node: &Node) {
    let cmdline = cmdline(pid);
    assert!(
        !cmdline.contains(&*node.dir.path().to_string_lossy()),
        "{cmdline}"
    );
    assert!(
        cmdline.contains(
            "-sandbox on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny"
        ),
        "{cmdline}"
    );
    for bad in ["tcp:", "telnet", "-monitor", "-runas"] {
        assert!(!cmdline.contains(bad), "{bad}: {cmdline}");
    }
}

/// The cgroups of `pid` (`/proc/<pid>/cgroup`): where the kernel accounts and weighs it.
fn cgroups(pid: i32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap()
}

/// Whether the QEMU user can open `path` (it must not: every file reaches QEMU as an fd).
fn qemu_user_opens(path: &str) -> (bool, String) {
    let (uid, gid) = qemu_user_ids();
    let out = std::process::Command::new("setpriv")
        .args([
            &format!("--reuid={uid}"),
            &format!("--regid={gid}"),
            "--init-groups",
            "--",
            "/bin/sh",
            "-c",
            "exec 3<\"$0\" && echo OPENED",
            path,
        ])
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

fn wait_serials(node: &Node, vm_id: &str, want: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let (_, s) = guest_exec(
            node,
            vm_id,
            &[
                "/bin/sh",
                "-c",
                "for d in /sys/block/vd*; do echo $(basename $d):$(cat $d/serial 2>/dev/null); done",
            ],
        );
        if s.contains(want) {
            return s;
        }
        assert!(Instant::now() < deadline, "the guest never saw {want}: {s}");
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn screenshot(node: &Node, file: &Path) {
    let _ = std::fs::remove_file(file);
    node.ok(&[
        "vm",
        "boot-diagnostics",
        "screenshot",
        "-g",
        "rg",
        "-n",
        "hard",
        "--file",
        file.to_str().unwrap(),
    ]);
    let png = std::fs::read(file).unwrap();
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 1000,
        "{}",
        png.len()
    );
}

#[test]
fn qemu_runs_unprivileged_sandboxed_and_holds_only_its_own_files() {
    let mut node = Node::start();
    node.ok(&["group", "create", "-n", "rg"]);
    let mut create = common::create_args("vmnode:tiny:1:latest", "rg", "hard");
    create.push("--no-wait");
    node.ok(&create);

    // The first VM of its shape: the node makes the shape's boot snapshot beside it, in a QEMU
    // of its own. Caught while its guest boots (frozen for the look: it lives seconds), it is
    // confined as a VM's QEMU is.
    let maker = snapshots::wait_for_maker(&node);
    let deadline = Instant::now() + snapshots::MAKE_LIMIT;
    while !snapshots::half_made(&node)
        .first()
        .is_some_and(|d| std::fs::metadata(d.join("console.log")).is_ok_and(|m| m.len() > 0))
    {
        assert!(
            Instant::now() < deadline,
            "the snapshot's guest never wrote its console"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(maker),
        nix::sys::signal::Signal::SIGSTOP,
    )
    .unwrap();
    let maker_threads = assert_confined(maker);
    assert_unprivileged(maker);
    let maker_fds = assert_maker_holds_only_its_own(maker, &node);
    let maker_cgroups = cgroups(maker);
    assert_argv_clean(maker, &node);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(maker),
        nix::sys::signal::Signal::SIGCONT,
    )
    .unwrap();
    eprintln!(
        "snapshot QEMU {maker}: {maker_threads} threads, all Seccomp: 2; {} fds",
        maker_fds.len()
    );

    let id = node.json(&["vm", "show", "-g", "rg", "-n", "hard"])["properties"]["vmId"]
        .as_str()
        .unwrap()
        .to_string();
    // The guest boots and gets its DIP from the node's DHCP; the console reaches the log.
    let log = node.wait_for_log("rg", "hard", "VMNODE-BOOT: ready", BOOT);
    let ip = node.json(&["vm", "show", "-g", "rg", "-n", "hard"])["privateIps"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        log.contains(&format!("VMNODE-BOOT: network address={ip}/")),
        "no DIP {ip} in {log}"
    );
    let pid = node.qemu_pid(&id);
    let threads = assert_confined(pid);
    assert_unprivileged(pid);
    let table = assert_only_passed(pid, &node, &id, &[]);
    let mut kinds: BTreeMap<&str, usize> = BTreeMap::new();
    for t in table.values() {
        let k = t.split_once(':').map_or(t.as_str(), |(k, _)| k);
        let k = if k.starts_with('/') && !k.starts_with("/dev/") {
            "VM file"
        } else {
            k
        };
        *kinds.entry(k).or_default() += 1;
    }
    eprintln!(
        "QEMU {pid}: {threads} threads, all Seccomp: 2; {} fds: {kinds:?}",
        table.len()
    );
    assert_argv_clean(pid, &node);

    // Nothing of the node is reachable by path as QEMU's user: the daemon keeps its state and
    // run dirs 0700, so even with a way out of QEMU the user opens no disk and no socket.
    for d in [&node.state, &node.run] {
        let mode = std::fs::metadata(d).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700, "{}", d.display());
    }
    let os_disk = table
        .values()
        .find(|t| t.contains("/vhds/") && t.ends_with(".vhd"))
        .unwrap()
        .clone();
    let qmp = node.run.join("vms").join(&id).join("qmp.sock");
    for path in [os_disk.as_str(), qmp.to_str().unwrap()] {
        let (opened, text) = qemu_user_opens(path);
        assert!(
            !opened && text.contains("Permission denied"),
            "vmnode-qemu could open {path}: {text}"
        );
    }

    // Both in the cgroups a VM's QEMU is in (the guests' cpu group, or a scope's).
    assert_eq!(maker_cgroups, cgroups(pid), "the snapshot QEMU's cgroups");

    // A VM that resumes the snapshot: confined the same, and it holds only its own files (the
    // state file it loaded is closed). The snapshot itself is as out of QEMU's reach as a disk.
    let state = snapshots::wait_for_snapshot(&node, 0);
    let (opened, text) = qemu_user_opens(state.to_str().unwrap());
    assert!(
        !opened && text.contains("Permission denied"),
        "vmnode-qemu could open {}: {text}",
        state.display()
    );
    let vm2 = node.create_vm("rg", "hard2", &[]);
    let id2 = vm2["properties"]["vmId"].as_str().unwrap().to_string();
    let pid2 = node.qemu_pid(&id2);
    assert!(snapshots::resumed(pid2), "{}", cmdline(pid2));
    node.wait_for_log("rg", "hard2", "VMNODE-BOOT: ready", BOOT);
    let threads2 = assert_confined(pid2);
    assert_argv_clean(pid2, &node);
    assert_unprivileged(pid2);
    assert_eq!(cgroups(pid2), cgroups(pid), "the resumed QEMU's cgroups");
    let table2 = assert_only_passed(pid2, &node, &id2, &[]);
    eprintln!(
        "resumed QEMU {pid2}: {threads2} threads, all Seccomp: 2; {} fds",
        table2.len()
    );
    let (code, out) = guest_exec(&node, &id2, &["/bin/echo", "resumed"]);
    assert_eq!((code, out.trim()), (0, "resumed"));

    // A screenshot on demand (QEMU writes a file the daemon handed it over QMP).
    let shot = node.dir.path().join("shot.png");
    screenshot(&node, &shot);

    // A hot-plugged data disk: its file goes to QEMU over the QMP socket.
    node.ok(&[
        "vm",
        "disk",
        "attach",
        "-g",
        "rg",
        "--vm-name",
        "hard",
        "-n",
        "d0",
        "--new",
        "--size-gb",
        "1",
    ]);
    wait_serials(&node, &id, ":lun0");
    assert_only_passed(pid, &node, &id, &["d0"]);
    // The guest writes to it and reads it back (the fd is read-write).
    let (code, out) = guest_exec(
        &node,
        &id,
        &[
            "/bin/sh",
            "-c",
            "d=$(for d in /sys/block/vd*; do [ \"$(cat $d/serial)\" = lun0 ] && basename $d; done); \
             echo hardened > /dev/$d && sync && head -c 8 /dev/$d",
        ],
    );
    assert_eq!((code, out.trim()), (0, "hardened"), "{out}");

    // The daemon restarts; the same QEMU is re-adopted and still confined and served.
    node.kill_daemon();
    assert_eq!(
        common::qemu_pids_with(&id),
        vec![pid],
        "QEMU outlives the daemon"
    );
    node.spawn_daemon();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let v = node.json(&["vm", "show", "-g", "rg", "-n", "hard"]);
        if v["powerState"] == "VM running" {
            break;
        }
        assert!(Instant::now() < deadline, "not re-adopted: {v}");
        std::thread::sleep(Duration::from_millis(250));
    }
    assert_eq!(node.qemu_pid(&id), pid);
    assert_confined(pid);
    assert_unprivileged(pid);
    // The resumed VM too: the same QEMU, still confined, holding only its own files.
    assert_eq!(common::qemu_pids_with(&id2), vec![pid2]);
    assert_confined(pid2);
    assert_unprivileged(pid2);
    assert_only_passed(pid2, &node, &id2, &[]);
    screenshot(&node, &shot);
    // Detach after the restart: the disk's fd set goes with it.
    node.ok(&[
        "vm",
        "disk",
        "detach",
        "-g",
        "rg",
        "--vm-name",
        "hard",
        "-n",
        "d0",
    ]);
    let deadline = Instant::now() + Duration::from_secs(60);
    while fds(pid).values().any(|t| t.ends_with("/vhds/d0.vhd")) {
        assert!(
            Instant::now() < deadline,
            "QEMU still holds d0: {:#?}",
            fds(pid)
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    assert_only_passed(pid, &node, &id, &[]);
    // The console still reaches the log after all this.
    let (code, _) = guest_exec(
        &node,
        &id,
        &["/bin/sh", "-c", "echo R3-STILL-LOGGING > /dev/ttyS0"],
    );
    assert_eq!(code, 0);
    node.wait_for_log("rg", "hard", "R3-STILL-LOGGING", Duration::from_secs(30));

    for (name, id) in [("hard", &id), ("hard2", &id2)] {
        node.ok(&["vm", "delete", "-g", "rg", "-n", name, "--yes"]);
        assert!(common::qemu_pids_with(id).is_empty());
    }
}
