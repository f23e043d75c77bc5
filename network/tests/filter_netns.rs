//! Anti-spoofing and vnet isolation against the real kernel. A "daemon"
//! namespace holds the bridge; "guest" namespaces are plugged into it by veth
//! pairs whose bridge ends are named like taps. Guests send hand-made frames
//! on packet sockets; a "victim" guest captures what the bridge lets through.
//! Needs root, `nft` (Debian: nftables) and busybox.

#[allow(dead_code)]
mod common;

use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{in_ns, ip, ping, Netns};
use vmnode_network::dhcp::{serve, Binding, DhcpConfig, LeaseBook};
use vmnode_network::filter::{allow_nic, dropped, ensure_filter, remove_nic, set_isolated};
use vmnode_network::plumbing::{attach_to_bridge, ensure_bridge, get_sysctl, udp_socket_in_ns};
use vmnode_network::Mac;

const BCAST: [u8; 6] = [0xff; 6];
const MAC1: Mac = Mac::new([0x00, 0x0d, 0x3a, 0x00, 0x00, 0x01]);
const MAC2: Mac = Mac::new([0x00, 0x0d, 0x3a, 0x00, 0x00, 0x02]);
const MAC3: Mac = Mac::new([0x00, 0x0d, 0x3a, 0x00, 0x00, 0x03]);
const EVIL: [u8; 6] = [0x00, 0x0d, 0x3a, 0x66, 0x66, 0x66];
const IP1: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 4);
const IP2: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 5);

/// Plugs `guest`'s `eth0` (with `mac`) into `bridge` in `daemon` through port `port`.
fn plug(daemon: &Netns, bridge: &str, port: &str, guest: &Netns, mac: Mac) {
    ip(
        &daemon.name,
        &format!(
            "link add {port} type veth peer name eth0 netns {}",
            guest.name
        ),
    );
    attach_to_bridge(&daemon.name, port, bridge).unwrap();
    ip(
        &guest.name,
        &format!("link set dev eth0 address {} up", mac.to_colon()),
    );
}

/// A raw packet socket on `eth0` of the calling thread's namespace.
fn packet_socket(timeout: Duration) -> OwnedFd {
    let all = (libc::ETH_P_ALL as u16).to_be();
    // SAFETY: plain socket(2) call; the result is checked before use.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, i32::from(all)) };
    assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
    // SAFETY: `fd` is a descriptor we just opened and own from here on.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let index = nix::net::if_::if_nametoindex("eth0").unwrap();
    // SAFETY: sockaddr_ll is plain data; all-zero is valid.
    let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    addr.sll_family = libc::AF_PACKET as u16;
    addr.sll_protocol = all;
    addr.sll_ifindex = index as i32;
    // SAFETY: `addr` is a valid sockaddr_ll that lives across the call, with its size.
    let rc = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            std::ptr::addr_of!(addr).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as u32,
        )
    };
    assert_eq!(rc, 0, "bind: {}", std::io::Error::last_os_error());
    let tv = libc::timeval {
        tv_sec: 0,
        tv_usec: timeout.as_micros().min(999_999) as libc::suseconds_t,
    };
    // SAFETY: SO_RCVTIMEO takes a timeval, passed with its size.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            std::ptr::addr_of!(tv).cast(),
            std::mem::size_of::<libc::timeval>() as u32,
        )
    };
    assert_eq!(rc, 0);
    fd
}

/// Sends `frames` (whole Ethernet frames) out of `eth0` in `ns`.
fn send(ns: &str, frames: Vec<Vec<u8>>) {
    in_ns(ns, move || {
        let fd = packet_socket(Duration::from_millis(100));
        for f in frames {
            // SAFETY: `f` is a live buffer of `f.len()` bytes.
            let n = unsafe { libc::send(fd.as_raw_fd(), f.as_ptr().cast(), f.len(), 0) };
            assert_eq!(
                n,
                f.len() as isize,
                "send: {}",
                std::io::Error::last_os_error()
            );
        }
    });
}

/// Captures frames arriving on `eth0` in `ns` while `during` runs, plus a short tail.
fn capture(ns: &str, during: impl FnOnce()) -> Vec<Vec<u8>> {
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
    let ns = ns.to_string();
    let handle = std::thread::spawn(move || {
        in_ns(&ns, move || {
            let fd = packet_socket(Duration::from_millis(50));
            ready_tx.send(()).unwrap();
            let mut frames = Vec::new();
            let mut buf = [0u8; 2048];
            let mut deadline = None;
            loop {
                // SAFETY: `buf` is a live, writable buffer of its length.
                let n =
                    unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
                if n > 0 {
                    frames.push(buf[..n as usize].to_vec());
                }
                if deadline.is_none() && stop_rx.try_recv().is_ok() {
                    deadline = Some(Instant::now() + Duration::from_millis(300));
                }
                if deadline.is_some_and(|d| Instant::now() > d) {
                    return frames;
                }
            }
        })
    });
    ready_rx.recv().unwrap();
    during();
    stop_tx.send(()).unwrap();
    handle.join().unwrap()
}

