//! A running VM's OS disk is a page blob of the blob service, held under an infinite lease:
//! the Azure Storage SDK sees the lease, cannot delete it, and sees its page ranges grow as the
//! guest writes.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{guest_exec, Node};
use serde_json::Value;

fn inspect(python: &std::path::Path, conn: &str, blob: &str) -> Value {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/sdk/vm_disk_blob.py");
    let out = Command::new(python)
        .args([script, conn, "vhds", blob])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn os_disk_is_a_leased_page_blob_that_follows_guest_writes() {
    let node = Node::start();
    let python = common::python_with(&["azure-storage-blob"]);
    node.ok(&["group", "create", "-n", "rg"]);
    let vm = node.create_vm("rg", "disky", &[]);
    let vm_id = vm["properties"]["vmId"].as_str().unwrap().to_string();
    let disk = vm["properties"]["storageProfile"]["osDisk"]["name"]
        .as_str()
        .unwrap()
        .to_string();
    let blob = format!("{disk}.vhd");
    let conn = node
        .ok(&["storage", "account", "show-connection-string", "-o", "tsv"])
        .trim()
        .to_string();
    let conn = conn.lines().last().unwrap().to_string();
    node.wait_for_log(
        "rg",
        "disky",
        "VMNODE-BOOT: ready",
        Duration::from_secs(120),
    );

    let before = inspect(&python, &conn, &blob);
    assert!(
        before["type"].as_str().unwrap().contains("PageBlob"),
        "{before}"
    );
    assert_eq!(before["lease_state"], "leased", "{before}");
    assert_eq!(before["lease_duration"], "infinite", "{before}");
    assert!(
        before["delete"]
            .as_str()
            .unwrap()
            .starts_with("412 LeaseIdMissing"),
        "{before}"
    );

    // The guest writes 64 KiB at 512 MiB into its own disk.
    let (code, out) = guest_exec(
        &node,
        &vm_id,
        &[
            "/bin/dd",
            "if=/dev/urandom",
            "of=/dev/vda",
            "bs=65536",
            "seek=8192",
            "count=1",
            "conv=fsync",
        ],
    );
    assert_eq!(code, 0, "{out}");
    let after = inspect(&python, &conn, &blob);
    let grown = after["range_bytes"].as_u64().unwrap() - before["range_bytes"].as_u64().unwrap();
    assert!(
        grown >= 65536,
        "page ranges did not follow the guest's write: {before} -> {after}"
    );

    // Deleting the VM releases the lease and deletes the blob.
    node.ok(&["vm", "delete", "-g", "rg", "-n", "disky", "--yes"]);
    assert!(common::walk(&node.state.join("blobs"))
        .iter()
        .all(|p| !p.to_string_lossy().contains(&disk)));

    // deleteOption Detach: the OS disk blob outlives its VM, free of any lease.
    let keep = node.create_vm(
        "rg",
        "keeper",
        &["--os-disk-delete-option", "Detach", "--ip-timeout", "0"],
    );
    assert_eq!(
        keep["properties"]["storageProfile"]["osDisk"]["deleteOption"],
        "Detach"
    );
    let kblob = format!(
        "{}.vhd",
        keep["properties"]["storageProfile"]["osDisk"]["name"]
            .as_str()
            .unwrap()
    );
    node.ok(&["vm", "delete", "-g", "rg", "-n", "keeper", "--yes"]);
    let after = inspect(&python, &conn, &kblob);
    assert_eq!(after["lease_state"], "available", "{after}");
    assert_eq!(
        after["delete"], "deleted",
        "a detached disk can be deleted by its owner: {after}"
    );
}
