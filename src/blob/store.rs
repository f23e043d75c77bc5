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

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::error::{BlobError, Result};
use super::lease::Lease;
use super::pages::RangeSet;

pub fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

pub fn now_ms() -> i64 {
    (now_ns() / 1_000_000) as i64
}

/// RFC 1123 (`Last-Modified`, `Date`).
pub fn http_date(ns: u64) -> String {
    httpdate::fmt_http_date(UNIX_EPOCH + std::time::Duration::from_nanos(ns))
}

/// The cloud's ETag shape: `"0x8DC..."`.
pub fn etag(ns: u64) -> String {
    format!("\"0x{ns:X}\"")
}

/// `x-ms-snapshot` shape: `2024-05-01T12:34:56.1234567Z`.
pub fn snapshot_time(ns: u64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(ns as i128)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:07}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.nanosecond() / 100
    )
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[allow(clippy::enum_variant_names)] // the cloud's names
pub enum BlobType {
    BlockBlob,
    PageBlob,
    AppendBlob,
}

impl BlobType {
    pub fn as_str(self) -> &'static str {
        match self {
            BlobType::BlockBlob => "BlockBlob",
            BlobType::PageBlob => "PageBlob",
            BlobType::AppendBlob => "AppendBlob",
        }
    }
    pub fn parse(s: &str) -> Option<BlobType> {
        match s {
            "BlockBlob" => Some(BlobType::BlockBlob),
            "PageBlob" => Some(BlobType::PageBlob),
            "AppendBlob" => Some(BlobType::AppendBlob),
            _ => None,
        }
    }
}

/// The standard HTTP properties a blob keeps.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HttpProps {
    pub content_type: Option<String>,
    pub content_encoding: Option<String>,
    pub content_language: Option<String>,
    pub content_md5: Option<String>,
    pub cache_control: Option<String>,
    pub content_disposition: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Block {
    /// The block id as the client sent it (base64).
    pub id: String,
    pub size: u64,
}

/// Everything about a blob except its bytes.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BlobMeta {
    pub name: String,
    pub blob_type: BlobType,
    pub created_ns: u64,
    /// Last change of content, properties or metadata; the ETag is derived from it.
    pub modified_ns: u64,
    /// Content length (a page blob's declared size).
    pub size: u64,
    #[serde(default)]
    pub props: HttpProps,
    /// User metadata (`x-ms-meta-*`), names as the client cased them.
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    #[serde(default)]
    pub lease: Lease,
    #[serde(default)]
    pub sequence_number: u64,
    /// Page blob: pages written through the API.
    #[serde(default)]
    pub pages: RangeSet,
    /// Page blob written by others too (a VM's disk): the file's data extents count as pages,
    /// minus `cleared` (sub-block pieces the API cleared).
    #[serde(default)]
    pub fs_tracked: bool,
    #[serde(default)]
    pub cleared: RangeSet,
    /// Page blob: pages written or cleared since each live snapshot (for `prevsnapshot`).
    #[serde(default)]
    pub changes: BTreeMap<String, RangeSet>,
    /// Block blob: the committed block list, in order.
    #[serde(default)]
    pub blocks: Vec<Block>,
    /// Append blob: committed block count.
    #[serde(default)]
    pub append_blocks: u64,
    /// Set on a snapshot's own metadata.
    #[serde(default)]
    pub snapshot: Option<String>,
    /// The VM (id) whose disk this is, while it holds the disk's lease.
    #[serde(default)]
    pub disk_of: Option<String>,
}

impl BlobMeta {
    pub fn new(name: &str, blob_type: BlobType, size: u64) -> Self {
        let now = now_ns();
        BlobMeta {
            name: name.to_string(),
            blob_type,
            created_ns: now,
            modified_ns: now,
            size,
            props: HttpProps::default(),
            metadata: BTreeMap::new(),
            lease: Lease::default(),
            sequence_number: 0,
            pages: RangeSet::new(),
            fs_tracked: false,
            cleared: RangeSet::new(),
            changes: BTreeMap::new(),
            blocks: Vec::new(),
            append_blocks: 0,
            snapshot: None,
            disk_of: None,
        }
    }

    /// Marks a change: a fresh, strictly newer Last-Modified/ETag.
    pub fn touch(&mut self) {
        self.modified_ns = now_ns().max(self.modified_ns + 1);
    }
}

/// Public access level of a container.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum PublicAccess {
    #[default]
    Off,
    Blob,
    Container,
}

