//! Image files checked against their manifest before use.
//!
//! Every file a manifest lists (disk, kernel, initrd, …) must have the sha256 the manifest says.
//! Hashing a disk costs seconds, so a good result is remembered in the version folder's
//! `.verified` stamp, keyed by the file's (device, inode, size, mtime): a file replaced or
//! written since (a new inode or a new mtime) is hashed again, and a bad file is never stamped.
//! What a stat cannot see (bits rotting in place) is caught only by a full re-hash:
//! [`verify_full`], `vmnode image verify --urn URN`.

use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::os::unix::io::AsRawFd;
use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{CatalogError, ImageVersion};

/// The stamp's file name in a version folder (hidden: never listed as an image file).
pub const STAMP: &str = ".verified";

/// What a file looked like when it was last hashed and found good.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Seen {
    dev: u64,
    ino: u64,
    size: u64,
    mtime_ns: i128,
    sha256: String,
}

impl Seen {
    fn of(meta: &std::fs::Metadata, sha256: String) -> Seen {
        Seen {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
            sha256,
        }
    }
}

#[derive(Default, Serialize, Deserialize)]
struct Stamp {
    files: BTreeMap<String, Seen>,
}

/// How a verification went (for logs and tests).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Files hashed now.
    pub hashed: Vec<String>,
    /// Files taken as good from the stamp.
    pub cached: Vec<String>,
}

/// Checks every file of `image` against its manifest, hashing only files not stamped as good
/// in their current state. Returns what was hashed; a mismatch is [`CatalogError::Corrupted`].
pub fn verify(image: &ImageVersion) -> Result<Outcome, CatalogError> {
    check(image, true)
}

/// Like [`verify`], ignoring the stamp: every file is hashed.
pub fn verify_full(image: &ImageVersion) -> Result<Outcome, CatalogError> {
    check(image, false)
}

/// One lock per version folder, the kernel's `flock` on the folder itself: twenty creates from
/// a new image hash it once between them, the others then find the stamp (hashing it twenty
/// times over took every core for seconds). It holds across processes too (a CLI's
/// `image verify` beside the daemon). `None` when the folder cannot be opened: the check
/// then runs unlocked and fails on the files as it would have.
fn folder_lock(dir: &Path) -> Option<nix::fcntl::Flock<std::fs::File>> {
    let f = std::fs::File::open(dir).ok()?;
    nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusive).ok()
}

