//! The rules and writes of virtual networks and their subnets (what `api::network` calls; the
//! records and their address-space checks are [`super::vnet`]'s).
//!
//! Every write takes the node's vnet/NIC write lock ([`NodeNet::writes`]), reads, checks, stores
//! the record and brings the bridge up or down. A subnet that holds NICs may not go away or change.

use serde_json::{Map, Value};

use super::nic::NicRecord;
use super::vnet::{self, SubnetRecord, VnetError, VnetRecord};
use super::{NodeNet, DEFAULT_BRIDGE};
use crate::storage::db::Kind;

/// What a virtual network's PUT asks for, read and checked from its body (`api::network`); its
/// address space and subnets are checked further by [`vnet::validate`] when stored.
#[derive(Debug)]
pub struct VnetSpec {
    pub prefixes: Vec<String>,
    pub subnets: Vec<SubnetRecord>,
    pub tags: Map<String, Value>,
}

/// What a PUT wrote: the record, and whether it is new (201) or replaced one (200).
#[derive(Debug)]
pub struct Written<T> {
    pub record: T,
    pub created: bool,
}

/// ARM's rule for NIC and subnet names: 1-80 letters, digits, '-', '_' or '.', starting with a
/// letter or digit and ending with one or '_' (the fuzzer made NICs named `$(reboot)` and
/// `nic ` before this).
pub fn arm_name_ok(name: &str) -> bool {
    (1..=80).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric() || c == '_')
}

/// A subnet's name by [`arm_name_ok`].
pub fn check_subnet_name(name: &str) -> Result<(), VnetError> {
    if arm_name_ok(name) {
        return Ok(());
    }
    Err(VnetError::SubnetName(name.into()))
}

/// A virtual network's name: 1-64 letters, digits, '-', '_' or '.'.
pub fn check_vnet_name(name: &str) -> Result<(), VnetError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        return Ok(());
    }
    Err(VnetError::VnetName(name.into()))
}

fn without(subnets: &[SubnetRecord], name: &str) -> Vec<SubnetRecord> {
    subnets
        .iter()
        .filter(|s| !s.name.eq_ignore_ascii_case(name))
        .cloned()
        .collect()
}

impl NodeNet {
    /// The vnet, or 404 ResourceNotFound.
    pub fn get_vnet(&self, rg: &str, name: &str) -> Result<VnetRecord, VnetError> {
        self.vnet(rg, name)
            .map_err(VnetError::Net)?
            .ok_or_else(|| VnetError::NotFound {
                kind: "virtualNetworks",
                name: name.into(),
                rg: rg.into(),
            })
    }

    /// The vnets of a resource group.
    pub fn vnets_in(&self, rg: &str) -> Result<Vec<VnetRecord>, VnetError> {
        let all: Vec<VnetRecord> = self.db().list(Kind::Vnet)?;
        Ok(all
            .into_iter()
            .filter(|v| v.rg.eq_ignore_ascii_case(rg))
            .collect())
    }

    /// The NICs in a vnet, or in one of its subnets.
    pub fn nics_in(&self, v: &VnetRecord, subnet: Option<&str>) -> Vec<NicRecord> {
        self.nics()
            .into_iter()
            .filter(|n| vnet::key(&n.vnet_rg, &n.vnet_name) == vnet::key(&v.rg, &v.name))
            .filter(|n| subnet.is_none_or(|s| n.subnet_name.eq_ignore_ascii_case(s)))
            .collect()
    }

    /// Subnets that hold NICs may not go away or change.
    fn check_in_use(
        &self,
        old: &VnetRecord,
        new_subnets: &[SubnetRecord],
    ) -> Result<(), VnetError> {
        for s in &old.subnets {
            let used = !self.nics_in(old, Some(&s.name)).is_empty();
            let kept = new_subnets
                .iter()
                .find(|n| n.name.eq_ignore_ascii_case(&s.name));
            if used && kept.is_none_or(|k| k.prefix != s.prefix) {
                return Err(VnetError::InUse(s.name.clone()));
            }
        }
        Ok(())
    }

