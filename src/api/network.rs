//! `Microsoft.Network`: virtual networks, their subnets, and network interfaces.

use std::net::Ipv4Addr;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::check_rg as check;
use super::error::ApiError;
use super::AppState;
use crate::config::LOCATION;
use crate::net::nic::{self, NicRecord};
use crate::net::vnet::{self, SubnetRecord, VnetRecord};
use crate::storage::db::Kind;

type Result<T> = std::result::Result<T, ApiError>;
type P3 = Path<(String, String, String)>;
type P4 = Path<(String, String, String, String)>;

/// Writes of vnets, subnets and NICs, one at a time. Each reads, checks and then writes (a record,
/// a bridge, an address): two PUTs of one new NIC or vnet at once both saw it absent, and the
/// second failed with a 500 (the fuzzer's races). None of them awaits while holding it.
fn writes() -> std::sync::MutexGuard<'static, ()> {
    static WRITES: std::sync::Mutex<()> = std::sync::Mutex::new(());
    WRITES.lock().unwrap_or_else(|p| p.into_inner())
}

fn not_found(kind: &str, name: &str, rg: &str) -> ApiError {
    ApiError::not_found(
        "ResourceNotFound",
        format!("The Resource 'Microsoft.Network/{kind}/{name}' under resource group '{rg}' was not found."),
    )
}

fn nics(state: &AppState) -> Vec<NicRecord> {
    state.node.db.list(Kind::Nic).unwrap_or_default()
}

fn nics_in(state: &AppState, v: &VnetRecord, subnet: Option<&str>) -> Vec<NicRecord> {
    nics(state)
        .into_iter()
        .filter(|n| vnet::key(&n.vnet_rg, &n.vnet_name) == vnet::key(&v.rg, &v.name))
        .filter(|n| subnet.is_none_or(|s| n.subnet_name.eq_ignore_ascii_case(s)))
        .collect()
}

fn render_vnet(state: &AppState, v: &VnetRecord) -> Value {
    let sub = &state.node.subscription;
    let all = nics_in(state, v, None);
    let nics_of = |s: &str| -> Vec<String> {
        all.iter()
            .filter(|n| n.subnet_name.eq_ignore_ascii_case(s))
            .map(|n| nic::nic_id(sub, &n.rg, &n.name))
            .collect()
    };
    vnet::to_arm(sub, v, &nics_of)
}

fn bad(e: impl std::fmt::Display) -> ApiError {
    ApiError::bad_request(e.to_string())
}

/// ARM's rule for NIC and subnet names: 1-80 letters, digits, '-', '_' or '.', starting with a
/// letter or digit and ending with one or '_' (the fuzzer made NICs named `$(reboot)` and
/// `nic ` before this).
fn check_name(kind: &str, name: &str) -> Result<()> {
    let ok = (1..=80).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric() || c == '_');
    if ok {
        return Ok(());
    }
    Err(ApiError::new(
        StatusCode::BAD_REQUEST,
        "InvalidResourceName",
        format!("The {kind} name '{name}' is invalid: use 1-80 letters, digits, '-', '_' or '.', starting with a letter or digit and ending with one or '_'."),
    ))
}

/// What a virtual network's PUT body says; checked further by [`vnet::validate`].
#[derive(Debug)]
pub struct VnetBody {
    pub prefixes: Vec<String>,
    pub subnets: Vec<SubnetRecord>,
    pub tags: serde_json::Map<String, Value>,
}

