//! vmnode's DHCP responder for `bench/dhcp.py`: the real [`serve`] loop and
//! [`handle`](vmnode_network::dhcp::handle) core, with a "bench mode" lease
//! book that accepts any MAC (perfdhcp makes up its clients' MACs), gives
//! each a stable address from a pool, and appends every lease to a file with
//! `fsync` before the ACK goes out, like the daemon's book does with SQLite.
//! Concurrent commits share one `fsync` (group commit).
//!
//! ```sh
//! dhcp_bench_server --ns NS --bridge br0 --leases /tmp/leases --pool 10.1.0.0/16
//! ```
//! Prints `ready` on stdout once it listens; runs until killed.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::net::Ipv4Addr;
use std::sync::{Arc, Condvar, Mutex};

use vmnode_network::dhcp::{serve, Binding, DhcpConfig, LeaseBook};
use vmnode_network::plumbing::udp_socket_in_ns;
use vmnode_network::{Mac, Subnet};

/// Addresses handed out so far, by MAC.
struct Pool {
    subnet: Subnet,
    next: u32,
    by_mac: HashMap<Mac, Ipv4Addr>,
}

/// Lines waiting for the next fsync, and how far the file is durable.
struct Journal {
    pending: Vec<u8>,
    /// Sequence number of the last line appended to `pending`.
    queued: u64,
    /// Every line up to this one is on disk.
    durable: u64,
    /// Someone is writing and syncing right now.
    flushing: bool,
}

struct BenchBook {
    pool: Mutex<Pool>,
    journal: Mutex<Journal>,
    synced: Condvar,
    file: Mutex<File>,
}

impl BenchBook {
    /// Appends `line` and returns once it is on disk. The first waiter writes
    /// and syncs everything queued so far; the others wait for that sync.
    fn append_durably(&self, line: &str) -> std::io::Result<()> {
        let mut j = self.journal.lock().map_err(poisoned)?;
        j.pending.extend_from_slice(line.as_bytes());
        j.queued += 1;
        let mine = j.queued;
        loop {
            if j.durable >= mine {
                return Ok(());
            }
            if !j.flushing {
                j.flushing = true;
                let batch = std::mem::take(&mut j.pending);
                let upto = j.queued;
                drop(j);
                let result = (|| {
                    let mut f = self.file.lock().map_err(poisoned)?;
                    f.write_all(&batch)?;
                    f.sync_data()
                })();
                j = self.journal.lock().map_err(poisoned)?;
                j.flushing = false;
                if result.is_ok() {
                    j.durable = upto;
                }
                self.synced.notify_all();
                result?;
                continue;
            }
            j = self.synced.wait(j).map_err(poisoned)?;
        }
    }
}

/// A lock whose holder panicked: the journal cannot be trusted.
fn poisoned<T>(_: std::sync::PoisonError<T>) -> std::io::Error {
    std::io::Error::other("journal lock poisoned")
}

impl LeaseBook for BenchBook {
    fn binding(&self, mac: &Mac) -> Option<Binding> {
        let mut pool = self.pool.lock().ok()?;
        let ip = match pool.by_mac.get(mac) {
            Some(ip) => *ip,
            None => {
                // Offsets from 10 up, skipping the broadcast address.
                let size = 1u32 << (32 - u32::from(pool.subnet.prefix()));
                if pool.next >= size - 1 {
                    return None;
                }
                let ip = Ipv4Addr::from(u32::from(pool.subnet.network_addr()) + pool.next);
                pool.next += 1;
                pool.by_mac.insert(*mac, ip);
                ip
            }
        };
        Some(Binding {
            ip,
            prefix: pool.subnet.prefix(),
            router: pool.subnet.gateway(),
            hostname: String::new(),
            domain: String::new(),
        })
    }

    fn commit(&self, mac: &Mac, ip: Ipv4Addr) -> Result<(), vmnode_network::dhcp::CommitError> {
        Ok(self.append_durably(&format!("{mac} {ip}\n"))?)
    }

    fn release(&self, _mac: &Mac, _ip: Ipv4Addr) {}
}

fn arg(args: &[String], name: &str) -> Option<String> {
    args.windows(2).find(|w| w[0] == name).map(|w| w[1].clone())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: dhcp_bench_server --ns NS --bridge BR --leases FILE [--pool CIDR]";
    let (Some(ns), Some(bridge), Some(leases)) = (
        arg(&args, "--ns"),
        arg(&args, "--bridge"),
        arg(&args, "--leases"),
    ) else {
        eprintln!("{usage}");
        std::process::exit(2);
    };
    let subnet: Subnet = arg(&args, "--pool")
        .unwrap_or_else(|| "10.1.0.0/16".into())
        .parse()
        .expect("--pool: a subnet like 10.1.0.0/16");
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&leases)
        .expect("open the lease file");
    let book = Arc::new(BenchBook {
        pool: Mutex::new(Pool {
            subnet,
            next: 10,
            by_mac: HashMap::new(),
        }),
        journal: Mutex::new(Journal {
            pending: Vec::new(),
            queued: 0,
            durable: 0,
            flushing: false,
        }),
        synced: Condvar::new(),
        file: Mutex::new(file),
    });
    let cfg = DhcpConfig {
        server_id: subnet.gateway(),
        dns: vec![subnet.gateway()],
        lease_secs: 3600,
        ..DhcpConfig::default()
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(async move {
        let sock = udp_socket_in_ns(&ns, &bridge, 67).expect("DHCP socket in the namespace");
        let sock = tokio::net::UdpSocket::from_std(sock).expect("tokio socket");
        println!("ready");
        serve(sock, cfg, book).await;
    });
}