fn eth(dst: [u8; 6], src: [u8; 6], ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(64);
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    if f.len() < 60 {
        f.resize(60, 0);
    }
    f
}

fn ipv4_udp(src: Ipv4Addr, dst: Ipv4Addr, sport: u16, dport: u16, data: &[u8]) -> Vec<u8> {
    let total = (20 + 8 + data.len()) as u16;
    let mut h = vec![0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 17, 0, 0];
    h[2..4].copy_from_slice(&total.to_be_bytes());
    h.extend_from_slice(&src.octets());
    h.extend_from_slice(&dst.octets());
    let sum: u32 = h
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], c[1]])))
        .sum();
    let folded = (sum & 0xffff) + (sum >> 16);
    let csum = !(((folded & 0xffff) + (folded >> 16)) as u16);
    h[10..12].copy_from_slice(&csum.to_be_bytes());
    h.extend_from_slice(&sport.to_be_bytes());
    h.extend_from_slice(&dport.to_be_bytes());
    h.extend_from_slice(&(8 + data.len() as u16).to_be_bytes());
    h.extend_from_slice(&[0, 0]); // no UDP checksum
    h.extend_from_slice(data);
    h
}

/// An ARP request; `marker` goes in the padding after it.
fn arp(sha: [u8; 6], spa: Ipv4Addr, tpa: Ipv4Addr, marker: &[u8]) -> Vec<u8> {
    let mut a = vec![0, 1, 8, 0, 6, 4, 0, 1];
    a.extend_from_slice(&sha);
    a.extend_from_slice(&spa.octets());
    a.extend_from_slice(&[0; 6]);
    a.extend_from_slice(&tpa.octets());
    a.extend_from_slice(marker);
    a
}

fn marker(id: u32) -> Vec<u8> {
    let mut m = b"VMNT".to_vec();
    m.extend_from_slice(&id.to_be_bytes());
    m
}

fn seen(frames: &[Vec<u8>], id: u32) -> bool {
    let m = marker(id);
    frames.iter().any(|f| f.windows(m.len()).any(|w| w == m))
}

/// Sends each `(id, frame, should_pass)` from `from` and checks what `victim` saw.
fn expect(daemon: &Netns, from: &Netns, victim: &Netns, cases: &[(u32, Vec<u8>, bool)]) {
    let _ = daemon;
    let frames: Vec<Vec<u8>> = cases.iter().map(|(_, f, _)| f.clone()).collect();
    let from = from.name.clone();
    let got = capture(&victim.name, move || send(&from, frames));
    for (id, _, pass) in cases {
        assert_eq!(seen(&got, *id), *pass, "case {id}: expected pass={pass}");
    }
}

struct Lab {
    daemon: Netns,
    g1: Netns,
    g2: Netns,
    g3: Netns,
}

const P1: &str = "vt000000000001";
const P2: &str = "vt000000000002";
const P3: &str = "vt000000000003";

fn lab(tag: &str) -> Lab {
    let daemon = Netns::new(&format!("{tag}d"));
    let g1 = Netns::new(&format!("{tag}1"));
    let g2 = Netns::new(&format!("{tag}2"));
    let g3 = Netns::new(&format!("{tag}3"));
    ensure_bridge(
        &daemon.name,
        "br0",
        &[
            "10.1.0.1/24".parse().unwrap(),
            "168.63.129.16/32".parse().unwrap(),
        ],
    )
    .unwrap();
    plug(&daemon, "br0", P1, &g1, MAC1);
    plug(&daemon, "br0", P2, &g2, MAC2);
    plug(&daemon, "br0", P3, &g3, MAC3);
    Lab { daemon, g1, g2, g3 }
}

