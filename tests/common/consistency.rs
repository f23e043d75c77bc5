//! What a node must look like after any crash and restart (issue 9, R1): everything on the host
//! belongs to a VM the node knows, in the state the node shows.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use super::{qemu_pids_with, walk, Node};
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

/// Checks the node is consistent; returns its VMs. No orphan QEMU, tap, DHCP lease, blob
/// lease or disk file; a running VM has exactly one QEMU, others none; no disk file is open
/// in two QEMU processes; disks no VM lists only in the quarantine container.
pub fn consistent(node: &Node) -> Vec<Value> {
    let vms = settle(node);
    let root = node.dir.path().to_string_lossy().to_string();
    let mut running = HashSet::new();
    for v in &vms {
        let id = v["properties"]["vmId"].as_str().unwrap();
        let pids = qemu_pids_with(id);
        match v["powerState"].as_str().unwrap() {
            "VM running" => {
                assert_eq!(
                    pids.len(),
                    1,
                    "running VM {id} must have exactly one QEMU: {pids:?}"
                );
                running.insert(id.to_string());
            }
            other => assert!(
                pids.is_empty(),
                "VM {id} is '{other}' but QEMU runs: {pids:?}"
            ),
        }
    }
    // No QEMU of this node that no VM accounts for.
    let ours: usize = vms
        .iter()
        .map(|v| qemu_pids_with(v["properties"]["vmId"].as_str().unwrap()).len())
        .sum();
    let all = qemu_pids_with(&root);
    assert_eq!(all.len(), ours, "orphan QEMU processes: {all:?}");
    // Never two QEMU processes on one disk file.
    let mut holders: HashMap<String, Vec<i32>> = HashMap::new();
    for pid in &all {
        for f in std::fs::read_dir(format!("/proc/{pid}/fd"))
            .unwrap()
            .flatten()
        {
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
        assert_eq!(pids.len(), 1, "{disk} is open in QEMU {pids:?}");
    }
    // Taps only for running VMs' NICs.
    let taps = node.links().lines().filter(|l| l.contains(": vt")).count();
    assert_eq!(taps, running.len(), "orphan taps: {}", node.links());
    // Disk files only for VMs that exist (a VM whose create was cut short may have none);
    // anything else is in quarantine.
    let names: HashSet<String> = vms.iter().flat_map(disk_files).collect();
    for d in walk(&node.state.join("blobs"))
        .into_iter()
        .filter(|p| p.to_string_lossy().ends_with(".vhd"))
        .filter(|p| !p.to_string_lossy().contains("/quarantine/"))
        .filter(|p| !p.to_string_lossy().contains("/."))
    {
        let f = d.file_name().unwrap().to_string_lossy().to_string();
        assert!(names.contains(&f), "orphan disk {f} (not quarantined)");
    }
    // DHCP leases only for NICs that exist.
    let leases = node.json(&["network", "dhcp", "leases"]);
    let macs: HashSet<String> = vms
        .iter()
        .map(|v| v["macAddresses"].as_str().unwrap().to_string())
        .collect();
    for l in leases.as_array().unwrap() {
        assert!(
            macs.contains(l["macAddress"].as_str().unwrap()),
            "orphan lease {l}"
        );
    }
    // Blob leases: every disk under its VM's lease, no lease for a disk no VM lists.
    // (A VM whose create was cut before its disk was made is Failed and has none.)
    let failed: Vec<&str> = vms
        .iter()
        .filter(|v| v["properties"]["provisioningState"] == "Failed")
        .filter_map(|v| v["properties"]["vmId"].as_str())
        .collect();
    let findings = node.json(&["storage", "check"]);
    let findings: Vec<&Value> = findings
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| {
            f["kind"] != "DiskMissing"
                || !failed
                    .iter()
                    .any(|id| f["detail"].as_str().unwrap_or("").contains(id))
        })
        .collect();
    assert!(findings.is_empty(), "blob lease findings: {findings:?}");
    vms
}
