//! Network namespace, bridge, tap and socket plumbing.
//!
//! Links and addresses (bridges, ports, veth pairs, up/down, listing) are
//! managed over rtnetlink ([`links`]); things that live in file descriptors
//! (taps, sockets) are made directly with `libc`/`nix`. Everything happens
//! inside a named network namespace (`/run/netns/NAME`), never in the
//! host's, except [`ensure_veth_to_host`], which is how the host reaches its
//! guests.
//!
//! Namespaces themselves are still made and removed by `ip netns add|delete`:
//! a named namespace is a bind mount of `/proc/self/ns/net` under
//! `/run/netns`, and iproute2 also makes `/run/netns` a shared mount point so
//! the name is visible from every mount namespace (systemd services with
//! private mounts, `ip netns exec`). Doing that by hand would duplicate
//! iproute2's mount handling for a call made once per daemon start, and the
//! result must stay usable by operators' `ip netns exec vmnode ...` anyway.
//!
//! A tap or socket belongs to the namespace of the thread that creates it, so
//! [`create_tap`], [`udp_socket_in_ns`] and [`tcp_listener_in_ns_at`] create theirs on a short-lived
//! dedicated thread that first joins the namespace with `setns`; the calling
//! thread (maybe a tokio worker) never changes namespace.
//!
//! All functions block (they wait for that thread, or for `ip netns`); async callers
//! should run them with `tokio::task::spawn_blocking`.

use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, UdpSocket};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::process::Command;

use nix::sched::CloneFlags;
use nix::sys::socket::SockType;
use tracing::debug;

use crate::addr::stable_hash;

mod links;
mod reattach;
pub use links::{
    attach_to_bridge, delete_link, ensure_bridge, ensure_routed_veth, ensure_veth_between,
    ensure_veth_to_host, link_addrs, link_exists, link_exists_at, link_is_up, link_master,
    list_links, set_link_up,
};
pub use reattach::reattach_tap;

/// Name of the daemon's namespace unless configured otherwise.
pub const DEFAULT_NETNS: &str = "vmnode";
/// Where iproute2 keeps named network namespaces.
pub const NETNS_DIR: &str = "/run/netns";
/// Longest interface name Linux accepts (IFNAMSIZ - 1).
pub const MAX_IFNAME_LEN: usize = 15;
/// Longest namespace name accepted here.
const MAX_NETNS_LEN: usize = 64;

/// Errors of this module.
#[derive(Debug, thiserror::Error)]
pub enum PlumbingError {
    /// A namespace or interface name that is not allowed.
    #[error("invalid {what} name {name:?}: {reason}")]
    InvalidName {
        /// "namespace" or "interface".
        what: &'static str,
        /// The name.
        name: String,
        /// Why it is refused.
        reason: &'static str,
    },
    /// `ip` could not be started.
    #[error("cannot run `{cmd}`: {source}")]
    Spawn {
        /// The command line.
        cmd: String,
        /// The error.
        source: std::io::Error,
    },
    /// `ip` failed.
    #[error("`{cmd}` failed ({status}): {stderr}")]
    Command {
        /// The command line.
        cmd: String,
        /// Its exit status.
        status: std::process::ExitStatus,
        /// What it printed on stderr.
        stderr: String,
    },
    /// `ip` printed something we cannot read.
    #[error("cannot parse output of `{cmd}`: {reason}")]
    Parse {
        /// The command line.
        cmd: String,
        /// What went wrong.
        reason: String,
    },
    /// A link exists but is not of the expected kind.
    #[error("link {name} in namespace {ns} is a {found:?}, not a {expected}")]
    WrongKind {
        /// Namespace.
        ns: String,
        /// Link name.
        name: String,
        /// Expected kind (e.g. "bridge").
        expected: &'static str,
        /// Kind found (`None` for a plain device).
        found: Option<String>,
    },
    /// A system call failed.
    #[error("{context}: {source}")]
    Sys {
        /// What was being done.
        context: String,
        /// The error.
        source: std::io::Error,
    },
    /// A link that must exist does not.
    #[error("no link {name} in namespace {ns}")]
    NoSuchLink {
        /// Namespace.
        ns: String,
        /// Link name.
        name: String,
    },
    /// A netlink request failed.
    #[error("netlink: {context}: {source}")]
    Netlink {
        /// What was being done.
        context: String,
        /// The kernel's (or rtnetlink's) error.
        source: rtnetlink::Error,
    },
    /// The thread that entered the namespace panicked or could not start.
    #[error("namespace worker thread failed: {0}")]
    Thread(String),
}

