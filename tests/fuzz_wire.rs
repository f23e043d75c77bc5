//! The WireServer's request path and its health-report parser fuzzed on stable Rust (the
//! project rule: every parser fed by an outsider is fuzzed): `vmnode::fuzzing::wire::run`
//! builds requests and bodies from the pieces the agents send, mutates them and checks the
//! invariants of `guest::wire::answer` (see there), on one thread per core.
//!
//! Asserted: no input panics (the panic names the thread's seed), every status the WireServer
//! gives is seen, and some bodies are read as reports. `VMNODE_FUZZ_ITERS` changes the count
//! (default 2·10^5), `VMNODE_FUZZ_SEED` the random stream.

use std::collections::BTreeMap;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[test]
fn wire_request() {
    let total = env("VMNODE_FUZZ_ITERS", 200_000);
    let seed = env("VMNODE_FUZZ_SEED", 0x3173_0000);
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get()) as u64;
    let started = std::time::Instant::now();
    let mut seen: BTreeMap<String, u64> = BTreeMap::new();
    std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                let share = total / threads + u64::from(t < total % threads);
                let seed = seed + t;
                (
                    seed,
                    s.spawn(move || vmnode::fuzzing::wire::run(seed, share)),
                )
            })
            .collect();
        for (seed, w) in workers {
            let got = w
                .join()
                .unwrap_or_else(|_| panic!("the stream with seed {seed:#x} panicked"));
            for (k, n) in got {
                *seen.entry(k).or_insert(0) += n;
            }
        }
    });
    println!(
        "wire_request: {total} inputs, seed {seed:#x}, {threads} threads, {:.1?}; 0 panics; {seen:?}",
        started.elapsed()
    );
    for key in ["200", "400", "403", "404", "report"] {
        assert!(
            seen.get(key).copied().unwrap_or(0) > 0,
            "no {key}: {seen:?}"
        );
    }
}
