//! Virtual networks and subnets as stored, validated and shown (ARM `Microsoft.Network`).

use std::net::Ipv4Addr;

use ipnetwork::Ipv4Network;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use vmnode_network::addr::Subnet;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SubnetRecord {
    pub name: String,
    pub prefix: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct VnetRecord {
    pub rg: String,
    pub name: String,
    pub location: String,
    pub address_prefixes: Vec<String>,
    pub subnets: Vec<SubnetRecord>,
    /// The Linux bridge carrying this vnet in the daemon's namespace.
    pub bridge: String,
    /// `{random}.internal.cloudapp.net`: the DNS suffix DHCP hands out (option 15).
    pub domain: String,
    #[serde(default)]
    pub tags: serde_json::Map<String, Value>,
}

/// Why a virtual network or subnet is refused or cannot be written: its address space and
/// subnets ([`validate`]), its PUT body's fields, the rules of [`super::vnets`] (names, subnets in
/// use, the default vnet) and, with their causes, the store and the bridge. The API maps it to the
/// cloud's codes (src/api/error.rs); the rule variants' messages are the cloud's.
#[derive(Debug, thiserror::Error)]
pub enum VnetError {
    #[error("'{0}' is not an IPv4 prefix such as 10.0.0.0/16")]
    BadPrefix(String),
    #[error("subnet '{name}' ({prefix}) is not inside the address space {space}")]
    Outside {
        name: String,
        prefix: String,
        space: String,
    },
    #[error("subnets '{0}' and '{1}' overlap")]
    Overlap(String, String),
    #[error("the address space is empty: give at least one prefix (properties.addressSpace.addressPrefixes)")]
    NoSpace,
    #[error("subnet name '{0}' is invalid: use 1-80 letters, digits, '-', '_' or '.'")]
    BadName(String),
    #[error("subnet '{0}' appears twice")]
    Duplicate(String),
    #[error(
        "The location '{0}' is not available on this node; its location is '{here}'.",
        here = crate::config::LOCATION
    )]
    Location(String),
    #[error(
        "The virtual network name '{0}' is invalid: use 2-64 letters, digits, '-', '_' or '.'."
    )]
    VnetName(String),
    /// ARM's rule for a subnet's name ([`super::vnets::check_name`]): 400 InvalidResourceName.
    #[error("The subnet name '{0}' is invalid: use 1-80 letters, digits, '-', '_' or '.', starting with a letter or digit and ending with one or '_'.")]
    SubnetName(String),
    #[error("Every subnet needs a name.")]
    SubnetWithoutName,
    #[error("Subnet '{0}' needs properties.addressPrefix.")]
    SubnetWithoutPrefix(String),
    /// A subnet's own PUT without `properties.addressPrefix`.
    #[error("Required parameter 'properties.addressPrefix' is missing.")]
    PrefixMissing,
    #[error("Subnet '{0}' is in use by network interfaces and cannot be deleted or changed.")]
    InUse(String),
    /// `kind` is `virtualNetworks` or `virtualNetworks/subnets`.
    #[error(
        "The Resource 'Microsoft.Network/{kind}/{name}' under resource group '{rg}' was not found."
    )]
    NotFound {
        kind: &'static str,
        name: String,
        rg: String,
    },
    #[error("The node's default virtual network cannot be deleted.")]
    DefaultVnet,
    /// Reading the vnet, or bringing its bridge up or down.
    #[error("virtual network")]
    Net(#[source] super::NetError),
    #[error("virtual network record")]
    Db(#[from] crate::storage::db::DbError),
}

pub fn key(rg: &str, name: &str) -> String {
    format!("{}/{}", rg.to_lowercase(), name.to_lowercase())
}

/// The address-allocation key of a subnet.
pub fn subnet_key(rg: &str, vnet: &str, subnet: &str) -> String {
    format!("{}/{}", key(rg, vnet), subnet.to_lowercase())
}

pub fn parse_prefix(s: &str) -> Result<Subnet, VnetError> {
    s.parse::<Subnet>()
        .map_err(|_| VnetError::BadPrefix(s.into()))
}

/// Checks prefixes, containment and overlap.
pub fn validate(space: &[String], subnets: &[SubnetRecord]) -> Result<(), VnetError> {
    if space.is_empty() {
        return Err(VnetError::NoSpace);
    }
    let spaces: Vec<Ipv4Network> = space
        .iter()
        .map(|p| {
            p.parse::<Ipv4Network>()
                .map_err(|_| VnetError::BadPrefix(p.clone()))
        })
        .collect::<Result<_, _>>()?;
    let mut seen: Vec<(String, Subnet)> = Vec::new();
    for s in subnets {
        let ok_name = !s.name.is_empty()
            && s.name.len() <= 80
            && s.name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !ok_name {
            return Err(VnetError::BadName(s.name.clone()));
        }
        let net = parse_prefix(&s.prefix)?;
        let inside = spaces.iter().any(|sp| {
            sp.contains(net.network_addr())
                && sp.contains(net.broadcast())
                && sp.prefix() <= net.prefix()
        });
        if !inside {
            return Err(VnetError::Outside {
                name: s.name.clone(),
                prefix: s.prefix.clone(),
                space: space.join(", "),
            });
        }
        for (other, o) in &seen {
            if other.eq_ignore_ascii_case(&s.name) {
                return Err(VnetError::Duplicate(s.name.clone()));
            }
            if o.contains(net.network_addr()) || net.contains(o.network_addr()) {
                return Err(VnetError::Overlap(other.clone(), s.name.clone()));
            }
        }
        seen.push((s.name.clone(), net));
    }
    Ok(())
}

impl VnetRecord {
    pub fn subnet(&self, name: &str) -> Option<(&SubnetRecord, Subnet)> {
        let s = self
            .subnets
            .iter()
            .find(|s| s.name.eq_ignore_ascii_case(name))?;
        Some((s, parse_prefix(&s.prefix).ok()?))
    }

    /// Gateway addresses (`.1` of each subnet) for the bridge.
    pub fn gateways(&self) -> Vec<Ipv4Network> {
        self.subnets
            .iter()
            .filter_map(|s| parse_prefix(&s.prefix).ok())
            .map(|s| s.gateway_cidr())
            .collect()
    }

    /// Which subnet an address falls in.
    pub fn subnet_of(&self, ip: Ipv4Addr) -> Option<Subnet> {
        self.subnets
            .iter()
            .filter_map(|s| parse_prefix(&s.prefix).ok())
            .find(|s| s.contains(ip))
    }
}

/// The segment after `keyword` in an ARM resource id (`.../resourceGroups/{rg}/...`), the
/// keyword matched case-insensitively as ARM does.
pub fn id_segment<'a>(id: &'a str, keyword: &str) -> Option<&'a str> {
    let mut parts = id.trim_matches('/').split('/');
    parts.find(|p| p.eq_ignore_ascii_case(keyword))?;
    parts.next()
}

