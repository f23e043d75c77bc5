//! The daemon's side of networking: the node's default virtual network (a bridge in the
//! daemon's namespace), taps for NICs, and the DHCP responder fed from the state store.
//! The mechanisms (netns, bridge, tap, DHCP packets) live in the `vmnode-network` crate.

use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::os::fd::OwnedFd;
use std::sync::Arc;

use ipnetwork::Ipv4Network;
use vmnode_network::addr::{Mac, Subnet};
use vmnode_network::dhcp::{self, Binding, DhcpConfig, LeaseBook};
use vmnode_network::plumbing;

use crate::storage::db::{Db, Kind};
use crate::vm::model::NicRecord;

#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("network plumbing")]
    Plumbing(#[from] plumbing::PlumbingError),
    #[error("state store")]
    Db(#[from] crate::storage::db::DbError),
    #[error("DHCP socket")]
    Socket(#[source] std::io::Error),
}

/// The default virtual network: `vmnode-vnet` 10.1.0.0/16, subnet `default` 10.1.0.0/24.
pub const VNET_NAME: &str = "vmnode-vnet";
pub const VNET_SPACE: &str = "10.1.0.0/16";
pub const SUBNET_NAME: &str = "default";
pub const SUBNET_PREFIX: &str = "10.1.0.0/24";
pub const BRIDGE: &str = "vnbr0";

#[derive(Clone)]
pub struct NodeNet {
    pub ns: String,
    pub bridge: String,
    pub subnet: Subnet,
    pub platform_ip: Ipv4Addr,
    pub domain: String,
}

impl NodeNet {
    /// Creates (or finds) the namespace and the default vnet's bridge, with the gateway and
    /// the platform address on it. The domain suffix is made once and kept in the store.
    pub fn setup(ns: &str, platform_ip: Ipv4Addr, db: &Db) -> Result<NodeNet, NetError> {
        let subnet: Subnet = SUBNET_PREFIX
            .parse()
            .map_err(|_| NetError::Socket(std::io::Error::other("bad built-in subnet")))?;
        let domain = match db.meta_get("vnet.default.domain")? {
            Some(d) => d,
            None => {
                let d = format!("{}.internal.cloudapp.net", random_label());
                db.meta_set("vnet.default.domain", &d)?;
                d
            }
        };
        plumbing::ensure_netns(ns)?;
        let platform = Ipv4Network::new(platform_ip, 32)
            .map_err(|e| NetError::Socket(std::io::Error::other(e.to_string())))?;
        plumbing::ensure_bridge(ns, BRIDGE, &[subnet.gateway_cidr(), platform])?;
        Ok(NodeNet {
            ns: ns.into(),
            bridge: BRIDGE.into(),
            subnet,
            platform_ip,
            domain,
        })
    }

    pub fn subnet_name(&self) -> String {
        format!("{VNET_NAME}/{SUBNET_NAME}")
    }

    pub fn allocate(&self, used: &HashSet<Ipv4Addr>) -> Option<Ipv4Addr> {
        self.subnet.allocate(used)
    }

    pub fn random_mac(&self) -> String {
        Mac::random_azure().to_colon()
    }

    /// A tap for a NIC, in the namespace, on the bridge. The tap is not persistent: it
    /// disappears when the last holder of the returned fd (QEMU) exits.
    pub fn create_tap(&self, name: &str) -> Result<OwnedFd, NetError> {
        let fd = plumbing::create_tap(&self.ns, name)?;
        plumbing::attach_to_bridge(&self.ns, name, &self.bridge)?;
        Ok(fd)
    }

    /// Removes a tap if it is still there (QEMU normally takes it with it).
    pub fn remove_tap(&self, name: &str) -> Result<(), NetError> {
        if plumbing::link_exists(&self.ns, name) {
            plumbing::delete_link(&self.ns, name)?;
        }
        Ok(())
    }

    /// Starts the DHCP responder on the bridge.
    pub fn start_dhcp(&self, db: Db) -> Result<tokio::task::JoinHandle<()>, NetError> {
        let sock = plumbing::udp_socket_in_ns(&self.ns, &self.bridge, 67)?;
        let sock = tokio::net::UdpSocket::from_std(sock).map_err(NetError::Socket)?;
        let cfg = DhcpConfig {
            server_id: self.platform_ip,
            dns: vec![self.platform_ip],
            ..DhcpConfig::default()
        };
        let book = Arc::new(DbLeaseBook {
            db,
            net: self.clone(),
        });
        Ok(tokio::spawn(dhcp::serve(sock, cfg, book)))
    }
}

fn random_label() -> String {
    use rand::Rng;
    const ALPHA: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::thread_rng();
    (0..26)
        .map(|_| ALPHA[rng.gen_range(0..ALPHA.len())] as char)
        .collect()
}

/// The responder's view of the store: which MACs are NICs, and durable lease commits.
struct DbLeaseBook {
    db: Db,
    net: NodeNet,
}

impl LeaseBook for DbLeaseBook {
    fn binding(&self, mac: &Mac) -> Option<Binding> {
        let nics: Vec<NicRecord> = self.db.list(Kind::Nic).ok()?;
        let want = mac.to_colon();
        let nic = nics
            .into_iter()
            .find(|n| n.mac.eq_ignore_ascii_case(&want))?;
        Some(Binding {
            ip: nic.ip,
            prefix: self.net.subnet.prefix(),
            router: self.net.subnet.gateway(),
            hostname: nic.hostname,
            domain: self.net.domain.clone(),
        })
    }

    fn commit(&self, mac: &Mac, ip: Ipv4Addr) -> Result<(), String> {
        let host = self.binding(mac).map(|b| b.hostname).unwrap_or_default();
        self.db
            .lease_commit(&mac.to_colon(), ip, &host)
            .map_err(|e| e.to_string())
    }

    fn release(&self, mac: &Mac, _ip: Ipv4Addr) {
        if let Err(e) = self.db.lease_delete(&mac.to_colon()) {
            tracing::error!(error = %e, "cannot record DHCP release");
        }
    }
}