/// Reads a virtual network's PUT body (pure: the fuzz loops call it, tests/fuzz_api.rs).
pub fn parse_vnet(body: &Value) -> Result<VnetBody> {
    if let Some(loc) = body["location"].as_str() {
        if !loc.eq_ignore_ascii_case(LOCATION) {
            return Err(bad(format!(
                "The location '{loc}' is not available on this node; its location is '{LOCATION}'."
            )));
        }
    }
    let prefixes: Vec<String> = body["properties"]["addressSpace"]["addressPrefixes"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    Ok(VnetBody {
        prefixes,
        subnets: parse_subnets(body["properties"].get("subnets"))?,
        tags: body["tags"].as_object().cloned().unwrap_or_default(),
    })
}

/// What a network interface's PUT body says: its subnet (resource group, vnet, subnet) and the
/// address asked for (Static), if any.
#[derive(Debug)]
pub struct NicBody {
    pub vnet_rg: String,
    pub vnet: String,
    pub subnet: String,
    pub wanted: Option<Ipv4Addr>,
}

/// Reads a network interface's PUT body (pure: the fuzz loops call it, tests/fuzz_api.rs).
pub fn parse_nic(body: &Value) -> Result<NicBody> {
    let cfg = &body["properties"]["ipConfigurations"][0]["properties"];
    let subnet_id = cfg["subnet"]["id"].as_str().ok_or_else(|| {
        bad("Required parameter 'properties.ipConfigurations[0].properties.subnet.id' is missing.")
    })?;
    let (vnet_rg, vnet, subnet) = parse_subnet_id(subnet_id)
        .ok_or_else(|| bad(format!("'{subnet_id}' is not a subnet id.")))?;
    let method = cfg["privateIPAllocationMethod"]
        .as_str()
        .unwrap_or("Dynamic");
    let wanted: Option<Ipv4Addr> = match (
        method.to_ascii_lowercase().as_str(),
        cfg["privateIPAddress"].as_str(),
    ) {
        ("static", Some(ip)) => Some(
            ip.parse()
                .map_err(|_| bad(format!("'{ip}' is not an IPv4 address.")))?,
        ),
        ("static", None) => return Err(bad(
            "A Static allocation needs properties.ipConfigurations[0].properties.privateIPAddress.",
        )),
        ("dynamic", _) => None,
        (m, _) => {
            return Err(bad(format!(
                "privateIPAllocationMethod '{m}' is invalid: use Dynamic or Static."
            )))
        }
    };
    Ok(NicBody {
        vnet_rg,
        vnet,
        subnet,
        wanted,
    })
}

fn parse_subnets(list: Option<&Value>) -> Result<Vec<SubnetRecord>> {
    let mut out = Vec::new();
    for s in list.and_then(Value::as_array).into_iter().flatten() {
        let name = s["name"]
            .as_str()
            .ok_or_else(|| bad("Every subnet needs a name."))?;
        check_name("subnet", name)?;
        let prefix = s["properties"]["addressPrefix"]
            .as_str()
            .ok_or_else(|| bad(format!("Subnet '{name}' needs properties.addressPrefix.")))?;
        out.push(SubnetRecord {
            name: name.into(),
            prefix: prefix.into(),
        });
    }
    Ok(out)
}

/// Subnets that hold NICs may not go away or change.
fn check_in_use(state: &AppState, old: &VnetRecord, new_subnets: &[SubnetRecord]) -> Result<()> {
    for s in &old.subnets {
        let used = !nics_in(state, old, Some(&s.name)).is_empty();
        let kept = new_subnets
            .iter()
            .find(|n| n.name.eq_ignore_ascii_case(&s.name));
        if used && kept.is_none_or(|k| k.prefix != s.prefix) {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "InUseSubnetCannotBeDeleted",
                format!(
                    "Subnet '{}' is in use by network interfaces and cannot be deleted or changed.",
                    s.name
                ),
            ));
        }
    }
    Ok(())
}

fn store_vnet(state: &AppState, v: &VnetRecord) -> Result<()> {
    vnet::validate(&v.address_prefixes, &v.subnets).map_err(bad)?;
    state
        .node
        .db
        .put(Kind::Vnet, &vnet::key(&v.rg, &v.name), v)?;
    state
        .node
        .net
        .bring_up(v)
        .map_err(|e| ApiError::internal(&e))?;
    Ok(())
}

