//! Robustness of the packet cores on stable Rust: 10^6 randomized and mutated
//! packets through `dhcp::handle` and 10^6 through `dns::handle`, on all
//! cores. Asserts no panic and no DHCP reply to a MAC the book does not know,
//! and that every DHCP reply parses and every OFFER and ACK carries options 121
//! and 245 (the platform routes and the WireServer), whatever the request asked.
//! The seeds are built here and read from the fuzz corpus
//! (`network/fuzz/corpus/{dhcp,dns}`: hand-made seeds and what a libFuzzer run
//! of the cargo-fuzz targets in `network/fuzz/` kept, minimised with
//! `cargo fuzz cmin`), which those targets use for runs on nightly. Besides the
//! corpus, seeds are crafted here for what a hostile guest would try: option
//! overload, huge `hlen`, options that run past the end, compression pointer
//! loops and chains, labels and names over their limits, EDNS with options,
//! many questions.
//!
//! Every input is timed; the distribution (median, tail percentiles, the
//! slowest input) is printed. An input over 10 ms as run is timed again alone,
//! up to [`RETIMES`] (20) times after a 2 ms pause each, and the fastest of
//! those counts (the 2 cores are shared: a descheduled thread is no slow path,
//! a slow path is slow every time). The speed bound is the project's rule for
//! benchmarks, not for tests: by default (CI) the run only *reports* the
//! slowest input, how many went over 10 ms as run and how many were still over
//! alone. With `VMNODE_FUZZ_STRICT_TIME=1`, which `bench/fuzz.sh` sets, it also
//! asserts that every input was under 10 ms alone and that at most one input in
//! [`RETIMED_ONE_IN`] (and no more than [`RETIMED_FLOOR`] in a short run)
//! needed a re-time, so an intermittently slow path cannot hide behind the
//! fastest of 20 tries.
//!
//! `VMNODE_FUZZ_ITERS` changes the count and `VMNODE_FUZZ_SEED` the random
//! stream: `bench/fuzz.sh` runs 10^7 of each with a fresh seed.

use std::net::Ipv4Addr;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use dhcproto::v4::{DhcpOption, Flags, Message, MessageType, OptionCode};
use dhcproto::{Decodable, Decoder, Encodable, Encoder};
use hickory_proto::op::{Edns, Message as DnsMessage, OpCode, Query};
use hickory_proto::rr::{Name, RecordType};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use vmnode_network::dhcp::{self, Binding, DhcpConfig, LeaseBook, LedgerEntry};
use vmnode_network::dns::{self, StaticNames};
use vmnode_network::{Mac, PLATFORM_ADDR};

const KNOWN: Mac = Mac::new([0x00, 0x0d, 0x3a, 0x01, 0x02, 0x03]);
/// The slowest any one input may be (timed alone); asserted only in strict mode.
const MAX_PER_INPUT: Duration = Duration::from_millis(10);
/// How many times an input over [`MAX_PER_INPUT`] as run is timed again alone.
const RETIMES: usize = 20;
/// Strict mode: at most one input in this many may have needed a re-time.
/// Scheduling alone put 1-2 inputs in 10,000 over 10 ms as run here (2
/// shared cores, two tests at once, other builds); a slow path that more
/// than 0.1% of inputs reach shows above it even when it is fast now and then.
const RETIMED_ONE_IN: u64 = 1_000;
/// Strict mode: the re-times allowed however short the run (a handful of
/// descheduled inputs is the shared machine, not the parser).
const RETIMED_FLOOR: u64 = 10;

/// Whether the 10 ms bound is asserted (`VMNODE_FUZZ_STRICT_TIME=1`, set by
/// `bench/fuzz.sh`) or only reported (the default, as in CI): speed targets are
/// met in benchmarks, never as timed asserts in tests.
fn strict_time() -> bool {
    std::env::var("VMNODE_FUZZ_STRICT_TIME").is_ok_and(|v| v == "1")
}

