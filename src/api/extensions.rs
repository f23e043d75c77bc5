//! `Microsoft.Compute/virtualMachines/{vm}/extensions/{name}` (PUT/GET/DELETE/list, and in the
//! VM's `resources[]` and instance view) and Run Command (`POST .../runCommand`, the command
//! list under `.../locations/{loc}/runCommands`).

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Map, Value};

use super::check_sub;
use super::error::ApiError;
use super::AppState;
use crate::extensions::model::{self, ExtensionRecord};
use crate::extensions::{runcommand, ExtError, Put, PutExtension};
use crate::vm::model::VmRecord;

type Result<T> = std::result::Result<T, ApiError>;
type Q = Query<HashMap<String, String>>;

impl From<ExtError> for ApiError {
    fn from(e: ExtError) -> Self {
        match e {
            ExtError::InvalidParameter(m) => ApiError::bad_request(m),
            ExtError::Settings(_) | ExtError::RunCommand(_) => ApiError::bad_request(e.to_string()),
            ExtError::NotFound(..) => ApiError::not_found("ResourceNotFound", e.to_string()),
            ExtError::Conflict(m) => ApiError::new(StatusCode::CONFLICT, "OperationNotAllowed", m),
            ExtError::Vm(v) => v.into(),
            ExtError::Db(_) | ExtError::Secret(_) => ApiError::internal(&e),
        }
    }
}

/// The SAS link to an extension's handler log (read-only, 2 hours), when the log exists.
fn log_uri(state: &AppState, vm: &VmRecord, r: &ExtensionRecord) -> Option<String> {
    let exists = vm.serial_log.parent().is_some_and(|c| {
        c.join(crate::blob::store::encode_name(&r.handler_log_blob))
            .exists()
    });
    exists
        .then(|| super::lookup::blob_uri(state, vm, &r.handler_log_blob, Some(120)))
        .flatten()
}

fn render(state: &AppState, vm: Option<&VmRecord>, r: &ExtensionRecord, view: bool) -> Value {
    let v = view.then(|| {
        crate::extensions::status::instance_view(r, vm.and_then(|vm| log_uri(state, vm, r)))
    });
    model::to_arm(&state.node.subscription, r, v)
}

fn wants_view(q: &HashMap<String, String>) -> bool {
    q.iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("$expand") && v.eq_ignore_ascii_case("instanceView"))
}

/// The VM's `resources[]` (its extensions) and, when one failed and the VM has no error of its
/// own, that extension's error as the VM's `properties.error`.
pub fn decorate_vm(state: &AppState, r: &VmRecord, v: &mut Value) {
    let Ok(exts) = state.ext.list(&r.rg, &r.name) else {
        return;
    };
    v["resources"] = Value::Array(
        exts.iter()
            .map(|e| render(state, Some(r), e, false))
            .collect(),
    );
    if v["properties"].get("error").is_none_or(Value::is_null) {
        if let Some(e) = exts.iter().find_map(|e| e.error.as_ref()) {
            v["properties"]["error"] = json!(e);
        }
    }
}

/// The VM instance view's `extensions[]`, and a failed extension's error among its statuses
/// (`ProvisioningState/failed/VMExtensionProvisioningError`, as the cloud shows it).
pub fn decorate_vm_view(state: &AppState, r: &VmRecord, view: &mut Value) {
    let Ok(exts) = state.ext.list(&r.rg, &r.name) else {
        return;
    };
    view["extensions"] = Value::Array(
        exts.iter()
            .map(|e| crate::extensions::status::instance_view(e, log_uri(state, r, e)))
            .collect(),
    );
    if let Some(statuses) = view["statuses"].as_array_mut() {
        for e in exts.iter().filter_map(|e| e.error.as_ref()) {
            statuses.push(json!({
                "code": format!("ProvisioningState/failed/{}", e.code),
                "level": "Error",
                "displayStatus": "Provisioning failed",
                "message": e.message,
            }));
        }
    }
}

