//! Unit tests of the protocol core.

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
    Decline(Mac, Ipv4Addr),
}

#[derive(Default)]
struct Book {
    nics: HashMap<Mac, Binding>,
    fail_commit: bool,
    events: Mutex<Vec<Event>>,
    ledger: Mutex<Vec<(Mac, LedgerEntry)>>,
}

impl Book {
    fn with_nic() -> Self {
        let mut b = Self::default();
        b.nics.insert(MAC, binding());
        b
    }
    /// A NIC on a /20 behind 172.16.0.1, with no host name or domain.
    fn with_wide_nic() -> Self {
        let mut b = Self::default();
        let nic = Binding {
            ip: ip("172.16.5.20"),
            prefix: 20,
            router: ip("172.16.0.1"),
            hostname: String::new(),
            domain: String::new(),
        };
        b.nics.insert(MAC, nic);
        b
    }
    fn events(&self) -> Vec<Event> {
        std::mem::take(&mut *self.events.lock().unwrap())
    }
    /// The ledger so far as `(mac, kind, ip)`, emptied.
    fn ledger(&self) -> Vec<(Mac, LedgerKind, Option<Ipv4Addr>)> {
        std::mem::take(&mut *self.ledger.lock().unwrap())
            .into_iter()
            .map(|(mac, e)| (mac, e.kind, e.ip))
            .collect()
    }
}

