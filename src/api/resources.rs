//! Subscriptions, resource groups, sizes, the image catalog, NICs and vmnode's own endpoints.

use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::check_sub;
use super::error::ApiError;
use super::AppState;
use crate::catalog;
use crate::config::LOCATION;
use crate::groups::{self, GroupRecord};
use crate::vm::model;

type Result<T> = std::result::Result<T, ApiError>;

fn subscription(state: &AppState) -> Value {
    json!({
        "id": format!("/subscriptions/{}", state.node.subscription),
        "subscriptionId": state.node.subscription,
        "displayName": "vmnode",
        "state": "Enabled",
        "tenantId": state.node.subscription,
    })
}

pub async fn list_subscriptions(State(state): State<AppState>) -> Json<Value> {
    Json(json!({ "value": [subscription(&state)] }))
}

pub async fn get_subscription(
    State(state): State<AppState>,
    Path(sub): Path<String>,
) -> Result<Json<Value>> {
    check_sub(&state, &sub)?;
    Ok(Json(subscription(&state)))
}

fn rg_json(state: &AppState, r: &GroupRecord) -> Value {
    json!({
        "id": model::rg_id(&state.node.subscription, &r.name),
        "name": r.name,
        "type": "Microsoft.Resources/resourceGroups",
        "location": r.location,
        "tags": r.tags,
        "properties": { "provisioningState": "Succeeded" },
    })
}

/// What a group PUT may say (unknown fields are tolerated, as the cloud does).
#[derive(serde::Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct GroupBody {
    location: Option<String>,
    tags: Option<serde_json::Map<String, Value>>,
}

pub async fn list_rgs(
    State(state): State<AppState>,
    Path(sub): Path<String>,
) -> Result<Json<Value>> {
    check_sub(&state, &sub)?;
    let rgs = groups::list(&state.node.db)?;
    Ok(Json(
        json!({ "value": rgs.iter().map(|r| rg_json(&state, r)).collect::<Vec<_>>() }),
    ))
}

pub async fn get_rg(
    State(state): State<AppState>,
    Path((sub, rg)): Path<(String, String)>,
) -> Result<Json<Value>> {
    check_sub(&state, &sub)?;
    Ok(Json(rg_json(&state, &groups::get(&state.node.db, &rg)?)))
}

pub async fn put_rg(
    State(state): State<AppState>,
    Path((sub, rg)): Path<(String, String)>,
    body: Option<Json<Value>>,
) -> Result<Response> {
    check_sub(&state, &sub)?;
    groups::validate_name(&rg)?;
    let body: GroupBody = super::body::parse(&body.map(|b| b.0).unwrap_or_default())?;
    let tags = body.tags.unwrap_or_default();
    let (rec, new) = groups::put(&state.node.db, &rg, body.location.as_deref(), tags)?;
    let status = if new {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(rg_json(&state, &rec))).into_response())
}

pub async fn delete_rg(
    State(state): State<AppState>,
    Path((sub, rg)): Path<(String, String)>,
) -> Result<Response> {
    check_sub(&state, &sub)?;
    let vms = state.node.list(Some(&rg)).into_iter().map(|v| v.name);
    if groups::delete(&state.node.db, &rg, vms.collect())? {
        state.deployments.drop_group(&rg);
        Ok(StatusCode::OK.into_response())
    } else {
        Ok(StatusCode::NO_CONTENT.into_response())
    }
}

fn check_loc(loc: &str) -> Result<()> {
    if loc.eq_ignore_ascii_case(LOCATION) {
        Ok(())
    } else {
        Err(ApiError::not_found(
            "LocationNotAvailable",
            format!("Location '{loc}' is not available; this node is '{LOCATION}'."),
        ))
    }
}

pub async fn vm_sizes(
    State(state): State<AppState>,
    Path((sub, loc)): Path<(String, String)>,
) -> Result<Json<Value>> {
    check_sub(&state, &sub)?;
    check_loc(&loc)?;
    Ok(Json(json!({ "value": crate::vm::sizes::SIZES })))
}

fn images(state: &AppState) -> Result<Vec<catalog::ImageVersion>> {
    catalog::list(&state.node.cfg.paths.images()).map_err(|e| ApiError::internal(&e))
}

