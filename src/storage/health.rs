//! Is the state dir fit for new work? A create, a start and a blob write all need room in it
//! and a filesystem that takes writes. When it has neither, new work is refused up front with
//! an error that says what is wrong and what to do, instead of failing half-way and leaving a
//! half-made VM or blob behind; running VMs are not touched. Checked at every request: the space
//! and the read-only flag by one `statvfs` (microseconds), writability by a one-byte unnamed temp
//! file (~0.2 ms on a busy ext4, so a success is trusted for [`PROBE_TRUST`]). The node recovers
//! as soon as space or writability returns, without a restart.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Free space below which new work is refused (MiB) unless `serve --min-free-mb` says otherwise.
pub const MIN_FREE_MB: u64 = 64;

/// How long a successful probe write vouches for a directory (failures are never cached).
pub const PROBE_TRUST: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum HealthError {
    #[error(
        "the state dir {} is out of space ({free_mb} MiB free, {min_mb} MiB needed to take new work): free space on its filesystem (delete unused VMs, disks or images) or grow it; running VMs keep running",
        dir.display()
    )]
    Full {
        dir: PathBuf,
        free_mb: u64,
        min_mb: u64,
    },
    #[error(
        "the state dir {} does not take writes: make it writable again (a read-only remount, an immutable attribute or a failing disk: see `dmesg`, `mount`, `lsattr -d`); running VMs keep running",
        dir.display()
    )]
    Unwritable {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The state dir's checker: the free space it wants and the probe writes it trusts for now.
/// One per daemon (in its context), shared by everything that starts new work.
#[derive(Debug)]
pub struct Health {
    min_free_mb: u64,
    /// The directories whose probe write succeeded, and when.
    probed: Mutex<Vec<(PathBuf, Instant)>>,
}

impl Health {
    /// Refuses new work below `min_free_mb` MiB free (`serve --min-free-mb`).
    pub fn new(min_free_mb: u64) -> Health {
        Health {
            min_free_mb,
            probed: Mutex::new(Vec::new()),
        }
    }

    /// Checks that `dir` has room and takes writes. A missing `dir` is checked at its nearest
    /// existing ancestor (it will be made there).
    pub fn check(&self, dir: &Path) -> Result<(), HealthError> {
        let mut at = dir;
        while !at.exists() {
            match at.parent() {
                Some(p) => at = p,
                None => break,
            }
        }
        let unwritable = |source| HealthError::Unwritable {
            dir: at.to_path_buf(),
            source,
        };
        let st = nix::sys::statvfs::statvfs(at).map_err(|e| unwritable(e.into()))?;
        if st.flags().contains(nix::sys::statvfs::FsFlags::ST_RDONLY) {
            return Err(unwritable(std::io::Error::from_raw_os_error(libc::EROFS)));
        }
        let min_mb = self.min_free_mb;
        let free_mb =
            (st.blocks_available() as u64).saturating_mul(st.fragment_size() as u64) >> 20;
        // A filesystem out of inodes is as full as one out of blocks (0 total: it does not count).
        let no_inodes = st.files() > 0 && st.files_available() == 0;
        if free_mb < min_mb || no_inodes {
            return Err(HealthError::Full {
                dir: at.to_path_buf(),
                free_mb,
                min_mb,
            });
        }
        // Writable for real: an unnamed file (gone when closed), one byte. This catches what the
        // flags do not say: an immutable directory, permissions, a device that fails writes.
        let mut probed = self.probed.lock().unwrap_or_else(|p| p.into_inner());
        probed.retain(|(_, when)| when.elapsed() < PROBE_TRUST);
        if probed.iter().any(|(d, _)| d == at) {
            return Ok(());
        }
        let probe = tempfile::tempfile_in(at).and_then(|mut f| f.write_all(b"v"));
        probe.map_err(unwritable)?;
        probed.push((at.to_path_buf(), Instant::now()));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_writable_dir_with_room_passes_and_a_missing_one_is_checked_at_its_parent() {
        let d = tempfile::tempdir().unwrap();
        let h = Health::new(1);
        h.check(d.path()).unwrap();
        h.check(&d.path().join("not/yet")).unwrap();
        // Asking for more room than any disk has is refused with what is free.
        let e = Health::new(u64::MAX >> 21).check(d.path()).unwrap_err();
        assert!(matches!(e, HealthError::Full { .. }), "{e}");
    }

    #[test]
    fn messages_say_what_to_do() {
        let e = HealthError::Full {
            dir: "/s".into(),
            free_mb: 3,
            min_mb: 64,
        };
        assert!(e.to_string().contains("free space"), "{e}");
        let e = HealthError::Unwritable {
            dir: "/s".into(),
            source: std::io::Error::from_raw_os_error(libc::EROFS),
        };
        assert!(e.to_string().contains("make it writable"), "{e}");
    }
}
