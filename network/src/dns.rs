//! vmnode's internal DNS: A and PTR records of a virtual network's NICs, at
//! the platform address.
//!
//! Like the DHCP responder, it has a pure core, [`handle`] (one query in, at
//! most one response out, never panics), and a socket loop, [`serve`]. What
//! names exist is the daemon's business, behind [`NameBook`]: typically
//! `<computerName>` and `<computerName>.<suffix>` of every NIC in the vnet.
//!
//! ## Answers
//! * `A` of a known name: the address, authoritative (AA), TTL [`TTL_SECS`].
//! * `PTR` of `d.c.b.a.in-addr.arpa` for a known address: its name as a FQDN.
//! * Any other type (`AAAA`, `MX`, ...) of a known name: NOERROR with no
//!   answer (NODATA), so resolvers do not fall back to other servers for it.
//! * A name in a zone the book is authoritative for ([`NameBook::in_zone`])
//!   that does not exist: NXDOMAIN.
//! * Anything else: REFUSED (a guest's resolver moves on to its next server
//!   or search domain) — unless a forwarder is configured ([`serve_with`]; off
//!   by default): then the query goes to it as it came, and its answer back.
//! * A query that cannot be parsed but has a DNS header: FORMERR; less than a
//!   header, or a response: dropped (never answer a response: no loops).
//! * An opcode other than QUERY: NOTIMP; a class other than IN: REFUSED.
//!
//! Names are matched case-insensitively, with or without the trailing dot:
//! the book sees them lower-case and without it.
//!
//! ## One listener per bridge
//! Every vnet's guests use the same DNS server address, `168.63.129.16`, and
//! several vnets are bridges in the same namespace. Each bridge carries
//! `168.63.129.16/32`, and each gets its own socket bound to
//! `168.63.129.16:53` with `SO_BINDTODEVICE` set to the bridge
//! ([`crate::plumbing::udp_socket_in_ns_at`]): Linux lets sockets bound to
//! different devices share an address and port, and delivers a query to the
//! socket of the bridge it arrived on, so each vnet's listener answers from
//! its own [`NameBook`]. Binding the platform address (rather than
//! `0.0.0.0:53` like DHCP does for port 67) makes the kernel use it as the
//! source of the responses, which resolvers check.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::op::{Edns, Header, Message, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::{A, PTR};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use tokio::net::UdpSocket;
use tracing::{debug, info, warn};

/// UDP port of DNS.
pub const DNS_PORT: u16 = 53;
/// TTL of every answer. Addresses of NICs are static, but a deleted VM's name
/// should not linger long in guests' caches.
pub const TTL_SECS: u32 = 60;
/// Largest query read; larger ones are truncated by the kernel and then fail to parse.
const RECV_BUF: usize = 4096;
/// UDP payload size announced in EDNS responses.
const EDNS_PAYLOAD: u16 = 1232;

/// Supplied by the daemon: the names of one virtual network.
pub trait NameBook: Send + Sync {
    /// The address of `name` (lower case, no trailing dot), or `None`.
    fn a(&self, name: &str) -> Option<Ipv4Addr>;
    /// The name of `ip` (any case, with or without trailing dot), or `None`.
    fn ptr(&self, ip: Ipv4Addr) -> Option<String>;
    /// Whether `name` (lower case, no trailing dot) is in a zone this book is
    /// authoritative for (e.g. under the vnet's `xyz.internal.cloudapp.net`),
    /// so a missing name is NXDOMAIN rather than REFUSED. Default: no zone.
    fn in_zone(&self, _name: &str) -> bool {
        false
    }
}

