//! A small SharedKey client of the blob service (the CLI's): signs requests the way the SDKs
//! do for path-style URLs and reports the cloud's error code and message.

use anyhow::{anyhow, Context};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Method, StatusCode};

use crate::blob::AccountFile;

const PATH_SET: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'/')
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

pub fn enc(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, PATH_SET).to_string()
}

fn enc_q(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: hyper::HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn ok(self) -> anyhow::Result<Reply> {
        if self.status.is_success() {
            return Ok(self);
        }
        let text = String::from_utf8_lossy(&self.body);
        let doc = crate::blob::http::xml::parse(&text);
        let code = doc
            .as_ref()
            .and_then(|d| d.child_text("Code"))
            .or_else(|| {
                self.headers
                    .get("x-ms-error-code")
                    .and_then(|v| v.to_str().ok())
            })
            .unwrap_or("Error")
            .to_string();
        let msg = doc
            .as_ref()
            .and_then(|d| d.child_text("Message"))
            .map(|m| m.lines().next().unwrap_or("").to_string())
            .unwrap_or_default();
        Err(anyhow!("{code} ({}): {msg}", self.status.as_u16()))
    }
    pub fn header(&self, n: &str) -> &str {
        self.headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
}

/// A SharedKey client of one account.
pub struct Client {
    pub acct: AccountFile,
    pub key: Vec<u8>,
    host: String,
}

impl Client {
    pub fn new(acct: AccountFile) -> anyhow::Result<Client> {
        use base64::Engine;
        let key = base64::engine::general_purpose::STANDARD
            .decode(&acct.key)
            .context("the account key is not base64")?;
        let host = acct
            .blob_endpoint
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_string();
        Ok(Client { acct, key, host })
    }

    pub async fn send(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        headers: &[(&str, String)],
        body: Bytes,
    ) -> anyhow::Result<Reply> {
        let raw_path = format!("/{}/{}", self.acct.name, enc(path));
        let raw_path = raw_path.trim_end_matches('/').to_string();
        let qs: Vec<String> = query
            .iter()
            .map(|(k, v)| format!("{k}={}", enc_q(v)))
            .collect();
        let uri = if qs.is_empty() {
            raw_path.clone()
        } else {
            format!("{raw_path}?{}", qs.join("&"))
        };
        let date = httpdate::fmt_http_date(std::time::SystemTime::now());
        let mut xms: Vec<(String, String)> = headers
            .iter()
            .filter(|(k, _)| k.starts_with("x-ms-"))
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect();
        xms.push(("x-ms-date".into(), date));
        xms.push((
            "x-ms-version".into(),
            crate::blob::http::server::VERSION.into(),
        ));
        xms.sort();
        let std_h = |n: &str| {
            headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(n))
                .map(|(_, v)| v.clone())
                .unwrap_or_default()
        };
        let len = if body.is_empty() {
            String::new()
        } else {
            body.len().to_string()
        };
        let mut q: Vec<(String, String)> = query
            .iter()
            .map(|(k, v)| (k.to_lowercase(), v.clone()))
            .collect();
        q.sort();
        let std_headers = [
            std_h("content-encoding"),
            std_h("content-language"),
            len,
            std_h("content-md5"),
            std_h("content-type"),
            std_h("date"),
            std_h("if-modified-since"),
            std_h("if-match"),
            std_h("if-none-match"),
            std_h("if-unmodified-since"),
            std_h("range"),
        ]
        .join("\n");
        let sts = format!(
            "{method}\n{std_headers}\n{}/{}{raw_path}{}",
            xms.iter()
                .map(|(k, v)| format!("{k}:{v}\n"))
                .collect::<String>(),
            self.acct.name,
            q.iter()
                .map(|(k, v)| format!("\n{k}:{v}"))
                .collect::<String>()
        );
        let sig = crate::blob::http::auth::sign(&self.key, &sts);
        let mut req = hyper::Request::builder()
            .method(method)
            .uri(&uri)
            .header("host", &self.host)
            .header(
                "authorization",
                format!("SharedKey {}:{sig}", self.acct.name),
            )
            .header("content-length", body.len());
        for (k, v) in &xms {
            req = req.header(k.as_str(), v.as_str());
        }
        for (k, v) in headers.iter().filter(|(k, _)| !k.starts_with("x-ms-")) {
            req = req.header(*k, v.as_str());
        }
        let req = req.body(Full::new(body))?;
        let tcp = tokio::net::TcpStream::connect(&self.host)
            .await
            .with_context(|| {
                format!(
                    "cannot reach the blob service at {} (is `vmnode serve` running?)",
                    self.acct.blob_endpoint
                )
            })?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp)).await?;
        tokio::spawn(conn);
        let resp = sender.send_request(req).await?;
        let (parts, body) = resp.into_parts();
        let body = body.collect().await?.to_bytes();
        Ok(Reply {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    }
}
