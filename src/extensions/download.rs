//! Fetching `fileUris` on the node, as any client would: a real HTTP GET, so a SAS link to this
//! node's blob service is checked by the blob service itself (an expired one gets its 403), and
//! public blobs and plain HTTP(S) URLs the node can reach work too. HTTPS trusts the system's
//! roots (`/etc/ssl/certs/ca-certificates.crt`). Redirects are followed (5 at most).

use std::time::Duration;

use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;

/// A file bigger than this is refused (it has to go through the guest agent in 48 KiB pieces).
pub const MAX_FILE: usize = 64 << 20;
const TIMEOUT: Duration = Duration::from_secs(60);
const SYSTEM_ROOTS: &str = "/etc/ssl/certs/ca-certificates.crt";

#[derive(Debug, thiserror::Error)]
pub enum DownloadError {
    #[error("it is not an http:// or https:// URL")]
    BadUrl,
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
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("HTTP exchange")]
    Http(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("the server answered {status} {code}: {message}")]
    Status {
        status: u16,
        code: String,
        message: String,
    },
    #[error("more than 5 redirects")]
    Redirects,
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("the file is larger than {} MiB", MAX_FILE >> 20)]
    TooLarge,
}

impl DownloadError {
    pub fn status(&self) -> Option<u16> {
        match self {
            DownloadError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
    pub fn code(&self) -> String {
        match self {
            DownloadError::Status { code, .. } => code.clone(),
            DownloadError::BadUrl => "InvalidUri".into(),
            DownloadError::Timeout(_) => "Timeout".into(),
            DownloadError::TooLarge => "FileTooLarge".into(),
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

fn split(url: &str) -> Option<(bool, String, u16, String)> {
    let (tls, rest) = if let Some(r) = url.strip_prefix("http://") {
        (false, r)
    } else if let Some(r) = url.strip_prefix("https://") {
        (true, r)
    } else {
        return None;
    };
    let (hostport, path) = match rest.find(['/', '?']) {
        Some(i) if rest.as_bytes()[i] == b'/' => (&rest[..i], rest[i..].to_string()),
        Some(i) => (&rest[..i], format!("/{}", &rest[i..])),
        None => (rest, "/".to_string()),
    };
    let (host, port) = match hostport.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || hostport.starts_with('[') => {
            (h.to_string(), p.parse().ok()?)
        }
        _ => (hostport.to_string(), if tls { 443 } else { 80 }),
    };
    if host.is_empty() {
        return None;
    }
    Some((tls, host, port, path))
}

/// The path of a URL without its query: `/{account}/{container}/{blob}` for a blob.
pub fn url_path(url: &str) -> String {
    split(url)
        .map(|(_, _, _, p)| p.split('?').next().unwrap_or("").to_string())
        .unwrap_or_default()
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

/// GETs `url`, following redirects.
pub async fn fetch(url: &str) -> Result<Vec<u8>, DownloadError> {
    let mut url = url.to_string();
    for _ in 0..=5 {
        match tokio::time::timeout(TIMEOUT, get_once(&url)).await {
            Err(_) => return Err(DownloadError::Timeout(TIMEOUT)),
            Ok(Ok(Fetch::Body(b))) => return Ok(b),
            Ok(Ok(Fetch::Redirect(to))) => {
                url = if to.starts_with("http://") || to.starts_with("https://") {
                    to
                } else {
                    let (tls, host, port, _) = split(&url).ok_or(DownloadError::BadUrl)?;
                    format!("{}://{host}:{port}{to}", if tls { "https" } else { "http" })
                };
            }
            Ok(Err(e)) => return Err(e),
        }
    }
    Err(DownloadError::Redirects)
}

enum Fetch {
    Body(Vec<u8>),
    Redirect(String),
}

async fn get_once(url: &str) -> Result<Fetch, DownloadError> {
    let (tls, host, port, path) = split(url).ok_or(DownloadError::BadUrl)?;
    let tcp = tokio::net::TcpStream::connect((host.trim_matches(['[', ']']), port))
        .await
        .map_err(|source| DownloadError::Connect {
            host: format!("{host}:{port}"),
            source,
        })?;
    let host_header = if (tls && port == 443) || (!tls && port == 80) {
        host.clone()
    } else {
        format!("{host}:{port}")
    };
    let req = hyper::Request::get(&path)
        .header("host", host_header)
        .header("user-agent", "vmnode-extension-handler")
        .header("x-ms-version", crate::blob::server::VERSION)
        .body(Empty::<Bytes>::new())
        .map_err(|e| DownloadError::Http(Box::new(e)))?;
    let resp = if tls {
        let cfg =
            crate::api::tls::client_config(std::path::Path::new(SYSTEM_ROOTS)).map_err(|e| {
                DownloadError::Tls {
                    host: host.clone(),
                    source: Box::new(e),
                }
            })?;
        let name = rustls::pki_types::ServerName::try_from(host.clone()).map_err(|e| {
            DownloadError::Tls {
                host: host.clone(),
                source: Box::new(e),
            }
        })?;
        let s = tokio_rustls::TlsConnector::from(cfg)
            .connect(name, tcp)
            .await
            .map_err(|e| DownloadError::Tls {
                host: host.clone(),
                source: Box::new(e),
            })?;
        send(s, req).await?
    } else {
        send(tcp, req).await?
    };
    let status = resp.status();
    if status.is_redirection() {
        if let Some(to) = resp.headers().get("location").and_then(|v| v.to_str().ok()) {
            return Ok(Fetch::Redirect(to.to_string()));
        }
    }
    let headers = resp.headers().clone();
    let body = Limited::new(resp.into_body(), MAX_FILE)
        .collect()
        .await
        .map_err(|e| {
            if e.is::<http_body_util::LengthLimitError>() {
                DownloadError::TooLarge
            } else {
                DownloadError::Http(e)
            }
        })?
        .to_bytes();
    if status.is_success() {
        return Ok(Fetch::Body(body.to_vec()));
    }
    // The storage service's error body: <Error><Code>…</Code><Message>…</Message></Error>.
    let text = String::from_utf8_lossy(&body);
    let doc = crate::blob::xml::parse(&text);
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
        status: status.as_u16(),
        code,
        message,
    })
}

async fn send<S>(
    stream: S,
    req: hyper::Request<Empty<Bytes>>,
) -> Result<hyper::Response<hyper::body::Incoming>, DownloadError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| DownloadError::Http(Box::new(e)))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    sender
        .send_request(req)
        .await
        .map_err(|e| DownloadError::Http(Box::new(e)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_split_name_and_redact() {
        let u = "http://127.0.0.1:7481/acct/scripts/dir%2Fx/script.sh?sv=1&se=2020-01-01T00%3A00%3A00Z&sig=abc%2B%3D";
        assert_eq!(file_name(u), "script.sh");
        assert_eq!(url_path(u), "/acct/scripts/dir%2Fx/script.sh");
        let r = redact(u);
        assert!(r.contains("sig=REDACTED") && !r.contains("abc"), "{r}");
        assert!(r.contains("se=2020-01-01"));
        assert_eq!(
            split("https://example.com/a").unwrap(),
            (true, "example.com".into(), 443, "/a".into())
        );
        assert_eq!(
            split("http://h:8080?x=1").unwrap(),
            (false, "h".into(), 8080, "/?x=1".into())
        );
        assert!(split("ftp://h/x").is_none());
        assert_eq!(file_name("http://h/"), "download");
    }
}
