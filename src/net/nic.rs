//! Network interfaces (`Microsoft.Network/networkInterfaces`): a NIC is its own resource, with
//! a MAC under 00:0D:3A, one IPv4 configuration in a subnet, and a tap while its VM runs.

use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::vnet::vnet_id;

fn dynamic() -> String {
    "Dynamic".into()
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NicRecord {
    pub rg: String,
    pub name: String,
    pub mac: String,
    pub ip: Ipv4Addr,
    /// Address-allocation key of its subnet (`rg/vnet/subnet`).
    pub subnet: String,
    pub tap: String,
    /// The VM it is attached to ("" when detached).
    pub vm: String,
    /// The guest's host name, handed out by DHCP (option 12) and served by the vnet's DNS.
    pub hostname: String,
    #[serde(default)]
    pub vnet_rg: String,
    #[serde(default)]
    pub vnet_name: String,
    #[serde(default)]
    pub subnet_name: String,
    #[serde(default = "dynamic")]
    pub allocation: String,
    /// Made by `vm create` for the VM: deleted with it (deleteOption Delete).
    #[serde(default)]
    pub delete_with_vm: bool,
}

impl NicRecord {
    pub fn key(&self) -> String {
        nic_key(&self.rg, &self.name)
    }
}

pub fn nic_key(rg: &str, name: &str) -> String {
    format!("{}/{}", rg.to_lowercase(), name.to_lowercase())
}

pub fn nic_id(sub: &str, rg: &str, name: &str) -> String {
    format!("/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Network/networkInterfaces/{name}")
}

/// `00-0D-3A-12-34-56`, as the cloud shows MAC addresses.
pub fn mac_azure(mac: &str) -> String {
    mac.replace(':', "-").to_uppercase()
}

/// The NIC as `GET .../networkInterfaces/{nic}` returns it, with vmnode's additions: the DHCP
/// lease, the tap, the ledger and the count of frames the anti-spoofing filter dropped.
pub fn to_arm(
    sub: &str,
    n: &NicRecord,
    location: &str,
    lease_ip: Option<Ipv4Addr>,
    ledger: Value,
    dropped: u64,
) -> Value {
    let id = nic_id(sub, &n.rg, &n.name);
    let mut v = json!({
        "id": id,
        "name": n.name,
        "type": "Microsoft.Network/networkInterfaces",
        "location": location,
        "properties": {
            "provisioningState": "Succeeded",
            "macAddress": mac_azure(&n.mac),
            "primary": true,
            "ipConfigurations": [{
                "id": format!("{id}/ipConfigurations/ipconfig1"),
                "name": "ipconfig1",
                "properties": {
                    "privateIPAddress": n.ip.to_string(),
                    "privateIPAllocationMethod": n.allocation,
                    "privateIPAddressVersion": "IPv4",
                    "primary": true,
                    "provisioningState": "Succeeded",
                    "subnet": { "id": format!("{}/subnets/{}", vnet_id(sub, &n.vnet_rg, &n.vnet_name), n.subnet_name) },
                },
            }],
            "dnsSettings": { "dnsServers": [], "appliedDnsServers": [], "internalDomainNameSuffix": Value::Null },
            "dhcpLease": lease_ip.map(|ip| ip.to_string()),
            "dhcpLedger": ledger,
            "spoofedFramesDropped": dropped,
            "tapName": n.tap,
        },
    });
    if !n.vm.is_empty() {
        v["properties"]["virtualMachine"] = json!({
            "id": format!("/subscriptions/{sub}/resourceGroups/{}/providers/Microsoft.Compute/virtualMachines/{}", n.rg, n.vm)
        });
    }
    v
}
