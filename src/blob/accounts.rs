//! Storage accounts as resources (`Microsoft.Storage/storageAccounts`): their records in the
//! database, the rules of their PUT and DELETE, and what serving one takes (the blob store's
//! keys and the CLI's account file). The HTTP handlers in `api/storage.rs` only translate.
//!
//! The node's own account (made at first start, holding OS disks) lives in resource group
//! `vmnode` and cannot be deleted.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

use super::store::AddAccountError;
use super::{account_file, new_account_key, AccountFile, Store};
use crate::storage::db::{Db, DbError, Kind};

/// An account as the database keeps it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AccountRecord {
    pub rg: String,
    pub name: String,
    pub key1: String,
    pub key2: String,
    pub sku: String,
    pub kind: String,
}

/// The body of an account PUT: `{"sku": {"name"}, "kind"}`, each optional. As the cloud's
/// front end does, it takes any JSON document: unknown fields are ignored, and a field of
/// another JSON type than its own counts as absent (so it takes its default).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct AccountBody {
    #[serde(deserialize_with = "lenient")]
    pub sku: Sku,
    #[serde(deserialize_with = "string_or_none")]
    pub kind: Option<String>,
}

/// `sku` of an [`AccountBody`].
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Sku {
    #[serde(deserialize_with = "string_or_none")]
    pub name: Option<String>,
}

impl AccountBody {
    /// The body of a request (`None`: none sent).
    pub fn from_json(v: Option<Value>) -> AccountBody {
        v.map(of_value).unwrap_or_default()
    }
}

/// An object as `T`; anything else, or an object `T` does not take, as `T`'s default.
fn of_value<T: DeserializeOwned + Default>(v: Value) -> T {
    if v.is_object() {
        serde_json::from_value(v).unwrap_or_default()
    } else {
        T::default()
    }
}

fn lenient<'de, D: Deserializer<'de>, T: DeserializeOwned + Default>(d: D) -> Result<T, D::Error> {
    Ok(of_value(Value::deserialize(d)?))
}

fn string_or_none<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(Value::deserialize(d)?.as_str().map(String::from))
}

