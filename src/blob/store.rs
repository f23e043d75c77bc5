//! Containers and blobs on disk, and their metadata.
//!
//! ```text
//! state/blobs/{account}/{container}/
//!     {blob}                      the blob's bytes (a page blob is a sparse file of its size)
//!     .container.json             container properties, metadata, ACL, lease
//!     .meta/{blob}.json           blob properties, metadata, lease, page map, block list
//!     .blocks/{blob}/{id}         uncommitted blocks
//!     .snapshots/{blob}/{time}    snapshot bytes (reflink or sparse copy), {time}.json its meta
//!     .tmp/                       uploads in flight
//! ```
//! A blob name becomes one file name: bytes outside `[A-Za-z0-9-_.,=+@]` are percent-encoded
//! (so `a/b` is `a%2Fb` and `a` and `a/b` can both exist), a leading `.` is encoded so nothing
//! of ours collides, and a name too long for the filesystem is stored as `~h{sha256}` with the
//! real name in its metadata. OS disks the VM actor clones into `vhds/` need no metadata: a data
//! file without `.meta` is a page blob of the file's size whose page ranges are the file's data
//! extents (`fs_tracked`).
//!
//! Metadata is written temp + rename (no fsync): it survives a daemon crash or restart, which is
//! what leases need; bytes are the filesystem's.

mod account;
mod clock;
mod json;
mod locks;
mod meta;
mod names;

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::PathBuf;
use std::sync::RwLock;
use std::time::{SystemTime, UNIX_EPOCH};

pub use account::{Account, AddAccountError};
pub use clock::{etag, http_date, now_ms, now_ns, snapshot_time};
pub use json::{ensure_dir, read_json, write_json};
pub use locks::{KeyGuard, KeyLocks};
pub use meta::{AccessPolicy, BlobMeta, BlobType, Block, ContainerMeta, HttpProps, PublicAccess};
pub use names::{content_type_of, decode_name, encode_name, valid_blob_name, valid_container_name};

use super::error::{BlobError, Result};
use super::lease::Lease;
use super::reaper::Reaper;

/// The blob store of a node: where things are, and the accounts it serves.
pub struct Store {
    pub root: PathBuf,
    accounts: RwLock<BTreeMap<String, Account>>,
    /// Recycled staging files, in `{root}/.pool` (no account name starts with a dot).
    pub pool: crate::blob::pool::Pool,
    /// The per-blob locks of this store's operations ([`Store::lock`]).
    locks: KeyLocks,
    /// The thread that closes replaced and deleted files off the request path.
    pub reaper: Reaper,
}

/// Where one blob's files are.
#[derive(Clone, Debug)]
pub struct BlobPaths {
    pub key: String,
    pub data: PathBuf,
    pub meta: PathBuf,
    pub blocks: PathBuf,
    pub snapshots: PathBuf,
    pub tmp: PathBuf,
}

impl BlobPaths {
    pub fn snapshot_data(&self, snap: &str) -> PathBuf {
        self.snapshots.join(snap)
    }
    pub fn snapshot_meta(&self, snap: &str) -> PathBuf {
        self.snapshots.join(format!("{snap}.json"))
    }
}

impl Store {
    pub fn new(root: PathBuf) -> Store {
        Store {
            pool: crate::blob::pool::Pool::open(root.join(".pool")),
            root,
            accounts: RwLock::new(BTreeMap::new()),
            locks: KeyLocks::default(),
            reaper: Reaper::default(),
        }
    }

