//! vmnode's DHCP responder.
//!
//! Every guest NIC gets its private address (DIP) from this responder, never
//! from a pool: the daemon decides each NIC's address when the NIC is created
//! and hands the responder a [`LeaseBook`] that maps MAC addresses to
//! [`Binding`]s. The responder answers only MACs the book knows, always with
//! the same address, like the cloud's host DHCP.
//!
//! The module has two halves:
//! * [`handle`], the pure protocol core: one request packet in, at most one
//!   reply (bytes and destination) out. It never panics, whatever the input.
//! * [`serve`], the socket loop around it.
//!
//! Replies carry the server identifier, DNS server and source address of the
//! platform address (`168.63.129.16` by default), a lease that is for all
//! practical purposes permanent, and T1/T2 at 1/2 and 7/8 of it.
//!
//! ## Parsing
//! Packets are decoded with `dhcproto` 0.12, but only after [`handle`] has
//! checked the fixed header itself and copied through only the options the
//! responder reads (53, 50, 54, 61, 55, 57, 12). dhcproto 0.12 can panic on
//! hostile input: some option decoders `debug_assert!` on wire lengths
//! (options 80, 81, 94, 152-155; e.g. option 94 with length 1), and
//! `Message::chaddr()` slices a 16-byte array by the wire `hlen`.
//!
//! ## Encoding
//! dhcproto keeps options in a `HashMap`, so its own encoder writes them in a
//! random order. Replies are encoded as a header with no options followed by
//! options written one by one in a fixed order (message type first), an End
//! option and padding up to the 300-byte BOOTP minimum.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::Duration;

use dhcproto::v4::{DhcpOption, HType, Message, MessageType, Opcode, OptionCode};
use dhcproto::{Decodable, Decoder, Encodable, Encoder};
use tokio::io::Interest;
use tokio::net::UdpSocket;
use tracing::{debug, error, info, warn};

use crate::addr::{prefix_mask, Mac};

/// The platform address: DHCP server identifier and DNS server seen by guests.
pub const PLATFORM_ADDR: Ipv4Addr = Ipv4Addr::new(168, 63, 129, 16);
/// UDP port of DHCP servers (and relay agents).
pub const SERVER_PORT: u16 = 67;
/// UDP port of DHCP clients.
pub const CLIENT_PORT: u16 = 68;
/// Default lease: ten years, long enough never to expire, short of the
/// "infinite" `0xffffffff` that some clients treat specially.
pub const DEFAULT_LEASE_SECS: u32 = 10 * 365 * 24 * 60 * 60;

/// Length of the fixed BOOTP header before the magic cookie.
const HEADER_LEN: usize = 236;
/// The DHCP magic cookie.
const MAGIC: [u8; 4] = [99, 130, 83, 99];
/// Smallest reply we send; RFC 1542 asks for at least 300 bytes for BOOTP relays and old clients.
const MIN_REPLY_LEN: usize = 300;
/// Option codes the responder reads; every other option is dropped before decoding.
const READ_OPTIONS: [u8; 7] = [53, 50, 54, 61, 55, 57, 12];
/// Receive buffer of the socket loop (a DHCP message fits in one Ethernet frame).
const RECV_BUF: usize = 4096;

/// Errors of this module. [`handle`] logs them instead of returning them.
#[derive(Debug, thiserror::Error)]
pub enum DhcpError {
    /// The packet is not a well-formed DHCP request.
    #[error("malformed packet: {0}")]
    Malformed(&'static str),
    /// dhcproto rejected the packet.
    #[error("cannot decode packet: {0}")]
    Decode(String),
    /// dhcproto could not encode a reply.
    #[error("cannot encode reply: {0}")]
    Encode(String),
    /// The lease book returned a binding that cannot be put in a reply.
    #[error("invalid binding for {mac}: {reason}")]
    InvalidBinding {
        /// The NIC.
        mac: Mac,
        /// What is wrong.
        reason: String,
    },
    /// The lease book failed to record a lease; no ACK was sent.
    #[error("lease book failed to commit {ip} for {mac}: {reason}")]
    Commit {
        /// The NIC.
        mac: Mac,
        /// The address that was being committed.
        ip: Ipv4Addr,
        /// The book's error.
        reason: String,
    },
    /// Socket error in the serve loop.
    #[error("socket error: {0}")]
    Io(#[from] std::io::Error),
}

/// Responder settings shared by all NICs of a network.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DhcpConfig {
    /// Server identifier (option 54) and reply source address: the platform address.
    pub server_id: Ipv4Addr,
    /// DNS servers (option 6); none sends no option 6.
    pub dns: Vec<Ipv4Addr>,
    /// Lease time in seconds (option 51); T1 and T2 are derived from it.
    pub lease_secs: u32,
}

impl Default for DhcpConfig {
    fn default() -> Self {
        Self {
            server_id: PLATFORM_ADDR,
            dns: vec![PLATFORM_ADDR],
            lease_secs: DEFAULT_LEASE_SECS,
        }
    }
}

/// What one NIC gets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Binding {
    /// The NIC's private address.
    pub ip: Ipv4Addr,
    /// Prefix length of the subnet (option 1 is derived from it).
    pub prefix: u8,
    /// Default gateway (option 3).
    pub router: Ipv4Addr,
    /// Host name (option 12); empty sends no option 12.
    pub hostname: String,
    /// DNS domain (option 15), e.g. `abc.internal.cloudapp.net`; empty sends no option 15.
    pub domain: String,
}