impl LeaseBook for Book {
    fn binding(&self, mac: &Mac) -> Option<Binding> {
        self.nics.get(mac).cloned()
    }
    fn commit(&self, mac: &Mac, ip: Ipv4Addr) -> Result<(), super::CommitError> {
        if self.fail_commit {
            return Err("disk full".into());
        }
        self.events.lock().unwrap().push(Event::Commit(*mac, ip));
        Ok(())
    }
    fn release(&self, mac: &Mac, ip: Ipv4Addr) {
        self.events.lock().unwrap().push(Event::Release(*mac, ip));
    }
    fn decline(&self, mac: &Mac, ip: Ipv4Addr) {
        self.events.lock().unwrap().push(Event::Decline(*mac, ip));
    }
    fn record(&self, mac: &Mac, entry: LedgerEntry) {
        self.ledger.lock().unwrap().push((*mac, entry));
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
    assert_platform_options(reply, "10.1.0.1");
    assert_eq!(o.len(), 12, "unexpected options: {o:?}");
}

/// Option 121 of the default config for a client whose gateway is `gw`, byte by byte.
fn azure_routes(gw: &str) -> Vec<u8> {
    routes_via(ip(gw), PLATFORM_ADDR)
}

/// Option 121 of [`DhcpConfig::for_platform`]`(platform)` for a client behind `gw`.
fn routes_via(gw: Ipv4Addr, platform: Ipv4Addr) -> Vec<u8> {
    let (g, p) = (gw.octets(), platform.octets());
    [&[0][..], &g, &[32], &p, &g, &[32, 169, 254, 169, 254], &g].concat()
}

/// The value of option `code` in an encoded reply's options field, walked by hand.
fn raw_option(packet: &[u8], code: u8) -> Option<Vec<u8>> {
    let mut i = 240;
    while let Some(&c) = packet.get(i) {
        match c {
            0 => i += 1,
            255 => return None,
            _ => {
                let len = usize::from(packet[i + 1]);
                if c == code {
                    return Some(packet[i + 2..i + 2 + len].to_vec());
                }
                i += 2 + len;
            }
        }
    }
    None
}

/// Options 121 and 245 of the default config: exact bytes, and as dhcproto reads them.
fn assert_platform_options(reply: &Reply, gw: &str) {
    let p = reply.packet();
    assert_eq!(raw_option(p, 121), Some(azure_routes(gw)));
    assert_eq!(raw_option(p, 245), Some(vec![0xa8, 0x3f, 0x81, 0x10]));
    let m = decode(reply);
    let Some(DhcpOption::ClasslessStaticRoute(routes)) =
        m.opts().get(OptionCode::ClasslessStaticRoute)
    else {
        panic!("no option 121 in {:?}", m.opts());
    };
    let routes: Vec<(Ipv4Addr, u8, Ipv4Addr)> = routes
        .iter()
        .map(|(net, via)| (net.addr(), net.prefix_len(), *via))
        .collect();
    let gw = ip(gw);
    assert_eq!(
        routes,
        [
            (Ipv4Addr::UNSPECIFIED, 0, gw),
            (PLATFORM_ADDR, 32, gw),
            (METADATA_ADDR, 32, gw),
        ]
    );
    assert!(
        matches!(
            m.opts().get(OptionCode::Unknown(245)),
            Some(DhcpOption::Unknown(o)) if o.data() == [168, 63, 129, 16]
        ),
        "{:?}",
        m.opts()
    );
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
    let mut book = Book::with_wide_nic();
    let cfg = DhcpConfig {
        server_id: ip("172.16.0.1"),
        dns: vec![],
        lease_secs: 0xffff_ffff,
        wireserver: None,
        gateway_routes: vec![],
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
    assert!(opts.get(OptionCode::ClasslessStaticRoute).is_none());
    assert!(opts.get(OptionCode::Unknown(245)).is_none());
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

#[test]
fn ledger_shows_the_four_way_exchange() {
    let book = Book::with_nic();
    let four = ip("10.1.0.4");
    let before = std::time::SystemTime::now();
    run(&book, &request(MAC, MessageType::Discover)).unwrap();
    run(&book, &selecting(MAC, four, PLATFORM_ADDR)).unwrap();
    let entries = book.ledger.lock().unwrap().clone();
    assert!(entries.iter().all(|(_, e)| e.at >= before));
    assert_eq!(entries[2].1.detail, "selecting");
    assert_eq!(entries[3].1.detail, "to 255.255.255.255:68");
    assert_eq!(
        book.ledger(),
        vec![
            (MAC, LedgerKind::Discover, None),
            (MAC, LedgerKind::Offer, Some(four)),
            (MAC, LedgerKind::Request, Some(four)),
            (MAC, LedgerKind::Ack, Some(four)),
        ]
    );
    let entries: Vec<LedgerEntry> = entries.into_iter().map(|(_, e)| e).collect();
    assert_eq!(
        diagnose(&entries, before, std::time::SystemTime::now()),
        None
    );
}

#[test]
fn ledger_records_failures() {
    let mut book = Book::with_nic();
    // Unknown MAC: recorded under that MAC, nothing sent.
    assert!(run(&book, &request(OTHER_MAC, MessageType::Discover)).is_none());
    assert_eq!(
        book.ledger(),
        vec![(OTHER_MAC, LedgerKind::UnknownMac, None)]
    );
    // NAK with its reason.
    run(&book, &selecting(MAC, ip("10.1.0.9"), PLATFORM_ADDR)).unwrap();
    let l = book.ledger();
    assert_eq!(l[0].1, LedgerKind::Request);
    assert!(
        matches!(&l[1].1, LedgerKind::Nak { reason } if reason.contains("10.1.0.9")),
        "{l:?}"
    );
    // Another server selected: ignored.
    assert!(run(&book, &selecting(MAC, ip("10.1.0.4"), ip("10.9.9.9"))).is_none());
    let l = book.ledger();
    assert!(matches!(&l[1].1, LedgerKind::Ignored { reason } if reason.contains("10.9.9.9")));
    // A failed commit.
    book.fail_commit = true;
    assert!(run(&book, &selecting(MAC, ip("10.1.0.4"), PLATFORM_ADDR)).is_none());
    let l = book.ledger();
    assert_eq!(
        l[1].1,
        LedgerKind::CommitFailed {
            reason: "disk full".into()
        }
    );
    // Malformed packets are not recorded: there is no MAC to trust.
    assert!(handle(&cfg(), &book, &[1, 2, 3]).is_none());
    assert!(book.ledger().is_empty());
}

#[test]
fn decline_marks_the_address() {
    let book = Book::with_nic();
    let mut m = request(MAC, MessageType::Decline);
    m.opts_mut()
        .insert(DhcpOption::RequestedIpAddress(ip("10.1.0.4")));
    m.opts_mut()
        .insert(DhcpOption::ServerIdentifier(PLATFORM_ADDR));
    assert!(run(&book, &m).is_none());
    assert_eq!(book.events(), vec![Event::Decline(MAC, ip("10.1.0.4"))]);
    assert_eq!(
        book.ledger(),
        vec![(MAC, LedgerKind::Decline, Some(ip("10.1.0.4")))]
    );
    // Declining another address, or to another server: recorded, not acted on.
    m.opts_mut()
        .insert(DhcpOption::RequestedIpAddress(ip("10.1.0.5")));
    assert!(run(&book, &m).is_none());
    m.opts_mut()
        .insert(DhcpOption::RequestedIpAddress(ip("10.1.0.4")));
    m.opts_mut()
        .insert(DhcpOption::ServerIdentifier(ip("1.2.3.4")));
    assert!(run(&book, &m).is_none());
    assert!(book.events().is_empty());
    let l = book.ledger();
    assert_eq!(l.len(), 4);
    assert!(matches!(l[1].1, LedgerKind::Ignored { .. }));
    assert!(matches!(l[3].1, LedgerKind::Ignored { .. }));
}

/// Builds a REQUEST whose options live partly in `file` and `sname`.
fn overloaded(overload: u8, in_file: &[u8], in_sname: &[u8]) -> Vec<u8> {
    let mut m = request(MAC, MessageType::Request);
    m.opts_mut().clear();
    let mut p = bytes(&m);
    p.truncate(240);
    p.extend_from_slice(&[53, 1, 3, 52, 1, overload, 255]);
    p[108..108 + in_file.len()].copy_from_slice(in_file);
    p[44..44 + in_sname.len()].copy_from_slice(in_sname);
    p
}

#[test]
fn option_overload_is_read() {
    let book = Book::with_nic();
    // Requested address in `file`, server id in `sname`: a SELECTING request.
    let file = [50, 4, 10, 1, 0, 4, 255];
    let sname = [54, 4, 168, 63, 129, 16, 255];
    let r = handle(&cfg(), &book, &overloaded(3, &file, &sname)).unwrap();
    assert_lease_reply(&r, MessageType::Ack);
    assert_eq!(book.ledger()[0].2, Some(ip("10.1.0.4")));
    assert_eq!(book.events(), vec![Event::Commit(MAC, ip("10.1.0.4"))]);
    // Only `file` overloaded: the server id in `sname` is a name, not options,
    // so this is an INIT-REBOOT request for the right address.
    let r = handle(&cfg(), &book, &overloaded(1, &file, &sname)).unwrap();
    assert_lease_reply(&r, MessageType::Ack);
    assert_eq!(book.ledger()[0].1, LedgerKind::Request);
    let _ = book.events();
    // Only `sname`: the server id, but no requested address -> NAK.
    let r = handle(&cfg(), &book, &overloaded(2, &file, &sname)).unwrap();
    assert_nak(&r);
    // Without overload both fields are ignored: no address at all -> NAK.
    let r = handle(&cfg(), &book, &overloaded(0, &file, &sname)).unwrap();
    assert_nak(&r);
    // A truncated option inside an overloaded field makes the packet malformed.
    assert!(handle(&cfg(), &book, &overloaded(1, &[50, 200, 10], &[])).is_none());
}

/// The Azure platform options (245, 121) in every reply: `tests/platform.rs`.
mod platform;
