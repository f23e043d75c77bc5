//! A NIC's address, as the state store holds it: released with the NIC in one transaction, and
//! checked against the NICs (`vmnode network check`, run by the crash tests after every kill).

use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;

use serde::Serialize;

use super::nic::NicRecord;
use crate::storage::db::{Addr, Db, DbError, Kind};

/// Deletes a NIC with its DHCP lease and its address, all or nothing: a kill halfway leaves the
/// NIC whole, never a NIC whose address is free to be handed to another.
pub fn release_nic(db: &Db, n: &NicRecord) -> Result<(), DbError> {
    db.transaction(|tx| {
        tx.lease_delete(&n.mac)?;
        tx.free_addr(&n.subnet, n.ip)?;
        crate::failpoint::crash_point("nic.addr_freed");
        tx.delete(Kind::Nic, &n.key())?;
        Ok(())
    })
}

/// One thing wrong between the NICs and the address table.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AddrFinding {
    /// `OrphanAddress` (held for a NIC that does not exist), `NicWithoutAddress` (a NIC whose
    /// address is not reserved for it), `AddressTwice` (two NICs, or two reservations of one
    /// NIC, on one address).
    pub kind: &'static str,
    pub subnet: String,
    pub ip: Ipv4Addr,
    pub detail: String,
}

/// Every NIC holds exactly its own address and no address is held for anything else.
pub fn findings(nics: &[NicRecord], addrs: &[Addr]) -> Vec<AddrFinding> {
    let mut out = Vec::new();
    let keys: HashSet<String> = nics.iter().map(NicRecord::key).collect();
    let held: HashMap<(&str, Ipv4Addr), &str> = addrs
        .iter()
        .map(|a| ((a.subnet.as_str(), a.ip), a.owner.as_str()))
        .collect();
    let mut per_owner: HashMap<&str, usize> = HashMap::new();
    for a in addrs {
        *per_owner.entry(a.owner.as_str()).or_default() += 1;
        if !keys.contains(&a.owner) {
            out.push(finding(
                "OrphanAddress",
                &a.subnet,
                a.ip,
                format!("held for NIC {} which does not exist", a.owner),
            ));
        }
    }
    for (owner, n) in per_owner
        .into_iter()
        .filter(|(o, n)| *n > 1 && keys.contains(*o))
    {
        let a = addrs
            .iter()
            .find(|a| a.owner == owner)
            .map(|a| (a.subnet.clone(), a.ip));
        if let Some((subnet, ip)) = a {
            out.push(finding(
                "AddressTwice",
                &subnet,
                ip,
                format!("NIC {owner} holds {n} addresses"),
            ));
        }
    }
    let mut seen: HashMap<(&str, Ipv4Addr), String> = HashMap::new();
    for n in nics {
        let k = n.key();
        match held.get(&(n.subnet.as_str(), n.ip)) {
            Some(owner) if *owner == k => {}
            Some(owner) => out.push(finding(
                "NicWithoutAddress",
                &n.subnet,
                n.ip,
                format!("NIC {k}'s address is held for {owner}"),
            )),
            None => out.push(finding(
                "NicWithoutAddress",
                &n.subnet,
                n.ip,
                format!("NIC {k}'s address is not reserved"),
            )),
        }
        if let Some(other) = seen.insert((n.subnet.as_str(), n.ip), k.clone()) {
            out.push(finding(
                "AddressTwice",
                &n.subnet,
                n.ip,
                format!("NICs {other} and {k} have one address"),
            ));
        }
    }
    out
}

fn finding(kind: &'static str, subnet: &str, ip: Ipv4Addr, detail: String) -> AddrFinding {
    AddrFinding {
        kind,
        subnet: subnet.into(),
        ip,
        detail,
    }
}