#[test]
fn spoofed_frames_are_dropped_and_legit_ones_pass() {
    let Lab { daemon, g1, g2, g3 } = lab("fs");
    let ns = &daemon.name;
    ensure_filter(ns).unwrap();
    ensure_filter(ns).unwrap();
    allow_nic(ns, P1, MAC1, IP1).unwrap();
    allow_nic(ns, P2, MAC2, IP2).unwrap();
    // Allowing again (e.g. after a daemon restart) replaces, not duplicates.
    allow_nic(ns, P1, MAC1, IP1).unwrap();

    let m1 = MAC1.octets();
    let bc = Ipv4Addr::new(10, 1, 0, 255);
    let all = Ipv4Addr::BROADCAST;
    let any = Ipv4Addr::UNSPECIFIED;
    let udp = |src, dst, sport, dport, id| ipv4_udp(src, dst, sport, dport, &marker(id));
    let mut vlan = vec![0x00, 0x01, 0x08, 0x00];
    vlan.extend(udp(IP1, bc, 9, 9, 12));
    let cases = vec![
        (1, eth(BCAST, m1, 0x0800, &udp(IP1, bc, 9, 9, 1)), true),
        (2, eth(BCAST, EVIL, 0x0800, &udp(IP1, bc, 9, 9, 2)), false),
        (3, eth(BCAST, m1, 0x0800, &udp(IP2, bc, 9, 9, 3)), false),
        (
            4,
            eth(
                BCAST,
                m1,
                0x0806,
                &arp(m1, IP1, Ipv4Addr::new(10, 1, 0, 1), &marker(4)),
            ),
            true,
        ),
        (
            5,
            eth(BCAST, m1, 0x0806, &arp(m1, any, IP1, &marker(5))),
            true,
        ),
        (
            6,
            eth(BCAST, m1, 0x0806, &arp(m1, IP2, IP2, &marker(6))),
            false,
        ),
        (
            7,
            eth(BCAST, m1, 0x0806, &arp(EVIL, IP1, IP2, &marker(7))),
            false,
        ),
        // A rogue DHCP server's OFFER, from its address or from none.
        (8, eth(BCAST, m1, 0x0800, &udp(IP1, all, 67, 68, 8)), false),
        (9, eth(BCAST, m1, 0x0800, &udp(any, all, 67, 68, 9)), false),
        // A DHCP client before it has an address.
        (10, eth(BCAST, m1, 0x0800, &udp(any, all, 68, 67, 10)), true),
        (11, eth(BCAST, m1, 0x86dd, &marker(11)), false),
        (12, eth(BCAST, m1, 0x8100, &vlan), false),
        // From 0.0.0.0 to anything but a DHCP server: dropped.
        (13, eth(BCAST, m1, 0x0800, &udp(any, bc, 68, 9, 13)), false),
    ];
    expect(&daemon, &g1, &g2, &cases);
    let drops = dropped(ns, P1).unwrap();
    assert!(drops >= 9, "counted {drops} drops");
    // (Guest 2's own drops are its kernel's IPv6 chatter: not checked.)

    // A tap that was never allowed passes nothing, even well-formed frames.
    let m3 = MAC3.octets();
    let ip3 = Ipv4Addr::new(10, 1, 0, 6);
    expect(
        &daemon,
        &g3,
        &g2,
        &[
            (20, eth(BCAST, m3, 0x0800, &udp(ip3, bc, 9, 9, 20)), false),
            (
                21,
                eth(BCAST, m3, 0x0800, &udp(any, all, 68, 67, 21)),
                false,
            ),
        ],
    );
    assert_eq!(dropped(ns, P3).unwrap(), 0, "no chain of its own");

    // Removed: dropped again; removing twice is fine; allowed again: passes.
    remove_nic(ns, P1).unwrap();
    remove_nic(ns, P1).unwrap();
    expect(
        &daemon,
        &g1,
        &g2,
        &[(30, eth(BCAST, m1, 0x0800, &udp(IP1, bc, 9, 9, 30)), false)],
    );
    allow_nic(ns, P1, MAC1, IP1).unwrap();
    expect(
        &daemon,
        &g1,
        &g2,
        &[(31, eth(BCAST, m1, 0x0800, &udp(IP1, bc, 9, 9, 31)), true)],
    );
    // The NIC's address changed: the old one is refused.
    allow_nic(ns, P1, MAC1, Ipv4Addr::new(10, 1, 0, 7)).unwrap();
    expect(
        &daemon,
        &g1,
        &g2,
        &[
            (32, eth(BCAST, m1, 0x0800, &udp(IP1, bc, 9, 9, 32)), false),
            (
                33,
                eth(
                    BCAST,
                    m1,
                    0x0800,
                    &udp(Ipv4Addr::new(10, 1, 0, 7), bc, 9, 9, 33),
                ),
                true,
            ),
        ],
    );
}

struct OneNic(Mac);

impl LeaseBook for OneNic {
    fn binding(&self, mac: &Mac) -> Option<Binding> {
        (*mac == self.0).then(|| Binding {
            ip: IP1,
            prefix: 24,
            router: Ipv4Addr::new(10, 1, 0, 1),
            hostname: "vm1".into(),
            domain: String::new(),
        })
    }
    fn commit(&self, _mac: &Mac, _ip: Ipv4Addr) -> Result<(), vmnode_network::dhcp::CommitError> {
        Ok(())
    }
    fn release(&self, _mac: &Mac, _ip: Ipv4Addr) {}
}