pub async fn put_vnet(
    State(state): State<AppState>,
    Path((sub, rg, name)): P3,
    body: Option<Json<Value>>,
) -> Result<Response> {
    check(&state, &sub, &rg)?;
    let _one = writes();
    let ok_name = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if !ok_name {
        return Err(bad(format!("The virtual network name '{name}' is invalid: use 2-64 letters, digits, '-', '_' or '.'.")));
    }
    let VnetBody {
        prefixes,
        subnets,
        tags,
    } = parse_vnet(&body.map(|b| b.0).unwrap_or_default())?;
    let existing = state
        .node
        .net
        .vnet(&rg, &name)
        .map_err(|e| ApiError::internal(&e))?;
    let rec = match &existing {
        Some(old) => {
            check_in_use(&state, old, &subnets)?;
            VnetRecord {
                address_prefixes: prefixes,
                subnets,
                tags,
                ..old.clone()
            }
        }
        None => VnetRecord {
            rg: rg.clone(),
            name: name.clone(),
            location: LOCATION.into(),
            address_prefixes: prefixes,
            subnets,
            bridge: crate::net::bridge_name(&rg, &name),
            domain: crate::net::new_domain(),
            tags,
        },
    };
    store_vnet(&state, &rec)?;
    let status = if existing.is_some() {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((status, Json(render_vnet(&state, &rec))).into_response())
}

pub async fn get_vnet(
    State(state): State<AppState>,
    Path((sub, rg, name)): P3,
) -> Result<Json<Value>> {
    check(&state, &sub, &rg)?;
    let v = state
        .node
        .net
        .vnet(&rg, &name)
        .map_err(|e| ApiError::internal(&e))?
        .ok_or_else(|| not_found("virtualNetworks", &name, &rg))?;
    Ok(Json(render_vnet(&state, &v)))
}

pub async fn list_vnets(
    State(state): State<AppState>,
    Path((sub, rg)): Path<(String, String)>,
) -> Result<Json<Value>> {
    check(&state, &sub, &rg)?;
    let all: Vec<VnetRecord> = state.node.db.list(Kind::Vnet)?;
    let rows: Vec<Value> = all
        .iter()
        .filter(|v| v.rg.eq_ignore_ascii_case(&rg))
        .map(|v| render_vnet(&state, v))
        .collect();
    Ok(Json(json!({ "value": rows })))
}

pub async fn delete_vnet(
    State(state): State<AppState>,
    Path((sub, rg, name)): P3,
) -> Result<Response> {
    check(&state, &sub, &rg)?;
    let _one = writes();
    let Some(v) = state
        .node
        .net
        .vnet(&rg, &name)
        .map_err(|e| ApiError::internal(&e))?
    else {
        return Ok(StatusCode::NO_CONTENT.into_response());
    };
    if v.bridge == crate::net::DEFAULT_BRIDGE {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "OperationNotAllowed",
            "The node's default virtual network cannot be deleted.",
        ));
    }
    check_in_use(&state, &v, &[])?;
    state
        .node
        .net
        .tear_down(&v)
        .map_err(|e| ApiError::internal(&e))?;
    state.node.db.delete(Kind::Vnet, &vnet::key(&rg, &name))?;
    Ok(StatusCode::OK.into_response())
}

