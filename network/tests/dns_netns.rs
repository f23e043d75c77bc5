//! The DNS listener against real clients: one "daemon" namespace with two
//! vnet bridges, each with its own listener at 168.63.129.16:53 and its own
//! names, and a "guest" namespace on each bridge. Needs root and busybox.

#[allow(dead_code)]
mod common;

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::time::Duration;

use common::{ip, Netns};
use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};
use vmnode_network::dns::{serve, StaticNames};
use vmnode_network::plumbing::{attach_to_bridge, ensure_bridge, udp_socket_in_ns_at};
use vmnode_network::PLATFORM_ADDR;

/// Bridge `br{n}` with `10.{n}.0.1/24` and the platform address in `daemon`,
/// and `guest`'s `eth0` (10.{n}.0.4) on it, with a host route to the platform
/// address only (no default route).
fn wire(daemon: &Netns, guest: &Netns, n: u8) {
    let br = format!("br{n}");
    ensure_bridge(
        &daemon.name,
        &br,
        &[
            format!("10.{n}.0.1/24").parse().unwrap(),
            "168.63.129.16/32".parse().unwrap(),
        ],
    )
    .unwrap();
    ip(
        &daemon.name,
        &format!(
            "link add vh{n} type veth peer name eth0 netns {}",
            guest.name
        ),
    );
    attach_to_bridge(&daemon.name, &format!("vh{n}"), &br).unwrap();
    ip(&guest.name, &format!("addr add 10.{n}.0.4/24 dev eth0"));
    ip(&guest.name, "link set dev eth0 up");
    ip(&guest.name, "route add 168.63.129.16/32 dev eth0");
}

fn start(daemon: &Netns, n: u8, book: StaticNames) -> tokio::task::JoinHandle<()> {
    let at = SocketAddrV4::new(PLATFORM_ADDR, 53);
    let sock = udp_socket_in_ns_at(&daemon.name, &format!("br{n}"), at).unwrap();
    let sock = tokio::net::UdpSocket::from_std(sock).unwrap();
    tokio::spawn(serve(sock, Arc::new(book)))
}

/// Asks 168.63.129.16 from inside `guest`; returns the response and its source.
async fn ask(guest: &Netns, name: &str, rtype: RecordType) -> (Message, SocketAddr) {
    let bind = SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0);
    let sock = udp_socket_in_ns_at(&guest.name, "eth0", bind).unwrap();
    let sock = tokio::net::UdpSocket::from_std(sock).unwrap();
    let mut q = Message::new();
    q.set_id(7)
        .set_message_type(MessageType::Query)
        .set_op_code(OpCode::Query)
        .set_recursion_desired(true);
    q.add_query(Query::query(Name::from_ascii(name).unwrap(), rtype));
    let bytes = q.to_vec().unwrap();
    let mut buf = [0u8; 1500];
    // The first query may wait for ARP; retry like a resolver.
    for _ in 0..5 {
        sock.send_to(&bytes, (PLATFORM_ADDR, 53)).await.unwrap();
        if let Ok(r) = tokio::time::timeout(Duration::from_secs(1), sock.recv_from(&mut buf)).await
        {
            let (len, from) = r.unwrap();
            return (Message::from_vec(&buf[..len]).unwrap(), from);
        }
    }
    panic!("no DNS response in {}", guest.name);
}

fn a_of(m: &Message) -> Vec<Ipv4Addr> {
    m.answers()
        .iter()
        .filter_map(|r| match r.data() {
            RData::A(a) => Some(a.0),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_bridge_answers_from_its_own_book() {
    let daemon = Netns::new("nsd");
    let g1 = Netns::new("nsg1");
    let g2 = Netns::new("nsg2");
    wire(&daemon, &g1, 1);
    wire(&daemon, &g2, 2);
    let s1 = start(
        &daemon,
        1,
        StaticNames::new()
            .with("web.one.internal.cloudapp.net", "10.1.0.4".parse().unwrap())
            .with("web", "10.1.0.4".parse().unwrap())
            .with("db", "10.1.0.5".parse().unwrap())
            .with_zone("one.internal.cloudapp.net"),
    );
    let s2 = start(
        &daemon,
        2,
        StaticNames::new()
            .with("web.two.internal.cloudapp.net", "10.2.0.4".parse().unwrap())
            .with("web", "10.2.0.4".parse().unwrap()),
    );

    let platform = SocketAddr::from((PLATFORM_ADDR, 53));
    let (r, from) = ask(&g1, "WEB.", RecordType::A).await;
    assert_eq!(
        from, platform,
        "the response comes from the platform address"
    );
    assert_eq!(a_of(&r), vec!["10.1.0.4".parse::<Ipv4Addr>().unwrap()]);
    let (r, from) = ask(&g2, "web", RecordType::A).await;
    assert_eq!(from, platform);
    assert_eq!(a_of(&r), vec!["10.2.0.4".parse::<Ipv4Addr>().unwrap()]);
    // vnet 2 does not know vnet 1's names.
    let (r, _) = ask(&g2, "db", RecordType::A).await;
    assert_eq!(r.response_code(), ResponseCode::Refused);
    let (r, _) = ask(&g1, "nope.one.internal.cloudapp.net", RecordType::A).await;
    assert_eq!(r.response_code(), ResponseCode::NXDomain);
    let (r, _) = ask(&g1, "4.0.1.10.in-addr.arpa", RecordType::PTR).await;
    assert_eq!(r.answers().len(), 1);

    // A real resolver: busybox nslookup, from both guests.
    for (g, want) in [(&g1, "10.1.0.4"), (&g2, "10.2.0.4")] {
        let out = tokio::process::Command::new("ip")
            .args([
                "netns",
                "exec",
                &g.name,
                "busybox",
                "nslookup",
                "web",
                "168.63.129.16",
            ])
            .output();
        let out = tokio::time::timeout(Duration::from_secs(20), out)
            .await
            .expect("nslookup hung")
            .expect("cannot run busybox nslookup");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains(want), "nslookup in {}: {text}", g.name);
    }
    s1.abort();
    s2.abort();
}