/// Supplied by the daemon: knows which MACs are NICs, and stores leases durably.
pub trait LeaseBook: Send + Sync {
    /// The binding of a NIC, or `None` when the MAC is not a NIC of this network.
    fn binding(&self, mac: &Mac) -> Option<Binding>;
    /// Records that `mac` holds `ip`. It MUST be durable when it returns `Ok`:
    /// it is called before the ACK is sent, and an error means no ACK.
    fn commit(&self, mac: &Mac, ip: Ipv4Addr) -> Result<(), String>;
    /// The client gave the lease back (DHCPRELEASE). Only called for a known
    /// MAC releasing the address of its binding.
    fn release(&self, mac: &Mac, ip: Ipv4Addr);
}

/// A reply to send: its bytes and where to (RFC 2131 §4.1).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    /// To `255.255.255.255:68` on the network's bridge.
    Broadcast {
        /// The encoded DHCP message.
        packet: Vec<u8>,
    },
    /// To `ciaddr:68` (a configured client), or `giaddr:67` (a relay agent).
    Unicast {
        /// The encoded DHCP message.
        packet: Vec<u8>,
        /// Destination address and port.
        to: SocketAddrV4,
    },
}

impl Reply {
    /// The encoded DHCP message.
    pub fn packet(&self) -> &[u8] {
        match self {
            Reply::Broadcast { packet } | Reply::Unicast { packet, .. } => packet,
        }
    }

    /// Where the reply goes.
    pub fn destination(&self) -> SocketAddrV4 {
        match self {
            Reply::Broadcast { .. } => SocketAddrV4::new(Ipv4Addr::BROADCAST, CLIENT_PORT),
            Reply::Unicast { to, .. } => *to,
        }
    }
}

/// Answers one DHCP packet.
///
/// Returns `None` when nothing is to be sent: the packet is malformed, not a
/// request, from a MAC the book does not know, a RELEASE or DECLINE, meant
/// for another server, or the book failed to commit the lease. Never panics.
pub fn handle(cfg: &DhcpConfig, book: &dyn LeaseBook, packet: &[u8]) -> Option<Reply> {
    match respond(cfg, book, packet) {
        Ok(reply) => reply,
        Err(e @ (DhcpError::Malformed(_) | DhcpError::Decode(_))) => {
            debug!(len = packet.len(), "dropping DHCP packet: {e}");
            None
        }
        Err(e) => {
            error!("no DHCP reply: {e}");
            None
        }
    }
}

