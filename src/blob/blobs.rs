//! Blob operations on the [`Store`]: put/get, blocks, pages, snapshots, leases, deletion.
//! Every operation takes the blob's lock, loads its metadata, checks the lease and the
//! conditional headers, changes what it must, and saves.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::ops::Range;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::Path;

use base64::Engine;
use hyper::StatusCode;

use super::error::{BlobError, Result};
use super::lease::{self, Lease};
use super::pages::{self, RangeSet, PAGE};
use super::store::{
    lock, now_ms, now_ns, snapshot_time, BlobMeta, BlobPaths, BlobType, Block, HttpProps, Store,
};

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

/// Frees `r` of a file: whole blocks become holes, partial blocks are zeroed.
fn punch(file: &File, r: Range<u64>) -> io::Result<()> {
    let len = i64::try_from(r.end - r.start).map_err(io::Error::other)?;
    // SAFETY: fallocate on an open fd with a range inside i64; errors come back as -1.
    let rc = unsafe {
        libc::fallocate(
            file.as_raw_fd(),
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            r.start as i64,
            len,
        )
    };
    if rc == 0 {
        return Ok(());
    }
    // No hole punching here: write zeros.
    let zeros = vec![0u8; 1 << 20];
    let mut off = r.start;
    while off < r.end {
        let n = (r.end - off).min(zeros.len() as u64) as usize;
        file.write_all_at(&zeros[..n], off)?;
        off += n as u64;
    }
    Ok(())
}

/// Copies `len` bytes of `from` at `off` to the end of `to`.
fn copy_range(from: &mut File, off: u64, len: u64, to: &mut File) -> io::Result<()> {
    from.seek(SeekFrom::Start(off))?;
    let n = io::copy(&mut from.take(len), to)?;
    if n != len {
        return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "short block"));
    }
    Ok(())
}

