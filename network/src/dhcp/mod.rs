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
//! * [`serve`], the socket loop around it (worker threads, see `serve.rs`).
//!
//! Every packet [`handle`] reads and every outcome goes to
//! [`LeaseBook::record`] as a [`LedgerEntry`]; [`diagnose`] turns a NIC's
//! ledger into the failure a user sees ("no DISCOVER within 60 s of link-up").
//!
//! Replies carry the server identifier, DNS server and source address of the
//! platform address (`168.63.129.16` by default), a lease that is for all
//! practical purposes permanent, and T1/T2 at 1/2 and 7/8 of it. Every OFFER
//! and ACK also carries, requested or not, what the Azure guest agents look for
//! (see `platform.rs`): option 245 with the WireServer address and option 121
//! routing the platform and metadata addresses (and the default) to the gateway.
//!
//! ## Parsing
//! Packets are decoded with `dhcproto` 0.12, but only after [`handle`] has
//! checked the fixed header itself and copied through only the options the
//! responder reads (53, 50, 54, 61, 55, 57, 12), also those continued in
//! `file`/`sname` under option overload (52), which dhcproto ignores. dhcproto 0.12 can panic on
//! hostile input: some option decoders `debug_assert!` on wire lengths
//! (options 80, 81, 94, 152-155; e.g. option 94 with length 1), and
//! `Message::chaddr()` slices a 16-byte array by the wire `hlen`.
//!
//! ## Encoding
//! dhcproto keeps options in a `HashMap`, so its own encoder writes them in a
//! random order. Replies are encoded as a header with no options followed by
//! options written one by one in a fixed order (message type first), an End
//! option and padding up to the 300-byte BOOTP minimum.

use std::net::{Ipv4Addr, SocketAddrV4};

use dhcproto::v4::{DhcpOption, HType, Message, MessageType, Opcode, OptionCode};
use dhcproto::{Decodable, Decoder, Encodable, Encoder};
use tracing::{debug, error, info, warn};

use crate::addr::{prefix_mask, Mac};

mod ledger;
mod platform;
mod serve;
pub use ledger::{diagnose, LedgerEntry, LedgerKind, DISCOVER_DEADLINE, REQUEST_DEADLINE};
pub use platform::{
    encode_classless_routes, gateway_routes, StaticRoute, METADATA_ADDR, WIRESERVER_OPTION,
};
pub use serve::{serve, WORKERS};

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
    #[error("lease book failed to commit {ip} for {mac}")]
    Commit {
        /// The NIC.
        mac: Mac,
        /// The address that was being committed.
        ip: Ipv4Addr,
        /// The book's error.
        #[source]
        source: CommitError,
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
    /// The WireServer address, sent as option 245 in every OFFER and ACK whether the client
    /// asked or not; none sends no option 245.
    pub wireserver: Option<Ipv4Addr>,
    /// Hosts each routed (`/32`) through the NIC's gateway by option 121, after the default
    /// route, in every OFFER and ACK; empty sends no option 121.
    pub gateway_routes: Vec<Ipv4Addr>,
}

impl DhcpConfig {
    /// The cloud's settings around platform address `platform` (`--platform-ip`): server
    /// identifier, DNS server and WireServer (option 245), and option 121 routing it and the
    /// metadata address [`METADATA_ADDR`] through the gateway.
    pub fn for_platform(platform: Ipv4Addr) -> Self {
        Self {
            server_id: platform,
            dns: vec![platform],
            lease_secs: DEFAULT_LEASE_SECS,
            wireserver: Some(platform),
            gateway_routes: vec![platform, METADATA_ADDR],
        }
    }
}

