//! Fetching `fileUris` on the node, as any client would: a real HTTP GET, so a SAS link to this
//! node's blob service is checked by the blob service itself (an expired one gets its 403), and
//! public blobs and plain HTTP(S) URLs the node can reach work too. HTTPS trusts the system's
//! roots (`/etc/ssl/certs/ca-certificates.crt`). Redirects are followed ([`MAX_REDIRECTS`]),
//! relative ones resolved with the `url` crate; a file is capped at [`MAX_FILE`] while it
//! streams; every error names the (redacted) URL and, for an HTTP answer, its status.

use std::time::Duration;

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use url::Url;

/// A file bigger than this is refused, as soon as its `Content-Length` says so or its body
/// passes it while streaming (nothing more is read or kept). The cloud documents no limit of its
/// own for fileUris; every byte goes into the guest through the agent in 48 KiB pieces, so a
/// script or package of tens of MiB is what this path is for.
pub const MAX_FILE: usize = 64 << 20;
/// Redirects followed for one file; the next one is an error naming the chain (what browsers
/// and the cloud's agent allow is of this order: Go's client, the agent's, stops at 10).
pub const MAX_REDIRECTS: usize = 5;
/// What is read of an error answer's body (the storage service's `<Error>` is well under 1 KiB).
const MAX_ERROR_BODY: usize = 64 << 10;
const TIMEOUT: Duration = Duration::from_secs(60);
const SYSTEM_ROOTS: &str = "/etc/ssl/certs/ca-certificates.crt";

/// Why a file could not be fetched. The URLs in it are redacted (no SAS signature).
#[derive(Debug, thiserror::Error)]
pub enum DownloadError {
    #[error("{url}: it is not an http:// or https:// URL with a host")]
    BadUrl { url: String },
    #[error("cannot connect to {host}")]
    Connect {
        host: String,
        #[source]
        source: std::io::Error,
    },
    #[error("TLS with {host} (trusting {SYSTEM_ROOTS})")]
    Tls {
        host: String,
        #[source]
        source: BoxError,
    },
    #[error("HTTP exchange with {url}")]
    Http {
        url: String,
        #[source]
        source: BoxError,
    },
    #[error("GET {url} answered {status} {code}: {message}")]
    Status {
        url: String,
        status: u16,
        code: String,
        message: String,
    },
    #[error("GET {url} answered {status} {}: a redirect without a usable Location", reason(*.status))]
    BadRedirect { url: String, status: u16 },
    #[error("more than {MAX_REDIRECTS} redirects: {}", .chain.join(" -> "))]
    Redirects { chain: Vec<String> },
    #[error("{url}: no answer within {timeout:?}")]
    Timeout { url: String, timeout: Duration },
    #[error("{url}: the file is larger than {} MiB", MAX_FILE >> 20)]
    TooLarge { url: String },
}

fn reason(status: u16) -> &'static str {
    hyper::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("")
}

impl DownloadError {
    pub fn status(&self) -> Option<u16> {
        match self {
            DownloadError::Status { status, .. } | DownloadError::BadRedirect { status, .. } => {
                Some(*status)
            }
            _ => None,
        }
    }
    pub fn code(&self) -> String {
        match self {
            DownloadError::Status { code, .. } => code.clone(),
            DownloadError::BadUrl { .. } => "InvalidUri".into(),
            DownloadError::Timeout { .. } => "Timeout".into(),
            DownloadError::TooLarge { .. } => "FileTooLarge".into(),
            DownloadError::Redirects { .. } | DownloadError::BadRedirect { .. } => {
                "TooManyRedirects".into()
            }
            _ => "DownloadFailed".into(),
        }
    }
}

/// The URL without its SAS signature (the rest of the SAS, expiry included, stays readable).
pub fn redact(url: &str) -> String {
    let Some((base, q)) = url.split_once('?') else {
        return url.to_string();
    };
    let q: Vec<String> = q
        .split('&')
        .map(|p| match p.split_once('=') {
            Some((k, _)) if k.eq_ignore_ascii_case("sig") => format!("{k}=REDACTED"),
            _ => p.to_string(),
        })
        .collect();
    format!("{base}?{}", q.join("&"))
}

/// An http(s) URL with a host, or why not.
fn parse(url: &str) -> Result<Url, DownloadError> {
    Url::parse(url)
        .ok()
        .filter(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some())
        .ok_or_else(|| DownloadError::BadUrl { url: redact(url) })
}

/// The path of a URL without its query: `/{account}/{container}/{blob}` for a blob.
pub fn url_path(url: &str) -> String {
    parse(url).map(|u| u.path().to_string()).unwrap_or_default()
}

/// The file name a URL saves as: its last path segment, percent-decoded.
pub fn file_name(url: &str) -> String {
    let path = url_path(url);
    let last = path.rsplit('/').next().unwrap_or("");
    let name = percent_encoding::percent_decode_str(last)
        .decode_utf8_lossy()
        .into_owned();
    if name.is_empty() || name == "." || name == ".." || name.contains('/') {
        "download".into()
    } else {
        name
    }
}