/// The 4 KiB filesystem blocks wholly inside `r`.
fn whole_blocks(r: &Range<u64>) -> Range<u64> {
    const FS: u64 = 4096;
    let a = r.start.div_ceil(FS) * FS;
    let b = r.end / FS * FS;
    if a < b {
        a..b
    } else {
        a..a
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
        let _g = lock(&p.key);
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
        let _g = lock(&p.key);
        let mut m = self.load_existing(&p, blob)?;
        m.lease
            .check_write(now_ms(), a.lease_id.as_deref())
            .map_err(|e| BlobError::lease_access(e, false))?;
        a.cond.check(m.modified_ns, false)?;
        let out = f(&p, &mut m)?;
        self.save_blob(&p, &m)?;
        Ok((out, m))
    }

    /// Put Blob: a new block blob from `tmp`, or an empty page or append blob.
    #[allow(clippy::too_many_arguments)]
    pub fn put_blob(
        &self,
        account: &str,
        container: &str,
        blob: &str,
        new: NewBlob<'_>,
        props: HttpProps,
        metadata: std::collections::BTreeMap<String, String>,
        a: &Access,
    ) -> Result<BlobMeta> {
        let p = self.paths_in(account, container, blob)?;
        let _g = lock(&p.key);
        let old = self.load_blob(&p, blob)?;
        match &old {
            Some(o) => {
                if a.cond.if_none_match.as_deref() == Some("*") {
                    return Err(BlobError::blob_exists());
                }
                o.lease
                    .check_write(now_ms(), a.lease_id.as_deref())
                    .map_err(|e| BlobError::lease_access(e, false))?;
                let mut o = o.clone();
                self.refresh(&p, &mut o);
                a.cond.check(o.modified_ns, false)?;
            }
            None => {
                a.cond.check_absent()?;
                if a.lease_id.is_some() {
                    return Err(BlobError::blob_not_found());
                }
            }
        }
        let (kind, size) = match &new {
            NewBlob::Block(tmp) => (BlobType::BlockBlob, fs::metadata(tmp)?.len()),
            NewBlob::Page { size, .. } => (BlobType::PageBlob, *size),
            NewBlob::Append => (BlobType::AppendBlob, 0),
        };
        let mut m = BlobMeta::new(blob, kind, size);
        m.props = props;
        m.metadata = metadata;
        if let Some(o) = &old {
            m.created_ns = o.created_ns;
            m.lease = o.lease.clone();
            m.modified_ns = o.modified_ns;
            m.touch();
            // Everything changed for the snapshots that remain.
            let all = 0..o.size.max(size);
            for (snap, _) in o.changes.iter() {
                let mut r = RangeSet::new();
                r.insert(all.clone());
                m.changes.insert(snap.clone(), r);
            }
        }
        match new {
            NewBlob::Block(tmp) => fs::rename(tmp, &p.data)?,
            NewBlob::Page { size, sequence } => {
                m.sequence_number = sequence;
                fs::create_dir_all(&p.tmp)?;
                let tmp = p.tmp.join(format!("page-{}", now_ns()));
                File::create(&tmp)?.set_len(size)?;
                fs::rename(&tmp, &p.data)?;
            }
            NewBlob::Append => {
                fs::create_dir_all(&p.tmp)?;
                let tmp = p.tmp.join(format!("append-{}", now_ns()));
                File::create(&tmp)?;
                fs::rename(&tmp, &p.data)?;
            }
        }
        let _ = fs::remove_dir_all(&p.blocks);
        self.save_blob(&p, &m)?;
        Ok(m)
    }

    /// Put Block: stores an uncommitted block.
    pub fn put_block(
        &self,
        account: &str,
        container: &str,
        blob: &str,
        id: &str,
        tmp: &Path,
        a: &Access,
    ) -> Result<()> {
        let p = self.paths_in(account, container, blob)?;
        let dst = block_file(&p, id)?;
        let _g = lock(&p.key);
        if let Some(m) = self.load_blob(&p, blob)? {
            if m.blob_type != BlobType::BlockBlob {
                return Err(wrong_type());
            }
            m.lease
                .check_write(now_ms(), a.lease_id.as_deref())
                .map_err(|e| BlobError::lease_access(e, false))?;
        } else if a.lease_id.is_some() {
            return Err(BlobError::lease_access(
                lease::AccessError::NotPresent,
                false,
            ));
        }
        fs::create_dir_all(&p.blocks)?;
        fs::rename(tmp, &dst)?;
        Ok(())
    }

    /// Put Block List: commits blocks (uncommitted, committed or latest) as the blob's content.
    #[allow(clippy::too_many_arguments)]
    pub fn put_block_list(
        &self,
        account: &str,
        container: &str,
        blob: &str,
        list: &[(BlockRef, String)],
        props: HttpProps,
        metadata: std::collections::BTreeMap<String, String>,
        a: &Access,
    ) -> Result<BlobMeta> {
        let p = self.paths_in(account, container, blob)?;
        let _g = lock(&p.key);
        let old = self.load_blob(&p, blob)?;
        match &old {
            Some(o) => {
                if a.cond.if_none_match.as_deref() == Some("*") {
                    return Err(BlobError::blob_exists());
                }
                o.lease
                    .check_write(now_ms(), a.lease_id.as_deref())
                    .map_err(|e| BlobError::lease_access(e, false))?;
                a.cond.check(o.modified_ns, false)?;
            }
            None => a.cond.check_absent()?,
        }
        // Where each committed block is in the current content.
        let mut committed = std::collections::HashMap::new();
        if let Some(o) = old.as_ref().filter(|o| o.blob_type == BlobType::BlockBlob) {
            let mut off = 0;
            for b in &o.blocks {
                committed.insert(b.id.clone(), (off, b.size));
                off += b.size;
            }
        }
        let invalid = || {
            BlobError::new(
                StatusCode::BAD_REQUEST,
                "InvalidBlockList",
                "The specified block list is invalid.",
            )
        };
        fs::create_dir_all(&p.tmp)?;
        let tmp = p.tmp.join(format!("commit-{}", now_ns()));
        let mut out = File::create(&tmp)?;
        let mut current = old.as_ref().and_then(|_| File::open(&p.data).ok());
        let mut blocks = Vec::with_capacity(list.len());
        let result: Result<()> = (|| {
            for (kind, id) in list {
                let file = block_file(&p, id)?;
                let uncommitted =
                    matches!(kind, BlockRef::Uncommitted | BlockRef::Latest) && file.exists();
                let size = if uncommitted {
                    let mut f = File::open(&file)?;
                    io::copy(&mut f, &mut out)?
                } else if matches!(kind, BlockRef::Committed | BlockRef::Latest) {
                    let (off, size) = *committed.get(id).ok_or_else(invalid)?;
                    let cur = current.as_mut().ok_or_else(invalid)?;
                    copy_range(cur, off, size, &mut out)?;
                    size
                } else {
                    return Err(invalid());
                };
                blocks.push(Block {
                    id: id.clone(),
                    size,
                });
            }
            Ok(())
        })();
        if let Err(e) = result {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
        let size = out.metadata()?.len();
        drop(out);
        let mut m = BlobMeta::new(blob, BlobType::BlockBlob, size);
        m.props = props;
        m.metadata = metadata;
        m.blocks = blocks;
        if let Some(o) = &old {
            m.created_ns = o.created_ns;
            m.lease = o.lease.clone();
            m.modified_ns = o.modified_ns;
            m.touch();
        }
        fs::rename(&tmp, &p.data)?;
        let _ = fs::remove_dir_all(&p.blocks);
        self.save_blob(&p, &m)?;
        Ok(m)
    }

    /// Get Block List: (the blob if committed, committed blocks, uncommitted blocks).
    pub fn block_list(
        &self,
        account: &str,
        container: &str,
        blob: &str,
        snapshot: Option<&str>,
        a: &Access,
    ) -> Result<(Option<BlobMeta>, Vec<Block>, Vec<Block>)> {
        let p = self.paths_in(account, container, blob)?;
        let _g = lock(&p.key);
        let m = match snapshot {
            Some(s) => Some(
                self.load_snapshot(&p, s)?
                    .ok_or_else(BlobError::blob_not_found)?,
            ),
            None => self.load_blob(&p, blob)?,
        };
        if let Some(m) = &m {
            if m.blob_type != BlobType::BlockBlob {
                return Err(wrong_type());
            }
            m.lease
                .check_read(now_ms(), a.lease_id.as_deref())
                .map_err(|e| BlobError::lease_access(e, false))?;
        }
        let mut uncommitted = Vec::new();
        if snapshot.is_none() {
            for e in fs::read_dir(&p.blocks).into_iter().flatten().flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if let Ok(raw) = hex::decode(&name) {
                    uncommitted.push(Block {
                        id: base64::engine::general_purpose::STANDARD.encode(raw),
                        size: e.metadata().map(|m| m.len()).unwrap_or(0),
                    });
                }
            }
        }
        if m.is_none() && uncommitted.is_empty() {
            return Err(BlobError::blob_not_found());
        }
        let committed = m.as_ref().map(|m| m.blocks.clone()).unwrap_or_default();
        Ok((m, committed, uncommitted))
    }

    /// Put Page: writes `data` at `r`, or clears `r` when `data` is None.
    pub fn put_pages(
        &self,
        account: &str,
        container: &str,
        blob: &str,
        r: Range<u64>,
        data: Option<&[u8]>,
        a: &Access,
    ) -> Result<BlobMeta> {
        let ((), m) = self.update_blob(account, container, blob, a, |p, m| {
            if m.blob_type != BlobType::PageBlob {
                return Err(wrong_type());
            }
            if r.end > m.size {
                return Err(BlobError::invalid_page_range());
            }
            let f = OpenOptions::new().write(true).open(&p.data)?;
            match data {
                Some(d) => {
                    // On a disk the filesystem reports whole 4 KiB blocks as data: the pages
                    // of the edge blocks that held nothing before must not appear written.
                    let mut untouched = RangeSet::new();
                    if m.fs_tracked {
                        let outer = (r.start / 4096 * 4096)..(r.end.div_ceil(4096) * 4096);
                        let before = self.valid_pages(&p.data, m)?;
                        let mut edges = RangeSet::new();
                        edges.insert(outer.start..r.start);
                        edges.insert(r.end..outer.end.min(m.size));
                        untouched = edges.difference(&before);
                    }
                    f.write_all_at(d, r.start)?;
                    m.pages.insert(r.clone());
                    m.cleared.remove(r.clone());
                    for u in untouched.iter() {
                        m.cleared.insert(u);
                    }
                }
                None => {
                    punch(&f, r.clone())?;
                    m.pages.remove(r.clone());
                    if m.fs_tracked {
                        // Whole blocks are holes now; only the edges need remembering.
                        let inner = whole_blocks(&r);
                        m.cleared.insert(r.start..inner.start.max(r.start));
                        m.cleared.insert(inner.end.min(r.end)..r.end);
                        m.cleared.remove(inner);
                    }
                }
            }
            for set in m.changes.values_mut() {
                set.insert(r.clone());
            }
            m.touch();
            Ok(())
        })?;
        Ok(m)
    }

    /// Get Page Ranges: the valid pages inside `window`; with `prev`, the pages changed
    /// (first) and cleared (second) since that snapshot.
    #[allow(clippy::too_many_arguments)]
    pub fn page_ranges(
        &self,
        account: &str,
        container: &str,
        blob: &str,
        snapshot: Option<&str>,
        prev: Option<&str>,
        window: Option<Range<u64>>,
        a: &Access,
    ) -> Result<PageRanges> {
        let (m, p) = self.read_meta(account, container, blob, snapshot, a)?;
        if m.blob_type != BlobType::PageBlob {
            return Err(wrong_type());
        }
        let data = match snapshot {
            Some(s) => p.snapshot_data(s),
            None => p.data.clone(),
        };
        let window = window.unwrap_or(0..m.size);
        let valid = self.valid_pages(&data, &m)?;
        let Some(prev) = prev else {
            return Ok((m, valid.window(window), Vec::new()));
        };
        let pm = self.load_snapshot(&p, prev)?.ok_or_else(|| {
            BlobError::new(
                StatusCode::CONFLICT,
                "PreviousSnapshotNotFound",
                "The previous snapshot is not found.",
            )
        })?;
        let prev_valid = pm.pages.clone();
        let base = self.load_blob(&p, blob)?;
        let mut changed = match (snapshot, base.as_ref().and_then(|b| b.changes.get(prev))) {
            (None, Some(c)) => c.clone(),
            _ => RangeSet::new(),
        };
        // Writes the API did not see (a guest's, or between two snapshots): compare bytes.
        if snapshot.is_some() || m.fs_tracked || !base.is_some_and(|b| b.changes.contains_key(prev))
        {
            changed = changed.union(&differing_pages(
                &data,
                &p.snapshot_data(prev),
                &valid.union(&prev_valid),
            )?);
        }
        let page = changed.intersection(&valid);
        let clear = changed.intersection(&prev_valid).difference(&valid);
        let mut w = RangeSet::new();
        w.insert(window);
        Ok((
            m,
            page.intersection(&w).iter().collect(),
            clear.intersection(&w).iter().collect(),
        ))
    }

    /// Set Blob Properties with a new size (page blobs): grows with zeros, shrinks dropping pages.
    pub fn resize(
        &self,
        account: &str,
        container: &str,
        blob: &str,
        size: u64,
        a: &Access,
    ) -> Result<BlobMeta> {
        let ((), m) = self.update_blob(account, container, blob, a, |p, m| {
            if m.blob_type != BlobType::PageBlob {
                return Err(wrong_type());
            }
            let f = OpenOptions::new().write(true).open(&p.data)?;
            f.set_len(size)?;
            if size < m.size {
                for set in m.changes.values_mut() {
                    set.insert(size..m.size);
                }
            }
            m.pages.truncate(size);
            m.cleared.truncate(size);
            m.size = size;
            m.touch();
            Ok(())
        })?;
        Ok(m)
    }

    /// Append Block: appends `data`; returns the offset it landed at.
    pub fn append_block(
        &self,
        account: &str,
        container: &str,
        blob: &str,
        data: &[u8],
        a: &Access,
    ) -> Result<(u64, BlobMeta)> {
        self.update_blob(account, container, blob, a, |p, m| {
            if m.blob_type != BlobType::AppendBlob {
                return Err(wrong_type());
            }
            let mut f = OpenOptions::new().append(true).open(&p.data)?;
            let off = f.metadata()?.len();
            f.write_all(data)?;
            m.size = off + data.len() as u64;
            m.append_blocks += 1;
            m.touch();
            Ok(off)
        })
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
        let _g = lock(&p.key);
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
        let _g = lock(&p.key);
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
                fs::remove_file(&p.data)?;
                let _ = fs::remove_file(&p.meta);
                let _ = fs::remove_dir_all(&p.snapshots);
                let _ = fs::remove_dir_all(&p.blocks);
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
        let _g = lock(&p.key);
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
            let _g = lock(&p.key);
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

/// Pages in `among` whose bytes differ between two files (a missing page reads as zeros).
fn differing_pages(a: &Path, b: &Path, among: &RangeSet) -> io::Result<RangeSet> {
    let fa = File::open(a)?;
    let fb = File::open(b).ok();
    let mut out = RangeSet::new();
    let chunk = 1 << 20;
    let (mut ba, mut bb) = (vec![0u8; chunk], vec![0u8; chunk]);
    for r in among.iter() {
        let mut off = r.start;
        while off < r.end {
            let n = (r.end - off).min(chunk as u64) as usize;
            read_full_at(&fa, &mut ba[..n], off)?;
            match &fb {
                Some(f) => read_full_at(f, &mut bb[..n], off)?,
                None => bb[..n].fill(0),
            }
            for i in (0..n).step_by(PAGE as usize) {
                let e = (i + PAGE as usize).min(n);
                if ba[i..e] != bb[i..e] {
                    out.insert(off + i as u64..off + e as u64);
                }
            }
            off += n as u64;
        }
    }
    Ok(out)
}

/// Reads up to `buf.len()` bytes at `off`, zero-filling past the end of the file.
fn read_full_at(f: &File, buf: &mut [u8], off: u64) -> io::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        let n = f.read_at(&mut buf[done..], off + done as u64)?;
        if n == 0 {
            buf[done..].fill(0);
            break;
        }
        done += n;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
