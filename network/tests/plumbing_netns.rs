//! Plumbing against the real kernel, each test in namespaces of its own.

#[allow(dead_code)]
mod common;

use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::{Duration, Instant};

use common::{ip, link_addrs, link_json, Netns};
use vmnode_network::plumbing::{
    attach_to_bridge, create_tap, delete_link, ensure_bridge, ensure_netns, link_exists,
    list_links, tap_name_for, udp_socket_in_ns, PlumbingError,
};

fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn tap_lives_as_long_as_its_fd() {
    let ns = Netns::new("tap");
    let tap = tap_name_for(&format!("nic-{}", ns.name));
    let fd = create_tap(&ns.name, &tap).expect("create_tap");

    assert!(link_exists(&ns.name, &tap));
    assert!(list_links(&ns.name).unwrap().contains(&tap));
    // Made inside the namespace, not in the host's (this process's) one.
    assert!(!Path::new("/sys/class/net").join(&tap).exists());

    let info = link_json(&ns.name, &tap);
    assert_eq!(info["linkinfo"]["info_kind"], "tun");
    assert_eq!(info["linkinfo"]["info_data"]["type"], "tap");
    assert_eq!(info["linkinfo"]["info_data"]["pi"], false);
    assert_eq!(info["linkinfo"]["info_data"]["vnet_hdr"], true);
    assert_eq!(info["linkinfo"]["info_data"]["persist"], false);

    // Close-on-exec is set; the daemon clears it only for QEMU.
    // SAFETY: F_GETFD on a descriptor we own.
    let flags = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFD) };
    assert!(flags >= 0 && flags & libc::FD_CLOEXEC != 0, "flags {flags}");

    // A second open of the same tap while the first is held fails.
    assert!(create_tap(&ns.name, &tap).is_err());

    // On a bridge and up.
    ensure_bridge(&ns.name, "br0", &[]).unwrap();
    attach_to_bridge(&ns.name, &tap, "br0").unwrap();
    let info = link_json(&ns.name, &tap);
    assert_eq!(info["master"], "br0");
    assert!(info["flags"].as_array().unwrap().iter().any(|f| f == "UP"));

    drop(fd);
    wait_until("the tap to disappear", || !link_exists(&ns.name, &tap));
    assert!(!list_links(&ns.name).unwrap().contains(&tap));
}

#[test]
fn tap_in_missing_namespace_fails() {
    let err = create_tap("vmnt-does-not-exist", "vt0").unwrap_err();
    assert!(matches!(err, PlumbingError::Sys { .. }), "{err}");
    assert!(matches!(
        create_tap("vmnt-x", "bad/name"),
        Err(PlumbingError::InvalidName { .. })
    ));
}

#[test]
fn bridge_is_idempotent() {
    let ns = Netns::new("br");
    let addrs = [
        "10.1.0.1/24".parse().unwrap(),
        "168.63.129.16/32".parse().unwrap(),
    ];
    ensure_bridge(&ns.name, "vnet0", &addrs).unwrap();
    ensure_bridge(&ns.name, "vnet0", &addrs).unwrap();
    let info = link_json(&ns.name, "vnet0");
    assert_eq!(info["linkinfo"]["info_kind"], "bridge");
    assert!(info["flags"].as_array().unwrap().iter().any(|f| f == "UP"));
    let mut got = link_addrs(&ns.name, "vnet0");
    got.sort();
    assert_eq!(got, vec!["10.1.0.1/24", "168.63.129.16/32"]);

    // Adding an address later keeps the others.
    ensure_bridge(&ns.name, "vnet0", &["10.2.0.1/24".parse().unwrap()]).unwrap();
    assert_eq!(link_addrs(&ns.name, "vnet0").len(), 3);

    // A link of another kind under the bridge's name is refused.
    ip(&ns.name, "link add v0 type veth peer name v1");
    let err = ensure_bridge(&ns.name, "v0", &[]).unwrap_err();
    assert!(matches!(err, PlumbingError::WrongKind { .. }), "{err}");

    let links = list_links(&ns.name).unwrap();
    for l in ["lo", "vnet0", "v0", "v1"] {
        assert!(links.iter().any(|x| x == l), "{l} not in {links:?}");
    }
    delete_link(&ns.name, "v0").unwrap();
    delete_link(&ns.name, "v0").unwrap();
    assert!(!link_exists(&ns.name, "v0"));
    assert!(
        !link_exists(&ns.name, "v1"),
        "deleting a veth end deletes its peer"
    );
    assert!(link_exists(&ns.name, "vnet0"));
}

#[test]
fn netns_is_idempotent_with_loopback_up() {
    let ns = Netns::new("ns");
    ensure_netns(&ns.name).unwrap();
    let lo = link_json(&ns.name, "lo");
    assert!(lo["flags"].as_array().unwrap().iter().any(|f| f == "UP"));
    assert_eq!(list_links(&ns.name).unwrap(), vec!["lo"]);
    vmnode_network::plumbing::delete_netns(&ns.name).unwrap();
    vmnode_network::plumbing::delete_netns(&ns.name).unwrap();
    assert!(list_links(&ns.name).is_err());
    assert!(!link_exists(&ns.name, "lo"));
}

#[test]
fn udp_socket_is_bound_to_the_device_in_the_namespace() {
    use nix::sys::socket::{getsockopt, sockopt};
    let ns = Netns::new("udp");
    ensure_bridge(&ns.name, "br0", &["10.1.0.1/24".parse().unwrap()]).unwrap();
    let sock = udp_socket_in_ns(&ns.name, "br0", 67).unwrap();
    assert_eq!(sock.local_addr().unwrap().to_string(), "0.0.0.0:67");
    // nix 0.29 returns the kernel's NUL terminator as part of the name.
    let dev = getsockopt(&sock, sockopt::BindToDevice).unwrap();
    assert_eq!(dev.to_string_lossy().trim_end_matches('\0'), "br0");
    assert!(getsockopt(&sock, sockopt::Broadcast).unwrap());
    assert!(getsockopt(&sock, sockopt::ReuseAddr).unwrap());
    // Non-blocking: nothing to read is WouldBlock, not a hang.
    let mut buf = [0u8; 16];
    let err = sock.recv_from(&mut buf).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::WouldBlock);
    // SAFETY: F_GETFD on a descriptor we own.
    let flags = unsafe { libc::fcntl(sock.as_raw_fd(), libc::F_GETFD) };
    assert!(flags & libc::FD_CLOEXEC != 0);
    // A second socket on the same port and device (e.g. after a daemon restart) is fine.
    let again = udp_socket_in_ns(&ns.name, "br0", 67).unwrap();
    drop((sock, again));
    // A device that does not exist in the namespace.
    assert!(udp_socket_in_ns(&ns.name, "nope0", 67).is_err());
}
