//! `Microsoft.Storage/storageAccounts` + `listKeys`: accounts of the node's blob service. The
//! node's own account (made at first start, holding OS disks) is shown in resource group `vmnode`.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::check_rg as check;
use super::error::ApiError;
use super::AppState;
use crate::config::LOCATION;
use crate::storage::db::Kind;

type Result<T> = std::result::Result<T, ApiError>;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AccountRecord {
    pub rg: String,
    pub name: String,
    pub key1: String,
    pub key2: String,
    pub sku: String,
    pub kind: String,
}

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

/// Makes an account known to the blob service and writes the CLI's account file.
pub fn register(
    state_dir: &std::path::Path,
    blob_endpoint: &str,
    a: &AccountRecord,
) -> std::result::Result<(), String> {
    if let Some(store) = crate::blob::node_store() {
        store.add_account(&a.name, &[&a.key1, &a.key2])?;
    }
    let file = crate::blob::AccountFile {
        name: a.name.clone(),
        key: a.key1.clone(),
        blob_endpoint: blob_endpoint.into(),
    };
    let body = serde_json::to_vec_pretty(&file).map_err(|e| e.to_string())?;
    crate::storage::fsutil::write_atomic(
        &crate::blob::account_file(state_dir, &a.name),
        &body,
        0o600,
    )
    .map_err(|e| e.to_string())
}

/// Account writes, one at a time: two PUTs of one new account at once both made keys and wrote
/// its file, and one failed with a 500 (the fuzzer's races). None awaits while holding it.
fn writes() -> std::sync::MutexGuard<'static, ()> {
    static WRITES: std::sync::Mutex<()> = std::sync::Mutex::new(());
    WRITES.lock().unwrap_or_else(|p| p.into_inner())
}

fn find(state: &AppState, name: &str) -> Result<Option<AccountRecord>> {
    Ok(state.node.db.get(Kind::StorageAccount, name)?)
}

pub async fn put(
    State(state): State<AppState>,
    Path((sub, rg, name)): Path<(String, String, String)>,
    body: Option<Json<Value>>,
) -> Result<Response> {
    crate::failpoint::panic_point("api.panic");
    check(&state, &sub, &rg)?;
    let _one = writes();
    let ok = (3..=24).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    if !ok {
        return Err(ApiError::new(StatusCode::BAD_REQUEST, "AccountNameInvalid", format!("{name} is not a valid storage account name: use 3-24 lowercase letters and digits.")));
    }
    let body = body.map(|b| b.0).unwrap_or_default();
    if let Some(existing) = find(&state, &name)? {
        if !existing.rg.eq_ignore_ascii_case(&rg) {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "StorageAccountAlreadyTaken",
                format!("The storage account named {name} is already taken."),
            ));
        }
        return Ok((StatusCode::OK, Json(render(&state, &existing))).into_response());
    }
    let a = AccountRecord {
        rg: rg.clone(),
        name: name.clone(),
        key1: crate::blob::new_account_key(),
        key2: crate::blob::new_account_key(),
        sku: body["sku"]["name"]
            .as_str()
            .unwrap_or("Standard_LRS")
            .to_string(),
        kind: body["kind"].as_str().unwrap_or("StorageV2").to_string(),
    };
    let ep = format!("http://{}", state.node.cfg.blob_listen);
    register(&state.node.cfg.paths.state, &ep, &a)
        .map_err(|e| ApiError::internal(&std::io::Error::other(e)))?;
    state.node.db.put(Kind::StorageAccount, &name, &a)?;
    Ok((StatusCode::OK, Json(render(&state, &a))).into_response())
}

pub async fn get(
    State(state): State<AppState>,
    Path((sub, rg, name)): Path<(String, String, String)>,
) -> Result<Json<Value>> {
    check(&state, &sub, &rg)?;
    let a = find(&state, &name)?.filter(|a| a.rg.eq_ignore_ascii_case(&rg)).ok_or_else(|| {
        ApiError::not_found("ResourceNotFound", format!("The Resource 'Microsoft.Storage/storageAccounts/{name}' under resource group '{rg}' was not found."))
    })?;
    Ok(Json(render(&state, &a)))
}

pub async fn list(
    State(state): State<AppState>,
    Path((sub, rg)): Path<(String, String)>,
) -> Result<Json<Value>> {
    check(&state, &sub, &rg)?;
    let all: Vec<AccountRecord> = state.node.db.list(Kind::StorageAccount)?;
    Ok(Json(
        json!({ "value": all.iter().filter(|a| a.rg.eq_ignore_ascii_case(&rg)).map(|a| render(&state, a)).collect::<Vec<_>>() }),
    ))
}

pub async fn list_keys(
    State(state): State<AppState>,
    Path((sub, rg, name)): Path<(String, String, String)>,
) -> Result<Json<Value>> {
    check(&state, &sub, &rg)?;
    let a = find(&state, &name)?.filter(|a| a.rg.eq_ignore_ascii_case(&rg)).ok_or_else(|| {
        ApiError::not_found("ResourceNotFound", format!("The Resource 'Microsoft.Storage/storageAccounts/{name}' under resource group '{rg}' was not found."))
    })?;
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
    let _one = writes();
    let Some(a) = find(&state, &name)?.filter(|a| a.rg.eq_ignore_ascii_case(&rg)) else {
        return Ok(StatusCode::NO_CONTENT.into_response());
    };
    if a.name == state.node.account {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "OperationNotAllowed",
            "The node's own storage account holds VM disks and cannot be deleted.",
        ));
    }
    state.node.db.delete(Kind::StorageAccount, &name)?;
    let _ = std::fs::remove_file(crate::blob::account_file(
        &state.node.cfg.paths.state,
        &name,
    ));
    Ok(StatusCode::OK.into_response())
}
