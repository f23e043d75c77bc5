//! The image catalog: `latest` resolves to the highest version and the VM records
//! `exactVersion`; `vmnode image publish|unpublish`; an unpublished version breaks pinned creates
//! with the cloud's error while `latest` keeps working; image files are checked against their
//! manifest's sha256 before a VM is made from them. Only tiny guests are booted.

mod common;

use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::Node;
use serde_json::Value;

const BOOT: Duration = Duration::from_secs(180);

/// The version `image build tiny` published (catalog.json's, not hard-coded here).
fn tiny_version(node: &Node) -> String {
    let rows = node.json(&["image", "list"]);
    let urn = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["urn"].as_str().unwrap().to_string())
        .find(|u| u.starts_with("vmnode:tiny:1:"))
        .expect("tiny is published");
    urn.rsplit(':').next().unwrap().to_string()
}

fn exact_version(vm: &Value) -> String {
    vm["properties"]["storageProfile"]["imageReference"]["exactVersion"]
        .as_str()
        .unwrap()
        .to_string()
}

fn vm_names(node: &Node) -> Vec<String> {
    node.json(&["vm", "list"])
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap().to_string())
        .collect()
}

/// Nothing of VM `name` exists: no record, no NIC, no OS disk blob, no QEMU.
fn assert_nothing_of(node: &Node, rg: &str, name: &str) {
    assert!(
        !vm_names(node).contains(&name.to_string()),
        "a VM record was left"
    );
    let e = node.fails(&["vm", "show", "-g", rg, "-n", name]);
    assert!(
        e.contains("ResourceNotFound") || e.contains("not found"),
        "{e}"
    );
    let nics = node.json(&["network", "nic", "list", "-g", rg]);
    assert!(
        !nics.to_string().contains(&format!("{name}VMNic")),
        "a NIC was left: {nics}"
    );
    let disks: Vec<PathBuf> = common::walk(&node.state.join("blobs"))
        .into_iter()
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(&format!("{name}-osdisk")))
        })
        .collect();
    assert!(disks.is_empty(), "an OS disk was left: {disks:?}");
    assert!(
        common::qemu_pids_with(&format!("guest={name},")).is_empty(),
        "a QEMU was left"
    );
}

/// A file of a published version, made sure to be that version's own (one link: changing it
/// cannot touch the shared build cache or another version).
fn own_file(node: &Node, version: &str, name: &str) -> PathBuf {
    let p = node
        .state
        .join("images/vmnode/tiny/1")
        .join(version)
        .join(name);
    assert_eq!(
        std::fs::metadata(&p).unwrap().nlink(),
        1,
        "{} is shared; refusing to change it",
        p.display()
    );
    p
}

/// Flips one byte in place (same inode, same size).
fn flip_byte(path: &Path, at: u64) {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, at).unwrap();
    b[0] ^= 0xff;
    f.write_all_at(&b, at).unwrap();
    f.sync_all().unwrap();
}

