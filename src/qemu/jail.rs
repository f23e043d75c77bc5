//! What confines a QEMU process (R3), the way Firecracker's jailer does it:
//!
//! - **An unprivileged user.** QEMU runs as the system user `vmnode-qemu` (`VMNODE_QEMU_USER`
//!   names another), made by the daemon at start if missing (`useradd --system`, no home, no
//!   shell) and put in group `kvm` where `/dev/kvm` exists. The daemon drops to it in the forked
//!   child between fork and exec ([`drop_privileges`]: no-new-privs, setgroups, setgid, setuid),
//!   so QEMU itself never calls set*id and its seccomp filter can deny that (`-runas` would need
//!   it; `-run-with user=` is QEMU ≥ 9.1).
//! - **Only what it is given.** Everything QEMU reads or writes arrives as a file descriptor the
//!   daemon opened ([`open`]: disks, the serial spool, the kernel and initrd, the listening QMP
//!   and guest-agent sockets; the tap), installed at fixed numbers in the child ([`install`]);
//!   every other fd of the daemon is close-on-exec. So the QEMU user needs no access to any path:
//!   the run dir stays root's and 0700, disks stay root's.
//! - **A seccomp filter.** [`SANDBOX`] on every QEMU: obsolete system calls, privilege changes,
//!   fork/exec and resource control are denied.

use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// The `-sandbox` option every QEMU gets.
pub const SANDBOX: &str = "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny";

/// The default unprivileged user QEMU runs as.
pub const DEFAULT_USER: &str = "vmnode-qemu";

/// The most fds handed to one QEMU (the pre-exec code uses a fixed array: no allocation there).
pub const MAX_FDS: usize = 128;

#[derive(Debug, thiserror::Error)]
pub enum JailError {
    #[error("cannot create the QEMU user {user} with useradd ({detail}); create it by hand: useradd --system --no-create-home --shell /usr/sbin/nologin {user}")]
    UserAdd { user: String, detail: String },
    #[error("cannot look up the QEMU user {user}")]
    Lookup {
        user: String,
        #[source]
        source: nix::Error,
    },
    #[error("the QEMU user {0} has uid 0; name an unprivileged user in VMNODE_QEMU_USER")]
    Root(String),
    #[error("cannot open {path} to hand it to QEMU")]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot listen on {path} for QEMU")]
    Listen {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not world-readable, and QEMU reopens it as its unprivileged user; image files are public: chmod 0644 it")]
    NotReadable { path: PathBuf },
    #[error("too many files for one QEMU ({0}, at most {MAX_FDS})")]
    TooMany(usize),
}

/// Who QEMU runs as.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Creds {
    pub user: String,
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups (`kvm` where `/dev/kvm` exists).
    pub groups: Vec<u32>,
}

pub fn lookup(user: &str) -> Result<Option<nix::unistd::User>, JailError> {
    nix::unistd::User::from_name(user).map_err(|source| JailError::Lookup {
        user: user.into(),
        source,
    })
}

pub fn kvm_gid() -> Option<u32> {
    nix::unistd::Group::from_name("kvm")
        .ok()
        .flatten()
        .map(|g| g.gid.as_raw())
}

/// Finds `user`, creating it (a system user without home or shell) if it does not exist, and
/// adds it to group `kvm` when `want_kvm` and the group exists. Several daemons may race here
/// (tests): a failed `useradd` is retried after looking again.
pub fn ensure_user(user: &str, want_kvm: bool) -> Result<Creds, JailError> {
    let kvm = want_kvm.then(kvm_gid).flatten();
    let mut last = String::new();
    for attempt in 0..10 {
        if let Some(u) = lookup(user)? {
            if u.uid.is_root() {
                return Err(JailError::Root(user.into()));
            }
            let name = std::ffi::CString::new(user).unwrap_or_default();
            let mut groups: Vec<u32> = nix::unistd::getgrouplist(&name, u.gid)
                .map(|g| g.into_iter().map(|g| g.as_raw()).collect())
                .unwrap_or_else(|_| vec![u.gid.as_raw()]);
            if let Some(k) = kvm.filter(|k| !groups.contains(k)) {
                let out = std::process::Command::new("usermod")
                    .args(["-a", "-G", "kvm", user])
                    .output();
                match out {
                    Ok(o) if o.status.success() => groups.push(k),
                    Ok(o) => {
                        tracing::warn!(stderr = %String::from_utf8_lossy(&o.stderr).trim(), "usermod -aG kvm failed: QEMU cannot use /dev/kvm")
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "usermod not found: QEMU cannot use /dev/kvm")
                    }
                }
            }
            groups.sort_unstable();
            groups.dedup();
            return Ok(Creds {
                user: user.into(),
                uid: u.uid.as_raw(),
                gid: u.gid.as_raw(),
                groups,
            });
        }
        let mut cmd = std::process::Command::new("useradd");
        cmd.args([
            "--system",
            "--no-create-home",
            "--home-dir",
            "/nonexistent",
            "--shell",
            "/usr/sbin/nologin",
            "--user-group",
            "--comment",
            "vmnode QEMU processes",
        ]);
        if kvm.is_some() {
            cmd.args(["--groups", "kvm"]);
        }
        match cmd.arg(user).output() {
            Ok(o) if o.status.success() => {
                tracing::info!(user, "created the QEMU user");
                continue;
            }
            Ok(o) => last = String::from_utf8_lossy(&o.stderr).trim().to_string(),
            Err(e) => last = e.to_string(),
        }
        // Another daemon holding the passwd lock, or just made the user: look again.
        std::thread::sleep(std::time::Duration::from_millis(100 * (attempt + 1)));
    }
    Err(JailError::UserAdd {
        user: user.into(),
        detail: last,
    })
}

