//! 10,000 malformed and odd frames from a guest's tap at the DHCP responder
//! (issue 9, R4), set up as vmnode sets up a vnet: a namespace with the
//! anti-spoofing filter and isolation, a bridge holding the gateway and the
//! platform address, the responder bound to it, and a tap (`vt...`, opened as
//! QEMU's is, with a virtio-net header) on the bridge, admitted for its NIC's
//! MAC and address. The test holds the tap's descriptor as QEMU would: what
//! it writes is what a guest sends, what it reads is everything the bridge
//! sends the guest.
//!
//! The frames: bad UDP and IP lengths, bad IP headers, truncated DHCP,
//! options that run past the end, option overload, a wrong magic cookie, huge
//! `hlen`, BOOTREPLYs, noise, valid DISCOVERs, REQUESTs and INFORMs for MACs
//! the book does not know (from the NIC's own MAC, which the filter passes,
//! and from spoofed ones, which it drops). Then: the responder still answers
//! a valid DISCOVER from the NIC, sent nothing to a MAC it does not know
//! (counted on the wire and in the ledger), and the namespace has no route
//! out. A second test sends the same frames from a port the filter does not
//! guard, so the responder's own checks are what is tested.
//!
//! Needs root and nftables.

#[allow(dead_code)]
mod common;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::Ipv4Addr;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{ip, Netns};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use vmnode_network::dhcp::{serve, Binding, DhcpConfig, LeaseBook, LedgerEntry, LedgerKind};
use vmnode_network::plumbing::{attach_to_bridge, create_tap, ensure_bridge, udp_socket_in_ns};
use vmnode_network::{filter, Mac};

/// Frames sent at the responder per test.
const FRAMES: usize = 10_000;
const NIC_MAC: Mac = Mac::new([0x00, 0x0d, 0x3a, 0x10, 0x20, 0x30]);
const NIC_IP: [u8; 4] = [10, 1, 0, 4];
/// The tap's virtio-net header (IFF_VNET_HDR, default size): all zero, no offloads.
const VNET_HDR: usize = 10;

/// Knows one NIC; keeps every ledger line by MAC.
#[derive(Default)]
struct Book {
    ledger: Mutex<HashMap<Mac, Vec<LedgerKind>>>,
}

