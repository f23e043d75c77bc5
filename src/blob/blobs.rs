//! Blob operations on the [`Store`]. Every operation takes the blob's lock, loads its metadata,
//! checks the lease and the conditional headers, changes what it must, and saves.
//!
//! Here: reads, the shared checks, snapshots, deletion, leases, listing; `put.rs` writes of
//! whole blobs (Put Blob, blocks, append); `page.rs` page blob operations.

use std::fs::{self, File};
use std::io;
use std::ops::Range;
use std::path::Path;

use base64::Engine;
use hyper::StatusCode;

use super::error::{BlobError, Result};
use super::lease::{self, Lease};
use super::pages::{self, RangeSet};
use super::reaper;
use super::store::{now_ms, now_ns, snapshot_time, BlobMeta, BlobPaths, BlobType, Store};

/// Conditional headers (`If-Match`, `If-None-Match`, `If-Modified-Since`,
/// `If-Unmodified-Since`; dates in seconds since the epoch).
#[derive(Clone, Debug, Default)]
pub struct Cond {
    pub if_match: Option<String>,
    pub if_none_match: Option<String>,
    pub if_modified_since: Option<u64>,
    pub if_unmodified_since: Option<u64>,
}

fn etag_in(list: &str, etag: &str) -> bool {
    list.split(',')
        .map(str::trim)
        .any(|e| e == "*" || e == etag || e.trim_matches('"') == etag.trim_matches('"'))
}

impl Cond {
    /// Checks against a resource that exists. A failing read answers 304 where HTTP says so.
    pub fn check(&self, modified_ns: u64, read: bool) -> Result<()> {
        let etag = super::store::etag(modified_ns);
        let secs = modified_ns / 1_000_000_000;
        if let Some(m) = &self.if_match {
            if !etag_in(m, &etag) {
                return Err(BlobError::condition_not_met());
            }
        }
        if let Some(t) = self.if_unmodified_since {
            if secs > t {
                return Err(BlobError::condition_not_met());
            }
        }
        let not_modified = || {
            if read {
                BlobError::not_modified()
            } else {
                BlobError::condition_not_met()
            }
        };
        if let Some(m) = &self.if_none_match {
            if etag_in(m, &etag) {
                return Err(not_modified());
            }
        }
        if let Some(t) = self.if_modified_since {
            if secs <= t {
                return Err(not_modified());
            }
        }
        Ok(())
    }

    /// Checks against a resource that does not exist (a create).
    pub fn check_absent(&self) -> Result<()> {
        if self.if_match.is_some() || self.if_unmodified_since.is_some() {
            return Err(BlobError::condition_not_met());
        }
        Ok(())
    }
}

/// What a request brings besides its payload: its lease id and its conditions.
#[derive(Clone, Debug, Default)]
pub struct Access {
    pub lease_id: Option<String>,
    pub cond: Cond,
}

/// What Put Blob creates.
pub enum NewBlob<'a> {
    /// A block blob from an uploaded temp file.
    Block(&'a Path),
    Page {
        size: u64,
        sequence: u64,
    },
    Append,
}

/// An entry of a Put Block List body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlockRef {
    Committed,
    Uncommitted,
    Latest,
}

/// `x-ms-delete-snapshots`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeleteSnapshots {
    Include,
    Only,
}

/// Get Page Ranges: the blob, its page ranges, and (diff form) its cleared ranges.
pub type PageRanges = (BlobMeta, Vec<Range<u64>>, Vec<Range<u64>>);

/// A listing entry.
pub enum Entry {
    Blob(Box<BlobMeta>),
    Prefix(String),
}

fn block_file(p: &BlobPaths, id: &str) -> Result<std::path::PathBuf> {
    let raw = base64::engine::general_purpose::STANDARD
        .decode(id)
        .map_err(|_| BlobError::invalid_query("blockid", id))?;
    if raw.is_empty() || raw.len() > 64 {
        return Err(BlobError::invalid_query("blockid", id));
    }
    Ok(p.blocks.join(hex::encode(raw)))
}

fn wrong_type() -> BlobError {
    BlobError::blob_type_mismatch()
}

fn mtime_ns(md: &fs::Metadata) -> Option<u64> {
    md.modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_nanos() as u64)
}