/// Result of this module.
pub type Result<T> = std::result::Result<T, PlumbingError>;

fn sys(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> PlumbingError {
    let context = context.into();
    move |source| PlumbingError::Sys { context, source }
}

fn nix_sys(context: impl Into<String>) -> impl FnOnce(nix::Error) -> PlumbingError {
    let context = context.into();
    move |e| PlumbingError::Sys {
        context,
        source: std::io::Error::from(e),
    }
}

/// Path of a named namespace, `/run/netns/NAME`.
pub fn netns_path(name: &str) -> PathBuf {
    PathBuf::from(NETNS_DIR).join(name)
}

/// Creates the namespace `name` unless it exists, and brings its `lo` up.
pub fn ensure_netns(name: &str) -> Result<()> {
    check_netns_name(name)?;
    if !netns_path(name).exists() {
        if let Err(e) = ip(&["netns", "add", name]) {
            // Another process may have created it meanwhile.
            if !netns_path(name).exists() {
                return Err(e);
            }
        }
    }
    set_link_up(name, "lo")
}

/// Deletes the namespace `name` (and with it every link inside). Missing is fine.
pub fn delete_netns(name: &str) -> Result<()> {
    check_netns_name(name)?;
    if netns_path(name).exists() {
        ip(&["netns", "delete", name])?;
    }
    Ok(())
}

/// Creates a tap `name` in `ns` and returns its file descriptor.
///
/// The tap is made with `IFF_TAP | IFF_NO_PI | IFF_VNET_HDR` and is not
/// persistent: it disappears when the last holder of the descriptor (QEMU)
/// closes it. The descriptor has `FD_CLOEXEC` set; clear it only in the
/// child that must inherit it. The tap is down and on no bridge: see
/// [`attach_to_bridge`].
pub fn create_tap(ns: &str, name: &str) -> Result<OwnedFd> {
    check_ifname(name)?;
    let tap = name.to_string();
    in_netns(ns, move || open_tap(&tap))
}

nix::ioctl_write_ptr_bad!(
    tun_set_iff,
    nix::request_code_write!(b'T', 202, std::mem::size_of::<libc::c_int>()),
    libc::ifreq
);

fn open_tap(name: &str) -> Result<OwnedFd> {
    // std opens with O_CLOEXEC.
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")
        .map_err(sys("open /dev/net/tun"))?;
    // SAFETY: ifreq is plain old data (a byte array and a union of plain
    // data); all-zero bytes is a valid value of it.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(name.bytes()) {
        *dst = src as libc::c_char;
    }
    // The flags are bit patterns that fit in the kernel's short.
    req.ifr_ifru.ifru_flags =
        (libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR) as libc::c_short;
    // SAFETY: the descriptor is open on /dev/net/tun and `req` is a valid,
    // NUL-terminated ifreq (name checked to be at most 15 bytes) that lives
    // across the call.
    unsafe { tun_set_iff(file.as_raw_fd(), &req) }.map_err(nix_sys(format!("TUNSETIFF {name}")))?;
    debug!(tap = name, "tap created");
    Ok(OwnedFd::from(file))
}

/// A UDP socket made inside `ns`: `SO_REUSEADDR`, `SO_BROADCAST`,
/// `SO_BINDTODEVICE` = `device`, bound to `0.0.0.0:port`, non-blocking and
/// close-on-exec. Wrap it with `tokio::net::UdpSocket::from_std`.
pub fn udp_socket_in_ns(ns: &str, device: &str, port: u16) -> Result<UdpSocket> {
    udp_socket_in_ns_at(ns, device, SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port))
}

/// Like [`udp_socket_in_ns`], bound to `addr`. Sockets bound to the same
/// address and port on different devices coexist, so every bridge of a
/// namespace can have its own listener at the platform address (the DNS
/// listeners do: see [`crate::dns`]).
pub fn udp_socket_in_ns_at(ns: &str, device: &str, addr: SocketAddrV4) -> Result<UdpSocket> {
    let fd = socket_in_ns_at(ns, device, addr, SockType::Datagram)?;
    Ok(UdpSocket::from(fd))
}

