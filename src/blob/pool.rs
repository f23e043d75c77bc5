//! Recycled staging files. A staged block's file, once its blob is committed or the block is
//! discarded, is kept here (up to [`CAP_BYTES`]) instead of being deleted, and the next body of
//! up to [`MAX_FILE`] is written over it in place.
//!
//! Why: writing over pages that are already in the page cache is a plain copy, while a new file
//! needs fresh pages. On this kind of host (a nested VM whose free memory the hypervisor takes
//! back within seconds) a fresh 4 MiB costs 5-11 ms and an overwrite 0.6 ms. Deleting a block
//! also costs a (synchronous, with `discard`) free of its disk blocks, which recycling skips.
//! The files hold no secret across uses: every use overwrites from offset 0 and truncates to
//! the new length before the file is visible under its new name.

use std::fs::{self, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// Bytes of recycled files kept at most (disk space and reclaimable page cache).
pub const CAP_BYTES: u64 = 256 << 20;
/// The largest file kept: an SDK's block (bodies up to this size are received in memory).
pub const MAX_FILE: u64 = 8 << 20;
/// Free space the filesystem must keep for the pool to hold a file: below it, the pool gives
/// all its files back, so that it never takes the room the node's own health check asks for.
pub const KEEP_FREE: u64 = 4 * CAP_BYTES;

/// The pool: files in `dir`, named by number, with their sizes.
#[derive(Debug)]
pub struct Pool {
    dir: PathBuf,
    files: Mutex<Vec<(PathBuf, u64)>>,
    next: AtomicU64,
    keep_free: u64,
}

impl Pool {
    /// The pool in `dir`, with the files an earlier run left there (their pages may still be
    /// cached). Files over the cap or of the wrong kind are removed, and all of them on a
    /// filesystem short of space.
    pub fn open(dir: PathBuf) -> Pool {
        let mut files = Vec::new();
        let mut held = 0;
        for e in fs::read_dir(&dir).into_iter().flatten().flatten() {
            let len = e.metadata().ok().filter(|m| m.is_file()).map(|m| m.len());
            match len {
                Some(len) if len <= MAX_FILE && held + len <= CAP_BYTES => {
                    held += len;
                    files.push((e.path(), len));
                }
                _ => {
                    let _ = fs::remove_file(e.path());
                }
            }
        }
        let pool = Pool {
            dir,
            files: Mutex::new(files),
            next: AtomicU64::new(crate::blob::store::now_ns()),
            keep_free: KEEP_FREE,
        };
        {
            let mut files = pool.lock();
            if !files.is_empty() && !pool.room(&pool.dir) {
                give_back(&mut files);
            }
        }
        pool
    }

    /// Bytes held now.
    #[cfg(test)]
    pub fn held(&self) -> u64 {
        bytes(&self.lock())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(PathBuf, u64)>> {
        self.files.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes the kept file closest in size to `len` (the smallest that holds it, else the
    /// largest).
    fn take(&self, len: u64) -> Option<PathBuf> {
        let mut files = self.lock();
        let i = files
            .iter()
            .enumerate()
            .filter(|(_, f)| f.1 >= len)
            .min_by_key(|(_, f)| f.1)
            .or_else(|| files.iter().enumerate().max_by_key(|(_, f)| f.1))
            .map(|(i, _)| i)?;
        Some(files.swap_remove(i).0)
    }

    /// Writes `data` as the new file `dst` (in an existing directory on the pool's filesystem),
    /// over a recycled file when there is one.
    pub fn write(&self, dst: &Path, data: &[u8]) -> io::Result<()> {
        if let Some(src) = self.take(data.len() as u64) {
            if fs::rename(&src, dst).is_ok() {
                let f = OpenOptions::new().write(true).open(dst)?;
                f.write_all_at(data, 0)?;
                f.set_len(data.len() as u64)?;
                return Ok(());
            }
            let _ = fs::remove_file(&src);
        }
        fs::write(dst, data)
    }

    /// Keeps `file` for reuse if it fits, else deletes it (see [`Pool::recycle_all`]).
    #[cfg(test)]
    pub fn recycle(&self, file: &Path) {
        self.recycle_all(&[file.to_path_buf()]);
    }

    /// Keeps each of `paths` (regular files) for reuse while they fit, and deletes the rest. On a
    /// filesystem short of space (under [`KEEP_FREE`] free), deletes them and every file the pool
    /// holds. One `statvfs` for the lot.
    fn recycle_all(&self, paths: &[PathBuf]) {
        let Some(first) = paths.first() else {
            return;
        };
        let mut files = self.lock();
        let keep = if self.room(first) {
            ensure(&self.dir)
        } else {
            give_back(&mut files);
            false
        };
        let mut held = bytes(&files);
        for path in paths {
            let len = match fs::symlink_metadata(path) {
                Ok(m) if m.is_file() => m.len(),
                _ => continue,
            };
            if keep && len <= MAX_FILE && held + len <= CAP_BYTES {
                let to = self
                    .dir
                    .join(self.next.fetch_add(1, Ordering::Relaxed).to_string());
                if fs::rename(path, &to).is_ok() {
                    files.push((to, len));
                    held += len;
                    continue;
                }
            }
            let _ = fs::remove_file(path);
        }
    }

    /// Whether the filesystem of `file` has [`KEEP_FREE`] free (a `statvfs`, microseconds).
    fn room(&self, file: &Path) -> bool {
        nix::sys::statvfs::statvfs(file).is_ok_and(|st| {
            st.blocks_available().saturating_mul(st.fragment_size()) >= self.keep_free
        })
    }

    /// Recycles every file in `dir`, then removes it.
    pub fn recycle_dir(&self, dir: &Path) {
        let paths: Vec<PathBuf> = fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .collect();
        self.recycle_all(&paths);
        let _ = fs::remove_dir_all(dir);
    }
}

/// Bytes in `files`.
fn bytes(files: &[(PathBuf, u64)]) -> u64 {
    files.iter().map(|f| f.1).sum()
}

/// Deletes every file the pool holds.
fn give_back(files: &mut Vec<(PathBuf, u64)>) {
    for (f, _) in files.drain(..) {
        let _ = fs::remove_file(f);
    }
}

fn ensure(dir: &Path) -> bool {
    dir.is_dir() || crate::blob::store::ensure_dir(dir).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::File;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn a_recycled_file_is_written_over_in_place_and_holds_only_the_new_data() {
        let d = tempfile::tempdir().unwrap();
        let pool = Pool::open(d.path().join("pool"));
        let a = d.path().join("a");
        pool.write(&a, &[7u8; 8192]).unwrap();
        let ino = fs::metadata(&a).unwrap().ino();
        pool.recycle(&a);
        assert!(!a.exists());
        assert_eq!(pool.held(), 8192);

        // A shorter body reuses the same inode and leaves nothing of the old one behind.
        let b = d.path().join("b");
        pool.write(&b, b"short").unwrap();
        assert_eq!(fs::metadata(&b).unwrap().ino(), ino);
        assert_eq!(fs::read(&b).unwrap(), b"short");
        assert_eq!(pool.held(), 0);

        // With the pool empty, a new file.
        let c = d.path().join("c");
        pool.write(&c, b"new").unwrap();
        assert_ne!(fs::metadata(&c).unwrap().ino(), ino);
        assert_eq!(fs::read(&c).unwrap(), b"new");
    }

    #[test]
    fn the_pool_keeps_at_most_its_cap_and_no_file_over_the_largest_block() {
        let d = tempfile::tempdir().unwrap();
        let pool = Pool::open(d.path().join("pool"));
        let big = d.path().join("big");
        fs::write(&big, vec![0u8; MAX_FILE as usize + 1]).unwrap();
        pool.recycle(&big);
        assert!(!big.exists(), "a file over MAX_FILE is deleted");
        assert_eq!(pool.held(), 0);

        let n = CAP_BYTES / MAX_FILE;
        for i in 0..n + 2 {
            let f = d.path().join(format!("f{i}"));
            File::create(&f).unwrap().set_len(MAX_FILE).unwrap();
            pool.recycle(&f);
            assert!(!f.exists());
        }
        assert_eq!(pool.held(), CAP_BYTES);
        assert_eq!(
            fs::read_dir(d.path().join("pool")).unwrap().count() as u64,
            n
        );
    }

    #[test]
    fn the_pool_takes_the_closest_size_and_survives_a_restart() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("pool");
        let pool = Pool::open(dir.clone());
        let mut inos = Vec::new();
        for (i, len) in [1000u64, 4096, 3 << 20].into_iter().enumerate() {
            let f = d.path().join(format!("f{i}"));
            fs::write(&f, vec![1u8; len as usize]).unwrap();
            inos.push(fs::metadata(&f).unwrap().ino());
            pool.recycle(&f);
        }
        drop(pool);
        let pool = Pool::open(dir);
        assert_eq!(pool.held(), 1000 + 4096 + (3 << 20));
        let x = d.path().join("x");
        pool.write(&x, &[2u8; 2000]).unwrap();
        assert_eq!(
            fs::metadata(&x).unwrap().ino(),
            inos[1],
            "4096 is the closest fit"
        );
        let y = d.path().join("y");
        pool.write(&y, &[3u8; 4 << 20]).unwrap();
        assert_eq!(
            fs::metadata(&y).unwrap().ino(),
            inos[2],
            "none holds it: the largest"
        );
        assert_eq!(fs::read(&y).unwrap(), vec![3u8; 4 << 20]);
    }

    #[test]
    fn short_of_space_the_pool_gives_back_every_file() {
        let d = tempfile::tempdir().unwrap();
        let mut pool = Pool::open(d.path().join("pool"));
        for i in 0..3 {
            let f = d.path().join(format!("f{i}"));
            fs::write(&f, [1u8; 4096]).unwrap();
            pool.recycle(&f);
        }
        assert_eq!(pool.held(), 3 * 4096);
        pool.keep_free = u64::MAX;
        let f = d.path().join("last");
        fs::write(&f, [1u8; 4096]).unwrap();
        pool.recycle(&f);
        assert!(!f.exists());
        assert_eq!(pool.held(), 0);
        assert_eq!(fs::read_dir(d.path().join("pool")).unwrap().count(), 0);
    }
}
