//! Outbound NAT against the real kernel, all inside namespaces made here: a
//! "daemon" namespace with two vnet bridges and a "guest" on each, an "outer"
//! namespace standing in for the host, and an "upstream" namespace behind
//! the outer one's uplink with a TCP server that reports whom it saw.
//! Needs root, `nft` (Debian: nftables) and busybox.

#[allow(dead_code)]
mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use common::{in_ns, ip, ping, Netns};
use vmnode_network::nat::{self, NatError};
use vmnode_network::plumbing::{attach_to_bridge, ensure_bridge, get_sysctl, link_exists};

const SERVER: &str = "203.0.113.1";
const UPLINK_ADDR: &str = "203.0.113.2";

struct Lab {
    daemon: Netns,
    g1: Netns,
    g2: Netns,
    outer: Netns,
    up: Netns,
}

/// Two vnets (10.1.0.0/24 and 10.2.0.0/24) with a guest each at .4; the
/// outer namespace's uplink `upl` (203.0.113.2/24) leads to the upstream's
/// `eth0` (203.0.113.1/24).
fn lab() -> Lab {
    let lab = Lab {
        daemon: Netns::new("natd"),
        g1: Netns::new("natg1"),
        g2: Netns::new("natg2"),
        outer: Netns::new("nato"),
        up: Netns::new("natu"),
    };
    for (n, g) in [(1, &lab.g1), (2, &lab.g2)] {
        let br = format!("br{n}");
        ensure_bridge(
            &lab.daemon.name,
            &br,
            &[format!("10.{n}.0.1/24").parse().unwrap()],
        )
        .unwrap();
        let port = format!("gp{n}");
        ip(
            &lab.daemon.name,
            &format!("link add {port} type veth peer name eth0 netns {}", g.name),
        );
        attach_to_bridge(&lab.daemon.name, &port, &br).unwrap();
        ip(&g.name, "link set eth0 up");
        ip(&g.name, &format!("addr add 10.{n}.0.4/24 dev eth0"));
        ip(&g.name, &format!("route add default via 10.{n}.0.1"));
    }
    ip(
        &lab.outer.name,
        &format!(
            "link add upl type veth peer name eth0 netns {}",
            lab.up.name
        ),
    );
    ip(
        &lab.outer.name,
        &format!("addr add {UPLINK_ADDR}/24 dev upl"),
    );
    ip(&lab.outer.name, "link set upl up");
    ip(&lab.up.name, &format!("addr add {SERVER}/24 dev eth0"));
    ip(&lab.up.name, "link set eth0 up");
    lab
}

/// A TCP server in `ns` on port 8080 that answers each connection with the
/// address it came from.
fn serve_peer_addresses(ns: &str) {
    let listener = in_ns(ns, || TcpListener::bind("0.0.0.0:8080").unwrap());
    std::thread::spawn(move || {
        for mut conn in listener.incoming().flatten() {
            let peer = conn.peer_addr().unwrap().ip().to_string();
            let _ = conn.write_all(peer.as_bytes());
        }
    });
}

/// Connects from `ns` to the server; `Some(what it saw)` or `None` if unreachable.
fn seen_from(ns: &str) -> Option<String> {
    in_ns(ns, || {
        let to: SocketAddr = format!("{SERVER}:8080").parse().unwrap();
        let mut s = TcpStream::connect_timeout(&to, Duration::from_secs(2)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).ok()?;
        Some(out)
    })
}

fn sysctl(ns: &str, key: &str) -> String {
    get_sysctl(ns, key).unwrap()
}

#[test]
fn guests_reach_upstream_masqueraded_and_nothing_else() {
    let lab = lab();
    serve_peer_addresses(&lab.up.name);
    let (d, o) = (lab.daemon.name.as_str(), lab.outer.name.as_str());
    vmnode_network::filter::set_isolated(d).unwrap();
    assert_eq!(seen_from(&lab.g1.name), None, "no NAT: no way out");

    // An uplink that is not there: a clear error, nothing changed.
    let e = nat::plan(d, Some(o), "nosuch0").unwrap_err();
    assert!(matches!(e, NatError::NoUplink { .. }), "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains("no interface nosuch0") && msg.contains(o) && msg.contains("ip -br link"),
        "{msg}"
    );
    assert!(nat::plan(d, Some(o), "lo").is_err());

    let plan = nat::plan(d, Some(o), "upl").unwrap();
    assert_eq!(plan.iface_forwarding_was, "0");
    nat::apply(d, &plan).unwrap();
    nat::apply(d, &plan).unwrap(); // idempotent

    // Out, from both vnets, seen as the uplink's address.
    assert_eq!(seen_from(&lab.g1.name).as_deref(), Some(UPLINK_ADDR));
    assert_eq!(seen_from(&lab.g2.name).as_deref(), Some(UPLINK_ADDR));
    assert!(ping(&lab.g1.name, SERVER));
    // Still no vnet to vnet.
    assert!(!ping(&lab.g1.name, "10.2.0.4"));
    assert!(!ping(&lab.g2.name, "10.1.0.4"));
    // Not the outer namespace's own services through the transit.
    let (transit, _, outer_end) = nat::transit_of(d);
    assert!(!ping(&lab.g1.name, &outer_end.ip().to_string()));
    assert!(!ping(&lab.g1.name, UPLINK_ADDR));
    // Nothing new inbound: the upstream routes the vnets to the outer
    // namespace, which has a route to them only through vmnode's transit.
    ip(
        &lab.up.name,
        &format!("route add 10.0.0.0/8 via {UPLINK_ADDR}"),
    );
    ip(
        o,
        &format!("route add 10.0.0.0/8 via {}", nat::transit_of(d).1.ip()),
    );
    assert!(!ping(&lab.up.name, "10.1.0.4"));
    // Forwarding: on in the daemon's namespace; in the outer one only on the path.
    assert_eq!(sysctl(d, "net/ipv4/ip_forward"), "1");
    assert_eq!(sysctl(o, "net/ipv4/ip_forward"), "0");
    assert_eq!(
        sysctl(o, &format!("net/ipv4/conf/{transit}/forwarding")),
        "1"
    );
    assert_eq!(sysctl(o, "net/ipv4/conf/upl/forwarding"), "1");

    // Removed: no way out again, and nothing of it left on either side.
    nat::remove(d, Some(&plan)).unwrap();
    assert_eq!(seen_from(&lab.g1.name), None);
    assert!(!link_exists(d, nat::NS_IF));
    assert!(!link_exists(o, &transit));
    assert_eq!(sysctl(d, "net/ipv4/ip_forward"), "0");
    assert_eq!(sysctl(o, "net/ipv4/conf/upl/forwarding"), "0");
    let tables = common::run(&["ip", "netns", "exec", o, "nft", "list", "tables"]);
    assert!(!tables.contains("vmnode"), "{tables}");
    let tables = common::run(&["ip", "netns", "exec", d, "nft", "list", "tables"]);
    assert!(!tables.contains("vmnode-nat"), "{tables}");
    // The guests still reach their gateways.
    assert!(ping(&lab.g1.name, "10.1.0.1"));

    // A crash leaves it applied; removal with the record cleans it; without a
    // record, the daemon's side at least.
    nat::apply(d, &plan).unwrap();
    nat::remove(d, None).unwrap();
    assert!(!link_exists(d, nat::NS_IF));
    assert!(
        !link_exists(o, &transit),
        "the pair goes with its inner end"
    );
    assert_eq!(seen_from(&lab.g1.name), None);
}
