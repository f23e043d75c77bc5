//! VM disks that no VM references are moved aside, never deleted.
//!
//! A daemon killed in the middle of a data disk attach can leave a disk blob made and leased for
//! the VM but not yet in its record (or made and not yet leased). At start, [`super::check`]
//! finds such disks — leased for a VM that does not list them, or unleased `.vhd` files of the
//! `vhds` container with no metadata that no VM lists — releases them and moves them (data,
//! metadata, snapshots) into the account's `quarantine` container as `{container}/{blob}`, where
//! `vmnode storage` and the Blob API still reach them. Nothing in quarantine is ever removed
//! by vmnode.

use std::collections::BTreeMap;

use super::error::BlobError;
use super::lease::Lease;
use super::store::{now_ms, PublicAccess, Store};

/// The container quarantined disks are moved into (one per account).
pub const CONTAINER: &str = "quarantine";

/// Moves blob `blob` of `account`/`container` into the account's quarantine container, free
/// of any lease. Returns its name there (`{container}/{blob}`, or with `.{ms}` appended if that
/// name is taken).
pub fn quarantine(
    store: &Store,
    account: &str,
    container: &str,
    blob: &str,
) -> Result<String, BlobError> {
    match store.create_container(account, CONTAINER, BTreeMap::new(), PublicAccess::Off) {
        Err(e) if e.code != "ContainerAlreadyExists" => return Err(e),
        _ => {}
    }
    let from = store.blob_paths(account, container, blob);
    let _g = store.lock(&from.key);
    let mut name = format!("{container}/{blob}");
    if store.blob_paths(account, CONTAINER, &name).data.exists() {
        name = format!("{name}.{}", now_ms());
    }
    let to = store.blob_paths(account, CONTAINER, &name);
    let Some(mut m) = store.load_blob(&from, blob)? else {
        return Err(BlobError::blob_not_found());
    };
    std::fs::rename(&from.data, &to.data)?;
    if from.snapshots.exists() {
        if let Some(d) = to.snapshots.parent() {
            std::fs::create_dir_all(d)?;
        }
        std::fs::rename(&from.snapshots, &to.snapshots)?;
    }
    m.name = name.clone();
    m.lease = Lease::default();
    m.disk_of = None;
    store.save_blob(&to, &m)?;
    let _ = std::fs::remove_file(&from.meta);
    Ok(name)
}