/// A blob that replaces `old` keeps its creation time and lease, gets a newer ETag, and counts
/// as wholly changed for the snapshots `old` had (for `prevsnapshot` diffs).
fn succeed(m: &mut BlobMeta, old: Option<&BlobMeta>) {
    let Some(o) = old else { return };
    m.created_ns = o.created_ns;
    m.lease = o.lease.clone();
    m.modified_ns = o.modified_ns;
    m.touch();
    let mut all = RangeSet::new();
    all.insert(0..o.size.max(m.size));
    for snap in o.changes.keys() {
        m.changes.insert(snap.clone(), all.clone());
    }
}

impl Store {
    fn paths_in(&self, account: &str, container: &str, blob: &str) -> Result<BlobPaths> {
        if !self.container_exists(account, container) {
            return Err(BlobError::container_not_found());
        }
        Ok(self.blob_paths(account, container, blob))
    }

    /// Folds in what happened to the file behind our back (a guest writing its disk).
    fn refresh(&self, p: &BlobPaths, m: &mut BlobMeta) {
        if !m.fs_tracked || m.snapshot.is_some() {
            return;
        }
        if let Ok(md) = fs::metadata(&p.data) {
            m.size = md.len();
            if let Some(t) = mtime_ns(&md) {
                m.modified_ns = m.modified_ns.max(t);
            }
        }
    }

    /// The pages of a blob that hold data.
    pub fn valid_pages(&self, data: &Path, m: &BlobMeta) -> io::Result<RangeSet> {
        let mut set = if m.fs_tracked && m.snapshot.is_none() {
            let f = File::open(data)?;
            pages::file_extents(&f, m.size)?
                .difference(&m.cleared)
                .union(&m.pages)
        } else {
            m.pages.clone()
        };
        set.truncate(m.size);
        Ok(set)
    }

    fn load_existing(&self, p: &BlobPaths, name: &str) -> Result<BlobMeta> {
        let mut m = self
            .load_blob(p, name)?
            .ok_or_else(BlobError::blob_not_found)?;
        self.refresh(p, &mut m);
        Ok(m)
    }

    /// A blob's (or a snapshot's) metadata for a read.
    pub fn read_meta(
        &self,
        account: &str,
        container: &str,
        blob: &str,
        snapshot: Option<&str>,
        a: &Access,
    ) -> Result<(BlobMeta, BlobPaths)> {
        let p = self.paths_in(account, container, blob)?;
        let _g = self.lock(&p.key);
        let base = self.load_existing(&p, blob);
        match snapshot {
            None => {
                let m = base?;
                m.lease
                    .check_read(now_ms(), a.lease_id.as_deref())
                    .map_err(|e| BlobError::lease_access(e, false))?;
                a.cond.check(m.modified_ns, true)?;
                Ok((m, p))
            }
            Some(s) => {
                let m = self
                    .load_snapshot(&p, s)?
                    .ok_or_else(BlobError::blob_not_found)?;
                a.cond.check(m.modified_ns, true)?;
                Ok((m, p))
            }
        }
    }

    /// Opens a blob's bytes for reading, after the same checks as [`Store::read_meta`].
    pub fn open_read(
        &self,
        account: &str,
        container: &str,
        blob: &str,
        snapshot: Option<&str>,
        a: &Access,
    ) -> Result<(BlobMeta, File)> {
        let (m, p) = self.read_meta(account, container, blob, snapshot, a)?;
        let path = match snapshot {
            Some(s) => p.snapshot_data(s),
            None => p.data.clone(),
        };
        let f = File::open(&path).map_err(|_| BlobError::blob_not_found())?;
        Ok((m, f))
    }

    /// Loads a blob for a change: lease and conditions checked; `f` changes it; saved after.
    pub fn update_blob<T>(
        &self,
        account: &str,
        container: &str,
        blob: &str,
        a: &Access,
        f: impl FnOnce(&BlobPaths, &mut BlobMeta) -> Result<T>,
    ) -> Result<(T, BlobMeta)> {
        let p = self.paths_in(account, container, blob)?;
        let _g = self.lock(&p.key);
        let mut m = self.load_existing(&p, blob)?;
        m.lease
            .check_write(now_ms(), a.lease_id.as_deref())
            .map_err(|e| BlobError::lease_access(e, false))?;
        a.cond.check(m.modified_ns, false)?;
        let out = f(&p, &mut m)?;
        self.save_blob(&p, &m)?;
        Ok((out, m))
    }