pub fn vnet_id(sub: &str, rg: &str, name: &str) -> String {
    format!("/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Network/virtualNetworks/{name}")
}

pub fn subnet_json(sub: &str, v: &VnetRecord, s: &SubnetRecord, nic_ids: &[String]) -> Value {
    json!({
        "id": format!("{}/subnets/{}", vnet_id(sub, &v.rg, &v.name), s.name),
        "name": s.name,
        "type": "Microsoft.Network/virtualNetworks/subnets",
        "properties": {
            "addressPrefix": s.prefix,
            "provisioningState": "Succeeded",
            "ipConfigurations": nic_ids.iter().map(|id| json!({ "id": format!("{id}/ipConfigurations/ipconfig1") })).collect::<Vec<_>>(),
        },
    })
}

/// `nics_of(subnet)` lists the NIC ids in each subnet.
pub fn to_arm(sub: &str, v: &VnetRecord, nics_of: &dyn Fn(&str) -> Vec<String>) -> Value {
    json!({
        "id": vnet_id(sub, &v.rg, &v.name),
        "name": v.name,
        "type": "Microsoft.Network/virtualNetworks",
        "location": v.location,
        "tags": v.tags,
        "properties": {
            "provisioningState": "Succeeded",
            "addressSpace": { "addressPrefixes": v.address_prefixes },
            "subnets": v.subnets.iter().map(|s| subnet_json(sub, v, s, &nics_of(&s.name))).collect::<Vec<_>>(),
            "dhcpOptions": { "dnsServers": [] },
            "enableDdosProtection": false,
            "internalDomainNameSuffix": v.domain,
            "bridge": v.bridge,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sn(name: &str, prefix: &str) -> SubnetRecord {
        SubnetRecord {
            name: name.into(),
            prefix: prefix.into(),
        }
    }

    #[test]
    fn subnets_must_fit_and_not_overlap() {
        let space = vec!["10.2.0.0/16".to_string()];
        assert!(validate(&space, &[sn("a", "10.2.0.0/24"), sn("b", "10.2.1.0/24")]).is_ok());
        assert!(matches!(
            validate(&space, &[sn("a", "10.3.0.0/24")]),
            Err(VnetError::Outside { .. })
        ));
        assert!(matches!(
            validate(&space, &[sn("a", "10.2.0.0/23"), sn("b", "10.2.1.0/24")]),
            Err(VnetError::Overlap(..))
        ));
        assert!(matches!(
            validate(&space, &[sn("a", "10.2.0.0/33")]),
            Err(VnetError::BadPrefix(_))
        ));
        assert!(matches!(validate(&[], &[]), Err(VnetError::NoSpace)));
        assert!(matches!(
            validate(&space, &[sn("a b", "10.2.0.0/24")]),
            Err(VnetError::BadName(_))
        ));
    }
}
