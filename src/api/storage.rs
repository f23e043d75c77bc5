//! `Microsoft.Storage/storageAccounts` + `listKeys`: the HTTP face of the node's storage
//! accounts. Their rules and writes are [`crate::blob::accounts`]'s; here, paths and bodies in,
//! the cloud's documents out.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::check_rg as check;
use super::error::ApiError;
use super::AppState;
use crate::blob::accounts::{AccountBody, AccountRecord};
use crate::config::LOCATION;

type Result<T> = std::result::Result<T, ApiError>;

fn endpoint(state: &AppState, name: &str) -> String {
    format!("http://{}/{name}/", state.node.cfg.blob_listen)
}

fn render(state: &AppState, a: &AccountRecord) -> Value {
    json!({
        "id": format!("/subscriptions/{}/resourceGroups/{}/providers/Microsoft.Storage/storageAccounts/{}", state.node.subscription, a.rg, a.name),
        "name": a.name,
        "type": "Microsoft.Storage/storageAccounts",
        "location": LOCATION,
        "kind": a.kind,
        "sku": { "name": a.sku, "tier": "Standard" },
        "properties": {
            "provisioningState": "Succeeded",
            "primaryLocation": LOCATION,
            "statusOfPrimary": "available",
            "primaryEndpoints": { "blob": endpoint(state, &a.name) },
            "supportsHttpsTrafficOnly": false,
        },
    })
}

fn not_found(rg: &str, name: &str) -> ApiError {
    ApiError::not_found("ResourceNotFound", format!("The Resource 'Microsoft.Storage/storageAccounts/{name}' under resource group '{rg}' was not found."))
}

pub async fn put(
    State(state): State<AppState>,
    Path((sub, rg, name)): Path<(String, String, String)>,
    body: Option<Json<Value>>,
) -> Result<Response> {
    crate::failpoint::panic_point("api.panic");
    check(&state, &sub, &rg)?;
    let a = state
        .accounts
        .put(&rg, &name, AccountBody::from_json(body.map(|b| b.0)))?;
    Ok((StatusCode::OK, Json(render(&state, &a))).into_response())
}

pub async fn get(
    State(state): State<AppState>,
    Path((sub, rg, name)): Path<(String, String, String)>,
) -> Result<Json<Value>> {
    check(&state, &sub, &rg)?;
    let a = state
        .accounts
        .get(&rg, &name)?
        .ok_or_else(|| not_found(&rg, &name))?;
    Ok(Json(render(&state, &a)))
}

pub async fn list(
    State(state): State<AppState>,
    Path((sub, rg)): Path<(String, String)>,
) -> Result<Json<Value>> {
    check(&state, &sub, &rg)?;
    let all = state.accounts.list(&rg)?;
    Ok(Json(
        json!({ "value": all.iter().map(|a| render(&state, a)).collect::<Vec<_>>() }),
    ))
}

pub async fn list_keys(
    State(state): State<AppState>,
    Path((sub, rg, name)): Path<(String, String, String)>,
) -> Result<Json<Value>> {
    check(&state, &sub, &rg)?;
    let a = state
        .accounts
        .get(&rg, &name)?
        .ok_or_else(|| not_found(&rg, &name))?;
    Ok(Json(json!({ "keys": [
        { "keyName": "key1", "value": a.key1, "permissions": "FULL" },
        { "keyName": "key2", "value": a.key2, "permissions": "FULL" },
    ] })))
}

pub async fn delete(
    State(state): State<AppState>,
    Path((sub, rg, name)): Path<(String, String, String)>,
) -> Result<Response> {
    check(&state, &sub, &rg)?;
    Ok(if state.accounts.delete(&rg, &name)? {
        StatusCode::OK
    } else {
        StatusCode::NO_CONTENT
    }
    .into_response())
}