/// A listening TCP socket made inside `ns`: `SO_REUSEADDR`, `SO_BINDTODEVICE` =
/// `device`, bound to `addr`, non-blocking and close-on-exec (backlog
/// [`TCP_BACKLOG`]). As with [`udp_socket_in_ns_at`], listeners at the same
/// address on different devices coexist: each bridge gets its own at the
/// platform's addresses, and what one accepts entered that bridge. Wrap it
/// with `tokio::net::TcpListener::from_std`.
pub fn tcp_listener_in_ns_at(ns: &str, device: &str, addr: SocketAddrV4) -> Result<TcpListener> {
    let fd = socket_in_ns_at(ns, device, addr, SockType::Stream)?;
    nix::sys::socket::listen(
        &fd,
        nix::sys::socket::Backlog::new(TCP_BACKLOG).map_err(nix_sys("backlog"))?,
    )
    .map_err(nix_sys(format!("listen {addr} on {device}")))?;
    Ok(TcpListener::from(fd))
}

/// Pending connections a [`tcp_listener_in_ns_at`] listener keeps.
pub const TCP_BACKLOG: i32 = 128;

/// An IPv4 socket of `kind` made inside `ns`, bound to `device` and `addr`
/// (`SO_BROADCAST` too for datagrams).
fn socket_in_ns_at(ns: &str, device: &str, addr: SocketAddrV4, kind: SockType) -> Result<OwnedFd> {
    check_ifname(device)?;
    let device = device.to_string();
    in_netns(ns, move || {
        use nix::sys::socket::{
            bind, setsockopt, socket, sockopt, AddressFamily, SockFlag, SockaddrIn,
        };
        let fd = socket(
            AddressFamily::Inet,
            kind,
            SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
            None,
        )
        .map_err(nix_sys("socket"))?;
        setsockopt(&fd, sockopt::ReuseAddr, &true).map_err(nix_sys("SO_REUSEADDR"))?;
        if kind == SockType::Datagram {
            setsockopt(&fd, sockopt::Broadcast, &true).map_err(nix_sys("SO_BROADCAST"))?;
        }
        setsockopt(&fd, sockopt::BindToDevice, &OsString::from(&device))
            .map_err(nix_sys(format!("SO_BINDTODEVICE {device}")))?;
        bind(fd.as_raw_fd(), &SockaddrIn::from(addr))
            .map_err(nix_sys(format!("bind {addr} on {device}")))?;
        Ok(fd)
    })
}

/// The tap name of a NIC: `vt` and 12 hex digits of a stable hash of its id
/// (14 characters, within Linux's 15).
pub fn tap_name_for(nic_id: &str) -> String {
    format!("vt{:012x}", stable_hash(nic_id.as_bytes()) >> 16)
}

/// Sets the sysctl `key` (e.g. `net/ipv4/ip_forward`) to `value` inside `ns`.
/// `/proc/sys/net` shows the namespace of the thread that opens it.
pub fn set_sysctl(ns: &str, key: &str, value: &str) -> Result<()> {
    set_sysctl_at(Some(ns), key, value)
}

/// [`set_sysctl`] in `ns`, or in the daemon's own namespace for `None`.
pub fn set_sysctl_at(ns: Option<&str>, key: &str, value: &str) -> Result<()> {
    let path = sysctl_path(key)?;
    let value = value.to_string();
    debug!(ns = ns.unwrap_or("(own)"), %path, %value, "sysctl");
    in_netns_at(ns, move || {
        std::fs::write(&path, value.as_bytes()).map_err(sys(format!("write {path}")))
    })
}

/// Reads the sysctl `key` inside `ns` (trimmed).
pub fn get_sysctl(ns: &str, key: &str) -> Result<String> {
    get_sysctl_at(Some(ns), key)
}

/// [`get_sysctl`] in `ns`, or in the daemon's own namespace for `None`.
pub fn get_sysctl_at(ns: Option<&str>, key: &str) -> Result<String> {
    let path = sysctl_path(key)?;
    in_netns_at(ns, move || {
        std::fs::read_to_string(&path)
            .map(|s| s.trim().to_string())
            .map_err(sys(format!("read {path}")))
    })
}

/// `/proc/sys/KEY` for a `net/` sysctl; other keys (and `..`) are refused.
fn sysctl_path(key: &str) -> Result<String> {
    let ok = key.starts_with("net/")
        && !key.contains("..")
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'/' | b'_' | b'-' | b'.'));
    if !ok {
        return Err(PlumbingError::InvalidName {
            what: "sysctl",
            name: key.into(),
            reason: "not a net/ sysctl",
        });
    }
    Ok(format!("/proc/sys/{key}"))
}