    /// Before Put Blob or Put Block List replaces a blob (the caller holds its lock), the cloud's
    /// rules for a write that creates or overwrites the whole blob:
    /// - no blob yet: a lease id is 412 `LeaseNotPresentWithBlobOperation`; `If-Match` and
    ///   `If-Unmodified-Since` cannot hold (412 `ConditionNotMet`);
    /// - a blob: `If-None-Match: *` is 409 `BlobAlreadyExists`; its lease must allow the write
    ///   (412 `LeaseIdMissing` / `LeaseIdMismatchWithBlobOperation`); the conditions are checked
    ///   against its current ETag (a disk's follows its guest's writes).
    ///
    /// Returns the blob being replaced.
    pub(super) fn check_overwrite(
        &self,
        p: &BlobPaths,
        name: &str,
        a: &Access,
    ) -> Result<Option<BlobMeta>> {
        let Some(mut old) = self.load_blob(p, name)? else {
            if a.lease_id.is_some() {
                return Err(BlobError::lease_access(
                    lease::AccessError::NotPresent,
                    false,
                ));
            }
            a.cond.check_absent()?;
            return Ok(None);
        };
        if a.cond.if_none_match.as_deref() == Some("*") {
            return Err(BlobError::blob_exists());
        }
        old.lease
            .check_write(now_ms(), a.lease_id.as_deref())
            .map_err(|e| BlobError::lease_access(e, false))?;
        self.refresh(p, &mut old);
        a.cond.check(old.modified_ns, false)?;
        Ok(Some(old))
    }

    /// Snapshot Blob: freezes the current bytes and metadata; returns the snapshot time.
    pub fn snapshot(
        &self,
        account: &str,
        container: &str,
        blob: &str,
        metadata: Option<std::collections::BTreeMap<String, String>>,
        a: &Access,
    ) -> Result<(String, BlobMeta)> {
        let p = self.paths_in(account, container, blob)?;
        let _g = self.lock(&p.key);
        let mut m = self.load_existing(&p, blob)?;
        m.lease
            .check_read(now_ms(), a.lease_id.as_deref())
            .map_err(|e| BlobError::lease_access(e, false))?;
        a.cond.check(m.modified_ns, false)?;
        let mut t = now_ns() / 100 * 100;
        let mut id = snapshot_time(t);
        while p.snapshot_meta(&id).exists() {
            t += 100;
            id = snapshot_time(t);
        }
        fs::create_dir_all(&p.snapshots)?;
        let dst = p.snapshot_data(&id);
        match m.blob_type {
            // Block blobs are replaced by rename, never written in place: a link is a copy.
            BlobType::BlockBlob => fs::hard_link(&p.data, &dst)?,
            _ => {
                crate::storage::disk::sparse_clone(&p.data, &dst).map_err(BlobError::internal)?;
            }
        }
        let mut s = m.clone();
        if s.blob_type == BlobType::PageBlob {
            s.pages = self.valid_pages(&p.data, &m)?;
        }
        s.fs_tracked = false;
        s.cleared = RangeSet::new();
        s.changes.clear();
        s.lease = Lease::default();
        s.snapshot = Some(id.clone());
        if let Some(md) = metadata {
            s.metadata = md;
        }
        super::store::write_json(&p.snapshot_meta(&id), &s)?;
        if m.blob_type == BlobType::PageBlob {
            m.changes.insert(id.clone(), RangeSet::new());
            self.save_blob(&p, &m)?;
        }
        Ok((id, m))
    }

