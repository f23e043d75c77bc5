//! Carries out a deployment's plan through vmnode's own API, one resource at a time in
//! dependency order: PUT, then follow the resource's async operation (or its provisioningState)
//! to a terminal state. A resource whose dependency failed is skipped; independent ones go on,
//! as ARM does.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use serde_json::{json, Value};
use tower::ServiceExt;

use super::template::PlannedResource;
use super::Deployments;

/// The API a deployment goes through: requests as the API's front takes them (the caller's
/// service re-cases paths and routes; the engine only speaks HTTP to it, in-process).
pub type Api = tower::util::BoxCloneSyncService<
    Request<Body>,
    axum::response::Response,
    std::convert::Infallible,
>;

/// How long one resource may take (the cloud's extension limit is 90 minutes).
const RESOURCE_LIMIT: Duration = Duration::from_secs(90 * 60);
const POLL: Duration = Duration::from_millis(500);

/// Runs the plan and records every step in the deployment's record.
pub async fn run(
    api: Api,
    books: Arc<Deployments>,
    rg: String,
    name: String,
    plan: Vec<PlannedResource>,
) {
    books.update(&rg, &name, |d| d.state = "Running".into());
    let mut failed = vec![false; plan.len()];
    for (i, r) in plan.iter().enumerate() {
        if r.depends_on.iter().any(|&d| failed[d]) {
            failed[i] = true;
            books.update(&rg, &name, |d| {
                d.operations[i].state = "Skipped".into();
                d.operations[i].ended = Some(crate::report::time_now());
            });
            tracing::info!(resource = %r.id, "skipped: a resource it depends on failed");
            continue;
        }
        books.update(&rg, &name, |d| {
            d.operations[i].state = "Running".into();
            d.operations[i].started = Some(crate::report::time_now());
        });
        tracing::info!(resource = %r.id, "deploying");
        let (code, outcome) = deploy_one(&api, r).await;
        let ok = outcome.is_ok();
        failed[i] = !ok;
        match &outcome {
            Ok(()) => tracing::info!(resource = %r.id, "deployed"),
            Err(e) => tracing::warn!(resource = %r.id, error = %e, "resource failed"),
        }
        books.update(&rg, &name, |d| {
            let o = &mut d.operations[i];
            o.state = if ok { "Succeeded" } else { "Failed" }.into();
            o.status_code = Some(code);
            o.error = outcome.err();
            o.ended = Some(crate::report::time_now());
        });
    }
    books.update(&rg, &name, |d| {
        d.ended = Some(crate::report::time_now());
        d.error = d.failure();
        d.state = if d.error.is_some() {
            "Failed"
        } else {
            "Succeeded"
        }
        .into();
    });
    tracing::info!(
        failed = failed.iter().filter(|f| **f).count(),
        "deployment finished"
    );
}

/// PUTs one resource and waits for it: (the cloud's status code text, the resource's error).
async fn deploy_one(api: &Api, r: &PlannedResource) -> (String, Result<(), Value>) {
    let uri = format!("{}?api-version={}", r.id, r.api_version);
    let (status, headers, body) = call(api, Method::PUT, &uri, Some(&r.body)).await;
    if !status.is_success() {
        let code = status
            .canonical_reason()
            .unwrap_or("Error")
            .replace(' ', "");
        return (code, Err(error_of(&body, status)));
    }
    let started = tokio::time::Instant::now();
    let op = headers
        .get("azure-asyncoperation")
        .and_then(|v| v.to_str().ok())
        .map(path_of);
    loop {
        if started.elapsed() > RESOURCE_LIMIT {
            return (
                "OK".into(),
                Err(
                    json!({"code": "ResourceDeploymentTimeout", "message": format!("the resource did not reach a terminal provisioning state within {} minutes", RESOURCE_LIMIT.as_secs() / 60)}),
                ),
            );
        }
        let state = match &op {
            // The provider's own operation says how it ended (and why).
            Some(path) => {
                let (s, _, b) = call(api, Method::GET, path, None).await;
                if s == StatusCode::NOT_FOUND {
                    // Operations live in memory: fall back to the resource itself.
                    resource_state(api, &uri).await
                } else {
                    let st = b["status"].as_str().unwrap_or("InProgress").to_string();
                    (st, b.get("error").cloned())
                }
            }
            None => resource_state(api, &uri).await,
        };
        match state.0.as_str() {
            "Succeeded" => return ("OK".into(), Ok(())),
            "Failed" | "Canceled" => {
                let err = state.1.unwrap_or_else(|| {
                    json!({"code": "ResourceFailed", "message": format!("the resource reached provisioning state '{}'", state.0)})
                });
                return ("OK".into(), Err(err));
            }
            _ => tokio::time::sleep(POLL).await,
        }
    }
}

/// A resource's provisioningState (no state = nothing in progress = Succeeded) and its error.
async fn resource_state(api: &Api, uri: &str) -> (String, Option<Value>) {
    let (s, _, b) = call(api, Method::GET, uri, None).await;
    if !s.is_success() {
        return ("Failed".into(), Some(error_of(&b, s)));
    }
    let st = b["properties"]["provisioningState"]
        .as_str()
        .unwrap_or("Succeeded")
        .to_string();
    let err = b["properties"]
        .get("error")
        .or_else(|| b.get("error"))
        .cloned();
    (st, err)
}

fn error_of(body: &Value, status: StatusCode) -> Value {
    body.get("error").cloned().unwrap_or_else(|| {
        json!({"code": status.canonical_reason().unwrap_or("Error").replace(' ', ""), "message": body.to_string()})
    })
}

/// `https://host/path?q` → `/path?q`
fn path_of(url: &str) -> String {
    match url.find("://") {
        Some(i) => {
            let rest = &url[i + 3..];
            rest.find('/')
                .map(|j| rest[j..].to_string())
                .unwrap_or_else(|| "/".into())
        }
        None => url.to_string(),
    }
}

/// One request through the API's own router (no network, no auth: the deployment was already
/// authorised).
async fn call(
    api: &Api,
    method: Method,
    uri: &str,
    body: Option<&Value>,
) -> (StatusCode, axum::http::HeaderMap, Value) {
    let mut req = Request::builder()
        .method(method)
        .uri(uri)
        .header("host", "127.0.0.1")
        .header("content-type", "application/json");
    req = req.header("x-ms-client-request-id", uuid::Uuid::new_v4().to_string());
    let req = match req.body(match body {
        Some(b) => Body::from(serde_json::to_vec(b).unwrap_or_default()),
        None => Body::empty(),
    }) {
        Ok(r) => r,
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                Default::default(),
                json!({"error": {"code": "InvalidResourceId", "message": format!("'{uri}': {e}")}}),
            )
        }
    };
    let resp = match api.clone().oneshot(req).await {
        Ok(r) => r,
        Err(never) => match never {},
    };
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = axum::body::to_bytes(resp.into_body(), 16 << 20)
        .await
        .unwrap_or_default();
    let v = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (status, headers, v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn async_operation_urls_become_paths() {
        assert_eq!(
            path_of("https://127.0.0.1:7480/subscriptions/s/x?api-version=1"),
            "/subscriptions/s/x?api-version=1"
        );
        assert_eq!(path_of("/a/b"), "/a/b");
    }
}
