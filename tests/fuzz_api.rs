//! The management API's body parsers and the template language fuzzed on stable Rust (issue 18,
//! R4), as `network/tests/robustness.rs` does for DHCP and DNS: 10^6 inputs each, seeded from the
//! corpus the cargo-fuzz targets share (`fuzz/corpus/{arm_json,template_expr}`), mutated with a
//! seeded RNG, run through `vmnode::fuzzing::api` — the handlers' own parse and validate
//! functions, no HTTP (`tests/api_fuzz.rs` does HTTP).
//!
//! * `arm_json`: PUT bodies of VMs, extensions, vnets, NICs and deployments; mutated mostly as
//!   JSON trees (fields removed, retyped, swapped between seeds, hostile strings and numbers,
//!   template expressions edited), some as bytes. The parsers are pure (a `&Value` in, a value or
//!   the cloud's error out, no node state), so a rejected body changes nothing by construction.
//! * `template_expr`: expressions against a template with parameters and variables; mutated as
//!   text, and random expression trees over the known functions.
//!
//! Asserted: no input panics (each input runs under `catch_unwind`; the ones that did are
//! printed). Printed: inputs, seed, how many each parser took, the slowest input's time and how
//! many took over 10 ms. The 10 ms bound itself is asserted by `bench/fuzz.sh`
//! (`VMNODE_FUZZ_MAX_MS=10`: a slow input is run again alone, up to 20 times, and must be under
//! once — the cores are shared), never in CI: no timed asserts in tests.
//!
//! `VMNODE_FUZZ_ITERS` changes the count, `VMNODE_FUZZ_SEED` the random stream.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Map, Value};
use vmnode::fuzzing::api;

/// What an input over is counted (and, under `bench/fuzz.sh`, refused).
const SLOW: Duration = Duration::from_millis(10);
/// Inputs kept of each kind (panicking, slow) for the report.
const KEPT: usize = 20;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn iterations() -> u64 {
    env_u64("VMNODE_FUZZ_ITERS", 1_000_000)
}

fn seed() -> u64 {
    env_u64("VMNODE_FUZZ_SEED", 0x5eed_a910)
}

#[derive(Default)]
struct Tally {
    inputs: AtomicU64,
    accepted: AtomicU64,
    slow: AtomicU64,
    panics: AtomicU64,
    max_ns: AtomicU64,
    panicked: Mutex<Vec<(Vec<u8>, String)>>,
    slowest: Mutex<Vec<Vec<u8>>>,
}

fn keep<T>(list: &Mutex<Vec<T>>, item: T) {
    let mut l = list.lock().unwrap_or_else(|p| p.into_inner());
    if l.len() < KEPT {
        l.push(item);
    }
}

fn message(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_default()
}