/// The 201/200 with the operation's `Azure-AsyncOperation` (and `Location` to watch it).
fn with_operation(
    state: &AppState,
    headers: &HeaderMap,
    status: StatusCode,
    body: Option<Value>,
    op: Option<&str>,
    monitor: bool,
) -> Response {
    let mut r = match body {
        Some(b) => (status, Json(b)).into_response(),
        None => status.into_response(),
    };
    let Some(op) = op else { return r };
    let url = super::lookup::operation_url(state, headers, op);
    let location = if monitor {
        format!("{url}&monitor=true")
    } else {
        url.clone()
    };
    for (h, v) in [("azure-asyncoperation", url), ("location", location)] {
        if let Ok(v) = axum::http::HeaderValue::from_str(&v) {
            r.headers_mut().insert(h, v);
        }
    }
    r.headers_mut()
        .insert("retry-after", axum::http::HeaderValue::from_static("1"));
    r
}

/// Reads an extension's PUT body (pure: the fuzz loops call it, tests/fuzz_api.rs).
pub fn parse_put(body: &Value) -> Result<PutExtension> {
    let p = body
        .get("properties")
        .and_then(Value::as_object)
        .ok_or_else(|| ApiError::bad_request("Required parameter 'properties' is missing."))?;
    let s = |k: &str| p.get(k).and_then(Value::as_str).map(str::to_string);
    let publisher = s("publisher").ok_or_else(|| {
        ApiError::bad_request("Required parameter 'properties.publisher' is missing.")
    })?;
    let ext_type = s("type")
        .ok_or_else(|| ApiError::bad_request("Required parameter 'properties.type' is missing."))?;
    let obj = |k: &str| -> Result<Option<Map<String, Value>>> {
        match p.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Object(m)) => Ok(Some(m.clone())),
            // The cloud also takes settings as a JSON string.
            Some(Value::String(t)) => match serde_json::from_str::<Value>(t) {
                Ok(Value::Object(m)) => Ok(Some(m)),
                _ => Err(ApiError::bad_request(format!(
                    "properties.{k} must be a JSON object."
                ))),
            },
            Some(_) => Err(ApiError::bad_request(format!(
                "properties.{k} must be a JSON object."
            ))),
        }
    };
    let default_version = if ext_type.eq_ignore_ascii_case("CustomScriptExtension") {
        "1.10"
    } else {
        "2.1"
    };
    Ok(PutExtension {
        location: body
            .get("location")
            .and_then(Value::as_str)
            .map(str::to_string),
        type_handler_version: s("typeHandlerVersion").unwrap_or_else(|| default_version.into()),
        auto_upgrade_minor_version: p
            .get("autoUpgradeMinorVersion")
            .and_then(Value::as_bool)
            .unwrap_or(true),
        settings: obj("settings")?.unwrap_or_default(),
        protected: obj("protectedSettings")?,
        force_update_tag: s("forceUpdateTag").filter(|t| !t.is_empty()),
        tags: body
            .get("tags")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default(),
        publisher,
        ext_type,
    })
}

pub async fn put_ext(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((sub, rg, vm, name)): Path<(String, String, String, String)>,
    body: Option<Json<Value>>,
) -> Result<Response> {
    check_sub(&state, &sub)?;
    let Some(Json(body)) = body else {
        return Err(ApiError::bad_request(
            "The request body must be a JSON virtual machine extension.",
        ));
    };
    let req = parse_put(&body)?;
    let vmrec = state.node.get(&rg, &vm);
    Ok(match state.ext.put(&rg, &vm, &name, req)? {
        Put::Created(r, op) => with_operation(
            &state,
            &headers,
            StatusCode::CREATED,
            Some(render(&state, vmrec.as_ref(), &r, false)),
            Some(&op),
            false,
        ),
        Put::Updated(r, op) => with_operation(
            &state,
            &headers,
            StatusCode::OK,
            Some(render(&state, vmrec.as_ref(), &r, false)),
            Some(&op),
            false,
        ),
        Put::Unchanged(r) => (
            StatusCode::OK,
            Json(render(&state, vmrec.as_ref(), &r, false)),
        )
            .into_response(),
    })
}

pub async fn get_ext(
    State(state): State<AppState>,
    Path((sub, rg, vm, name)): Path<(String, String, String, String)>,
    Query(q): Q,
) -> Result<Json<Value>> {
    check_sub(&state, &sub)?;
    super::lookup::find(&state, &rg, &vm)?;
    let r = state.ext.get(&rg, &vm, &name)?;
    Ok(Json(render(
        &state,
        state.node.get(&rg, &vm).as_ref(),
        &r,
        wants_view(&q),
    )))
}

