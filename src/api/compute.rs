//! `Microsoft.Compute/virtualMachines`.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::check_sub;
use super::error::ApiError;
use super::lookup::{find, operation_url};
use super::AppState;
use crate::vm::model::{self, VmRecord};
use crate::vm::CreateVm;

type Result<T> = std::result::Result<T, ApiError>;

fn render(state: &AppState, r: &VmRecord, view: bool) -> Value {
    let ip = state.node.lease_ip(&r.nic.mac);
    let mut v = model::to_arm(&state.node.subscription, r, ip, view);
    super::extensions::decorate_vm(state, r, &mut v);
    v
}

pub async fn get_vm(
    State(state): State<AppState>,
    Path((sub, rg, vm)): Path<(String, String, String)>,
    q: axum::extract::Query<std::collections::HashMap<String, String>>,
) -> Result<Json<Value>> {
    check_sub(&state, &sub)?;
    let r = find(&state, &rg, &vm)?;
    let view = q
        .get("$expand")
        .map(|e| e.eq_ignore_ascii_case("instanceView"))
        .unwrap_or(false);
    let mut v = render(&state, &r, view);
    if view {
        v["properties"]["instanceView"] = view_with_ledger(&state, &r);
    }
    Ok(Json(v))
}

pub async fn instance_view(
    State(state): State<AppState>,
    Path((sub, rg, vm)): Path<(String, String, String)>,
) -> Result<Json<Value>> {
    check_sub(&state, &sub)?;
    let r = find(&state, &rg, &vm)?;
    Ok(Json(view_with_ledger(&state, &r)))
}

/// The instance view with vmnode's network evidence: the NIC's DHCP ledger and, when something
/// is wrong, the typed diagnosis ("no DISCOVER within 60 s of link-up", a NAK, ...).
fn view_with_ledger(state: &AppState, r: &VmRecord) -> Value {
    let mut v = model::instance_view(r, state.node.lease_ip(&r.nic.mac));
    let entries = state.node.net.ledger(&r.nic.mac);
    let running = r.power == model::PowerState::Running;
    let diagnosis = match (running, r.last_boot) {
        (true, Some(up)) => {
            vmnode_network::dhcp::diagnose(&entries, up, std::time::SystemTime::now())
        }
        _ => None,
    };
    v["networkInterfaces"][0]["dhcpLedger"] = serde_json::to_value(&entries).unwrap_or(Value::Null);
    v["networkInterfaces"][0]["dhcpDiagnosis"] = json!(diagnosis);
    v["bootDiagnostics"] = super::diagnostics::instance_view_part(state, r);
    super::extensions::decorate_vm_view(state, r, &mut v);
    v
}

pub async fn list_in_rg(
    State(state): State<AppState>,
    Path((sub, rg)): Path<(String, String)>,
) -> Result<Json<Value>> {
    check_sub(&state, &sub)?;
    if !crate::groups::exists(&state.node.db, &rg)? {
        return Err(crate::vm::VmError::ResourceGroupNotFound(rg).into());
    }
    let vms: Vec<Value> = state
        .node
        .list(Some(&rg))
        .iter()
        .map(|r| render(&state, r, false))
        .collect();
    Ok(Json(json!({ "value": vms })))
}

pub async fn list_all(
    State(state): State<AppState>,
    Path(sub): Path<String>,
) -> Result<Json<Value>> {
    check_sub(&state, &sub)?;
    let vms: Vec<Value> = state
        .node
        .list(None)
        .iter()
        .map(|r| render(&state, r, false))
        .collect();
    Ok(Json(json!({ "value": vms })))
}

mod body;

/// Parses an ARM VM body into a create request (typed fields, then the checks: `body`).
pub fn parse_create(rg: &str, name: &str, body: &Value) -> Result<CreateVm> {
    body::parse(body)?.into_create(rg, name)
}

pub async fn put_vm(
    State(state): State<AppState>,
    Path((sub, rg, vm)): Path<(String, String, String)>,
    body: Option<Json<Value>>,
) -> Result<Response> {
    check_sub(&state, &sub)?;
    let Some(Json(body)) = body else {
        return Err(ApiError::bad_request(
            "The request body must be a JSON virtual machine.",
        ));
    };
    let req = parse_create(&rg, &vm, &body)?;
    if let Some(existing) = state.node.get(&rg, &vm) {
        return update(&state, existing, req).await;
    }
    // Off the async workers: the first create from an image hashes its files.
    let node = state.node.clone();
    let rec = tokio::task::spawn_blocking(move || node.create(req))
        .await
        .map_err(|e| ApiError::internal(&e))??;
    Ok((StatusCode::CREATED, Json(render(&state, &rec, false))).into_response())
}

