//! The DHCP responder against a real client: busybox `udhcpc` in a "guest"
//! namespace, connected by a veth pair to a bridge in a "daemon" namespace
//! where [`serve`] runs. Needs root and `busybox` (Debian: busybox-static).

#[allow(dead_code)]
mod common;

use std::collections::HashMap;
use std::fs::OpenOptions;
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{ip, Netns};
use dhcproto::v4::{DhcpOption, Flags, Message, MessageType, OptionCode};
use dhcproto::{Decodable, Decoder, Encodable, Encoder};
use vmnode_network::dhcp::{serve, Binding, DhcpConfig, LeaseBook, DEFAULT_LEASE_SECS};
use vmnode_network::plumbing::{attach_to_bridge, ensure_bridge, udp_socket_in_ns};
use vmnode_network::{Mac, PLATFORM_ADDR};

const GUEST_IF: &str = "eth0";

/// A lease book that appends every commit to an event log shared with the
/// client's script, so the log shows the order of commit and ACK.
struct TestBook {
    nics: HashMap<Mac, Binding>,
    events: PathBuf,
    commits: Mutex<Vec<(Mac, Ipv4Addr)>>,
}

impl LeaseBook for TestBook {
    fn binding(&self, mac: &Mac) -> Option<Binding> {
        self.nics.get(mac).cloned()
    }

    fn commit(&self, mac: &Mac, ip: Ipv4Addr) -> Result<(), vmnode_network::dhcp::CommitError> {
        // A slow durable write: an ACK sent before it finished would reach
        // the client (and its script would log) first.
        std::thread::sleep(Duration::from_millis(300));
        append(&self.events, &format!("commit {ip}"));
        self.commits.lock().unwrap().push((*mac, ip));
        Ok(())
    }

    fn release(&self, _mac: &Mac, _ip: Ipv4Addr) {}
}

fn append(path: &Path, line: &str) {
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    writeln!(f, "{line}").unwrap();
    f.sync_all().unwrap();
}

fn vm1() -> Binding {
    Binding {
        ip: "10.1.0.4".parse().unwrap(),
        prefix: 24,
        router: "10.1.0.1".parse().unwrap(),
        hostname: "vm1".into(),
        domain: "abc.internal.cloudapp.net".into(),
    }
}

/// Daemon namespace with bridge `br0` (10.1.0.1/24 + 168.63.129.16/32), and
/// a guest namespace whose `eth0` (MAC `guest_mac`) is a veth into the bridge.
struct Lab {
    guest: Netns,
    daemon: Netns,
    guest_mac: Mac,
    dir: tempfile::TempDir,
}

impl Lab {
    fn new(tag: &str) -> Self {
        let daemon = Netns::new(&format!("{tag}d"));
        let guest = Netns::new(&format!("{tag}g"));
        let dir = tempfile::tempdir().unwrap();
        ensure_bridge(
            &daemon.name,
            "br0",
            &[
                "10.1.0.1/24".parse().unwrap(),
                "168.63.129.16/32".parse().unwrap(),
            ],
        )
        .unwrap();
        // Both ends are made inside the daemon namespace, then one moves to the guest.
        ip(
            &daemon.name,
            &format!(
                "link add vh0 type veth peer name {GUEST_IF} netns {}",
                guest.name
            ),
        );
        attach_to_bridge(&daemon.name, "vh0", "br0").unwrap();
        let guest_mac = Mac::random_azure();
        ip(
            &guest.name,
            &format!(
                "link set dev {GUEST_IF} address {} up",
                guest_mac.to_colon()
            ),
        );
        Lab {
            guest,
            daemon,
            guest_mac,
            dir,
        }
    }

    fn events(&self) -> PathBuf {
        self.dir.path().join("events")
    }

    fn book(&self, known: bool) -> Arc<TestBook> {
        let mut nics = HashMap::new();
        if known {
            nics.insert(self.guest_mac, vm1());
        }
        Arc::new(TestBook {
            nics,
            events: self.events(),
            commits: Mutex::new(Vec::new()),
        })
    }