    /// Checks the address space and subnets, stores the record and brings the bridge up.
    fn store_vnet(&self, v: &VnetRecord) -> Result<(), VnetError> {
        vnet::validate(&v.address_prefixes, &v.subnets)?;
        self.db().put(Kind::Vnet, &vnet::key(&v.rg, &v.name), v)?;
        self.bring_up(v).map_err(VnetError::Net)
    }

    /// Creates a vnet, or replaces an existing one's address space, subnets and tags (its bridge
    /// and DNS domain stay).
    pub fn put_vnet(
        &self,
        rg: &str,
        name: &str,
        spec: VnetSpec,
    ) -> Result<Written<VnetRecord>, VnetError> {
        let _one = self.writes();
        let VnetSpec {
            prefixes,
            subnets,
            tags,
        } = spec;
        let existing = self.vnet(rg, name).map_err(VnetError::Net)?;
        let record = match &existing {
            Some(old) => {
                self.check_in_use(old, &subnets)?;
                VnetRecord {
                    address_prefixes: prefixes,
                    subnets,
                    tags,
                    ..old.clone()
                }
            }
            None => VnetRecord {
                rg: rg.into(),
                name: name.into(),
                location: crate::config::LOCATION.into(),
                address_prefixes: prefixes,
                subnets,
                bridge: super::bridge_name(rg, name),
                domain: super::new_domain(),
                tags,
            },
        };
        self.store_vnet(&record)?;
        Ok(Written {
            record,
            created: existing.is_none(),
        })
    }

    /// Deletes a vnet with no NICs and its bridge; `false` if there was none.
    pub fn delete_vnet(&self, rg: &str, name: &str) -> Result<bool, VnetError> {
        let _one = self.writes();
        let Some(v) = self.vnet(rg, name).map_err(VnetError::Net)? else {
            return Ok(false);
        };
        if v.bridge == DEFAULT_BRIDGE {
            return Err(VnetError::DefaultVnet);
        }
        self.check_in_use(&v, &[])?;
        self.tear_down(&v).map_err(VnetError::Net)?;
        self.db().delete(Kind::Vnet, &vnet::key(rg, name))?;
        Ok(true)
    }

    /// Adds or replaces one subnet of a vnet (`prefix`: the body's, checked here after the vnet
    /// is found, as the cloud does). Returns the vnet as stored and the subnet.
    pub fn put_subnet(
        &self,
        rg: &str,
        vnet: &str,
        name: &str,
        prefix: Option<String>,
    ) -> Result<(VnetRecord, Written<SubnetRecord>), VnetError> {
        let _one = self.writes();
        check_subnet_name(name)?;
        let mut v = self.get_vnet(rg, vnet)?;
        let prefix = prefix.ok_or(VnetError::PrefixMissing)?;
        let mut subnets = without(&v.subnets, name);
        let created = subnets.len() == v.subnets.len();
        let record = SubnetRecord {
            name: name.into(),
            prefix,
        };
        subnets.push(record.clone());
        self.check_in_use(&v, &subnets)?;
        v.subnets = subnets;
        self.store_vnet(&v)?;
        Ok((v, Written { record, created }))
    }

    /// A subnet of a vnet with the NICs in it.
    pub fn get_subnet(
        &self,
        rg: &str,
        vnet: &str,
        name: &str,
    ) -> Result<(VnetRecord, SubnetRecord, Vec<NicRecord>), VnetError> {
        let v = self.get_vnet(rg, vnet)?;
        let s = v
            .subnets
            .iter()
            .find(|s| s.name.eq_ignore_ascii_case(name))
            .cloned()
            .ok_or_else(|| VnetError::NotFound {
                kind: "virtualNetworks/subnets",
                name: name.into(),
                rg: rg.into(),
            })?;
        let nics = self.nics_in(&v, Some(&s.name));
        Ok((v, s, nics))
    }

    /// Deletes a subnet that holds no NICs; `false` if there was none.
    pub fn delete_subnet(&self, rg: &str, vnet: &str, name: &str) -> Result<bool, VnetError> {
        let _one = self.writes();
        let mut v = self.get_vnet(rg, vnet)?;
        let subnets = without(&v.subnets, name);
        if subnets.len() == v.subnets.len() {
            return Ok(false);
        }
        self.check_in_use(&v, &subnets)?;
        v.subnets = subnets;
        self.store_vnet(&v)?;
        Ok(true)
    }
}
