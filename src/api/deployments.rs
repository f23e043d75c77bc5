//! `Microsoft.Resources/deployments`: template deployments into a resource group, as
//! azure-mgmt-resource's `deployments.begin_create_or_update` sends them.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};
use tracing::Instrument;

use super::error::ApiError;
use super::{check_rg, check_sub, AppState};
use crate::deploy::template::{self, Scope};
use crate::deploy::{DeployError, Deployment, Operation};

type Result<T> = std::result::Result<T, ApiError>;

impl From<DeployError> for ApiError {
    fn from(e: DeployError) -> Self {
        match &e {
            DeployError::InvalidTemplate(_) => {
                ApiError::new(StatusCode::BAD_REQUEST, "InvalidTemplate", e.to_string())
            }
            DeployError::Active(_) => {
                ApiError::new(StatusCode::CONFLICT, "DeploymentActive", e.to_string())
            }
            DeployError::Store { .. } => ApiError::internal(&e),
        }
    }
}

/// ARM's rule for deployment names. The name is also the record's file name
/// (`deployments/{rg}/{name}.json`): a `/` in it (sent as `%2F`) would leave that directory.
fn check_name(name: &str) -> Result<()> {
    let ok = (1..=64).contains(&name.chars().count())
        && name
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '-' | '_' | '.' | '(' | ')'));
    if ok {
        return Ok(());
    }
    Err(ApiError::new(
        StatusCode::BAD_REQUEST,
        "InvalidDeploymentName",
        format!("The deployment name '{name}' is invalid: use 1-64 letters, digits, '-', '_', '.', '(' or ')'."),
    )
    .with_target("name"))
}

fn base(state: &AppState, rg: &str) -> String {
    format!(
        "/subscriptions/{}/resourceGroups/{rg}/providers/Microsoft.Resources/deployments",
        state.node.subscription
    )
}

fn duration(start: &str, end: Option<&str>) -> String {
    let parse = |s: &str| {
        time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()
    };
    let (Some(a), b) = (parse(start), end.and_then(parse)) else {
        return "PT0S".into();
    };
    let b = b.unwrap_or_else(time::OffsetDateTime::now_utc);
    format!("PT{:.3}S", (b - a).as_seconds_f64().max(0.0))
}

fn render(state: &AppState, d: &Deployment) -> Value {
    let outputs: Vec<Value> = d
        .operations
        .iter()
        .filter(|o| o.state == "Succeeded")
        .map(|o| json!({ "id": o.resource_id }))
        .collect();
    let mut props = json!({
        "provisioningState": d.state,
        "timestamp": d.ended.clone().unwrap_or_else(|| d.started.clone()),
        "duration": duration(&d.started, d.ended.as_deref()),
        "correlationId": d.correlation_id,
        "mode": d.mode,
        "templateHash": d.template_hash,
        "parameters": d.parameters,
        "outputs": {},
        "outputResources": outputs,
        "dependencies": [],
        "providers": [],
    });
    if let Some(e) = &d.error {
        props["error"] = e.clone();
    }
    json!({
        "id": format!("{}/{}", base(state, &d.resource_group), d.name),
        "name": d.name,
        "type": "Microsoft.Resources/deployments",
        "properties": props,
    })
}

fn render_op(state: &AppState, d: &Deployment, o: &Operation) -> Value {
    let mut status = json!({ "status": o.state });
    if let Some(e) = &o.error {
        status["error"] = e.clone();
    }
    json!({
        "id": format!("{}/{}/operations/{}", base(state, &d.resource_group), d.name, o.operation_id),
        "operationId": o.operation_id,
        "properties": {
            "provisioningOperation": "Create",
            "provisioningState": o.state,
            "timestamp": o.ended.clone().or_else(|| o.started.clone()).unwrap_or_else(|| d.started.clone()),
            "duration": o.started.as_deref().map(|s| duration(s, o.ended.as_deref())).unwrap_or_else(|| "PT0S".into()),
            "trackingId": o.operation_id,
            "statusCode": o.status_code,
            "statusMessage": status,
            "targetResource": {
                "id": o.resource_id,
                "resourceType": o.resource_type,
                "resourceName": o.resource_name,
            },
        }
    })
}

