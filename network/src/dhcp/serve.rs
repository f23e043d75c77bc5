//! The socket loop around [`handle`]: a few worker threads on one socket.
//!
//! Why threads and not tasks: every packet may call the lease book, which
//! blocks (a database read for the binding, a durable write before an ACK).
//! Handing each packet from a tokio task to the blocking pool and back costs
//! several thread wake-ups per packet, which dominated the profile at a few
//! thousand exchanges per second. Here one receiving thread (`dhcp-rx`)
//! reads the socket and answers DISCOVER and INFORM itself (only a binding
//! look-up: the OFFER leaves without any thread hand-off), and queues the
//! packets that make the book write (REQUEST, DECLINE, RELEASE) for
//! [`WORKERS`] threads, so up to that many commits are in flight and a book
//! can share one sync among them.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket as StdUdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::socket::sockopt;
use tokio::net::UdpSocket;
use tracing::{debug, error, info, warn};

use super::{handle, DhcpConfig, LeaseBook, Reply};

/// Worker threads per responder: REQUESTs handled at once (and commits in flight).
pub const WORKERS: usize = 64;
/// REQUESTs waiting for a worker before new ones are dropped.
const QUEUE: usize = 4096;
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
    // Packets that may write (REQUEST, DECLINE, RELEASE) go to the workers;
    // the receiver answers the rest itself.
    let (to_workers, queue) = std::sync::mpsc::sync_channel::<(Vec<u8>, SocketAddr)>(QUEUE);
    let queue = Arc::new(Mutex::new(queue));
    let mut started = 0;
    for n in 0..WORKERS {
        let (socket, cfg, book, queue) = (
            Arc::clone(&socket),
            Arc::clone(&cfg),
            Arc::clone(&book),
            Arc::clone(&queue),
        );
        let spawned = std::thread::Builder::new()
            .name(format!("dhcp-{n}"))
            .stack_size(WORKER_STACK)
            .spawn(move || worker(&socket, &cfg, &*book, &queue));
        match spawned {
            Ok(_) => started += 1,
            Err(e) => warn!("cannot start DHCP worker {n}: {e}"),
        }
    }
    let receiver = {
        let (socket, cfg, book, stop) = (
            Arc::clone(&socket),
            Arc::clone(&cfg),
            Arc::clone(&book),
            Arc::clone(&stop),
        );
        std::thread::Builder::new()
            .name("dhcp-rx".into())
            .stack_size(WORKER_STACK)
            .spawn(move || receive(&socket, &cfg, &*book, &stop, &to_workers, started > 0))
    };
    if let Err(e) = receiver {
        error!("cannot start the DHCP receiver: {e}");
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

/// The receiving thread: answers what needs no write at once (DISCOVER,
/// INFORM, and everything it drops), queues the rest for the workers. When
/// it ends (the responder stops), the queue's sender goes and the workers end.
fn receive(
    socket: &StdUdpSocket,
    cfg: &DhcpConfig,
    book: &dyn LeaseBook,
    stop: &AtomicBool,
    to_workers: &SyncSender<(Vec<u8>, SocketAddr)>,
    have_workers: bool,
) {
    let mut buf = vec![0u8; RECV_BUF];
    while !stop.load(Ordering::SeqCst) {
        let (len, from) = match socket.recv_from(&mut buf) {
            Ok(got) => got,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock
                        | std::io::ErrorKind::TimedOut
                        | std::io::ErrorKind::Interrupted
                ) =>
            {
                continue
            }
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
        let packet = &buf[..len];
        if have_workers && may_write(packet) {
            match to_workers.try_send((packet.to_vec(), from)) {
                Ok(()) => {}
                Err(TrySendError::Full(_)) => debug!(%from, "DHCP queue full: dropping a request"),
                Err(TrySendError::Disconnected(_)) => break,
            }
            continue;
        }
        answer(socket, cfg, book, packet, from);
    }
}

/// A worker: handles queued packets (whose commits may block) until the receiver goes.
fn worker(
    socket: &StdUdpSocket,
    cfg: &DhcpConfig,
    book: &dyn LeaseBook,
    queue: &Mutex<Receiver<(Vec<u8>, SocketAddr)>>,
) {
    loop {
        // One worker waits on the queue, the others on the lock.
        let next = match queue.lock() {
            Ok(q) => q.recv(),
            Err(_) => return,
        };
        let Ok((packet, from)) = next else {
            return;
        };
        answer(socket, cfg, book, &packet, from);
    }
}

fn answer(
    socket: &StdUdpSocket,
    cfg: &DhcpConfig,
    book: &dyn LeaseBook,
    packet: &[u8],
    from: SocketAddr,
) {
    if let Some(reply) = handle(cfg, book, packet) {
        if let Err(e) = send_reply(socket, &reply, cfg.server_id) {
            warn!(%from, to = %reply.destination(), "DHCP send failed: {e}");
        }
    }
}

/// Whether the lease book may write for this packet: a REQUEST (commit),
/// DECLINE or RELEASE, or a packet whose type cannot be told cheaply (option
/// 53 missing from the options field, e.g. under option overload). A look at
/// the options field only; [`handle`] does the real parsing.
fn may_write(packet: &[u8]) -> bool {
    const REQUEST: u8 = 3;
    const DECLINE: u8 = 4;
    const RELEASE: u8 = 7;
    let mut i = 240;
    while let Some(&code) = packet.get(i) {
        match code {
            0 => i += 1,
            255 => break,
            53 => {
                return match (packet.get(i + 1), packet.get(i + 2)) {
                    (Some(1), Some(t)) => matches!(*t, REQUEST | DECLINE | RELEASE),
                    _ => true,
                }
            }
            _ => match packet.get(i + 1) {
                Some(&len) => i += 2 + usize::from(len),
                None => break,
            },
        }
    }
    // Not a DHCP packet at all (too short: handle() drops it at once) or no type seen.
    packet.len() >= 240
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