/// Runs `iterations()` inputs made by `make` through `target` on every core; reports, and
/// asserts no panic (and, when `VMNODE_FUZZ_MAX_MS` is set, the time bound).
fn run(
    name: &str,
    make: impl Fn(&mut StdRng) -> Vec<u8> + Sync,
    target: impl Fn(&[u8]) -> bool + Sync,
) {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
    let (total, seed) = (iterations(), seed());
    let tally = Tally::default();
    let started = Instant::now();
    std::thread::scope(|s| {
        for t in 0..threads {
            let (tally, make, target) = (&tally, &make, &target);
            s.spawn(move || {
                let mut rng = StdRng::seed_from_u64(seed.wrapping_add(t));
                let n = total / threads + u64::from(t < total % threads);
                for _ in 0..n {
                    let input = make(&mut rng);
                    let t0 = Instant::now();
                    let got = catch_unwind(AssertUnwindSafe(|| target(&input)));
                    let ns = t0.elapsed().as_nanos() as u64;
                    tally.inputs.fetch_add(1, Ordering::Relaxed);
                    tally.max_ns.fetch_max(ns, Ordering::Relaxed);
                    if ns > SLOW.as_nanos() as u64 {
                        tally.slow.fetch_add(1, Ordering::Relaxed);
                        keep(&tally.slowest, input.clone());
                    }
                    match got {
                        Ok(true) => {
                            tally.accepted.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(false) => {}
                        Err(p) => {
                            tally.panics.fetch_add(1, Ordering::Relaxed);
                            keep(&tally.panicked, (input, message(p.as_ref())));
                        }
                    }
                }
            });
        }
    });
    let panicked = tally.panicked.into_inner().unwrap();
    eprintln!(
        "{name}: {} inputs, seed {seed}, {threads} threads, {:.1} s; {} accepted; {} panics; \
         slowest input {:.3} ms, {} over {} ms",
        tally.inputs.load(Ordering::Relaxed),
        started.elapsed().as_secs_f64(),
        tally.accepted.load(Ordering::Relaxed),
        tally.panics.load(Ordering::Relaxed),
        tally.max_ns.load(Ordering::Relaxed) as f64 / 1e6,
        tally.slow.load(Ordering::Relaxed),
        SLOW.as_millis(),
    );
    for (input, why) in &panicked {
        eprintln!(
            "{name}: PANIC {why}\n  input: {}",
            String::from_utf8_lossy(input).escape_debug()
        );
    }
    assert!(
        panicked.is_empty(),
        "{name}: {} inputs panicked (the first {} above)",
        tally.panics.load(Ordering::Relaxed),
        panicked.len()
    );
    // The slow ones again, each alone, best of 20: a thread descheduled on the shared cores
    // is not a slow path.
    let mut worst: Option<(Duration, Vec<u8>)> = None;
    for input in tally.slowest.into_inner().unwrap() {
        let best = (0..20)
            .map(|_| {
                let t0 = Instant::now();
                let _ = target(&input);
                t0.elapsed()
            })
            .min()
            .unwrap();
        if worst.as_ref().is_none_or(|(w, _)| best > *w) {
            worst = Some((best, input));
        }
    }
    let Some((best, input)) = worst else {
        return;
    };
    let shown: String = String::from_utf8_lossy(&input).chars().take(300).collect();
    eprintln!(
        "{name}: the slowest of those alone, best of 20: {best:?}: {}",
        shown.escape_debug()
    );
    if let Ok(bound) = std::env::var("VMNODE_FUZZ_MAX_MS") {
        let bound = Duration::from_millis(bound.parse().expect("VMNODE_FUZZ_MAX_MS is a number"));
        assert!(
            best < bound,
            "{name}: an input takes {best:?} alone, over {bound:?}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Mutations

/// Strings a hostile client would try, where a parser expects a name, id, address or expression.
const HOSTILE: &[&str] = &[
    "",
    "[",
    "]",
    "[]",
    "[[",
    "[concat(",
    "[concat('a'",
    "[parameters('",
    "[variables('loop')]",
    "[resourceGroup().id.x[0]]",
    "[format('{0}{1}{99}', 'a')]",
    "\u{a0}",
    "[concat(\u{a0}'a')]",
    "ü🦀\u{202e}",
    "\0",
    "../../..",
    "/subscriptions/",
    "/subscriptions/x/resourceGroups/rg1/providers/Microsoft.Network/virtualNetworks/v/subnets/",
    "/resourceGroups//networkInterfaces/",
    "10.1.0.0/33",
    "10.1.0.0/0",
    "255.255.255.255",
    "0.0.0.0/32",
    "::1",
    "Static",
    "Dynamic",
    "Empty",
    "Attach",
    "Incremental",
    "Complete",
    "Standard_B1s",
    "Microsoft.Compute/virtualMachines",
    "Microsoft.Network/networkInterfaces",
    "Microsoft.Azure.Extensions",
    "CustomScript",
    "ssh-rsa AAAA",
    "powershell -c x",
    "%2F%2e%2e",
    "-9223372036854775809",
    "99999999999999999999999",
];

fn hostile_value(rng: &mut StdRng) -> Value {
    match rng.gen_range(0..12) {
        0 => Value::Null,
        1 => Value::Bool(rng.gen()),
        2 => json!(rng.gen::<i64>()),
        3 => json!(rng.gen::<u64>()),
        4 => json!(rng.gen::<f64>() * 1e308),
        5 => [
            json!(-1),
            json!(0),
            json!(u32::MAX),
            json!(i64::MIN),
            json!(u64::MAX),
        ][rng.gen_range(0..5)]
        .clone(),
        6 => json!("x".repeat(rng.gen_range(0..5000))),
        7 => json!([]),
        8 => json!({}),
        _ => json!(HOSTILE[rng.gen_range(0..HOSTILE.len())]),
    }
}

/// A JSON pointer to every node of `v`.
fn collect_pointers(v: &Value, at: String, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                let k = k.replace('~', "~0").replace('/', "~1");
                collect_pointers(x, format!("{at}/{k}"), out);
            }
        }
        Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                collect_pointers(x, format!("{at}/{i}"), out);
            }
        }
        _ => {}
    }
    out.push(at);
}