    fn start_responder(&self, book: Arc<TestBook>) -> tokio::task::JoinHandle<()> {
        let std_sock = udp_socket_in_ns(&self.daemon.name, "br0", 67).unwrap();
        let sock = tokio::net::UdpSocket::from_std(std_sock).unwrap();
        tokio::spawn(serve(sock, DhcpConfig::default(), book))
    }

    /// Runs udhcpc in the guest; returns whether it got a lease and the
    /// variables its script saw.
    async fn udhcpc(&self, tries: &str) -> (bool, HashMap<String, String>) {
        assert!(
            Path::new("/bin/busybox").exists() || Path::new("/usr/bin/busybox").exists(),
            "busybox is needed (apt-get install busybox-static)"
        );
        let out = self.dir.path().join("lease.env");
        let script = self.dir.path().join("script.sh");
        std::fs::write(
            &script,
            format!(
                r#"#!/bin/sh
# udhcpc calls this with deconfig/bound/renew/leasefail/nak; it configures nothing.
case "$1" in
bound|renew)
    {{
        echo "ip=$ip"
        echo "subnet=$subnet"
        echo "router=$router"
        echo "dns=$dns"
        echo "hostname=$hostname"
        echo "domain=$domain"
        echo "lease=$lease"
        echo "serverid=$serverid"
        echo "staticroutes=$staticroutes"
        echo "opt245=$opt245"
    }} > "{out}"
    echo "bound" >> "{events}"
    ;;
esac
exit 0
"#,
                out = out.display(),
                events = self.events().display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        let script = script.to_string_lossy().into_owned();
        let child = tokio::process::Command::new("ip")
            .args(["netns", "exec", &self.guest.name, "busybox", "udhcpc"])
            // -f foreground, -q quit once leased, -n fail if no lease after -t tries, -T 1 s apart
            .args([
                "-f", "-q", "-n", "-t", tries, "-T", "1", "-i", GUEST_IF, "-s", &script,
            ])
            .kill_on_drop(true)
            .output();
        let status = tokio::time::timeout(Duration::from_secs(30), child)
            .await
            .expect("udhcpc hung")
            .expect("cannot run udhcpc");
        let vars = std::fs::read_to_string(&out)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        (status.status.success(), vars)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udhcpc_gets_its_binding() {
    let lab = Lab::new("dk");
    let book = lab.book(true);
    let server = lab.start_responder(Arc::clone(&book));

    let (ok, vars) = lab.udhcpc("5").await;
    server.abort();
    assert!(ok, "udhcpc got no lease");
    let want: HashMap<String, String> = [
        ("ip", "10.1.0.4".to_string()),
        ("subnet", "255.255.255.0".into()),
        ("router", "10.1.0.1".into()),
        ("dns", "168.63.129.16".into()),
        ("hostname", "vm1".into()),
        ("domain", "abc.internal.cloudapp.net".into()),
        ("lease", DEFAULT_LEASE_SECS.to_string()),
        ("serverid", "168.63.129.16".into()),
        // RFC 3442 routes and the WireServer, sent whatever the client asked for.
        (
            "staticroutes",
            "0.0.0.0/0 10.1.0.1 168.63.129.16/32 10.1.0.1 169.254.169.254/32 10.1.0.1".into(),
        ),
        ("opt245", "a83f8110".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    assert_eq!(vars, want);

    assert_eq!(
        *book.commits.lock().unwrap(),
        vec![(lab.guest_mac, "10.1.0.4".parse().unwrap())]
    );
    // The commit was durable before the ACK reached the client.
    let events = std::fs::read_to_string(lab.events()).unwrap();
    assert_eq!(
        events.lines().collect::<Vec<_>>(),
        ["commit 10.1.0.4", "bound"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_mac_gets_no_lease() {
    let lab = Lab::new("du");
    let book = lab.book(false);
    let server = lab.start_responder(Arc::clone(&book));

    let (ok, vars) = lab.udhcpc("2").await;
    server.abort();
    assert!(!ok, "udhcpc got a lease: {vars:?}");
    assert!(vars.is_empty());
    assert!(book.commits.lock().unwrap().is_empty());
    assert!(!lab.events().exists());
}

/// A configured guest renews by unicast to the server id; the ACK comes back
/// unicast to its address, from 168.63.129.16:67.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewal_is_unicast_from_the_platform_address() {
    let lab = Lab::new("dr");
    let book = lab.book(true);
    let server = lab.start_responder(Arc::clone(&book));

    let g = &lab.guest.name;
    ip(g, &format!("addr add 10.1.0.4/24 dev {GUEST_IF}"));
    ip(g, "route add default via 10.1.0.1");
    let client = udp_socket_in_ns(g, GUEST_IF, 68).unwrap();
    let client = tokio::net::UdpSocket::from_std(client).unwrap();

    let mut req = Message::new_with_id(
        0x1234_5678,
        "10.1.0.4".parse().unwrap(),
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        &lab.guest_mac.octets(),
    );
    req.set_flags(Flags::new(0));
    req.opts_mut()
        .insert(DhcpOption::MessageType(MessageType::Request));
    let mut packet = Vec::new();
    req.encode(&mut Encoder::new(&mut packet)).unwrap();

    let server_addr = SocketAddr::from((PLATFORM_ADDR, 67));
    let mut buf = [0u8; 1500];
    // The first packet may wait for ARP; retry a few times like a client would.
    let mut got = None;
    for _ in 0..5 {
        client.send_to(&packet, server_addr).await.unwrap();
        if let Ok(r) =
            tokio::time::timeout(Duration::from_secs(2), client.recv_from(&mut buf)).await
        {
            got = Some(r.unwrap());
            break;
        }
    }
    server.abort();
    let (len, from) = got.expect("no reply to the renewal");
    assert_eq!(
        from, server_addr,
        "reply must come from the platform address"
    );
    let ack = Message::decode(&mut Decoder::new(&buf[..len])).unwrap();
    assert_eq!(ack.opts().msg_type(), Some(MessageType::Ack));
    assert_eq!(ack.xid(), 0x1234_5678);
    assert_eq!(ack.yiaddr(), "10.1.0.4".parse::<Ipv4Addr>().unwrap());
    assert_eq!(ack.ciaddr(), "10.1.0.4".parse::<Ipv4Addr>().unwrap());
    assert_eq!(
        ack.opts().get(OptionCode::ServerIdentifier),
        Some(&DhcpOption::ServerIdentifier(PLATFORM_ADDR))
    );
    assert_eq!(book.commits.lock().unwrap().len(), 1);
}

fn dhcp_threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter(|t| {
            let comm = t.as_ref().unwrap().path().join("comm");
            std::fs::read_to_string(comm).is_ok_and(|c| c.starts_with("dhcp-"))
        })
        .count()
}

/// Aborting the responder's task ends its worker threads and frees the port.
/// Counting threads needs a process of its own: nextest gives each test one
/// (`cargo test` runs this file's tests as threads of one process, where the
/// other tests' workers would be counted too, so there only the restart is checked).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aborting_serve_stops_its_workers() {
    let lab = Lab::new("da");
    let server = lab.start_responder(lab.book(true));
    if std::env::var_os("NEXTEST_RUN_ID").is_none() {
        server.abort();
        let _ = server.await;
        let server = lab.start_responder(lab.book(true));
        let (ok, _) = lab.udhcpc("5").await;
        server.abort();
        assert!(ok, "no lease after a restart");
        return;
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while dhcp_threads() < vmnode_network::dhcp::WORKERS {
        assert!(
            std::time::Instant::now() < deadline,
            "workers did not start"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.abort();
    let _ = server.await;
    while dhcp_threads() > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "{} workers left",
            dhcp_threads()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A new responder on the same bridge still gets the guest its lease.
    let server = lab.start_responder(lab.book(true));
    let (ok, vars) = lab.udhcpc("5").await;
    server.abort();
    assert!(ok, "no lease after a restart: {vars:?}");
}
