//! The node's blob service: the engine (containers, blobs, leases and pages over files in
//! `state/blobs`) here, its HTTP face in [`http`]. The handlers in `http/` call the engine; the
//! engine never calls them.
//!
//! | file | role |
//! |---|---|
//! | `http/` | the HTTP face: routing, authorization, requests, responses, bodies, handlers |
//! | `store.rs` | [`Store`]: layout on disk, accounts served, metadata, containers |
//! | `store/` | its parts of one role each: clocks, names, key locks, JSON files, the account, metadata types |
//! | `accounts.rs` | storage accounts as resources: their records, the rules of their PUT and DELETE, their files |
//! | `blobs.rs`, `blobs/{put,page}.rs` | blob operations: reads, the overwrite and lease checks, snapshots, leases, listing; whole-blob writes (Put Blob, blocks, append); page blob operations |
//! | `pool.rs` | recycled staging files: a committed block's file is written over by the next block |
//! | `reaper.rs` | the last close of a replaced or deleted blob's file, on a thread of its own (frees and discards off the request path) |
//! | `pages.rs` | the 512-byte page map; data extents of files written by QEMU |
//! | `lease.rs` | the lease state machine (pure) |
//! | `quarantine.rs` | where unreferenced disks are set aside |
//! | `error.rs` | the cloud's error codes |
//!
//! VM disks are page blobs here: the VM actor clones a disk into `vhds/` and holds it under an
//! infinite lease whose id is the VM's id ([`acquire_disk_lease`], [`release_disk_lease`]);
//! [`check`] finds disks without their lease and leases no VM owns.

pub mod accounts;
pub mod blobs;
pub mod error;
pub mod http;
pub mod lease;
pub mod pages;
pub mod pool;
pub mod quarantine;
pub mod reaper;
pub mod store;

use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use error::BlobError;
pub use store::Store;

use store::now_ms;

/// Generates an account key the way the cloud's look: 64 random bytes, base64.
pub fn new_account_key() -> String {
    use base64::Engine;
    use rand::RngCore;
    let mut b = [0u8; 64];
    rand::thread_rng().fill_bytes(&mut b);
    base64::engine::general_purpose::STANDARD.encode(b)
}

/// What the CLI reads to reach an account without asking the daemon:
/// `state/storage/{account}.json` (0600).
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AccountFile {
    pub name: String,
    pub key: String,
    pub blob_endpoint: String,
}

impl AccountFile {
    /// `http://127.0.0.1:7481/{account}`.
    pub fn account_url(&self) -> String {
        format!("{}/{}", self.blob_endpoint.trim_end_matches('/'), self.name)
    }
    /// The cloud's connection-string format, usable by the SDKs as is.
    pub fn connection_string(&self) -> String {
        format!(
            "DefaultEndpointsProtocol=http;AccountName={};AccountKey={};BlobEndpoint={};",
            self.name,
            self.key,
            self.account_url()
        )
    }
}

pub fn account_file(state: &Path, account: &str) -> PathBuf {
    state.join("storage").join(format!("{account}.json"))
}

/// The accounts described in the state dir.
pub fn read_account_files(state: &Path) -> Vec<AccountFile> {
    let mut out: Vec<AccountFile> = std::fs::read_dir(state.join("storage"))
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".json"))
        .filter_map(|e| std::fs::read(e.path()).ok())
        .filter_map(|b| serde_json::from_slice(&b).ok())
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// A disk a VM has attached: its file and the VM id that holds its lease.
#[derive(Clone, Debug)]
pub struct AttachedDisk {
    pub path: PathBuf,
    pub vm_id: String,
}

/// Which disks VMs have attached now (the daemon builds it over its VM records); [`check`] is
/// given its answer.
pub type AttachedFn = Arc<dyn Fn() -> Vec<AttachedDisk> + Send + Sync>;

