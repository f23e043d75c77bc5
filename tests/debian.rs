//! The debian-12 image, a real Debian guest under the node's accelerator (TCG on CI): systemd
//! boots it from its ext4 root to a login prompt on the serial console, its qemu-guest-agent
//! answers, its own DHCP client (isc-dhcp-client) took the VM's address and computer name, and
//! vmnode provisioned its osProfile through the agent: the admin user logs in over SSH with the
//! provisioned key (from the test's own namespace, the host end of the vnet) and has sudo.
//! The image is built once per machine (cached in /var/cache/vmnode; `.ci/run` builds it first).

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{exec_when_ready, wait_in_guest, Netns, Node};
use serde_json::Value;

/// A full systemd boot under TCG on a shared 2-core host.
const LOGIN: Duration = Duration::from_secs(600);
const SETTLE: Duration = Duration::from_secs(180);

#[test]
fn debian_12_boots_to_login_with_agent_and_its_own_dhcp_address_and_hostname() {
    let outer = Netns::add("vmdeb");
    let node = Node::start_with_host_netns(&outer.0);
    let urn = node.build_image("debian-12");
    assert_eq!(urn, "vmnode:debian:12:latest");
    node.ok(&["group", "create", "-n", "rg"]);
    // The admin user's key pair, made here (ssh-keygen), and a password.
    let key = node.dir.path().join("id_ed25519");
    let kg = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "vmnode-test", "-f"])
        .arg(&key)
        .output()
        .unwrap();
    assert!(
        kg.status.success(),
        "{}",
        String::from_utf8_lossy(&kg.stderr)
    );
    let pubkey = node.dir.path().join("id_ed25519.pub");
    let custom = node.dir.path().join("custom-data");
    std::fs::write(&custom, "hello from customData\n").unwrap();
    let password = "Deb-Provisioned-Pw-7";
    let started = Instant::now();
    let vm = node.create_vm_from(
        &urn,
        "rg",
        "deb1",
        &[
            "--computer-name",
            "deb-guest",
            "--admin-username",
            "deploy",
            "--admin-password",
            password,
            "--ssh-key-values",
            pubkey.to_str().unwrap(),
            "--custom-data",
            custom.to_str().unwrap(),
        ],
    );
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
    let (_, net) = wait_in_guest(
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
    let (_, id) = wait_in_guest(
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
    let (_, units) = wait_in_guest(
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

    provisioned(&node, &vm_id, &outer.0, &key, password, started);
}

/// ssh as `dest` offering no key (and no password: BatchMode); returns what it printed.
fn ssh_without_key(netns: &str, dest: &str) -> String {
    let o = Command::new("ip")
        .args(["netns", "exec", netns, "ssh"])
        .args([
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "BatchMode=yes",
            "-o",
            "PubkeyAuthentication=no",
            "-o",
            "ConnectTimeout=10",
            dest,
            "true",
        ])
        .output()
        .unwrap();
    assert!(!o.status.success());
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// `ssh -i key dest cmd` from `netns`, retried until it works (sshd may be reloading) or
/// SETTLE passes; returns stdout.
fn ssh_with_key(netns: &str, key: &std::path::Path, dest: &str, cmd: &str) -> String {
    let deadline = Instant::now() + SETTLE;
    loop {
        let o = Command::new("ip")
            .args(["netns", "exec", netns, "ssh", "-i"])
            .arg(key)
            .args([
                "-o",
                "StrictHostKeyChecking=no",
                "-o",
                "UserKnownHostsFile=/dev/null",
                "-o",
                "BatchMode=yes",
                "-o",
                "ConnectTimeout=10",
                dest,
                cmd,
            ])
            .output()
            .unwrap();
        if o.status.success() {
            return String::from_utf8_lossy(&o.stdout).into_owned();
        }
        assert!(
            Instant::now() < deadline,
            "ssh {dest}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        std::thread::sleep(Duration::from_secs(2));
    }
}

/// Waits until the VM's instance view says OS provisioning is complete; returns the view.
fn wait_provisioned(node: &Node, vm: &str) -> Value {
    let deadline = Instant::now() + LOGIN;
    loop {
        let v = node.json(&["vm", "get-instance-view", "-g", "rg", "-n", vm]);
        let done = v["statuses"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["code"] == "OSProvisioningComplete");
        if done {
            return v;
        }
        assert!(Instant::now() < deadline, "{vm} not provisioned: {v:#}");
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// debian-12's own files as a version that boots through firmware (manifest `boot: firmware`,
/// no `-kernel`): SeaBIOS, gptmbr.bin, SYSLINUX on the disk's FAT partition, then the kernel and
/// initrd it holds. Returns its URN.
fn firmware_variant(node: &Node) -> String {
    let versions = node.state.join("images/vmnode/debian/12");
    let src = std::fs::read_dir(&versions)
        .unwrap()
        .flatten()
        .next()
        .unwrap()
        .path();
    let dst = node.state.join("images/vmnode/debian/12-firmware/1.0.0");
    std::fs::create_dir_all(&dst).unwrap();
    for f in std::fs::read_dir(&src).unwrap().flatten() {
        let name = f.file_name();
        if name != "manifest.json" && !name.to_string_lossy().starts_with('.') {
            std::fs::hard_link(f.path(), dst.join(&name)).unwrap();
        }
    }
    let mut m: Value =
        serde_json::from_slice(&std::fs::read(src.join("manifest.json")).unwrap()).unwrap();
    m["sku"] = Value::from("12-firmware");
    m["version"] = Value::from("1.0.0");
    m["boot"] = Value::from("firmware");
    std::fs::write(dst.join("manifest.json"), m.to_string()).unwrap();
    "vmnode:debian:12-firmware:latest".into()
}

/// A key-only admin (`--authentication-type ssh`, the key in a file of the user's choosing):
/// sshd takes no passwords, the user has none, and the key works from where it was put. This
/// guest boots through firmware from the image's own boot partition, not from a kernel file.
#[test]
fn debian_12_through_firmware_key_only_admin_logs_in_with_its_key_and_never_with_a_password() {
    let outer = Netns::add("vmdek");
    let node = Node::start_with_host_netns(&outer.0);
    node.build_image("debian-12");
    let urn = firmware_variant(&node);
    node.ok(&["group", "create", "-n", "rg"]);
    let key = node.dir.path().join("id_ed25519");
    let kg = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&key)
        .output()
        .unwrap();
    assert!(
        kg.status.success(),
        "{}",
        String::from_utf8_lossy(&kg.stderr)
    );
    let pubkey = std::fs::read_to_string(node.dir.path().join("id_ed25519.pub")).unwrap();
    let vm = node.create_vm_from(
        &urn,
        "rg",
        "deb2",
        &[
            "--admin-username",
            "ops",
            "--ssh-key-values",
            pubkey.trim(),
            // sshd also reads this file (AuthorizedKeysFile's second name in Debian).
            "--ssh-dest-key-path",
            "/home/ops/.ssh/authorized_keys2",
            "--authentication-type",
            "ssh",
        ],
    );
    let vm_id = vm["properties"]["vmId"].as_str().unwrap().to_string();
    assert_eq!(
        vm["properties"]["osProfile"]["linuxConfiguration"]["disablePasswordAuthentication"],
        true
    );
    wait_provisioned(&node, "deb2");
    // Firmware, then SYSLINUX from the disk, then the kernel: all in the serial log.
    let log = node.boot_log("rg", "deb2");
    let find = |what: &str| {
        log.find(what)
            .unwrap_or_else(|| panic!("no {what:?} in the boot log:\n{log:?}"))
    };
    let bios = find("SeaBIOS");
    // SYSLINUX's own banner, not its `SAY` line: SeaBIOS's serial console mirrors the screen
    // onto the same port, so a line SYSLINUX writes to both can arrive interleaved with its
    // copy, differently from run to run (CI saw the SAY line mangled once).
    let loader = find("SYSLINUX 6.04");
    let kernel = find("Linux version");
    assert!(bios < loader && loader < kernel, "{log}");
    let out = ssh_with_key(&outer.0, &key, "ops@10.1.0.4", "hostname; sudo -n whoami");
    assert_eq!(out, "deb2\nroot\n");
    let denied = ssh_without_key(&outer.0, "ops@10.1.0.4");
    assert!(denied.contains("Permission denied (publickey)"), "{denied}");
    let (_, files) = exec_when_ready(
        &node,
        &vm_id,
        &[
            "/bin/sh",
            "-c",
            "cat /etc/ssh/sshd_config.d/50-vmnode-provisioning.conf; \
             stat -c '%U %a' /home/ops/.ssh/authorized_keys2; getent shadow ops | cut -d: -f2",
        ],
        SETTLE,
    );
    // No password: the account's is locked ('!' as useradd leaves it).
    assert_eq!(files, "PasswordAuthentication no\nops 600\n!\n");
}

/// The osProfile went in through the guest agent: the agent is Ready, the admin user logs in
/// over SSH with its key from the host side and has sudo; the password is set as the hash the
/// node keeps, and neither it nor customData is ever shown.
fn provisioned(
    node: &Node,
    vm_id: &str,
    netns: &str,
    key: &std::path::Path,
    password: &str,
    started: Instant,
) {
    let view = wait_provisioned(node, "deb1");
    assert_eq!(view["statuses"][0]["code"], "ProvisioningState/succeeded");
    let agent = &view["vmAgent"];
    assert_eq!(agent["statuses"][0]["displayStatus"], "Ready", "{view:#}");
    assert_eq!(agent["statuses"][0]["message"], "Guest Agent is running");
    assert!(
        agent["vmAgentVersion"].as_str().unwrap().starts_with('7'),
        "{agent}"
    );
    let summary = view["statuses"][2]["message"].as_str().unwrap();
    assert!(summary.contains("admin user deploy"), "{summary}");
    assert!(!summary.contains("Not done"), "{summary}");
    // When the agent first answered and when provisioning finished, from the boot's timeline.
    let boots = node.json(&["vm", "boot-diagnostics", "boots", "-g", "rg", "-n", "deb1"]);
    let b = &boots[0];
    let at = |needle: &str| {
        b["events"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["text"].as_str().unwrap_or_default().contains(needle))
            .map(|e| (e["atMs"].as_i64().unwrap() - b["startedMs"].as_i64().unwrap()) as f64 / 1e3)
    };
    eprintln!(
        "debian-12: agent Ready {:.1} s and provisioned {:.1} s after QEMU started (observed {:.1} s after create)",
        at("the guest agent answered").unwrap_or(-1.0),
        at("provisioning succeeded").unwrap_or(-1.0),
        started.elapsed().as_secs_f64()
    );

    // SSH with the provisioned key, from the test's namespace (the host end of the vnet).
    let stdout = ssh_with_key(
        netns,
        key,
        "deploy@10.1.0.4",
        "hostname; id -nG; sudo -n true && echo sudo-ok",
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines[0], "deb-guest", "{stdout}");
    assert!(lines[1].split_whitespace().any(|g| g == "sudo"), "{stdout}");
    assert_eq!(lines[2], "sudo-ok", "{stdout}");

    // sshd offers passwords here (one was given): a client without a key is told so.
    let denied = ssh_without_key(netns, "deploy@10.1.0.4");
    assert!(
        denied.contains("Permission denied (publickey,password)"),
        "{denied}"
    );

    // The guest's DHCP lease in the node's table carries the computer name.
    let leases = node.json(&["network", "dhcp", "leases"]);
    let lease = leases
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["ipAddress"] == "10.1.0.4")
        .cloned()
        .unwrap_or(Value::Null);
    assert_eq!(lease["hostname"], "deb-guest", "{leases:#}");

    // The password is the node's hash of it; sshd takes passwords (one was given); customData.
    let (_, shadow) = exec_when_ready(
        node,
        vm_id,
        &["/usr/bin/getent", "shadow", "deploy"],
        SETTLE,
    );
    let hash = shadow
        .trim()
        .split(':')
        .nth(1)
        .unwrap_or_default()
        .to_string();
    assert!(
        sha_crypt::sha512_check(password, &hash).is_ok(),
        "shadow: {shadow}"
    );
    let (_, conf) = exec_when_ready(
        node,
        vm_id,
        &[
            "/bin/sh",
            "-c",
            "cat /etc/ssh/sshd_config.d/50-vmnode-provisioning.conf /var/lib/waagent/CustomData",
        ],
        SETTLE,
    );
    assert_eq!(
        conf,
        "PasswordAuthentication yes\naGVsbG8gZnJvbSBjdXN0b21EYXRhCg=="
    );
    let vm = node.json(&["vm", "show", "-g", "rg", "-n", "deb1"]);
    let os = &vm["properties"]["osProfile"];
    assert!(
        os.get("adminPassword").is_none() && os.get("customData").is_none(),
        "{os:#}"
    );
    assert_eq!(os["adminUsername"], "deploy");
    assert_eq!(
        os["linuxConfiguration"]["disablePasswordAuthentication"],
        false
    );
    let k = os["linuxConfiguration"]["ssh"]["publicKeys"][0].clone();
    assert_eq!(k["path"], "/home/deploy/.ssh/authorized_keys", "{os:#}");
    assert!(k["keyData"].as_str().unwrap().starts_with("ssh-ed25519 "));
    let log = node.daemon_log();
    assert!(!log.contains(password) && !log.contains("aGVsbG8gZnJvbSBjdXN0b21EYXRh"));
}
