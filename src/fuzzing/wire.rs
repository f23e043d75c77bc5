//! The WireServer's request path as a guest drives it: requests built from the pieces waagent
//! and cloud-init send (methods, paths, queries, headers, health-report bodies), mutated, run
//! through `guest::wire::answer` — the pure function the per-vnet listener calls — for a known
//! VM and for a caller no VM holds, and the bodies alone through the health-report parser.
//!
//! Invariants, checked by panicking: every answer is 200, 400, 403 or 404; an XML answer is
//! well-formed; nobody's caller gets no goal state, configuration or accepted report; an
//! accepted report names the caller's own container and instance, with a state of `Ready` or
//! `NotReady`.

use std::collections::BTreeMap;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::guest::imds::{Facts, Request};
use crate::guest::wire::{self, health, Identity};

const METHODS: &[&str] = &["GET", "POST", "PUT", "HEAD", "get", ""];
const PATHS: &[&str] = &[
    "/",
    "/machine",
    "/machine/",
    "/machine//",
    "/HealthService",
    "/metadata/instance",
    "/machine/x/y",
    "",
];
const QUERY: &[&str] = &[
    "comp=versions",
    "comp=goalstate",
    "comp=health",
    "comp=telemetrydata",
    "comp=config",
    "COMP=config",
    "type=hostingEnvironmentConfig",
    "type=sharedConfig",
    "type=fullConfig",
    "incarnation=1",
    "comp",
    "=",
    "&",
    "%ff",
];
/// What the agents send (method, path, query), half of the requests.
const REAL: &[(&str, &str, &str)] = &[
    ("GET", "/", "comp=versions"),
    ("GET", "/machine/", "comp=goalstate"),
    ("GET", "/machine", "comp=goalstate"),
    ("POST", "/machine", "comp=health"),
    ("POST", "/machine/", "comp=health"),
    ("POST", "/machine", "comp=telemetrydata"),
    ("POST", "/HealthService", ""),
];
/// Pieces spliced into bodies.
const XML_BITS: &[&str] = &[
    "<Health>",
    "</Health>",
    "<State>Ready</State>",
    "<State>NotReady</State>",
    "<Details><SubStatus>ProvisioningFailed</SubStatus><Description>x</Description></Details>",
    "<![CDATA[<a>]]>",
    "&lt;",
    "&bogus;",
    "&#0;",
    "<?xml version=\"1.0\"?>",
    "<!DOCTYPE x [<!ENTITY a \"b\">]>",
    "<a:Health xmlns:a=\"u\">",
    "<Container>",
    "<Role>",
    "\0",
    "\u{e9}",
    "<",
    ">",
];

fn vm() -> Facts {
    Facts {
        vm_id: "02aab8a4-74ef-476e-8182-f6d2ba4166a6".into(),
        name: "vm1".into(),
        ..Facts::default()
    }
}

fn other() -> Facts {
    Facts {
        vm_id: "11111111-2222-3333-4444-555555555555".into(),
        name: "vm2".into(),
        ..Facts::default()
    }
}

/// A health report from `id` in waagent's shape.
fn report(id: &Identity, state: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?><Health><GoalStateIncarnation>1\
         </GoalStateIncarnation><Container><ContainerId>{}</ContainerId><RoleInstanceList><Role>\
         <InstanceId>{}</InstanceId><Health><State>{state}</State></Health></Role>\
         </RoleInstanceList></Container></Health>",
        id.container_id, id.instance_id
    )
}

fn pick<'a>(rng: &mut StdRng, from: &[&'a str]) -> &'a str {
    from[rng.gen_range(0..from.len())]
}

/// A body: a report (own or another's) with edits, or pieces, or bytes.
fn body(rng: &mut StdRng) -> Vec<u8> {
    let mut b = match rng.gen_range(0..4) {
        0 => report(&Identity::of(&vm()), pick(rng, &["Ready", "NotReady", "x"])).into_bytes(),
        1 => report(&Identity::of(&other()), "Ready").into_bytes(),
        2 => (0..rng.gen_range(0..12))
            .flat_map(|_| pick(rng, XML_BITS).as_bytes().to_vec())
            .collect(),
        _ => (0..rng.gen_range(0..64)).map(|_| rng.gen()).collect(),
    };
    for _ in 0..rng.gen_range(0..4) {
        let at = rng.gen_range(0..=b.len());
        match rng.gen_range(0..3) {
            0 => {
                let bit = pick(rng, XML_BITS).repeat(if rng.gen_ratio(1, 30) { 40 } else { 1 });
                b.splice(at..at, bit.into_bytes());
            }
            1 => b.truncate(at),
            _ => {
                if let Some(x) = b.get_mut(at) {
                    *x = rng.gen();
                }
            }
        }
    }
    b
}

/// A request: one the agents send, or a method, a path (sometimes the caller's own
/// configuration path) and a query from pieces.
fn request(rng: &mut StdRng) -> Request {
    let id = Identity::of(&vm());
    let own = format!("/machine/{}/{}", id.container_id, id.instance_id);
    let path = if rng.gen_ratio(1, 4) {
        own
    } else {
        pick(rng, PATHS).to_string()
    };
    let query: Vec<&str> = (0..rng.gen_range(0..4)).map(|_| pick(rng, QUERY)).collect();
    let (method, path, query) = if rng.gen_ratio(1, 2) {
        let (m, p, q) = REAL[rng.gen_range(0..REAL.len())];
        (m, p.to_string(), q.to_string())
    } else {
        (pick(rng, METHODS), path, query.join("&"))
    };
    Request {
        method: method.into(),
        path,
        query,
        headers: vec![("x-ms-version".into(), "2012-11-30".into())],
    }
}

/// Panics unless `a` keeps the invariants for a caller `known` (or nobody).
fn check(req: &Request, a: &wire::Answer, known: bool) {
    let r = &a.response;
    assert!(
        matches!(r.status, 200 | 400 | 403 | 404),
        "status {}: {req:?}",
        r.status
    );
    if !r.body.is_empty() {
        let mut x = quick_xml::Reader::from_str(&r.body);
        while !matches!(
            x.read_event().unwrap_or_else(|e| panic!("{e}: {}", r.body)),
            quick_xml::events::Event::Eof
        ) {}
    }
    let versions = req.query.contains("comp=versions") && r.body.contains("<Versions>");
    if !known {
        assert!(a.health.is_none(), "a report from nobody: {req:?}");
        assert!(
            r.body.is_empty() || versions,
            "a document for nobody: {req:?}"
        );
    }
    if let Some(h) = &a.health {
        let id = Identity::of(&vm());
        assert_eq!(
            (&h.container_id, &h.instance_id),
            (&id.container_id, &id.instance_id)
        );
        assert!(matches!(h.state.as_str(), "Ready" | "NotReady"), "{h:?}");
    }
}

/// `iters` inputs from the random stream `seed`; what they came to, by status (and how many
/// bodies the parser took as reports).
pub fn run(seed: u64, iters: u64) -> BTreeMap<String, u64> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut seen = BTreeMap::new();
    for _ in 0..iters {
        let req = request(&mut rng);
        let b = body(&mut rng);
        let known = wire::answer(&req, &b, || Some(vm()));
        check(&req, &known, true);
        check(&req, &wire::answer(&req, &b, || None), false);
        *seen.entry(known.response.status.to_string()).or_insert(0) += 1;
        if health::parse(&b).is_ok() {
            *seen.entry("report".to_string()).or_insert(0) += 1;
        }
    }
    seen
}