impl LeaseBook for Book {
    fn binding(&self, mac: &Mac) -> Option<Binding> {
        (*mac == NIC_MAC).then(|| Binding {
            ip: Ipv4Addr::from(NIC_IP),
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
        self.ledger
            .lock()
            .unwrap()
            .entry(*mac)
            .or_default()
            .push(entry.kind);
    }
}

fn checksum(bytes: &[u8]) -> u16 {
    let mut sum: u32 = bytes
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An Ethernet frame to the broadcast address carrying IPv4/UDP.
fn udp_frame(
    src_mac: Mac,
    src_ip: [u8; 4],
    dst_ip: [u8; 4],
    ports: (u16, u16),
    payload: &[u8],
) -> Vec<u8> {
    let mut f = vec![0xff; 6];
    f.extend_from_slice(&src_mac.octets());
    f.extend_from_slice(&[0x08, 0x00]);
    let total = (20 + 8 + payload.len()) as u16;
    let mut iph = vec![0x45, 0, 0, 0, 0, 1, 0, 0, 64, 17, 0, 0];
    iph[2..4].copy_from_slice(&total.to_be_bytes());
    iph.extend_from_slice(&src_ip);
    iph.extend_from_slice(&dst_ip);
    let c = checksum(&iph);
    iph[10..12].copy_from_slice(&c.to_be_bytes());
    f.extend_from_slice(&iph);
    f.extend_from_slice(&ports.0.to_be_bytes());
    f.extend_from_slice(&ports.1.to_be_bytes());
    f.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    f.extend_from_slice(&[0, 0]);
    f.extend_from_slice(payload);
    f
}

/// A DHCP request from `chaddr`: message type `kind`, then `opts`, End.
fn dhcp(chaddr: Mac, kind: u8, ciaddr: [u8; 4], opts: &[u8]) -> Vec<u8> {
    let mut p = vec![0u8; 240];
    p[..4].copy_from_slice(&[1, 1, 6, 0]);
    p[4..8].copy_from_slice(&0x600d_f00d_u32.to_be_bytes());
    p[10] = 0x80;
    p[12..16].copy_from_slice(&ciaddr);
    p[28..34].copy_from_slice(&chaddr.octets());
    p[236..240].copy_from_slice(&[99, 130, 83, 99]);
    p.extend_from_slice(&[53, 1, kind]);
    p.extend_from_slice(opts);
    p.push(255);
    p
}

fn random_mac(rng: &mut StdRng) -> Mac {
    let mut m: [u8; 6] = rng.gen();
    m[0] &= 0xfe;
    if m == NIC_MAC.octets() {
        m[5] ^= 1;
    }
    Mac::new(m)
}

/// Frame `i` of the malformed set. Those from the NIC's MAC and addresses
/// pass the filter; the rest are spoofed.
fn malformed(i: usize, rng: &mut StdRng) -> Vec<u8> {
    let other = random_mac(rng);
    let any_ip = [10, 1, 0, rng.gen_range(5..250)];
    let from = |payload: &[u8]| {
        let src = if rng_bool(i) { [0; 4] } else { NIC_IP };
        udp_frame(NIC_MAC, src, [255; 4], (68, 67), payload)
    };
    let discover = dhcp(NIC_MAC, 1, [0; 4], &[55, 3, 1, 3, 6]);
    match i % 12 {
        // A UDP length that disagrees with the datagram.
        0 => {
            let mut f = from(&discover);
            let len = [0u16, 1, 7, 8, 100, 247, 300, 1000, 65535][rng.gen_range(0..9)];
            f[14 + 20 + 4..14 + 20 + 6].copy_from_slice(&len.to_be_bytes());
            f
        }
        // Truncated DHCP: anything from nothing to one byte short.
        1 => from(&discover[..rng.gen_range(0..discover.len() - 1)]),
        // Options that run past the end, or many options at their longest.
        2 => {
            let mut p = dhcp(NIC_MAC, 1, [0; 4], &[]);
            p.pop();
            if rng.gen_bool(0.5) {
                p.extend_from_slice(&[12, 255, b'x', b'y']);
            } else {
                for code in 1..=rng.gen_range(1..6u8) {
                    p.push(code * 40);
                    p.push(255);
                    p.extend((0..255).map(|_| rng.gen::<u8>()));
                }
            }
            from(&p)
        }
        // A wrong magic cookie.
        3 => {
            let mut p = discover.clone();
            p[236..240].copy_from_slice(&rng.gen::<[u8; 4]>());
            from(&p)
        }
        // A huge hlen (or another hardware type).
        4 => {
            let mut p = discover.clone();
            if rng.gen_bool(0.8) {
                p[2] = rng.gen_range(17..=255);
            } else {
                p[1] = rng.gen_range(2..=255);
            }
            from(&p)
        }
        // A BOOTREPLY: an OFFER as a rogue server would send it.
        5 => {
            let mut p = dhcp(NIC_MAC, 2, [0; 4], &[54, 4, 10, 1, 0, 1]);
            p[0] = 2;
            p[16..20].copy_from_slice(&NIC_IP);
            let sport = if rng.gen_bool(0.5) { 67 } else { 68 };
            udp_frame(NIC_MAC, [0; 4], [255; 4], (sport, 67), &p)
        }
        // Valid DISCOVERs, REQUESTs, INFORMs from MACs the book does not know,
        // sent from the NIC's own MAC (the filter looks at the frame, not at chaddr).
        6 | 7 => {
            let (kind, ciaddr, opts) = match rng.gen_range(0..4) {
                0 => (1, [0; 4], vec![55, 2, 1, 3]),
                1 => (3, [0; 4], vec![50, 4, 10, 1, 0, 4, 54, 4, 168, 63, 129, 16]),
                2 => (3, any_ip, vec![]),
                _ => (8, any_ip, vec![]),
            };
            from(&dhcp(other, kind, ciaddr, &opts))
        }
        // Noise after valid headers.
        8 => {
            let n = rng.gen_range(0..1400);
            from(&(0..n).map(|_| rng.gen()).collect::<Vec<u8>>())
        }
        // A bad IP header: length, checksum, header length, a fragment.
        9 => {
            let mut f = from(&discover);
            match rng.gen_range(0..4) {
                0 => f[16..18].copy_from_slice(&rng.gen::<u16>().to_be_bytes()),
                1 => f[24] ^= 0xff,
                2 => f[14] = 0x40 | rng.gen_range(0..16u8),
                _ => f[20] = 0x20,
            }
            f
        }
        // Spoofed: another MAC in the frame and in chaddr (the filter drops these).
        10 => udp_frame(
            other,
            [0; 4],
            [255; 4],
            (68, 67),
            &dhcp(other, 1, [0; 4], &[]),
        ),
        // Option overload with junk in file/sname, and a relay's giaddr in the subnet.
        _ => {
            let mut p = dhcp(other, 1, [0; 4], &[52, 1, rng.gen_range(1..=3)]);
            for b in &mut p[44..236] {
                *b = rng.gen();
            }
            if rng.gen_bool(0.5) {
                p[24..28].copy_from_slice(&[10, 1, 0, 250]);
            }
            from(&p)
        }
    }
}

/// Half the frames come from 0.0.0.0 (a client without an address), half from the NIC's address.
fn rng_bool(i: usize) -> bool {
    (i / 12) % 2 == 0
}

/// A vnet as vmnode makes it, with the responder running and one tap.
struct Vnet {
    ns: Netns,
    tap: String,
    fd: std::fs::File,
    book: Arc<Book>,
    server: tokio::task::JoinHandle<()>,
}

impl Vnet {
    /// `guarded`: the tap is named and admitted as a NIC's (`vt...`, filter
    /// rules for its MAC and address); otherwise it is a port the filter
    /// does not look at.
    fn new(tag: &str, guarded: bool) -> Vnet {
        let ns = Netns::new(tag);
        filter::ensure_filter(&ns.name).unwrap();
        filter::set_isolated(&ns.name).unwrap();
        ensure_bridge(
            &ns.name,
            "br0",
            &[
                "10.1.0.1/24".parse().unwrap(),
                "168.63.129.16/32".parse().unwrap(),
            ],
        )
        .unwrap();
        let book = Arc::new(Book::default());
        let sock = udp_socket_in_ns(&ns.name, "br0", 67).unwrap();
        let sock = tokio::net::UdpSocket::from_std(sock).unwrap();
        let server = tokio::spawn(serve(sock, DhcpConfig::default(), book.clone()));
        let tap = if guarded { "vt00000000beef" } else { "gx0" }.to_string();
        let fd: OwnedFd = create_tap(&ns.name, &tap).unwrap();
        attach_to_bridge(&ns.name, &tap, "br0").unwrap();
        if guarded {
            filter::allow_nic(&ns.name, &tap, NIC_MAC, Ipv4Addr::from(NIC_IP)).unwrap();
        }
        let fd = std::fs::File::from(fd);
        nix::fcntl::fcntl(
            std::os::fd::AsRawFd::as_raw_fd(&fd),
            nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
        )
        .unwrap();
        Vnet {
            ns,
            tap,
            fd,
            book,
            server,
        }
    }

    /// Reads every frame the bridge sends the tap into `frames` until `stop`.
    fn capture(
        &self,
        frames: Arc<Mutex<Vec<Vec<u8>>>>,
        stop: Arc<AtomicBool>,
    ) -> std::thread::JoinHandle<()> {
        let mut fd = self.fd.try_clone().unwrap();
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 65536];
            while !stop.load(Ordering::SeqCst) {
                match fd.read(&mut buf) {
                    Ok(n) if n > VNET_HDR => frames.lock().unwrap().push(buf[VNET_HDR..n].to_vec()),
                    Ok(_) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(1))
                    }
                    Err(e) => panic!("reading the tap: {e}"),
                }
            }
        })
    }

    /// Writes one frame as the guest would.
    fn send(&self, frame: &[u8]) {
        let mut out = vec![0u8; VNET_HDR];
        out.extend_from_slice(frame);
        // A frame the tap refuses (e.g. too short) counts as sent: the guest tried.
        let _ = (&self.fd).write(&out);
    }
}