fn names_json(state: &AppState, loc: &str, names: Vec<String>, suffix: &str) -> Json<Value> {
    let mut names = names;
    names.sort_by_key(|n| n.to_lowercase());
    names.dedup_by(|a, b| a.eq_ignore_ascii_case(b));
    Json(Value::Array(
        names
            .into_iter()
            .map(|n| {
                json!({
                    "name": n,
                    "location": loc,
                    "id": format!("/Subscriptions/{}/Providers/Microsoft.Compute/Locations/{loc}/{suffix}{n}", state.node.subscription),
                })
            })
            .collect(),
    ))
}

pub async fn publishers(
    State(state): State<AppState>,
    Path((sub, loc)): Path<(String, String)>,
) -> Result<Json<Value>> {
    check_sub(&state, &sub)?;
    check_loc(&loc)?;
    let names = images(&state)?
        .into_iter()
        .map(|i| i.manifest.publisher)
        .collect();
    Ok(names_json(&state, &loc, names, "Publishers/"))
}

pub async fn offers(
    State(state): State<AppState>,
    Path((sub, loc, p)): Path<(String, String, String)>,
) -> Result<Json<Value>> {
    check_sub(&state, &sub)?;
    check_loc(&loc)?;
    let names = images(&state)?
        .into_iter()
        .filter(|i| i.manifest.publisher.eq_ignore_ascii_case(&p))
        .map(|i| i.manifest.offer)
        .collect();
    Ok(names_json(
        &state,
        &loc,
        names,
        &format!("Publishers/{p}/ArtifactTypes/VMImage/Offers/"),
    ))
}

pub async fn skus(
    State(state): State<AppState>,
    Path((sub, loc, p, o)): Path<(String, String, String, String)>,
) -> Result<Json<Value>> {
    check_sub(&state, &sub)?;
    check_loc(&loc)?;
    let names = images(&state)?
        .into_iter()
        .filter(|i| {
            i.manifest.publisher.eq_ignore_ascii_case(&p)
                && i.manifest.offer.eq_ignore_ascii_case(&o)
        })
        .map(|i| i.manifest.sku)
        .collect();
    Ok(names_json(
        &state,
        &loc,
        names,
        &format!("Publishers/{p}/ArtifactTypes/VMImage/Offers/{o}/Skus/"),
    ))
}

fn matching(state: &AppState, p: &str, o: &str, s: &str) -> Result<Vec<catalog::ImageVersion>> {
    Ok(images(state)?
        .into_iter()
        .filter(|i| {
            let m = &i.manifest;
            m.publisher.eq_ignore_ascii_case(p)
                && m.offer.eq_ignore_ascii_case(o)
                && m.sku.eq_ignore_ascii_case(s)
        })
        .collect())
}

/// The cloud's answer for an image (or sku) it does not have.
fn no_artifact() -> ApiError {
    ApiError::not_found("NotFound", "Artifact: VMImage was not found.")
}

/// `$top` and `$orderby` of a versions list (`name desc` is what tools send for the newest).
#[derive(serde::Deserialize, Default)]
pub struct VersionsQuery {
    #[serde(rename = "$top")]
    top: Option<usize>,
    #[serde(rename = "$orderby")]
    orderby: Option<String>,
}

pub async fn versions(
    State(state): State<AppState>,
    Path((sub, loc, p, o, s)): Path<(String, String, String, String, String)>,
    Query(q): Query<VersionsQuery>,
) -> Result<Json<Value>> {
    check_sub(&state, &sub)?;
    check_loc(&loc)?;
    // Oldest first, as `catalog::list` orders versions numerically.
    let mut found = matching(&state, &p, &o, &s)?;
    if found.is_empty() {
        return Err(no_artifact());
    }
    let desc = q
        .orderby
        .as_deref()
        .is_some_and(|o| o.trim().to_ascii_lowercase().ends_with(" desc"));
    if desc {
        found.reverse();
    }
    if let Some(n) = q.top {
        found.truncate(n);
    }
    let suffix = format!("Publishers/{p}/ArtifactTypes/VMImage/Offers/{o}/Skus/{s}/Versions/");
    Ok(Json(Value::Array(
        found
            .into_iter()
            .map(|i| {
                let n = i.manifest.version;
                json!({
                    "name": n,
                    "location": loc,
                    "id": format!("/Subscriptions/{}/Providers/Microsoft.Compute/Locations/{loc}/{suffix}{n}", state.node.subscription),
                })
            })
            .collect(),
    )))
}