/// [`findings`] for what the store holds now.
pub fn check(db: &Db) -> Result<Vec<AddrFinding>, DbError> {
    let (nics, addrs) =
        db.transaction(|tx| Ok::<_, DbError>((tx.list(Kind::Nic)?, tx.addrs()?)))?;
    Ok(findings(&nics, &addrs))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nic(name: &str, ip: u8) -> NicRecord {
        NicRecord {
            rg: "rg".into(),
            name: name.into(),
            mac: format!("00:0d:3a:00:00:{ip:02x}"),
            ip: Ipv4Addr::new(10, 1, 0, ip),
            subnet: "s".into(),
            tap: String::new(),
            vm: String::new(),
            hostname: String::new(),
            vnet_rg: "vmnode".into(),
            vnet_name: "v".into(),
            subnet_name: "default".into(),
            allocation: "Dynamic".into(),
            delete_with_vm: false,
        }
    }

    fn addr(owner: &str, ip: u8) -> Addr {
        Addr {
            subnet: "s".into(),
            ip: Ipv4Addr::new(10, 1, 0, ip),
            owner: owner.into(),
        }
    }

    #[test]
    fn each_nic_holding_its_own_address_is_consistent() {
        let nics = [nic("a", 4), nic("b", 5)];
        assert!(findings(&nics, &[addr("rg/a", 4), addr("rg/b", 5)]).is_empty());
    }

    #[test]
    fn every_kind_of_mismatch_is_found() {
        let kinds = |f: Vec<AddrFinding>| f.into_iter().map(|f| f.kind).collect::<Vec<_>>();
        // An address held for a NIC that is gone (a create or NIC delete cut halfway, before).
        assert_eq!(
            kinds(findings(&[], &[addr("rg/gone", 4)])),
            ["OrphanAddress"]
        );
        // A NIC whose address was freed: the next NIC would be handed it.
        assert_eq!(kinds(findings(&[nic("a", 4)], &[])), ["NicWithoutAddress"]);
        assert_eq!(
            kinds(findings(&[nic("a", 4)], &[addr("rg/b", 4)])),
            ["OrphanAddress", "NicWithoutAddress"]
        );
        // Two NICs on one address, and one NIC holding two.
        let mut b = nic("b", 4);
        b.mac = "00:0d:3a:00:00:99".into();
        let f = kinds(findings(&[nic("a", 4), b], &[addr("rg/a", 4)]));
        assert!(f.contains(&"AddressTwice"), "{f:?}");
        let f = kinds(findings(
            &[nic("a", 4)],
            &[addr("rg/a", 4), addr("rg/a", 9)],
        ));
        assert_eq!(f, ["AddressTwice"]);
    }

    #[test]
    fn a_released_nic_takes_its_lease_and_address_with_it() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("db")).unwrap();
        let n = nic("a", 4);
        db.allocate_addr("s", &n.key(), |_| Some(n.ip)).unwrap();
        db.insert(Kind::Nic, &n.key(), &n).unwrap();
        db.lease_commit(&n.mac, n.ip, "a").unwrap();
        assert!(check(&db).unwrap().is_empty());
        release_nic(&db, &n).unwrap();
        assert!(db.addrs().unwrap().is_empty());
        assert!(db.lease_get(&n.mac).unwrap().is_none());
        assert!(db.get::<NicRecord>(Kind::Nic, &n.key()).unwrap().is_none());
    }

    /// What a kill inside the release does: the transaction never commits, so nothing of it is
    /// on disk (here the closure fails after freeing the address, as a crash there would stop it).
    #[test]
    fn a_release_cut_halfway_leaves_the_nic_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let n = nic("a", 4);
        {
            let db = Db::open(&path).unwrap();
            db.allocate_addr("s", &n.key(), |_| Some(n.ip)).unwrap();
            db.insert(Kind::Nic, &n.key(), &n).unwrap();
            let cut: Result<(), DbError> = db.transaction(|tx| {
                tx.free_addr(&n.subnet, n.ip)?;
                Err(DbError::Exists("cut".into()))
            });
            assert!(cut.is_err());
        }
        let db = Db::open(&path).unwrap();
        assert!(check(&db).unwrap().is_empty());
        assert_eq!(db.addrs().unwrap().len(), 1);
    }
}