/// Answers one DNS query; `None` means send nothing. Never panics.
pub fn handle(book: &dyn NameBook, packet: &[u8]) -> Option<Vec<u8>> {
    // Too short to even echo an id: drop.
    let header = packet.get(..12)?;
    // QR set: a response. Never answer one.
    if header[2] & 0x80 != 0 {
        return None;
    }
    let req = match Message::from_vec(packet) {
        Ok(req) => req,
        Err(e) => {
            debug!(len = packet.len(), "DNS FORMERR: {e}");
            let id = u16::from_be_bytes([header[0], header[1]]);
            let op = OpCode::from_u8((header[2] >> 3) & 0x0f);
            return encode(&Message::error_msg(id, op, ResponseCode::FormErr));
        }
    };
    let mut resp = Message::new();
    let mut h = Header::response_from_request(req.header());
    h.set_recursion_available(false);
    h.set_authentic_data(false);
    resp.set_header(h);
    if req.extensions().is_some() {
        let mut edns = Edns::new();
        edns.set_max_payload(EDNS_PAYLOAD);
        resp.set_edns(edns);
    }
    if req.op_code() != OpCode::Query {
        resp.set_response_code(ResponseCode::NotImp);
        return encode(&resp);
    }
    let [query] = req.queries() else {
        resp.add_queries(req.queries().iter().cloned());
        resp.set_response_code(ResponseCode::FormErr);
        return encode(&resp);
    };
    resp.add_query(query.clone());
    let (code, answer) = answer(book, query);
    resp.set_response_code(code);
    if code == ResponseCode::NoError || code == ResponseCode::NXDomain {
        resp.set_authoritative(true);
    }
    if let Some(record) = answer {
        resp.add_answer(record);
    }
    encode(&resp)
}

/// The response code and the answer record, if any, to one question.
fn answer(book: &dyn NameBook, query: &Query) -> (ResponseCode, Option<Record>) {
    if query.query_class() != DNSClass::IN {
        return (ResponseCode::Refused, None);
    }
    let qname = query.name();
    let Some(name) = lower_name(qname) else {
        return (ResponseCode::Refused, None);
    };
    let owner = || {
        let mut n = qname.clone();
        n.set_fqdn(true);
        n
    };
    if query.query_type() == RecordType::PTR {
        if let Some(ip) = arpa_to_ip(&name) {
            return match book.ptr(ip).as_deref().and_then(fqdn) {
                Some(target) => (
                    ResponseCode::NoError,
                    Some(Record::from_rdata(
                        owner(),
                        TTL_SECS,
                        RData::PTR(PTR(target)),
                    )),
                ),
                None => (ResponseCode::Refused, None),
            };
        }
    }
    match (book.a(&name), query.query_type()) {
        (Some(ip), RecordType::A | RecordType::ANY) => (
            ResponseCode::NoError,
            Some(Record::from_rdata(owner(), TTL_SECS, RData::A(A(ip)))),
        ),
        // A known name without records of this type: NODATA.
        (Some(_), _) => (ResponseCode::NoError, None),
        (None, _) if book.in_zone(&name) => (ResponseCode::NXDomain, None),
        (None, _) => (ResponseCode::Refused, None),
    }
}

/// `name` in lower case without the trailing dot, or `None` if a label holds
/// bytes no host name has (a dot, a non-printable or non-ASCII byte).
fn lower_name(name: &Name) -> Option<String> {
    let mut out = String::with_capacity(name.len());
    for label in name.iter() {
        if !out.is_empty() {
            out.push('.');
        }
        if label.is_empty() || label.iter().any(|b| !b.is_ascii_graphic() || *b == b'.') {
            return None;
        }
        out.extend(label.iter().map(|b| char::from(b.to_ascii_lowercase())));
    }
    Some(out)
}

/// `d.c.b.a.in-addr.arpa` as `a.b.c.d`.
fn arpa_to_ip(name: &str) -> Option<Ipv4Addr> {
    let rest = name.strip_suffix(".in-addr.arpa")?;
    let mut octets = [0u8; 4];
    let mut labels = rest.split('.');
    for slot in octets.iter_mut().rev() {
        let label = labels.next()?;
        // Decimal, no sign, no leading zeros.
        if label.is_empty() || label.len() > 3 || (label.len() > 1 && label.starts_with('0')) {
            return None;
        }
        if !label.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        *slot = label.parse().ok()?;
    }
    labels.next().is_none().then(|| Ipv4Addr::from(octets))
}

/// A name from the book as a FQDN, or `None` if it is not a valid name.
fn fqdn(name: &str) -> Option<Name> {
    let mut n = Name::from_ascii(name).ok()?;
    n.set_fqdn(true);
    Some(n)
}

fn encode(msg: &Message) -> Option<Vec<u8>> {
    match msg.to_vec() {
        Ok(bytes) => Some(bytes),
        Err(e) => {
            warn!("cannot encode DNS response: {e}");
            None
        }
    }
}