impl Default for DhcpConfig {
    /// [`DhcpConfig::for_platform`] of [`PLATFORM_ADDR`].
    fn default() -> Self {
        Self::for_platform(PLATFORM_ADDR)
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

/// Why a [`LeaseBook`] could not store a lease: the book's own error (its store's), the cause of
/// [`DhcpError::Commit`] and the reason in the ledger's `CommitFailed`.
pub type CommitError = Box<dyn std::error::Error + Send + Sync>;

/// Supplied by the daemon: knows which MACs are NICs, and stores leases durably.
pub trait LeaseBook: Send + Sync {
    /// The binding of a NIC, or `None` when the MAC is not a NIC of this network.
    fn binding(&self, mac: &Mac) -> Option<Binding>;
    /// Records that `mac` holds `ip`. It MUST be durable when it returns `Ok`:
    /// it is called before the ACK is sent, and an error means no ACK.
    fn commit(&self, mac: &Mac, ip: Ipv4Addr) -> Result<(), CommitError>;
    /// The client gave the lease back (DHCPRELEASE). Only called for a known
    /// MAC releasing the address of its binding.
    fn release(&self, mac: &Mac, ip: Ipv4Addr);
    /// The client declined its address (DHCPDECLINE, RFC 2131 §4.3.3): it
    /// found the address in use on the link. Only called for a known MAC
    /// declining the address of its binding. The daemon should mark the
    /// address unusable and give the NIC another; the default does nothing.
    fn decline(&self, _mac: &Mac, _ip: Ipv4Addr) {}
    /// One line of the NIC's ledger: every packet [`handle`] reads from it and
    /// every outcome (reply sent, commit failed, packet ignored). Also called
    /// with [`LedgerKind::UnknownMac`] for MACs that are not NICs, so keep
    /// storage bounded. Called on the packet's path: keep it cheap (no
    /// durable write). The default does nothing.
    fn record(&self, _mac: &Mac, _entry: LedgerEntry) {}
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
            error!("no DHCP reply: {}", chain(&e));
            None
        }
    }
}

/// An error and its causes, `: `-separated, for the log line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        out.push_str(&format!(": {c}"));
        cause = c.source();
    }
    out
}

/// The protocol core behind [`handle`], with errors. Every packet that gets
/// past [`sanitize`] and has a message type is recorded in the ledger, and so
/// is every outcome.
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
    let server_id = match req.opts().get(OptionCode::ServerIdentifier) {
        Some(DhcpOption::ServerIdentifier(ip)) => Some(*ip),
        _ => None,
    };
    let requested = match req.opts().get(OptionCode::RequestedIpAddress) {
        Some(DhcpOption::RequestedIpAddress(ip)) => Some(*ip),
        _ => None,
    };
    let ciaddr = nonzero(req.ciaddr());

    let Some(binding) = book.binding(&mac) else {
        debug!(%mac, ?msg_type, "ignoring DHCP from a MAC that is not a NIC");
        book.record(
            &mac,
            LedgerEntry::now(
                LedgerKind::UnknownMac,
                req.xid(),
                requested.or(ciaddr),
                format!("{msg_type:?}"),
            ),
        );
        return Ok(None);
    };
    let x = Exchange {
        cfg,
        book,
        req: &req,
        mac,
        msg_type,
        binding,
        server_id,
        requested,
        ciaddr,
    };
    match msg_type {
        MessageType::Discover => {
            x.log(LedgerKind::Discover, requested, String::new());
            debug!(%mac, ip = %x.binding.ip, "DHCPDISCOVER -> OFFER");
            let offer = reply(cfg, &req, &mac, &x.binding, Kind::Offer);
            x.sent(LedgerKind::Offer, Some(x.binding.ip), offer)
        }
        MessageType::Request => x.request(),
        MessageType::Inform => {
            x.log(LedgerKind::Inform, ciaddr, String::new());
            debug!(%mac, "DHCPINFORM -> ACK");
            let ack = reply(cfg, &req, &mac, &x.binding, Kind::InformAck);
            x.sent(LedgerKind::Ack, None, ack)
        }
        MessageType::Release => x.release(),
        MessageType::Decline => x.decline(),
        other => x.ignore(&format!("message type {other:?} is not a client's"), ciaddr),
    }
}

/// One request from a known NIC, as [`respond`] read it: what each answer needs.
struct Exchange<'a> {
    cfg: &'a DhcpConfig,
    book: &'a dyn LeaseBook,
    req: &'a Message,
    mac: Mac,
    msg_type: MessageType,
    binding: Binding,
    /// Option 54: the server the client addresses.
    server_id: Option<Ipv4Addr>,
    /// Option 50: the address the client asks for.
    requested: Option<Ipv4Addr>,
    ciaddr: Option<Ipv4Addr>,
}