    /// Delete Blob (or one snapshot, or only the snapshots).
    pub fn delete_blob(
        &self,
        account: &str,
        container: &str,
        blob: &str,
        snapshot: Option<&str>,
        snapshots: Option<DeleteSnapshots>,
        a: &Access,
    ) -> Result<()> {
        let p = self.paths_in(account, container, blob)?;
        let _g = self.lock(&p.key);
        if let Some(s) = snapshot {
            let sm = self
                .load_snapshot(&p, s)?
                .ok_or_else(BlobError::blob_not_found)?;
            a.cond.check(sm.modified_ns, false)?;
            fs::remove_file(p.snapshot_meta(s))?;
            let _ = fs::remove_file(p.snapshot_data(s));
            if let Some(mut m) = self.load_blob(&p, blob)? {
                if m.changes.remove(s).is_some() {
                    self.save_blob(&p, &m)?;
                }
            }
            return Ok(());
        }
        let mut m = self.load_existing(&p, blob)?;
        m.lease
            .check_write(now_ms(), a.lease_id.as_deref())
            .map_err(|e| BlobError::lease_access(e, false))?;
        a.cond.check(m.modified_ns, false)?;
        let snaps = self.snapshots(&p);
        match snapshots {
            None if !snaps.is_empty() => Err(BlobError::new(
                StatusCode::CONFLICT,
                "SnapshotsPresent",
                "This operation is not permitted because the blob has snapshots.",
            )),
            Some(DeleteSnapshots::Only) => {
                let _ = fs::remove_dir_all(&p.snapshots);
                m.changes.clear();
                self.save_blob(&p, &m)?;
                Ok(())
            }
            _ => {
                let old_file = reaper::hold(&p.data);
                fs::remove_file(&p.data)?;
                self.reaper.release(old_file);
                let _ = fs::remove_file(&p.meta);
                let _ = fs::remove_dir_all(&p.snapshots);
                self.pool.recycle_dir(&p.blocks);
                Ok(())
            }
        }
    }

    /// Lease Blob.
    pub fn lease_blob(
        &self,
        account: &str,
        container: &str,
        blob: &str,
        op: &lease::Op,
        cond: &Cond,
    ) -> Result<(lease::Outcome, BlobMeta)> {
        let p = self.paths_in(account, container, blob)?;
        let _g = self.lock(&p.key);
        let mut m = self.load_existing(&p, blob)?;
        cond.check(m.modified_ns, false)?;
        let (l, out) = m.lease.apply(now_ms(), op).map_err(BlobError::lease)?;
        m.lease = l;
        self.save_blob(&p, &m)?;
        Ok((out, m))
    }

    /// List Blobs: blobs (and their snapshots, and blobs with only uncommitted blocks, when
    /// asked) whose names start with `prefix`, rolled up at `delimiter`, from `marker` on.
    #[allow(clippy::too_many_arguments)]
    pub fn list_blobs(
        &self,
        account: &str,
        container: &str,
        prefix: &str,
        delimiter: Option<&str>,
        marker: Option<&str>,
        max: usize,
        snapshots: bool,
        uncommitted: bool,
    ) -> Result<(Vec<Entry>, Option<String>)> {
        let mut names = self.blob_names(account, container)?;
        if uncommitted {
            names.extend(self.uncommitted_names(account, container));
            names.sort();
            names.dedup();
        }
        let mut out = Vec::new();
        let mut last_prefix: Option<String> = None;
        let mut count = 0;
        for name in names {
            if !name.starts_with(prefix) || marker.is_some_and(|m| name.as_str() < m) {
                continue;
            }
            if let Some(d) = delimiter.filter(|d| !d.is_empty()) {
                if let Some(i) = name[prefix.len()..].find(d) {
                    let pre = name[..prefix.len() + i + d.len()].to_string();
                    if last_prefix.as_deref() == Some(pre.as_str()) {
                        continue;
                    }
                    if count == max {
                        return Ok((out, Some(name)));
                    }
                    last_prefix = Some(pre.clone());
                    out.push(Entry::Prefix(pre));
                    count += 1;
                    continue;
                }
            }
            if count == max {
                return Ok((out, Some(name)));
            }
            let p = self.blob_paths(account, container, &name);
            let _g = self.lock(&p.key);
            if snapshots {
                for s in self.snapshots(&p) {
                    if let Some(sm) = self.load_snapshot(&p, &s)? {
                        out.push(Entry::Blob(Box::new(sm)));
                    }
                }
            }
            match self.load_blob(&p, &name)? {
                Some(mut m) => {
                    self.refresh(&p, &mut m);
                    out.push(Entry::Blob(Box::new(m)));
                }
                None if uncommitted => {
                    let mut m = BlobMeta::new(&name, BlobType::BlockBlob, 0);
                    m.blocks.clear();
                    out.push(Entry::Blob(Box::new(m)));
                }
                None => continue,
            }
            count += 1;
        }
        Ok((out, None))
    }
}

mod page;
mod put;

#[cfg(test)]
mod tests;
