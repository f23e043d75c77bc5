//! The PUT bodies of virtual networks, subnets and network interfaces as serde structs, each
//! with a `validate` that gives the domain's request ([`VnetSpec`], [`NicSpec`]) or the rule it
//! breaks.
//!
//! Unknown fields are tolerated, as the cloud does. A field of another JSON type than its own
//! counts as absent (a `location` that is a number, `tags` that are a list, a subnet that is not
//! an object), as these handlers have always read their bodies; the field rules that follow
//! then name what is missing.

use std::net::Ipv4Addr;

use serde::de::{DeserializeOwned, Deserializer};
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::config::LOCATION;
use crate::net::nics::{NicError, NicSpec};
use crate::net::vnet::{id_segment, SubnetRecord, VnetError};
use crate::net::vnets::{check_subnet_name, VnetSpec};

/// The value of `T`, or `T`'s default when the body holds another type there.
fn lenient<'de, D: Deserializer<'de>, T: DeserializeOwned + Default>(d: D) -> Result<T, D::Error> {
    Ok(serde_json::from_value(Value::deserialize(d)?).unwrap_or_default())
}

/// An object as `T` (a struct of lenient fields); anything else is `T`'s default.
fn object<T: DeserializeOwned + Default>(v: Value) -> T {
    if v.is_object() {
        serde_json::from_value(v).unwrap_or_default()
    } else {
        T::default()
    }
}

/// A field that is an object (see [`object`]).
fn lenient_object<'de, D: Deserializer<'de>, T: DeserializeOwned + Default>(
    d: D,
) -> Result<T, D::Error> {
    Ok(object(Value::deserialize(d)?))
}

/// A list of objects; a list's items that are not objects are defaults, anything else no list.
fn objects<'de, D: Deserializer<'de>, T: DeserializeOwned + Default>(
    d: D,
) -> Result<Vec<T>, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::Array(items) => items.into_iter().map(object).collect(),
        _ => Vec::new(),
    })
}

/// A list's strings (other items are skipped); anything else no list.
fn strings<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    let items: Vec<Value> = lenient(d)?;
    Ok(items
        .into_iter()
        .filter_map(|i| match i {
            Value::String(s) => Some(s),
            _ => None,
        })
        .collect())
}