pub async fn list_ext(
    State(state): State<AppState>,
    Path((sub, rg, vm)): Path<(String, String, String)>,
    Query(q): Q,
) -> Result<Json<Value>> {
    check_sub(&state, &sub)?;
    let vmrec = super::lookup::find(&state, &rg, &vm)?;
    let view = wants_view(&q);
    let list: Vec<Value> = state
        .ext
        .list(&rg, &vm)?
        .iter()
        .map(|r| render(&state, Some(&vmrec), r, view))
        .collect();
    Ok(Json(json!({ "value": list })))
}

pub async fn delete_ext(
    State(state): State<AppState>,
    Path((sub, rg, vm, name)): Path<(String, String, String, String)>,
) -> Result<Response> {
    check_sub(&state, &sub)?;
    super::lookup::find(&state, &rg, &vm)?;
    Ok(if state.ext.delete(&rg, &vm, &name)? {
        StatusCode::OK.into_response()
    } else {
        StatusCode::NO_CONTENT.into_response()
    })
}

/// `POST .../runCommand` `{commandId, script: [lines], parameters: [{name, value}]}`.
pub async fn run_command(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((sub, rg, vm)): Path<(String, String, String)>,
    body: Option<Json<Value>>,
) -> Result<Response> {
    check_sub(&state, &sub)?;
    super::lookup::find(&state, &rg, &vm)?;
    let body = body.map(|b| b.0).unwrap_or_default();
    let command_id = body["commandId"]
        .as_str()
        .ok_or_else(|| ApiError::bad_request("Required parameter 'commandId' is missing."))?
        .to_string();
    let script = match &body["script"] {
        Value::Array(a) => a
            .iter()
            .map(|l| l.as_str().unwrap_or_default().to_string())
            .collect(),
        Value::String(s) => vec![s.clone()],
        _ => vec![],
    };
    let parameters = body["parameters"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|p| {
                    (
                        p["name"].as_str().unwrap_or_default().to_string(),
                        p["value"]
                            .as_str()
                            .map(str::to_string)
                            .unwrap_or_else(|| p["value"].to_string()),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let op = state.ext.run_command(
        &rg,
        &vm,
        runcommand::Request {
            command_id,
            script,
            parameters,
        },
    )?;
    Ok(with_operation(
        &state,
        &headers,
        StatusCode::ACCEPTED,
        None,
        Some(&op),
        true,
    ))
}

/// `GET .../operations/{id}?monitor=true` (the `Location` of a Run Command): 202 while it runs,
/// then the operation's result document (or its error).
pub fn monitor(state: &AppState, id: &str) -> Option<Response> {
    if !state.node.ops.exists(id) {
        return None;
    }
    Some(match state.node.ops.output(id) {
        None => {
            let mut r = StatusCode::ACCEPTED.into_response();
            r.headers_mut()
                .insert("retry-after", axum::http::HeaderValue::from_static("1"));
            r
        }
        Some(Ok(out)) => Json(out.unwrap_or_else(|| json!({}))).into_response(),
        Some(Err(e)) => ApiError::new(StatusCode::CONFLICT, &e.code, e.message).into_response(),
    })
}

pub async fn list_run_commands(
    State(state): State<AppState>,
    Path((sub, _loc)): Path<(String, String)>,
) -> Result<Json<Value>> {
    check_sub(&state, &sub)?;
    Ok(Json(json!({ "value": runcommand::documents() })))
}

pub async fn get_run_command(
    State(state): State<AppState>,
    Path((sub, _loc, id)): Path<(String, String, String)>,
) -> Result<Json<Value>> {
    check_sub(&state, &sub)?;
    runcommand::documents()
        .into_iter()
        .find(|d| d["id"].as_str().is_some_and(|i| i.eq_ignore_ascii_case(&id)))
        .map(Json)
        .ok_or_else(|| ApiError::not_found("NotFound", format!("The run command '{id}' is not available on this node; see GET .../runCommands.")))
}