pub async fn version(
    State(state): State<AppState>,
    Path((sub, loc, p, o, s, v)): Path<(String, String, String, String, String, String)>,
) -> Result<Json<Value>> {
    check_sub(&state, &sub)?;
    check_loc(&loc)?;
    let r = catalog::ImageRef {
        publisher: p.clone(),
        offer: o.clone(),
        sku: s.clone(),
        version: v.clone(),
    };
    let img = match catalog::resolve(&state.node.cfg.paths.images(), &r) {
        Ok(i) => i,
        Err(catalog::CatalogError::NotFound { .. }) => return Err(no_artifact()),
        Err(e) => return Err(ApiError::internal(&e)),
    };
    let m = &img.manifest;
    let size = m.files.get("disk.raw").map(|f| f.size).unwrap_or(0);
    // SeaBIOS and direct kernel boot are generation 1; UEFI (OVMF) is generation 2.
    let boot = m.boot.to_ascii_lowercase();
    let generation = if boot.contains("uefi") || boot.contains("ovmf") {
        "V2"
    } else {
        "V1"
    };
    Ok(Json(json!({
        "name": m.version,
        "location": loc,
        "id": format!("/Subscriptions/{}/Providers/Microsoft.Compute/Locations/{loc}/Publishers/{}/ArtifactTypes/VMImage/Offers/{}/Skus/{}/Versions/{}", state.node.subscription, m.publisher, m.offer, m.sku, m.version),
        "properties": {
            "osDiskImage": {
                "operatingSystem": m.os_type,
                "sizeInBytes": size,
                "sizeInGb": size.div_ceil(1 << 30),
            },
            "dataDiskImages": [],
            "automaticOSUpgradeProperties": { "automaticOSUpgradeSupported": false },
            "hyperVGeneration": generation,
            // OS disks here are page blobs (unmanaged): nothing is disallowed.
            "disallowed": { "vmDiskType": "None" },
            "features": [
                { "name": "IsAcceleratedNetworkSupported", "value": "False" },
                { "name": "IsHibernateSupported", "value": "False" },
            ],
            "architecture": "x64",
            "imageDeprecationStatus": { "imageState": "Active" },
        },
    })))
}

/// vmnode's flat image list (one row per version), for `vmnode vm image list`. The newest
/// version of a sku a recipe builds carries the recipe's name as its alias (`--image tiny`).
pub async fn all_images(State(state): State<AppState>) -> Result<Json<Value>> {
    let all = images(&state)?;
    let sku = |m: &catalog::Manifest| {
        format!("{}:{}:{}", m.publisher, m.offer, m.sku).to_ascii_lowercase()
    };
    let aliases = catalog::aliases();
    let rows: Vec<Value> = all
        .iter()
        .enumerate()
        .map(|(n, i)| {
            let m = &i.manifest;
            let newest = all
                .get(n + 1)
                .is_none_or(|next| sku(&next.manifest) != sku(m));
            let alias = aliases
                .iter()
                .find(|(_, r)| newest && sku(m) == r.to_ascii_lowercase())
                .map(|(a, _)| a.clone());
            json!({
                "publisher": m.publisher, "offer": m.offer, "sku": m.sku, "version": m.version,
                "urn": i.urn(), "urnAlias": alias, "architecture": "x64",
                "kernel": m.kernel_release, "boot": m.boot,
            })
        })
        .collect();
    Ok(Json(json!({ "value": rows })))
}

pub async fn dhcp_leases(State(state): State<AppState>) -> Result<Json<Value>> {
    let leases = state.node.db.leases()?;
    let rows: Vec<Value> = leases
        .into_iter()
        .map(|l| json!({ "macAddress": model::mac_azure(&l.mac), "ipAddress": l.ip.to_string(), "hostname": l.hostname, "committedAt": l.committed_at }))
        .collect();
    Ok(Json(json!({ "value": rows })))
}

pub async fn node_info(State(state): State<AppState>) -> Json<Value> {
    let n = &state.node;
    Json(json!({
        "subscriptionId": n.subscription,
        "location": LOCATION,
        "accel": n.accel.accel.qemu_name(),
        "accelReason": n.accel.reason,
        "netns": n.net.ns(),
        "addressSpace": crate::net::VNET_SPACE,
        "subnet": crate::net::SUBNET_PREFIX,
        "storageAccount": n.account,
        "version": env!("CARGO_PKG_VERSION"),
        "pid": std::process::id(),
    }))
}

pub async fn no_route(uri: Uri) -> Response {
    ApiError::not_found(
        "InvalidResourceType",
        format!(
            "No route for '{}'. See `vmnode --help` for what the API offers.",
            uri.path()
        ),
    )
    .into_response()
}
