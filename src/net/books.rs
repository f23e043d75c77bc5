//! What the DHCP responder and DNS server of one vnet know, read from the store: its NICs.

use std::net::Ipv4Addr;

use vmnode_network::addr::Mac;
use vmnode_network::dhcp::{Binding, CommitError, LeaseBook, LedgerEntry};
use vmnode_network::dns::NameBook;

use super::nic::NicRecord;
use super::vnet::VnetRecord;
use super::NodeNet;
use crate::storage::db::Kind;

pub struct VnetBook {
    pub net: NodeNet,
    /// `rg/vnet`, lower case.
    pub vnet: String,
}

impl VnetBook {
    fn record(&self) -> Option<VnetRecord> {
        self.net.db().get(Kind::Vnet, &self.vnet).ok().flatten()
    }

    fn nics(&self) -> Vec<NicRecord> {
        let all: Vec<NicRecord> = self.net.db().list(Kind::Nic).unwrap_or_default();
        all.into_iter()
            .filter(|n| super::vnet::key(&n.vnet_rg, &n.vnet_name) == self.vnet)
            .collect()
    }
}

impl LeaseBook for VnetBook {
    fn binding(&self, mac: &Mac) -> Option<Binding> {
        let want = mac.to_colon();
        let nic = self
            .nics()
            .into_iter()
            .find(|n| n.mac.eq_ignore_ascii_case(&want))?;
        let v = self.record()?;
        let subnet = v.subnet_of(nic.ip)?;
        Some(Binding {
            ip: nic.ip,
            prefix: subnet.prefix(),
            router: subnet.gateway(),
            hostname: nic.hostname.clone(),
            domain: v.domain,
        })
    }

    fn commit(&self, mac: &Mac, ip: Ipv4Addr) -> Result<(), CommitError> {
        let host = self.binding(mac).map(|b| b.hostname).unwrap_or_default();
        self.net.db().lease_commit(&mac.to_colon(), ip, &host)?;
        Ok(())
    }

    fn release(&self, mac: &Mac, _ip: Ipv4Addr) {
        if let Err(e) = self.net.db().lease_delete(&mac.to_colon()) {
            tracing::error!(error = %e, "cannot record DHCP release");
        }
    }

    fn decline(&self, mac: &Mac, ip: Ipv4Addr) {
        tracing::warn!(mac = %mac, %ip, "guest declined its address: it is in use on the link");
    }

    fn record(&self, mac: &Mac, entry: LedgerEntry) {
        self.net.record(mac, entry);
    }
}

impl NameBook for VnetBook {
    fn a(&self, name: &str) -> Option<Ipv4Addr> {
        let v = self.record()?;
        let host = name.strip_suffix(&format!(".{}", v.domain)).unwrap_or(name);
        if host.contains('.') {
            return None;
        }
        self.nics()
            .into_iter()
            .find(|n| !n.hostname.is_empty() && n.hostname.eq_ignore_ascii_case(host))
            .map(|n| n.ip)
    }

    fn ptr(&self, ip: Ipv4Addr) -> Option<String> {
        let v = self.record()?;
        let nic = self
            .nics()
            .into_iter()
            .find(|n| n.ip == ip && !n.hostname.is_empty())?;
        Some(format!("{}.{}", nic.hostname.to_lowercase(), v.domain))
    }

    fn in_zone(&self, name: &str) -> bool {
        self.record()
            .is_some_and(|v| name == v.domain || name.ends_with(&format!(".{}", v.domain)))
    }
}