    /// Takes the lock on `key` (`{account}/{container}[/{blob}]`), waiting while another
    /// operation of this store holds it. It blocks the thread: see [`KeyLocks`].
    pub fn lock(&self, key: &str) -> KeyGuard<'_> {
        self.locks.lock(key)
    }

    /// Serves account `name` with its keys (base64; key1, key2), replacing what it had.
    pub fn add_account(
        &self,
        name: &str,
        keys_b64: &[&str],
    ) -> std::result::Result<(), AddAccountError> {
        use base64::Engine;
        let keys = keys_b64
            .iter()
            .map(|k| base64::engine::general_purpose::STANDARD.decode(k.trim()))
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|source| AddAccountError::KeyNotBase64 {
                account: name.to_string(),
                source,
            })?;
        let dir = self.root.join(name);
        fs::create_dir_all(&dir).map_err(|source| AddAccountError::Dir { path: dir, source })?;
        self.accounts
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(
                name.to_string(),
                Account {
                    name: name.to_string(),
                    keys,
                },
            );
        Ok(())
    }

    pub fn account(&self, name: &str) -> Option<Account> {
        self.accounts
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .cloned()
    }

    pub fn accounts(&self) -> Vec<Account> {
        self.accounts
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect()
    }

    pub fn container_dir(&self, account: &str, container: &str) -> PathBuf {
        self.root.join(account).join(container)
    }

    fn container_meta_path(&self, account: &str, container: &str) -> PathBuf {
        self.container_dir(account, container)
            .join(".container.json")
    }

    pub fn blob_paths(&self, account: &str, container: &str, blob: &str) -> BlobPaths {
        let dir = self.container_dir(account, container);
        let enc = encode_name(blob);
        BlobPaths {
            key: format!("{account}/{container}/{blob}"),
            data: dir.join(&enc),
            meta: dir.join(".meta").join(format!("{enc}.json")),
            blocks: dir.join(".blocks").join(&enc),
            snapshots: dir.join(".snapshots").join(&enc),
            tmp: dir.join(".tmp"),
        }
    }

    pub fn container_exists(&self, account: &str, container: &str) -> bool {
        self.container_dir(account, container).is_dir()
    }

    /// The container's metadata; a directory made by someone else (the VM actor's `vhds`)
    /// counts as a private container created when the directory was.
    pub fn load_container(&self, account: &str, container: &str) -> Result<ContainerMeta> {
        let dir = self.container_dir(account, container);
        if let Some(m) = read_json::<ContainerMeta>(&self.container_meta_path(account, container))?
        {
            return Ok(m);
        }
        let md = fs::metadata(&dir).map_err(|_| BlobError::container_not_found())?;
        if !md.is_dir() {
            return Err(BlobError::container_not_found());
        }
        let t = md
            .modified()
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map(|d| d.as_nanos() as u64)
            .unwrap_or_else(now_ns);
        Ok(ContainerMeta {
            name: container.to_string(),
            created_ns: t,
            modified_ns: t,
            metadata: BTreeMap::new(),
            public_access: PublicAccess::Off,
            identifiers: Vec::new(),
            lease: Lease::default(),
        })
    }

    pub fn save_container(&self, account: &str, m: &ContainerMeta) -> Result<()> {
        write_json(&self.container_meta_path(account, &m.name), m)?;
        Ok(())
    }

    pub fn create_container(
        &self,
        account: &str,
        name: &str,
        metadata: BTreeMap<String, String>,
        access: PublicAccess,
    ) -> Result<ContainerMeta> {
        let _g = self.lock(&format!("{account}/{name}"));
        let dir = self.container_dir(account, name);
        match fs::create_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                return Err(BlobError::container_exists())
            }
            Err(e) => return Err(e.into()),
        }
        let now = now_ns();
        let m = ContainerMeta {
            name: name.to_string(),
            created_ns: now,
            modified_ns: now,
            metadata,
            public_access: access,
            identifiers: Vec::new(),
            lease: Lease::default(),
        };
        self.save_container(account, &m)?;
        Ok(m)
    }

    /// Runs `f` on the container's metadata under its lock and saves it when `f` says so.
    pub fn update_container<T>(
        &self,
        account: &str,
        name: &str,
        f: impl FnOnce(&mut ContainerMeta) -> Result<(T, bool)>,
    ) -> Result<T> {
        let _g = self.lock(&format!("{account}/{name}"));
        let mut m = self.load_container(account, name)?;
        let (out, save) = f(&mut m)?;
        if save {
            self.save_container(account, &m)?;
        }
        Ok(out)
    }

    pub fn delete_container(
        &self,
        account: &str,
        name: &str,
        check: impl FnOnce(&ContainerMeta) -> Result<()>,
    ) -> Result<()> {
        let _g = self.lock(&format!("{account}/{name}"));
        let m = self.load_container(account, name)?;
        check(&m)?;
        // Rename first so the name is free at once, then remove the bytes.
        let dir = self.container_dir(account, name);
        let trash = self
            .root
            .join(account)
            .join(format!(".deleted-{name}-{}", now_ns()));
        fs::rename(&dir, &trash)?;
        fs::remove_dir_all(&trash)?;
        Ok(())
    }

    pub fn list_containers(&self, account: &str) -> Result<Vec<ContainerMeta>> {
        let mut out = Vec::new();
        let rd = match fs::read_dir(self.root.join(account)) {
            Ok(rd) => rd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(e.into()),
        };
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') || !e.path().is_dir() {
                continue;
            }
            if let Ok(m) = self.load_container(account, &name) {
                out.push(m);
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Names (and the metadata where it is needed to know the name) of the blobs in a container.
    pub fn blob_names(&self, account: &str, container: &str) -> Result<Vec<String>> {
        let dir = self.container_dir(account, container);
        let mut out = Vec::new();
        for e in fs::read_dir(&dir)
            .map_err(|_| BlobError::container_not_found())?
            .flatten()
        {
            let f = e.file_name().to_string_lossy().into_owned();
            if f.starts_with('.') || !e.file_type().map(|t| t.is_file()).unwrap_or(false) {
                continue;
            }
            match decode_name(&f) {
                Some(n) => out.push(n),
                None if f.starts_with("~h") => {
                    if let Ok(Some(m)) =
                        read_json::<BlobMeta>(&dir.join(".meta").join(format!("{f}.json")))
                    {
                        out.push(m.name);
                    }
                }
                None => {}
            }
        }
        out.sort();
        Ok(out)
    }

    /// Names of blobs with uncommitted blocks only (no data file yet).
    pub fn uncommitted_names(&self, account: &str, container: &str) -> Vec<String> {
        let dir = self.container_dir(account, container).join(".blocks");
        let mut out = Vec::new();
        for e in fs::read_dir(&dir).into_iter().flatten().flatten() {
            let f = e.file_name().to_string_lossy().into_owned();
            if let Some(n) = decode_name(&f) {
                if !self.container_dir(account, container).join(&f).exists() {
                    out.push(n);
                }
            }
        }
        out
    }

    /// A blob's metadata: stored, or made up for a data file nobody described (a VM disk).
    pub fn load_blob(&self, p: &BlobPaths, name: &str) -> Result<Option<BlobMeta>> {
        if let Some(m) = read_json::<BlobMeta>(&p.meta)? {
            if p.data.exists() {
                return Ok(Some(m));
            }
            // Metadata without data: a blob deleted behind our back (a VM disk removed).
            return Ok(None);
        }
        let md = match fs::metadata(&p.data) {
            Ok(md) if md.is_file() => md,
            _ => return Ok(None),
        };
        let len = md.len();
        // Files written by the node itself: VM disks (`*.vhd`, page blobs that QEMU writes) and
        // boot diagnostics (screenshots, serial logs: block blobs, typed by their extension).
        let page =
            len % crate::blob::pages::PAGE == 0 && name.to_ascii_lowercase().ends_with(".vhd");
        let mut m = BlobMeta::new(
            name,
            if page {
                BlobType::PageBlob
            } else {
                BlobType::BlockBlob
            },
            len,
        );
        m.fs_tracked = page;
        m.props.content_type = Some(content_type_of(name).to_string());
        let t = |r: io::Result<SystemTime>| {
            r.ok()
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                .map(|d| d.as_nanos() as u64)
        };
        m.modified_ns = t(md.modified()).unwrap_or_else(now_ns);
        m.created_ns = t(md.created()).unwrap_or(m.modified_ns);
        Ok(Some(m))
    }

    pub fn save_blob(&self, p: &BlobPaths, m: &BlobMeta) -> Result<()> {
        write_json(&p.meta, m)?;
        Ok(())
    }

    /// Snapshots of a blob, oldest first.
    pub fn snapshots(&self, p: &BlobPaths) -> Vec<String> {
        let mut out: Vec<String> = fs::read_dir(&p.snapshots)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                e.file_name()
                    .to_str()
                    .and_then(|n| n.strip_suffix(".json"))
                    .map(String::from)
            })
            .collect();
        out.sort();
        out
    }

    pub fn load_snapshot(&self, p: &BlobPaths, snap: &str) -> Result<Option<BlobMeta>> {
        if snap.contains('/') || snap.starts_with('.') {
            return Ok(None);
        }
        Ok(read_json::<BlobMeta>(&p.snapshot_meta(snap))?)
    }
}