/// How a passed file is opened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    Read,
    /// Read, and reopened by QEMU through `/proc/self/fd/N` (the kernel and initrd: QEMU's loader
    /// takes a path). The reopen checks the file's own mode as the QEMU user: it must be
    /// world-readable.
    Reopen,
    ReadWrite,
    /// Write-only, appending, created 0600 if missing (the serial spool).
    Append,
    /// A unix socket bound at the path (any old file there removed) and listening.
    Listen,
}

/// One file QEMU gets as an fd.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Passed {
    /// The fd number in QEMU.
    pub fd: RawFd,
    pub path: PathBuf,
    pub access: Access,
}

/// Opens every passed file as the daemon (root), close-on-exec; they are installed at their
/// numbers in the child by [`install`].
pub fn open(files: &[Passed]) -> Result<Vec<(RawFd, OwnedFd)>, JailError> {
    if files.len() + 1 > MAX_FDS {
        return Err(JailError::TooMany(files.len() + 1));
    }
    files
        .iter()
        .map(|p| {
            let fd = open_one(&p.path, p.access)?;
            Ok((p.fd, fd))
        })
        .collect()
}

/// Opens one file as `access` says (close-on-exec, as std always does).
pub fn open_one(path: &Path, access: Access) -> Result<OwnedFd, JailError> {
    let err = |source| JailError::Open {
        path: path.into(),
        source,
    };
    let mut o = std::fs::OpenOptions::new();
    match access {
        Access::Read => {
            o.read(true);
        }
        Access::Reopen => {
            use std::os::unix::fs::PermissionsExt;
            let f = o.read(true).open(path).map_err(err)?;
            let mode = f.metadata().map_err(err)?.permissions().mode();
            if mode & 0o004 == 0 {
                return Err(JailError::NotReadable { path: path.into() });
            }
            return Ok(f.into());
        }
        Access::ReadWrite => {
            o.read(true).write(true);
        }
        Access::Append => {
            o.append(true).create(true).mode(0o600);
        }
        Access::Listen => {
            let _ = std::fs::remove_file(path);
            let l = std::os::unix::net::UnixListener::bind(path).map_err(|source| {
                JailError::Listen {
                    path: path.into(),
                    source,
                }
            })?;
            return Ok(l.into());
        }
    }
    o.open(path).map(OwnedFd::from).map_err(err)
}

/// The fds to install in the child, as raw numbers, prepared before fork (no allocation after).
pub struct FdPlan {
    n: usize,
    src: [RawFd; MAX_FDS],
    dst: [RawFd; MAX_FDS],
}

impl FdPlan {
    pub fn new(fds: &[(RawFd, &OwnedFd)]) -> Result<FdPlan, JailError> {
        if fds.len() > MAX_FDS {
            return Err(JailError::TooMany(fds.len()));
        }
        let mut p = FdPlan {
            n: fds.len(),
            src: [-1; MAX_FDS],
            dst: [-1; MAX_FDS],
        };
        for (i, (dst, fd)) in fds.iter().enumerate() {
            p.src[i] = fd.as_raw_fd();
            p.dst[i] = *dst;
        }
        Ok(p)
    }
}

/// Where staged copies go in the child: above every target, so no target is overwritten early.
const STAGE_FROM: RawFd = 1024;

