//! Listeners: HTTPS on `--listen`, plain HTTP on the unix socket; both require the bearer token
//! (or, for GETs of the viewer's pages only, the viewer's cookie: see `viewer`).

use std::path::Path;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use tower::ServiceExt;

use super::error::ApiError;
use super::{routes, viewer, AppState};

/// Constant-time comparison, so the token cannot be guessed byte by byte from timings.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn auth(state: axum::extract::State<AppState>, req: Request<Body>, next: Next) -> Response {
    let token = state.token.as_bytes();
    // A browser opening a viewer link with `?token=`: a cookie, and the URL without the token.
    if let Some((given, to)) = viewer::query_token(&req) {
        return match same(given.as_bytes(), token) {
            true => viewer::login(&to, &state.token),
            false => viewer::unauthorized(&req, true),
        };
    }
    let bearer = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .is_some_and(|t| same(t.trim().as_bytes(), token));
    // The viewer's cookie counts only for GETs of viewer pages (see `viewer`).
    let cookie = viewer::cookie_token(&req).is_some_and(|t| same(t.as_bytes(), token));
    if bearer || cookie {
        return next.run(req).await;
    }
    if viewer::wants_page(&req) {
        return viewer::unauthorized(&req, false);
    }
    let mut r = ApiError::new(
        StatusCode::UNAUTHORIZED,
        "AuthenticationFailed",
        "Missing or wrong bearer token. Get one with `vmnode account get-access-token`.",
    )
    .into_response();
    r.headers_mut().insert(
        "www-authenticate",
        axum::http::HeaderValue::from_static("Bearer"),
    );
    r
}

/// The errors axum answers by itself (a body that is not JSON or too large, a path or query that
/// does not decode, a method the path does not have) are plain text or empty; clients of the
/// cloud read `{"error": {"code", "message"}}` from every 4xx and 5xx, so those are rewritten into
/// it. JSON errors pass as they are, and so do the viewer's HTML pages (for browsers).
async fn cloud_errors(req: Request<Body>, next: Next) -> Response {
    let (method, path) = (req.method().clone(), req.uri().path().to_string());
    let res = next.run(req).await;
    let status = res.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return res;
    }
    let ctype = res
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if ctype.starts_with("application/json") || ctype.starts_with("text/html") {
        return res;
    }
    let (mut parts, body) = res.into_parts();
    let text = axum::body::to_bytes(body, 4096)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
        .unwrap_or_default();
    let allow = parts
        .headers
        .get(axum::http::header::ALLOW)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let (code, message) = match status {
        StatusCode::METHOD_NOT_ALLOWED => (
            "MethodNotAllowed",
            format!("The method {method} is not allowed on '{path}'; it allows {allow}."),
        ),
        StatusCode::PAYLOAD_TOO_LARGE => (
            "RequestEntityTooLarge",
            format!("The request body is too large: {text}"),
        ),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => (
            "UnsupportedMediaType",
            format!("{text}. Send JSON with Content-Type: application/json."),
        ),
        StatusCode::BAD_REQUEST | StatusCode::UNPROCESSABLE_ENTITY
            if text.contains("JSON") || text.contains("body") =>
        {
            ("InvalidRequestContent", text)
        }
        s if s.is_client_error() => ("InvalidParameter", text),
        _ => ("InternalServerError", text),
    };
    let message = match message.is_empty() {
        true => format!("{method} '{path}': {status}"),
        false => message,
    };
    let mut out = ApiError::new(status, code, message).into_response();
    parts.headers.remove(axum::http::header::CONTENT_TYPE);
    parts.headers.remove(axum::http::header::CONTENT_LENGTH);
    let mut name = None;
    for (k, v) in parts.headers.drain() {
        name = k.or(name);
        if let Some(k) = &name {
            out.headers_mut().append(k.clone(), v);
        }
    }
    out
}

/// A handler that panics answers 500 in the cloud's shape, logged with its method and path; the
/// connection, the other requests and the daemon go on (src/serve.rs). Also around the router a
/// deployment's engine calls, so a resource whose PUT panics fails its deployment.
pub async fn catch_panic(req: Request<Body>, next: Next) -> Response {
    let (method, path) = (req.method().clone(), req.uri().path().to_string());
    match crate::serve::unwinding(&method, &path, next.run(req)).await {
        Ok(res) => res,
        Err(panic) => ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalServerError",
            format!("The server failed while serving {method} '{path}' ({panic}). Please retry the request."),
        )
        .into_response(),
    }
}

async fn log_request(req: Request<Body>, next: Next) -> Response {
    let (method, path) = (req.method().clone(), req.uri().path().to_string());
    let res = next.run(req).await;
    tracing::debug!(%method, %path, status = res.status().as_u16(), "request");
    res
}

pub type Svc = tower::util::MapRequest<
    axum::Router,
    fn(Request<hyper::body::Incoming>) -> Request<hyper::body::Incoming>,
>;

/// The API as a deployment's engine calls it, as its front serves it: keywords re-cased before
/// routing, a panic a 500 (no auth: the engine acts for a caller already let in). Given to the
/// deployments handler through [`AppState::engine_api`] so that it does not import the routes.
pub fn engine_api(state: &AppState) -> crate::deploy::engine::Api {
    let router = routes::router(state.clone()).layer(middleware::from_fn(catch_panic));
    crate::deploy::engine::Api::new(
        tower::ServiceBuilder::new()
            .map_request(routes::canonicalize::<Body>)
            .service(router),
    )
}

pub fn service(state: AppState) -> Svc {
    let router = routes::router(state.clone())
        .layer(middleware::from_fn_with_state(state, auth))
        .layer(middleware::from_fn(cloud_errors))
        .layer(middleware::from_fn(log_request))
        .layer(middleware::from_fn(catch_panic));
    router.map_request(routes::canonicalize as fn(_) -> _)
}

pub async fn serve_tls(
    listener: tokio::net::TcpListener,
    tls: Arc<rustls::ServerConfig>,
    svc: Svc,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let mut accepting = crate::serve::Acceptor::new("management API (TCP)");
    loop {
        let (tcp, peer) = accepting.next(|| listener.accept()).await;
        let (acceptor, svc) = (acceptor.clone(), svc.clone());
        tokio::spawn(async move {
            match acceptor.accept(tcp).await {
                Ok(stream) => {
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), TowerToHyperService::new(svc))
                        .await;
                }
                Err(e) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
            }
        });
    }
}

pub async fn serve_unix(listener: tokio::net::UnixListener, svc: Svc) {
    let mut accepting = crate::serve::Acceptor::new("management API (unix socket)");
    loop {
        let (stream, _) = accepting.next(|| listener.accept()).await;
        let svc = svc.clone();
        tokio::spawn(async move {
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), TowerToHyperService::new(svc))
                .await;
        });
    }
}

pub fn bind_unix(path: &Path) -> std::io::Result<tokio::net::UnixListener> {
    let _ = std::fs::remove_file(path);
    let l = tokio::net::UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    Ok(l)
}
