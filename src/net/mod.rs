//! The daemon's side of networking. Every virtual network is a Linux bridge in the daemon's
//! namespace with its gateways and the platform addresses on it (168.63.129.16 and IMDS's
//! 169.254.169.254), its own DHCP responder, DNS server and platform listeners (IMDS and the
//! WireServer, served by the [`PlatformServices`] the daemon hands in; all bound to that bridge), and nftables
//! anti-spoofing for its taps; forwarding between
//! bridges is off, so vnets are isolated. The node's default vnet `vmnode-vnet` (10.1.0.0/16,
//! subnet `default` 10.1.0.0/24) lives in resource group `vmnode`, made at first start.
//! The mechanisms (netns, bridge, tap, DHCP and DNS packets, nftables) live in `vmnode-network`.

pub mod addresses;
mod books;
pub mod nat;
pub mod nic;
pub mod nics;
pub mod vnet;
pub mod vnets;
pub mod watch;

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::Ipv4Addr;
use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex, MutexGuard};

use ipnetwork::Ipv4Network;
use vmnode_network::addr::Mac;
use vmnode_network::dhcp::{self, DhcpConfig, LedgerEntry};
use vmnode_network::{dns, filter, plumbing};

use crate::storage::db::{Db, Kind};
use nic::NicRecord;
use vnet::{SubnetRecord, VnetRecord};