/// `s` with a few characters inserted, removed or duplicated (mostly expression syntax).
fn mutate_text(rng: &mut StdRng, s: &str) -> String {
    const PIECES: &[&str] = &[
        "(",
        ")",
        "[",
        "]",
        ",",
        ".",
        "'",
        "''",
        " ",
        "\u{a0}",
        "-",
        "0",
        "9",
        "a",
        "concat(",
        "format(",
        "variables('",
        "parameters('",
        "resourceId(",
        "if(",
        "length(",
        "[0]",
        ".id",
        "🦀",
        "{0}",
        "int(",
        "string(",
        "uniqueString(",
        "base64(",
    ];
    let mut chars: Vec<char> = s.chars().collect();
    for _ in 0..rng.gen_range(1..4) {
        let at = rng.gen_range(0..=chars.len());
        match rng.gen_range(0..4) {
            0 if !chars.is_empty() => {
                let end = (at + rng.gen_range(1..8)).min(chars.len());
                chars.drain(at.min(end)..end);
            }
            1 if !chars.is_empty() => {
                let end = (at + rng.gen_range(1..16)).min(chars.len());
                let piece: Vec<char> = chars[at.min(end)..end].to_vec();
                chars.splice(at..at, piece);
            }
            _ => {
                let p = PIECES[rng.gen_range(0..PIECES.len())];
                chars.splice(at..at, p.chars());
            }
        }
    }
    chars.into_iter().collect()
}

/// A corpus seed with the JSON pointer of each of its nodes.
struct Seed {
    value: Value,
    pointers: Vec<String>,
}

impl Seed {
    fn new(value: Value) -> Seed {
        let mut pointers = Vec::new();
        collect_pointers(&value, String::new(), &mut pointers);
        Seed { value, pointers }
    }
    fn any_node(&self, rng: &mut StdRng) -> Value {
        let p = &self.pointers[rng.gen_range(0..self.pointers.len())];
        self.value.pointer(p).cloned().unwrap_or(Value::Null)
    }
}

/// One seed, mutated as a JSON tree (most inputs) or as bytes. The nodes to change are picked
/// among the seed's own (a node a previous step replaced or removed is skipped).
fn mutate_json(rng: &mut StdRng, seeds: &[Seed], keys: &[String]) -> Vec<u8> {
    let seed = &seeds[rng.gen_range(0..seeds.len())];
    let mut v = seed.value.clone();
    if rng.gen_range(0..10) < 2 {
        let mut bytes = serde_json::to_vec(&v).unwrap();
        for _ in 0..rng.gen_range(1..6) {
            let at = rng.gen_range(0..bytes.len());
            match rng.gen_range(0..3) {
                0 => bytes[at] ^= 1 << rng.gen_range(0..8),
                1 => bytes.insert(at, b"{}[]\",:0-e\\ u"[rng.gen_range(0..13)]),
                _ => bytes.truncate(at.max(1)),
            }
        }
        return bytes;
    }
    for _ in 0..rng.gen_range(1..5) {
        let ptr = &seed.pointers[rng.gen_range(0..seed.pointers.len())];
        let donor = seeds[rng.gen_range(0..seeds.len())].any_node(rng);
        let Some(node) = v.pointer_mut(ptr) else {
            continue;
        };
        match rng.gen_range(0..8) {
            0 | 1 => *node = hostile_value(rng),
            2 => *node = donor,
            3 => {
                if let Value::String(s) = node {
                    *s = mutate_text(rng, s);
                } else {
                    *node = hostile_value(rng);
                }
            }
            4 => {
                if let Value::Object(m) = node {
                    let k = keys[rng.gen_range(0..keys.len())].clone();
                    m.insert(k, hostile_value(rng));
                }
            }
            5 => {
                if let Value::Object(m) = node {
                    if let Some(k) = m.keys().nth(rng.gen_range(0..m.len().max(1))).cloned() {
                        m.remove(&k);
                    }
                }
            }
            6 => {
                if let Value::Array(a) = node {
                    if let Some(x) = a.first().cloned() {
                        for _ in 0..rng.gen_range(1..64) {
                            a.push(x.clone());
                        }
                    }
                }
            }
            _ => {
                // Wrapped: an object where a string was, or nested once more.
                let inner = node.take();
                *node = match rng.gen() {
                    true => json!([inner]),
                    false => json!({ "value": inner }),
                };
            }
        }
    }
    serde_json::to_vec(&v).unwrap()
}

fn keys_of(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                out.push(k.clone());
                keys_of(x, out);
            }
        }
        Value::Array(a) => a.iter().for_each(|x| keys_of(x, out)),
        _ => {}
    }
}

