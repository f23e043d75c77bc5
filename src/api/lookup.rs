//! What several route modules look up the same way: a VM by group and name, the URL of a long
//! operation's status, a diagnostics blob's URL (with a SAS). A leaf of `api/`: the route modules
//! import it, it imports none of them.

use super::error::ApiError;
use super::AppState;
use crate::vm::model::VmRecord;

type Result<T> = std::result::Result<T, ApiError>;

/// `(account, container)` of a VM's diagnostics: its container sits in the account's folder.
fn diag_location(r: &VmRecord) -> Option<(String, String)> {
    let container = r.serial_log.parent()?;
    let account = container
        .parent()?
        .file_name()?
        .to_string_lossy()
        .into_owned();
    Some((
        account,
        container.file_name()?.to_string_lossy().into_owned(),
    ))
}

/// The VM `vm` of group `rg`: 404 ResourceGroupNotFound or ResourceNotFound as the cloud says.
pub fn find(state: &AppState, rg: &str, vm: &str) -> Result<VmRecord> {
    if !crate::groups::exists(&state.node.db, rg)? {
        return Err(crate::vm::VmError::ResourceGroupNotFound(rg.into()).into());
    }
    state
        .vms
        .get(rg, vm)
        .ok_or_else(|| crate::vm::VmError::NotFound(vm.into(), rg.into()).into())
}

/// The absolute URL of a long operation's status, on the host the caller used.
pub fn operation_url(state: &AppState, headers: &axum::http::HeaderMap, op: &str) -> String {
    let host = headers
        .get("host")
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost");
    format!(
        "https://{host}/subscriptions/{}/providers/Microsoft.Compute/locations/{}/operations/{op}?api-version=2024-07-01",
        state.node.subscription,
        crate::config::LOCATION
    )
}

/// `http://{blob-listen}/{account}/{container}/{blob}`, with a read-only SAS valid for
/// `minutes` when given.
pub fn blob_uri(
    state: &AppState,
    r: &VmRecord,
    blob: &str,
    minutes: Option<i64>,
) -> Option<String> {
    let (account, container) = diag_location(r)?;
    let base = format!(
        "http://{}/{account}/{container}/{blob}",
        state.node.cfg.blob_listen
    );
    let Some(min) = minutes else {
        return Some(base);
    };
    let acct = state.node.blobs.account(&account)?;
    let expiry = (time::OffsetDateTime::now_utc() + time::Duration::minutes(min))
        .replace_nanosecond(0)
        .ok()?
        .format(&time::format_description::well_known::Rfc3339)
        .ok()?;
    let sas = crate::blob::http::auth::service_sas(
        &acct,
        &container,
        Some(blob),
        "r",
        None,
        &expiry,
        None,
        false,
    );
    Some(format!("{base}?{sas}"))
}
