//! Robustness of the packet cores on stable Rust: 10^6 randomized and mutated
//! packets through `dhcp::handle` and 10^6 through `dns::handle`, on all
//! cores. Asserts no panic, no DHCP reply to a MAC the book does not know,
//! and no input slower than 10 ms. The seeds are built here and read from the
//! fuzz corpus (`network/fuzz/corpus/{dhcp,dns}`), which the cargo-fuzz
//! targets in `network/fuzz/` use for longer runs on nightly.
//!
//! `VMNODE_FUZZ_ITERS` changes the count (e.g. 10^8 for a soak run).

use std::net::Ipv4Addr;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use dhcproto::v4::{DhcpOption, Flags, Message, MessageType, OptionCode};
use dhcproto::{Encodable, Encoder};
use hickory_proto::op::{Edns, Message as DnsMessage, OpCode, Query};
use hickory_proto::rr::{Name, RecordType};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use vmnode_network::dhcp::{self, Binding, DhcpConfig, LeaseBook, LedgerEntry};
use vmnode_network::dns::{self, StaticNames};
use vmnode_network::{Mac, PLATFORM_ADDR};

const KNOWN: Mac = Mac::new([0x00, 0x0d, 0x3a, 0x01, 0x02, 0x03]);
/// The slowest any one input may be.
const MAX_PER_INPUT: Duration = Duration::from_millis(10);

fn iterations() -> u64 {
    std::env::var("VMNODE_FUZZ_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000)
}

/// Knows one MAC; every call is cheap.
struct Book {
    records: AtomicU64,
}

impl LeaseBook for Book {
    fn binding(&self, mac: &Mac) -> Option<Binding> {
        (*mac == KNOWN).then(|| Binding {
            ip: Ipv4Addr::new(10, 1, 0, 4),
            prefix: 24,
            router: Ipv4Addr::new(10, 1, 0, 1),
            hostname: "vm1".into(),
            domain: "abc.internal.cloudapp.net".into(),
        })
    }
    fn commit(&self, _mac: &Mac, _ip: Ipv4Addr) -> Result<(), String> {
        Ok(())
    }
    fn release(&self, _mac: &Mac, _ip: Ipv4Addr) {}
    fn record(&self, _mac: &Mac, _entry: LedgerEntry) {
        self.records.fetch_add(1, Ordering::Relaxed);
    }
}

fn corpus(kind: &str) -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(kind);
    let mut seeds: Vec<Vec<u8>> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("corpus {}: {e}", dir.display()))
        .map(|e| std::fs::read(e.unwrap().path()).unwrap())
        .collect();
    seeds.sort();
    assert!(!seeds.is_empty(), "empty corpus {}", dir.display());
    seeds
}

fn dhcp_seeds() -> Vec<Vec<u8>> {
    let mut seeds = corpus("dhcp");
    for mac in [KNOWN, Mac::new([0x00, 0x0d, 0x3a, 9, 9, 9])] {
        for kind in [
            MessageType::Discover,
            MessageType::Request,
            MessageType::Inform,
            MessageType::Release,
            MessageType::Decline,
        ] {
            for (ciaddr, requested, server) in [
                (None, None, None),
                (None, Some("10.1.0.4"), Some(PLATFORM_ADDR)),
                (None, Some("10.1.0.4"), None),
                (Some("10.1.0.4"), None, None),
                (
                    Some("10.1.0.9"),
                    Some("10.1.0.5"),
                    Some(Ipv4Addr::new(1, 2, 3, 4)),
                ),
            ] {
                let ip = |s: Option<&str>| s.map(|s| s.parse::<Ipv4Addr>().unwrap());
                let mut m = Message::new_with_id(
                    0xdead_beef,
                    ip(ciaddr).unwrap_or(Ipv4Addr::UNSPECIFIED),
                    Ipv4Addr::UNSPECIFIED,
                    Ipv4Addr::UNSPECIFIED,
                    Ipv4Addr::UNSPECIFIED,
                    &mac.octets(),
                );
                m.set_flags(Flags::new(0x8000));
                m.opts_mut().insert(DhcpOption::MessageType(kind));
                if let Some(r) = ip(requested) {
                    m.opts_mut().insert(DhcpOption::RequestedIpAddress(r));
                }
                if let Some(s) = server {
                    m.opts_mut().insert(DhcpOption::ServerIdentifier(s));
                }
                m.opts_mut().insert(DhcpOption::ParameterRequestList(vec![
                    OptionCode::SubnetMask,
                    OptionCode::Router,
                    OptionCode::DomainNameServer,
                ]));
                m.opts_mut().insert(DhcpOption::Hostname("guest".into()));
                let mut buf = Vec::new();
                m.encode(&mut Encoder::new(&mut buf)).unwrap();
                seeds.push(buf);
            }
        }
    }
    seeds
}