/// `(account, container, blob)` of a file in the store.
fn locate(store: &Store, path: &Path) -> Result<(String, String, String), BlobError> {
    let rel = path.strip_prefix(&store.root).map_err(|_| {
        BlobError::invalid_input(format!("{} is not in the blob store", path.display()))
    })?;
    let parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    match parts.as_slice() {
        [a, c, f] => {
            let name = store::decode_name(f).ok_or_else(|| {
                BlobError::invalid_input(format!("{} is not a blob file", path.display()))
            })?;
            Ok((a.clone(), c.clone(), name))
        }
        _ => Err(BlobError::invalid_input(format!(
            "{} is not {{account}}/{{container}}/{{blob}} in the blob store",
            path.display()
        ))),
    }
}

/// Puts a VM's disk under an infinite lease whose id is `vm_id` (a GUID). Idempotent for the
/// same VM; `LeaseAlreadyPresent` if another id holds it. Call it once the disk file exists.
pub fn acquire_disk_lease(store: &Store, disk: &Path, vm_id: &str) -> Result<(), BlobError> {
    let (a, c, b) = locate(store, disk)?;
    let p = store.blob_paths(&a, &c, &b);
    let _g = store.lock(&p.key);
    let mut m = store
        .load_blob(&p, &b)?
        .ok_or_else(BlobError::blob_not_found)?;
    let op = lease::Op::Acquire {
        duration: -1,
        proposed: Some(vm_id.to_string()),
    };
    let (l, _) = m.lease.apply(now_ms(), &op).map_err(BlobError::lease)?;
    m.lease = l;
    m.disk_of = Some(vm_id.to_string());
    store.save_blob(&p, &m)
}

/// Releases a VM's lease on its disk (before the VM deletes the disk, or detaches it).
/// A disk that is gone or not leased by `vm_id` is left as is.
pub fn release_disk_lease(store: &Store, disk: &Path, vm_id: &str) -> Result<(), BlobError> {
    let (a, c, b) = locate(store, disk)?;
    let p = store.blob_paths(&a, &c, &b);
    let _g = store.lock(&p.key);
    let Some(mut m) = store.load_blob(&p, &b)? else {
        let _ = std::fs::remove_file(&p.meta);
        return Ok(());
    };
    if let Ok((l, _)) = m.lease.apply(
        now_ms(),
        &lease::Op::Release {
            id: vm_id.to_string(),
        },
    ) {
        m.lease = l;
    }
    m.disk_of = None;
    store.save_blob(&p, &m)
}

/// Deletes a VM's disk blob with the VM's lease id: the file, its metadata and snapshots.
#[allow(dead_code)] // the VM actor's side of the disk-lease API
pub fn delete_disk(store: &Store, disk: &Path, vm_id: &str) -> Result<(), BlobError> {
    let (a, c, b) = locate(store, disk)?;
    let access = blobs::Access {
        lease_id: Some(vm_id.to_string()),
        cond: blobs::Cond::default(),
    };
    match store.delete_blob(
        &a,
        &c,
        &b,
        None,
        Some(blobs::DeleteSnapshots::Include),
        &access,
    ) {
        Err(e) if e.code == "BlobNotFound" || e.code == "ContainerNotFound" => Ok(()),
        // Not leased (an old disk): delete without an id.
        Err(e) if e.code == "LeaseNotPresentWithBlobOperation" => store.delete_blob(
            &a,
            &c,
            &b,
            None,
            Some(blobs::DeleteSnapshots::Include),
            &blobs::Access::default(),
        ),
        r => r,
    }
}

/// One thing `vmnode storage check` found (and what it did about it).
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Finding {
    /// `DiskWithoutLease`, `DiskLeasedByOther`, `DiskMissing`, `UnreferencedDisk`,
    /// `StaleMetadata`.
    pub kind: String,
    pub blob: String,
    pub detail: String,
    pub repaired: bool,
}

