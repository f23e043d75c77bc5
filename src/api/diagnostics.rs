//! Boot diagnostics: the cloud's `retrieveBootDiagnosticsData` (SAS links to the latest
//! screenshot and serial log), the serial log and a fresh screenshot, and vmnode's flight
//! recorder (every boot with its timeline and verdict, and a serial tail with a cursor).

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::check_sub;
use super::error::ApiError;
use super::lookup::{blob_uri, find};
use super::AppState;
use crate::vm::model::VmRecord;

type Result<T> = std::result::Result<T, ApiError>;
type Q = Query<HashMap<String, String>>;

/// SAS links live this long unless asked otherwise (the cloud's default), 1 to 1440 minutes.
const SAS_DEFAULT_MIN: i64 = 120;

/// `sasUriExpirationTimeInMinutes` (any case): 1 to 1440, 120 when absent.
fn sas_minutes(q: &HashMap<String, String>) -> Result<i64> {
    let Some((_, v)) = q
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("sasUriExpirationTimeInMinutes"))
    else {
        return Ok(SAS_DEFAULT_MIN);
    };
    match v.parse::<i64>() {
        Ok(m) if (1..=1440).contains(&m) => Ok(m),
        _ => Err(ApiError::bad_request(format!(
            "sasUriExpirationTimeInMinutes '{v}' is not valid: give a whole number of minutes from 1 to 1440 (default {SAS_DEFAULT_MIN})"
        ))),
    }
}

/// `POST .../retrieveBootDiagnosticsData?sasUriExpirationTimeInMinutes=N`.
pub async fn retrieve(
    State(state): State<AppState>,
    Path((sub, rg, vm)): Path<(String, String, String)>,
    Query(q): Q,
) -> Result<Json<Value>> {
    check_sub(&state, &sub)?;
    let r = find(&state, &rg, &vm)?;
    let minutes = sas_minutes(&q)?;
    let diag = state.node.recorder(&rg, &vm)?;
    let (shot, log) = diag.blob_names();
    let link = |b: &str| blob_uri(&state, &r, b, Some(minutes));
    let (Some(shot_uri), Some(log_uri)) = (link(&shot), link(&log)) else {
        return Err(ApiError::new(
            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            "InternalError",
            "the VM's diagnostics storage account is not served by this node's blob service",
        ));
    };
    Ok(Json(json!({
        "consoleScreenshotBlobUri": shot_uri,
        "serialConsoleLogBlobUri": log_uri,
    })))
}

/// The current boot's serial log as text (the cloud's `serialConsoleLog` content).
pub async fn serial_log(
    State(state): State<AppState>,
    Path((sub, rg, vm)): Path<(String, String, String)>,
) -> Result<Response> {
    check_sub(&state, &sub)?;
    find(&state, &rg, &vm)?;
    // `tail` drains the spool first, so the text is current.
    let diag = state.node.recorder(&rg, &vm)?;
    let text = diag
        .tail(None, Some(0), u64::MAX)
        .map(|t| t.text)
        .unwrap_or_default();
    Ok(([("content-type", "text/plain; charset=utf-8")], text).into_response())
}

/// `GET .../bootDiagnostics/serialTail?boot=N&cursor=C&max=B`: a piece of a boot's log (the
/// current boot, from `cursor`, or its last `max` bytes) and the cursor to continue from.
pub async fn serial_tail(
    State(state): State<AppState>,
    Path((sub, rg, vm)): Path<(String, String, String)>,
    Query(q): Q,
) -> Result<Json<Value>> {
    check_sub(&state, &sub)?;
    find(&state, &rg, &vm)?;
    let num = |k: &str| -> Result<Option<u64>> {
        match q.get(k) {
            None => Ok(None),
            Some(v) => v.parse::<u64>().map(Some).map_err(|_| {
                ApiError::bad_request(format!("{k} '{v}' is not a non-negative whole number"))
            }),
        }
    };
    let boot = num("boot")?.map(|b| b as u32);
    let cursor = num("cursor")?;
    let max = num("max")?.unwrap_or(64 << 10).clamp(1, 4 << 20);
    let diag = state.node.recorder(&rg, &vm)?;
    let tail = diag.tail(boot, cursor, max).ok_or_else(|| {
        ApiError::not_found(
            "BootNotFound",
            match boot {
                Some(n) => format!("VM '{vm}' has no boot {n} on record; list them with GET .../bootDiagnostics/boots"),
                None => format!("VM '{vm}' has not booted yet"),
            },
        )
    })?;
    Ok(Json(serde_json::to_value(tail).unwrap_or(Value::Null)))
}

/// `GET .../bootDiagnostics/boots`: every kept boot with its timeline, screenshot series
/// (each with a SAS link) and verdict.
pub async fn boots(
    State(state): State<AppState>,
    Path((sub, rg, vm)): Path<(String, String, String)>,
    Query(q): Q,
) -> Result<Json<Value>> {
    check_sub(&state, &sub)?;
    let r = find(&state, &rg, &vm)?;
    let minutes = sas_minutes(&q)?;
    let diag = state.node.recorder(&rg, &vm)?;
    diag.pump();
    let mut out = vec![];
    for b in diag.boots() {
        let mut v = serde_json::to_value(&b).unwrap_or(Value::Null);
        v["serialLogUri"] = json!(blob_uri(&state, &r, &b.boot.log_blob, Some(minutes)));
        if let Some(frames) = v["frames"].as_array_mut() {
            for f in frames {
                let blob = f["blob"].as_str().unwrap_or("").to_string();
                f["uri"] = json!(blob_uri(&state, &r, &blob, Some(minutes)));
            }
        }
        out.push(v);
    }
    Ok(Json(json!({ "value": out })))
}

/// The instance view's `bootDiagnostics`: the cloud's blob URIs (without SAS, as the cloud
/// shows them) and vmnode's verdict on the current boot.
pub fn instance_view_part(state: &AppState, r: &VmRecord) -> Value {
    let Ok(diag) = state.node.recorder(&r.rg, &r.name) else {
        return json!({});
    };
    let (shot, log) = diag.blob_names();
    let mut v = json!({
        "consoleScreenshotBlobUri": blob_uri(state, r, &shot, None),
        "serialConsoleLogBlobUri": blob_uri(state, r, &log, None),
    });
    if let Some((n, verdict)) = diag.verdict() {
        v["vmnodeBootVerdict"] = json!({ "boot": n, "verdict": verdict });
    }
    v
}

/// A fresh screenshot (PNG, or the cloud's BMP with `?format=bmp`); the last one stored when
/// the VM is not running.
pub async fn screenshot(
    State(state): State<AppState>,
    Path((sub, rg, vm)): Path<(String, String, String)>,
    Query(q): Q,
) -> Result<Response> {
    check_sub(&state, &sub)?;
    find(&state, &rg, &vm)?;
    let png = state.node.screenshot(&rg, &vm).await?;
    let bmp = q
        .get("format")
        .is_some_and(|f| f.eq_ignore_ascii_case("bmp"));
    let (path, ctype) = if bmp {
        (png.with_extension("bmp"), "image/bmp")
    } else {
        (png, "image/png")
    };
    let data = std::fs::read(&path).map_err(|e| ApiError::internal(&e))?;
    Ok(([("content-type", ctype)], data).into_response())
}