/// Why an account operation failed; `api/error.rs` maps each to the cloud's answer.
#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    #[error("{0} is not a valid storage account name: use 3-24 lowercase letters and digits.")]
    InvalidName(String),
    #[error("The storage account named {0} is already taken.")]
    Taken(String),
    #[error("The node's own storage account holds VM disks and cannot be deleted.")]
    OwnAccount,
    #[error("serving storage account {name}")]
    Serve {
        name: String,
        #[source]
        source: AddAccountError,
    },
    #[error("writing {}", path.display())]
    File {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Db(#[from] DbError),
}

/// The node's storage accounts: the database's records, served by the blob store.
pub struct Accounts {
    db: Db,
    store: Arc<Store>,
    /// Where the CLI's account files go (`{state}/storage/{account}.json`).
    state_dir: PathBuf,
    /// The blob service's base URL (`http://127.0.0.1:7481`).
    endpoint: String,
    /// The node's own account.
    own: String,
    /// Account writes, one at a time: two PUTs of one new account at once both made keys and
    /// wrote its file, and one failed with a 500 (the fuzzer's races). None awaits while
    /// holding it.
    writes: Mutex<()>,
}

/// Whether `name` is what the cloud takes: 3-24 lowercase letters and digits.
fn valid_name(name: &str) -> bool {
    (3..=24).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
}

impl Accounts {
    /// The accounts of `db` as `store` serves them at `endpoint`; `own` is the node's account.
    pub fn new(
        db: Db,
        store: Arc<Store>,
        state_dir: PathBuf,
        endpoint: String,
        own: String,
    ) -> Self {
        Accounts {
            db,
            store,
            state_dir,
            endpoint,
            own,
            writes: Mutex::new(()),
        }
    }

    fn writes(&self) -> MutexGuard<'_, ()> {
        self.writes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// At start: the node's own account gets its record (in group `vmnode`, key1 `key`) if it
    /// has none, then every account is served, the node's own too (its key2 is in its record).
    pub fn start(&self, key: &str) -> Result<(), AccountError> {
        if self
            .db
            .get::<AccountRecord>(Kind::StorageAccount, &self.own)?
            .is_none()
        {
            let own = AccountRecord {
                rg: crate::net::DEFAULT_RG.into(),
                name: self.own.clone(),
                key1: key.to_string(),
                key2: new_account_key(),
                sku: "Standard_LRS".into(),
                kind: "StorageV2".into(),
            };
            self.db.put(Kind::StorageAccount, &self.own, &own)?;
        }
        for a in self.db.list::<AccountRecord>(Kind::StorageAccount)? {
            self.register(&a)?;
        }
        Ok(())
    }

    /// Makes an account known to the blob service and writes the CLI's account file.
    fn register(&self, a: &AccountRecord) -> Result<(), AccountError> {
        self.store
            .add_account(&a.name, &[&a.key1, &a.key2])
            .map_err(|source| AccountError::Serve {
                name: a.name.clone(),
                source,
            })?;
        let file = AccountFile {
            name: a.name.clone(),
            key: a.key1.clone(),
            blob_endpoint: self.endpoint.clone(),
        };
        let path = account_file(&self.state_dir, &a.name);
        let body = serde_json::to_vec_pretty(&file).map_err(|e| AccountError::File {
            path: path.clone(),
            source: e.into(),
        })?;
        crate::storage::fsutil::write_atomic(&path, &body, 0o600)
            .map_err(|source| AccountError::File { path, source })
    }

    /// The account `name` if it is in group `rg`.
    pub fn get(&self, rg: &str, name: &str) -> Result<Option<AccountRecord>, AccountError> {
        Ok(self
            .db
            .get::<AccountRecord>(Kind::StorageAccount, name)?
            .filter(|a| a.rg.eq_ignore_ascii_case(rg)))
    }

    /// The accounts of group `rg`.
    pub fn list(&self, rg: &str) -> Result<Vec<AccountRecord>, AccountError> {
        let all: Vec<AccountRecord> = self.db.list(Kind::StorageAccount)?;
        Ok(all
            .into_iter()
            .filter(|a| a.rg.eq_ignore_ascii_case(rg))
            .collect())
    }

    /// Creates account `name` in group `rg` with new keys, and serves it; an account of that
    /// name already in `rg` is returned as it is.
    pub fn put(
        &self,
        rg: &str,
        name: &str,
        body: AccountBody,
    ) -> Result<AccountRecord, AccountError> {
        let _one = self.writes();
        if !valid_name(name) {
            return Err(AccountError::InvalidName(name.to_string()));
        }
        if let Some(existing) = self.db.get::<AccountRecord>(Kind::StorageAccount, name)? {
            if !existing.rg.eq_ignore_ascii_case(rg) {
                return Err(AccountError::Taken(name.to_string()));
            }
            return Ok(existing);
        }
        let a = AccountRecord {
            rg: rg.to_string(),
            name: name.to_string(),
            key1: new_account_key(),
            key2: new_account_key(),
            sku: body.sku.name.unwrap_or_else(|| "Standard_LRS".into()),
            kind: body.kind.unwrap_or_else(|| "StorageV2".into()),
        };
        self.register(&a)?;
        self.db.put(Kind::StorageAccount, name, &a)?;
        Ok(a)
    }

    /// Deletes account `name` of group `rg`: its record and the CLI's file; false if there was
    /// none. (Its blobs stay on disk.)
    pub fn delete(&self, rg: &str, name: &str) -> Result<bool, AccountError> {
        let _one = self.writes();
        let Some(a) = self.get(rg, name)? else {
            return Ok(false);
        };
        if a.name == self.own {
            return Err(AccountError::OwnAccount);
        }
        self.db.delete(Kind::StorageAccount, name)?;
        let _ = std::fs::remove_file(account_file(&self.state_dir, name));
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_body_takes_any_json_and_ignores_what_it_does_not_know() {
        let b = AccountBody::from_json(Some(
            json!({"sku": {"name": "Premium_LRS", "tier": "x"}, "kind": "BlobStorage", "location": "local"}),
        ));
        assert_eq!(b.sku.name.as_deref(), Some("Premium_LRS"));
        assert_eq!(b.kind.as_deref(), Some("BlobStorage"));
        // Of the wrong type: absent, as before (each field on its own).
        let b = AccountBody::from_json(Some(json!({"sku": {"name": 5}, "kind": "StorageV2"})));
        assert_eq!((b.sku.name, b.kind.as_deref()), (None, Some("StorageV2")));
        let b = AccountBody::from_json(Some(json!({"sku": ["Premium_LRS"], "kind": 1})));
        assert!(b.sku.name.is_none() && b.kind.is_none());
        for v in [json!(null), json!([1]), json!("x")] {
            assert!(AccountBody::from_json(Some(v)).kind.is_none());
        }
        assert!(AccountBody::from_json(None).sku.name.is_none());
    }

    fn accounts(dir: &std::path::Path) -> Accounts {
        let db = Db::open(&dir.join("db.sqlite")).unwrap();
        let store = Arc::new(Store::new(dir.join("blobs")));
        let a = Accounts::new(
            db,
            store,
            dir.to_path_buf(),
            "http://127.0.0.1:7481".into(),
            "vmnodeown1".into(),
        );
        a.start(&new_account_key()).unwrap();
        a
    }

    #[test]
    fn put_serves_the_account_and_delete_keeps_the_rules() {
        let dir = tempfile::tempdir().unwrap();
        let a = accounts(dir.path());
        // The node's own, in group vmnode, served and with its file.
        assert!(a.get("VMNODE", "vmnodeown1").unwrap().is_some());
        assert!(a.store.account("vmnodeown1").is_some());
        let made = a.put("sa", "labstore1", AccountBody::default()).unwrap();
        assert_eq!(
            (made.sku.as_str(), made.kind.as_str()),
            ("Standard_LRS", "StorageV2")
        );
        assert_eq!(a.store.account("labstore1").unwrap().keys.len(), 2);
        let file = account_file(dir.path(), "labstore1");
        let f: AccountFile = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
        assert_eq!(f.key, made.key1);
        // Again in its group: the same account; in another: taken.
        assert_eq!(
            a.put("SA", "labstore1", AccountBody::default())
                .unwrap()
                .key1,
            made.key1
        );
        let e = a
            .put("other", "labstore1", AccountBody::default())
            .unwrap_err();
        assert!(matches!(e, AccountError::Taken(_)), "{e}");
        let e = a.put("sa", "Bad_Name", AccountBody::default()).unwrap_err();
        assert!(matches!(e, AccountError::InvalidName(_)), "{e}");
        assert_eq!(a.list("sa").unwrap().len(), 1);
        // Delete: the own account never; another group's or a missing one is nothing to do.
        let e = a.delete("vmnode", "vmnodeown1").unwrap_err();
        assert!(matches!(e, AccountError::OwnAccount), "{e}");
        assert!(!a.delete("other", "labstore1").unwrap());
        assert!(a.delete("sa", "labstore1").unwrap());
        assert!(a.get("sa", "labstore1").unwrap().is_none() && !file.exists());
        assert!(!a.delete("sa", "labstore1").unwrap());
    }

    #[test]
    fn names_are_three_to_twenty_four_lowercase_letters_and_digits() {
        assert!(valid_name("abc") && valid_name("labstore1") && valid_name(&"a".repeat(24)));
        for bad in ["ab", "Bad_Name", "a-b", &"a".repeat(25), "ünï"] {
            assert!(!valid_name(bad), "{bad}");
        }
    }
}
