//! OS disks as sparse, page-blob-style files.
//!
//! A disk is cloned from an image file at a cost proportional to its data, not its size: first a
//! reflink (`FICLONE`) where the filesystem has it, otherwise only the data extents are copied
//! (`SEEK_DATA`/`SEEK_HOLE` + `copy_file_range`), leaving holes as holes.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    #[error("cannot open {path}")]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot copy {from} to {to}")]
    Copy {
        from: PathBuf,
        to: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("disk file {0} already exists")]
    Exists(PathBuf),
}

/// How a clone was made (reported in logs and benchmarks).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloneMethod {
    Reflink,
    SparseCopy,
}

/// Clones `src` into a new file `dst` (which must not exist), preserving holes.
/// On failure nothing is left at `dst`.
pub fn sparse_clone(src: &Path, dst: &Path) -> Result<CloneMethod, DiskError> {
    let open = |p: &Path| DiskError::Open {
        path: p.to_path_buf(),
        source: io::Error::last_os_error(),
    };
    let from = File::open(src).map_err(|e| DiskError::Open {
        path: src.into(),
        source: e,
    })?;
    if let Some(dir) = dst.parent() {
        std::fs::create_dir_all(dir).map_err(|e| DiskError::Open {
            path: dir.into(),
            source: e,
        })?;
    }
    let to = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(dst)
        .map_err(|e| {
            if e.kind() == io::ErrorKind::AlreadyExists {
                DiskError::Exists(dst.into())
            } else {
                DiskError::Open {
                    path: dst.into(),
                    source: e,
                }
            }
        })?;
    let _ = open;
    let result = clone_into(&from, &to);
    match result {
        Ok(m) => {
            to.sync_all().map_err(|e| copy_err(src, dst, e))?;
            Ok(m)
        }
        Err(e) => {
            let _ = std::fs::remove_file(dst);
            Err(copy_err(src, dst, e))
        }
    }
}

fn copy_err(src: &Path, dst: &Path, source: io::Error) -> DiskError {
    DiskError::Copy {
        from: src.into(),
        to: dst.into(),
        source,
    }
}

fn clone_into(from: &File, to: &File) -> io::Result<CloneMethod> {
    // SAFETY: FICLONE takes the source fd as its argument; both fds are open for the call.
    let rc = unsafe { libc::ioctl(to.as_raw_fd(), libc::FICLONE, from.as_raw_fd()) };
    if rc == 0 {
        return Ok(CloneMethod::Reflink);
    }
    let len = from.metadata()?.len();
    to.set_len(len)?;
    let (ffd, tfd) = (from.as_raw_fd(), to.as_raw_fd());
    let mut pos: i64 = 0;
    let end = i64::try_from(len).map_err(|_| io::Error::other("file too large"))?;
    while pos < end {
        // SAFETY: lseek on an open fd; errors are reported through the return value.
        let data = unsafe { libc::lseek(ffd, pos, libc::SEEK_DATA) };
        if data < 0 {
            let err = io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::ENXIO) {
                break; // no more data: the rest is a hole
            }
            return Err(err);
        }
        // SAFETY: as above.
        let hole = unsafe { libc::lseek(ffd, data, libc::SEEK_HOLE) };
        if hole < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut off_in = data;
        let mut off_out = data;
        while off_in < hole {
            let want = usize::try_from(hole - off_in)
                .unwrap_or(usize::MAX)
                .min(1 << 30);
            // SAFETY: both offsets point to live i64s; fds are open; the kernel bounds the copy.
            let n = unsafe { libc::copy_file_range(ffd, &mut off_in, tfd, &mut off_out, want, 0) };
            if n < 0 {
                let err = io::Error::last_os_error();
                // Across filesystems of different types (the image cache on disk, a state dir
                // on tmpfs) the kernel refuses: copy the extent through a buffer.
                if matches!(
                    err.raw_os_error(),
                    Some(libc::EXDEV | libc::EOPNOTSUPP | libc::EINVAL | libc::ENOSYS)
                ) {
                    copy_by_hand(from, to, off_in as u64, hole as u64)?;
                    break;
                }
                return Err(err);
            }
            if n == 0 {
                break;
            }
        }
        pos = hole;
    }
    Ok(CloneMethod::SparseCopy)
}

/// Copies bytes `from..to` of one file into the same place of another, 1 MiB at a time.
fn copy_by_hand(src: &File, dst: &File, mut at: u64, end: u64) -> io::Result<()> {
    use std::os::unix::fs::FileExt;
    let mut buf = vec![0u8; 1 << 20];
    while at < end {
        let want = usize::try_from(end - at)
            .unwrap_or(usize::MAX)
            .min(buf.len());
        let n = src.read_at(&mut buf[..want], at)?;
        if n == 0 {
            break;
        }
        dst.write_all_at(&buf[..n], at)?;
        at += n as u64;
    }
    Ok(())
}

/// Bytes actually allocated on disk for a file (st_blocks × 512).
#[cfg(test)]
pub fn allocated_bytes(path: &Path) -> io::Result<u64> {
    use std::os::unix::fs::MetadataExt;
    Ok(std::fs::metadata(path)?.blocks() * 512)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Seek, SeekFrom, Write};

    #[test]
    fn clone_keeps_data_and_holes() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src.raw");
        let mut f = File::create(&src).unwrap();
        f.set_len(256 << 20).unwrap();
        f.write_all(b"HEADER").unwrap();
        f.seek(SeekFrom::Start(100 << 20)).unwrap();
        f.write_all(&[7u8; 8192]).unwrap();
        drop(f);
        let dst = dir.path().join("dst.raw");
        sparse_clone(&src, &dst).unwrap();
        let mut out = Vec::new();
        File::open(&dst).unwrap().read_to_end(&mut out).unwrap();
        assert_eq!(out.len(), 256 << 20);
        assert_eq!(&out[..6], b"HEADER");
        assert!(out[(100 << 20)..(100 << 20) + 8192].iter().all(|b| *b == 7));
        assert!(out[1 << 20..2 << 20].iter().all(|b| *b == 0));
        // cost follows data, not size
        assert!(
            allocated_bytes(&dst).unwrap() < 4 << 20,
            "clone is not sparse"
        );
    }

    #[test]
    fn clone_refuses_to_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("a");
        std::fs::write(&src, b"x").unwrap();
        let dst = dir.path().join("b");
        std::fs::write(&dst, b"keep").unwrap();
        assert!(matches!(
            sparse_clone(&src, &dst),
            Err(DiskError::Exists(_))
        ));
        assert_eq!(std::fs::read(&dst).unwrap(), b"keep");
    }
}
