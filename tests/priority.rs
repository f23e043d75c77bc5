//! The daemon runs above its guests: every daemon thread (API, blob service, DHCP workers,
//! blocking pool) has `serve --nice`'s niceness (-5 by default), and every thread of a guest's
//! QEMU has the default 0, so booting guests cannot starve the services the node answers with.

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
}