/// The caller's parameters as stored and shown: secure ones are dropped.
fn shown_parameters(template: &Value, given: &Value) -> Value {
    let declared = template["parameters"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    let mut out = serde_json::Map::new();
    for (name, decl) in &declared {
        let ty = decl["type"].as_str().unwrap_or("String");
        if ty.to_ascii_lowercase().starts_with("secure") {
            out.insert(name.clone(), json!({ "type": ty }));
            continue;
        }
        let value = given
            .as_object()
            .and_then(|g| g.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)))
            .and_then(|(_, v)| v.get("value").cloned())
            .or_else(|| decl.get("defaultValue").cloned());
        if let Some(v) = value {
            out.insert(name.clone(), json!({ "type": ty, "value": v }));
        }
    }
    Value::Object(out)
}

/// A deployment's PUT body: its inline template and its parameters (pure: the fuzz loops call
/// it with [`template::plan`], tests/fuzz_api.rs).
pub fn parse_put(body: &Value) -> Result<(&Value, Value)> {
    let props = &body["properties"];
    if props.get("templateLink").is_some() {
        return Err(ApiError::bad_request(
            "properties.templateLink is not supported by vmnode (it cannot fetch templates); send the template inline in properties.template",
        ));
    }
    let mode = props["mode"].as_str().unwrap_or("Incremental");
    if !mode.eq_ignore_ascii_case("incremental") {
        return Err(ApiError::bad_request(format!(
            "deployment mode '{mode}' is not supported by vmnode: only Incremental (Complete would delete resources the template does not name)"
        )));
    }
    let Some(tpl) = props.get("template").filter(|t| t.is_object()) else {
        return Err(ApiError::bad_request(
            "properties.template is missing: send the ARM template (a JSON object with resources) inline",
        ));
    };
    let given = props
        .get("parameters")
        .cloned()
        .unwrap_or_else(|| json!({}));
    Ok((tpl, given))
}

pub async fn put(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((sub, rg, name)): Path<(String, String, String)>,
    body: Option<Json<Value>>,
) -> Result<Response> {
    check_rg(&state, &sub, &rg)?;
    check_name(&name)?;
    let body = body.map(|b| b.0).unwrap_or_default();
    let (tpl, given) = parse_put(&body)?;
    let scope = Scope {
        subscription: state.node.subscription.clone(),
        resource_group: rg.clone(),
        location: crate::config::LOCATION.into(),
        deployment: name.clone(),
    };
    let plan = template::plan(tpl, &given, &scope)?;
    let op = uuid::Uuid::new_v4().to_string();
    let d = Deployment {
        name: name.clone(),
        resource_group: rg.clone(),
        correlation_id: headers
            .get("x-ms-correlation-request-id")
            .and_then(|h| h.to_str().ok())
            .map(str::to_string)
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string()),
        operation: op.clone(),
        state: "Accepted".into(),
        mode: "Incremental".into(),
        template_hash: {
            use sha2::Digest;
            let h = sha2::Sha256::digest(tpl.to_string().as_bytes());
            u64::from_be_bytes(h[..8].try_into().unwrap_or_default()).to_string()
        },
        parameters: shown_parameters(tpl, &given),
        started: crate::report::time_now(),
        ended: None,
        operations: plan
            .iter()
            .map(|r| Operation {
                operation_id: format!("{:016X}", rand::random::<u64>()),
                resource_id: r.id.clone(),
                resource_type: r.resource_type.clone(),
                resource_name: r.name.clone(),
                state: "Waiting".into(),
                status_code: None,
                error: None,
                started: None,
                ended: None,
            })
            .collect(),
        error: None,
    };
    state.deployments.begin(d.clone())?;
    tracing::info!(rg = %rg, name = %name, resources = plan.len(), "deployment accepted");
    let api = (state.engine_api)(&state);
    let span = tracing::info_span!("deployment", rg = %rg, name = %name);
    tokio::spawn(
        crate::deploy::engine::run(
            api,
            state.deployments.clone(),
            rg.clone(),
            name.clone(),
            plan,
        )
        .instrument(span),
    );
    let host = headers
        .get("host")
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost");
    let url = format!(
        "https://{host}{}/{name}/operationStatuses/{op}?api-version=2022-09-01",
        base(&state, &rg)
    );
    let mut r = (StatusCode::CREATED, Json(render(&state, &d))).into_response();
    if let Ok(v) = axum::http::HeaderValue::from_str(&url) {
        r.headers_mut().insert("azure-asyncoperation", v);
    }
    r.headers_mut()
        .insert("retry-after", axum::http::HeaderValue::from_static("1"));
    Ok(r)
}