/// Runs the DNS listener on `socket` until the task is aborted.
///
/// The socket should come from [`crate::plumbing::udp_socket_in_ns_at`],
/// bound to the platform address, port 53, on one bridge (see the module
/// doc). Queries are answered inline: [`handle`] does no I/O, and the
/// [`NameBook`] must answer from memory.
pub async fn serve(socket: UdpSocket, book: Arc<dyn NameBook>) {
    serve_with(socket, book, None).await
}

/// How long a forwarded query may wait for the forwarder's answer.
const FORWARD_WAIT: Duration = Duration::from_secs(3);

/// Like [`serve`], sending the queries the book refuses (names outside the
/// vnet) to `forwarder` and relaying its answers.
pub async fn serve_with(socket: UdpSocket, book: Arc<dyn NameBook>, forwarder: Option<SocketAddr>) {
    let socket = Arc::new(socket);
    let mut buf = vec![0u8; RECV_BUF];
    info!(local = ?socket.local_addr().ok(), ?forwarder, "DNS listener running");
    loop {
        let (len, from) = match socket.recv_from(&mut buf).await {
            Ok(got) => got,
            Err(e) => {
                warn!("DNS receive failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Some(resp) = handle(&*book, &buf[..len]) else {
            continue;
        };
        if let Some(fwd) = forwarder.filter(|_| forwardable(&resp)) {
            let (query, socket) = (buf[..len].to_vec(), socket.clone());
            tokio::spawn(async move {
                match forward(&query, fwd).await {
                    Ok(answer) => {
                        let _ = socket.send_to(&answer, from).await;
                    }
                    Err(e) => {
                        debug!(%fwd, "DNS forwarding failed: {e}");
                        let _ = socket.send_to(&resp, from).await;
                    }
                }
            });
            continue;
        }
        if let Err(e) = socket.send_to(&resp, from).await {
            debug!(%from, "DNS send failed: {e}");
        }
    }
}

/// Whether our own answer is a REFUSED to a well-formed IN query: a name that
/// is not ours, which a forwarder may know.
fn forwardable(resp: &[u8]) -> bool {
    let Ok(m) = Message::from_vec(resp) else {
        return false;
    };
    m.response_code() == ResponseCode::Refused
        && m.op_code() == OpCode::Query
        && m.queries().len() == 1
        && m.queries()[0].query_class() == DNSClass::IN
}

/// Sends `query` to `fwd` from a fresh socket and returns its answer (same id).
async fn forward(query: &[u8], fwd: SocketAddr) -> std::io::Result<Vec<u8>> {
    let bind: SocketAddr = if fwd.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let s = UdpSocket::bind(bind).await?;
    s.send_to(query, fwd).await?;
    let mut buf = vec![0u8; RECV_BUF];
    let deadline = tokio::time::Instant::now() + FORWARD_WAIT;
    loop {
        let (n, from) = tokio::time::timeout_at(deadline, s.recv_from(&mut buf))
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no answer"))??;
        // Only the forwarder's answer to this query (same id, a response).
        if from == fwd && n >= 12 && buf[..2] == query[..2] && buf[2] & 0x80 != 0 {
            return Ok(buf[..n].to_vec());
        }
    }
}

/// A fixed [`NameBook`]: names to addresses and back, and zones. For tests,
/// benches and small setups.
#[derive(Clone, Debug, Default)]
pub struct StaticNames {
    names: Vec<(String, Ipv4Addr)>,
    zones: Vec<String>,
}

impl StaticNames {
    /// An empty book.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `name` → `ip` (the first name added for an address is its PTR).
    pub fn with(mut self, name: &str, ip: Ipv4Addr) -> Self {
        self.names.push((normalise(name), ip));
        self
    }

    /// Makes the book authoritative for `zone` and the names under it.
    pub fn with_zone(mut self, zone: &str) -> Self {
        self.zones.push(normalise(zone));
        self
    }
}

fn normalise(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

impl NameBook for StaticNames {
    fn a(&self, name: &str) -> Option<Ipv4Addr> {
        self.names
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, ip)| *ip)
    }

    fn ptr(&self, ip: Ipv4Addr) -> Option<String> {
        self.names
            .iter()
            .find(|(_, i)| *i == ip)
            .map(|(n, _)| n.clone())
    }

    fn in_zone(&self, name: &str) -> bool {
        self.zones.iter().any(|z| {
            name == z
                || name
                    .strip_suffix(z.as_str())
                    .is_some_and(|head| head.ends_with('.'))
        })
    }
}

#[cfg(test)]
mod tests;
