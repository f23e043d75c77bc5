//! Resource groups: their record, their rules (a name as the cloud allows, the node's one
//! location, no delete while VMs remain) and their writes. The API's resource-group routes only
//! translate (`api/resources.rs`); the VM manager asks [`exists`] before it makes anything.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::config::LOCATION;
use crate::storage::db::{Db, DbError, Kind};

/// What a group write or lookup can be refused for.
#[derive(Debug, thiserror::Error)]
pub enum GroupError {
    #[error("The resource group name '{0}' is invalid: use 1-90 letters, digits, '-', '_', '.', '(' or ')', not ending with '.'.")]
    InvalidName(String),
    #[error("The location '{0}' is not available on this node; its location is '{LOCATION}'.")]
    Location(String),
    #[error("Resource group '{0}' could not be found.")]
    NotFound(String),
    #[error("Resource group '{rg}' still holds VMs: {}. Delete them first.", vms.join(", "))]
    NotEmpty { rg: String, vms: Vec<String> },
    #[error("state store")]
    Db(#[from] DbError),
}

/// A resource group as stored (the name keeps the case of its first PUT).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct GroupRecord {
    pub name: String,
    pub location: String,
    pub tags: Map<String, Value>,
}

/// The cloud's rule for a group's name: 1-90 of letters, digits, `-_.()`, not ending in `.`.
pub fn validate_name(name: &str) -> Result<(), GroupError> {
    let ok = !name.is_empty()
        && name.len() <= 90
        && name
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '-' | '_' | '.' | '(' | ')'))
        && !name.ends_with('.');
    if ok {
        Ok(())
    } else {
        Err(GroupError::InvalidName(name.into()))
    }
}

pub fn exists(db: &Db, name: &str) -> Result<bool, GroupError> {
    Ok(db.get::<Value>(Kind::ResourceGroup, name)?.is_some())
}

pub fn get(db: &Db, name: &str) -> Result<GroupRecord, GroupError> {
    db.get(Kind::ResourceGroup, name)?
        .ok_or_else(|| GroupError::NotFound(name.into()))
}

pub fn list(db: &Db) -> Result<Vec<GroupRecord>, GroupError> {
    Ok(db.list(Kind::ResourceGroup)?)
}

/// Makes or updates group `name` (its tags are replaced); true when it is new.
pub fn put(
    db: &Db,
    name: &str,
    location: Option<&str>,
    tags: Map<String, Value>,
) -> Result<(GroupRecord, bool), GroupError> {
    validate_name(name)?;
    let location = location.unwrap_or(LOCATION);
    if !location.eq_ignore_ascii_case(LOCATION) {
        return Err(GroupError::Location(location.into()));
    }
    let existing: Option<GroupRecord> = db.get(Kind::ResourceGroup, name)?;
    let rec = GroupRecord {
        name: existing.as_ref().map_or(name, |e| &e.name).to_string(),
        location: LOCATION.into(),
        tags,
    };
    db.put(Kind::ResourceGroup, &rec.name, &rec)?;
    Ok((rec, existing.is_none()))
}

/// Deletes group `name` unless `vms` (the VMs in it) is not empty; true when it existed.
pub fn delete(db: &Db, name: &str, vms: Vec<String>) -> Result<bool, GroupError> {
    if !vms.is_empty() {
        return Err(GroupError::NotEmpty {
            rg: name.into(),
            vms,
        });
    }
    Ok(db.delete(Kind::ResourceGroup, name)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_cloud_rules() {
        assert!(validate_name("rg(1)-x_y.z").is_ok());
        assert!(validate_name("rg.").is_err());
        assert!(validate_name("r g").is_err());
        assert!(validate_name(&"a".repeat(91)).is_err());
    }

    #[test]
    fn put_keeps_the_first_spelling_and_delete_refuses_while_vms_remain() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("db")).unwrap();
        let (r, new) = put(&db, "Lab", None, Map::new()).unwrap();
        assert!(new);
        assert_eq!(r.name, "Lab");
        let (r, new) = put(&db, "lab", Some("LOCAL"), Map::new()).unwrap();
        assert!(!new);
        assert_eq!(r.name, "Lab");
        assert!(matches!(
            put(&db, "x", Some("westeurope"), Map::new()),
            Err(GroupError::Location(_))
        ));
        let e = delete(&db, "lab", vec!["vm1".into()]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "Resource group 'lab' still holds VMs: vm1. Delete them first."
        );
        assert!(exists(&db, "LAB").unwrap());
        assert!(delete(&db, "lab", vec![]).unwrap());
        assert!(!delete(&db, "lab", vec![]).unwrap());
        assert!(matches!(get(&db, "lab"), Err(GroupError::NotFound(_))));
    }
}