/// A random expression tree over the functions `eval.rs` knows (and a few it does not).
fn random_expr(rng: &mut StdRng, depth: u32) -> String {
    const FUNCS: &[&str] = &[
        "concat",
        "format",
        "toLower",
        "toUpper",
        "string",
        "int",
        "equals",
        "not",
        "and",
        "or",
        "if",
        "empty",
        "length",
        "base64",
        "uniqueString",
        "resourceGroup",
        "subscription",
        "deployment",
        "resourceId",
        "parameters",
        "variables",
        "reference",
        "nosuch",
        "true",
        "false",
    ];
    const NAMES: &[&str] = &[
        "name", "count", "flag", "list", "obj", "suffix", "prefix", "nicName", "ids", "nested",
        "loop", "missing",
    ];
    let leaf = depth == 0 || rng.gen_range(0..3) == 0;
    let mut e = if leaf {
        match rng.gen_range(0..3) {
            0 => format!("'{}'", NAMES[rng.gen_range(0..NAMES.len())]),
            1 => rng.gen_range(-3i64..100).to_string(),
            _ => format!(
                "'{}'",
                HOSTILE[rng.gen_range(0..HOSTILE.len())].replace('\'', "''")
            ),
        }
    } else {
        let f = FUNCS[rng.gen_range(0..FUNCS.len())];
        let args: Vec<String> = (0..rng.gen_range(0..4))
            .map(|_| random_expr(rng, depth - 1))
            .collect();
        format!("{f}({})", args.join(", "))
    };
    for _ in 0..rng.gen_range(0..3) {
        match rng.gen_range(0..3) {
            0 => e.push_str(&format!(
                ".{}",
                ["id", "name", "k", "n", "location"][rng.gen_range(0..5)]
            )),
            1 => e.push_str(&format!("[{}]", rng.gen_range(0..4))),
            _ => {}
        }
    }
    e
}

// ---------------------------------------------------------------------------------------------
// The loops

#[test]
fn arm_json_bodies_never_panic() {
    let raw = vmnode::fuzzing::corpus("arm_json");
    let seeds: Vec<Value> = raw
        .iter()
        .map(|b| serde_json::from_slice(b).expect("corpus seeds are JSON"))
        .collect();
    // The seeds are what clients send: each is taken by the parser it is for.
    for (b, v) in raw.iter().zip(&seeds) {
        let got = api::arm_json(b).unwrap();
        let any = got.vm || got.extension || got.vnet || got.nic || got.deployment;
        let storage = v.get("sku").is_some();
        assert!(any || storage, "no parser takes the seed {v}");
    }
    let dep = seeds
        .iter()
        .find(|v| v["properties"].get("template").is_some())
        .unwrap();
    assert_eq!(
        api::arm_body(dep).planned,
        4,
        "the seed deployment plans its 4 resources"
    );
    let mut keys = Vec::new();
    for s in &seeds {
        keys_of(s, &mut keys);
    }
    keys.sort();
    keys.dedup();
    let seeds: Vec<Seed> = seeds.into_iter().map(Seed::new).collect();
    run(
        "arm_json",
        |rng| match rng.gen_range(0..50) {
            // Now and then a raw seed or random bytes, as libFuzzer would start.
            0 => raw[rng.gen_range(0..raw.len())].clone(),
            1 => (0..rng.gen_range(0..64)).map(|_| rng.gen()).collect(),
            _ => mutate_json(rng, &seeds, &keys),
        },
        |data| {
            api::arm_json(data)
                .is_some_and(|v| v.vm || v.extension || v.vnet || v.nic || v.deployment)
        },
    );
}

#[test]
fn template_expressions_never_panic() {
    let seeds: Vec<String> = vmnode::fuzzing::corpus("template_expr")
        .into_iter()
        .map(|b| String::from_utf8(b).expect("corpus seeds are UTF-8"))
        .collect();
    for s in &seeds {
        assert!(api::template_expr(s.as_bytes()).is_some(), "{s}");
    }
    run(
        "template_expr",
        |rng| match rng.gen_range(0..4) {
            0 => random_expr(rng, 4).into_bytes(),
            1 => {
                // Two seeds spliced.
                let (a, b) = (
                    &seeds[rng.gen_range(0..seeds.len())],
                    &seeds[rng.gen_range(0..seeds.len())],
                );
                let (i, j) = (rng.gen_range(0..=a.len()), rng.gen_range(0..=b.len()));
                let (i, j) = (floor(a, i), floor(b, j));
                format!("{}{}", &a[..i], &b[j..]).into_bytes()
            }
            _ => {
                let seed = &seeds[rng.gen_range(0..seeds.len())];
                mutate_text(rng, seed).into_bytes()
            }
        },
        |data| api::template_expr(data) == Some(true),
    );
}

/// The nearest character boundary at or below `i`.
fn floor(s: &str, mut i: usize) -> usize {
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

#[test]
fn deep_and_wide_bodies_are_refused() {
    // serde_json's own bound (128 levels) is what keeps the parsers' recursion short: a deeper
    // body is not JSON (axum's 400), one within it is walked and taken by no parser.
    let nested = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
    assert_eq!(
        api::arm_json(nested(120).as_bytes()),
        Some(api::Verdicts::default())
    );
    assert_eq!(api::arm_json(nested(100_000).as_bytes()), None);
    let mut wide = Map::new();
    wide.insert(
        "properties".into(),
        json!({"subnets": vec![json!({"name": 1}); 10_000]}),
    );
    assert_eq!(
        api::arm_body(&Value::Object(wide)),
        api::Verdicts::default()
    );
}