pub async fn put_subnet(
    State(state): State<AppState>,
    Path((sub, rg, name, sname)): P4,
    body: Option<Json<Value>>,
) -> Result<Response> {
    check(&state, &sub, &rg)?;
    let _one = writes();
    check_name("subnet", &sname)?;
    let mut v = state
        .node
        .net
        .vnet(&rg, &name)
        .map_err(|e| ApiError::internal(&e))?
        .ok_or_else(|| not_found("virtualNetworks", &name, &rg))?;
    let body = body.map(|b| b.0).unwrap_or_default();
    let prefix = body["properties"]["addressPrefix"]
        .as_str()
        .ok_or_else(|| bad("Required parameter 'properties.addressPrefix' is missing."))?;
    let mut subnets: Vec<SubnetRecord> = v
        .subnets
        .iter()
        .filter(|s| !s.name.eq_ignore_ascii_case(&sname))
        .cloned()
        .collect();
    let existed = subnets.len() != v.subnets.len();
    subnets.push(SubnetRecord {
        name: sname.clone(),
        prefix: prefix.into(),
    });
    check_in_use(&state, &v, &subnets)?;
    v.subnets = subnets;
    store_vnet(&state, &v)?;
    let s = v
        .subnets
        .iter()
        .find(|s| s.name == sname)
        .cloned()
        .unwrap_or(SubnetRecord {
            name: sname,
            prefix: prefix.into(),
        });
    let status = if existed {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((
        status,
        Json(vnet::subnet_json(&state.node.subscription, &v, &s, &[])),
    )
        .into_response())
}

pub async fn get_subnet(
    State(state): State<AppState>,
    Path((sub, rg, name, sname)): P4,
) -> Result<Json<Value>> {
    check(&state, &sub, &rg)?;
    let v = state
        .node
        .net
        .vnet(&rg, &name)
        .map_err(|e| ApiError::internal(&e))?
        .ok_or_else(|| not_found("virtualNetworks", &name, &rg))?;
    let s = v
        .subnets
        .iter()
        .find(|s| s.name.eq_ignore_ascii_case(&sname))
        .ok_or_else(|| not_found("virtualNetworks/subnets", &sname, &rg))?;
    let ids: Vec<String> = nics_in(&state, &v, Some(&s.name))
        .iter()
        .map(|n| nic::nic_id(&state.node.subscription, &n.rg, &n.name))
        .collect();
    Ok(Json(vnet::subnet_json(
        &state.node.subscription,
        &v,
        s,
        &ids,
    )))
}

pub async fn delete_subnet(
    State(state): State<AppState>,
    Path((sub, rg, name, sname)): P4,
) -> Result<Response> {
    check(&state, &sub, &rg)?;
    let _one = writes();
    let mut v = state
        .node
        .net
        .vnet(&rg, &name)
        .map_err(|e| ApiError::internal(&e))?
        .ok_or_else(|| not_found("virtualNetworks", &name, &rg))?;
    let subnets: Vec<SubnetRecord> = v
        .subnets
        .iter()
        .filter(|s| !s.name.eq_ignore_ascii_case(&sname))
        .cloned()
        .collect();
    if subnets.len() == v.subnets.len() {
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    check_in_use(&state, &v, &subnets)?;
    v.subnets = subnets;
    store_vnet(&state, &v)?;
    Ok(StatusCode::OK.into_response())
}

/// `/subscriptions/{s}/resourceGroups/{rg}/providers/Microsoft.Network/virtualNetworks/{v}/subnets/{n}`
fn parse_subnet_id(id: &str) -> Option<(String, String, String)> {
    let parts: Vec<&str> = id.trim_matches('/').split('/').collect();
    let at = |k: &str| {
        parts
            .iter()
            .position(|p| p.eq_ignore_ascii_case(k))
            .and_then(|i| parts.get(i + 1))
            .map(|s| s.to_string())
    };
    Some((
        at("resourceGroups")?,
        at("virtualNetworks")?,
        at("subnets")?,
    ))
}

fn render_nic(state: &AppState, n: &NicRecord) -> Value {
    let ledger = serde_json::to_value(state.node.net.ledger(&n.mac)).unwrap_or(Value::Null);
    nic::to_arm(
        &state.node.subscription,
        n,
        LOCATION,
        state.vms.lease_ip(&n.mac),
        ledger,
        state.node.net.dropped(&n.tap),
    )
}

pub async fn put_nic(
    State(state): State<AppState>,
    Path((sub, rg, name)): P3,
    body: Option<Json<Value>>,
) -> Result<Response> {
    check(&state, &sub, &rg)?;
    let _one = writes();
    check_name("network interface", &name)?;
    let NicBody {
        vnet_rg: vrg,
        vnet: vname,
        subnet: sname,
        wanted,
    } = parse_nic(&body.map(|b| b.0).unwrap_or_default())?;
    let key = nic::nic_key(&rg, &name);
    if let Some(old) = state.node.db.get::<NicRecord>(Kind::Nic, &key)? {
        let same = old.subnet_name.eq_ignore_ascii_case(&sname)
            && old.vnet_name.eq_ignore_ascii_case(&vname)
            && wanted.is_none_or(|w| w == old.ip);
        if same {
            return Ok((StatusCode::OK, Json(render_nic(&state, &old))).into_response());
        }
        return Err(ApiError::new(StatusCode::CONFLICT, "PropertyChangeNotAllowed", format!("Network interface '{name}' exists with another subnet or address; delete it first.")));
    }
    let v = state
        .node
        .net
        .vnet(&vrg, &vname)
        .map_err(|e| ApiError::internal(&e))?
        .ok_or_else(|| {
            bad(format!(
                "Virtual network '{vname}' in resource group '{vrg}' was not found."
            ))
        })?;
    let (ip, skey) = state
        .node
        .net
        .allocate_ip(&key, &v, &sname, wanted)
        .map_err(bad)?;
    let subnet_name = v
        .subnet(&sname)
        .map(|(s, _)| s.name.clone())
        .unwrap_or(sname);
    let rec = NicRecord {
        rg: rg.clone(),
        name: name.clone(),
        mac: state.node.net.random_mac(),
        ip,
        subnet: skey.clone(),
        tap: vmnode_network::plumbing::tap_name_for(&uuid::Uuid::new_v4().to_string()),
        vm: String::new(),
        hostname: String::new(),
        vnet_rg: v.rg.clone(),
        vnet_name: v.name.clone(),
        subnet_name,
        allocation: if wanted.is_some() {
            "Static".into()
        } else {
            "Dynamic".into()
        },
        delete_with_vm: false,
    };
    if let Err(e) = state.node.db.insert(Kind::Nic, &key, &rec) {
        let _ = state.node.db.free_addr(&skey, ip);
        return Err(e.into());
    }
    Ok((StatusCode::CREATED, Json(render_nic(&state, &rec))).into_response())
}

pub async fn get_nic(
    State(state): State<AppState>,
    Path((sub, rg, name)): P3,
) -> Result<Json<Value>> {
    check(&state, &sub, &rg)?;
    let n: NicRecord = state
        .node
        .db
        .get(Kind::Nic, &nic::nic_key(&rg, &name))?
        .ok_or_else(|| not_found("networkInterfaces", &name, &rg))?;
    Ok(Json(render_nic(&state, &n)))
}

pub async fn list_nics(
    State(state): State<AppState>,
    Path((sub, rg)): Path<(String, String)>,
) -> Result<Json<Value>> {
    check(&state, &sub, &rg)?;
    let rows: Vec<Value> = nics(&state)
        .iter()
        .filter(|n| n.rg.eq_ignore_ascii_case(&rg))
        .map(|n| render_nic(&state, n))
        .collect();
    Ok(Json(json!({ "value": rows })))
}

pub async fn delete_nic(
    State(state): State<AppState>,
    Path((sub, rg, name)): P3,
) -> Result<Response> {
    check(&state, &sub, &rg)?;
    let _one = writes();
    let key = nic::nic_key(&rg, &name);
    let Some(n) = state.node.db.get::<NicRecord>(Kind::Nic, &key)? else {
        return Ok(StatusCode::NO_CONTENT.into_response());
    };
    if !n.vm.is_empty() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "NicInUse",
            format!(
                "Network interface '{name}' is used by virtual machine '{}'. Delete the VM first.",
                n.vm
            ),
        ));
    }
    crate::net::addresses::release_nic(&state.node.db, &n)?;
    Ok(StatusCode::OK.into_response())
}

/// The address table against the NICs (`vmnode network dhcp check`): `{"value": [findings]}`.
pub async fn address_check(State(state): State<AppState>) -> Result<Json<Value>> {
    let f = crate::net::addresses::check(&state.node.db)?;
    Ok(Json(json!({ "value": f })))
}

/// vmnode's DHCP ledger view: every NIC's exchanges, for `vmnode network dhcp ledger`.
pub async fn ledger(State(state): State<AppState>) -> Result<Json<Value>> {
    let rows: Vec<Value> = nics(&state)
        .iter()
        .map(|n| json!({ "nic": n.name, "resourceGroup": n.rg, "macAddress": nic::mac_azure(&n.mac), "entries": state.node.net.ledger(&n.mac) }))
        .collect();
    Ok(Json(json!({ "value": rows })))
}