/// A DHCP reply in a captured frame.
#[derive(Debug)]
struct Reply {
    op: u8,
    chaddr: Mac,
    xid: u32,
    kind: u8,
    yiaddr: Ipv4Addr,
}

fn dhcp_reply(frame: &[u8]) -> Option<Reply> {
    if frame.get(12..14)? != [0x08, 0x00] || *frame.get(23)? != 17 {
        return None;
    }
    let ihl = usize::from(frame[14] & 0x0f) * 4;
    let udp = frame.get(14 + ihl..)?;
    if udp.get(0..2)? != 67u16.to_be_bytes() {
        return None;
    }
    let p = udp.get(8..)?;
    Some(Reply {
        op: *p.first()?,
        chaddr: Mac::new(p.get(28..34)?.try_into().ok()?),
        xid: u32::from_be_bytes(p.get(4..8)?.try_into().ok()?),
        // Our replies put the message type first.
        kind: match p.get(240..243)? {
            [53, 1, t] => *t,
            _ => 0,
        },
        yiaddr: Ipv4Addr::from(<[u8; 4]>::try_from(p.get(16..20)?).ok()?),
    })
}

/// The xid of the valid DISCOVER sent after the barrage.
const ALIVE_XID: u32 = 0x0a11_7e00;

/// Sends the malformed frames, then a valid DISCOVER from the NIC until it is
/// answered (at most 20 s); returns every DHCP reply captured.
fn barrage(v: &Vnet) -> Vec<Reply> {
    let frames = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let reader = v.capture(frames.clone(), stop.clone());
    let mut rng = StdRng::seed_from_u64(0x000d_3a10);
    for i in 0..FRAMES {
        v.send(&malformed(i, &mut rng));
        // Let the responder keep up, as a guest's virtio queue would pace it.
        if i % 200 == 199 {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    let mut discover = dhcp(NIC_MAC, 1, [0; 4], &[55, 3, 1, 3, 6]);
    discover[4..8].copy_from_slice(&ALIVE_XID.to_be_bytes());
    let discover = udp_frame(NIC_MAC, [0; 4], [255; 4], (68, 67), &discover);
    let alive = |frames: &Mutex<Vec<Vec<u8>>>| {
        frames
            .lock()
            .unwrap()
            .iter()
            .filter_map(|f| dhcp_reply(f))
            .any(|r| r.xid == ALIVE_XID)
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while !alive(&frames) && Instant::now() < deadline {
        v.send(&discover);
        std::thread::sleep(Duration::from_millis(300));
    }
    // Late replies to the barrage are captured too.
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::SeqCst);
    reader.join().unwrap();
    let frames = frames.lock().unwrap();
    frames.iter().filter_map(|f| dhcp_reply(f)).collect()
}

fn check(v: &Vnet, replies: &[Reply]) {
    // Alive: the DISCOVER sent after the barrage got its OFFER on the wire.
    let offers: Vec<&Reply> = replies
        .iter()
        .filter(|r| r.op == 2 && r.chaddr == NIC_MAC && r.kind == 2)
        .collect();
    assert!(
        offers
            .iter()
            .any(|r| r.xid == ALIVE_XID && r.yiaddr == Ipv4Addr::from(NIC_IP)),
        "no OFFER to the NIC after the barrage: {replies:?}"
    );
    // Nothing to a MAC the book does not know: on the wire, and in the ledger.
    let strangers: Vec<&Reply> = replies.iter().filter(|r| r.chaddr != NIC_MAC).collect();
    assert!(
        strangers.is_empty(),
        "replies to unknown MACs: {strangers:?}"
    );
    let ledger = v.book.ledger.lock().unwrap();
    for (mac, kinds) in ledger.iter().filter(|(m, _)| **m != NIC_MAC) {
        assert!(
            kinds.iter().all(|k| *k == LedgerKind::UnknownMac),
            "{mac}: {kinds:?}"
        );
    }
    let unknown: usize = ledger
        .iter()
        .filter(|(m, _)| **m != NIC_MAC)
        .map(|(_, k)| k.len())
        .sum();
    // The barrage reached the responder (and not only its socket's buffer).
    assert!(
        unknown > FRAMES / 12,
        "only {unknown} packets from unknown MACs were read"
    );
    // No way out of the namespace.
    assert_eq!(ip(&v.ns.name, "route show default").trim(), "");
    eprintln!(
        "{FRAMES} frames: {} replies, all to the NIC ({} OFFERs); ledger: {} lines, {unknown} from {} unknown MACs",
        replies.len(),
        offers.len(),
        ledger.values().map(Vec::len).sum::<usize>(),
        ledger.len() - usize::from(ledger.contains_key(&NIC_MAC)),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_frames_from_an_admitted_tap() {
    let v = Vnet::new("dmf", true);
    let replies = tokio::task::block_in_place(|| barrage(&v));
    check(&v, &replies);
    // The spoofed frames never reached the bridge: the filter counted them.
    let dropped = filter::dropped(&v.ns.name, &v.tap).unwrap();
    assert!(
        dropped >= (FRAMES / 12) as u64,
        "filter dropped only {dropped}"
    );
    eprintln!("the filter dropped {dropped} frames");
    v.server.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_frames_from_an_unfiltered_port() {
    let v = Vnet::new("dmu", false);
    let replies = tokio::task::block_in_place(|| barrage(&v));
    check(&v, &replies);
    v.server.abort();
}