fn dns_seeds() -> Vec<Vec<u8>> {
    let mut seeds = corpus("dns");
    for (name, rtype) in [
        ("vm1", RecordType::A),
        ("vm1.abc.internal.cloudapp.net.", RecordType::A),
        ("VM1.ABC.internal.cloudapp.net", RecordType::AAAA),
        ("4.0.1.10.in-addr.arpa.", RecordType::PTR),
        ("nope.abc.internal.cloudapp.net", RecordType::MX),
        ("example.com", RecordType::ANY),
    ] {
        for edns in [false, true] {
            let mut m = DnsMessage::new();
            m.set_id(0x4242)
                .set_op_code(OpCode::Query)
                .set_recursion_desired(true);
            m.add_query(Query::query(Name::from_ascii(name).unwrap(), rtype));
            if edns {
                m.set_edns(Edns::new());
            }
            seeds.push(m.to_vec().unwrap());
        }
    }
    seeds
}

const INTERESTING: [u8; 8] = [0, 1, 0x3f, 0x40, 0x7f, 0x80, 0xc0, 0xff];

/// One mutated or generated input. `options_at` is where TLV options start
/// (240 for DHCP) or `None` for DNS, where names and pointers are generated.
fn mutate(rng: &mut StdRng, seeds: &[Vec<u8>], options_at: Option<usize>) -> Vec<u8> {
    let seed = &seeds[rng.gen_range(0..seeds.len())];
    match rng.gen_range(0..10) {
        // Noise of any length.
        0 => {
            let len = rng.gen_range(0..1600);
            (0..len).map(|_| rng.gen()).collect()
        }
        // A valid start followed by generated structure.
        1 | 2 => {
            let keep = options_at.unwrap_or(12).min(seed.len());
            let mut p = seed[..keep].to_vec();
            for _ in 0..rng.gen_range(0..12) {
                match options_at {
                    Some(_) => {
                        // A TLV option, often one the decoders are picky about.
                        let code = if rng.gen_bool(0.5) {
                            [53, 50, 54, 52, 61, 55, 57, 12, 80, 81, 94, 152, 155, 255, 0]
                                [rng.gen_range(0..15)]
                        } else {
                            rng.gen()
                        };
                        let len: u8 = if rng.gen_bool(0.7) {
                            rng.gen_range(0..8)
                        } else {
                            rng.gen()
                        };
                        p.push(code);
                        p.push(len);
                        p.extend((0..len).map(|_| rng.gen::<u8>()));
                    }
                    None => {
                        // A label, a compression pointer (maybe to itself), or a type/class.
                        match rng.gen_range(0..3) {
                            0 => {
                                let len = rng.gen_range(0..70u8);
                                p.push(len);
                                p.extend((0..len).map(|_| rng.gen_range(b'0'..=b'z')));
                            }
                            1 => {
                                let to = rng.gen_range(0..p.len().max(1) as u16 + 4);
                                p.extend_from_slice(&(0xc000 | to).to_be_bytes());
                            }
                            _ => p.extend_from_slice(&rng.gen::<[u8; 4]>()),
                        }
                    }
                }
            }
            if rng.gen_bool(0.5) {
                p.push(if options_at.is_some() { 255 } else { 0 });
            }
            p
        }
        // A seed with a few edits.
        _ => {
            let mut p = seed.clone();
            for _ in 0..rng.gen_range(1..8) {
                let at = rng.gen_range(0..p.len().max(1));
                match rng.gen_range(0..7) {
                    0 => {
                        if let Some(b) = p.get_mut(at) {
                            *b = rng.gen();
                        }
                    }
                    1 => {
                        if let Some(b) = p.get_mut(at) {
                            *b = INTERESTING[rng.gen_range(0..INTERESTING.len())];
                        }
                    }
                    2 => p.truncate(at),
                    3 => p.insert(at.min(p.len()), rng.gen()),
                    4 => {
                        // Duplicate a chunk (repeated options, repeated labels).
                        let end = (at + rng.gen_range(1..32)).min(p.len());
                        let chunk = p[at.min(end)..end].to_vec();
                        let to = rng.gen_range(0..=p.len());
                        p.splice(to..to, chunk);
                    }
                    5 => {
                        // Splice the tail of another seed.
                        let other = &seeds[rng.gen_range(0..seeds.len())];
                        let from = rng.gen_range(0..other.len().max(1));
                        p.truncate(at);
                        p.extend_from_slice(other.get(from..).unwrap_or_default());
                    }
                    _ => {
                        // Favour the variable part (options, or DNS counts and names).
                        let start = options_at.unwrap_or(4);
                        if p.len() > start {
                            let at = rng.gen_range(start..p.len());
                            p[at] = INTERESTING[rng.gen_range(0..INTERESTING.len())];
                        }
                    }
                }
            }
            p
        }
    }
}

