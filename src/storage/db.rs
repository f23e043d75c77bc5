//! The node's ACID store: SQLite in WAL mode with `synchronous=FULL`, so a commit that returned
//! survives `kill -9` and power loss. Resources are stored as JSON documents keyed by their
//! lower-cased names (ARM names are case-insensitive); DHCP leases have their own table because
//! the responder must commit one before it sends the ACK.

use std::net::Ipv4Addr;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use rusqlite::{params, Connection, OptionalExtension};
use serde::{de::DeserializeOwned, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("state database")]
    Sqlite(#[from] rusqlite::Error),
    #[error("corrupt record {key}")]
    Corrupt {
        key: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("already exists: {0}")]
    Exists(String),
    #[error("no free address left in {0}")]
    Exhausted(String),
}

/// A DHCP lease as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lease {
    pub mac: String,
    pub ip: Ipv4Addr,
    pub hostname: String,
    pub committed_at: i64,
}

/// Kinds of stored documents.
#[derive(Clone, Copy, Debug)]
pub enum Kind {
    ResourceGroup,
    Vm,
    Nic,
    Vnet,
    StorageAccount,
    /// A delete the API accepted (202): finished by the VM's actor, even across a crash.
    DeleteIntent,
    /// A VM extension (`{rg}/{vm}/{name}`), its protectedSettings sealed.
    Extension,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::ResourceGroup => "rg",
            Kind::Vm => "vm",
            Kind::Nic => "nic",
            Kind::Vnet => "vnet",
            Kind::StorageAccount => "storage",
            Kind::DeleteIntent => "delete-intent",
            Kind::Extension => "extension",
        }
    }
}

#[derive(Clone)]
pub struct Db {
    conn: Arc<Mutex<Connection>>,
}

