//! The socket loop around [`handle`]: a few worker threads on one socket.
//!
//! Why threads and not tasks: every packet may call the lease book, which
//! blocks (a database read for the binding, a durable write before an ACK).
//! Handing each packet from a tokio task to the blocking pool and back costs
//! several thread wake-ups per packet, which dominated the profile at a few
//! thousand exchanges per second. Here [`WORKERS`] threads each block in
//! `recvfrom` on the same socket (the kernel wakes one per datagram), handle
//! the packet and send the reply themselves: one wake-up per packet, and up
//! to [`WORKERS`] commits in flight, which a book can share one sync among.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket as StdUdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use nix::sys::socket::sockopt;
use tokio::net::UdpSocket;
use tracing::{debug, error, info, warn};

use super::{handle, DhcpConfig, LeaseBook, Reply};

/// Threads per responder: packets handled at once (and commits in flight).
pub const WORKERS: usize = 64;
/// Socket receive buffer asked for, so bursts wait instead of being dropped
/// while every worker waits for a commit: about a thousand requests, 100 ms
/// at 10,000/s; past that, dropping beats answering stale requests.
const SOCKET_RCVBUF: usize = 1 << 20;
/// Receive buffer (a DHCP message fits in one Ethernet frame).
const RECV_BUF: usize = 4096;
/// Workers wake this often even when idle, a safety net for stopping.
const IDLE_WAKE: Duration = Duration::from_secs(2);
/// Stack of a worker: `handle` needs little.
const WORKER_STACK: usize = 256 * 1024;

/// Runs the responder on `socket` until the task is aborted (the future dropped).
///
/// The socket should come from [`crate::plumbing::udp_socket_in_ns`] (bound to
/// `0.0.0.0:67` on the network's bridge, broadcast allowed). [`WORKERS`]
/// threads receive and handle packets; each reply is sent by the thread that
/// handled it, after its commit returned, with the server identifier as
/// source address when that address is on the bridge. When the future is
/// dropped, the socket is shut down and the threads end. An error on one
/// packet is logged and the loop goes on.
pub async fn serve(socket: UdpSocket, cfg: DhcpConfig, book: Arc<dyn LeaseBook>) {
    info!(local = ?socket.local_addr().ok(), server_id = %cfg.server_id, "DHCP responder running");
    let socket = match socket
        .into_std()
        .and_then(|s| s.set_nonblocking(false).map(|()| s))
        .and_then(|s| s.set_read_timeout(Some(IDLE_WAKE)).map(|()| s))
    {
        Ok(s) => Arc::new(s),
        Err(e) => {
            error!("DHCP socket unusable: {e}");
            return;
        }
    };
    // As root the limit (net.core.rmem_max) can be passed; otherwise take what we get.
    if nix::sys::socket::setsockopt(&*socket, sockopt::RcvBufForce, &SOCKET_RCVBUF).is_err() {
        let _ = nix::sys::socket::setsockopt(&*socket, sockopt::RcvBuf, &SOCKET_RCVBUF);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let _guard = StopOnDrop {
        stop: Arc::clone(&stop),
        socket: Arc::clone(&socket),
    };
    let cfg = Arc::new(cfg);
    let mut started = 0;
    for n in 0..WORKERS {
        let (socket, cfg, book, stop) = (
            Arc::clone(&socket),
            Arc::clone(&cfg),
            Arc::clone(&book),
            Arc::clone(&stop),
        );
        let spawned = std::thread::Builder::new()
            .name(format!("dhcp-{n}"))
            .stack_size(WORKER_STACK)
            .spawn(move || worker(&socket, &cfg, &*book, &stop));
        match spawned {
            Ok(_) => started += 1,
            Err(e) => warn!("cannot start DHCP worker {n}: {e}"),
        }
    }
    if started == 0 {
        error!("no DHCP worker could start");
        return;
    }
    // The threads do the work; this future only owns their lifetime.
    std::future::pending::<()>().await;
}

/// Stops the workers when [`serve`]'s future is dropped: sets the flag and
/// shuts the socket down, which wakes every thread blocked in `recvfrom`.
struct StopOnDrop {
    stop: Arc<AtomicBool>,
    socket: Arc<StdUdpSocket>,
}

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // On an unconnected UDP socket this reports ENOTCONN but still marks
        // it shut down and wakes the readers, which is all we need.
        let _ =
            nix::sys::socket::shutdown(self.socket.as_raw_fd(), nix::sys::socket::Shutdown::Both);
        debug!("DHCP responder stopping");
    }
}

fn worker(socket: &StdUdpSocket, cfg: &DhcpConfig, book: &dyn LeaseBook, stop: &AtomicBool) {
    let mut buf = vec![0u8; RECV_BUF];
    while !stop.load(Ordering::SeqCst) {
        let (len, from) = match socket.recv_from(&mut buf) {
            Ok(got) => got,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                continue
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                if !stop.load(Ordering::SeqCst) {
                    warn!("DHCP receive failed: {e}");
                    // Do not spin on a persistent error.
                    std::thread::sleep(Duration::from_millis(100));
                }
                continue;
            }
        };
        if stop.load(Ordering::SeqCst) {
            break;
        }
        if len == 0 {
            continue;
        }
        if let Some(reply) = handle(cfg, book, &buf[..len]) {
            if let Err(e) = send_reply(socket, &reply, cfg.server_id) {
                warn!(%from, to = %reply.destination(), "DHCP send failed: {e}");
            }
        }
    }
}

/// Sends `reply` with source address `source` (IP_PKTINFO), falling back to
/// the kernel's choice of source when `source` cannot be used.
fn send_reply(socket: &StdUdpSocket, reply: &Reply, source: Ipv4Addr) -> std::io::Result<()> {
    let to = reply.destination();
    match send_from(socket.as_raw_fd(), reply.packet(), to, source) {
        Ok(_) => Ok(()),
        Err(e) => {
            debug!(%source, "cannot send DHCP reply from the server id ({e}); using the default source");
            socket
                .send_to(reply.packet(), SocketAddr::V4(to))
                .map(|_| ())
        }
    }
}

fn send_from(
    fd: std::os::fd::RawFd,
    packet: &[u8],
    to: SocketAddrV4,
    source: Ipv4Addr,
) -> std::io::Result<usize> {
    use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags, SockaddrIn};
    let info = libc::in_pktinfo {
        ipi_ifindex: 0,
        ipi_spec_dst: libc::in_addr {
            s_addr: u32::from(source).to_be(),
        },
        ipi_addr: libc::in_addr { s_addr: 0 },
    };
    let dest = SockaddrIn::from(to);
    let iov = [std::io::IoSlice::new(packet)];
    let cmsgs = [ControlMessage::Ipv4PacketInfo(&info)];
    sendmsg(fd, &iov, &cmsgs, MsgFlags::empty(), Some(&dest)).map_err(std::io::Error::from)
}