/// Runs `check` on `iterations()` inputs spread over all cores; returns how
/// many got a reply. `check` returns whether there was a reply and panics on
/// a broken invariant.
fn run(
    tag: &str,
    seeds: &[Vec<u8>],
    options_at: Option<usize>,
    check: &(dyn Fn(&[u8]) -> bool + Sync),
) -> u64 {
    let total = iterations();
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get()) as u64;
    let replies = AtomicU64::new(0);
    let started = Instant::now();
    std::thread::scope(|s| {
        for t in 0..threads {
            let replies = &replies;
            s.spawn(move || {
                let mut rng = StdRng::seed_from_u64(0x5eed_0000 + t);
                let mut mine = 0;
                for i in (t..total).step_by(threads as usize) {
                    let packet = mutate(&mut rng, seeds, options_at);
                    let t0 = Instant::now();
                    let got = catch_unwind(AssertUnwindSafe(|| check(&packet)));
                    let took = t0.elapsed();
                    let Ok(replied) = got else {
                        panic!("{tag}: input {i} panicked: {packet:02x?}");
                    };
                    if took > MAX_PER_INPUT {
                        // Maybe the thread was descheduled: time it again, alone.
                        let again = (0..3)
                            .map(|_| {
                                let t0 = Instant::now();
                                check(&packet);
                                t0.elapsed()
                            })
                            .min()
                            .unwrap_or(took);
                        assert!(
                            again <= MAX_PER_INPUT,
                            "{tag}: input {i} took {again:?}: {packet:02x?}"
                        );
                    }
                    mine += u64::from(replied);
                }
                replies.fetch_add(mine, Ordering::Relaxed);
            });
        }
    });
    let replies = replies.into_inner();
    eprintln!(
        "{tag}: {total} inputs on {threads} threads in {:?}, {replies} replies",
        started.elapsed()
    );
    replies
}

#[test]
fn a_million_dhcp_packets() {
    let book = Book {
        records: AtomicU64::new(0),
    };
    let cfg = DhcpConfig::default();
    let seeds = dhcp_seeds();
    let replies = run("dhcp", &seeds, Some(240), &|packet| {
        let Some(reply) = dhcp::handle(&cfg, &book, packet) else {
            return false;
        };
        // Only a request from the known MAC is ever answered, and the reply is to it.
        assert_eq!(
            packet.get(28..34),
            Some(&KNOWN.octets()[..]),
            "{packet:02x?}"
        );
        assert_eq!(&reply.packet()[28..34], &KNOWN.octets()[..]);
        assert_eq!(reply.packet()[0], 2, "a BOOTREPLY");
        true
    });
    // The reply path must be exercised, not just the rejections.
    assert!(replies > iterations() / 100, "only {replies} replies");
    assert!(book.records.load(Ordering::Relaxed) > replies);
}

#[test]
fn a_million_dns_queries() {
    let book = StaticNames::new()
        .with("vm1.abc.internal.cloudapp.net", Ipv4Addr::new(10, 1, 0, 4))
        .with("vm1", Ipv4Addr::new(10, 1, 0, 4))
        .with_zone("abc.internal.cloudapp.net");
    let seeds = dns_seeds();
    let answered = AtomicU64::new(0);
    let replies = run("dns", &seeds, None, &|packet| {
        let Some(resp) = dns::handle(&book, packet) else {
            return false;
        };
        // Every response echoes the id, is a response, and parses.
        assert_eq!(resp[..2], packet[..2]);
        assert!(resp[2] & 0x80 != 0, "QR set");
        let parsed = DnsMessage::from_vec(&resp).expect("our response parses");
        if !parsed.answers().is_empty() {
            answered.fetch_add(1, Ordering::Relaxed);
        }
        true
    });
    assert!(replies > iterations() / 10, "only {replies} responses");
    assert!(
        answered.into_inner() > iterations() / 1000,
        "too few answers"
    );
}