fn sha256(path: &Path) -> String {
    let out = Command::new("sha256sum").arg(path).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

fn manifest(node: &Node, version: &str) -> Value {
    let p = node
        .state
        .join("images/vmnode/tiny/1")
        .join(version)
        .join("manifest.json");
    serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
}

#[test]
fn latest_is_the_highest_version_and_unpublish_breaks_only_pinned_creates() {
    let node = Node::start();
    node.ok(&["group", "create", "-n", "cat"]);
    let base = tiny_version(&node);
    // A higher version of tiny, published while the daemon runs (the catalog is what is on disk).
    let urn = node.ok(&[
        "image",
        "publish",
        "--urn",
        "vmnode:tiny:1:9.0.0",
        "--from",
        "vmnode:tiny:1:latest",
    ]);
    assert_eq!(urn.trim(), "vmnode:tiny:1:9.0.0");

    // latest = 9.0.0, recorded as the VM's exactVersion; the version asked for stays `latest`.
    // (Asked for by its alias, the recipe's name, as `az vm create --image Debian11` does.)
    let newest = node.create_vm_from("tiny", "cat", "newest", &[]);
    assert_eq!(
        newest["properties"]["storageProfile"]["imageReference"]["offer"],
        "tiny"
    );
    assert_eq!(exact_version(&newest), "9.0.0");
    assert_eq!(
        newest["properties"]["storageProfile"]["imageReference"]["version"],
        "latest"
    );
    node.wait_for_log("cat", "newest", "VMNODE-BOOT: ready", BOOT);
    // A pinned version is used as asked.
    let pinned = node.create_vm_from(&format!("vmnode:tiny:1:{base}"), "cat", "pinned", &[]);
    assert_eq!(exact_version(&pinned), base);

    // Unpublish 9.0.0 (no daemon involved).
    let out = node.cli(&["image", "unpublish", "--urn", "vmnode:tiny:1:9.0.0"]);
    assert!(out.status.success(), "{out:?}");
    assert!(!node.state.join("images/vmnode/tiny/1/9.0.0").exists());
    assert!(!node.ok(&["image", "list"]).contains("9.0.0"));

    // A create pinned to it fails with the cloud's error and status, naming what exists …
    let e = node.fails(&[
        "vm",
        "create",
        "-g",
        "cat",
        "-n",
        "gone",
        "--image",
        "vmnode:tiny:1:9.0.0",
        "--size",
        "Standard_B1s",
    ]);
    assert!(
        e.contains("PlatformImageNotFound (404): The platform image 'vmnode:tiny:1:9.0.0' is not available. Verify that all fields in the storage profile are correct."),
        "{e}"
    );
    assert!(
        e.contains(&format!(
            "Versions of vmnode:tiny:1 on this node: {base} (or `latest`)."
        )),
        "{e}"
    );
    // … and makes nothing.
    assert_nothing_of(&node, "cat", "gone");

    // latest still works and now means the highest remaining version.
    let after = node.create_vm("cat", "after", &[]);
    assert_eq!(exact_version(&after), base);
    node.wait_for_log("cat", "after", "VMNODE-BOOT: ready", BOOT);

    // The VM made from 9.0.0 is untouched, and even boots again (a new QEMU needs the
    // version's kernel: it is kept aside, not deleted).
    let show = node.json(&["vm", "show", "-g", "cat", "-n", "newest"]);
    assert_eq!(exact_version(&show), "9.0.0");
    assert_eq!(show["powerState"], "VM running");
    node.ok(&["vm", "stop", "-g", "cat", "-n", "newest"]);
    node.ok(&["vm", "start", "-g", "cat", "-n", "newest"]);
    node.wait_for_count("cat", "newest", "VMNODE-BOOT: ready", 2, BOOT);
}

#[test]
fn a_corrupted_image_file_fails_the_create_and_leaves_nothing() {
    let node = Node::start();
    node.ok(&["group", "create", "-n", "cat"]);
    let base = tiny_version(&node);
    // Published copies (their own files), so corrupting them touches nothing shared.
    for v in ["2.0.0", "3.0.0"] {
        node.ok(&[
            "image",
            "publish",
            "--urn",
            &format!("vmnode:tiny:1:{v}"),
            "--from",
            "vmnode:tiny:1:latest",
        ]);
    }
    // A good create from 2.0.0 (its files were verified at publish and are stamped).
    let ok = node.create_vm_from("vmnode:tiny:1:2.0.0", "cat", "good", &[]);
    assert_eq!(exact_version(&ok), "2.0.0");

    // One byte of the initrd flipped in place: same inode and size, so only the hash can tell.
    let initrd = own_file(&node, "2.0.0", "initrd.cpio");
    let before = std::fs::metadata(&initrd).unwrap();
    flip_byte(&initrd, 100);
    let after = std::fs::metadata(&initrd).unwrap();
    assert_eq!((before.ino(), before.len()), (after.ino(), after.len()));
    let expected = manifest(&node, "2.0.0")["files"]["initrd.cpio"]["sha256"]
        .as_str()
        .unwrap()
        .to_string();
    let actual = sha256(&initrd);
    assert_ne!(expected, actual);
    let e = node.fails(&[
        "vm",
        "create",
        "-g",
        "cat",
        "-n",
        "bad",
        "--image",
        "vmnode:tiny:1:2.0.0",
        "--size",
        "Standard_B1s",
    ]);
    assert!(e.contains("ImageCorrupted (409)"), "{e}");
    assert!(
        e.contains(&format!(
            "its file {} has sha256 {actual}, but its manifest says {expected}",
            initrd.display()
        )),
        "{e}"
    );
    assert!(
        e.contains("vmnode image unpublish --urn vmnode:tiny:1:2.0.0")
            && e.contains("vmnode image build tiny --rebuild"),
        "the error says how to fix it: {e}"
    );
    assert_nothing_of(&node, "cat", "bad");
    // The running VM made from it earlier is not affected.
    node.wait_for_log("cat", "good", "VMNODE-BOOT: ready", BOOT);

    // A flipped byte in the disk of 3.0.0 (never used yet) is caught the same way.
    let disk = own_file(&node, "3.0.0", "disk.raw");
    flip_byte(&disk, 1 << 20);
    let e = node.fails(&[
        "vm",
        "create",
        "-g",
        "cat",
        "-n",
        "bad3",
        "--image",
        "vmnode:tiny:1:3.0.0",
        "--size",
        "Standard_B1s",
    ]);
    assert!(
        e.contains("ImageCorrupted (409)") && e.contains(&format!("its file {}", disk.display())),
        "{e}"
    );
    assert_nothing_of(&node, "cat", "bad3");
    // `image verify` re-hashes everything and says the same.
    let e = node.fails(&["image", "verify", "--urn", "vmnode:tiny:1:3.0.0"]);
    assert!(e.contains("is corrupted") && e.contains("disk.raw"), "{e}");
    let out = node.ok(&["image", "verify", "--urn", &format!("vmnode:tiny:1:{base}")]);
    let files = std::fs::read_dir(node.state.join("images/vmnode/tiny/1").join(&base))
        .unwrap()
        .flatten()
        .filter(|f| {
            f.file_name() != "manifest.json" && !f.file_name().to_string_lossy().starts_with('.')
        })
        .count();
    assert!(
        out.contains(&format!("{files} files match the manifest")),
        "{out}"
    );

    // The fix the message gives: unpublish, publish a good copy; creates work again.
    node.ok(&["image", "unpublish", "--urn", "vmnode:tiny:1:2.0.0"]);
    node.ok(&[
        "image",
        "publish",
        "--urn",
        "vmnode:tiny:1:2.0.0",
        "--from",
        &format!("vmnode:tiny:1:{base}"),
    ]);
    let again = node.create_vm_from("vmnode:tiny:1:2.0.0", "cat", "again", &[]);
    assert_eq!(
        again["properties"]["provisioningState"], "Succeeded",
        "{again}"
    );
}

#[test]
fn publish_and_unpublish_need_no_daemon_and_say_what_is_wrong() {
    let mut node = Node::start();
    node.kill_daemon();
    let base = tiny_version(&node);
    let tiny_dir = node
        .state
        .join("images/vmnode/tiny/1")
        .join(&base)
        .display()
        .to_string();
    let fails = |args: &[&str], want: &[&str]| {
        let e = node.fails(args);
        for w in want {
            assert!(e.contains(w), "vmnode {}: {e}", args.join(" "));
        }
    };
    // Unknown versions, `latest`, bad URNs.
    fails(
        &["image", "unpublish", "--urn", "vmnode:tiny:1:7.7.7"],
        &[
            "image vmnode:tiny:1:7.7.7 is not published",
            &format!("Versions of vmnode:tiny:1 on this node: {base}"),
        ],
    );
    fails(
        &["image", "unpublish", "--urn", "nobody:none:0:1.0.0"],
        &[&format!("its images are: vmnode:tiny:1:{base}")],
    );
    fails(
        &["image", "unpublish", "--urn", "vmnode:tiny:1:latest"],
        &["exact version, not `latest`"],
    );
    fails(
        &["image", "unpublish", "--urn", "vmnode:tiny"],
        &["is not an image URN"],
    );
    fails(
        &[
            "image",
            "publish",
            "--urn",
            "vmnode:tiny:1:latest",
            "--from",
            &tiny_dir,
        ],
        &["needs an exact version Major.Minor.Patch"],
    );
    fails(
        &[
            "image",
            "publish",
            "--urn",
            "vmnode:tiny:1:1.0",
            "--from",
            &tiny_dir,
        ],
        &["needs an exact version Major.Minor.Patch"],
    );
    fails(
        &[
            "image",
            "publish",
            "--urn",
            &format!("vmnode:tiny:1:{base}"),
            "--from",
            &tiny_dir,
        ],
        &["is already published", "vmnode image unpublish --urn"],
    );
    fails(
        &[
            "image",
            "publish",
            "--urn",
            "vmnode:tiny:1:5.0.0",
            "--from",
            "vmnode:tiny:1:6.6.6",
        ],
        &["The platform image 'vmnode:tiny:1:6.6.6' is not available"],
    );
    fails(
        &[
            "image",
            "publish",
            "--urn",
            "vmnode:tiny:1:5.0.0",
            "--from",
            "/no/such/folder",
        ],
        &["neither an image folder nor an image URN"],
    );
    let empty = node.dir.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    fails(
        &[
            "image",
            "publish",
            "--urn",
            "vmnode:tiny:1:5.0.0",
            "--from",
            &empty.display().to_string(),
        ],
        &["has no manifest.json", "vmnode image import"],
    );
    // Nothing half-published.
    assert!(!node.state.join("images/vmnode/tiny/1/5.0.0").exists());

    // From a folder, as a new offer; listed; then withdrawn into .unpublished.
    let out = node.ok(&[
        "image",
        "publish",
        "--urn",
        "vmnode:tinycopy:1:1.2.3",
        "--from",
        &tiny_dir,
    ]);
    assert_eq!(out.trim(), "vmnode:tinycopy:1:1.2.3");
    assert!(node
        .ok(&["image", "list"])
        .contains("vmnode:tinycopy:1:1.2.3"));
    node.ok(&["image", "unpublish", "--urn", "vmnode:TinyCopy:1:1.2.3"]);
    assert!(!node.ok(&["image", "list"]).contains("tinycopy"));
    let kept: Vec<PathBuf> =
        common::walk(&node.state.join("images/.unpublished/vmnode/tinycopy/1"))
            .into_iter()
            .filter(|p| p.ends_with("manifest.json"))
            .collect();
    assert_eq!(kept.len(), 1, "{kept:?}");

    // `vm image list` (through the daemon) prints the rows `az vm image list` prints.
    node.ok(&[
        "image",
        "publish",
        "--urn",
        "vmnode:tiny:1:8.0.0",
        "--from",
        &tiny_dir,
    ]);
    node.spawn_daemon();
    let table = node.ok(&["vm", "image", "list"]);
    let lines: Vec<&str> = table.lines().collect();
    let header: Vec<&str> = lines[0].split_whitespace().collect();
    assert_eq!(
        header,
        [
            "Architecture",
            "Offer",
            "Publisher",
            "Sku",
            "Urn",
            "UrnAlias",
            "Version"
        ],
        "{table}"
    );
    assert!(lines[1].starts_with("------------  "), "{table}");
    let rows: Vec<Vec<&str>> = lines[2..]
        .iter()
        .map(|l| l.split_whitespace().collect())
        .collect();
    // One row per version, oldest first; the newest of a recipe's sku carries its alias.
    assert_eq!(
        rows,
        vec![
            vec![
                "x64",
                "tiny",
                "vmnode",
                "1",
                &format!("vmnode:tiny:1:{base}"),
                &base
            ],
            vec![
                "x64",
                "tiny",
                "vmnode",
                "1",
                "vmnode:tiny:1:8.0.0",
                "tiny",
                "8.0.0"
            ],
        ],
        "{table}"
    );
    let json = node.json(&["vm", "image", "list", "--publisher", "VMNODE", "--sku", "1"]);
    assert_eq!(json.as_array().unwrap().len(), 2, "{json}");
    assert_eq!(json[1]["urnAlias"], "tiny");
}

/// Runs `tests/sdk/{script}` as the SDK tests do (tests/sdk.rs).

#[test]
fn the_image_api_through_the_azure_sdk() {
    let node = Node::start();
    node.ok(&["group", "create", "-n", "sdkimg"]);
    for v in ["1.1.0", "1.10.0", "1.2.0"] {
        node.ok(&[
            "image",
            "publish",
            "--urn",
            &format!("vmnode:tiny:1:{v}"),
            "--from",
            "vmnode:tiny:1:latest",
        ]);
    }
    node.ok(&["image", "unpublish", "--urn", "vmnode:tiny:1:1.2.0"]);
    common::run_sdk_script(
        &node,
        &["azure-mgmt-compute", "azure-mgmt-resource"],
        "images.py",
        "images-ok",
    );
    // The script's failed create left nothing.
    assert_nothing_of(&node, "sdkimg", "sdkgone");
}
