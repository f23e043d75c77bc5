//! kill -9 of the daemon at random moments during a churn of VMs (issue 9, R1): creates,
//! starts, stops, deallocations, restarts, deletes and data disk attach/detach are asked for
//! (without waiting) on random VMs, the daemon is killed a random 0–1.5 s later, restarted, and
//! the node must be consistent after every restart (`common::consistency`: no orphan QEMU, tap,
//! DHCP lease, blob lease or disk file, no disk in two QEMUs, unreferenced disks quarantined);
//! every VM that was running and was not touched by the round is re-adopted on the same pid.
//! The churn is real: the first creates all made running VMs, a VM ran in every few rounds,
//! and at least one untouched VM was re-adopted. With boot snapshots on (the default) the
//! snapshot QEMU and resumed VMs are in the churn too; the result line counts the latter.
//!
//! CI runs a short churn (6 VMs, 12 kills). The long job, whose figures are in
//! docs/RELIABILITY.md (R1):
//! `VMNODE_CHURN_VMS=20 VMNODE_CHURN_KILLS=200 cargo nextest run --test churn --no-capture`;
//! `VMNODE_CHURN_SEED` replays a run (its seed is printed first).

mod common;

use std::collections::HashMap;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::consistency::consistent;
use common::{qemu_pids_with, Node};
use rand::{Rng, SeedableRng};

