//! `Microsoft.Network`: virtual networks, their subnets, and network interfaces. The handlers
//! only translate: the body is read by [`body`], the rules and writes are the domain's
//! (`net::vnets`, `net::nics`), its errors are mapped to the cloud's in `error.rs`, and the
//! records are rendered here.

mod body;

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
use crate::net::nics::{self, NicSpec};
use crate::net::vnet::{self, VnetRecord};
use crate::net::vnets::{self, VnetSpec, Written};

type Result<T> = std::result::Result<T, ApiError>;
type P3 = Path<(String, String, String)>;
type P4 = Path<(String, String, String, String)>;

/// Reads a virtual network's PUT body (pure: the fuzz loops call it, tests/fuzz_api.rs).
pub fn parse_vnet(body: &Value) -> Result<VnetSpec> {
    Ok(body::VnetPut::read(body).validate()?)
}

/// Reads a network interface's PUT body (pure: the fuzz loops call it, tests/fuzz_api.rs).
pub fn parse_nic(body: &Value) -> Result<NicSpec> {
    Ok(body::NicPut::read(body).validate()?)
}

fn body_of(body: Option<Json<Value>>) -> Value {
    body.map(|b| b.0).unwrap_or_default()
}

/// 201 for a new resource, 200 for one replaced.
fn status<T>(w: &Written<T>) -> StatusCode {
    if w.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    }
}

/// 200 if it was deleted, 204 if there was none.
fn deleted(was: bool) -> Response {
    if was {
        StatusCode::OK.into_response()
    } else {
        StatusCode::NO_CONTENT.into_response()
    }
}

fn render_vnet(state: &AppState, v: &VnetRecord) -> Value {
    let sub = &state.node.subscription;
    let all = state.node.net.nics_in(v, None);
    let nics_of = |s: &str| -> Vec<String> {
        all.iter()
            .filter(|n| n.subnet_name.eq_ignore_ascii_case(s))
            .map(|n| nic::nic_id(sub, &n.rg, &n.name))
            .collect()
    };
    vnet::to_arm(sub, v, &nics_of)
}

pub async fn put_vnet(
    State(state): State<AppState>,
    Path((sub, rg, name)): P3,
    body: Option<Json<Value>>,
) -> Result<Response> {
    check(&state, &sub, &rg)?;
    vnets::check_vnet_name(&name)?;
    let spec = parse_vnet(&body_of(body))?;
    let w = state.node.net.put_vnet(&rg, &name, spec)?;
    Ok((status(&w), Json(render_vnet(&state, &w.record))).into_response())
}

pub async fn get_vnet(
    State(state): State<AppState>,
    Path((sub, rg, name)): P3,
) -> Result<Json<Value>> {
    check(&state, &sub, &rg)?;
    let v = state.node.net.get_vnet(&rg, &name)?;
    Ok(Json(render_vnet(&state, &v)))
}

pub async fn list_vnets(
    State(state): State<AppState>,
    Path((sub, rg)): Path<(String, String)>,
) -> Result<Json<Value>> {
    check(&state, &sub, &rg)?;
    let rows: Vec<Value> = state
        .node
        .net
        .vnets_in(&rg)?
        .iter()
        .map(|v| render_vnet(&state, v))
        .collect();
    Ok(Json(json!({ "value": rows })))
}

pub async fn delete_vnet(
    State(state): State<AppState>,
    Path((sub, rg, name)): P3,
) -> Result<Response> {
    check(&state, &sub, &rg)?;
    Ok(deleted(state.node.net.delete_vnet(&rg, &name)?))
}

pub async fn put_subnet(
    State(state): State<AppState>,
    Path((sub, rg, name, sname)): P4,
    body: Option<Json<Value>>,
) -> Result<Response> {
    check(&state, &sub, &rg)?;
    let prefix = body::SubnetPut::read(&body_of(body)).prefix();
    let (v, w) = state.node.net.put_subnet(&rg, &name, &sname, prefix)?;
    let shown = vnet::subnet_json(&state.node.subscription, &v, &w.record, &[]);
    Ok((status(&w), Json(shown)).into_response())
}

pub async fn get_subnet(
    State(state): State<AppState>,
    Path((sub, rg, name, sname)): P4,
) -> Result<Json<Value>> {
    check(&state, &sub, &rg)?;
    let (v, s, nics) = state.node.net.get_subnet(&rg, &name, &sname)?;
    let sub = &state.node.subscription;
    let ids: Vec<String> = nics
        .iter()
        .map(|n| nic::nic_id(sub, &n.rg, &n.name))
        .collect();
    Ok(Json(vnet::subnet_json(sub, &v, &s, &ids)))
}

