//! A tap brought back under a process that still holds it.
//!
//! `ip link del` of a tap removes the link even while QEMU holds its descriptor: the tun file
//! stays open but detached (QEMU's reads fail with EBADFD, its frames go nowhere). A detached tun
//! file takes `TUNSETIFF` again, which makes a new link of that name attached to the same file, in
//! the namespace the file was opened in. So the daemon takes a copy of QEMU's descriptor
//! (`pidfd_getfd`, which needs ptrace rights over it: root has them), re-makes the link through
//! it, and drops the copy: QEMU's own descriptor carries the traffic again, untouched. What the
//! old link had set per device is set again as QEMU sets it for a virtio 1.0 NIC: a 12-byte vnet
//! header; no offloads (the kernel then checksums and segments for the guest, which is always
//! valid).

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use tracing::debug;

use super::{check_ifname, nix_sys, sys, tun_set_iff, PlumbingError, Result};

nix::ioctl_write_ptr_bad!(
    tun_set_vnet_hdr_sz,
    nix::request_code_write!(b'T', 216, std::mem::size_of::<libc::c_int>()),
    libc::c_int
);

/// The vnet header QEMU's virtio-net uses once a virtio 1.0 guest driver is up.
const VNET_HDR_LEN: libc::c_int = 12;

/// Whether `pid` holds a tun descriptor for `tap`, attached or detached.
fn tun_fds(pid: i32, tap: &str) -> Result<Vec<(i32, bool)>> {
    let dir = format!("/proc/{pid}/fd");
    let mut out = Vec::new();
    for e in std::fs::read_dir(&dir).map_err(sys(format!("reading {dir}")))? {
        let Ok(e) = e else { continue };
        let Ok(target) = std::fs::read_link(e.path()) else {
            continue;
        };
        if target.as_os_str() != "/dev/net/tun" {
            continue;
        }
        let Ok(fd) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        // tun's fdinfo says which link the file is attached to (`iff:` empty when detached).
        let info = std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd}")).unwrap_or_default();
        let iff = info
            .lines()
            .find_map(|l| l.strip_prefix("iff:"))
            .map(str::trim)
            .unwrap_or("");
        if iff.is_empty() || iff == tap {
            out.push((fd, iff == tap));
        }
    }
    Ok(out)
}

/// Re-makes tap `tap` on the tun descriptor process `pid` holds for it, if that descriptor is
/// detached (its link was deleted). Returns whether a link was made. The new link is down and on
/// no bridge: the caller attaches it.
pub fn reattach_tap(pid: i32, tap: &str) -> Result<bool> {
    check_ifname(tap)?;
    let fds = tun_fds(pid, tap)?;
    if fds.iter().any(|(_, attached)| *attached) {
        return Ok(false);
    }
    let Some((target, _)) = fds.first().copied() else {
        return Err(PlumbingError::NoSuchLink {
            ns: format!("(process {pid} holds no tun descriptor)"),
            name: tap.into(),
        });
    };
    // SAFETY: plain syscalls with integer arguments; a non-negative result is a new descriptor
    // that this function owns from here on.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if pidfd < 0 {
        return Err(sys(format!("pidfd_open({pid})"))(
            std::io::Error::last_os_error(),
        ));
    }
    // SAFETY: `pidfd` was just returned by pidfd_open and is owned by nobody else.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd as i32) };
    // SAFETY: as above: integer arguments; the result is a fresh descriptor or -1.
    let copy = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), target, 0) };
    if copy < 0 {
        return Err(sys(format!("pidfd_getfd({pid}, {target})"))(
            std::io::Error::last_os_error(),
        ));
    }
    // SAFETY: `copy` was just returned by pidfd_getfd and is owned by nobody else.
    let copy = unsafe { OwnedFd::from_raw_fd(copy as i32) };
    // SAFETY: ifreq is plain old data; all-zero bytes is a valid value of it.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(tap.bytes()) {
        *dst = src as libc::c_char;
    }
    // The flags QEMU's tap was made with (see `open_tap`); they fit the kernel's short.
    req.ifr_ifru.ifru_flags =
        (libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR) as libc::c_short;
    // SAFETY: `copy` is an open /dev/net/tun file and `req` a valid, NUL-terminated ifreq (the
    // name checked to be at most 15 bytes) that lives across the call.
    unsafe { tun_set_iff(copy.as_raw_fd(), &req) }.map_err(nix_sys(format!(
        "TUNSETIFF {tap} on process {pid}'s descriptor {target}"
    )))?;
    let len = VNET_HDR_LEN;
    // SAFETY: `copy` is attached to a tap now and `len` lives across the call.
    unsafe { tun_set_vnet_hdr_sz(copy.as_raw_fd(), &len) }
        .map_err(nix_sys(format!("TUNSETVNETHDRSZ {tap}")))?;
    debug!(
        tap,
        pid,
        fd = target,
        "tap re-made on the process's descriptor"
    );
    Ok(true)
}