/// An update of an existing VM (PUT or PATCH): tags and data disks change (disks are
/// hot-plugged when it runs); its size and image may not, and saying so beats half-applying.
async fn update(state: &AppState, existing: VmRecord, req: CreateVm) -> Result<Response> {
    let same = existing.size.eq_ignore_ascii_case(&req.size)
        && existing.image.urn().eq_ignore_ascii_case(&req.image.urn());
    if !same {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "PropertyChangeNotAllowed",
            format!(
                "VM '{}' has size {} and image {}; changing them is not supported. Delete the VM first or choose another name.",
                existing.name, existing.size, existing.image.urn()
            ),
        ));
    }
    if req.tags != existing.tags {
        state
            .node
            .set_tags(&existing.rg, &existing.name, req.tags)
            .await?;
    }
    if let Some(d) = req.data_disks {
        state
            .node
            .set_data_disks(&existing.rg, &existing.name, d)
            .await?;
    }
    let rec = state
        .node
        .get(&existing.rg, &existing.name)
        .unwrap_or(existing);
    Ok((StatusCode::OK, Json(render(state, &rec, false))).into_response())
}

/// JSON merge patch (RFC 7396), as ARM applies a PATCH body.
fn merge(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        (t, p) => *t = p.clone(),
    }
}

pub async fn patch_vm(
    State(state): State<AppState>,
    Path((sub, rg, vm)): Path<(String, String, String)>,
    body: Option<Json<Value>>,
) -> Result<Response> {
    check_sub(&state, &sub)?;
    let existing = find(&state, &rg, &vm)?;
    let mut doc = render(&state, &existing, false);
    merge(&mut doc, &body.map(|b| b.0).unwrap_or_default());
    let req = parse_create(&rg, &vm, &doc)?;
    update(&state, existing, req).await
}

/// The 202 of a long operation, pointing at its status like the cloud does.
fn accepted(state: &AppState, headers: &axum::http::HeaderMap, op: &str) -> Response {
    let url = operation_url(state, headers, op);
    let mut r = StatusCode::ACCEPTED.into_response();
    for h in ["azure-asyncoperation", "location"] {
        if let Ok(v) = axum::http::HeaderValue::from_str(&url) {
            r.headers_mut().insert(h, v);
        }
    }
    r.headers_mut()
        .insert("retry-after", axum::http::HeaderValue::from_static("1"));
    r
}

pub async fn delete_vm(
    State(state): State<AppState>,
    headers: axum::http::HeaderMap,
    Path((sub, rg, vm)): Path<(String, String, String)>,
) -> Result<Response> {
    check_sub(&state, &sub)?;
    if state.node.get(&rg, &vm).is_none() {
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    let op = state.node.delete_nowait(&rg, &vm)?;
    Ok(accepted(&state, &headers, &op))
}

/// `POST .../virtualMachines/{vm}/{start|powerOff|deallocate|restart|redeploy}`.
pub async fn action(
    state: AppState,
    headers: axum::http::HeaderMap,
    (sub, rg, vm): (String, String, String),
    query: std::collections::HashMap<String, String>,
    op: &str,
) -> Result<Response> {
    use crate::vm::lifecycle::PowerOp;
    check_sub(&state, &sub)?;
    find(&state, &rg, &vm)?;
    let op = match op {
        "start" => PowerOp::Start,
        "powerOff" => PowerOp::PowerOff {
            skip_shutdown: query
                .get("skipShutdown")
                .is_some_and(|v| v.eq_ignore_ascii_case("true")),
        },
        "deallocate" => PowerOp::Deallocate,
        "restart" => PowerOp::Restart,
        _ => PowerOp::Redeploy,
    };
    let id = state.node.power(&rg, &vm, op)?;
    Ok(accepted(&state, &headers, &id))
}

/// One handler per action route, all sharing `action`.
macro_rules! action_handlers {
    ($($fn_name:ident => $op:literal),*) => {$(
        pub async fn $fn_name(
            State(state): State<AppState>,
            headers: axum::http::HeaderMap,
            Path(p): Path<(String, String, String)>,
            axum::extract::Query(q): axum::extract::Query<std::collections::HashMap<String, String>>,
        ) -> Result<Response> {
            action(state, headers, p, q, $op).await
        }
    )*};
}
action_handlers!(start => "start", power_off => "powerOff", deallocate => "deallocate", restart => "restart", redeploy => "redeploy");

pub async fn operation(
    State(state): State<AppState>,
    Path((sub, loc, id)): Path<(String, String, String)>,
    axum::extract::Query(q): axum::extract::Query<std::collections::HashMap<String, String>>,
) -> Result<Response> {
    check_sub(&state, &sub)?;
    let _ = loc;
    // `?monitor=true`: the operation's result (a Run Command's `Location`).
    if q.get("monitor")
        .is_some_and(|m| m.eq_ignore_ascii_case("true"))
    {
        if let Some(r) = super::extensions::monitor(&state, &id) {
            return Ok(r);
        }
    }
    state.node.ops.status(&id).map(|v| Json(v).into_response()).ok_or_else(|| {
        ApiError::not_found("OperationNotFound", format!("Operation '{id}' is not known to this node (operations do not survive a daemon restart; look at the resource itself)."))
    })
}
