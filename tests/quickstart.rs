//! The README's main job, as a user runs it (with its own dirs, port and namespace so it can run
//! beside the other tests): it boots a VM and shows its IP and boot log.

mod common;

use std::process::Command;

#[test]
fn quickstart_boots_a_vm_and_shows_ip_and_boot_log() {
    let dir = tempfile::Builder::new()
        .prefix("vmnode-qs-")
        .tempdir()
        .unwrap();
    let (state, run) = (dir.path().join("state"), dir.path().join("run"));
    let netns = format!("vmnq-{}", std::process::id());
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let blob = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = Command::new(common::BIN)
        .args([
            "quickstart",
            "--no-install",
            "--netns",
            &netns,
            "--host-netns",
            "off",
        ])
        .args([
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--blob-listen",
            &format!("127.0.0.1:{blob}"),
        ])
        .env("VMNODE_STATE_DIR", &state)
        .env("VMNODE_RUN_DIR", &run)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    // Stop what quickstart started, whatever happened.
    let daemon_pid = std::fs::read_to_string(run.join("vmnode.pid")).unwrap_or_default();
    let _ = Command::new("kill")
        .args(["-9", daemon_pid.trim()])
        .status();
    for pid in common::qemu_pids_with(&dir.path().to_string_lossy()) {
        let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
    }
    let _ = Command::new("ip").args(["netns", "del", &netns]).status();

    assert!(
        out.status.success(),
        "quickstart failed:\n{stdout}\n{stderr}"
    );
    assert!(
        stdout.contains("VM vm1 is VM running with private IP 10.1.0.4"),
        "{stdout}"
    );
    assert!(
        stdout.contains("VMNODE-BOOT: "),
        "no boot log tail:\n{stdout}"
    );
    assert!(
        stdout.contains("vmnode vm delete -g quickstart -n vm1"),
        "{stdout}"
    );
    assert!(stderr.contains("starting the daemon"), "{stderr}");
    assert!(stderr.contains("image vmnode:tiny:1:"), "{stderr}");
}
