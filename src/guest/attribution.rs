//! Who is asking: a request that reached a vnet's platform listener is attributed by (that
//! vnet, its source IPv4) to the NIC holding the address on the vnet, and through it to the VM
//! record in the store; the VM's [`Facts`] are what IMDS answers with.
//!
//! The source address can be trusted per bridge: the listener is bound to the vnet's bridge
//! (SO_BINDTODEVICE), so only frames that entered that bridge reach it, and the anti-spoofing
//! filter (`vmnode_network::filter`) lets each tap send only as its NIC's MAC and address. A
//! guest can therefore be taken only for itself, never for a VM of another vnet (which may
//! hold the same address) or for a neighbour. The host's veth on the default bridge is not
//! filtered; its address (10.1.0.2) is reserved and never a NIC's, so it is nobody.

use std::net::Ipv4Addr;

use super::imds::document::{Disk, Facts, Image};
use crate::net::nic::NicRecord;
use crate::net::vnet::{self, VnetRecord};
use crate::storage::db::{Db, DbError, Kind};
use crate::vm::model::VmRecord;

/// What one vnet's listener needs to find its callers.
pub struct View {
    pub db: Db,
    pub subscription: String,
    /// The vnet's key (`rg/name`, lower case).
    pub vnet: String,
}

impl View {
    /// The VM calling from `peer`, for `service`'s request to `path`; `None` (logged: the
    /// request is refused) when no VM on this vnet holds the address or the store cannot be
    /// read.
    pub fn caller(&self, peer: std::net::SocketAddr, service: &str, path: &str) -> Option<Facts> {
        let ip = super::http::source(peer)?;
        match self.facts(ip) {
            Ok(Some(f)) => Some(f),
            Ok(None) => {
                tracing::warn!(source = %ip, vnet = %self.vnet, %path,
                    "{service}: no VM on this network holds the caller's address; refused (403)");
                None
            }
            Err(e) => {
                tracing::error!(source = %ip, vnet = %self.vnet, error = %crate::report::chain(&e),
                    "{service}: cannot read the store; refused (403)");
                None
            }
        }
    }

    /// The VM whose NIC on this vnet holds `source`, as IMDS shows it; `None` if no VM does.
    pub fn facts(&self, source: Ipv4Addr) -> Result<Option<Facts>, DbError> {
        let nics: Vec<NicRecord> = self.db.list(Kind::Nic)?;
        let Some(nic) = nics.into_iter().find(|n| {
            n.ip == source && !n.vm.is_empty() && vnet::key(&n.vnet_rg, &n.vnet_name) == self.vnet
        }) else {
            return Ok(None);
        };
        let vms: Vec<VmRecord> = self.db.list(Kind::Vm)?;
        let Some(vm) = vms.into_iter().find(|r| r.nic.key() == nic.key()) else {
            return Ok(None);
        };
        let v: Option<VnetRecord> = self.db.get(Kind::Vnet, &self.vnet)?;
        let subnet = v.and_then(|v| v.subnet_of(nic.ip));
        Ok(Some(facts_of(&self.subscription, &vm, &nic, subnet)))
    }
}

/// The document's view of a VM record and its NIC (pure).
fn facts_of(
    subscription: &str,
    r: &VmRecord,
    nic: &NicRecord,
    subnet: Option<vmnode_network::addr::Subnet>,
) -> Facts {
    Facts {
        vm_id: r.vm_id.clone(),
        name: r.name.clone(),
        resource_group: r.rg.clone(),
        subscription: subscription.into(),
        location: r.location.clone(),
        vm_size: r.size.clone(),
        computer_name: r.computer_name.clone(),
        admin_username: r.admin_username.clone(),
        disable_password_auth: r.disable_password_auth,
        public_keys: r
            .ssh_public_keys
            .iter()
            .map(|k| (k.key_data.clone(), k.path.clone()))
            .collect(),
        tags: r
            .tags
            .iter()
            .map(|(k, v)| {
                (
                    k.clone(),
                    v.as_str().map_or_else(|| v.to_string(), Into::into),
                )
            })
            .collect(),
        image: Image {
            publisher: r.image.publisher.clone(),
            offer: r.image.offer.clone(),
            sku: r.image.sku.clone(),
            version: r.exact_version.clone(),
        },
        os_disk: Disk {
            name: r.os_disk_name.clone(),
            lun: String::new(),
            size_gb: r.os_disk_gb.to_string(),
            caching: r.caching.clone(),
        },
        data_disks: r
            .data_disks
            .iter()
            .map(|d| Disk {
                name: d.name.clone(),
                lun: d.lun.to_string(),
                size_gb: d.size_gb.to_string(),
                caching: d.caching.clone(),
            })
            .collect(),
        resource_disk_mb: crate::vm::sizes::find(&r.size)
            .map(|s| s.resource_disk_size_in_mb.to_string())
            .unwrap_or_default(),
        mac: nic.mac.replace([':', '-'], "").to_uppercase(),
        private_ip: nic.ip.to_string(),
        subnet_address: subnet
            .map(|s| s.network_addr().to_string())
            .unwrap_or_default(),
        subnet_prefix: subnet.map(|s| s.prefix().to_string()).unwrap_or_default(),
        user_data: String::new(),
        has_custom_data: r.custom_data.is_some(),
    }
}