/// The consistency check: every disk in `attached` is under its VM's infinite lease; every disk
/// lease belongs to an attached disk; metadata whose bytes are gone is dropped.
pub fn check(store: &Store, attached: &[AttachedDisk], repair: bool) -> Vec<Finding> {
    let mut out = Vec::new();
    let now = now_ms();
    for d in attached {
        let Ok((a, c, b)) = locate(store, &d.path) else {
            continue;
        };
        let name = format!("{a}/{c}/{b}");
        let p = store.blob_paths(&a, &c, &b);
        let m = {
            let _g = store.lock(&p.key);
            store.load_blob(&p, &b).ok().flatten()
        };
        let Some(m) = m else {
            out.push(Finding {
                kind: "DiskMissing".into(),
                blob: name,
                detail: format!("VM {} has no disk file", d.vm_id),
                repaired: false,
            });
            continue;
        };
        let st = m.lease.state(now);
        let held = st == lease::State::Leased
            && m.lease.duration < 0
            && m.lease
                .id
                .as_deref()
                .is_some_and(|i| i.eq_ignore_ascii_case(&d.vm_id));
        if held {
            continue;
        }
        let other = matches!(st, lease::State::Leased | lease::State::Breaking)
            && !m
                .lease
                .id
                .as_deref()
                .is_some_and(|i| i.eq_ignore_ascii_case(&d.vm_id));
        if other {
            out.push(Finding {
                kind: "DiskLeasedByOther".into(),
                blob: name,
                detail: format!(
                    "leased by {} ({}), not by its VM {}",
                    m.lease.id.clone().unwrap_or_default(),
                    st.as_str(),
                    d.vm_id
                ),
                repaired: false,
            });
            continue;
        }
        let repaired = repair && acquire_disk_lease(store, &d.path, &d.vm_id).is_ok();
        out.push(Finding {
            kind: "DiskWithoutLease".into(),
            blob: name,
            detail: format!("VM {} attached it without an infinite lease", d.vm_id),
            repaired,
        });
    }
    // Leases taken for VMs that no longer have the disk attached; metadata without bytes.
    for acct in store.accounts() {
        for c in store.list_containers(&acct.name).unwrap_or_default() {
            let meta_dir = store.container_dir(&acct.name, &c.name).join(".meta");
            for e in std::fs::read_dir(&meta_dir).into_iter().flatten().flatten() {
                let Ok(Some(m)) = store::read_json::<store::BlobMeta>(&e.path()) else {
                    continue;
                };
                let p = store.blob_paths(&acct.name, &c.name, &m.name);
                let name = format!("{}/{}/{}", acct.name, c.name, m.name);
                if !p.data.exists() {
                    let repaired = repair && std::fs::remove_file(e.path()).is_ok();
                    out.push(Finding {
                        kind: "StaleMetadata".into(),
                        blob: name,
                        detail: "metadata of a blob whose file is gone".into(),
                        repaired,
                    });
                    continue;
                }
                let Some(owner) = &m.disk_of else { continue };
                if attached
                    .iter()
                    .any(|d| d.path == p.data && &d.vm_id == owner)
                {
                    continue;
                }
                out.push(set_aside(
                    store,
                    (&acct.name, &c.name, &m.name),
                    repair,
                    format!("leased for VM {owner}, which does not have it attached"),
                ));
            }
            // Unleased disk files the node made (no metadata) that no VM lists.
            if c.name != "vhds" {
                continue;
            }
            let dir = store.container_dir(&acct.name, &c.name);
            for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                let Some(b) = store::decode_name(&e.file_name().to_string_lossy()) else {
                    continue;
                };
                let p = store.blob_paths(&acct.name, &c.name, &b);
                if !b.ends_with(".vhd") || p.meta.exists() || !p.data.is_file() {
                    continue;
                }
                if attached.iter().any(|d| d.path == p.data) {
                    continue;
                }
                out.push(set_aside(
                    store,
                    (&acct.name, &c.name, &b),
                    repair,
                    "a disk file that no VM lists".into(),
                ));
            }
        }
    }
    out
}