impl Exchange<'_> {
    fn log(&self, kind: LedgerKind, ip: Option<Ipv4Addr>, detail: String) {
        self.book.record(
            &self.mac,
            LedgerEntry::now(kind, self.req.xid(), ip, detail),
        );
    }

    /// Records a reply (or the error that prevented it) and passes it on.
    fn sent(
        &self,
        kind: LedgerKind,
        ip: Option<Ipv4Addr>,
        r: Result<Reply, DhcpError>,
    ) -> Result<Option<Reply>, DhcpError> {
        match r {
            Ok(reply) => {
                self.log(kind, ip, format!("to {}", reply.destination()));
                Ok(Some(reply))
            }
            Err(e) => {
                let reason = e.to_string();
                self.log(LedgerKind::Ignored { reason }, ip, String::new());
                Err(e)
            }
        }
    }

    fn ignore(&self, reason: &str, ip: Option<Ipv4Addr>) -> Result<Option<Reply>, DhcpError> {
        let (mac, msg_type) = (self.mac, self.msg_type);
        debug!(%mac, ?msg_type, "ignoring DHCP: {reason}");
        let reason = reason.into();
        self.log(LedgerKind::Ignored { reason }, ip, String::new());
        Ok(None)
    }

    fn nak_for(&self, reason: String) -> Result<Option<Reply>, DhcpError> {
        let (mac, requested, ciaddr) = (self.mac, self.requested, self.ciaddr);
        info!(%mac, ?requested, ?ciaddr, ip = %self.binding.ip, "DHCPREQUEST -> NAK: {reason}");
        let nak = nak(self.cfg, self.req, &self.mac);
        self.sent(LedgerKind::Nak { reason }, None, nak)
    }

    /// A REQUEST: the NIC's own address is ACKed once the book has stored the lease; any other
    /// is NAKed; one for another server is ignored.
    fn request(&self) -> Result<Option<Reply>, DhcpError> {
        let (mac, ip) = (self.mac, self.binding.ip);
        let (requested, ciaddr) = (self.requested, self.ciaddr);
        let state = match (self.server_id, requested, ciaddr) {
            (Some(_), _, _) => "selecting",
            (None, Some(_), None) => "init-reboot",
            (None, _, Some(_)) => "renewing or rebinding",
            (None, None, None) => "no address",
        };
        self.log(LedgerKind::Request, requested.or(ciaddr), state.into());
        if let Some(sid) = self.server_id {
            // SELECTING: the client names the server whose offer it takes.
            if sid != self.cfg.server_id {
                return self.ignore(&format!("the client selected server {sid}"), requested);
            }
            if requested != Some(ip) {
                return self.nak_for(match requested {
                    Some(r) => format!("requested {r}, the NIC's address is {ip}"),
                    None => "selecting without a requested address".into(),
                });
            }
        } else {
            // INIT-REBOOT (requested-ip), RENEWING/REBINDING (ciaddr).
            let Some(asked) = requested.or(ciaddr) else {
                return self.nak_for("a REQUEST without an address".into());
            };
            if asked != ip || ciaddr.is_some_and(|c| c != ip) {
                return self.nak_for(format!(
                    "asked for {}, the NIC's address is {ip}",
                    ciaddr.unwrap_or(asked),
                ));
            }
        }
        // Build the ACK first so a bad binding does not commit a lease it cannot serve.
        let ack = match reply(self.cfg, self.req, &mac, &self.binding, Kind::Ack) {
            Ok(ack) => ack,
            Err(e) => return self.sent(LedgerKind::Ack, Some(ip), Err(e)),
        };
        if let Err(source) = self.book.commit(&mac, ip) {
            let reason = source.to_string();
            self.log(LedgerKind::CommitFailed { reason }, Some(ip), String::new());
            return Err(DhcpError::Commit { mac, ip, source });
        }
        info!(%mac, %ip, "DHCPREQUEST -> ACK");
        self.sent(LedgerKind::Ack, Some(ip), Ok(ack))
    }

    /// A RELEASE of the NIC's address, for this server: the book is told.
    fn release(&self) -> Result<Option<Reply>, DhcpError> {
        let (mac, ip, ciaddr) = (self.mac, self.binding.ip, self.ciaddr);
        self.log(LedgerKind::Release, ciaddr, String::new());
        if self.server_id.is_some_and(|sid| sid != self.cfg.server_id) {
            self.ignore("a RELEASE for another server", ciaddr)
        } else if ciaddr == Some(ip) {
            info!(%mac, %ip, "DHCPRELEASE");
            self.book.release(&mac, ip);
            Ok(None)
        } else {
            self.ignore("a RELEASE of an address the NIC does not hold", ciaddr)
        }
    }

    /// A DECLINE of the NIC's address, for this server: the book is told.
    fn decline(&self) -> Result<Option<Reply>, DhcpError> {
        let (mac, ip, requested) = (self.mac, self.binding.ip, self.requested);
        self.log(LedgerKind::Decline, requested, String::new());
        if self.server_id.is_some_and(|sid| sid != self.cfg.server_id) {
            self.ignore("a DECLINE for another server", requested)
        } else if requested == Some(ip) {
            warn!(%mac, %ip, "guest declined its address (in use on the link?)");
            self.book.decline(&mac, ip);
            Ok(None)
        } else {
            self.ignore("a DECLINE of an address the NIC was not given", requested)
        }
    }
}