impl PublicAccess {
    pub fn header(self) -> Option<&'static str> {
        match self {
            PublicAccess::Off => None,
            PublicAccess::Blob => Some("blob"),
            PublicAccess::Container => Some("container"),
        }
    }
    pub fn parse(s: &str) -> Option<PublicAccess> {
        match s.to_ascii_lowercase().as_str() {
            "" | "off" | "private" | "none" => Some(PublicAccess::Off),
            "blob" => Some(PublicAccess::Blob),
            "container" => Some(PublicAccess::Container),
            _ => None,
        }
    }
}

/// A stored access policy (`<SignedIdentifier>`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessPolicy {
    pub id: String,
    pub start: Option<String>,
    pub expiry: Option<String>,
    pub permission: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ContainerMeta {
    pub name: String,
    pub created_ns: u64,
    pub modified_ns: u64,
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    #[serde(default)]
    pub public_access: PublicAccess,
    #[serde(default)]
    pub identifiers: Vec<AccessPolicy>,
    #[serde(default)]
    pub lease: Lease,
}

impl ContainerMeta {
    pub fn touch(&mut self) {
        self.modified_ns = now_ns().max(self.modified_ns + 1);
    }
}

/// Cloud rules for a container name.
pub fn valid_container_name(n: &str) -> bool {
    (3..=63).contains(&n.len())
        && n.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !n.starts_with('-')
        && !n.ends_with('-')
        && !n.contains("--")
}

pub fn valid_blob_name(n: &str) -> bool {
    !n.is_empty() && n.len() <= 1024
}

fn safe(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b',' | b'=' | b'+' | b'@')
}

/// The file name a blob's bytes live under.
pub fn encode_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for (i, b) in name.bytes().enumerate() {
        if safe(b) && !(i == 0 && b == b'.') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    if out.len() > 200 {
        use sha2::Digest;
        return format!("~h{}", hex::encode(sha2::Sha256::digest(name.as_bytes())));
    }
    out
}

/// The blob name of a data file, unless it is hashed (then the metadata has it).
pub fn decode_name(file: &str) -> Option<String> {
    if file.starts_with('.') || file.starts_with("~h") {
        return None;
    }
    percent_encoding::percent_decode_str(file)
        .decode_utf8()
        .ok()
        .map(|s| s.into_owned())
}

/// One lock per (account, container, blob) key, held by the operation on it. Only operations on
/// the same blob wait for each other: a write stuck on the filesystem (a rename waiting for the
/// journal while twenty guests write their disks) delays no other blob's readers, as a shared
/// stripe of a fixed lock table did. An operation holds at most one key, so there is no lock
/// order to get wrong.
static HELD: Mutex<std::collections::BTreeSet<String>> =
    Mutex::new(std::collections::BTreeSet::new());
static RELEASED: std::sync::Condvar = std::sync::Condvar::new();

/// The lock on one key; released when dropped.
pub struct KeyGuard(String);

impl Drop for KeyGuard {
    fn drop(&mut self) {
        HELD.lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.0);
        RELEASED.notify_all();
    }
}

pub fn lock(key: &str) -> KeyGuard {
    let mut held = HELD.lock().unwrap_or_else(|p| p.into_inner());
    while held.contains(key) {
        held = RELEASED.wait(held).unwrap_or_else(|p| p.into_inner());
    }
    held.insert(key.to_string());
    KeyGuard(key.to_string())
}

/// Makes `dir` (and its parents) unless it is there. The look comes first because `mkdir` of an
/// existing directory still takes its parent's lock, and waits behind any rename in it.
pub fn ensure_dir(dir: &Path) -> io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    fs::create_dir_all(dir)
}

/// Writes JSON. A new file is made via temp + rename; an existing one is overwritten in place
/// by a single `pwrite`, padded with spaces to its old length (JSON allows trailing
/// whitespace), so a crash of the daemon leaves either the old or the new text, and no rename
/// makes ext4 flush the file on every lease operation. Neither survives power loss without an
/// fsync; leases need to survive a daemon restart.
pub fn write_json<T: Serialize>(path: &Path, v: &T) -> io::Result<()> {
    use std::os::unix::fs::FileExt;
    let mut body = serde_json::to_vec(v).map_err(io::Error::other)?;
    if let Ok(f) = fs::OpenOptions::new().write(true).open(path) {
        let old = f.metadata()?.len() as usize;
        if body.len() < old {
            body.resize(old, b' ');
        }
        return f.write_all_at(&body, 0);
    }
    let dir = path.parent().unwrap_or(Path::new("."));
    ensure_dir(dir)?;
    let tmp = dir.join(format!(
        ".{}.tmp",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("meta")
    ));
    fs::write(&tmp, &body)?;
    fs::rename(&tmp, path)
}