/// `PUT .../virtualNetworks/{vnet}`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct VnetPut {
    #[serde(deserialize_with = "lenient")]
    location: Option<String>,
    #[serde(deserialize_with = "lenient_object")]
    properties: VnetProperties,
    #[serde(deserialize_with = "lenient")]
    tags: Map<String, Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct VnetProperties {
    #[serde(deserialize_with = "lenient_object")]
    address_space: AddressSpace,
    #[serde(deserialize_with = "objects")]
    subnets: Vec<SubnetPut>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct AddressSpace {
    #[serde(deserialize_with = "strings")]
    address_prefixes: Vec<String>,
}

/// A subnet: an item of a vnet's `properties.subnets`, or the body of
/// `PUT .../virtualNetworks/{vnet}/subnets/{subnet}` (whose name is the path's).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct SubnetPut {
    #[serde(deserialize_with = "lenient")]
    name: Option<String>,
    #[serde(deserialize_with = "lenient_object")]
    properties: SubnetProperties,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct SubnetProperties {
    #[serde(deserialize_with = "lenient")]
    address_prefix: Option<String>,
}

impl VnetPut {
    /// Reads a body (any JSON: one that is not an object asks for nothing).
    pub fn read(body: &Value) -> VnetPut {
        object(body.clone())
    }

    /// The location is the node's; every subnet has a valid name and a prefix. The address
    /// space and the subnets' fit are checked when the vnet is stored.
    pub fn validate(self) -> Result<VnetSpec, VnetError> {
        if let Some(loc) = self.location {
            if !loc.eq_ignore_ascii_case(LOCATION) {
                return Err(VnetError::Location(loc));
            }
        }
        let subnets = self
            .properties
            .subnets
            .into_iter()
            .map(SubnetPut::validate)
            .collect::<Result<_, _>>()?;
        Ok(VnetSpec {
            prefixes: self.properties.address_space.address_prefixes,
            subnets,
            tags: self.tags,
        })
    }
}

impl SubnetPut {
    /// Reads a body (any JSON: one that is not an object asks for nothing).
    pub fn read(body: &Value) -> SubnetPut {
        object(body.clone())
    }

    /// The prefix asked for, if any (the subnet's own PUT: checked after its vnet is found).
    pub fn prefix(self) -> Option<String> {
        self.properties.address_prefix
    }

    /// An item of a vnet's subnets: a valid name and a prefix.
    fn validate(self) -> Result<SubnetRecord, VnetError> {
        let name = self.name.ok_or(VnetError::SubnetWithoutName)?;
        check_subnet_name(&name)?;
        let prefix = self
            .properties
            .address_prefix
            .ok_or_else(|| VnetError::SubnetWithoutPrefix(name.clone()))?;
        Ok(SubnetRecord { name, prefix })
    }
}

/// `PUT .../networkInterfaces/{nic}`: only its first IP configuration is read.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct NicPut {
    #[serde(deserialize_with = "lenient_object")]
    properties: NicProperties,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct NicProperties {
    #[serde(deserialize_with = "objects")]
    ip_configurations: Vec<IpConfiguration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct IpConfiguration {
    #[serde(deserialize_with = "lenient_object")]
    properties: IpConfigurationProperties,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct IpConfigurationProperties {
    #[serde(deserialize_with = "lenient_object")]
    subnet: SubnetRef,
    #[serde(rename = "privateIPAllocationMethod", deserialize_with = "lenient")]
    private_ip_allocation_method: Option<String>,
    #[serde(rename = "privateIPAddress", deserialize_with = "lenient")]
    private_ip_address: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct SubnetRef {
    #[serde(deserialize_with = "lenient")]
    id: Option<String>,
}

/// `/subscriptions/{s}/resourceGroups/{rg}/providers/Microsoft.Network/virtualNetworks/{v}/subnets/{n}`
fn parse_subnet_id(id: &str) -> Option<(String, String, String)> {
    let at = |k: &str| id_segment(id, k).map(str::to_string);
    Some((
        at("resourceGroups")?,
        at("virtualNetworks")?,
        at("subnets")?,
    ))
}

impl NicPut {
    /// Reads a body (any JSON: one that is not an object asks for nothing).
    pub fn read(body: &Value) -> NicPut {
        object(body.clone())
    }

    /// A subnet id, and an allocation method (Dynamic by default) with an IPv4 address when
    /// Static.
    pub fn validate(self) -> Result<NicSpec, NicError> {
        let cfg = self
            .properties
            .ip_configurations
            .into_iter()
            .next()
            .unwrap_or_default()
            .properties;
        let subnet_id = cfg.subnet.id.ok_or(NicError::SubnetIdMissing)?;
        let (vnet_rg, vnet, subnet) =
            parse_subnet_id(&subnet_id).ok_or_else(|| NicError::NotSubnetId(subnet_id.clone()))?;
        let method = cfg
            .private_ip_allocation_method
            .unwrap_or_else(|| "Dynamic".into())
            .to_ascii_lowercase();
        let wanted: Option<Ipv4Addr> = match (method.as_str(), cfg.private_ip_address) {
            ("static", Some(ip)) => Some(ip.parse().map_err(|_| NicError::NotIpv4(ip))?),
            ("static", None) => return Err(NicError::StaticWithoutAddress),
            ("dynamic", _) => None,
            _ => return Err(NicError::Method(method)),
        };
        Ok(NicSpec {
            vnet_rg,
            vnet,
            subnet,
            wanted,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn vnet(body: Value) -> Result<VnetSpec, VnetError> {
        VnetPut::read(&body).validate()
    }

    fn nic(body: Value) -> Result<NicSpec, NicError> {
        NicPut::read(&body).validate()
    }

    const SUBNET: &str = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Network/virtualNetworks/v/subnets/s1";

    #[test]
    fn a_vnet_body_is_read_with_unknown_fields_and_wrong_types_as_absent() {
        let s = vnet(json!({
            "location": 7,
            "extra": {"x": 1},
            "tags": ["not", "a", "map"],
            "properties": {"addressSpace": {"addressPrefixes": ["10.2.0.0/16", 3, null]},
                           "subnets": [{"name": "a", "properties": {"addressPrefix": "10.2.0.0/24"}}]},
        }))
        .unwrap();
        assert_eq!(s.prefixes, ["10.2.0.0/16"]);
        assert_eq!((s.subnets[0].name.as_str(), s.tags.len()), ("a", 0));
        assert!(vnet(json!("a string")).unwrap().subnets.is_empty());
        assert!(vnet(json!({"properties": [1, 2]}))
            .unwrap()
            .prefixes
            .is_empty());
    }

    #[test]
    fn a_vnet_body_names_what_is_wrong() {
        let msg = |b: Value| vnet(b).unwrap_err().to_string();
        assert!(msg(json!({"location": "mars"})).starts_with("The location 'mars'"));
        let no_name = json!({"properties": {"subnets": [{"name": 1}]}});
        assert_eq!(msg(no_name), "Every subnet needs a name.");
        let not_object = json!({"properties": {"subnets": ["a"]}});
        assert_eq!(msg(not_object), "Every subnet needs a name.");
        let bad = json!({"properties": {"subnets": [{"name": "a b"}]}});
        assert!(matches!(vnet(bad), Err(VnetError::SubnetName(_))));
        let no_prefix = json!({"properties": {"subnets": [{"name": "a"}]}});
        assert_eq!(msg(no_prefix), "Subnet 'a' needs properties.addressPrefix.");
    }

    #[test]
    fn a_nic_body_gives_its_subnet_and_address() {
        let cfg = |p: Value| json!({"properties": {"ipConfigurations": [{"properties": p}]}});
        let s = nic(cfg(json!({"subnet": {"id": SUBNET}}))).unwrap();
        assert_eq!(
            (s.vnet_rg, s.vnet, s.subnet, s.wanted),
            ("rg".into(), "v".into(), "s1".into(), None)
        );
        let st = json!({"subnet": {"id": SUBNET}, "privateIPAllocationMethod": "STATIC", "privateIPAddress": "10.2.0.9"});
        assert_eq!(
            nic(cfg(st)).unwrap().wanted,
            Some(Ipv4Addr::new(10, 2, 0, 9))
        );
        let msg = |b: Value| nic(b).unwrap_err().to_string();
        assert!(msg(json!({}))
            .contains("'properties.ipConfigurations[0].properties.subnet.id' is missing"));
        assert!(msg(json!({"properties": {"ipConfigurations": {"0": 1}}})).contains("is missing"));
        assert_eq!(
            msg(cfg(json!({"subnet": {"id": "x"}}))),
            "'x' is not a subnet id."
        );
        let m = json!({"subnet": {"id": SUBNET}, "privateIPAllocationMethod": "Fixed"});
        assert_eq!(
            msg(cfg(m)),
            "privateIPAllocationMethod 'fixed' is invalid: use Dynamic or Static."
        );
        let m = json!({"subnet": {"id": SUBNET}, "privateIPAllocationMethod": "Static"});
        assert!(matches!(nic(cfg(m)), Err(NicError::StaticWithoutAddress)));
        let m = json!({"subnet": {"id": SUBNET}, "privateIPAllocationMethod": "Static", "privateIPAddress": "10.2.0"});
        assert_eq!(msg(cfg(m)), "'10.2.0' is not an IPv4 address.");
    }
}
