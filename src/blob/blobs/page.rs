//! Page blob operations: Put Page (update and clear), Get Page Ranges (and its diff form),
//! resize.

use std::fs::{File, OpenOptions};
use std::io;
use std::ops::Range;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::Path;

use hyper::StatusCode;

use super::{wrong_type, Access, PageRanges};
use crate::blob::error::{BlobError, Result};
use crate::blob::pages::{RangeSet, PAGE};
use crate::blob::store::{BlobMeta, BlobType, Store};

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