fn find(state: &AppState, rg: &str, name: &str) -> Result<Deployment> {
    state.deployments.get(rg, name).ok_or_else(|| {
        ApiError::not_found(
            "DeploymentNotFound",
            format!("Deployment '{name}' could not be found."),
        )
    })
}

pub async fn get(
    State(state): State<AppState>,
    Path((sub, rg, name)): Path<(String, String, String)>,
) -> Result<Json<Value>> {
    check_sub(&state, &sub)?;
    Ok(Json(render(&state, &find(&state, &rg, &name)?)))
}

pub async fn list(
    State(state): State<AppState>,
    Path((sub, rg)): Path<(String, String)>,
) -> Result<Json<Value>> {
    check_rg(&state, &sub, &rg)?;
    let v: Vec<Value> = state
        .deployments
        .list(&rg)
        .iter()
        .map(|d| render(&state, d))
        .collect();
    Ok(Json(json!({ "value": v })))
}

pub async fn delete(
    State(state): State<AppState>,
    Path((sub, rg, name)): Path<(String, String, String)>,
) -> Result<StatusCode> {
    check_sub(&state, &sub)?;
    // Like the cloud: deleting a deployment forgets its record; its resources stay. Done at
    // once, so 204 whether or not it existed (ARM's 202 + poll would end the same way).
    state.deployments.remove(&rg, &name)?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn operations(
    State(state): State<AppState>,
    Path((sub, rg, name)): Path<(String, String, String)>,
) -> Result<Json<Value>> {
    check_sub(&state, &sub)?;
    let d = find(&state, &rg, &name)?;
    let v: Vec<Value> = d
        .operations
        .iter()
        .filter(|o| o.state != "Waiting")
        .map(|o| render_op(&state, &d, o))
        .collect();
    Ok(Json(json!({ "value": v })))
}

pub async fn operation(
    State(state): State<AppState>,
    Path((sub, rg, name, op)): Path<(String, String, String, String)>,
) -> Result<Json<Value>> {
    check_sub(&state, &sub)?;
    let d = find(&state, &rg, &name)?;
    let o = d
        .operations
        .iter()
        .find(|o| o.operation_id.eq_ignore_ascii_case(&op))
        .ok_or_else(|| {
            ApiError::not_found(
                "DeploymentOperationNotFound",
                format!("Deployment operation '{op}' of deployment '{name}' could not be found."),
            )
        })?;
    Ok(Json(render_op(&state, &d, o)))
}

pub async fn operation_status(
    State(state): State<AppState>,
    Path((sub, _rg, _name, op)): Path<(String, String, String, String)>,
) -> Result<Json<Value>> {
    check_sub(&state, &sub)?;
    let d = state.deployments.by_operation(&op).ok_or_else(|| {
        ApiError::not_found(
            "OperationNotFound",
            format!("Deployment operation '{op}' is not known to this node."),
        )
    })?;
    let status = match d.state.as_str() {
        "Accepted" | "Running" => "Running",
        s => s,
    };
    let mut v = json!({ "status": status });
    if let Some(e) = &d.error {
        v["error"] = e.clone();
    }
    Ok(Json(v))
}
