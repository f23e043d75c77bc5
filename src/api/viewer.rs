//! The viewer: boot diagnostics for people, in a browser, served by the daemon.
//!
//! - `GET /vmnode/v1/viewer`: every VM with its power state, DIP and boot verdict
//! - `GET /vmnode/v1/viewer/{rg}/{vm}`: one VM — verdict, latest screenshot, the boot's
//!   screenshot series, the live serial tail, DHCP ledger, timeline, earlier boots
//! - `GET /vmnode/v1/viewer/{rg}/{vm}/serialTail`: the API's serial tail, under the viewer's
//!   cookie path (the page's JavaScript polls it)
//! - `GET /vmnode/v1/viewer/~/{viewer.css,viewer.js,url}`: the embedded assets, and where the
//!   viewer is (for `vmnode viewer url`); `~` cannot be a resource group's name
//!
//! Pages are rendered on the server from the management API's own JSON (the handlers in
//! `compute` and `diagnostics` are called as they are), complete without JavaScript; the
//! script only updates them: the serial tail every second, other sections when they change
//! (`?fragment=1` returns the sections, each with a key of its content). Every image and log is
//! fetched through its SAS link on the blob service.
//!
//! Auth: a browser cannot send the bearer header on navigation, so a viewer URL accepts
//! `?token=T` once, answers with an `HttpOnly; Secure; SameSite=Strict; Path=/vmnode/v1` cookie
//! and a redirect to the same URL without the token. `server::auth` accepts that cookie only for
//! GETs of viewer paths, so it can never change anything (no CSRF surface) nor read the API.

mod page;

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderValue, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::error::ApiError;
use super::{compute, diagnostics, AppState};

/// Where the viewer lives; the cookie is scoped to its parent.
pub const PREFIX: &str = "/vmnode/v1/viewer";
const COOKIE: &str = "vmnode_viewer";
/// SAS links on a page live this long (the page refreshes sections whose links are older).
const SAS_MIN: &str = "60";
/// The serial tail a page starts with.
const TAIL_BYTES: &str = "65536";

type Result<T> = std::result::Result<T, ApiError>;
type Q = Query<HashMap<String, String>>;

/// A viewer path: the cookie counts here, and a browser gets HTML errors.
pub fn is_viewer_path(path: &str) -> bool {
    path == PREFIX
        || path
            .strip_prefix(PREFIX)
            .is_some_and(|r| r.starts_with('/'))
}

fn viewer_get<B>(req: &Request<B>) -> bool {
    req.method() == axum::http::Method::GET && is_viewer_path(req.uri().path())
}

/// The token in the viewer's cookie, on a GET of a viewer path (nowhere else).
pub fn cookie_token<B>(req: &Request<B>) -> Option<&str> {
    if !viewer_get(req) {
        return None;
    }
    req.headers()
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v)
}

/// `?token=T` on a GET of a viewer path: the token given and the URL (path and the rest of
/// the query) to send the browser to.
pub fn query_token<B>(req: &Request<B>) -> Option<(String, String)> {
    if !viewer_get(req) {
        return None;
    }
    let query = req.uri().query()?;
    let mut token = None;
    let mut rest = vec![];
    for kv in query.split('&').filter(|kv| !kv.is_empty()) {
        match kv.split_once('=') {
            Some(("token", v)) => {
                token = Some(
                    percent_encoding::percent_decode_str(v)
                        .decode_utf8_lossy()
                        .into(),
                )
            }
            _ => rest.push(kv),
        }
    }
    let path = req.uri().path();
    let to = if rest.is_empty() {
        path.to_string()
    } else {
        format!("{path}?{}", rest.join("&"))
    };
    Some((token?, to))
}

/// The answer to a right `?token=`: the cookie and a redirect to the URL without the token.
pub fn login(to: &str, token: &str) -> Response {
    let cookie = format!("{COOKIE}={token}; HttpOnly; Secure; SameSite=Strict; Path=/vmnode/v1");
    let mut r = StatusCode::SEE_OTHER.into_response();
    let h = r.headers_mut();
    if let (Ok(loc), Ok(c)) = (HeaderValue::from_str(to), HeaderValue::from_str(&cookie)) {
        h.insert(header::LOCATION, loc);
        h.insert(header::SET_COOKIE, c);
    }
    secure_headers(h, "", "'none'");
    r
}

