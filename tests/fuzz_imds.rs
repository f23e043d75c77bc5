//! The Instance Metadata Service's request path fuzzed on stable Rust (the project rule: every
//! parser fed by an outsider is fuzzed): request heads seeded from `fuzz/corpus/imds_request`
//! (the cargo-fuzz target's corpus), mutated with a seeded RNG and run through
//! `vmnode::fuzzing::imds::request` — `guest::imds::answer`, the function every vnet's IMDS
//! listener calls, and its invariants (see there).
//!
//! Asserted: no input panics (the one that did is named, with the seed), and the loop reaches
//! past the rules (documents and leaves served, each refusal seen). `VMNODE_FUZZ_ITERS` changes
//! the count (default 2·10^5), `VMNODE_FUZZ_SEED` the random stream.

use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use vmnode::fuzzing::imds::{request, Outcome};

/// Pieces a guest would put in a request head.
const TOKENS: &[&str] = &[
    "GET ",
    "POST ",
    "HEAD ",
    "/metadata",
    "/metadata/instance",
    "/metadata/versions",
    "/compute",
    "/network/interface/0",
    "/ipv4/ipAddress/0/privateIpAddress",
    "/name",
    "/osProfile/adminUsername",
    "/publicKeys/0/keyData",
    "/tagsList/0",
    "/18446744073709551616",
    "/-1",
    "?",
    "&",
    "=",
    "api-version=2021-02-01",
    "api-version=2018-02-01",
    "API-Version=2021-08-01",
    "api-version=2099-01-01",
    "format=text",
    "format=json",
    "extended=true",
    "%61pi-version",
    "%ff",
    "%",
    "+",
    " HTTP/1.1\r\n",
    "\r\n",
    "Metadata: true\r\n",
    "metadata: True\r\n",
    "Metadata: false\r\n",
    "X-Forwarded-For: 10.1.0.9\r\n",
    ":",
    "/",
    "//",
    "\0",
    "\u{e9}",
];

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A seed with a few edits: tokens put in, bytes changed, pieces cut out or repeated.
fn input(rng: &mut StdRng, seeds: &[Vec<u8>]) -> Vec<u8> {
    let mut p = seeds[rng.gen_range(0..seeds.len())].clone();
    for _ in 0..rng.gen_range(1..5) {
        let at = rng.gen_range(0..=p.len());
        match rng.gen_range(0..5) {
            0 | 1 => {
                let t = TOKENS[rng.gen_range(0..TOKENS.len())].as_bytes();
                let times = if rng.gen_ratio(1, 20) {
                    rng.gen_range(1..300)
                } else {
                    1
                };
                p.splice(at..at, t.repeat(times));
            }
            2 => {
                if let Some(b) = p.get_mut(at) {
                    *b = rng.gen();
                }
            }
            3 => {
                let end = (at + rng.gen_range(1..24)).min(p.len());
                p.drain(at..end);
            }
            _ => p.truncate(at.max(8)),
        }
    }
    p
}

#[test]
fn imds_request() {
    let seeds = vmnode::fuzzing::corpus("imds_request");
    let (total, seed) = (
        env("VMNODE_FUZZ_ITERS", 200_000),
        env("VMNODE_FUZZ_SEED", 0x1d5_0000),
    );
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get()) as u64;
    let started = std::time::Instant::now();
    let tallies: Vec<BTreeMap<String, u64>> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                let seeds = &seeds;
                s.spawn(move || {
                    let mut rng = StdRng::seed_from_u64(seed + t);
                    let mut seen = BTreeMap::new();
                    for i in (t..total).step_by(threads as usize) {
                        let data = input(&mut rng, seeds);
                        let got = catch_unwind(AssertUnwindSafe(|| request(&data))).unwrap_or_else(
                            |_| {
                                panic!(
                                    "input {i} (seed {seed:#x}) panicked: {:?}",
                                    String::from_utf8_lossy(&data)
                                )
                            },
                        );
                        let key = match got {
                            Outcome::NotARequest => "not a request".to_string(),
                            Outcome::Answered(status) => status.to_string(),
                        };
                        *seen.entry(key).or_insert(0) += 1;
                    }
                    seen
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).collect()
    });
    let mut seen: BTreeMap<String, u64> = BTreeMap::new();
    for (k, n) in tallies.into_iter().flatten() {
        *seen.entry(k).or_insert(0) += n;
    }
    println!(
        "imds_request: {total} inputs, seed {seed:#x}, {threads} threads, {:.1?}; 0 panics; {seen:?}",
        started.elapsed()
    );
    for status in ["200", "400", "404", "405"] {
        assert!(
            seen.get(status).copied().unwrap_or(0) > 0,
            "no {status}: {seen:?}"
        );
    }
}
