//! The management API's bodies and the template language, as outsiders send them.
//!
//! [`arm_json`] reads a PUT body as axum does (`serde_json`) and walks it with every resource
//! parser the handlers use: a VM (`api::compute::parse_create`, then the create's checks that
//! need no node: names, size, osProfile), an extension (`api::extensions::parse_put`, then its
//! settings), a virtual network (`api::network::parse_vnet` and `net::vnet::validate`), a network
//! interface (`api::network::parse_nic`) and a deployment (`api::deployments::parse_put`, then
//! `deploy::template::plan`, whose planned resource bodies are walked again by the parser of their
//! type, as the deployment engine PUTs them through the same handlers).
//!
//! A rejected request changes nothing: each of these functions takes the body by shared
//! reference and no node state at all (they are pure), and every handler calls them before it
//! takes a lock that matters, allocates or writes; the loop checks the body it passed is
//! unchanged.
//!
//! [`template_expr`] evaluates one template expression against a fixed template's parameters
//! and variables (`deploy::template`'s `Evaluator`: parser `expr.rs`, functions `eval.rs`).

use serde_json::{json, Value};

use crate::api::{compute, deployments, extensions, network};
use crate::deploy::template::{self, Evaluator, Scope};

/// Which parsers took a body: what the loops count, so a run shows it reached past the first
/// `?` of each.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Verdicts {
    pub vm: bool,
    pub extension: bool,
    pub vnet: bool,
    pub nic: bool,
    pub deployment: bool,
    /// Resources a deployment planned, each walked again by its type's parser.
    pub planned: usize,
}

/// `data` as a PUT body of each resource kind; `None` if it is not JSON (axum's own 400).
pub fn arm_json(data: &[u8]) -> Option<Verdicts> {
    let body: Value = serde_json::from_slice(data).ok()?;
    Some(arm_body(&body))
}

/// A JSON body as a PUT of each resource kind.
pub fn arm_body(body: &Value) -> Verdicts {
    let mut v = Verdicts {
        vm: vm(body),
        extension: extension(body),
        vnet: vnet(body),
        nic: network::parse_nic(body).is_ok(),
        ..Verdicts::default()
    };
    if let Ok((tpl, given)) = deployments::parse_put(body) {
        if let Ok(plan) = template::plan(tpl, &given, &scope()) {
            v.deployment = true;
            v.planned = plan.len();
            for r in &plan {
                by_type(&r.resource_type, &r.body);
            }
        }
    }
    v
}

fn scope() -> Scope {
    Scope {
        subscription: "00000000-0000-0000-0000-000000000001".into(),
        resource_group: "rg1".into(),
        location: crate::config::LOCATION.into(),
        deployment: "dep1".into(),
    }
}

/// A planned resource's body through the handler its type goes to.
fn by_type(resource_type: &str, body: &Value) -> bool {
    match resource_type.to_ascii_lowercase().as_str() {
        "microsoft.compute/virtualmachines" => vm(body),
        "microsoft.compute/virtualmachines/extensions" => extension(body),
        "microsoft.network/virtualnetworks" => vnet(body),
        "microsoft.network/networkinterfaces" => network::parse_nic(body).is_ok(),
        _ => false,
    }
}

/// A VM's PUT: the body, then what `vm::Node::create` checks before it looks at the node. The
/// password is checked by its rules but not hashed (sha512-crypt's 5000 rounds are not parsing):
/// the profile goes to `osprofile::check` without it, and so without the "password auth needs a
/// password" rule it would have met.
fn vm(body: &Value) -> bool {
    use crate::vm::{osprofile, sizes, validate_computer_name, validate_vm_name};
    let Ok(mut req) = compute::parse_create("rg1", "vm1", body) else {
        return false;
    };
    let password = req.os_profile.admin_password.take();
    if password.is_some() && req.os_profile.disable_password_auth == Some(false) {
        req.os_profile.disable_password_auth = None;
    }
    validate_vm_name(&req.name).is_ok()
        && validate_computer_name(req.computer_name.as_deref().unwrap_or(&req.name)).is_ok()
        && sizes::find(&req.size).is_some()
        && password.is_none_or(|p| osprofile::validate_password(&p).is_ok())
        && osprofile::check(&req.admin_username, &req.os_profile).is_ok()
}

/// An extension's PUT: the body, then its settings as its handler reads them.
fn extension(body: &Value) -> bool {
    use crate::extensions::{model::Handler, settings};
    let Ok(req) = extensions::parse_put(body) else {
        return false;
    };
    let Some(handler) = Handler::of(&req.publisher, &req.ext_type) else {
        return false;
    };
    let protected = req.protected.clone().unwrap_or_default();
    settings::parse(handler, &req.settings, &protected).is_ok()
}

/// A virtual network's PUT: the body, then its address space and subnets.
fn vnet(body: &Value) -> bool {
    network::parse_vnet(body)
        .is_ok_and(|b| crate::net::vnet::validate(&b.prefixes, &b.subnets).is_ok())
}

/// The template [`template_expr`] evaluates against: parameters of each type (one with an
/// expression as its default), variables over them and over each other, one referring to itself.
fn expr_template() -> &'static Value {
    static TEMPLATE: std::sync::LazyLock<Value> = std::sync::LazyLock::new(|| {
        json!({
        "parameters": {
            "name": {"type": "string", "defaultValue": "vm1"},
            "count": {"type": "int", "defaultValue": 3},
            "flag": {"type": "bool", "defaultValue": true},
            "list": {"type": "array", "defaultValue": ["a", "b", 3]},
            "obj": {"type": "object", "defaultValue": {"k": {"n": [1, 2]}, "s": "x"}},
            "suffix": {"type": "string", "defaultValue": "[concat(parameters('name'), '-nic')]"}
        },
        "variables": {
            "prefix": "10.1.0.0/16",
            "nicName": "[concat(parameters('name'), '-nic')]",
            "ids": "[resourceId('Microsoft.Network/networkInterfaces', variables('nicName'))]",
            "nested": {"a": "[parameters('list')]", "b": ["[variables('prefix')]"]},
            "loop": "[variables('loop')]"
        }
        })
    });
    &TEMPLATE
}

/// `data` (UTF-8) as a template expression, bracketed if it is not: whether it evaluated.
/// `None` if it is not UTF-8 (a JSON body's strings always are).
pub fn template_expr(data: &[u8]) -> Option<bool> {
    let s = std::str::from_utf8(data).ok()?;
    let expr = match s.starts_with('[') && s.ends_with(']') && s.len() >= 2 {
        true => s.to_string(),
        false => format!("[{s}]"),
    };
    let ev = Evaluator::new(expr_template(), &json!({}), &scope()).ok()?;
    Some(ev.eval(&Value::String(expr)).is_ok())
}