impl Db {
    pub fn open(path: &Path) -> Result<Db, DbError> {
        let conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
             CREATE TABLE IF NOT EXISTS docs (kind TEXT NOT NULL, key TEXT NOT NULL,
                 body TEXT NOT NULL, PRIMARY KEY (kind, key));
             CREATE TABLE IF NOT EXISTS addrs (subnet TEXT NOT NULL, ip TEXT NOT NULL,
                 owner TEXT NOT NULL, PRIMARY KEY (subnet, ip));
             CREATE TABLE IF NOT EXISTS leases (mac TEXT PRIMARY KEY, ip TEXT NOT NULL,
                 hostname TEXT NOT NULL, committed_at INTEGER NOT NULL);",
        )?;
        Ok(Db {
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave SQLite half-written (transactions roll
        // back), so a poisoned lock is still safe to use.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn meta_get(&self, key: &str) -> Result<Option<String>, DbError> {
        Ok(self
            .lock()
            .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
            .optional()?)
    }

    pub fn meta_set(&self, key: &str, value: &str) -> Result<(), DbError> {
        self.lock().execute(
            "INSERT INTO meta (key, value) VALUES (?1, ?2)
             ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            params![key, value],
        )?;
        Ok(())
    }

    /// Runs `f`'s statements as one transaction: all of them are on disk when this returns `Ok`,
    /// none if `f` fails, panics or the process dies first.
    pub fn transaction<T, E: From<DbError>>(
        &self,
        f: impl FnOnce(&Ops<'_>) -> Result<T, E>,
    ) -> Result<T, E> {
        let mut conn = self.lock();
        let tx = conn.transaction().map_err(DbError::from)?;
        let out = f(&Ops { conn: &tx })?;
        tx.commit().map_err(DbError::from)?;
        Ok(out)
    }

    /// One statement on its own (SQLite's autocommit).
    fn one<T>(&self, f: impl FnOnce(&Ops<'_>) -> Result<T, DbError>) -> Result<T, DbError> {
        f(&Ops { conn: &self.lock() })
    }

    /// Inserts a new document; `DbError::Exists` if the key is taken.
    #[cfg_attr(not(test), allow(dead_code))] // the writers insert inside a transaction now
    pub fn insert<T: Serialize>(&self, kind: Kind, key: &str, doc: &T) -> Result<(), DbError> {
        self.one(|o| o.insert(kind, key, doc))
    }

    pub fn put<T: Serialize>(&self, kind: Kind, key: &str, doc: &T) -> Result<(), DbError> {
        self.one(|o| o.put(kind, key, doc))
    }

    pub fn get<T: DeserializeOwned>(&self, kind: Kind, key: &str) -> Result<Option<T>, DbError> {
        self.one(|o| o.get(kind, key))
    }

    /// All documents of a kind. A corrupt one is logged and skipped, never fatal.
    pub fn list<T: DeserializeOwned>(&self, kind: Kind) -> Result<Vec<T>, DbError> {
        self.one(|o| o.list(kind))
    }

    pub fn delete(&self, kind: Kind, key: &str) -> Result<bool, DbError> {
        self.one(|o| o.delete(kind, key))
    }

    /// Deletes every document of `kind` whose key starts with `prefix` (lower-cased, as keys
    /// are); returns how many went.
    pub fn delete_prefix(&self, kind: Kind, prefix: &str) -> Result<usize, DbError> {
        let n = self.lock().execute(
            "DELETE FROM docs WHERE kind = ?1 AND substr(key, 1, length(?2)) = ?2",
            params![kind.as_str(), prefix.to_lowercase()],
        )?;
        Ok(n)
    }

    /// Reserves the lowest address `pick` returns given the addresses already taken in `subnet`,
    /// in one transaction, for `owner`.
    #[cfg(test)]
    pub fn allocate_addr(
        &self,
        subnet: &str,
        owner: &str,
        pick: impl Fn(&std::collections::HashSet<Ipv4Addr>) -> Option<Ipv4Addr>,
    ) -> Result<Ipv4Addr, DbError> {
        self.transaction(|o| o.allocate_addr(subnet, owner, pick))
    }

    #[cfg_attr(not(test), allow(dead_code))] // the writers free inside a transaction now
    pub fn free_addr(&self, subnet: &str, ip: Ipv4Addr) -> Result<(), DbError> {
        self.one(|o| o.free_addr(subnet, ip))
    }

    /// Every reserved address: (subnet, ip, owner), for the consistency check.
    #[cfg(test)]
    pub fn addrs(&self) -> Result<Vec<Addr>, DbError> {
        self.one(|o| o.addrs())
    }

    #[cfg(test)]
    pub fn addr_count(&self) -> Result<usize, DbError> {
        let n: i64 = self
            .lock()
            .query_row("SELECT COUNT(*) FROM addrs", [], |r| r.get(0))?;
        Ok(usize::try_from(n).unwrap_or(0))
    }

    /// Records a lease durably (the transaction is on disk when this returns).
    pub fn lease_commit(&self, mac: &str, ip: Ipv4Addr, hostname: &str) -> Result<(), DbError> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        self.lock().execute(
            "INSERT INTO leases (mac, ip, hostname, committed_at) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT(mac) DO UPDATE SET ip = excluded.ip, hostname = excluded.hostname,
                 committed_at = excluded.committed_at",
            params![mac.to_lowercase(), ip.to_string(), hostname, now],
        )?;
        Ok(())
    }

    /// One MAC's lease (read on every VM GET: a keyed lookup, not a scan).
    pub fn lease_get(&self, mac: &str) -> Result<Option<Lease>, DbError> {
        let row = self
            .lock()
            .query_row(
                "SELECT mac, ip, hostname, committed_at FROM leases WHERE mac = ?1",
                [mac.to_lowercase()],
                |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, i64>(3)?,
                    ))
                },
            )
            .optional()?;
        Ok(row.and_then(|(mac, ip, hostname, committed_at)| {
            ip.parse()
                .map(|ip| Lease {
                    mac,
                    ip,
                    hostname,
                    committed_at,
                })
                .map_err(|_| tracing::error!(%ip, "skipping corrupt stored lease"))
                .ok()
        }))
    }

    pub fn lease_delete(&self, mac: &str) -> Result<(), DbError> {
        self.one(|o| o.lease_delete(mac))
    }