/// A VM runs at the start of at least one round in every this many.
const RUNNING_EVERY: u64 = 4;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Starts `vmnode args…` against the node without waiting for it.
fn spawn_cli(node: &Node, args: &[String]) -> Child {
    node.cli_command(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

fn create_args(name: &str) -> Vec<String> {
    let mut a = common::create_args("vmnode:tiny:1:latest", "rg", name);
    a.push("--no-wait");
    a.iter().map(|s| s.to_string()).collect()
}

/// A random operation on `vm` (shown as `power`, with or without a data disk).
fn random_op(
    rng: &mut impl Rng,
    vm: &str,
    power: &str,
    has_disk: bool,
) -> (&'static str, Vec<String>) {
    let base = |verb: &str, extra: &[&str]| {
        let mut a: Vec<String> = ["vm", verb, "-g", "rg", "-n", vm]
            .iter()
            .map(|s| s.to_string())
            .collect();
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };
    let disk = |verb: &str, extra: &[&str]| {
        let mut a: Vec<String> = ["vm", "disk", verb, "-g", "rg", "--vm-name", vm, "-n", "d0"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };
    let running = power == "VM running";
    match rng.gen_range(0..7) {
        0 if running => ("stop", base("stop", &["--skip-shutdown", "--no-wait"])),
        1 if running => ("deallocate", base("deallocate", &["--no-wait"])),
        2 if running => ("restart", base("restart", &["--no-wait"])),
        3 => ("delete", base("delete", &["--yes", "--no-wait"])),
        4 if has_disk => ("detach", disk("detach", &[])),
        4 | 5 => ("attach", disk("attach", &["--new", "--size-gb", "1"])),
        _ if !running => ("start", base("start", &["--no-wait"])),
        _ => ("stop", base("stop", &["--skip-shutdown", "--no-wait"])),
    }
}

#[test]
fn kill_9_at_random_moments_during_a_churn_of_vms() {
    let want_vms = env_or("VMNODE_CHURN_VMS", 6) as usize;
    let kills = env_or("VMNODE_CHURN_KILLS", 12);
    let seed = env_or("VMNODE_CHURN_SEED", rand::random::<u32>() as u64);
    eprintln!("churn: {want_vms} VMs, {kills} kills, seed {seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut node = Node::start();
    node.ok(&["group", "create", "-n", "rg"]);
    let started = Instant::now();
    let mut next_name = 0;
    let mut ops: HashMap<&str, u32> = HashMap::new();
    let mut same_pid = 0;
    let mut resumed_same_pid = 0;
    // Rounds that began with a VM running, and the last one that did.
    let (mut rounds_running, mut last_running) = (0, 0);
    for _ in 0..want_vms {
        node.ok(&create_args(&format!("c{next_name}"))
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>());
        next_name += 1;
    }

    for k in 0..kills {
        if k % 10 == 0 {
            eprintln!("churn: kill {k} of {kills}, {:?}", started.elapsed());
        }
        let vms = consistent(&node);
        let running = vms
            .iter()
            .filter(|v| v["powerState"] == "VM running")
            .count();
        // The node made the VMs it was asked for before any kill, and they run.
        if k == 0 {
            assert_eq!(
                (vms.len(), running),
                (want_vms, want_vms),
                "the first {want_vms} creates: {vms:#?}"
            );
        }
        // A churn of VMs that never run would check nothing: some run in every few rounds.
        if running > 0 {
            rounds_running += 1;
            last_running = k;
        }
        assert!(
            k - last_running < RUNNING_EVERY,
            "kill {k}: no VM was running in the last {RUNNING_EVERY} rounds: {vms:#?}"
        );
        // Top the node up to its size.
        let mut children = Vec::new();
        let mut touched = Vec::new();
        for _ in vms.len()..want_vms {
            children.push(spawn_cli(&node, &create_args(&format!("c{next_name}"))));
            next_name += 1;
            *ops.entry("create").or_default() += 1;
        }
        // Running VMs and their QEMU, before this round.
        let mut pids = HashMap::new();
        for v in &vms {
            let id = v["properties"]["vmId"].as_str().unwrap().to_string();
            if v["powerState"] == "VM running" {
                pids.insert(id, node.qemu_pid(v["properties"]["vmId"].as_str().unwrap()));
            }
        }
        // One to three operations on random VMs, not waited for.
        for _ in 0..rng.gen_range(1..=3) {
            if vms.is_empty() {
                break;
            }
            let v = &vms[rng.gen_range(0..vms.len())];
            let name = v["name"].as_str().unwrap();
            let has_disk = v["properties"]["storageProfile"]["dataDisks"]
                .as_array()
                .is_some_and(|d| !d.is_empty());
            let (what, args) = random_op(
                &mut rng,
                name,
                v["powerState"].as_str().unwrap_or(""),
                has_disk,
            );
            *ops.entry(what).or_default() += 1;
            touched.push(v["properties"]["vmId"].as_str().unwrap().to_string());
            children.push(spawn_cli(&node, &args));
        }
        std::thread::sleep(Duration::from_millis(rng.gen_range(0..1500)));
        node.kill_daemon();
        for mut c in children {
            let _ = c.kill();
            let _ = c.wait();
        }
        node.spawn_daemon();
        let after = consistent(&node);
        // Untouched running VMs: re-adopted with the same QEMU.
        for (id, pid) in &pids {
            if touched.contains(id) {
                continue;
            }
            let v = after
                .iter()
                .find(|v| v["properties"]["vmId"] == id.as_str())
                .unwrap_or_else(|| panic!("kill {k}: untouched VM {id} is gone"));
            assert_eq!(v["powerState"], "VM running", "kill {k}: untouched VM {id}");
            assert_eq!(
                qemu_pids_with(id),
                vec![*pid],
                "kill {k}: {id} not on the same QEMU"
            );
            same_pid += 1;
            if common::snapshots::resumed(*pid) {
                resumed_same_pid += 1;
            }
        }
    }
    let quarantined = common::walk(&node.state.join("blobs"))
        .iter()
        .filter(|p| {
            p.to_string_lossy().contains("/quarantine/") && !p.to_string_lossy().contains("/.")
        })
        .count();
    eprintln!(
        "churn result: {kills} kills, {next_name} VMs made, ops {ops:?}, {same_pid} re-adoptions \
         on the same pid checked ({resumed_same_pid} of VMs resumed from a boot snapshot), \
         {rounds_running} rounds began with a VM running, {quarantined} disks quarantined, \
         0 inconsistencies (any would have failed the test), {:?}",
        started.elapsed()
    );
    // Kills landed on running VMs the round left alone, and those came back on their QEMU.
    assert!(same_pid > 0, "no untouched running VM was ever re-adopted");
    // Everything that is left can be deleted cleanly.
    for v in consistent(&node) {
        node.ok(&[
            "vm",
            "delete",
            "-g",
            "rg",
            "-n",
            v["name"].as_str().unwrap(),
            "--yes",
        ]);
    }
    assert!(consistent(&node).is_empty());
    assert!(qemu_pids_with(&node.dir.path().to_string_lossy()).is_empty());
}