/// An unreferenced disk: moved into quarantine when repairing (never deleted).
fn set_aside(store: &Store, (a, c, b): (&str, &str, &str), repair: bool, why: String) -> Finding {
    let moved = repair.then(|| quarantine::quarantine(store, a, c, b));
    let detail = match &moved {
        Some(Ok(to)) => format!("{why}: moved to {a}/{}/{to}", quarantine::CONTAINER),
        Some(Err(e)) => format!("{why}: cannot move it to quarantine: {e}"),
        None => why,
    };
    Finding {
        kind: "UnreferencedDisk".into(),
        blob: format!("{a}/{c}/{b}"),
        detail,
        repaired: matches!(moved, Some(Ok(_))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disk_lease_blocks_delete_and_check_finds_orphans() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path().join("blobs"));
        store.add_account("acct", &[&new_account_key()]).unwrap();
        let disk = dir.path().join("blobs/acct/vhds/vm1-osdisk-1.vhd");
        std::fs::create_dir_all(disk.parent().unwrap()).unwrap();
        std::fs::File::create(&disk)
            .unwrap()
            .set_len(1 << 20)
            .unwrap();
        let vm = "0b7a2c1e-0000-4000-8000-000000000001";
        acquire_disk_lease(&store, &disk, vm).unwrap();
        acquire_disk_lease(&store, &disk, vm).unwrap(); // idempotent
        let other = "0b7a2c1e-0000-4000-8000-000000000002";
        assert_eq!(
            acquire_disk_lease(&store, &disk, other).unwrap_err().code,
            "LeaseAlreadyPresent"
        );
        let none = blobs::Access::default();
        let e = store
            .delete_blob("acct", "vhds", "vm1-osdisk-1.vhd", None, None, &none)
            .unwrap_err();
        assert_eq!((e.status.as_u16(), e.code), (412, "LeaseIdMissing"));
        delete_disk(&store, &disk, vm).unwrap();
        assert!(!disk.exists());
    }

    /// Disks no VM lists (a daemon killed inside an attach) are moved into the quarantine
    /// container, unleased, bytes intact — never deleted; a second check finds nothing.
    #[test]
    fn unreferenced_disks_are_quarantined_never_deleted() {
        use std::os::unix::fs::FileExt;
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path().join("blobs"));
        store.add_account("acct", &[&new_account_key()]).unwrap();
        let vhds = dir.path().join("blobs/acct/vhds");
        std::fs::create_dir_all(&vhds).unwrap();
        let make = |name: &str, byte: u8| {
            let p = vhds.join(name);
            let f = std::fs::File::create(&p).unwrap();
            f.set_len(1 << 20).unwrap();
            f.write_all_at(&[byte; 512], 4096).unwrap();
            p
        };
        // Leased for a VM that does not list it; and a bare disk file never leased.
        let leased = make("vm1-dd0.vhd", 7);
        acquire_disk_lease(&store, &leased, "0b7a2c1e-0000-4000-8000-000000000001").unwrap();
        make("vm1-dd1.vhd", 9);
        let dry = check(&store, &[], false);
        assert_eq!(dry.len(), 2, "{dry:?}");
        assert!(dry
            .iter()
            .all(|f| f.kind == "UnreferencedDisk" && !f.repaired));
        assert!(leased.exists(), "a check without repair moves nothing");

        let f = check(&store, &[], true);
        assert_eq!(f.len(), 2, "{f:?}");
        assert!(f.iter().all(|f| f.repaired), "{f:?}");
        assert!(!leased.exists() && !vhds.join("vm1-dd1.vhd").exists());
        for (name, byte) in [("vhds/vm1-dd0.vhd", 7u8), ("vhds/vm1-dd1.vhd", 9)] {
            let p = store.blob_paths("acct", quarantine::CONTAINER, name);
            let m = store.load_blob(&p, name).unwrap().expect("quarantined");
            assert_eq!(m.lease.state(now_ms()), lease::State::Available, "{name}");
            assert!(m.disk_of.is_none());
            let mut buf = [0u8; 512];
            std::fs::File::open(&p.data)
                .unwrap()
                .read_exact_at(&mut buf, 4096)
                .unwrap();
            assert_eq!(buf, [byte; 512], "{name}: bytes kept");
            assert_eq!(std::fs::metadata(&p.data).unwrap().len(), 1 << 20);
        }
        assert!(check(&store, &[], true).is_empty());
    }
}