#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("network plumbing")]
    Plumbing(#[from] plumbing::PlumbingError),
    #[error("network filter")]
    Filter(#[from] filter::FilterError),
    #[error("outbound NAT")]
    Nat(#[from] vmnode_network::nat::NatError),
    #[error("the NAT record in the run dir")]
    NatRecord(#[source] std::io::Error),
    #[error("state store")]
    Db(#[from] crate::storage::db::DbError),
    #[error("socket")]
    Socket(#[source] std::io::Error),
    #[error("virtual network '{0}' not found")]
    NoVnet(String),
    #[error("subnet '{subnet}' not found in virtual network '{vnet}'")]
    NoSubnet { vnet: String, subnet: String },
    #[error("address {ip} is not usable in subnet {subnet} (outside it, reserved, or taken)")]
    AddressUnavailable { ip: Ipv4Addr, subnet: String },
}

pub const DEFAULT_RG: &str = "vmnode";
pub const VNET_NAME: &str = "vmnode-vnet";
pub const VNET_SPACE: &str = "10.1.0.0/16";
pub const SUBNET_NAME: &str = "default";
pub const SUBNET_PREFIX: &str = "10.1.0.0/24";
pub const DEFAULT_BRIDGE: &str = "vnbr0";
/// How many ledger lines are kept per MAC, and for how many MACs.
const LEDGER_PER_MAC: usize = 64;
const LEDGER_MACS: usize = 4096;

/// IMDS's address, on every vnet's bridge (as a /32) with a listener at port [`IMDS_PORT`].
pub const IMDS_IP: Ipv4Addr = vmnode_network::METADATA_ADDR;
pub const IMDS_PORT: u16 = 80;
/// The WireServer's port at the platform address, on every vnet's bridge.
pub const WIRE_PORT: u16 = 80;

/// A vnet's platform listener, running until its task is aborted.
pub type Serving = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// The guest-facing platform services (IMDS, the WireServer), implemented above this module (`guest/`) and
/// handed in by the daemon, so that `net` starts and stops them with each vnet's bridge without
/// knowing them.
pub trait PlatformServices: Send + Sync {
    /// Serves IMDS for the vnet `vnet` (`rg/name`, lower case) on `listener`, a socket at
    /// [`IMDS_IP`]:[`IMDS_PORT`] bound to the vnet's bridge: whatever it accepts came in
    /// through that bridge.
    fn serve_imds(&self, vnet: &str, listener: tokio::net::TcpListener) -> Serving;
    /// Serves the WireServer for `vnet` on `listener`, a socket at the platform address
    /// (168.63.129.16):[`WIRE_PORT`] bound to the vnet's bridge.
    fn serve_wire(&self, vnet: &str, listener: tokio::net::TcpListener) -> Serving;
}

/// The platform as the guests see it: the address of DHCP, DNS and the WireServer, and the
/// services behind the platform addresses.
pub struct Platform {
    pub ip: Ipv4Addr,
    pub services: Arc<dyn PlatformServices>,
}

struct Runtime {
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

struct Inner {
    ns: String,
    /// `run/nat.json`: what outbound NAT changed outside the namespace (see [`nat`]).
    nat_record: std::path::PathBuf,
    platform_ip: Ipv4Addr,
    services: Arc<dyn PlatformServices>,
    /// Where the internal DNS sends names outside the vnets (none: it refuses them).
    dns_forwarder: Option<std::net::SocketAddr>,
    db: Db,
    runtimes: Mutex<HashMap<String, Runtime>>,
    /// Held by a bridge's rebuild (`watch`) and by `tear_down`, so a vnet being deleted is
    /// never rebuilt.
    rebuild: Mutex<()>,
    /// Held by every write of a vnet, subnet or NIC ([`vnets`], [`nics`]): each reads, checks and
    /// then writes (a record, a bridge, an address), and two PUTs of one new NIC or vnet at once
    /// both saw it absent, the second failing with a 500 (the API fuzzer's races). Nothing awaits
    /// while holding it.
    writes: Mutex<()>,
    ledger: Mutex<HashMap<String, VecDeque<LedgerEntry>>>,
}

#[derive(Clone)]
pub struct NodeNet {
    inner: Arc<Inner>,
}

fn random_label(n: usize) -> String {
    use rand::Rng;
    const ALPHA: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::thread_rng();
    (0..n)
        .map(|_| ALPHA[rng.gen_range(0..ALPHA.len())] as char)
        .collect()
}

pub fn new_domain() -> String {
    format!("{}.internal.cloudapp.net", random_label(26))
}

pub fn bridge_name(rg: &str, vnet: &str) -> String {
    let h = vmnode_network::addr::stable_hash(vnet::key(rg, vnet).as_bytes());
    format!("vb{:012x}", h & 0xffff_ffff_ffff)
}

impl NodeNet {
    /// Creates (or finds) the namespace, the filter, the default vnet, brings every stored
    /// vnet up, and sets outbound NAT as `nat` says (removing any an earlier run left).
    pub fn setup(
        ns: &str,
        platform: Platform,
        db: &Db,
        host_netns: Option<&str>,
        nat: Option<&vmnode_network::nat::Applied>,
        nat_record: &std::path::Path,
        dns_forwarder: Option<std::net::SocketAddr>,
    ) -> Result<NodeNet, NetError> {
        plumbing::ensure_netns(ns)?;
        filter::ensure_filter(ns)?;
        filter::set_isolated(ns)?;
        // Bridged frames must not traverse the routed (inet) hooks, where the isolation table
        // drops everything forwarded: with br_netfilter loaded on the host they would.
        for k in [
            "net/bridge/bridge-nf-call-iptables",
            "net/bridge/bridge-nf-call-ip6tables",
            "net/bridge/bridge-nf-call-arptables",
        ] {
            if let Err(e) = plumbing::set_sysctl(ns, k, "0") {
                tracing::debug!(key = k, error = %e, "sysctl not present (no br_netfilter): fine");
            }
        }
        let net = NodeNet {
            inner: Arc::new(Inner {
                ns: ns.into(),
                nat_record: nat_record.to_path_buf(),
                platform_ip: platform.ip,
                services: platform.services,
                dns_forwarder,
                db: db.clone(),
                runtimes: Mutex::new(HashMap::new()),
                rebuild: Mutex::new(()),
                writes: Mutex::new(()),
                ledger: Mutex::new(HashMap::new()),
            }),
        };
        if db
            .get::<serde_json::Value>(Kind::ResourceGroup, DEFAULT_RG)?
            .is_none()
        {
            let rg = serde_json::json!({ "name": DEFAULT_RG, "location": crate::config::LOCATION, "tags": {} });
            db.put(Kind::ResourceGroup, DEFAULT_RG, &rg)?;
        }
        let dkey = vnet::key(DEFAULT_RG, VNET_NAME);
        if db.get::<VnetRecord>(Kind::Vnet, &dkey)?.is_none() {
            let rec = VnetRecord {
                rg: DEFAULT_RG.into(),
                name: VNET_NAME.into(),
                location: crate::config::LOCATION.into(),
                address_prefixes: vec![VNET_SPACE.into()],
                subnets: vec![SubnetRecord {
                    name: SUBNET_NAME.into(),
                    prefix: SUBNET_PREFIX.into(),
                }],
                bridge: DEFAULT_BRIDGE.into(),
                domain: new_domain(),
                tags: Default::default(),
            };
            db.put(Kind::Vnet, &dkey, &rec)?;
        }
        for v in db.list::<VnetRecord>(Kind::Vnet)? {
            net.bring_up(&v)?;
        }
        // The host reaches the default vnet through a veth: its end carries 10.1.0.2/24 (a
        // reserved address, never a guest's), the other end is a port of the bridge.
        if let Some(outer) = host_netns {
            let host_addr = Ipv4Network::new(Ipv4Addr::new(10, 1, 0, 2), 24)
                .map_err(|e| NetError::Socket(std::io::Error::other(e.to_string())))?;
            let h = vmnode_network::addr::stable_hash(ns.as_bytes()) & 0xff_ffff_ffff;
            let (host_if, ns_if) = (format!("vh{h:010x}"), "vnhost0".to_string());
            if outer.is_empty() {
                plumbing::ensure_veth_to_host(ns, &host_if, &ns_if, DEFAULT_BRIDGE, host_addr)?;
            } else {
                plumbing::ensure_veth_between(
                    outer,
                    ns,
                    &host_if,
                    &ns_if,
                    DEFAULT_BRIDGE,
                    host_addr,
                )?;
            }
            tracing::info!(host_if = %host_if, "the host reaches the default vnet at 10.1.0.2");
        }
        nat::reconcile(ns, nat_record, nat)?;
        Ok(net)
    }

    /// Removes outbound NAT (the daemon is stopping; guests keep running, cut off from outside).
    pub fn stop_nat(&self) -> Result<(), NetError> {
        nat::remove(&self.inner.ns, &self.inner.nat_record)
    }

    pub fn ns(&self) -> &str {
        &self.inner.ns
    }

    pub fn db(&self) -> &Db {
        &self.inner.db
    }

    /// One write of vnets, subnets and NICs at a time (see `Inner::writes`).
    fn writes(&self) -> MutexGuard<'_, ()> {
        self.inner.writes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The bridge with the gateways and the platform addresses, and its DHCP, DNS, IMDS and
    /// WireServer servers.
    pub fn bring_up(&self, v: &VnetRecord) -> Result<(), NetError> {
        let ns = &self.inner.ns;
        let mut addrs = v.gateways();
        for ip in [self.inner.platform_ip, IMDS_IP] {
            addrs.push(
                Ipv4Network::new(ip, 32)
                    .map_err(|e| NetError::Socket(std::io::Error::other(e.to_string())))?,
            );
        }
        plumbing::ensure_bridge(ns, &v.bridge, &addrs)?;
        let key = vnet::key(&v.rg, &v.name);
        let mut rts = self
            .inner
            .runtimes
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if rts.contains_key(&key) {
            return Ok(());
        }
        let dsock = plumbing::udp_socket_in_ns(ns, &v.bridge, dhcp::SERVER_PORT)?;
        let dsock = tokio::net::UdpSocket::from_std(dsock).map_err(NetError::Socket)?;
        // DNS listens at the platform address itself, so answers come from it.
        let at = std::net::SocketAddrV4::new(self.inner.platform_ip, dns::DNS_PORT);
        let nsock = plumbing::udp_socket_in_ns_at(ns, &v.bridge, at)?;
        let nsock = tokio::net::UdpSocket::from_std(nsock).map_err(NetError::Socket)?;
        let at = std::net::SocketAddrV4::new(IMDS_IP, IMDS_PORT);
        let imds = plumbing::tcp_listener_in_ns_at(ns, &v.bridge, at)?;
        let imds = tokio::net::TcpListener::from_std(imds).map_err(NetError::Socket)?;
        let at = std::net::SocketAddrV4::new(self.inner.platform_ip, WIRE_PORT);
        let wire = plumbing::tcp_listener_in_ns_at(ns, &v.bridge, at)?;
        let wire = tokio::net::TcpListener::from_std(wire).map_err(NetError::Socket)?;
        let cfg = DhcpConfig::for_platform(self.inner.platform_ip);
        let book = Arc::new(books::VnetBook {
            net: self.clone(),
            vnet: key.clone(),
        });
        let tasks = vec![
            tokio::spawn(dhcp::serve(dsock, cfg, book.clone())),
            tokio::spawn(dns::serve_with(nsock, book, self.inner.dns_forwarder)),
            tokio::spawn(self.inner.services.serve_imds(&key, imds)),
            tokio::spawn(self.inner.services.serve_wire(&key, wire)),
        ];
        tracing::info!(vnet = %v.name, bridge = %v.bridge, "virtual network up");
        rts.insert(key, Runtime { tasks });
        Ok(())
    }

    /// Stops a vnet's servers and removes its bridge.
    pub fn tear_down(&self, v: &VnetRecord) -> Result<(), NetError> {
        let _rebuild = self.inner.rebuild.lock().unwrap_or_else(|p| p.into_inner());
        let key = vnet::key(&v.rg, &v.name);
        if let Some(rt) = self
            .inner
            .runtimes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&key)
        {
            for t in rt.tasks {
                t.abort();
            }
        }
        if plumbing::link_exists(&self.inner.ns, &v.bridge) {
            plumbing::delete_link(&self.inner.ns, &v.bridge)?;
        }
        Ok(())
    }

    pub fn vnet(&self, rg: &str, name: &str) -> Result<Option<VnetRecord>, NetError> {
        Ok(self.inner.db.get(Kind::Vnet, &vnet::key(rg, name))?)
    }

    /// Reserves an address for a NIC in a subnet, `wanted` (static) or the lowest free one,
    /// inside the caller's transaction, so the address is reserved only if what holds it (the
    /// NIC, the VM) is stored with it.
    pub fn allocate_ip_in(
        tx: &crate::storage::db::Ops<'_>,
        owner: &str,
        v: &VnetRecord,
        subnet: &str,
        wanted: Option<Ipv4Addr>,
    ) -> Result<(Ipv4Addr, String), NetError> {
        let (s, net) = v.subnet(subnet).ok_or_else(|| NetError::NoSubnet {
            vnet: v.name.clone(),
            subnet: subnet.into(),
        })?;
        let skey = vnet::subnet_key(&v.rg, &v.name, &s.name);
        let pick = |used: &HashSet<Ipv4Addr>| match wanted {
            Some(ip) => (net.contains_allocatable(ip) && !used.contains(&ip)).then_some(ip),
            None => net.allocate(used),
        };
        let ip = tx
            .allocate_addr(&skey, owner, pick)
            .map_err(|e| match (e, wanted) {
                (crate::storage::db::DbError::Exhausted(_), Some(ip)) => {
                    NetError::AddressUnavailable {
                        ip,
                        subnet: s.prefix.clone(),
                    }
                }
                (e, _) => e.into(),
            })?;
        Ok((ip, skey))
    }

    pub fn random_mac(&self) -> String {
        Mac::random_azure().to_colon()
    }

    /// A tap for a NIC, in the namespace, on its vnet's bridge. It passes nothing until
    /// [`NodeNet::admit`] (the filter drops every `vt*` port it does not know), so the caller
    /// can start QEMU first and admit the tap while the guest boots. Not persistent: it
    /// disappears when the last holder of the returned fd (QEMU) exits.
    pub fn create_tap(&self, nic: &NicRecord) -> Result<OwnedFd, NetError> {
        let v = self
            .vnet(&nic.vnet_rg, &nic.vnet_name)?
            .ok_or_else(|| NetError::NoVnet(nic.vnet_name.clone()))?;
        let ns = &self.inner.ns;
        let fd = plumbing::create_tap(ns, &nic.tap)?;
        plumbing::attach_to_bridge(ns, &nic.tap, &v.bridge)?;
        Ok(fd)
    }

    /// Admits a NIC's tap through the anti-spoofing filter, for its MAC and address only.
    pub fn admit(&self, nic: &NicRecord) -> Result<(), NetError> {
        let mac: Mac = nic
            .mac
            .parse()
            .map_err(|_| NetError::Socket(std::io::Error::other("bad MAC")))?;
        filter::allow_nic(&self.inner.ns, &nic.tap, mac, nic.ip)?;
        Ok(())
    }

    pub fn tap_exists(&self, name: &str) -> bool {
        plumbing::link_exists(&self.inner.ns, name)
    }

    /// Removes a tap's filter rules and the tap if it is still there (QEMU normally takes it).
    pub fn remove_tap(&self, name: &str) -> Result<(), NetError> {
        filter::remove_nic(&self.inner.ns, name)?;
        if plumbing::link_exists(&self.inner.ns, name) {
            plumbing::delete_link(&self.inner.ns, name)?;
        }
        Ok(())
    }

    /// Frames the filter dropped from a tap (spoofing attempts).
    pub fn dropped(&self, tap: &str) -> u64 {
        filter::dropped(&self.inner.ns, tap).unwrap_or(0)
    }

    fn record(&self, mac: &Mac, entry: LedgerEntry) {
        let mut l = self.inner.ledger.lock().unwrap_or_else(|p| p.into_inner());
        if l.len() >= LEDGER_MACS && !l.contains_key(&mac.to_colon()) {
            if let Some(k) = l.keys().next().cloned() {
                l.remove(&k);
            }
        }
        let q = l.entry(mac.to_colon()).or_default();
        if q.len() >= LEDGER_PER_MAC {
            q.pop_front();
        }
        q.push_back(entry);
    }

    /// The DHCP ledger of a MAC, oldest first.
    pub fn ledger(&self, mac: &str) -> Vec<LedgerEntry> {
        let l = self.inner.ledger.lock().unwrap_or_else(|p| p.into_inner());
        l.get(&mac.to_lowercase())
            .map(|q| q.iter().cloned().collect())
            .unwrap_or_default()
    }
}
