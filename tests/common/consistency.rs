//! What a node must look like after any crash and restart (issue 9, R1): everything on the host
//! belongs to a VM the node knows, in the state the node shows.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use super::{qemu_pids_with, snapshots, walk, Node};
use serde_json::Value;

/// Waits until no VM is in a transitional state; returns the VM list.
pub fn settle(node: &Node) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let vms = node.json(&["vm", "list"]).as_array().cloned().unwrap();
        let busy = vms.iter().any(|v| {
            let p = v["properties"]["provisioningState"].as_str().unwrap_or("");
            let s = v["powerState"].as_str().unwrap_or("");
            matches!(p, "Creating" | "Deleting")
                || s.ends_with("starting")
                || s.ends_with("stopping")
                || s.ends_with("deallocating")
        });
        if !busy {
            return vms;
        }
        assert!(Instant::now() < deadline, "VMs never settled: {vms:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The blob names (file names) of a VM's OS and data disks.
fn disk_files(v: &Value) -> Vec<String> {
    let sp = &v["properties"]["storageProfile"];
    let mut out = vec![format!("{}.vhd", sp["osDisk"]["name"].as_str().unwrap())];
    for d in sp["dataDisks"].as_array().into_iter().flatten() {
        let uri = d["vhd"]["uri"].as_str().unwrap_or_default();
        out.push(uri.rsplit('/').next().unwrap_or_default().to_string());
    }
    out
}

/// Checks the node is consistent; returns its VMs. No orphan QEMU (a QEMU making a boot
/// snapshot is one of the running daemon's), tap, DHCP lease, blob lease or disk file; a running VM has exactly one QEMU, others none; no disk file is open
/// in two QEMU processes; disks no VM lists only in the quarantine container.
///
/// A VM may be changing under the check (a guest powering off by itself after a re-adoption,
/// a QEMU's exit and its tap's removal): the check is made again for up to 10 s, and fails
/// with what it found if it never holds.
pub fn consistent(node: &Node) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let vms = settle(node);
        let problems = problems(node, &vms);
        if problems.is_empty() {
            return vms;
        }
        assert!(
            Instant::now() < deadline,
            "the node is not consistent:\n{}\nVMs: {:#?}\nlinks: {}",
            problems.join("\n"),
            vms.iter()
                .map(|v| (
                    v["name"].clone(),
                    v["properties"]["vmId"].clone(),
                    v["powerState"].clone(),
                    v["properties"]["provisioningState"].clone()
                ))
                .collect::<Vec<_>>(),
            node.links()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn problems(node: &Node, vms: &[Value]) -> Vec<String> {
    let mut out = Vec::new();
    let root = node.dir.path().to_string_lossy().to_string();
    let mut running = HashSet::new();
    for v in vms {
        let id = v["properties"]["vmId"].as_str().unwrap();
        let pids = qemu_pids_with(id);
        match v["powerState"].as_str().unwrap() {
            "VM running" => {
                if pids.len() != 1 {
                    out.push(format!(
                        "running VM {id} must have exactly one QEMU: {pids:?}"
                    ));
                }
                // Its pidfile names it (what the next restart reads first).
                let pidfile = node.run.join("vms").join(id).join("qemu.pid");
                let named = std::fs::read_to_string(&pidfile)
                    .ok()
                    .and_then(|p| p.trim().parse::<i32>().ok());
                if pids.len() == 1 && named != Some(pids[0]) {
                    out.push(format!(
                        "running VM {id}: pidfile says {named:?}, QEMU is {pids:?}"
                    ));
                }
                running.insert(id.to_string());
            }
            other => {
                if !pids.is_empty() {
                    out.push(format!("VM {id} is '{other}' but QEMU runs: {pids:?}"));
                }
            }
        }
    }
    // No QEMU of this node that no VM accounts for.
    let per_vm: Vec<(String, Vec<i32>)> = vms
        .iter()
        .map(|v| {
            let id = v["properties"]["vmId"].as_str().unwrap();
            (id.to_string(), qemu_pids_with(id))
        })
        .collect();
    let ours: usize = per_vm.iter().map(|(_, p)| p.len()).sum();
    // A QEMU making a boot snapshot is the running daemon's own: named by a pidfile of its
    // run dir (`run/snapshots/<key>/qemu.pid`) and making a `.making-*` snapshot. One that a
    // killed daemon left is killed by the next one at its start.
    let makers = snapshots::makers(node);
    let named: Vec<i32> = walk(&node.run.join("snapshots"))
        .into_iter()
        .filter(|p| p.ends_with("qemu.pid"))
        .filter_map(|p| std::fs::read_to_string(p).ok()?.trim().parse().ok())
        .collect();
    for m in &makers {
        if !named.contains(m) {
            out.push(format!(
                "snapshot QEMU {m} is no snapshot's of the running daemon: {named:?}"
            ));
        }
    }
    let half_made = snapshots::half_made(node);
    if makers.len() < half_made.len() {
        out.push(format!(
            "half-made snapshots {half_made:?} with snapshot QEMUs {makers:?}"
        ));
    }
    let all = qemu_pids_with(&root);
    if all.len() != ours + makers.len() {
        out.push(format!(
            "orphan QEMU processes: {all:?}, VMs' own: {per_vm:?}, making snapshots: {makers:?}"
        ));
    }
    // Never two QEMU processes on one disk file.
    let mut holders: HashMap<String, Vec<i32>> = HashMap::new();
    for pid in &all {
        let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
            continue;
        };
        for f in fds.flatten() {
            if let Ok(t) = std::fs::read_link(f.path()) {
                let t = t.to_string_lossy().to_string();
                if t.ends_with(".vhd") {
                    let h = holders.entry(t).or_default();
                    if !h.contains(pid) {
                        h.push(*pid);
                    }
                }
            }
        }
    }
    for (disk, pids) in &holders {
        if pids.len() != 1 {
            out.push(format!("{disk} is open in QEMU {pids:?}"));
        }
    }
    // Taps only for running VMs' NICs.
    let taps = node.links().lines().filter(|l| l.contains(": vt")).count();
    if taps != running.len() {
        out.push(format!("{taps} taps for {} running VMs", running.len()));
    }
    // OS disk files only for VMs that exist (a VM whose create was cut short may have none).
    let names: HashSet<String> = vms.iter().flat_map(disk_files).collect();
    for d in walk(&node.state.join("blobs"))
        .into_iter()
        .filter(|p| p.to_string_lossy().ends_with(".vhd"))
        .filter(|p| !p.to_string_lossy().contains("/quarantine/"))
        .filter(|p| !p.to_string_lossy().contains("/."))
    {
        let f = d.file_name().unwrap().to_string_lossy().to_string();
        // A data disk detached from its VM stays in the store by design (unleased, with its
        // metadata: `storage check` below finds one that is leased or has none); an OS disk
        // outlives its VM only in quarantine.
        if !names.contains(&f) && f.contains("-osdisk-") {
            out.push(format!("orphan disk {f} (not quarantined)"));
        }
    }
    // DHCP leases only for NICs that exist.
    let leases = node.json(&["network", "dhcp", "leases"]);
    let macs: HashSet<String> = vms
        .iter()
        .map(|v| v["macAddresses"].as_str().unwrap().to_string())
        .collect();
    for l in leases.as_array().unwrap() {
        if !macs.contains(l["macAddress"].as_str().unwrap()) {
            out.push(format!("orphan lease {l}"));
        }
    }
    // Addresses: none held for a NIC that does not exist, every NIC holding its own, none twice
    // (the daemon's own check of its address table against its NICs).
    for f in node.json(&["network", "dhcp", "check"]).as_array().unwrap() {
        out.push(format!("address finding {f}"));
    }
    // Blob leases: every disk under its VM's lease, no lease for a disk no VM lists.
    // (A VM whose create was cut before its disk was made is Failed and has none.)
    let failed: Vec<&str> = vms
        .iter()
        .filter(|v| v["properties"]["provisioningState"] == "Failed")
        .filter_map(|v| v["properties"]["vmId"].as_str())
        .collect();
    let findings = node.json(&["storage", "check"]);
    for f in findings.as_array().unwrap() {
        let excused = f["kind"] == "DiskMissing"
            && failed
                .iter()
                .any(|id| f["detail"].as_str().unwrap_or("").contains(id));
        if !excused {
            out.push(format!("blob finding {f}"));
        }
    }
    out
}
