//! Outbound NAT (`vmnode serve --nat-via IFACE`) with real guests. The test builds its own
//! outside world and never routes anything into the real one: a namespace standing in for the
//! host (`--host-netns`), an "upstream" namespace behind it joined by a veth pair the test makes
//! (the host's end `upl` is the uplink), and a TCP server upstream that answers with the address
//! it saw the connection come from.

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{guest_exec, Netns, Node, BIN};
use vmnode_network::nat::{transit_of, NS_IF};

const BOOT: Duration = Duration::from_secs(120);
const SERVER: &str = "203.0.113.1";
/// The uplink's address: what upstream must see.
const NAT_ADDR: &str = "203.0.113.2";

fn sh(args: &[&str]) -> (bool, String) {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn must(args: &[&str]) -> String {
    let (ok, out) = sh(args);
    assert!(ok, "{args:?}: {out}");
    out
}

fn vm_id(v: &serde_json::Value) -> String {
    v["properties"]["vmId"].as_str().unwrap().to_string()
}

/// The stand-in host `outer` with uplink `upl` (203.0.113.2/24) to `up` (203.0.113.1/24), where
/// a server on :8080 answers HTTP with the peer address; returns the peers it saw.
fn outside_world(outer: &str, up: &str) -> Arc<Mutex<Vec<String>>> {
    for ns in [outer, up] {
        must(&["ip", "netns", "add", ns]);
        must(&["ip", "-n", ns, "link", "set", "lo", "up"]);
    }
    must(&[
        "ip", "-n", outer, "link", "add", "upl", "type", "veth", "peer", "name", "eth0", "netns",
        up,
    ]);
    must(&[
        "ip",
        "-n",
        outer,
        "addr",
        "add",
        &format!("{NAT_ADDR}/24"),
        "dev",
        "upl",
    ]);
    must(&["ip", "-n", outer, "link", "set", "upl", "up"]);
    must(&[
        "ip",
        "-n",
        up,
        "addr",
        "add",
        &format!("{SERVER}/24"),
        "dev",
        "eth0",
    ]);
    must(&["ip", "-n", up, "link", "set", "eth0", "up"]);
    let file = std::fs::File::open(format!("/run/netns/{up}")).unwrap();
    let listener = std::thread::spawn(move || {
        nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        TcpListener::bind("0.0.0.0:8080").unwrap()
    })
    .join()
    .unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    std::thread::spawn(move || {
        for mut conn in listener.incoming().flatten() {
            let peer = conn.peer_addr().unwrap().ip().to_string();
            log.lock().unwrap().push(peer.clone());
            let mut req = [0u8; 1024];
            let _ = conn.read(&mut req);
            let _ = write!(
                conn,
                "HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n{peer}",
                peer.len()
            );
        }
    });
    seen
}

/// What the upstream server answered the guest (the address it saw), or `None` if the guest
/// could not reach it.
fn fetch(node: &Node, vm: &str) -> Option<String> {
    let url = format!("http://{SERVER}:8080/");
    // busybox 1.35's wget crashes with -T: bound it with timeout instead.
    let (code, out) = guest_exec(
        node,
        vm,
        &["/bin/timeout", "8", "/bin/wget", "-q", "-O", "-", &url],
    );
    (code == 0).then(|| out.trim().to_string())
}

/// Whether pings from `up` to `ip` arrive in the guest: its ICMP `InEchos` counter, so a request
/// that got in counts even if the guest's reply could not get out.
fn pings_from_upstream_arrive(node: &Node, vm: &str, up: &str, ip: &str) -> bool {
    let in_echos = || {
        let (code, snmp) = guest_exec(node, vm, &["/bin/cat", "/proc/net/snmp"]);
        assert_eq!(code, 0, "{snmp}");
        let mut icmp = snmp.lines().filter(|l| l.starts_with("Icmp:"));
        let (names, values) = (icmp.next().unwrap(), icmp.next().unwrap());
        let at = names
            .split_whitespace()
            .position(|n| n == "InEchos")
            .unwrap();
        values
            .split_whitespace()
            .nth(at)
            .unwrap()
            .parse::<u64>()
            .unwrap()
    };
    let before = in_echos();
    let (_, out) = sh(&[
        "ip", "netns", "exec", up, "busybox", "ping", "-c", "3", "-W", "1", ip,
    ]);
    let after = in_echos();
    eprintln!("pings from upstream to {ip}: InEchos {before} -> {after}; {out}");
    after > before
}

/// What is left of outbound NAT: links, tables, forwarding, the record.
fn nat_leftovers(node: &Node, outer: &str) -> Vec<String> {
    let (transit, _, _) = transit_of(&node.netns);
    let mut left = Vec::new();
    if sh(&["ip", "-n", &node.netns, "link", "show", NS_IF]).0 {
        left.push(format!("{NS_IF} in the daemon's namespace"));
    }
    if sh(&["ip", "-n", outer, "link", "show", &transit]).0 {
        left.push(format!("{transit} in the host's namespace"));
    }
    for ns in [outer, node.netns.as_str()] {
        let tables = must(&["ip", "netns", "exec", ns, "nft", "list", "tables"]);
        if tables.contains("vmnode-nat") {
            left.push(format!("a NAT table in {ns}: {tables}"));
        }
    }
    let sysctl = |ns: &str, key: &str| {
        must(&[
            "ip",
            "netns",
            "exec",
            ns,
            "cat",
            &format!("/proc/sys/net/ipv4/{key}"),
        ])
        .trim()
        .to_string()
    };
    if sysctl(&node.netns, "ip_forward") != "0" {
        left.push("forwarding in the daemon's namespace".into());
    }
    if sysctl(outer, "conf/upl/forwarding") != "0" {
        left.push("forwarding on the uplink".into());
    }
    if node.run.join("nat.json").exists() {
        left.push("run/nat.json".into());
    }
    left
}

/// Stops the daemon as an operator would (SIGTERM) and waits for it.
fn stop_daemon(node: &mut Node) {
    let mut child = node.daemon.take().unwrap();
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let st = child.wait().unwrap();
    assert!(st.success(), "daemon: {st}: {}", node.daemon_log());
}

#[test]
fn a_missing_uplink_is_refused_before_anything_changes() {
    let outer = Netns::add("vmnox");
    let dir = tempfile::tempdir().unwrap();
    let netns = format!("vmnt-nx-{}", std::process::id());
    let out = Command::new(BIN)
        .args(["serve", "--netns", &netns, "--listen", "127.0.0.1:0"])
        .args(["--blob-listen", "127.0.0.1:0", "--host-netns", &outer.0])
        .args(["--nat-via", "nosuch0"])
        .env("VMNODE_STATE_DIR", dir.path().join("state"))
        .env("VMNODE_RUN_DIR", dir.path().join("run"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("--nat-via nosuch0: there is no interface nosuch0 in network namespace")
            && err.contains(&outer.0)
            && err.contains("ip -br link"),
        "{err}"
    );
    assert!(
        !std::path::Path::new("/run/netns").join(&netns).exists(),
        "the daemon made its namespace before refusing"
    );
}

#[test]
fn guests_reach_upstream_through_nat_only_when_asked() {
    let pid = std::process::id();
    let (outer, up) = (Netns(format!("vmnoh-{pid}")), Netns(format!("vmnou-{pid}")));
    let seen = outside_world(&outer.0, &up.0);
    let host_forwarding = std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap();
    let mut node = Node::start_with(&outer.0, &["--nat-via", "upl"]);
    node.ok(&["group", "create", "-n", "rg"]);
    let vnet = "network vnet create -g rg -n net2 --address-prefixes 10.3.0.0/16 --subnet-name s1";
    node.ok(&vnet.split(' ').collect::<Vec<_>>());
    let a = node.create_vm("rg", "alpha", &[]);
    let b = node.create_vm("rg", "beta", &["--vnet-name", "net2", "--subnet", "s1"]);
    assert_eq!(a["privateIps"], "10.1.0.4");
    assert_eq!(b["privateIps"], "10.3.0.4");
    let (a, b) = (vm_id(&a), vm_id(&b));
    for n in ["alpha", "beta"] {
        node.wait_for_log("rg", n, "VMNODE-BOOT: ready", BOOT);
    }

    // Out, from the default vnet and another one, seen upstream as the uplink's address.
    assert_eq!(fetch(&node, &a).as_deref(), Some(NAT_ADDR));
    assert_eq!(fetch(&node, &b).as_deref(), Some(NAT_ADDR));
    let peers = seen.lock().unwrap().clone();
    assert_eq!(
        peers,
        vec![NAT_ADDR, NAT_ADDR],
        "upstream saw a guest's DIP"
    );

    // NAT on, vnets still apart.
    let (code, out) = guest_exec(&node, &a, &["/bin/ping", "-c", "2", "-W", "2", "10.3.0.4"]);
    assert_ne!(code, 0, "alpha reached beta on another vnet: {out}");
    // Nothing new comes in: upstream routes the vnets to the uplink (where the stand-in host
    // also holds the host-access veth onto 10.1.0.0/24), and still reaches no guest.
    must(&[
        "ip",
        "-n",
        &up.0,
        "route",
        "add",
        "10.0.0.0/8",
        "via",
        NAT_ADDR,
    ]);
    assert!(!pings_from_upstream_arrive(&node, &a, &up.0, "10.1.0.4"));
    // The daemon's namespace leaves only through the transit into the stand-in host, and the
    // real host's namespace is untouched.
    let (transit, _, outer_end) = transit_of(&node.netns);
    let route = must(&["ip", "-n", &node.netns, "route", "show", "default"]);
    assert!(
        route.contains(&format!("via {} dev {NS_IF}", outer_end.ip())),
        "{route}"
    );
    assert!(!sh(&["ip", "link", "show", &transit]).0);
    assert!(!must(&["nft", "list", "tables"]).contains("vmnode-nat"));
    assert_eq!(
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap(),
        host_forwarding
    );

    // Stopped: all of it removed; guests keep running, cut off.
    stop_daemon(&mut node);
    assert_eq!(nat_leftovers(&node, &outer.0), Vec::<String>::new());
    assert_eq!(fetch(&node, &a), None);

    // Started without the flag: no way out.
    node.serve_args.clear();
    node.spawn_daemon();
    assert_eq!(fetch(&node, &a), None, "out without --nat-via");
    assert_eq!(nat_leftovers(&node, &outer.0), Vec::<String>::new());

    // With it again, then a crash: the next start without the flag leaves nothing stale.
    node.kill_daemon();
    node.serve_args = vec!["--nat-via".into(), "upl".into()];
    node.spawn_daemon();
    assert_eq!(fetch(&node, &b).as_deref(), Some(NAT_ADDR));
    node.kill_daemon();
    assert!(node.run.join("nat.json").exists());
    node.serve_args.clear();
    node.spawn_daemon();
    assert_eq!(nat_leftovers(&node, &outer.0), Vec::<String>::new());
    assert_eq!(fetch(&node, &b), None);
    drop(node);
}