/// A browser on a viewer path (not the page's own fetches, which want JSON).
pub fn wants_page<B>(req: &Request<B>) -> bool {
    viewer_get(req)
        && req
            .headers()
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|a| a.contains("text/html"))
}

/// 401 for a browser: what is missing and how to get in.
pub fn unauthorized<B>(req: &Request<B>, wrong_token: bool) -> Response {
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("127.0.0.1:7480");
    let html = page::unauthorized(host, req.uri().path(), wrong_token);
    let mut r = (StatusCode::UNAUTHORIZED, html).into_response();
    // Its stylesheet is inline: the page's own needs the token.
    html_headers(r.headers_mut(), "", "'unsafe-inline'");
    r.headers_mut()
        .insert("www-authenticate", HeaderValue::from_static("Bearer"));
    r
}

fn secure_headers(h: &mut axum::http::HeaderMap, img_src: &str, style_src: &str) {
    let csp = format!(
        "default-src 'none'; img-src 'self' {img_src}; style-src {style_src}; script-src 'self'; \
         connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    );
    for (k, v) in [
        ("content-security-policy", csp.as_str()),
        ("x-content-type-options", "nosniff"),
        ("referrer-policy", "no-referrer"),
        ("cache-control", "no-store"),
        ("x-frame-options", "DENY"),
    ] {
        if let Ok(v) = HeaderValue::from_str(v) {
            h.insert(k, v);
        }
    }
}

fn html_headers(h: &mut axum::http::HeaderMap, img_src: &str, style_src: &str) {
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    secure_headers(h, img_src, style_src);
}

fn html(state: &AppState, body: String) -> Response {
    let mut r = body.into_response();
    // Images come from the blob service's SAS links.
    let blobs = format!("http://{}", state.node.cfg.blob_listen);
    html_headers(r.headers_mut(), &blobs, "'self'");
    r
}

fn fragment(q: &HashMap<String, String>) -> bool {
    q.get("fragment").is_some_and(|v| v == "1")
}

/// `GET /vmnode/v1/viewer`: the VM list.
pub async fn list(State(state): State<AppState>, Query(q): Q) -> Response {
    let rows: Vec<page::VmRow> = state
        .vms
        .list(None)
        .into_iter()
        .map(|r| {
            let verdict = state
                .vms
                .recorder(&r.rg, &r.name)
                .ok()
                .and_then(|d| d.verdict())
                .and_then(|(_, v)| serde_json::to_value(v).ok());
            page::VmRow {
                ip: state.vms.lease_ip(&r.nic.mac).map(|ip| ip.to_string()),
                verdict,
                rec: r,
            }
        })
        .collect();
    let sections = page::vm_list(&rows);
    if fragment(&q) {
        return html(&state, sections);
    }
    html(&state, page::document("Virtual machines", &[], &sections))
}

/// Everything a VM page shows, as the management API returns it.
pub struct VmData {
    pub rg: String,
    pub vm: String,
    /// `GET .../instanceView`.
    pub view: Value,
    /// `GET .../bootDiagnostics/boots`, oldest first, with SAS links.
    pub boots: Vec<Value>,
    /// `GET .../bootDiagnostics/serialTail?max=...` of the current boot.
    pub tail: Option<Value>,
}

async fn gather(state: &AppState, rg: String, vm: String, with_tail: bool) -> Result<VmData> {
    let sub = state.node.subscription.clone();
    let path = || Path((sub.clone(), rg.clone(), vm.clone()));
    let q = |pairs: &[(&str, &str)]| {
        Query(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<HashMap<_, _>>(),
        )
    };
    let Json(view) = compute::instance_view(State(state.clone()), path()).await?;
    let Json(boots) = diagnostics::boots(
        State(state.clone()),
        path(),
        q(&[("sasUriExpirationTimeInMinutes", SAS_MIN)]),
    )
    .await?;
    let tail = if with_tail {
        diagnostics::serial_tail(State(state.clone()), path(), q(&[("max", TAIL_BYTES)]))
            .await
            .ok()
            .map(|Json(t)| t)
    } else {
        None
    };
    Ok(VmData {
        boots: boots["value"].as_array().cloned().unwrap_or_default(),
        rg,
        vm,
        view,
        tail,
    })
}

/// `GET /vmnode/v1/viewer/{rg}/{vm}` (`?fragment=1`: only the sections that update).
pub async fn vm_page(
    State(state): State<AppState>,
    Path((rg, vm)): Path<(String, String)>,
    Query(q): Q,
) -> Response {
    let frag = fragment(&q);
    match gather(&state, rg, vm, !frag).await {
        Ok(d) if frag => html(&state, page::vm_sections(&d, false)),
        Ok(d) => html(
            &state,
            page::document(&d.vm, &[(&d.rg, None)], &page::vm_sections(&d, true)),
        ),
        Err(e) => {
            let status = e.status;
            let body = page::document("Not found", &[], &page::error_section(&e.code, &e.message));
            let mut r = html(&state, body);
            *r.status_mut() = status;
            r
        }
    }
}

/// `GET /vmnode/v1/viewer/{rg}/{vm}/serialTail`: the management API's serial tail.
pub async fn serial_tail(
    State(state): State<AppState>,
    Path((rg, vm)): Path<(String, String)>,
    q: Q,
) -> Result<Json<Value>> {
    let sub = state.node.subscription.clone();
    diagnostics::serial_tail(State(state), Path((sub, rg, vm)), q).await
}

/// `GET /vmnode/v1/viewer/~/{file}`: the embedded stylesheet and script; `url`: where the
/// viewer is.
pub async fn asset(State(state): State<AppState>, Path(file): Path<String>) -> Response {
    let (ctype, body) = match file.as_str() {
        "viewer.css" => ("text/css; charset=utf-8", include_str!("viewer/viewer.css")),
        "viewer.js" => (
            "text/javascript; charset=utf-8",
            include_str!("viewer/viewer.js"),
        ),
        "url" => {
            let l = state.node.cfg.listen;
            let host = if l.ip().is_unspecified() {
                format!("127.0.0.1:{}", l.port())
            } else {
                l.to_string()
            };
            return Json(json!({ "url": format!("https://{host}{PREFIX}") })).into_response();
        }
        _ => {
            return ApiError::not_found("NotFound", format!("no viewer asset '{file}'"))
                .into_response()
        }
    };
    let mut r = ([(header::CONTENT_TYPE, ctype)], body).into_response();
    secure_headers(r.headers_mut(), "", "'self'");
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(uri: &str, cookie: Option<&str>) -> Request<()> {
        let mut b = Request::get(uri);
        if let Some(c) = cookie {
            b = b.header("cookie", c);
        }
        b.body(()).unwrap()
    }

    #[test]
    fn the_token_is_taken_from_the_query_and_the_rest_kept() {
        let r = get("/vmnode/v1/viewer/rg/vm?a=1&token=ab%63d&b=2", None);
        assert_eq!(
            query_token(&r),
            Some(("abcd".into(), "/vmnode/v1/viewer/rg/vm?a=1&b=2".into()))
        );
        let r = get("/vmnode/v1/viewer?token=x", None);
        assert_eq!(
            query_token(&r),
            Some(("x".into(), "/vmnode/v1/viewer".into()))
        );
        // Only on viewer paths.
        assert_eq!(query_token(&get("/subscriptions?token=x", None)), None);
        assert_eq!(query_token(&get("/vmnode/v1/viewerx?token=x", None)), None);
    }

    #[test]
    fn the_cookie_counts_only_for_gets_of_viewer_paths() {
        let c = Some("a=b; vmnode_viewer=tok; c=d");
        assert_eq!(
            cookie_token(&get("/vmnode/v1/viewer/rg/vm", c)),
            Some("tok")
        );
        assert_eq!(cookie_token(&get("/vmnode/v1/viewer", c)), Some("tok"));
        assert_eq!(cookie_token(&get("/vmnode/v1/node", c)), None);
        assert_eq!(cookie_token(&get("/subscriptions", c)), None);
        let post = Request::post("/vmnode/v1/viewer")
            .header("cookie", "vmnode_viewer=tok")
            .body(())
            .unwrap();
        assert_eq!(cookie_token(&post), None);
    }

    #[test]
    fn login_sets_a_strict_cookie_and_redirects_without_the_token() {
        let r = login("/vmnode/v1/viewer?x=1", "tok");
        assert_eq!(r.status(), StatusCode::SEE_OTHER);
        assert_eq!(r.headers()["location"], "/vmnode/v1/viewer?x=1");
        let c = r.headers()["set-cookie"].to_str().unwrap();
        for part in [
            "vmnode_viewer=tok",
            "HttpOnly",
            "Secure",
            "SameSite=Strict",
            "Path=/vmnode/v1",
        ] {
            assert!(c.contains(part), "{c}");
        }
    }
}