/// Installs the planned fds at their numbers, without the close-on-exec flag, and marks every
/// other fd above 2 close-on-exec (whatever the daemon itself inherited), so QEMU gets exactly
/// these and 0–2. Sources and targets may overlap, so each source is first copied above
/// [`STAGE_FROM`], then moved into place.
///
/// # Safety
/// Runs in the forked child before exec: only async-signal-safe calls (fcntl, dup2).
pub unsafe fn install(plan: &mut FdPlan) -> std::io::Result<()> {
    for i in 0..plan.n {
        // SAFETY: fcntl on an fd the child inherited; async-signal-safe.
        let staged = unsafe { libc::fcntl(plan.src[i], libc::F_DUPFD_CLOEXEC, STAGE_FROM) };
        if staged < 0 {
            return Err(std::io::Error::last_os_error());
        }
        plan.src[i] = staged;
    }
    // SAFETY: close_range(2) only sets flags on the child's own fds; async-signal-safe.
    let r = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            3u32,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    };
    if r != 0 {
        // Kernels before 5.11: one fcntl per possible fd.
        // SAFETY: fcntl on fd numbers; EBADF for the ones not open is ignored.
        let max = unsafe { libc::sysconf(libc::_SC_OPEN_MAX) }.clamp(1024, 65536) as RawFd;
        for fd in 3..max {
            // SAFETY: as above.
            unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
        }
    }
    for i in 0..plan.n {
        // SAFETY: dup2 between fds open in the child; it clears close-on-exec on the target.
        if unsafe { libc::dup2(plan.src[i], plan.dst[i]) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Drops to `c` for good: no new privileges, then supplementary groups, gid, uid.
///
/// # Safety
/// Runs in the forked child before exec: only async-signal-safe calls.
pub unsafe fn drop_privileges(c: &Creds, groups: &[libc::gid_t]) -> std::io::Result<()> {
    let last = std::io::Error::last_os_error;
    // SAFETY: plain system calls on the child's own credentials; `groups` outlives the call.
    unsafe {
        if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
            return Err(last());
        }
        if libc::setgroups(groups.len(), groups.as_ptr()) != 0 {
            return Err(last());
        }
        if libc::setresgid(c.gid, c.gid, c.gid) != 0 {
            return Err(last());
        }
        if libc::setresuid(c.uid, c.uid, c.uid) != 0 {
            return Err(last());
        }
        // Never exec QEMU with root left anywhere.
        if libc::getuid() != c.uid || libc::geteuid() != c.uid || libc::setuid(0) == 0 {
            return Err(std::io::Error::from_raw_os_error(libc::EPERM));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passed_files_open_as_asked() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("disk");
        std::fs::write(&f, b"x").unwrap();
        let files = [
            Passed {
                fd: 7,
                path: f.clone(),
                access: Access::ReadWrite,
            },
            Passed {
                fd: 8,
                path: d.path().join("spool"),
                access: Access::Append,
            },
            Passed {
                fd: 9,
                path: d.path().join("s.sock"),
                access: Access::Listen,
            },
        ];
        let fds = open(&files).unwrap();
        assert_eq!(fds.iter().map(|f| f.0).collect::<Vec<_>>(), [7, 8, 9]);
        let fl = |fd: &OwnedFd| nix::fcntl::fcntl(fd.as_raw_fd(), nix::fcntl::F_GETFL).unwrap();
        assert_eq!(fl(&fds[0].1) & libc::O_ACCMODE, libc::O_RDWR);
        assert_eq!(fl(&fds[1].1) & libc::O_ACCMODE, libc::O_WRONLY);
        assert_ne!(fl(&fds[1].1) & libc::O_APPEND, 0);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(d.path().join("spool"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        // The socket listens: a client connects before anyone accepts.
        std::os::unix::net::UnixStream::connect(d.path().join("s.sock")).unwrap();
        let private = d.path().join("vmlinux");
        std::fs::write(&private, b"k").unwrap();
        std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o600)).unwrap();
        let e = open_one(&private, Access::Reopen).unwrap_err();
        assert!(e.to_string().contains("chmod 0644"), "{e}");
        std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o644)).unwrap();
        open_one(&private, Access::Reopen).unwrap();
        let missing = open_one(&d.path().join("nope"), Access::Read).unwrap_err();
        assert!(missing.to_string().contains("nope"), "{missing}");
    }

    #[test]
    fn sandbox_denies_the_four_groups() {
        for want in [
            "on",
            "obsolete=deny",
            "elevateprivileges=deny",
            "spawn=deny",
            "resourcecontrol=deny",
        ] {
            assert!(SANDBOX.split(',').any(|p| p == want), "{want}");
        }
    }
}
