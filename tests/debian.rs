//! The debian-12 image, a real Debian guest under the node's accelerator (TCG on CI): systemd
//! boots it from its ext4 root to a login prompt on the serial console, its qemu-guest-agent
//! answers, and its own DHCP client (isc-dhcp-client) took the VM's address and computer name.
//! The image is built once per machine (cached in /var/cache/vmnode; `.ci/run` builds it first).

mod common;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};

use common::{guest_exec, Node};

/// A full systemd boot under TCG on a shared 2-core host.
const LOGIN: Duration = Duration::from_secs(600);
const SETTLE: Duration = Duration::from_secs(180);

/// `guest_exec`, retried until the agent answers (it starts with the virtio port, before the
/// network is up) or `limit` passes.
fn exec_when_ready(node: &Node, vm_id: &str, argv: &[&str], limit: Duration) -> (i64, String) {
    let deadline = Instant::now() + limit;
    loop {
        match catch_unwind(AssertUnwindSafe(|| guest_exec(node, vm_id, argv))) {
            Ok(r) => return r,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_secs(2)),
            Err(e) => std::panic::resume_unwind(e),
        }
    }
}

/// Runs `sh -c script` in the guest until its output satisfies `ok`; returns the last output.
fn wait_in_guest(
    node: &Node,
    vm_id: &str,
    script: &str,
    ok: impl Fn(&str) -> bool,
    limit: Duration,
) -> String {
    let deadline = Instant::now() + limit;
    loop {
        let (_, out) = exec_when_ready(node, vm_id, &["/bin/sh", "-c", script], limit);
        if ok(&out) || Instant::now() > deadline {
            return out;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

#[test]
fn debian_12_boots_to_login_with_agent_and_its_own_dhcp_address_and_hostname() {
    let node = Node::start();
    let urn = node.build_image("debian-12");
    assert_eq!(urn, "vmnode:debian:12:latest");
    node.ok(&["group", "create", "-n", "rg"]);
    let started = Instant::now();
    let vm = node.create_vm_from(&urn, "rg", "deb1", &["--computer-name", "deb-guest"]);
    assert_eq!(vm["privateIps"], "10.1.0.4", "{vm}");
    let vm_id = vm["properties"]["vmId"].as_str().unwrap().to_string();

    // systemd's serial getty: the login prompt is on ttyS0 (the last console=).
    let log = node.wait_for_log("rg", "deb1", "login:", LOGIN);
    eprintln!(
        "debian-12: login prompt on the serial console {:.1} s after create",
        started.elapsed().as_secs_f64()
    );
    assert!(log.contains("Debian GNU/Linux 12"), "{log}");
    assert!(
        !log.contains("Gave up waiting for root"),
        "the initramfs did not find the root: {log}"
    );

    // The guest agent answers, from the image's own root file system.
    let (code, os) = exec_when_ready(&node, &vm_id, &["/bin/cat", "/etc/os-release"], SETTLE);
    assert_eq!(code, 0, "{os}");
    assert!(os.contains("VERSION_CODENAME=bookworm"), "{os}");
    eprintln!(
        "debian-12: guest agent answered {:.1} s after create",
        started.elapsed().as_secs_f64()
    );

    // The guest's own DHCP client took the VM's DIP and its computer name (option 12), and
    // keeps the lease (dhclient writes it once its script has applied it).
    let net = wait_in_guest(
        &node,
        &vm_id,
        "hostname; cat /etc/hostname; ip -4 -o addr show dev eth0; \
         cat /var/lib/dhcp/dhclient.eth0.leases",
        |o| o.contains("fixed-address 10.1.0.4;"),
        SETTLE,
    );
    eprintln!(
        "debian-12: DHCP lease, address and hostname {:.1} s after create",
        started.elapsed().as_secs_f64()
    );
    assert!(net.starts_with("deb-guest\ndeb-guest\n"), "hostname: {net}");
    assert!(net.contains("inet 10.1.0.4/24"), "address: {net}");
    assert!(net.contains("fixed-address 10.1.0.4;"), "lease: {net}");
    assert!(
        net.contains("option host-name \"deb-guest\""),
        "lease: {net}"
    );

    // The image shipped no identity: this VM made its own machine-id and, at first boot, its ssh
    // host keys (ssh-keygen -A, which takes a while under TCG: RSA).
    let id = wait_in_guest(
        &node,
        &vm_id,
        "cat /etc/machine-id; ls /etc/ssh/ssh_host_ed25519_key.pub /etc/ssh/ssh_host_rsa_key.pub",
        |o| o.contains("rsa_key.pub\n") && o.contains("ed25519_key.pub\n"),
        SETTLE,
    );
    eprintln!(
        "debian-12: ssh host keys made {:.1} s after create",
        started.elapsed().as_secs_f64()
    );
    // A getty on the VGA screen's text console (a bochs framebuffer: a PVH-booted kernel has no
    // BIOS text mode) and on the serial port; the agent and sshd run.
    let units = wait_in_guest(
        &node,
        &vm_id,
        "cat /sys/class/graphics/fb0/name; systemctl is-active getty@tty1 \
         serial-getty@ttyS0 qemu-guest-agent ssh",
        |o| o.ends_with("active\nactive\nactive\nactive\n"),
        SETTLE,
    );
    assert_eq!(
        units, "bochs-drmdrmfb\nactive\nactive\nactive\nactive\n",
        "fb0, getty@tty1, serial-getty@ttyS0, qemu-guest-agent, ssh"
    );
    let machine_id = id.lines().next().unwrap_or_default();
    assert!(
        machine_id.len() == 32 && machine_id.chars().all(|c| c.is_ascii_hexdigit()),
        "{id}"
    );
    assert!(
        id.contains("/etc/ssh/ssh_host_ed25519_key.pub\n")
            && id.contains("/etc/ssh/ssh_host_rsa_key.pub\n"),
        "{id}"
    );
}