/// Checks the fixed part of a request and returns a copy with only the
/// options in [`READ_OPTIONS`], so dhcproto decodes nothing it could panic on.
///
/// Option overload (option 52, RFC 2131 §4.1): options continued in `file`
/// (value 1), `sname` (2) or both (3) are read after the options field, `file`
/// first, and moved into the copy's options field; the copy's `sname` and
/// `file` are zeroed then, since they hold no names.
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
    let overload = copy_options(&packet[options_at..], &mut out, true)?;
    if overload != 0 {
        if overload & OVERLOAD_FILE != 0 {
            copy_options(&packet[FILE_FIELD], &mut out, false)?;
        }
        if overload & OVERLOAD_SNAME != 0 {
            copy_options(&packet[SNAME_FIELD], &mut out, false)?;
        }
        out[SNAME_FIELD.start..FILE_FIELD.end].fill(0);
    }
    out.push(255);
    Ok(out)
}

/// `sname` in the BOOTP header.
const SNAME_FIELD: std::ops::Range<usize> = 44..108;
/// `file` in the BOOTP header.
const FILE_FIELD: std::ops::Range<usize> = 108..236;
/// Option 52's bits.
const OVERLOAD_FILE: u8 = 1;
const OVERLOAD_SNAME: u8 = 2;

/// Copies the options of `field` that are in [`READ_OPTIONS`] to `out`, up
/// to an End option or the end of the field. In the main options field
/// (`main`), returns the option overload value (0 if none or invalid).
fn copy_options(field: &[u8], out: &mut Vec<u8>, main: bool) -> Result<u8, DhcpError> {
    let mut overload = 0;
    let mut i = 0;
    while i < field.len() {
        match field[i] {
            0 => i += 1,
            255 => break,
            code => {
                let len = usize::from(
                    *field
                        .get(i + 1)
                        .ok_or(DhcpError::Malformed("option without length"))?,
                );
                let end = i + 2 + len;
                let whole = field
                    .get(i..end)
                    .ok_or(DhcpError::Malformed("truncated option"))?;
                if code == 52 {
                    if let (true, [_, 1, value @ 1..=3]) = (main, whole) {
                        overload = *value;
                    }
                } else if READ_OPTIONS.contains(&code) {
                    out.extend_from_slice(whole);
                }
                i = end;
            }
        }
    }
    Ok(overload)
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
    // Last, so the options before them are as they were before these two existed.
    opts.extend(platform::platform_options(
        binding.router,
        &cfg.gateway_routes,
        cfg.wireserver,
    ));
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
mod tests;
