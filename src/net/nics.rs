//! The rules and writes of network interfaces (what `api::network` calls; the record and its
//! ARM shape are [`super::nic`]'s).
//!
//! A NIC is made with its address in one transaction and deleted with its lease and address in
//! one ([`super::addresses::release_nic`]): a kill halfway leaves the NIC whole or absent, never
//! an address held for nothing. Writes take the node's vnet/NIC write lock ([`NodeNet::writes`]).

use std::net::Ipv4Addr;

use super::nic::{self, NicRecord};
use super::vnet::VnetRecord;
use super::vnets::{arm_name_ok, Written};
use super::{NetError, NodeNet};
use crate::storage::db::{Db, DbError, Kind};

/// What a network interface's PUT asks for, read and checked from its body (`api::network`): its
/// subnet (resource group, vnet, subnet) and the address asked for (Static), if any.
#[derive(Debug)]
pub struct NicSpec {
    pub vnet_rg: String,
    pub vnet: String,
    pub subnet: String,
    pub wanted: Option<Ipv4Addr>,
}

/// Why a network interface is refused or cannot be written: its name and PUT body's fields, the
/// rules of this module, and, with their causes, the store. The API maps it to the cloud's codes
/// (src/api/error.rs); the rule variants' messages are the cloud's.
#[derive(Debug, thiserror::Error)]
pub enum NicError {
    /// ARM's rule ([`arm_name_ok`]): 400 InvalidResourceName.
    #[error("The network interface name '{0}' is invalid: use 1-80 letters, digits, '-', '_' or '.', starting with a letter or digit and ending with one or '_'.")]
    Name(String),
    #[error(
        "Required parameter 'properties.ipConfigurations[0].properties.subnet.id' is missing."
    )]
    SubnetIdMissing,
    #[error("'{0}' is not a subnet id.")]
    NotSubnetId(String),
    #[error("'{0}' is not an IPv4 address.")]
    NotIpv4(String),
    #[error(
        "A Static allocation needs properties.ipConfigurations[0].properties.privateIPAddress."
    )]
    StaticWithoutAddress,
    /// The method as given, lower-cased.
    #[error("privateIPAllocationMethod '{0}' is invalid: use Dynamic or Static.")]
    Method(String),
    /// A PUT of an existing NIC with another subnet or address: 409 PropertyChangeNotAllowed.
    #[error("Network interface '{0}' exists with another subnet or address; delete it first.")]
    Changed(String),
    #[error("Virtual network '{name}' in resource group '{rg}' was not found.")]
    NoVnet { rg: String, name: String },
    /// No address for it: no such subnet, the one asked for is not usable, or none is left. The
    /// API answers 400 with the cause's message.
    #[error("no address for the network interface")]
    Address(#[source] NetError),
    #[error("The Resource 'Microsoft.Network/networkInterfaces/{name}' under resource group '{rg}' was not found.")]
    NotFound { name: String, rg: String },
    /// A delete of a NIC still attached: 400 NicInUse.
    #[error("Network interface '{name}' is used by virtual machine '{vm}'. Delete the VM first.")]
    InUse { name: String, vm: String },
    /// Reading its vnet, or reserving its address, failed in the store.
    #[error("network interface's network")]
    Net(#[source] NetError),
    #[error("network interface record")]
    Db(#[from] DbError),
}

/// A NIC's name by [`arm_name_ok`].
pub fn check_name(name: &str) -> Result<(), NicError> {
    if arm_name_ok(name) {
        return Ok(());
    }
    Err(NicError::Name(name.into()))
}

/// The caller's refusals apart from the store's failures.
fn address_error(e: NetError) -> NicError {
    match e {
        NetError::NoSubnet { .. }
        | NetError::AddressUnavailable { .. }
        | NetError::Db(DbError::Exhausted(_)) => NicError::Address(e),
        e => NicError::Net(e),
    }
}

/// Reserves the NIC's address and stores it, in one transaction. `mac` and `tap` are its new
/// identity; the address is `spec.wanted` or the subnet's lowest free one.
fn create(
    db: &Db,
    rg: &str,
    name: &str,
    v: &VnetRecord,
    spec: NicSpec,
    mac: String,
    tap: String,
) -> Result<NicRecord, NicError> {
    let key = nic::nic_key(rg, name);
    let subnet_name = v
        .subnet(&spec.subnet)
        .map(|(s, _)| s.name.clone())
        .unwrap_or_else(|| spec.subnet.clone());
    db.transaction(|tx| {
        let (ip, skey) = NodeNet::allocate_ip_in(tx, &key, v, &spec.subnet, spec.wanted)
            .map_err(address_error)?;
        let rec = NicRecord {
            rg: rg.into(),
            name: name.into(),
            mac,
            ip,
            subnet: skey,
            tap,
            vm: String::new(),
            hostname: String::new(),
            vnet_rg: v.rg.clone(),
            vnet_name: v.name.clone(),
            subnet_name,
            allocation: if spec.wanted.is_some() {
                "Static".into()
            } else {
                "Dynamic".into()
            },
            delete_with_vm: false,
        };
        tx.insert(Kind::Nic, &key, &rec)?;
        Ok(rec)
    })
}

impl NodeNet {
    /// Every NIC of the node (none if the store cannot be read: the listings and DHCP views
    /// that call this show what they can).
    pub fn nics(&self) -> Vec<NicRecord> {
        self.db().list(Kind::Nic).unwrap_or_default()
    }

    /// The NIC, or 404 ResourceNotFound.
    pub fn get_nic(&self, rg: &str, name: &str) -> Result<NicRecord, NicError> {
        self.db()
            .get(Kind::Nic, &nic::nic_key(rg, name))?
            .ok_or_else(|| NicError::NotFound {
                name: name.into(),
                rg: rg.into(),
            })
    }

    /// Creates a NIC in a subnet. A PUT of an existing NIC with the same subnet (and the same
    /// address, if one is asked for) changes nothing; with another, it is refused.
    pub fn put_nic(
        &self,
        rg: &str,
        name: &str,
        spec: NicSpec,
    ) -> Result<Written<NicRecord>, NicError> {
        let _one = self.writes();
        if let Some(old) = self
            .db()
            .get::<NicRecord>(Kind::Nic, &nic::nic_key(rg, name))?
        {
            let same = old.subnet_name.eq_ignore_ascii_case(&spec.subnet)
                && old.vnet_name.eq_ignore_ascii_case(&spec.vnet)
                && spec.wanted.is_none_or(|w| w == old.ip);
            if !same {
                return Err(NicError::Changed(name.into()));
            }
            return Ok(Written {
                record: old,
                created: false,
            });
        }
        let v = self
            .vnet(&spec.vnet_rg, &spec.vnet)
            .map_err(NicError::Net)?
            .ok_or_else(|| NicError::NoVnet {
                rg: spec.vnet_rg.clone(),
                name: spec.vnet.clone(),
            })?;
        let tap = vmnode_network::plumbing::tap_name_for(&uuid::Uuid::new_v4().to_string());
        let record = create(self.db(), rg, name, &v, spec, self.random_mac(), tap)?;
        Ok(Written {
            record,
            created: true,
        })
    }

    /// Deletes a NIC no VM uses, with its lease and address; `false` if there was none.
    pub fn delete_nic(&self, rg: &str, name: &str) -> Result<bool, NicError> {
        let _one = self.writes();
        let Some(n) = self
            .db()
            .get::<NicRecord>(Kind::Nic, &nic::nic_key(rg, name))?
        else {
            return Ok(false);
        };
        if !n.vm.is_empty() {
            return Err(NicError::InUse {
                name: name.into(),
                vm: n.vm,
            });
        }
        super::addresses::release_nic(self.db(), &n)?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::vnet::SubnetRecord;

    fn vnet() -> VnetRecord {
        VnetRecord {
            rg: "rg".into(),
            name: "v".into(),
            location: crate::config::LOCATION.into(),
            address_prefixes: vec!["10.2.0.0/16".into()],
            subnets: vec![SubnetRecord {
                name: "S1".into(),
                prefix: "10.2.0.0/24".into(),
            }],
            bridge: "vbtest".into(),
            domain: "x.internal.cloudapp.net".into(),
            tags: Default::default(),
        }
    }

    fn spec(wanted: Option<Ipv4Addr>) -> NicSpec {
        NicSpec {
            vnet_rg: "rg".into(),
            vnet: "v".into(),
            subnet: "s1".into(),
            wanted,
        }
    }

    fn make(db: &Db, name: &str, wanted: Option<Ipv4Addr>) -> Result<NicRecord, NicError> {
        let mac = format!("00:0d:3a:00:00:{:02x}", name.len());
        create(db, "rg", name, &vnet(), spec(wanted), mac, "vt0".into())
    }

    #[test]
    fn a_nic_is_stored_with_its_own_address() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("db")).unwrap();
        let n = make(&db, "a", None).unwrap();
        assert_eq!(n.ip, Ipv4Addr::new(10, 2, 0, 4));
        assert_eq!(
            (n.subnet_name.as_str(), n.allocation.as_str()),
            ("S1", "Dynamic")
        );
        let s = make(&db, "b", Some(Ipv4Addr::new(10, 2, 0, 9))).unwrap();
        assert_eq!(s.allocation, "Static");
        assert!(crate::net::addresses::check(&db).unwrap().is_empty());
    }

    /// The record's write fails after the address was reserved (here: the key is taken): the
    /// transaction never commits, so no address is held for a NIC that is not there.
    #[test]
    fn a_create_that_fails_halfway_holds_no_address() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("db")).unwrap();
        make(&db, "a", None).unwrap();
        assert!(matches!(
            make(&db, "a", None),
            Err(NicError::Db(DbError::Exists(_)))
        ));
        assert_eq!(db.addrs().unwrap().len(), 1);
        assert!(crate::net::addresses::check(&db).unwrap().is_empty());
    }

    #[test]
    fn refusals_are_apart_from_store_failures() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("db")).unwrap();
        let taken = Ipv4Addr::new(10, 2, 0, 4);
        make(&db, "a", Some(taken)).unwrap();
        assert!(matches!(
            make(&db, "bb", Some(taken)),
            Err(NicError::Address(NetError::AddressUnavailable { .. }))
        ));
        let mut other = spec(None);
        other.subnet = "nope".into();
        let r = create(&db, "rg", "c", &vnet(), other, "m".into(), "t".into());
        assert!(matches!(
            r,
            Err(NicError::Address(NetError::NoSubnet { .. }))
        ));
        assert!(matches!(
            address_error(NetError::Db(DbError::Exists("x".into()))),
            NicError::Net(_)
        ));
    }
}