pub async fn delete_subnet(
    State(state): State<AppState>,
    Path((sub, rg, name, sname)): P4,
) -> Result<Response> {
    check(&state, &sub, &rg)?;
    Ok(deleted(state.node.net.delete_subnet(&rg, &name, &sname)?))
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
    nics::check_name(&name)?;
    let spec = parse_nic(&body_of(body))?;
    let w = state.node.net.put_nic(&rg, &name, spec)?;
    Ok((status(&w), Json(render_nic(&state, &w.record))).into_response())
}

pub async fn get_nic(
    State(state): State<AppState>,
    Path((sub, rg, name)): P3,
) -> Result<Json<Value>> {
    check(&state, &sub, &rg)?;
    let n = state.node.net.get_nic(&rg, &name)?;
    Ok(Json(render_nic(&state, &n)))
}

pub async fn list_nics(
    State(state): State<AppState>,
    Path((sub, rg)): Path<(String, String)>,
) -> Result<Json<Value>> {
    check(&state, &sub, &rg)?;
    let rows: Vec<Value> = state
        .node
        .net
        .nics()
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
    Ok(deleted(state.node.net.delete_nic(&rg, &name)?))
}

/// The address table against the NICs (`vmnode network dhcp check`): `{"value": [findings]}`.
pub async fn address_check(State(state): State<AppState>) -> Result<Json<Value>> {
    let f = crate::net::addresses::check(&state.node.db)?;
    Ok(Json(json!({ "value": f })))
}

/// vmnode's DHCP ledger view: every NIC's exchanges, for `vmnode network dhcp ledger`.
pub async fn ledger(State(state): State<AppState>) -> Result<Json<Value>> {
    let rows: Vec<Value> = state
        .node
        .net
        .nics()
        .iter()
        .map(|n| json!({ "nic": n.name, "resourceGroup": n.rg, "macAddress": nic::mac_azure(&n.mac), "entries": state.node.net.ledger(&n.mac) }))
        .collect();
    Ok(Json(json!({ "value": rows })))
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;
    use crate::net::nics::NicError;
    use crate::net::vnet::VnetError;
    use crate::net::NetError;
    use crate::storage::db::DbError;

    fn answer(e: impl Into<ApiError>) -> (u16, String) {
        let e = e.into();
        (e.status.as_u16(), e.code)
    }

    fn store_failure() -> DbError {
        DbError::Sqlite(rusqlite::Error::InvalidQuery)
    }

    /// The caller's refusals keep the cloud's codes; the store's and the bridge's failures are
    /// the node's (500), not a 400 or a 409.
    #[test]
    fn refusals_are_4xx_and_host_trouble_is_500() {
        let s = |c: &str| c.to_string();
        assert_eq!(
            answer(NicError::Name("x y".into())),
            (400, s("InvalidResourceName"))
        );
        assert_eq!(
            answer(NicError::Changed("n".into())),
            (409, s("PropertyChangeNotAllowed"))
        );
        let in_use = NicError::InUse {
            name: "n".into(),
            vm: "v".into(),
        };
        assert_eq!(answer(in_use), (400, s("NicInUse")));
        let taken = NetError::AddressUnavailable {
            ip: Ipv4Addr::new(10, 1, 0, 4),
            subnet: "10.1.0.0/24".into(),
        };
        let e: ApiError = NicError::Address(taken).into();
        assert_eq!(
            (e.status.as_u16(), e.code.as_str()),
            (400, "InvalidParameter")
        );
        assert!(
            e.message.starts_with("address 10.1.0.4 is not usable"),
            "{}",
            e.message
        );
        let full = NetError::Db(DbError::Exhausted("s".into()));
        assert_eq!(
            answer(NicError::Address(full)),
            (400, s("InvalidParameter"))
        );
        let broken = NicError::Net(NetError::Db(store_failure()));
        assert_eq!(answer(broken), (500, s("InternalServerError")));
        assert_eq!(
            answer(NicError::Db(store_failure())),
            (500, s("InternalServerError"))
        );
        assert_eq!(
            answer(NicError::Db(DbError::Exists("n".into()))),
            (409, s("Conflict"))
        );

        assert_eq!(
            answer(VnetError::InUse("s".into())),
            (400, s("InUseSubnetCannotBeDeleted"))
        );
        assert_eq!(
            answer(VnetError::DefaultVnet),
            (400, s("OperationNotAllowed"))
        );
        assert_eq!(
            answer(VnetError::SubnetName("a b".into())),
            (400, s("InvalidResourceName"))
        );
        assert_eq!(answer(VnetError::NoSpace), (400, s("InvalidParameter")));
        let gone = VnetError::NotFound {
            kind: "virtualNetworks",
            name: "v".into(),
            rg: "rg".into(),
        };
        assert_eq!(answer(gone), (404, s("ResourceNotFound")));
        let bridge = VnetError::Net(NetError::Socket(std::io::Error::other("x")));
        assert_eq!(answer(bridge), (500, s("InternalServerError")));
    }
}
