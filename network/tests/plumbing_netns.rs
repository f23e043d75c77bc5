//! Plumbing against the real kernel, each test in namespaces of its own.

#[allow(dead_code)]
mod common;

use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::{Duration, Instant};

use common::{ip, link_addrs, link_json, Netns};
use vmnode_network::plumbing::link_addrs as nl_addrs;
use vmnode_network::plumbing::{
    attach_to_bridge, create_tap, delete_link, ensure_bridge, ensure_netns, link_exists,
    list_links, tap_name_for, tcp_listener_in_ns_at, udp_socket_in_ns, PlumbingError,
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

#[test]
fn tcp_listeners_at_one_address_coexist_on_different_bridges() {
    let ns = Netns::new("tcp");
    let at: std::net::SocketAddrV4 = "169.254.169.254:80".parse().unwrap();
    for br in ["br0", "br1"] {
        ensure_bridge(&ns.name, br, &["169.254.169.254/32".parse().unwrap()]).unwrap();
    }
    let a = tcp_listener_in_ns_at(&ns.name, "br0", at).unwrap();
    let b = tcp_listener_in_ns_at(&ns.name, "br1", at).unwrap();
    assert_eq!(a.local_addr().unwrap().to_string(), "169.254.169.254:80");
    // Non-blocking: no connection waiting is WouldBlock, not a hang.
    let err = b.accept().unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::WouldBlock);
    // One bridge has one listener there.
    assert!(tcp_listener_in_ns_at(&ns.name, "br0", at).is_err());
    drop(a);
    let again = tcp_listener_in_ns_at(&ns.name, "br0", at).unwrap();
    drop((again, b));
}

#[test]
fn netlink_queries_agree_with_ip() {
    use vmnode_network::plumbing::{link_is_up, link_master, set_link_up};
    let ns = Netns::new("nl");
    ensure_bridge(&ns.name, "br0", &["10.1.0.1/24".parse().unwrap()]).unwrap();
    ip(&ns.name, "link add d0 type veth peer name d0p");
    assert!(!link_is_up(&ns.name, "d0").unwrap());
    assert_eq!(link_master(&ns.name, "d0").unwrap(), None);
    attach_to_bridge(&ns.name, "d0", "br0").unwrap();
    assert!(link_is_up(&ns.name, "d0").unwrap());
    assert_eq!(link_master(&ns.name, "d0").unwrap().as_deref(), Some("br0"));
    assert_eq!(
        nl_addrs(&ns.name, "br0").unwrap(),
        vec!["10.1.0.1/24".parse().unwrap()]
    );
    assert_eq!(nl_addrs(&ns.name, "d0").unwrap(), vec![]);
    ip(&ns.name, "link add d1 type veth peer name d1p");
    set_link_up(&ns.name, "d1").unwrap();
    assert!(link_is_up(&ns.name, "d1").unwrap());
    assert!(matches!(
        attach_to_bridge(&ns.name, "nope", "br0"),
        Err(PlumbingError::NoSuchLink { .. })
    ));
    assert!(link_is_up(&ns.name, "nope").is_err());
}

/// The host-to-guests veth, with a second test namespace standing in for the host.
#[test]
fn veth_reaches_the_bridge_from_outside() {
    use vmnode_network::plumbing::{ensure_veth_between, link_master};
    let daemon = Netns::new("vd");
    let host = Netns::new("vh");
    let guest = Netns::new("vg");
    ensure_bridge(&daemon.name, "br0", &["10.1.0.1/24".parse().unwrap()]).unwrap();
    let host_addr = "10.1.0.2/24".parse().unwrap();
    for _ in 0..2 {
        ensure_veth_between(
            &host.name,
            &daemon.name,
            "vmnode0",
            "vmhost0",
            "br0",
            host_addr,
        )
        .unwrap();
    }
    assert_eq!(
        link_master(&daemon.name, "vmhost0").unwrap().as_deref(),
        Some("br0")
    );
    assert_eq!(link_addrs(&host.name, "vmnode0"), vec!["10.1.0.2/24"]);
    assert_eq!(
        link_json(&host.name, "vmnode0")["linkinfo"]["info_kind"],
        "veth"
    );

    // A guest on the bridge is reachable from the "host" (its own subnet, no routing).
    ip(
        &daemon.name,
        &format!(
            "link add vt000000000009 type veth peer name eth0 netns {}",
            guest.name
        ),
    );
    attach_to_bridge(&daemon.name, "vt000000000009", "br0").unwrap();
    ip(&guest.name, "addr add 10.1.0.4/24 dev eth0");
    ip(&guest.name, "link set dev eth0 up");
    let ping = |from: &str, to: &str| {
        std::process::Command::new("ip")
            .args([
                "netns", "exec", from, "busybox", "ping", "-c", "1", "-W", "2", to,
            ])
            .output()
            .unwrap()
            .status
            .success()
    };
    assert!(ping(&host.name, "10.1.0.4"), "host end reaches the guest");
    assert!(ping(&host.name, "10.1.0.1"), "and the gateway");

    // Half-made (the inner end gone): remade.
    delete_link(&daemon.name, "vmhost0").unwrap();
    assert!(!link_exists(&host.name, "vmnode0"));
    ensure_veth_between(
        &host.name,
        &daemon.name,
        "vmnode0",
        "vmhost0",
        "br0",
        host_addr,
    )
    .unwrap();
    assert!(link_exists(&daemon.name, "vmhost0"));
    // A non-veth under the outer name is refused.
    ip(&host.name, "link add x0 type bridge");
    let err = ensure_veth_between(&host.name, &daemon.name, "x0", "vmhost1", "br0", host_addr)
        .unwrap_err();
    assert!(matches!(err, PlumbingError::WrongKind { .. }), "{err}");
}