/// The filter lets a real DHCP client through, and a rogue server in a
/// guest cannot hand out addresses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dhcp_works_through_the_filter_and_rogue_servers_do_not() {
    let Lab {
        daemon,
        g1,
        g2,
        g3: _g3,
    } = lab("fd");
    let ns = &daemon.name;
    ensure_filter(ns).unwrap();
    allow_nic(ns, P1, MAC1, IP1).unwrap();
    allow_nic(ns, P2, MAC2, IP2).unwrap();

    // A rogue udhcpd in guest 2 (its own address, a pool for others); no responder yet.
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("udhcpd.conf");
    std::fs::write(
        &conf,
        format!(
            "start 10.1.0.100\nend 10.1.0.110\ninterface eth0\nlease_file {}\n\
             option subnet 255.255.255.0\n",
            dir.path().join("leases").display()
        ),
    )
    .unwrap();
    ip(&g2.name, "addr add 10.1.0.5/24 dev eth0");
    let rogue = tokio::process::Command::new("ip")
        .args(["netns", "exec", &g2.name, "busybox", "udhcpd", "-f"])
        .arg(&conf)
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let udhcpc = |tries: &'static str| {
        let g = g1.name.clone();
        async move {
            let out = tokio::process::Command::new("ip")
                .args(["netns", "exec", &g, "busybox", "udhcpc", "-f", "-q", "-n"])
                .args(["-t", tries, "-T", "1", "-i", "eth0", "-s", "/bin/true"])
                .kill_on_drop(true)
                .output();
            tokio::time::timeout(Duration::from_secs(20), out)
                .await
                .expect("udhcpc hung")
                .expect("cannot run udhcpc")
        }
    };
    let out = udhcpc("2").await;
    assert!(
        !out.status.success(),
        "got a lease from the rogue server: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        dropped(ns, P2).unwrap() > 0,
        "the rogue OFFERs were counted"
    );

    // vmnode's responder on the bridge: the guest gets its address.
    let sock = udp_socket_in_ns(ns, "br0", 67).unwrap();
    let sock = tokio::net::UdpSocket::from_std(sock).unwrap();
    let server = tokio::spawn(serve(sock, DhcpConfig::default(), Arc::new(OneNic(MAC1))));
    let out = udhcpc("5").await;
    server.abort();
    drop(rogue);
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "no lease through the filter: {text}");
    assert!(text.contains("10.1.0.4"), "{text}");
}

/// Two vnets in one namespace: once isolated, neither reaches the other.
#[test]
fn vnets_do_not_route_to_each_other() {
    let daemon = Netns::new("isd");
    let g1 = Netns::new("is1");
    let g2 = Netns::new("is2");
    for (n, g, mac) in [(1, &g1, MAC1), (2, &g2, MAC2)] {
        let br = format!("br{n}");
        ensure_bridge(
            &daemon.name,
            &br,
            &[format!("10.{n}.0.1/24").parse().unwrap()],
        )
        .unwrap();
        plug(&daemon, &br, &format!("vt00000000000{n}"), g, mac);
        ip(&g.name, &format!("addr add 10.{n}.0.4/24 dev eth0"));
        ip(&g.name, &format!("route add default via 10.{n}.0.1"));
    }
    // Control: with forwarding on, the test can see a routed path (all inside
    // namespaces made here; nothing leaves them).
    vmnode_network::plumbing::set_sysctl(&daemon.name, "net/ipv4/ip_forward", "1").unwrap();
    assert!(
        ping(&g1.name, "10.2.0.4"),
        "control: routing between test vnets"
    );

    set_isolated(&daemon.name).unwrap();
    set_isolated(&daemon.name).unwrap();
    assert_eq!(
        get_sysctl(&daemon.name, "net/ipv4/ip_forward").unwrap(),
        "0"
    );
    assert!(!ping(&g1.name, "10.2.0.4"));
    assert!(!ping(&g2.name, "10.1.0.4"));
    // Even if something turns forwarding back on, the forward hook drops.
    vmnode_network::plumbing::set_sysctl(&daemon.name, "net/ipv4/ip_forward", "1").unwrap();
    assert!(!ping(&g1.name, "10.2.0.4"));
    // Each guest still reaches its own gateway.
    assert!(ping(&g1.name, "10.1.0.1"));
    assert!(ping(&g2.name, "10.2.0.1"));
}