fn iterations() -> u64 {
    std::env::var("VMNODE_FUZZ_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000)
}

/// The random stream's seed (each thread adds its index); fixed unless given.
fn seed() -> u64 {
    std::env::var("VMNODE_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x5eed_0000)
}

/// Ledger entries kept for the known NIC, as the daemon keeps a bounded ledger per NIC.
const LEDGER_KEPT: usize = 64;
/// The ledger is diagnosed and rendered once per this many records (it costs
/// about 100 µs, which would otherwise cloud the packets' own times).
const DIAGNOSE_EVERY: u64 = 4096;

thread_local! {
    /// The known NIC's last ledger entries, one ledger per fuzzing thread (a
    /// shared one would make the threads wait on each other's lock, and a
    /// holder descheduled on the busy cores would look like a slow input).
    static LEDGER: std::cell::RefCell<std::collections::VecDeque<LedgerEntry>> =
        const { std::cell::RefCell::new(std::collections::VecDeque::new()) };
}

/// Knows one MAC; every call is cheap. Keeps the known NIC's last entries and,
/// every [`DIAGNOSE_EVERY`] records, runs `diagnose` over them and renders them as
/// the API does (JSON), so the ledger is fuzzed by the same packets.
struct Book {
    records: AtomicU64,
    diagnosed: AtomicU64,
}

impl Book {
    fn new() -> Self {
        Book {
            records: AtomicU64::new(0),
            diagnosed: AtomicU64::new(0),
        }
    }
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
    fn commit(&self, _mac: &Mac, _ip: Ipv4Addr) -> Result<(), vmnode_network::dhcp::CommitError> {
        Ok(())
    }
    fn release(&self, _mac: &Mac, _ip: Ipv4Addr) {}
    fn record(&self, mac: &Mac, entry: LedgerEntry) {
        self.records.fetch_add(1, Ordering::Relaxed);
        if *mac != KNOWN {
            return;
        }
        let link_up = entry.at - Duration::from_secs(120);
        let entries = LEDGER.with_borrow_mut(|ledger| {
            if ledger.len() == LEDGER_KEPT {
                ledger.pop_front();
            }
            ledger.push_back(entry);
            let due = self.records.load(Ordering::Relaxed) % DIAGNOSE_EVERY == 0;
            (ledger.len() == LEDGER_KEPT && due)
                .then(|| ledger.iter().cloned().collect::<Vec<LedgerEntry>>())
        });
        if let Some(entries) = entries {
            let now = std::time::SystemTime::now();
            let _ = dhcp::diagnose(&entries, link_up, now);
            let json = serde_json::to_string(&entries).expect("the ledger renders as JSON");
            let back: Vec<LedgerEntry> = serde_json::from_str(&json).expect("and reads back");
            assert_eq!(back, entries);
            self.diagnosed.fetch_add(1, Ordering::Relaxed);
        }
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

/// The seeds made here, repeated until they weigh about as much as the
/// corpus (mostly what libFuzzer kept: odd inputs that reach new code, few of
/// which get an answer), then the corpus.
fn weigh(own: Vec<Vec<u8>>, corpus: Vec<Vec<u8>>) -> Vec<Vec<u8>> {
    let times = (corpus.len() / own.len().max(1)).max(1);
    let mut seeds: Vec<Vec<u8>> = (0..times).flat_map(|_| own.iter().cloned()).collect();
    seeds.extend(corpus);
    seeds
}

fn dhcp_seeds() -> Vec<Vec<u8>> {
    let mut seeds = Vec::new();
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
    seeds.extend(crafted_dhcp());
    weigh(seeds, corpus("dhcp"))
}

/// A BOOTREQUEST header from `mac` with the magic cookie, no options yet.
fn dhcp_header(mac: Mac) -> Vec<u8> {
    let mut p = vec![0u8; 240];
    p[..4].copy_from_slice(&[1, 1, 6, 0]);
    p[4..8].copy_from_slice(&0x0bad_cafe_u32.to_be_bytes());
    p[28..34].copy_from_slice(&mac.octets());
    p[236..240].copy_from_slice(&[99, 130, 83, 99]);
    p
}

/// Hand-made DHCP packets a hostile or broken guest could send.
fn crafted_dhcp() -> Vec<Vec<u8>> {
    let discover = [53, 1, 1];
    let request = [53, 1, 3, 50, 4, 10, 1, 0, 4, 54, 4, 168, 63, 129, 16];
    let mut out = Vec::new();
    let with = |opts: &[u8]| {
        let mut p = dhcp_header(KNOWN);
        p.extend_from_slice(opts);
        p
    };
    // Option overload: the message type only in `file`, then only in `sname`, then both.
    for (overload, field) in [(1u8, 108..236), (2, 44..108), (3, 108..236)] {
        let mut p = with(&[52, 1, overload, 255]);
        p[field.start..field.start + 3].copy_from_slice(&discover);
        p[field.start + 3] = 255;
        out.push(p);
    }
    // Overload whose `file` is all options with no End, and one that runs past `file`.
    let mut p = with(&[52, 1, 1, 255]);
    p[108..236].fill(0);
    p[108..111].copy_from_slice(&discover);
    p[111] = 61;
    p[112] = 200;
    out.push(p);
    // Overload given twice, with different values, and with a bad length.
    out.push(with(&[52, 1, 1, 52, 1, 2, 53, 1, 1, 255]));
    out.push(with(&[52, 2, 1, 1, 53, 1, 1, 255]));
    // Huge hlen, other hardware, a BOOTREPLY, no cookie.
    for (at, v) in [
        (2usize, 255u8),
        (2, 16),
        (2, 0),
        (1, 6),
        (0, 2),
        (0, 0),
        (236, 0),
    ] {
        let mut p = with(&discover);
        p[at] = v;
        out.push(p);
    }
    // An option whose length runs past the packet, and one cut after its code.
    out.push(with(&[53, 1, 1, 12, 255, b'a']));
    out.push(with(&[53, 1, 1, 12]));
    // Message type with length 0, 2, and two conflicting types.
    out.push(with(&[53, 0, 255]));
    out.push(with(&[53, 2, 1, 3, 255]));
    out.push(with(&[53, 1, 1, 53, 1, 3, 255]));
    // Every option at its longest; 1500 bytes of pad; no End at all.
    let mut long = request.to_vec();
    for code in [12u8, 55, 57, 61, 81, 82, 94, 119, 121, 155] {
        long.push(code);
        long.push(255);
        long.extend((0..255u8).map(|i| i.wrapping_mul(7)));
    }
    out.push(with(&long));
    let mut pad = discover.to_vec();
    pad.extend(std::iter::repeat_n(0u8, 1500));
    out.push(with(&pad));
    out.push(with(&request));
    // The decoders that panicked in dhcproto: 80, 81, 94, 152-155 with short lengths.
    for code in [80u8, 81, 94, 152, 153, 154, 155] {
        for len in [0u8, 1, 2, 3] {
            let mut o = discover.to_vec();
            o.extend([code, len]);
            o.extend(std::iter::repeat_n(1u8, usize::from(len)));
            o.push(255);
            out.push(with(&o));
        }
    }
    // A relay (giaddr set, hops) and a relay agent option.
    let mut p = with(&[53, 1, 1, 82, 6, 1, 4, 0, 0, 0, 1, 255]);
    p[3] = 16;
    p[24..28].copy_from_slice(&[10, 1, 0, 250]);
    out.push(p);
    // A valid DISCOVER from a MAC the book does not know, and one whose
    // chaddr is known but whose hlen says only 4 bytes of it count.
    let mut p = dhcp_header(Mac::new([0x02, 0, 0, 0, 0, 1]));
    p.extend_from_slice(&[53, 1, 1, 255]);
    out.push(p);
    let mut p = with(&[53, 1, 1, 255]);
    p[2] = 4;
    out.push(p);
    out
}

fn dns_seeds() -> Vec<Vec<u8>> {
    let mut seeds = Vec::new();
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
    seeds.extend(crafted_dns());
    weigh(seeds, corpus("dns"))
}

/// A query header: id, flags (RD), and the four counts.
fn dns_header(flags: u16, counts: [u16; 4]) -> Vec<u8> {
    let mut p = vec![0x42, 0x42];
    p.extend_from_slice(&flags.to_be_bytes());
    for c in counts {
        p.extend_from_slice(&c.to_be_bytes());
    }
    p
}

/// `vm1.abc.internal.cloudapp.net` as labels.
fn vm1_labels() -> Vec<u8> {
    let mut p = Vec::new();
    for l in ["vm1", "abc", "internal", "cloudapp", "net"] {
        p.push(l.len() as u8);
        p.extend_from_slice(l.as_bytes());
    }
    p.push(0);
    p
}

/// Hand-made DNS queries: compression pointers (valid, looping, chained,
/// pointing forward or past the end), truncated and oversized labels and
/// names, EDNS with options, several questions, odd opcodes and classes.
fn crafted_dns() -> Vec<Vec<u8>> {
    let a_in = [0, 1, 0, 1];
    let mut out = Vec::new();
    let q = |flags: u16, counts: [u16; 4], body: &[u8]| {
        let mut p = dns_header(flags, counts);
        p.extend_from_slice(body);
        p
    };
    // The plain query, then the same name again in the answer by pointer.
    let mut name = vm1_labels();
    name.extend_from_slice(&a_in);
    out.push(q(0x0100, [1, 0, 0, 0], &name));
    let mut two = name.clone();
    two.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 10, 1, 0, 4]);
    out.push(q(0x0100, [1, 1, 0, 0], &two));
    // A pointer to itself, a two-pointer loop, a pointer forward and past the end.
    out.push(q(0x0100, [1, 0, 0, 0], &[0xc0, 12, 0, 1, 0, 1]));
    out.push(q(0x0100, [1, 0, 0, 0], &[0xc0, 14, 0xc0, 12, 0, 1, 0, 1]));
    out.push(q(
        0x0100,
        [1, 0, 0, 0],
        &[0xc0, 20, 0, 1, 0, 1, 3, b'v', b'm', b'1', 0],
    ));
    out.push(q(0x0100, [1, 0, 0, 0], &[0xff, 0xff, 0, 1, 0, 1]));
    // A label, then a pointer back into the label's middle (a loop through data).
    out.push(q(0x0100, [1, 0, 0, 0], &[3, b'v', 0xc0, 13, 0, 1, 0, 1]));
    // A chain of 200 pointers, each to the one before it, ending in a name;
    // the question is a pointer to the last of them.
    let base = 12 + 2 + 4;
    let last = base + 5 + 199 * 2;
    let mut p = q(0x0100, [1, 0, 0, 0], &[]);
    p.extend_from_slice(&(0xc000 | last as u16).to_be_bytes());
    p.extend_from_slice(&a_in);
    p.extend_from_slice(&[3, b'v', b'm', b'1', 0]);
    for i in 0..200 {
        let to = if i == 0 { base } else { base + 5 + (i - 1) * 2 };
        p.extend_from_slice(&(0xc000 | to as u16).to_be_bytes());
    }
    out.push(p);
    // The reserved label types 0x40 and 0x80.
    out.push(q(0x0100, [1, 0, 0, 0], &[0x41, b'a', 0, 0, 1, 0, 1]));
    out.push(q(0x0100, [1, 0, 0, 0], &[0x81, b'a', 0, 0, 1, 0, 1]));
    // A label that runs past the end; one cut after its length.
    out.push(q(0x0100, [1, 0, 0, 0], &[63, b'a', b'b']));
    out.push(q(0x0100, [1, 0, 0, 0], &[3]));
    // Labels of 63 and 64 bytes; names of 255 and 256 bytes.
    for len in [63usize, 64] {
        let mut b = vec![len as u8];
        b.extend(std::iter::repeat_n(b'x', len));
        b.push(0);
        b.extend_from_slice(&a_in);
        out.push(q(0x0100, [1, 0, 0, 0], &b));
    }
    for total in [255usize, 256] {
        let mut b = Vec::new();
        let mut left = total - 1;
        while left > 0 {
            let l = (left - 1).min(63);
            b.push(l as u8);
            b.extend(std::iter::repeat_n(b'y', l));
            left -= l + 1;
        }
        b.push(0);
        b.extend_from_slice(&a_in);
        out.push(q(0x0100, [1, 0, 0, 0], &b));
    }
    // Counts that promise more than is there, and no question at all.
    out.push(q(0x0100, [0xffff, 0, 0, 0], &name));
    out.push(q(0x0100, [1, 0xffff, 0xffff, 0xffff], &name));
    out.push(q(0x0100, [0, 0, 0, 0], &[]));
    // Two questions (FORMERR), each type the server knows, PTR, ANY, class CH and ANY.
    let mut both = name.clone();
    both.extend_from_slice(&name);
    out.push(q(0x0100, [2, 0, 0, 0], &both));
    for (rtype, class) in [(28u16, 1u16), (12, 1), (255, 1), (1, 3), (1, 255), (252, 1)] {
        let mut b = vm1_labels();
        b.extend_from_slice(&rtype.to_be_bytes());
        b.extend_from_slice(&class.to_be_bytes());
        out.push(q(0x0100, [1, 0, 0, 0], &b));
    }
    let mut ptr = Vec::new();
    for l in ["4", "0", "1", "10", "in-addr", "arpa"] {
        ptr.push(l.len() as u8);
        ptr.extend_from_slice(l.as_bytes());
    }
    ptr.extend_from_slice(&[0, 0, 12, 0, 1]);
    out.push(q(0x0100, [1, 0, 0, 0], &ptr));
    // Opcodes IQUERY, STATUS, NOTIFY, UPDATE, 15; TC and Z bits; a response.
    for flags in [
        0x0900u16, 0x1100, 0x2100, 0x2900, 0x7900, 0x0300, 0x0140, 0x8100,
    ] {
        out.push(q(flags, [1, 0, 0, 0], &name));
    }
    // EDNS: OPT with a cookie, a client subnet and padding; two OPT records;
    // an OPT whose option runs past its rdata; an OPT not at the root.
    let opt = |rdata: &[u8]| {
        let mut r = vec![0, 0, 41, 0x10, 0, 0, 0, 0, 0];
        r.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
        r.extend_from_slice(rdata);
        r
    };
    let cookie = [0, 10, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8];
    let ecs = [0, 8, 0, 7, 0, 1, 24, 0, 10, 1, 0];
    let padding = [0, 12, 0, 4, 0, 0, 0, 0];
    for (extra, additional) in [
        (opt(&[]), 1),
        (opt(&[cookie.as_slice(), &ecs, &padding].concat()), 1),
        ([opt(&cookie), opt(&ecs)].concat(), 2),
        (opt(&[0, 10, 0, 200, 1]), 1),
        (
            {
                let mut r = vec![3, b'a', b'b', b'c', 0];
                r.extend_from_slice(&opt(&[])[1..]);
                r
            },
            1,
        ),
    ] {
        let mut b = name.clone();
        b.extend_from_slice(&extra);
        out.push(q(0x0100, [1, 0, 0, additional], &b));
    }
    out
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

/// Times of inputs in power-of-two buckets of nanoseconds, and the slowest.
#[derive(Default)]
struct Times {
    buckets: [u64; 32],
    count: u64,
    max: Duration,
    slowest: Vec<u8>,
}

impl Times {
    fn add(&mut self, took: Duration, input: &[u8]) {
        let ns = took.as_nanos().max(1);
        let b = (127 - ns.leading_zeros()) as usize;
        self.buckets[b.min(self.buckets.len() - 1)] += 1;
        self.count += 1;
        if took > self.max {
            self.max = took;
            self.slowest = input.to_vec();
        }
    }

    fn merge(&mut self, other: Times) {
        for (a, b) in self.buckets.iter_mut().zip(other.buckets) {
            *a += b;
        }
        self.count += other.count;
        if other.max > self.max {
            self.max = other.max;
            self.slowest = other.slowest;
        }
    }

    /// The upper bound of the bucket that holds the `q` quantile.
    fn quantile(&self, q: f64) -> Duration {
        let want = ((self.count as f64) * q).ceil() as u64;
        let mut seen = 0;
        for (b, n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= want.max(1) {
                return Duration::from_nanos(2u64 << b);
            }
        }
        self.max
    }

    /// One line: percentiles (bucket upper bounds), the slowest, and the
    /// histogram's non-empty buckets.
    fn report(&self) -> String {
        let hist: Vec<String> = self
            .buckets
            .iter()
            .enumerate()
            .filter(|(_, n)| **n > 0)
            .map(|(b, n)| format!("<{:?}:{n}", Duration::from_nanos(2u64 << b)))
            .collect();
        format!(
            "per input p50 <{:?}, p99 <{:?}, p99.9 <{:?}, p99.99 <{:?}, max {:?}; histogram {}",
            self.quantile(0.5),
            self.quantile(0.99),
            self.quantile(0.999),
            self.quantile(0.9999),
            self.max,
            hist.join(" ")
        )
    }
}

/// An input that took over [`MAX_PER_INPUT`] as run, and its fastest time alone.
struct Slow {
    index: u64,
    alone: Duration,
    packet: Vec<u8>,
}

/// Times `check` on `packet` alone up to [`RETIMES`] times, each after a pause
/// for a fresh time slice, until once is under [`MAX_PER_INPUT`]; the fastest.
fn time_alone(check: &(dyn Fn(&[u8]) -> bool + Sync), packet: &[u8], as_run: Duration) -> Duration {
    let mut fastest = as_run;
    for _ in 0..RETIMES {
        std::thread::sleep(Duration::from_millis(2));
        let t0 = Instant::now();
        check(packet);
        fastest = fastest.min(t0.elapsed());
        if fastest <= MAX_PER_INPUT {
            break;
        }
    }
    fastest
}

/// Prints how many inputs went over [`MAX_PER_INPUT`] as run and alone and, in
/// strict mode only, asserts the bound and the cap on re-times.
fn judge_times(tag: &str, total: u64, times: &Times, slow: &[Slow]) {
    let still_slow: Vec<&Slow> = slow.iter().filter(|s| s.alone > MAX_PER_INPUT).collect();
    let allowed = (total / RETIMED_ONE_IN).max(RETIMED_FLOOR);
    eprintln!(
        "{tag}: max per input as run {:?}; {} inputs over {MAX_PER_INPUT:?} as run (cap {allowed} when strict), \
         each timed again alone up to {RETIMES} times: slowest alone {:?}, {} still over",
        times.max,
        slow.len(),
        slow.iter().map(|s| s.alone).max().unwrap_or_default(),
        still_slow.len(),
    );
    if !strict_time() {
        eprintln!("{tag}: times reported, not asserted (bench/fuzz.sh asserts the {MAX_PER_INPUT:?} bound)");
        return;
    }
    if let Some(s) = still_slow.first() {
        panic!(
            "{tag}: input {} took {:?} alone (best of {RETIMES}): {:02x?}",
            s.index, s.alone, s.packet
        );
    }
    assert!(
        slow.len() as u64 <= allowed,
        "{tag}: {} of {total} inputs needed a re-time (at most {allowed}): a path that is slow now and then",
        slow.len()
    );
}

/// Runs `check` on `iterations()` inputs spread over all cores; returns how
/// many got a reply. `check` returns whether there was a reply and panics on
/// a broken invariant. Every input is timed; see the module doc for what is
/// done with the times.
fn run(
    tag: &str,
    seeds: &[Vec<u8>],
    options_at: Option<usize>,
    check: &(dyn Fn(&[u8]) -> bool + Sync),
) -> u64 {
    let total = iterations();
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get()) as u64;
    let replies = AtomicU64::new(0);
    let times = std::sync::Mutex::new(Times::default());
    let slow = std::sync::Mutex::new(Vec::<Slow>::new());
    let started = Instant::now();
    std::thread::scope(|s| {
        for t in 0..threads {
            let (replies, times, slow) = (&replies, &times, &slow);
            s.spawn(move || {
                let mut rng = StdRng::seed_from_u64(seed() + t);
                let mut mine = 0;
                let mut my_times = Times::default();
                for i in (t..total).step_by(threads as usize) {
                    let packet = mutate(&mut rng, seeds, options_at);
                    let t0 = Instant::now();
                    let got = catch_unwind(AssertUnwindSafe(|| check(&packet)));
                    let took = t0.elapsed();
                    let Ok(replied) = got else {
                        panic!("{tag}: input {i} panicked: {packet:02x?}");
                    };
                    my_times.add(took, &packet);
                    if took > MAX_PER_INPUT {
                        let alone = time_alone(check, &packet, took);
                        slow.lock().unwrap().push(Slow {
                            index: i,
                            alone,
                            packet,
                        });
                    }
                    mine += u64::from(replied);
                }
                replies.fetch_add(mine, Ordering::Relaxed);
                times.lock().unwrap().merge(my_times);
            });
        }
    });
    let replies = replies.into_inner();
    let times = times.into_inner().unwrap();
    let slow = slow.into_inner().unwrap();
    // "0 panics" is a literal: a panic or a broken invariant has already failed the run.
    eprintln!(
        "{tag}: {total} inputs (seed {:#x}) on {threads} threads in {:?}, {replies} replies, 0 panics",
        seed(),
        started.elapsed()
    );
    eprintln!("{tag}: {}", times.report());
    if times.max <= MAX_PER_INPUT {
        eprintln!("{tag}: the slowest input as run: {:02x?}", times.slowest);
    }
    assert_eq!(times.count, total);
    judge_times(tag, total, &times, &slow);
    replies
}

#[test]
fn a_million_dhcp_packets() {
    let book = Book::new();
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
        assert_platform_options(reply.packet());
        true
    });
    // The reply path must be exercised, not just the rejections.
    assert!(replies > iterations() / 100, "only {replies} replies");
    assert!(book.records.load(Ordering::Relaxed) > replies);
    assert!(
        book.diagnosed.load(Ordering::Relaxed) > 0,
        "the ledger was never diagnosed"
    );
}

