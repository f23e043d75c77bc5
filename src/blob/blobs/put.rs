//! Writes of whole blobs: Put Blob, Put Block, Put Block List (and Get Block List), Append
//! Block.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::Path;

use base64::Engine;
use hyper::StatusCode;

use super::{block_file, succeed, wrong_type, Access, BlockRef, NewBlob};
use crate::blob::error::{BlobError, Result};
use crate::blob::store::{ensure_dir, now_ms, now_ns, BlobMeta, BlobType, Block, HttpProps, Store};
use crate::blob::{lease, reaper};

/// Copies `len` bytes of `from` at `off` to the end of `to`.
fn copy_range(from: &mut File, off: u64, len: u64, to: &mut File) -> io::Result<()> {
    from.seek(SeekFrom::Start(off))?;
    let n = io::copy(&mut from.take(len), to)?;
    if n != len {
        return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "short block"));
    }
    Ok(())
}

impl Store {
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
        let _g = self.lock(&p.key);
        let old = self.check_overwrite(&p, blob, a)?;
        let (kind, size) = match &new {
            NewBlob::Block(tmp) => (BlobType::BlockBlob, fs::metadata(tmp)?.len()),
            NewBlob::Page { size, .. } => (BlobType::PageBlob, *size),
            NewBlob::Append => (BlobType::AppendBlob, 0),
        };
        let mut m = BlobMeta::new(blob, kind, size);
        m.props = props;
        m.metadata = metadata;
        succeed(&mut m, old.as_ref());
        if let NewBlob::Page { sequence, .. } = new {
            m.sequence_number = sequence;
        }
        // The old file, if any, is closed (and its blocks freed) off the request path.
        let old_file = reaper::hold(&p.data);
        match new {
            NewBlob::Block(tmp) => fs::rename(tmp, &p.data)?,
            // A page blob is a sparse file of its size; an append blob starts empty.
            NewBlob::Page { .. } | NewBlob::Append => {
                ensure_dir(&p.tmp)?;
                let tmp = p.tmp.join(format!("new-{}", now_ns()));
                File::create(&tmp)?.set_len(size)?;
                fs::rename(&tmp, &p.data)?;
            }
        }
        self.reaper.release(old_file);
        self.pool.recycle_dir(&p.blocks);
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
        let _g = self.lock(&p.key);
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
        ensure_dir(&p.blocks)?;
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
        let _g = self.lock(&p.key);
        let old = self.check_overwrite(&p, blob, a)?;
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
        ensure_dir(&p.tmp)?;
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
        succeed(&mut m, old.as_ref());
        fs::rename(&tmp, &p.data)?;
        // `current` is the replaced file: its last close frees its blocks, off the request path.
        self.reaper.release(current);
        self.pool.recycle_dir(&p.blocks);
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
        let _g = self.lock(&p.key);
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
}
