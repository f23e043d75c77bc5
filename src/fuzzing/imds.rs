//! The Instance Metadata Service's request path as a guest drives it: a request head (request
//! line and header lines, as bytes) through `guest::imds::answer`, the pure function the
//! per-vnet listener calls, against a fixed VM.
//!
//! Invariants, checked by panicking: every answer is one of the statuses IMDS gives (200, 400,
//! 403, 404, 405); a JSON answer parses; nothing is 200 without a `Metadata: true` header or with
//! `X-Forwarded-For`; a caller no VM holds gets no document.

use crate::guest::imds::{self, Facts, Request};

/// What one input came to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Not a request head (no request line with a method and a target).
    NotARequest,
    /// Answered with this status.
    Answered(u16),
}

fn vm() -> Facts {
    Facts {
        vm_id: "02aab8a4-74ef-476e-8182-f6d2ba4166a6".into(),
        name: "vm1".into(),
        resource_group: "rg1".into(),
        subscription: "00000000-0000-0000-0000-000000000001".into(),
        location: crate::config::LOCATION.into(),
        vm_size: "Standard_B1s".into(),
        computer_name: "vm1".into(),
        admin_username: "azureuser".into(),
        public_keys: vec![(
            "ssh-ed25519 AAAA u@h".into(),
            "/home/azureuser/.ssh/authorized_keys".into(),
        )],
        tags: vec![("env".into(), "test".into())],
        mac: "000D3A047598".into(),
        private_ip: "10.1.0.4".into(),
        subnet_address: "10.1.0.0".into(),
        subnet_prefix: "24".into(),
        ..Facts::default()
    }
}

/// `data` read as a request head: `METHOD TARGET [VERSION]`, then `Name: value` lines.
fn parse(data: &[u8]) -> Option<Request> {
    let text = String::from_utf8_lossy(data);
    let mut lines = text.split('\n').map(|l| l.trim_end_matches('\r'));
    let mut first = lines.next()?.split(' ');
    let (method, target) = (first.next()?, first.next()?);
    if method.is_empty() || target.is_empty() {
        return None;
    }
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let headers = lines
        .take_while(|l| !l.is_empty())
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.to_string(), v.trim().to_string()))
        .collect();
    Some(Request {
        method: method.into(),
        path: path.into(),
        query: query.into(),
        headers,
    })
}

/// One input, answered twice: for a known VM and for a caller no VM holds.
pub fn request(data: &[u8]) -> Outcome {
    let Some(req) = parse(data) else {
        return Outcome::NotARequest;
    };
    let known = imds::answer(&req, || Some(vm()));
    let unknown = imds::answer(&req, || None);
    for r in [&known, &unknown] {
        assert!(
            matches!(r.status, 200 | 400 | 403 | 404 | 405),
            "status {}: {req:?}",
            r.status
        );
        if r.content_type == imds::JSON {
            serde_json::from_str::<serde_json::Value>(&r.body)
                .unwrap_or_else(|e| panic!("not JSON ({e}): {}", r.body));
        }
    }
    if known.status == 200 {
        let has = |name: &str, ok: &dyn Fn(&str) -> bool| {
            req.headers
                .iter()
                .any(|(k, v)| k.eq_ignore_ascii_case(name) && ok(v.trim()))
        };
        assert!(
            has("metadata", &|v| v.eq_ignore_ascii_case("true")),
            "{req:?}"
        );
        assert!(!has("x-forwarded-for", &|_| true), "{req:?}");
    }
    let versions = req.path.trim_end_matches('/') == "/metadata/versions";
    assert!(
        unknown.status != 200 || versions,
        "a document for nobody: {req:?}"
    );
    Outcome::Answered(known.status)
}