fn check(image: &ImageVersion, use_stamp: bool) -> Result<Outcome, CatalogError> {
    let _held = folder_lock(&image.dir);
    let stamp_path = image.dir.join(STAMP);
    let old: Stamp = std::fs::read(&stamp_path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    let mut new = Stamp::default();
    let mut out = Outcome::default();
    let missing = |path: &Path, source| CatalogError::FileMissing {
        urn: image.urn(),
        path: path.to_path_buf(),
        fix: how_to_fix(image),
        source,
    };
    for (name, want) in &image.manifest.files {
        let path = image.dir.join(name);
        let before = std::fs::metadata(&path).map_err(|e| missing(&path, e))?;
        if use_stamp {
            if let Some(seen) = old.files.get(name) {
                if *seen == Seen::of(&before, want.sha256.clone()) {
                    new.files.insert(name.clone(), seen.clone());
                    out.cached.push(name.clone());
                    continue;
                }
            }
        }
        let (actual, _) = sha256_file(&path).map_err(|e| missing(&path, e))?;
        if actual != want.sha256 {
            return Err(CatalogError::Corrupted {
                urn: image.urn(),
                file: path.display().to_string(),
                expected: want.sha256.clone(),
                actual,
                fix: how_to_fix(image),
            });
        }
        out.hashed.push(name.clone());
        // Stamped only if the file did not change while it was read.
        let after = std::fs::metadata(&path).map_err(|e| missing(&path, e))?;
        let seen = Seen::of(&before, actual.clone());
        if seen == Seen::of(&after, actual) {
            new.files.insert(name.clone(), seen);
        }
    }
    if !out.hashed.is_empty() {
        if let Err(e) = write_stamp(&image.dir, &new) {
            // Not fatal: the next use hashes again.
            tracing::warn!(dir = %image.dir.display(), error = %e, "cannot write the image's verification stamp");
        }
    }
    Ok(out)
}

fn write_stamp(dir: &Path, stamp: &Stamp) -> std::io::Result<()> {
    use std::io::Write;
    let body = serde_json::to_vec_pretty(stamp).map_err(std::io::Error::other)?;
    // A temp file of its own (several creates may verify one image at once), then a rename.
    let mut tmp = tempfile::Builder::new()
        .prefix(".verified-")
        .tempfile_in(dir)?;
    tmp.write_all(&body)?;
    tmp.persist(dir.join(STAMP)).map_err(|e| e.error)?;
    Ok(())
}

/// What to tell the user to do about a broken image.
fn how_to_fix(image: &ImageVersion) -> String {
    let m = &image.manifest;
    let urn = image.urn();
    let recipe = super::build::recipes().ok().and_then(|all| {
        all.into_iter()
            .find(|(_, r)| {
                r.publisher.eq_ignore_ascii_case(&m.publisher)
                    && r.offer.eq_ignore_ascii_case(&m.offer)
                    && r.sku.eq_ignore_ascii_case(&m.sku)
            })
            .map(|(name, _)| name)
    });
    let remake = match recipe {
        Some(name) => format!("rebuild it (`vmnode image build {name} --rebuild`)"),
        None => "import it again (`vmnode image import`)".to_string(),
    };
    format!(
        "Take it out of use with `vmnode image unpublish --urn {urn}`, then {remake} or publish a good copy (`vmnode image publish --urn {urn} --from DIR`)."
    )
}

const CHUNK: usize = 1 << 20;
static ZEROS: [u8; CHUNK] = [0; CHUNK];

/// sha256 and length of a file, as `sha256sum` computes it. Holes of sparse files are hashed
/// as the zeros they read as, without reading them (`SEEK_DATA`/`SEEK_HOLE`).
pub fn sha256_file(path: &Path) -> std::io::Result<(String, u64)> {
    let mut f = std::fs::File::open(path)?;
    let len = f.metadata()?.len();
    let mut h = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    let mut pos = 0u64;
    while pos < len {
        let (data, hole) = match next_extent(&f, pos, len)? {
            Some(x) => x,
            None => (len, len),
        };
        zeros(&mut h, data - pos);
        if data == len {
            break;
        }
        // Read the data extent [data, hole).
        use std::io::Seek;
        f.seek(std::io::SeekFrom::Start(data))?;
        let mut left = hole - data;
        while left > 0 {
            let want = usize::try_from(left).unwrap_or(CHUNK).min(CHUNK);
            let n = f.read(&mut buf[..want])?;
            if n == 0 {
                // The file shrank under us: what is hashed is no longer the file.
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "the file changed while it was hashed",
                ));
            }
            h.update(&buf[..n]);
            left -= n as u64;
        }
        pos = hole;
    }
    Ok((hex::encode(h.finalize()), len))
}

fn zeros(h: &mut Sha256, mut n: u64) {
    while n > 0 {
        let k = usize::try_from(n).unwrap_or(CHUNK).min(CHUNK);
        h.update(&ZEROS[..k]);
        n -= k as u64;
    }
}