    /// All leases; a row with an unparsable address is logged and skipped.
    pub fn leases(&self) -> Result<Vec<Lease>, DbError> {
        let conn = self.lock();
        let mut stmt =
            conn.prepare("SELECT mac, ip, hostname, committed_at FROM leases ORDER BY ip")?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, i64>(3)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (mac, ip, hostname, committed_at) = row?;
            match ip.parse() {
                Ok(ip) => out.push(Lease {
                    mac,
                    ip,
                    hostname,
                    committed_at,
                }),
                Err(_) => tracing::error!(%mac, %ip, "skipping corrupt stored lease"),
            }
        }
        Ok(out)
    }
}

/// A reserved address, as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Addr {
    pub subnet: String,
    pub ip: Ipv4Addr,
    /// The NIC's key (`{rg}/{name}`, lower-cased).
    pub owner: String,
}

/// The statements, on a connection in autocommit or inside [`Db::transaction`].
pub struct Ops<'c> {
    conn: &'c Connection,
}

impl Ops<'_> {
    /// Inserts a new document; `DbError::Exists` if the key is taken.
    #[cfg_attr(not(test), allow(dead_code))] // the writers insert inside a transaction now
    pub fn insert<T: Serialize>(&self, kind: Kind, key: &str, doc: &T) -> Result<(), DbError> {
        let body = serde_json::to_string(doc).map_err(|e| DbError::Corrupt {
            key: key.into(),
            source: e,
        })?;
        let n = self.conn.execute(
            "INSERT OR IGNORE INTO docs (kind, key, body) VALUES (?1, ?2, ?3)",
            params![kind.as_str(), key.to_lowercase(), body],
        )?;
        if n == 0 {
            return Err(DbError::Exists(key.into()));
        }
        Ok(())
    }

    pub fn put<T: Serialize>(&self, kind: Kind, key: &str, doc: &T) -> Result<(), DbError> {
        let body = serde_json::to_string(doc).map_err(|e| DbError::Corrupt {
            key: key.into(),
            source: e,
        })?;
        self.conn.execute(
            "INSERT INTO docs (kind, key, body) VALUES (?1, ?2, ?3)
             ON CONFLICT(kind, key) DO UPDATE SET body = excluded.body",
            params![kind.as_str(), key.to_lowercase(), body],
        )?;
        Ok(())
    }

    pub fn get<T: DeserializeOwned>(&self, kind: Kind, key: &str) -> Result<Option<T>, DbError> {
        let body: Option<String> = self
            .conn
            .query_row(
                "SELECT body FROM docs WHERE kind = ?1 AND key = ?2",
                params![kind.as_str(), key.to_lowercase()],
                |r| r.get(0),
            )
            .optional()?;
        body.map(|b| {
            serde_json::from_str(&b).map_err(|e| DbError::Corrupt {
                key: key.into(),
                source: e,
            })
        })
        .transpose()
    }

    /// All documents of a kind. A corrupt one is logged and skipped, never fatal.
    pub fn list<T: DeserializeOwned>(&self, kind: Kind) -> Result<Vec<T>, DbError> {
        let conn = self.conn;
        let mut stmt = conn.prepare("SELECT key, body FROM docs WHERE kind = ?1 ORDER BY key")?;
        let rows = stmt.query_map([kind.as_str()], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (key, body) = row?;
            match serde_json::from_str(&body) {
                Ok(doc) => out.push(doc),
                Err(e) => tracing::error!(%key, error = %e, "skipping corrupt stored record"),
            }
        }
        Ok(out)
    }

    pub fn delete(&self, kind: Kind, key: &str) -> Result<bool, DbError> {
        let n = self.conn.execute(
            "DELETE FROM docs WHERE kind = ?1 AND key = ?2",
            params![kind.as_str(), key.to_lowercase()],
        )?;
        Ok(n > 0)
    }

    /// Reserves the lowest address `pick` returns given the addresses already taken in `subnet`,
    /// for `owner`. Atomic only inside [`Db::transaction`] (which [`Db::allocate_addr`] opens).
    pub fn allocate_addr(
        &self,
        subnet: &str,
        owner: &str,
        pick: impl Fn(&std::collections::HashSet<Ipv4Addr>) -> Option<Ipv4Addr>,
    ) -> Result<Ipv4Addr, DbError> {
        let tx = self.conn;
        let used: std::collections::HashSet<Ipv4Addr> = {
            let mut stmt = tx.prepare("SELECT ip FROM addrs WHERE subnet = ?1")?;
            let rows = stmt.query_map([subnet], |r| r.get::<_, String>(0))?;
            rows.filter_map(|r| r.ok())
                .filter_map(|s| s.parse().ok())
                .collect()
        };
        let ip = pick(&used).ok_or_else(|| DbError::Exhausted(subnet.into()))?;
        tx.execute(
            "INSERT INTO addrs (subnet, ip, owner) VALUES (?1, ?2, ?3)",
            params![subnet, ip.to_string(), owner],
        )?;
        Ok(ip)
    }

    pub fn free_addr(&self, subnet: &str, ip: Ipv4Addr) -> Result<(), DbError> {
        self.conn.execute(
            "DELETE FROM addrs WHERE subnet = ?1 AND ip = ?2",
            params![subnet, ip.to_string()],
        )?;
        Ok(())
    }

    pub fn lease_delete(&self, mac: &str) -> Result<(), DbError> {
        self.conn
            .execute("DELETE FROM leases WHERE mac = ?1", [mac.to_lowercase()])?;
        Ok(())
    }

    pub fn addrs(&self) -> Result<Vec<Addr>, DbError> {
        let mut stmt = self
            .conn
            .prepare("SELECT subnet, ip, owner FROM addrs ORDER BY subnet, ip")?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (subnet, ip, owner) = row?;
            match ip.parse() {
                Ok(ip) => out.push(Addr { subnet, ip, owner }),
                Err(_) => tracing::error!(%subnet, %ip, "skipping corrupt stored address"),
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docs_are_case_insensitive_and_unique() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("db")).unwrap();
        db.insert(Kind::Vm, "RG/VM1", &serde_json::json!({"a": 1}))
            .unwrap();
        assert!(matches!(
            db.insert(Kind::Vm, "rg/vm1", &1),
            Err(DbError::Exists(_))
        ));
        let v: serde_json::Value = db.get(Kind::Vm, "rg/Vm1").unwrap().unwrap();
        assert_eq!(v["a"], 1);
        assert!(db.delete(Kind::Vm, "rg/vm1").unwrap());
        // By prefix: a VM's extensions (`rg/vm/ext`), not another VM's whose name it begins.
        for k in ["rg/vm1/a", "RG/VM1/b", "rg/vm10/a", "rg/vm2/a"] {
            db.put(Kind::Extension, k, &1).unwrap();
        }
        assert_eq!(db.delete_prefix(Kind::Extension, "rg/VM1/").unwrap(), 2);
        assert_eq!(db.list::<i32>(Kind::Extension).unwrap().len(), 2);
        assert!(db
            .get::<serde_json::Value>(Kind::Vm, "rg/vm1")
            .unwrap()
            .is_none());
    }

    #[test]
    fn addresses_and_leases_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        {
            let db = Db::open(&path).unwrap();
            let pick = |used: &std::collections::HashSet<Ipv4Addr>| {
                (4..10)
                    .map(|i| Ipv4Addr::new(10, 1, 0, i))
                    .find(|ip| !used.contains(ip))
            };
            assert_eq!(
                db.allocate_addr("s", "a", pick).unwrap(),
                Ipv4Addr::new(10, 1, 0, 4)
            );
            assert_eq!(
                db.allocate_addr("s", "b", pick).unwrap(),
                Ipv4Addr::new(10, 1, 0, 5)
            );
            db.lease_commit("00:0d:3a:00:00:01", Ipv4Addr::new(10, 1, 0, 4), "vm1")
                .unwrap();
        }
        let db = Db::open(&path).unwrap();
        assert_eq!(db.addr_count().unwrap(), 2);
        let l = db.lease_get("00:0D:3A:00:00:01").unwrap().unwrap();
        assert_eq!(l.ip, Ipv4Addr::new(10, 1, 0, 4));
        db.free_addr("s", Ipv4Addr::new(10, 1, 0, 4)).unwrap();
        db.lease_delete("00:0d:3a:00:00:01").unwrap();
        assert_eq!(db.addr_count().unwrap(), 1);
        assert!(db.leases().unwrap().is_empty());
    }
}