/// GETs `url`, following up to [`MAX_REDIRECTS`] redirects; a relative `Location` is resolved
/// against the URL that gave it (RFC 3986, as browsers do).
pub async fn fetch(url: &str) -> Result<Vec<u8>, DownloadError> {
    let mut url = parse(url)?;
    let mut chain = vec![redact(url.as_str())];
    loop {
        let got = tokio::time::timeout(TIMEOUT, get_once(&url)).await;
        let to = match got {
            Err(_) => {
                return Err(DownloadError::Timeout {
                    url: redact(url.as_str()),
                    timeout: TIMEOUT,
                })
            }
            Ok(Ok(Fetch::Body(b))) => return Ok(b),
            Ok(Ok(Fetch::Redirect(to))) => to,
            Ok(Err(e)) => return Err(e),
        };
        chain.push(redact(to.as_str()));
        if chain.len() > MAX_REDIRECTS + 1 {
            return Err(DownloadError::Redirects { chain });
        }
        url = to;
    }
}

enum Fetch {
    Body(Vec<u8>),
    Redirect(Url),
}

async fn get_once(url: &Url) -> Result<Fetch, DownloadError> {
    let shown = redact(url.as_str());
    let tls = url.scheme() == "https";
    let host = url.host_str().unwrap_or_default().to_string();
    let port = url
        .port_or_known_default()
        .unwrap_or(if tls { 443 } else { 80 });
    let bare = host.trim_matches(['[', ']']).to_string();
    let path = &url[url::Position::BeforePath..url::Position::AfterQuery];
    let tcp = tokio::net::TcpStream::connect((bare.as_str(), port))
        .await
        .map_err(|source| DownloadError::Connect {
            host: format!("{host}:{port}"),
            source,
        })?;
    let host_header = match url.port() {
        None => host.clone(),
        Some(p) => format!("{host}:{p}"),
    };
    let http = |e: BoxError| DownloadError::Http {
        url: shown.clone(),
        source: e,
    };
    let req = hyper::Request::get(path)
        .header("host", host_header)
        .header("user-agent", "vmnode-extension-handler")
        .header("x-ms-version", crate::blob::http::server::VERSION)
        .body(Empty::<Bytes>::new())
        .map_err(|e| http(Box::new(e)))?;
    let resp = if tls {
        let tls_err = |e: BoxError| DownloadError::Tls {
            host: host.clone(),
            source: e,
        };
        let cfg = crate::tls::client_config(std::path::Path::new(SYSTEM_ROOTS))
            .map_err(|e| tls_err(Box::new(e)))?;
        let name = rustls::pki_types::ServerName::try_from(bare.clone())
            .map_err(|e| tls_err(Box::new(e)))?;
        let s = tokio_rustls::TlsConnector::from(cfg)
            .connect(name, tcp)
            .await
            .map_err(|e| tls_err(Box::new(e)))?;
        send(s, req).await.map_err(http)?
    } else {
        send(tcp, req).await.map_err(http)?
    };
    let status = resp.status();
    if status.is_redirection() && status != hyper::StatusCode::NOT_MODIFIED {
        let to = resp.headers().get("location").and_then(|v| v.to_str().ok());
        return match to.and_then(|to| url.join(to).ok()) {
            Some(to) => Ok(Fetch::Redirect(to)),
            None => Err(DownloadError::BadRedirect {
                url: shown,
                status: status.as_u16(),
            }),
        };
    }
    let headers = resp.headers().clone();
    if status.is_success() {
        let declared = headers
            .get(hyper::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        if declared.is_some_and(|n| n > MAX_FILE as u64) {
            return Err(DownloadError::TooLarge { url: shown });
        }
        return match read_capped(resp.into_body(), MAX_FILE)
            .await
            .map_err(http)?
        {
            (body, false) => Ok(Fetch::Body(body)),
            (_, true) => Err(DownloadError::TooLarge { url: shown }),
        };
    }
    // The storage service's error body: <Error><Code>…</Code><Message>…</Message></Error>; what
    // another server sends is read only as far as that needs.
    let (body, _) = read_capped(resp.into_body(), MAX_ERROR_BODY)
        .await
        .map_err(http)?;
    let text = String::from_utf8_lossy(&body);
    let doc = crate::blob::http::xml::parse(&text);
    let code = doc
        .as_ref()
        .and_then(|d| d.child_text("Code"))
        .or_else(|| headers.get("x-ms-error-code").and_then(|v| v.to_str().ok()))
        .unwrap_or_else(|| status.canonical_reason().unwrap_or("Error"))
        .to_string();
    let first_line = |k: &str| {
        doc.as_ref()
            .and_then(|d| d.child_text(k))
            .map(|m| m.lines().next().unwrap_or("").trim().to_string())
            .filter(|m| !m.is_empty())
    };
    // The storage service says why a SAS failed in `AuthenticationErrorDetail`.
    let message = [
        first_line("Message"),
        first_line("AuthenticationErrorDetail"),
    ]
    .into_iter()
    .flatten()
    .collect::<Vec<_>>()
    .join(" ");
    Err(DownloadError::Status {
        url: shown,
        status: status.as_u16(),
        code,
        message,
    })
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Reads `body` as it arrives, up to `cap` bytes: (what was read, whether there was more). It
/// stops at the first byte over, so an endless body costs `cap`, not the node's memory.
async fn read_capped(
    mut body: hyper::body::Incoming,
    cap: usize,
) -> Result<(Vec<u8>, bool), BoxError> {
    let mut out = Vec::new();
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame?.into_data() else {
            continue;
        };
        if out.len() + data.len() > cap {
            out.extend_from_slice(&data[..cap - out.len()]);
            return Ok((out, true));
        }
        out.extend_from_slice(&data);
    }
    Ok((out, false))
}

async fn send<S>(
    stream: S,
    req: hyper::Request<Empty<Bytes>>,
) -> Result<hyper::Response<hyper::body::Incoming>, BoxError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender.send_request(req).await?)
}

#[cfg(test)]
mod tests;