pub fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> io::Result<Option<T>> {
    match fs::read(path) {
        Ok(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// A storage account: its name and its keys (decoded), key1 first. Either key signs requests.
#[derive(Clone, Debug)]
pub struct Account {
    pub name: String,
    pub keys: Vec<Vec<u8>>,
}

impl Account {
    /// The key the node itself signs with (key1).
    pub fn signing_key(&self) -> &[u8] {
        self.keys.first().map_or(&[], Vec::as_slice)
    }
}

/// The content type of a file the node wrote itself, from its extension.
pub fn content_type_of(name: &str) -> &'static str {
    let ext = name.rsplit('.').next().unwrap_or("").to_ascii_lowercase();
    match ext.as_str() {
        "png" => "image/png",
        "bmp" => "image/bmp",
        "log" | "txt" => "text/plain; charset=utf-8",
        "json" => "application/json",
        _ => "application/octet-stream",
    }
}

/// The blob store of a node: where things are, and the accounts it serves.
pub struct Store {
    pub root: PathBuf,
    accounts: RwLock<BTreeMap<String, Account>>,
    /// Recycled staging files, in `{root}/.pool` (no account name starts with a dot).
    pub pool: crate::blob::pool::Pool,
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
        }
    }

    /// Serves account `name` with its keys (base64; key1, key2), replacing what it had.
    pub fn add_account(&self, name: &str, keys_b64: &[&str]) -> Result<(), String> {
        use base64::Engine;
        let keys = keys_b64
            .iter()
            .map(|k| base64::engine::general_purpose::STANDARD.decode(k.trim()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("account key of {name} is not base64: {e}"))?;
        fs::create_dir_all(self.root.join(name)).map_err(|e| e.to_string())?;
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
        let _g = lock(&format!("{account}/{name}"));
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
        let _g = lock(&format!("{account}/{name}"));
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
        let _g = lock(&format!("{account}/{name}"));
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
        let page = len % super::pages::PAGE == 0 && name.to_ascii_lowercase().ends_with(".vhd");
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_key_blocks_only_its_own_key() {
        use std::sync::mpsc;
        let held = lock("acct/c/slow");
        // Another key is free at once, however long the first is held.
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let _g = lock("acct/c/hot");
            tx.send(()).unwrap();
        });
        rx.recv_timeout(std::time::Duration::from_secs(5))
            .expect("another key must not wait");
        // The same key waits until the holder lets go.
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let _g = lock("acct/c/slow");
            tx.send(()).unwrap();
        });
        assert!(rx
            .recv_timeout(std::time::Duration::from_millis(200))
            .is_err());
        drop(held);
        rx.recv_timeout(std::time::Duration::from_secs(5))
            .expect("released key must be taken");
    }

    #[test]
    fn names_round_trip_and_never_collide_with_ours() {
        for n in ["a", "a/b", "dir/x.vhd", ".hidden", "sp ace", "%41", "ünï"] {
            let e = encode_name(n);
            assert!(!e.starts_with('.') && !e.contains('/'), "{e}");
            assert_eq!(decode_name(&e).as_deref(), Some(n));
        }
        assert_ne!(encode_name("a/b"), encode_name("a%2Fb"));
        assert!(encode_name(&"x".repeat(1000)).starts_with("~h"));
        assert_eq!(
            encode_name("vm1-osdisk-1234abcd.vhd"),
            "vm1-osdisk-1234abcd.vhd"
        );
    }

    #[test]
    fn container_names_follow_the_cloud() {
        assert!(valid_container_name("vhds"));
        assert!(valid_container_name("bootdiagnostics-vm1-0a1b"));
        for bad in ["ab", "Abc", "a--b", "-ab", "ab-", "a_b", &"a".repeat(64)] {
            assert!(!valid_container_name(bad), "{bad}");
        }
    }

    #[test]
    fn snapshot_times_have_seven_digits() {
        let s = snapshot_time(1_700_000_000_123_456_789);
        assert_eq!(s, "2023-11-14T22:13:20.1234567Z");
    }
}
