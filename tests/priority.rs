//! The daemon runs above its guests: every daemon thread (API, blob service, DHCP workers,
//! blocking pool) has `serve --nice`'s niceness (-5 by default), and every thread of a guest's
//! QEMU has the default 0, so booting guests cannot starve the services the node answers with;
//! and without systemd every QEMU is in the guests' cpu cgroup, so twenty of them weigh as one,
//! while the daemon, started from the root cgroup, is in its own group beside it with ten times
//! the weight (not in its session's autogroup, shared with whatever else the session runs).

mod common;

use common::Node;

/// The niceness of every thread of `pid` (field 19 of /proc/PID/task/TID/stat).
fn thread_nices(pid: u32) -> Vec<(String, i64)> {
    let mut out = vec![];
    for t in std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .flatten()
    {
        let Ok(stat) = std::fs::read_to_string(t.path().join("stat")) else {
            continue; // the thread ended meanwhile
        };
        // The command name is in parentheses and may hold spaces: fields count from its ')'.
        let (head, rest) = stat.rsplit_once(") ").unwrap();
        let name = head.split_once(" (").unwrap().1.to_string();
        let nice = rest.split_whitespace().nth(16).unwrap().parse().unwrap();
        out.push((name, nice));
    }
    out
}

#[test]
fn the_daemon_runs_above_its_guests_and_qemu_at_the_default_priority() {
    let node = Node::start();
    node.ok(&["group", "create", "-n", "rg"]);
    let vm = node.create_vm("rg", "vm1", &[]);
    let id = vm["properties"]["vmId"].as_str().unwrap();

    let daemon = thread_nices(node.daemon.as_ref().unwrap().id());
    assert!(daemon.len() > 2, "{daemon:?}");
    assert!(daemon.iter().all(|(_, n)| *n == -5), "{daemon:?}");

    let qemu = thread_nices(node.qemu_pid(id) as u32);
    assert!(qemu.len() > 1, "{qemu:?}");
    assert!(qemu.iter().all(|(_, n)| *n == 0), "{qemu:?}");

    // Without systemd, QEMU is in the guests' cpu cgroup (every thread: it joined before exec)
    // and the daemon is not; the group has the default weight (100, or 1024 v1 shares).
    let qemu_pid = node.qemu_pid(id) as u32;
    let daemon_pid = node.daemon.as_ref().unwrap().id();
    let (qemu_cg, dir) = cpu_cgroup(qemu_pid);
    assert!(qemu_cg.ends_with("/vmnode-guests"), "{qemu_cg}");
    assert!(!cpu_cgroup(daemon_pid).0.ends_with("/vmnode-guests"));
    all_threads_in(qemu_pid, &dir);
    let weight = weight_of(&dir);
    assert!(["1024", "100"].contains(&weight.as_str()), "{weight}");

    // Started from the root cgroup (as here without systemd), the daemon (every thread) is in
    // `vmnode-daemon`, beside the guests' group, at ten times its weight; started elsewhere it
    // stays where it was put.
    let (daemon_cg, ddir) = cpu_cgroup(daemon_pid);
    let (mine, _) = cpu_cgroup(std::process::id());
    if mine == "/" {
        assert_eq!(daemon_cg, "/vmnode-daemon");
        assert_eq!(ddir.parent(), dir.parent(), "the two groups are siblings");
        let weight = std::fs::read_to_string(ddir.join("cpu.shares"))
            .or_else(|_| std::fs::read_to_string(ddir.join("cpu.weight")))
            .unwrap();
        assert!(["10240", "1000"].contains(&weight.trim()), "{weight}");
        let tasks = std::fs::read_to_string(ddir.join("tasks"))
            .or_else(|_| std::fs::read_to_string(ddir.join("cgroup.threads")))
            .unwrap();
        for t in std::fs::read_dir(format!("/proc/{daemon_pid}/task"))
            .unwrap()
            .flatten()
        {
            let tid = t.file_name().to_str().unwrap().to_string();
            assert!(
                tasks.lines().any(|l| l == tid),
                "daemon thread {tid} outside its group"
            );
        }
    } else {
        assert_eq!(daemon_cg, mine, "a daemon placed by someone else stays");
    }
}

/// Asserts every thread of `pid` is in the cgroup at `dir` (v1 `tasks`, v2 `cgroup.threads`).
fn all_threads_in(pid: u32, dir: &std::path::Path) {
    let tasks = std::fs::read_to_string(dir.join("tasks"))
        .or_else(|_| std::fs::read_to_string(dir.join("cgroup.threads")))
        .unwrap();
    for t in std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .flatten()
    {
        let tid = t.file_name().to_str().unwrap().to_string();
        assert!(
            tasks.lines().any(|l| l == tid),
            "thread {tid} of {pid} outside {}",
            dir.display()
        );
    }
}

/// The cgroup's cpu weight as written (v1 `cpu.shares` or v2 `cpu.weight`).
fn weight_of(dir: &std::path::Path) -> String {
    std::fs::read_to_string(dir.join("cpu.shares"))
        .or_else(|_| std::fs::read_to_string(dir.join("cpu.weight")))
        .unwrap()
        .trim()
        .to_string()
}

/// The cgroup path of `pid` for the cpu controller (v1 `cpu` line, else v2's `0::`) and the
/// directory it is under /sys/fs/cgroup.
fn cpu_cgroup(pid: u32) -> (String, std::path::PathBuf) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let v1 = text.lines().find_map(|l| {
        let mut f = l.splitn(3, ':');
        let (_, ctrls, path) = (f.next()?, f.next()?, f.next()?);
        ctrls
            .split(',')
            .any(|c| c == "cpu")
            .then(|| path.to_string())
    });
    match v1 {
        Some(path) => {
            let mount = ["/sys/fs/cgroup/cpu", "/sys/fs/cgroup/cpu,cpuacct"]
                .into_iter()
                .find(|m| std::path::Path::new(m).join("cgroup.procs").exists())
                .unwrap();
            let dir = std::path::Path::new(mount).join(path.trim_start_matches('/'));
            (path, dir)
        }
        None => {
            let path = text
                .lines()
                .find_map(|l| l.strip_prefix("0::"))
                .unwrap()
                .to_string();
            let dir = std::path::Path::new("/sys/fs/cgroup").join(path.trim_start_matches('/'));
            (path, dir)
        }
    }
}