/// A reply parses; an OFFER or ACK has the three routes of option 121 and option 245, a NAK
/// neither.
fn assert_platform_options(reply: &[u8]) {
    let m = Message::decode(&mut Decoder::new(reply))
        .unwrap_or_else(|e| panic!("a reply that does not parse ({e}): {reply:02x?}"));
    let routes = match m.opts().get(OptionCode::ClasslessStaticRoute) {
        Some(DhcpOption::ClasslessStaticRoute(r)) => r.len(),
        _ => 0,
    };
    let wireserver = match m.opts().get(OptionCode::Unknown(dhcp::WIRESERVER_OPTION)) {
        Some(DhcpOption::Unknown(o)) => o.data().to_vec(),
        _ => Vec::new(),
    };
    match m.opts().msg_type() {
        Some(MessageType::Offer | MessageType::Ack) => {
            assert_eq!(routes, 3, "{m:?}");
            assert_eq!(wireserver, PLATFORM_ADDR.octets(), "{m:?}");
        }
        Some(MessageType::Nak) => assert_eq!((routes, wireserver.len()), (0, 0), "{m:?}"),
        other => panic!("a reply of type {other:?}"),
    }
}

/// The crafted seeds as they are (not mutated) get the answers they should.
#[test]
fn crafted_seeds_are_answered_as_they_should() {
    let book = Book::new();
    let cfg = DhcpConfig::default();
    for (i, packet) in crafted_dhcp().iter().enumerate() {
        if let Some(reply) = dhcp::handle(&cfg, &book, packet) {
            assert_eq!(&reply.packet()[28..34], &KNOWN.octets()[..], "seed {i}");
            assert_platform_options(reply.packet());
            assert_eq!(packet[..3], [1, 1, 6], "seed {i} answered: {packet:02x?}");
        }
    }
    // The three option-overload DISCOVERs are read like plain ones.
    for packet in &crafted_dhcp()[..3] {
        let reply = dhcp::handle(&cfg, &book, packet).expect("an OFFER under option overload");
        assert_eq!(reply.packet()[0], 2);
    }
    let names = StaticNames::new()
        .with("vm1.abc.internal.cloudapp.net", Ipv4Addr::new(10, 1, 0, 4))
        .with_zone("abc.internal.cloudapp.net");
    let crafted = crafted_dns();
    for (i, packet) in crafted.iter().enumerate() {
        if let Some(resp) = dns::handle(&names, packet) {
            DnsMessage::from_vec(&resp).unwrap_or_else(|e| panic!("dns seed {i}: {e}"));
        }
    }
    // The plain query and the one with a pointer in its answer section get the address.
    for packet in &crafted[..2] {
        let resp = DnsMessage::from_vec(&dns::handle(&names, packet).unwrap()).unwrap();
        assert_eq!(resp.answers().len(), 1, "{resp:?}");
    }
    // Pointer loops are a FORMERR, not a hang.
    for packet in &crafted[2..4] {
        let resp = DnsMessage::from_vec(&dns::handle(&names, packet).unwrap()).unwrap();
        assert_eq!(
            resp.response_code(),
            hickory_proto::op::ResponseCode::FormErr
        );
    }
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
