//! Bring your own image with cloud-init: the `debian-12-cloudinit` sku (built like debian-12,
//! cached in /var/cache/vmnode) is converted to qcow2 with qemu-img, imported with
//! `vmnode image import` under a new URN (a firmware-boot, cloud-init image: no kernel file),
//! and a VM made from it with a computer name, an admin user and an SSH key. The guest boots
//! through SeaBIOS and SYSLINUX, and cloud-init applies the NoCloud seed vmnode made from
//! osProfile: host name, user, authorized key; SSH with that key works from the test's netns.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{wait_in_guest, Netns, Node};

/// A firmware boot and cloud-init under TCG; Debian guests run one at a time
/// (.config/nextest.toml), so this fails with its serial log before nextest's 15 min kill.
const LOGIN: Duration = Duration::from_secs(600);
const SETTLE: Duration = Duration::from_secs(300);

#[test]
fn imported_cloud_init_image_boots_through_firmware_and_applies_the_seed() {
    let outer = Netns::add("vmci");
    let node = Node::start_with_host_netns(&outer.0);
    let built = node.build_image("debian-12-cloudinit");
    assert_eq!(built, "vmnode:debian:12-cloudinit:latest");

    // The user's file: the sku's disk as qcow2.
    let work = tempfile::tempdir().unwrap();
    let built_disk = common::walk(&node.state.join("images/vmnode/debian/12-cloudinit"))
        .into_iter()
        .find(|p| p.ends_with("disk.raw"))
        .expect("the built disk");
    let qcow = work.path().join("debian-ci.qcow2");
    let s = Command::new("qemu-img")
        .args(["convert", "-f", "raw", "-O", "qcow2"])
        .arg(&built_disk)
        .arg(&qcow)
        .status()
        .unwrap();
    assert!(s.success());

    // Imported while the daemon runs: it sees the new version on its next create.
    let out = node.cli(&[
        "image",
        "import",
        "--file",
        qcow.to_str().unwrap(),
        "--urn",
        "Contoso:debian-byo:12-ci:1.0.0",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("converting: 100%"), "{err}");
    assert!(err.contains("cloud-init: found"), "auto detection: {err}");
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(
            node.state
                .join("images/Contoso/debian-byo/12-ci/1.0.0/manifest.json"),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(manifest["boot"], "firmware", "{manifest}");
    assert_eq!(manifest["provisioning"], "cloud-init", "{manifest}");
    // The same version again is refused, and stays as it was.
    let again = node.fails(&[
        "image",
        "import",
        "--file",
        qcow.to_str().unwrap(),
        "--urn",
        "Contoso:debian-byo:12-ci:1.0.0",
    ]);
    assert!(again.contains("already exists"), "{again}");

    // A key pair for the admin user.
    let key = work.path().join("id_ed25519");
    let s = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "ci@test", "-f"])
        .arg(&key)
        .status()
        .unwrap();
    assert!(s.success());
    let pubkey = std::fs::read_to_string(key.with_extension("pub")).unwrap();

    node.ok(&["group", "create", "-n", "rg"]);
    let started = Instant::now();
    let vm = node.create_vm_from(
        "Contoso:debian-byo:12-ci:latest",
        "rg",
        "ci1",
        &[
            "--computer-name",
            "ci-guest",
            "--admin-username",
            "clouduser",
            "--admin-password",
            "Not-In-The-Seed-42",
            "--ssh-key-values",
            key.with_extension("pub").to_str().unwrap(),
        ],
    );
    let dip = vm["privateIps"].as_str().unwrap().to_string();
    let vm_id = vm["properties"]["vmId"].as_str().unwrap().to_string();
    // GET shows the key, never the password.
    let shown = node.ok(&["vm", "show", "-g", "rg", "-n", "ci1", "-o", "json"]);
    assert!(
        shown.contains(pubkey.split_whitespace().nth(1).unwrap()),
        "{shown}"
    );
    assert!(!shown.contains("Not-In-The-Seed-42"), "{shown}");
    // The seed on disk holds the hash only.
    let seed = node.state.join("local").join(&vm_id).join("cidata.iso");
    let seed_bytes = std::fs::read(&seed).unwrap();
    assert!(!String::from_utf8_lossy(&seed_bytes).contains("Not-In-The-Seed-42"));

    // Firmware: SeaBIOS, then SYSLINUX, then the kernel, all in the serial log.
    let log = node.wait_for_log("rg", "ci1", "login:", LOGIN);
    let login_s = started.elapsed().as_secs_f64();
    eprintln!("cloud-init image (firmware): login prompt {login_s:.1} s after create");
    let bios = log.find("SeaBIOS").expect("SeaBIOS on the serial log");
    let loader = log.find("SYSLINUX").expect("SYSLINUX on the serial log");
    let kernel = log.find("Linux version").expect("the kernel");
    assert!(bios < loader && loader < kernel, "{log}");

    // cloud-init ran from the seed: host name, user, key.
    let (_, out) = wait_in_guest(
        &node,
        &vm_id,
        "cloud-init status --wait >/dev/null 2>&1; cloud-init status; hostname; \
         id clouduser; cat /home/clouduser/.ssh/authorized_keys; \
         cat /var/lib/cloud/data/instance-id",
        |o| o.contains("status: done") || o.contains("status: error"),
        SETTLE,
    );
    eprintln!(
        "cloud-init image: cloud-init done {:.1} s after create",
        started.elapsed().as_secs_f64()
    );
    assert!(out.contains("status: done"), "{out}");
    assert!(out.contains("\nci-guest\n"), "hostname: {out}");
    assert!(out.contains("uid=") && out.contains("(clouduser)"), "{out}");
    assert!(out.contains(pubkey.trim()), "authorized_keys: {out}");
    assert!(out.contains(&vm_id), "instance-id: {out}");

    // SSH with the key from the test's namespace (the host end of the vnet's veth).
    let deadline = Instant::now() + SETTLE;
    let ssh = loop {
        let o = Command::new("ip")
            .args(["netns", "exec", &outer.0, "ssh", "-i"])
            .arg(&key)
            .args([
                "-o",
                "StrictHostKeyChecking=no",
                "-o",
                "UserKnownHostsFile=/dev/null",
                "-o",
                "BatchMode=yes",
                "-o",
                "ConnectTimeout=10",
                &format!("clouduser@{dip}"),
                "hostname",
            ])
            .output()
            .unwrap();
        if o.status.success() || Instant::now() > deadline {
            break o;
        }
        std::thread::sleep(Duration::from_secs(3));
    };
    assert!(
        ssh.status.success(),
        "ssh: {}",
        String::from_utf8_lossy(&ssh.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&ssh.stdout).trim(), "ci-guest");

    // The seed goes with the VM.
    node.ok(&["vm", "delete", "-g", "rg", "-n", "ci1", "--yes"]);
    assert!(!seed.exists(), "the seed outlived its VM");
}