/// Runs the responder on `socket` until the task is aborted.
///
/// The socket should come from [`crate::plumbing::udp_socket_in_ns`] (bound to
/// `0.0.0.0:67` on the network's bridge, broadcast allowed). Each packet is
/// handled on tokio's blocking pool, since [`LeaseBook::commit`] writes to
/// durable storage. Replies are sent with the server identifier as source
/// address when that address is on the bridge. An error on one packet is
/// logged and the loop goes on.
pub async fn serve(socket: UdpSocket, cfg: DhcpConfig, book: Arc<dyn LeaseBook>) {
    let cfg = Arc::new(cfg);
    let mut buf = vec![0u8; RECV_BUF];
    info!(local = ?socket.local_addr().ok(), server_id = %cfg.server_id, "DHCP responder running");
    loop {
        let (len, from) = match socket.recv_from(&mut buf).await {
            Ok(got) => got,
            Err(e) => {
                warn!("DHCP receive failed: {e}");
                // Do not spin on a persistent error.
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let packet = buf[..len].to_vec();
        let (task_cfg, task_book) = (Arc::clone(&cfg), Arc::clone(&book));
        let reply = match tokio::task::spawn_blocking(move || {
            handle(&task_cfg, &*task_book, &packet)
        })
        .await
        {
            Ok(reply) => reply,
            Err(e) => {
                error!(%from, "DHCP handler failed: {e}");
                continue;
            }
        };
        if let Some(reply) = reply {
            if let Err(e) = send_reply(&socket, &reply, cfg.server_id).await {
                warn!(to = %reply.destination(), "DHCP send failed: {e}");
            }
        }
    }
}

/// Sends `reply` with source address `source` (IP_PKTINFO), falling back to
/// the kernel's choice of source when `source` cannot be used.
async fn send_reply(socket: &UdpSocket, reply: &Reply, source: Ipv4Addr) -> Result<(), DhcpError> {
    let to = reply.destination();
    let with_source = socket
        .async_io(Interest::WRITABLE, || {
            send_from(socket.as_raw_fd(), reply.packet(), to, source)
        })
        .await;
    match with_source {
        Ok(_) => Ok(()),
        Err(e) => {
            debug!(%source, "cannot send DHCP reply from the server id ({e}); using the default source");
            socket.send_to(reply.packet(), SocketAddr::V4(to)).await?;
            Ok(())
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

/// The protocol core behind [`handle`], with errors.
fn respond(
    cfg: &DhcpConfig,
    book: &dyn LeaseBook,
    packet: &[u8],
) -> Result<Option<Reply>, DhcpError> {
    let clean = sanitize(packet)?;
    let req =
        Message::decode(&mut Decoder::new(&clean)).map_err(|e| DhcpError::Decode(e.to_string()))?;
    let mac = Mac::new(chaddr6(&clean));
    let msg_type = req
        .opts()
        .msg_type()
        .ok_or(DhcpError::Malformed("no message type"))?;

    let Some(binding) = book.binding(&mac) else {
        debug!(%mac, ?msg_type, "ignoring DHCP from a MAC that is not a NIC");
        return Ok(None);
    };
    let server_id = match req.opts().get(OptionCode::ServerIdentifier) {
        Some(DhcpOption::ServerIdentifier(ip)) => Some(*ip),
        _ => None,
    };
    let requested = match req.opts().get(OptionCode::RequestedIpAddress) {
        Some(DhcpOption::RequestedIpAddress(ip)) => Some(*ip),
        _ => None,
    };

    match msg_type {
        MessageType::Discover => {
            debug!(%mac, ip = %binding.ip, "DHCPDISCOVER -> OFFER");
            reply(cfg, &req, &mac, &binding, Kind::Offer).map(Some)
        }
        MessageType::Request => {
            if let Some(sid) = server_id {
                // SELECTING: the client names the server whose offer it takes.
                if sid != cfg.server_id {
                    debug!(%mac, server = %sid, "client selected another DHCP server");
                    return Ok(None);
                }
                if requested != Some(binding.ip) {
                    info!(%mac, ?requested, ip = %binding.ip, "DHCPREQUEST for a wrong address -> NAK");
                    return nak(cfg, &req, &mac).map(Some);
                }
            } else {
                // INIT-REBOOT (requested-ip), RENEWING/REBINDING (ciaddr).
                let ciaddr = nonzero(req.ciaddr());
                let Some(asked) = requested.or(ciaddr) else {
                    info!(%mac, "DHCPREQUEST without an address -> NAK");
                    return nak(cfg, &req, &mac).map(Some);
                };
                if asked != binding.ip || ciaddr.is_some_and(|c| c != binding.ip) {
                    info!(%mac, %asked, ip = %binding.ip, "DHCPREQUEST for a wrong address -> NAK");
                    return nak(cfg, &req, &mac).map(Some);
                }
            }
            // Build the ACK first so a bad binding does not commit a lease it cannot serve.
            let ack = reply(cfg, &req, &mac, &binding, Kind::Ack)?;
            book.commit(&mac, binding.ip)
                .map_err(|reason| DhcpError::Commit {
                    mac,
                    ip: binding.ip,
                    reason,
                })?;
            info!(%mac, ip = %binding.ip, "DHCPREQUEST -> ACK");
            Ok(Some(ack))
        }
        MessageType::Inform => {
            debug!(%mac, "DHCPINFORM -> ACK");
            reply(cfg, &req, &mac, &binding, Kind::InformAck).map(Some)
        }
        MessageType::Release => {
            if server_id.is_some_and(|sid| sid != cfg.server_id) {
                debug!(%mac, "DHCPRELEASE for another server");
            } else if req.ciaddr() == binding.ip {
                info!(%mac, ip = %binding.ip, "DHCPRELEASE");
                book.release(&mac, binding.ip);
            } else {
                debug!(%mac, ciaddr = %req.ciaddr(), "DHCPRELEASE of an address the NIC does not hold");
            }
            Ok(None)
        }
        MessageType::Decline => {
            warn!(%mac, ?requested, "guest declined its address (in use on the link?)");
            Ok(None)
        }
        other => {
            debug!(%mac, ?other, "ignoring DHCP message type");
            Ok(None)
        }
    }
}

/// Checks the fixed part of a request and returns a copy with only the
/// options in [`READ_OPTIONS`], so dhcproto decodes nothing it could panic on.
fn sanitize(packet: &[u8]) -> Result<Vec<u8>, DhcpError> {
    let options_at = HEADER_LEN + MAGIC.len();
    if packet.len() < options_at {
        return Err(DhcpError::Malformed("shorter than a BOOTP header"));
    }
    if packet[0] != 1 {
        return Err(DhcpError::Malformed("not a BOOTREQUEST"));
    }
    if packet[1] != 1 || packet[2] != 6 {
        return Err(DhcpError::Malformed("hardware is not Ethernet"));
    }
    if packet[HEADER_LEN..options_at] != MAGIC {
        return Err(DhcpError::Malformed("no DHCP magic cookie"));
    }
    let mut out = packet[..options_at].to_vec();
    let mut i = options_at;
    while i < packet.len() {
        match packet[i] {
            0 => i += 1,
            255 => break,
            code => {
                let len = usize::from(
                    *packet
                        .get(i + 1)
                        .ok_or(DhcpError::Malformed("option without length"))?,
                );
                let end = i + 2 + len;
                let whole = packet
                    .get(i..end)
                    .ok_or(DhcpError::Malformed("truncated option"))?;
                if READ_OPTIONS.contains(&code) {
                    out.extend_from_slice(whole);
                }
                i = end;
            }
        }
    }
    out.push(255);
    Ok(out)
}

/// The first six bytes of `chaddr` (the header was checked to be Ethernet).
fn chaddr6(packet: &[u8]) -> [u8; 6] {
    let mut mac = [0u8; 6];
    if let Some(bytes) = packet.get(28..34) {
        mac.copy_from_slice(bytes);
    }
    mac
}

fn nonzero(ip: Ipv4Addr) -> Option<Ipv4Addr> {
    (!ip.is_unspecified()).then_some(ip)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Offer,
    Ack,
    InformAck,
}

/// An OFFER or ACK carrying the binding.
fn reply(
    cfg: &DhcpConfig,
    req: &Message,
    mac: &Mac,
    binding: &Binding,
    kind: Kind,
) -> Result<Reply, DhcpError> {
    if binding.prefix > 32 {
        return Err(DhcpError::InvalidBinding {
            mac: *mac,
            reason: format!("prefix /{} is longer than 32", binding.prefix),
        });
    }
    let mut msg = reply_header(req, mac);
    msg.set_ciaddr(if kind == Kind::Offer {
        Ipv4Addr::UNSPECIFIED
    } else {
        req.ciaddr()
    });
    // RFC 2131 table 3: an ACK to an INFORM carries no address.
    msg.set_yiaddr(if kind == Kind::InformAck {
        Ipv4Addr::UNSPECIFIED
    } else {
        binding.ip
    });

    let mut opts = vec![
        DhcpOption::MessageType(if kind == Kind::Offer {
            MessageType::Offer
        } else {
            MessageType::Ack
        }),
        DhcpOption::ServerIdentifier(cfg.server_id),
    ];
    if kind != Kind::InformAck {
        let lease = u64::from(cfg.lease_secs);
        opts.push(DhcpOption::AddressLeaseTime(cfg.lease_secs));
        // Both are below the lease, so they fit in u32.
        opts.push(DhcpOption::Renewal(
            u32::try_from(lease / 2).unwrap_or(u32::MAX),
        ));
        opts.push(DhcpOption::Rebinding(
            u32::try_from(lease * 7 / 8).unwrap_or(u32::MAX),
        ));
    }
    opts.push(DhcpOption::SubnetMask(Ipv4Addr::from(prefix_mask(
        binding.prefix,
    ))));
    opts.push(DhcpOption::Router(vec![binding.router]));
    if !cfg.dns.is_empty() {
        opts.push(DhcpOption::DomainNameServer(cfg.dns.clone()));
    }
    if !binding.hostname.is_empty() {
        opts.push(DhcpOption::Hostname(binding.hostname.clone()));
    }
    if !binding.domain.is_empty() {
        opts.push(DhcpOption::DomainName(binding.domain.clone()));
    }
    let packet = encode(&msg, &opts)?;
    Ok(address(req, packet, false))
}

/// A NAK: the client must start over.
fn nak(cfg: &DhcpConfig, req: &Message, mac: &Mac) -> Result<Reply, DhcpError> {
    let mut msg = reply_header(req, mac);
    if !req.giaddr().is_unspecified() {
        // RFC 2131 §4.1: the relay must broadcast a NAK to the client.
        msg.set_flags(req.flags().set_broadcast());
    }
    let opts = [
        DhcpOption::MessageType(MessageType::Nak),
        DhcpOption::ServerIdentifier(cfg.server_id),
    ];
    let packet = encode(&msg, &opts)?;
    Ok(address(req, packet, true))
}

/// BOOTREPLY with the request's xid, flags, giaddr and chaddr; everything else zero.
fn reply_header(req: &Message, mac: &Mac) -> Message {
    let mut msg = Message::default();
    msg.set_opcode(Opcode::BootReply)
        .set_htype(HType::Eth)
        .set_hops(0)
        .set_xid(req.xid())
        .set_secs(0)
        .set_flags(req.flags())
        .set_ciaddr(Ipv4Addr::UNSPECIFIED)
        .set_yiaddr(Ipv4Addr::UNSPECIFIED)
        .set_siaddr(Ipv4Addr::UNSPECIFIED)
        .set_giaddr(req.giaddr())
        .set_chaddr(&mac.octets());
    msg
}

/// Header, then `opts` in order, End, and padding to [`MIN_REPLY_LEN`].
fn encode(msg: &Message, opts: &[DhcpOption]) -> Result<Vec<u8>, DhcpError> {
    let mut buf = Vec::with_capacity(MIN_REPLY_LEN + 64);
    let mut enc = Encoder::new(&mut buf);
    // With no options dhcproto writes the header and magic cookie only.
    let mut header = msg.clone();
    header.opts_mut().clear();
    header
        .encode(&mut enc)
        .map_err(|e| DhcpError::Encode(e.to_string()))?;
    for opt in opts.iter().chain(std::iter::once(&DhcpOption::End)) {
        opt.encode(&mut enc)
            .map_err(|e| DhcpError::Encode(e.to_string()))?;
    }
    if buf.len() < MIN_REPLY_LEN {
        buf.resize(MIN_REPLY_LEN, 0);
    }
    Ok(buf)
}

/// Destination per RFC 2131 §4.1. We cannot unicast to a client without an
/// address (that needs an ARP entry injected), so those replies are broadcast.
fn address(req: &Message, packet: Vec<u8>, is_nak: bool) -> Reply {
    if let Some(relay) = nonzero(req.giaddr()) {
        Reply::Unicast {
            packet,
            to: SocketAddrV4::new(relay, SERVER_PORT),
        }
    } else if let (false, Some(client)) = (is_nak, nonzero(req.ciaddr())) {
        Reply::Unicast {
            packet,
            to: SocketAddrV4::new(client, CLIENT_PORT),
        }
    } else {
        Reply::Broadcast { packet }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dhcproto::v4::Flags;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};
    use std::collections::HashMap;
    use std::sync::Mutex;

    const MAC: Mac = Mac::new([0x00, 0x0d, 0x3a, 0x01, 0x02, 0x03]);
    const OTHER_MAC: Mac = Mac::new([0x00, 0x0d, 0x3a, 0x09, 0x09, 0x09]);

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    fn binding() -> Binding {
        Binding {
            ip: ip("10.1.0.4"),
            prefix: 24,
            router: ip("10.1.0.1"),
            hostname: "vm1".into(),
            domain: "abc.internal.cloudapp.net".into(),
        }
    }

    #[derive(Debug, PartialEq)]
    enum Event {
        Commit(Mac, Ipv4Addr),
        Release(Mac, Ipv4Addr),
    }

    #[derive(Default)]
    struct Book {
        nics: HashMap<Mac, Binding>,
        fail_commit: bool,
        events: Mutex<Vec<Event>>,
    }

    impl Book {
        fn with_nic() -> Self {
            let mut b = Self::default();
            b.nics.insert(MAC, binding());
            b
        }
        fn events(&self) -> Vec<Event> {
            std::mem::take(&mut *self.events.lock().unwrap())
        }
    }

    impl LeaseBook for Book {
        fn binding(&self, mac: &Mac) -> Option<Binding> {
            self.nics.get(mac).cloned()
        }
        fn commit(&self, mac: &Mac, ip: Ipv4Addr) -> Result<(), String> {
            if self.fail_commit {
                return Err("disk full".into());
            }
            self.events.lock().unwrap().push(Event::Commit(*mac, ip));
            Ok(())
        }
        fn release(&self, mac: &Mac, ip: Ipv4Addr) {
            self.events.lock().unwrap().push(Event::Release(*mac, ip));
        }
    }

    fn cfg() -> DhcpConfig {
        DhcpConfig::default()
    }

    fn request(mac: Mac, kind: MessageType) -> Message {
        let mut m = Message::new_with_id(
            0xdead_beef,
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::UNSPECIFIED,
            &mac.octets(),
        );
        m.set_flags(Flags::new(0x8000));
        m.opts_mut().insert(DhcpOption::MessageType(kind));
        m.opts_mut().insert(DhcpOption::ParameterRequestList(vec![
            OptionCode::SubnetMask,
            OptionCode::Router,
            OptionCode::DomainNameServer,
            OptionCode::Hostname,
            OptionCode::DomainName,
        ]));
        m
    }

    fn bytes(m: &Message) -> Vec<u8> {
        let mut buf = Vec::new();
        m.encode(&mut Encoder::new(&mut buf)).unwrap();
        buf
    }

    fn run(book: &Book, m: &Message) -> Option<Reply> {
        handle(&cfg(), book, &bytes(m))
    }

    fn decode(r: &Reply) -> Message {
        Message::decode(&mut Decoder::new(r.packet())).unwrap()
    }

    fn selecting(mac: Mac, requested: Ipv4Addr, server: Ipv4Addr) -> Message {
        let mut m = request(mac, MessageType::Request);
        m.opts_mut()
            .insert(DhcpOption::RequestedIpAddress(requested));
        m.opts_mut().insert(DhcpOption::ServerIdentifier(server));
        m
    }

    /// Checks every field and option an OFFER or ACK must carry.
    fn assert_lease_reply(reply: &Reply, want: MessageType) {
        let p = reply.packet();
        assert!(p.len() >= MIN_REPLY_LEN);
        // Fixed order: message type is the first option.
        assert_eq!(&p[240..243], &[53, 1, u8::from(want)]);
        let m = decode(reply);
        assert_eq!(m.opcode(), Opcode::BootReply);
        assert_eq!(m.htype(), HType::Eth);
        assert_eq!(m.xid(), 0xdead_beef);
        assert!(m.flags().broadcast());
        assert_eq!(m.chaddr(), &MAC.octets());
        assert_eq!(m.yiaddr(), ip("10.1.0.4"));
        assert_eq!(m.siaddr(), Ipv4Addr::UNSPECIFIED);
        assert_eq!(m.giaddr(), Ipv4Addr::UNSPECIFIED);
        let o = m.opts();
        assert_eq!(o.msg_type(), Some(want));
        let get = |c| o.get(c).cloned();
        assert_eq!(
            get(OptionCode::SubnetMask),
            Some(DhcpOption::SubnetMask(ip("255.255.255.0")))
        );
        assert_eq!(
            get(OptionCode::Router),
            Some(DhcpOption::Router(vec![ip("10.1.0.1")]))
        );
        assert_eq!(
            get(OptionCode::DomainNameServer),
            Some(DhcpOption::DomainNameServer(vec![PLATFORM_ADDR]))
        );
        assert_eq!(
            get(OptionCode::Hostname),
            Some(DhcpOption::Hostname("vm1".into()))
        );
        assert_eq!(
            get(OptionCode::DomainName),
            Some(DhcpOption::DomainName("abc.internal.cloudapp.net".into()))
        );
        assert_eq!(
            get(OptionCode::AddressLeaseTime),
            Some(DhcpOption::AddressLeaseTime(DEFAULT_LEASE_SECS))
        );
        assert_eq!(
            get(OptionCode::ServerIdentifier),
            Some(DhcpOption::ServerIdentifier(PLATFORM_ADDR))
        );
        assert_eq!(
            get(OptionCode::Renewal),
            Some(DhcpOption::Renewal(DEFAULT_LEASE_SECS / 2))
        );
        assert_eq!(
            get(OptionCode::Rebinding),
            Some(DhcpOption::Rebinding(
                (u64::from(DEFAULT_LEASE_SECS) * 7 / 8) as u32
            ))
        );
        assert_eq!(o.len(), 10, "unexpected options: {o:?}");
    }

    fn assert_nak(reply: &Reply) {
        let m = decode(reply);
        assert_eq!(m.opts().msg_type(), Some(MessageType::Nak));
        assert_eq!(m.yiaddr(), Ipv4Addr::UNSPECIFIED);
        assert_eq!(m.xid(), 0xdead_beef);
        assert_eq!(m.chaddr(), &MAC.octets());
        assert_eq!(
            m.opts().get(OptionCode::ServerIdentifier),
            Some(&DhcpOption::ServerIdentifier(PLATFORM_ADDR))
        );
        assert!(m.opts().get(OptionCode::AddressLeaseTime).is_none());
    }

    #[test]
    fn discover_gets_offer() {
        let book = Book::with_nic();
        let reply = run(&book, &request(MAC, MessageType::Discover)).unwrap();
        assert!(matches!(reply, Reply::Broadcast { .. }));
        assert_eq!(
            reply.destination(),
            SocketAddrV4::new(Ipv4Addr::BROADCAST, 68)
        );
        assert_lease_reply(&reply, MessageType::Offer);
        assert_eq!(decode(&reply).ciaddr(), Ipv4Addr::UNSPECIFIED);
        assert!(book.events().is_empty(), "an OFFER commits nothing");
    }

    #[test]
    fn selecting_request_commits_then_acks() {
        let book = Book::with_nic();
        let reply = run(&book, &selecting(MAC, ip("10.1.0.4"), PLATFORM_ADDR)).unwrap();
        assert_eq!(book.events(), vec![Event::Commit(MAC, ip("10.1.0.4"))]);
        assert!(matches!(reply, Reply::Broadcast { .. }));
        assert_lease_reply(&reply, MessageType::Ack);
    }

    #[test]
    fn commit_failure_means_no_ack() {
        let mut book = Book::with_nic();
        book.fail_commit = true;
        assert!(run(&book, &selecting(MAC, ip("10.1.0.4"), PLATFORM_ADDR)).is_none());
        let mut renew = request(MAC, MessageType::Request);
        renew.set_ciaddr(ip("10.1.0.4"));
        assert!(run(&book, &renew).is_none());
        // An OFFER does not need the book to write anything.
        assert!(run(&book, &request(MAC, MessageType::Discover)).is_some());
    }

    #[test]
    fn selecting_wrong_address_is_nak() {
        let book = Book::with_nic();
        let reply = run(&book, &selecting(MAC, ip("10.1.0.5"), PLATFORM_ADDR)).unwrap();
        assert_nak(&reply);
        assert!(matches!(reply, Reply::Broadcast { .. }));
        // Selecting without a requested address.
        let mut m = request(MAC, MessageType::Request);
        m.opts_mut()
            .insert(DhcpOption::ServerIdentifier(PLATFORM_ADDR));
        assert_nak(&run(&book, &m).unwrap());
        assert!(book.events().is_empty());
    }

    #[test]
    fn selecting_another_server_is_ignored() {
        let book = Book::with_nic();
        assert!(run(&book, &selecting(MAC, ip("10.1.0.4"), ip("10.9.9.9"))).is_none());
        assert!(book.events().is_empty());
    }

    #[test]
    fn init_reboot() {
        let book = Book::with_nic();
        let mut m = request(MAC, MessageType::Request);
        m.opts_mut()
            .insert(DhcpOption::RequestedIpAddress(ip("10.1.0.4")));
        let reply = run(&book, &m).unwrap();
        assert_lease_reply(&reply, MessageType::Ack);
        assert_eq!(book.events(), vec![Event::Commit(MAC, ip("10.1.0.4"))]);

        let mut wrong = request(MAC, MessageType::Request);
        wrong
            .opts_mut()
            .insert(DhcpOption::RequestedIpAddress(ip("192.168.1.50")));
        assert_nak(&run(&book, &wrong).unwrap());
        assert!(book.events().is_empty());
    }

    #[test]
    fn renew_is_unicast_to_ciaddr() {
        let book = Book::with_nic();
        let mut m = request(MAC, MessageType::Request);
        m.set_ciaddr(ip("10.1.0.4"));
        let reply = run(&book, &m).unwrap();
        assert_eq!(
            reply,
            Reply::Unicast {
                packet: reply.packet().to_vec(),
                to: SocketAddrV4::new(ip("10.1.0.4"), 68)
            }
        );
        assert_lease_reply(&reply, MessageType::Ack);
        assert_eq!(decode(&reply).ciaddr(), ip("10.1.0.4"));
        assert_eq!(book.events(), vec![Event::Commit(MAC, ip("10.1.0.4"))]);
    }

    #[test]
    fn renew_wrong_address_is_broadcast_nak() {
        let book = Book::with_nic();
        let mut m = request(MAC, MessageType::Request);
        m.set_ciaddr(ip("10.1.0.9"));
        let reply = run(&book, &m).unwrap();
        assert_nak(&reply);
        assert!(matches!(reply, Reply::Broadcast { .. }));
        // Requested-ip right but ciaddr wrong.
        m.opts_mut()
            .insert(DhcpOption::RequestedIpAddress(ip("10.1.0.4")));
        assert_nak(&run(&book, &m).unwrap());
        // Neither requested-ip nor ciaddr.
        assert_nak(&run(&book, &request(MAC, MessageType::Request)).unwrap());
        assert!(book.events().is_empty());
    }

    #[test]
    fn relayed_replies_go_to_giaddr() {
        let book = Book::with_nic();
        let mut m = request(MAC, MessageType::Discover);
        m.set_giaddr(ip("10.1.0.250"));
        m.set_flags(Flags::new(0));
        let reply = run(&book, &m).unwrap();
        assert_eq!(reply.destination(), SocketAddrV4::new(ip("10.1.0.250"), 67));
        let offer = decode(&reply);
        assert_eq!(offer.giaddr(), ip("10.1.0.250"));
        assert!(!offer.flags().broadcast(), "flags are copied");

        let mut bad = selecting(MAC, ip("10.1.0.77"), PLATFORM_ADDR);
        bad.set_giaddr(ip("10.1.0.250"));
        bad.set_flags(Flags::new(0));
        let nak = run(&book, &bad).unwrap();
        assert_eq!(nak.destination(), SocketAddrV4::new(ip("10.1.0.250"), 67));
        assert!(
            decode(&nak).flags().broadcast(),
            "relay must broadcast a NAK"
        );
    }

    #[test]
    fn unknown_mac_is_ignored() {
        let book = Book::with_nic();
        for kind in [
            MessageType::Discover,
            MessageType::Request,
            MessageType::Inform,
            MessageType::Release,
        ] {
            let mut m = request(OTHER_MAC, kind);
            m.set_ciaddr(ip("10.1.0.4"));
            assert!(run(&book, &m).is_none(), "{kind:?}");
            assert!(run(&book, &selecting(OTHER_MAC, ip("10.1.0.4"), PLATFORM_ADDR)).is_none());
        }
        assert!(book.events().is_empty());
    }

    #[test]
    fn release_calls_book() {
        let book = Book::with_nic();
        let mut m = request(MAC, MessageType::Release);
        m.set_ciaddr(ip("10.1.0.4"));
        m.opts_mut()
            .insert(DhcpOption::ServerIdentifier(PLATFORM_ADDR));
        assert!(run(&book, &m).is_none());
        assert_eq!(book.events(), vec![Event::Release(MAC, ip("10.1.0.4"))]);
        // Releasing an address the NIC does not hold, or to another server: nothing.
        m.set_ciaddr(ip("10.1.0.8"));
        assert!(run(&book, &m).is_none());
        m.set_ciaddr(ip("10.1.0.4"));
        m.opts_mut()
            .insert(DhcpOption::ServerIdentifier(ip("1.2.3.4")));
        assert!(run(&book, &m).is_none());
        assert!(book.events().is_empty());
    }

    #[test]
    fn inform_gets_ack_without_lease() {
        let book = Book::with_nic();
        let mut m = request(MAC, MessageType::Inform);
        m.set_ciaddr(ip("10.1.0.4"));
        let reply = run(&book, &m).unwrap();
        assert_eq!(reply.destination(), SocketAddrV4::new(ip("10.1.0.4"), 68));
        let ack = decode(&reply);
        assert_eq!(ack.opts().msg_type(), Some(MessageType::Ack));
        assert_eq!(ack.yiaddr(), Ipv4Addr::UNSPECIFIED);
        assert_eq!(ack.ciaddr(), ip("10.1.0.4"));
        for absent in [
            OptionCode::AddressLeaseTime,
            OptionCode::Renewal,
            OptionCode::Rebinding,
        ] {
            assert!(ack.opts().get(absent).is_none(), "{absent:?}");
        }
        for present in [
            OptionCode::SubnetMask,
            OptionCode::Router,
            OptionCode::DomainNameServer,
            OptionCode::Hostname,
            OptionCode::DomainName,
            OptionCode::ServerIdentifier,
        ] {
            assert!(ack.opts().get(present).is_some(), "{present:?}");
        }
        assert!(book.events().is_empty(), "INFORM commits nothing");
    }

    #[test]
    fn decline_and_server_messages_get_nothing() {
        let book = Book::with_nic();
        for kind in [
            MessageType::Decline,
            MessageType::Offer,
            MessageType::Ack,
            MessageType::Nak,
            MessageType::Unknown(200),
        ] {
            assert!(run(&book, &request(MAC, kind)).is_none(), "{kind:?}");
        }
        // A BOOTREPLY is never answered.
        let mut m = request(MAC, MessageType::Discover);
        m.set_opcode(Opcode::BootReply);
        assert!(run(&book, &m).is_none());
        // No message type at all (plain BOOTP).
        let mut bootp = request(MAC, MessageType::Discover);
        bootp.opts_mut().remove(OptionCode::MessageType);
        assert!(run(&book, &bootp).is_none());
    }

    #[test]
    fn config_and_binding_variants() {
        let mut book = Book::default();
        book.nics.insert(
            MAC,
            Binding {
                ip: ip("172.16.5.20"),
                prefix: 20,
                router: ip("172.16.0.1"),
                hostname: String::new(),
                domain: String::new(),
            },
        );
        let cfg = DhcpConfig {
            server_id: ip("172.16.0.1"),
            dns: vec![],
            lease_secs: 0xffff_ffff,
        };
        let reply = handle(&cfg, &book, &bytes(&request(MAC, MessageType::Discover))).unwrap();
        let o = decode(&reply);
        let opts = o.opts();
        assert_eq!(
            opts.get(OptionCode::SubnetMask),
            Some(&DhcpOption::SubnetMask(ip("255.255.240.0")))
        );
        assert!(opts.get(OptionCode::DomainNameServer).is_none());
        assert!(opts.get(OptionCode::Hostname).is_none());
        assert!(opts.get(OptionCode::DomainName).is_none());
        assert_eq!(
            opts.get(OptionCode::Renewal),
            Some(&DhcpOption::Renewal(0x7fff_ffff))
        );
        assert_eq!(
            opts.get(OptionCode::Rebinding),
            Some(&DhcpOption::Rebinding(0xdfff_ffff))
        );
        assert_eq!(
            opts.get(OptionCode::ServerIdentifier),
            Some(&DhcpOption::ServerIdentifier(ip("172.16.0.1")))
        );
        // A binding that cannot be encoded is refused, and never committed.
        book.nics.get_mut(&MAC).unwrap().prefix = 40;
        assert!(handle(&cfg, &book, &bytes(&request(MAC, MessageType::Discover))).is_none());
        let sel = selecting(MAC, ip("172.16.5.20"), ip("172.16.0.1"));
        assert!(handle(&cfg, &book, &bytes(&sel)).is_none());
        assert!(book.events().is_empty());
    }

    #[test]
    fn options_the_responder_does_not_read_are_tolerated() {
        let book = Book::with_nic();
        let mut raw = bytes(&request(MAC, MessageType::Discover));
        // Replace the End option with hostile ones dhcproto 0.12 would
        // debug_assert on (94 with len 1, 80 with len 2), pads, then End.
        assert_eq!(raw.pop(), Some(255));
        raw.extend_from_slice(&[94, 1, 7, 0, 0, 151, 0, 80, 2, 1, 1, 255]);
        assert_lease_reply(&handle(&cfg(), &book, &raw).unwrap(), MessageType::Offer);
        // Options after End are ignored, even truncated ones.
        raw.extend_from_slice(&[12, 200, b'x']);
        assert!(handle(&cfg(), &book, &raw).is_some());
        // A truncated option before End makes the packet malformed.
        let mut trunc = bytes(&request(MAC, MessageType::Discover));
        trunc.pop();
        trunc.extend_from_slice(&[12, 10, b'a']);
        assert!(handle(&cfg(), &book, &trunc).is_none());
    }

    #[test]
    fn header_checks() {
        let book = Book::with_nic();
        let good = bytes(&request(MAC, MessageType::Discover));
        assert!(handle(&cfg(), &book, &good).is_some());
        let mut bad_hlen = good.clone();
        bad_hlen[2] = 200; // dhcproto's chaddr() would slice out of bounds
        assert!(handle(&cfg(), &book, &bad_hlen).is_none());
        let mut bad_htype = good.clone();
        bad_htype[1] = 6;
        assert!(handle(&cfg(), &book, &bad_htype).is_none());
        let mut bad_magic = good.clone();
        bad_magic[236] = 0;
        assert!(handle(&cfg(), &book, &bad_magic).is_none());
        for n in [0, 1, 100, 239] {
            assert!(handle(&cfg(), &book, &good[..n]).is_none());
        }
        // Header plus cookie and no options at all: no message type.
        assert!(handle(&cfg(), &book, &good[..240]).is_none());
    }

    #[test]
    fn random_and_mutated_input_never_panics() {
        let book = Book::with_nic();
        let mut rng = StdRng::seed_from_u64(0xd4c9);
        let seeds: Vec<Vec<u8>> = [
            request(MAC, MessageType::Discover),
            selecting(MAC, ip("10.1.0.4"), PLATFORM_ADDR),
            {
                let mut m = request(MAC, MessageType::Request);
                m.set_ciaddr(ip("10.1.0.4"));
                m
            },
            {
                let mut m = request(MAC, MessageType::Inform);
                m.set_ciaddr(ip("10.1.0.4"));
                m
            },
            request(MAC, MessageType::Release),
        ]
        .iter()
        .map(bytes)
        .collect();
        let mut answered = 0;
        for i in 0..100_000 {
            let packet: Vec<u8> = match i % 4 {
                // Pure noise, of any length up to a jumbo-ish datagram.
                0 => {
                    let len = rng.gen_range(0..1600);
                    (0..len).map(|_| rng.gen()).collect()
                }
                // A valid header followed by random option bytes.
                1 => {
                    let mut p = seeds[rng.gen_range(0..seeds.len())][..240].to_vec();
                    let len = rng.gen_range(0..400);
                    p.extend((0..len).map(|_| rng.gen::<u8>()));
                    p
                }
                // A valid packet with a few bytes flipped, cut or inserted.
                _ => {
                    let mut p = seeds[rng.gen_range(0..seeds.len())].clone();
                    for _ in 0..rng.gen_range(1..8) {
                        let at = rng.gen_range(0..p.len().max(1));
                        match rng.gen_range(0..4) {
                            0 => {
                                if let Some(b) = p.get_mut(at) {
                                    *b = rng.gen();
                                }
                            }
                            1 => p.truncate(at),
                            2 => p.insert(at.min(p.len()), rng.gen()),
                            _ => {
                                // Favour option bytes after the cookie.
                                if p.len() > 240 {
                                    let at = rng.gen_range(240..p.len());
                                    p[at] = rng.gen();
                                }
                            }
                        }
                    }
                    p
                }
            };
            if handle(&cfg(), &book, &packet).is_some() {
                answered += 1;
            }
        }
        // Some mutated packets are still valid; the test must exercise the reply path.
        assert!(answered > 1000, "only {answered} replies");
    }
}