/// Runs `f` on a new thread that has joined the network namespace `ns`.
/// Children spawned by `f` start in that namespace too.
pub(crate) fn in_netns<T, F>(ns: &str, f: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T> + Send + 'static,
{
    check_netns_name(ns)?;
    let path = netns_path(ns);
    let ns_file = File::open(&path).map_err(sys(format!("open {}", path.display())))?;
    on_thread(Some(ns_file), &format!("netns-{ns}"), f)
}

/// [`in_netns`] for `Some(ns)`; for `None`, `f` runs on a new thread in the
/// daemon's own namespace (the host's, unless the daemon was started elsewhere).
pub(crate) fn in_netns_at<T, F>(ns: Option<&str>, f: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T> + Send + 'static,
{
    match ns {
        Some(ns) => in_netns(ns, f),
        None => on_thread(None, "own-netns", f),
    }
}

/// Runs `f` on a new thread, first joined to the namespace `ns_file` if any.
/// The thread ends right after `f`, so it never needs to go back.
fn on_thread<T, F>(ns_file: Option<File>, name: &str, f: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T> + Send + 'static,
{
    std::thread::Builder::new()
        .name(name.chars().take(15).collect())
        .spawn(move || {
            if let Some(file) = ns_file {
                nix::sched::setns(&file, CloneFlags::CLONE_NEWNET)
                    .map_err(nix_sys("setns (join the namespace)"))?;
            }
            f()
        })
        .map_err(|e| PlumbingError::Thread(e.to_string()))?
        .join()
        .map_err(|_| PlumbingError::Thread("panicked".into()))?
}

/// Runs `ip ARGS` and returns its stdout, or an error if it failed.
fn ip(args: &[&str]) -> Result<String> {
    run_ip(args)?
}

/// Runs `ip ARGS`: the outer error is "could not run", the inner "ran and failed".
fn run_ip(args: &[&str]) -> Result<Result<String>> {
    let cmd = cmdline(args);
    debug!("{cmd}");
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|source| PlumbingError::Spawn {
            cmd: cmd.clone(),
            source,
        })?;
    if out.status.success() {
        Ok(Ok(String::from_utf8_lossy(&out.stdout).into_owned()))
    } else {
        Ok(Err(PlumbingError::Command {
            cmd,
            status: out.status,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        }))
    }
}

fn cmdline(args: &[&str]) -> String {
    format!("ip {}", args.join(" "))
}

/// Names are passed to `ip` as arguments and used as paths: allow only
/// `[A-Za-z0-9_.-]`, not starting with `-` or `.`.
fn check_name(what: &'static str, name: &str, max: usize) -> Result<()> {
    let bad = |reason| {
        Err(PlumbingError::InvalidName {
            what,
            name: name.to_string(),
            reason,
        })
    };
    if name.is_empty() {
        return bad("empty");
    }
    if name.len() > max {
        return bad("too long");
    }
    if name.starts_with(['-', '.']) {
        return bad("starts with '-' or '.'");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
    {
        return bad("only letters, digits, '_', '.' and '-' are allowed");
    }
    Ok(())
}

pub(crate) fn check_ifname(name: &str) -> Result<()> {
    check_name("interface", name, MAX_IFNAME_LEN)
}

pub(crate) fn check_netns_name(name: &str) -> Result<()> {
    check_name("namespace", name, MAX_NETNS_LEN)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tap_names_are_short_and_stable() {
        let a = tap_name_for("nic-1");
        assert_eq!(a.len(), 14);
        assert!(a.starts_with("vt"));
        assert!(a[2..].bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(a, tap_name_for("nic-1"));
        assert_ne!(a, tap_name_for("nic-2"));
        assert!(check_ifname(&a).is_ok());
        let long = "x".repeat(500);
        assert_eq!(tap_name_for(&long).len(), 14);
        // Pinned: a tap name must not change across releases.
        assert_eq!(tap_name_for(""), "vtcbf29ce48422");
    }

    #[test]
    fn names_are_checked() {
        for good in ["vmnode", "br-1", "vt0123456789ab", "a.b_c", "x"] {
            assert!(check_ifname(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "-n",
            ".hidden",
            "..",
            "a/b",
            "a b",
            "tap%d",
            "sixteen-chars-xx",
            "é",
        ] {
            assert!(check_ifname(bad).is_err(), "{bad:?}");
        }
        assert!(check_netns_name(&"n".repeat(64)).is_ok());
        assert!(check_netns_name(&"n".repeat(65)).is_err());
        assert!(matches!(
            create_tap("../etc", "t0"),
            Err(PlumbingError::InvalidName { .. })
        ));
        assert!(!link_exists("no-such-ns-for-vmnode-tests", "lo"));
    }
}