/// The next data extent at or after `pos`: (start, end); `None` if only a hole is left.
/// Filesystems without `SEEK_DATA` report the whole rest as data.
fn next_extent(f: &std::fs::File, pos: u64, len: u64) -> std::io::Result<Option<(u64, u64)>> {
    let off = i64::try_from(pos).map_err(|_| std::io::Error::other("file too large"))?;
    // SAFETY: lseek on an fd owned by `f` for the whole call; errors come back as -1 + errno.
    let data = unsafe { libc::lseek(f.as_raw_fd(), off, libc::SEEK_DATA) };
    if data < 0 {
        let err = std::io::Error::last_os_error();
        return match err.raw_os_error() {
            Some(libc::ENXIO) => Ok(None),
            Some(libc::EINVAL) => Ok(Some((pos, len))),
            _ => Err(err),
        };
    }
    // SAFETY: as above.
    let hole = unsafe { libc::lseek(f.as_raw_fd(), data, libc::SEEK_HOLE) };
    if hole < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let (data, hole) = (data as u64, (hole as u64).min(len));
    Ok(Some((data.min(len), hole.max(data.min(len)))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concurrent_verifies_of_one_image_hash_it_once() {
        let dir = tempfile::tempdir().unwrap();
        let img = std::sync::Arc::new(image(dir.path()));
        let outcomes: Vec<Outcome> = (0..8)
            .map(|_| {
                let img = img.clone();
                std::thread::spawn(move || verify(&img).unwrap())
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|t| t.join().unwrap())
            .collect();
        let hashing: Vec<_> = outcomes.iter().filter(|o| !o.hashed.is_empty()).collect();
        assert_eq!(hashing.len(), 1, "{outcomes:?}");
        assert_eq!(hashing[0].hashed.len(), 3);
        assert!(outcomes
            .iter()
            .filter(|o| o.hashed.is_empty())
            .all(|o| o.cached.len() == 3));
    }
    use crate::catalog::{FileEntry, Manifest};
    use std::io::{Seek, SeekFrom, Write};

    fn image(dir: &Path) -> ImageVersion {
        let mut files = BTreeMap::new();
        for (name, body) in [("vmlinux", &b"kernel"[..]), ("initrd.cpio", b"initrd")] {
            std::fs::write(dir.join(name), body).unwrap();
        }
        // A sparse disk: a hole, data, a hole.
        let mut d = std::fs::File::create(dir.join("disk.raw")).unwrap();
        d.set_len(8 << 20).unwrap();
        d.seek(SeekFrom::Start(3 << 20)).unwrap();
        d.write_all(b"partition table and a file system").unwrap();
        drop(d);
        for name in ["vmlinux", "initrd.cpio", "disk.raw"] {
            let (sha256, size) = sha256_file(&dir.join(name)).unwrap();
            files.insert(name.to_string(), FileEntry { sha256, size });
        }
        ImageVersion {
            manifest: Manifest {
                publisher: "vmnode".into(),
                offer: "tiny".into(),
                sku: "1".into(),
                version: "1.0.0".into(),
                boot: "pvh".into(),
                cmdline: String::new(),
                kernel_release: String::new(),
                os_type: "Linux".into(),
                files,
                built_at: String::new(),
                provisioning: Default::default(),
                boot_snapshot: false,
            },
            dir: dir.to_path_buf(),
        }
    }

    /// The same digest `sha256sum` prints, holes included.
    #[test]
    fn sparse_hash_is_the_plain_hash() {
        let dir = tempfile::tempdir().unwrap();
        let img = image(dir.path());
        let bytes = std::fs::read(img.disk()).unwrap();
        let plain = hex::encode(Sha256::digest(&bytes));
        assert_eq!(sha256_file(&img.disk()).unwrap(), (plain, 8 << 20));
        // All hole, and empty.
        let p = dir.path().join("holes");
        std::fs::File::create(&p).unwrap().set_len(3 << 20).unwrap();
        let plain = hex::encode(Sha256::digest(vec![0u8; 3 << 20]));
        assert_eq!(sha256_file(&p).unwrap().0, plain);
        std::fs::write(&p, b"").unwrap();
        assert_eq!(sha256_file(&p).unwrap().0, hex::encode(Sha256::digest(b"")));
    }

    #[test]
    fn stamp_skips_unchanged_files_and_a_change_is_caught() {
        let dir = tempfile::tempdir().unwrap();
        let img = image(dir.path());
        let first = verify(&img).unwrap();
        assert_eq!(first.hashed.len(), 3, "{first:?}");
        let again = verify(&img).unwrap();
        assert!(again.hashed.is_empty(), "{again:?}");
        assert_eq!(again.cached.len(), 3);

        // A byte flipped in place (same inode, same size, new mtime).
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .open(img.initrd())
            .unwrap();
        f.write_all(b"X").unwrap();
        drop(f);
        let e = verify(&img).unwrap_err();
        match &e {
            CatalogError::Corrupted {
                file,
                expected,
                actual,
                ..
            } => {
                assert!(file.ends_with("initrd.cpio"), "{file}");
                assert_eq!(expected, &img.manifest.files["initrd.cpio"].sha256);
                assert_ne!(expected, actual);
            }
            other => panic!("{other:?}"),
        }
        let msg = e.to_string();
        assert!(msg.contains("vmnode image build tiny --rebuild"), "{msg}");
        // Still caught the next time: a bad file is never stamped.
        assert!(matches!(verify(&img), Err(CatalogError::Corrupted { .. })));
    }

    #[test]
    fn a_replaced_file_is_hashed_again() {
        let dir = tempfile::tempdir().unwrap();
        let img = image(dir.path());
        verify(&img).unwrap();
        // Same content under a new inode: hashed again, and good.
        let k = img.kernel();
        std::fs::copy(&k, dir.path().join("k2")).unwrap();
        std::fs::rename(dir.path().join("k2"), &k).unwrap();
        let out = verify(&img).unwrap();
        assert_eq!(out.hashed, vec!["vmlinux".to_string()]);
        // A missing file is its own error.
        std::fs::remove_file(&k).unwrap();
        assert!(matches!(
            verify(&img),
            Err(CatalogError::FileMissing { .. })
        ));
    }

    #[test]
    fn full_verification_ignores_the_stamp() {
        let dir = tempfile::tempdir().unwrap();
        let img = image(dir.path());
        verify(&img).unwrap();
        assert_eq!(verify_full(&img).unwrap().hashed.len(), 3);
    }
}
