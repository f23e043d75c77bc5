//! The CLI's connection to the daemon: the unix socket in the run dir by default, or
//! `--url`/`VMNODE_URL` (`unix:/path` or `https://host:port`, trusting the node's CA).

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{anyhow, bail, Context};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::Value;

use crate::config::Paths;

enum Target {
    Unix(PathBuf),
    Https {
        host: String,
        port: u16,
        tls: Arc<rustls::ClientConfig>,
    },
}

pub struct Client {
    target: Target,
    token: String,
    sub: tokio::sync::OnceCell<String>,
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: hyper::HeaderMap,
    pub bytes: Vec<u8>,
    pub body: Value,
    pub text: String,
}

impl Reply {
    /// The cloud's error message, or the status line.
    pub fn error_message(&self) -> String {
        match self.body.get("error") {
            Some(e) => format!(
                "{} ({}): {}",
                e.get("code").and_then(Value::as_str).unwrap_or("Error"),
                self.status.as_u16(),
                e.get("message").and_then(Value::as_str).unwrap_or("")
            ),
            None => format!("HTTP {}: {}", self.status, self.text.trim()),
        }
    }
    pub fn ok(self) -> anyhow::Result<Reply> {
        if self.status.is_success() {
            Ok(self)
        } else {
            Err(anyhow!(self.error_message()))
        }
    }
}

impl Client {
    pub fn new(url: Option<&str>, paths: Paths) -> anyhow::Result<Client> {
        let token = match std::env::var("VMNODE_TOKEN") {
            Ok(t) if !t.is_empty() => t,
            _ => std::fs::read_to_string(paths.token())
                .map(|t| t.trim().to_string())
                .with_context(|| {
                    format!(
                        "cannot read the daemon's token at {}: is `vmnode serve` running with this --state-dir? (or set VMNODE_TOKEN)",
                        paths.token().display()
                    )
                })?,
        };
        let target = match url {
            Some(u) if u.starts_with("unix:") => {
                Target::Unix(PathBuf::from(u.trim_start_matches("unix:")))
            }
            Some(u) if u.starts_with("https://") => {
                let hostport = u.trim_start_matches("https://").trim_end_matches('/');
                let (host, port) = hostport.rsplit_once(':').unwrap_or((hostport, "443"));
                let ca = std::env::var("VMNODE_CA")
                    .map(PathBuf::from)
                    .unwrap_or_else(|_| paths.ca_cert());
                let tls = crate::tls::client_config(&ca)
                    .with_context(|| format!("loading the node's CA from {}", ca.display()))?;
                Target::Https {
                    host: host.into(),
                    port: port.parse().context("bad port in --url")?,
                    tls,
                }
            }
            Some(u) => {
                bail!("unsupported --url '{u}': use unix:/path/to/vmnode.sock or https://host:port")
            }
            None if paths.socket().exists() => Target::Unix(paths.socket()),
            None => {
                let tls = crate::tls::client_config(&paths.ca_cert()).with_context(|| {
                    format!(
                        "no daemon socket at {} and no CA at {}: is `vmnode serve` running?",
                        paths.socket().display(),
                        paths.ca_cert().display()
                    )
                })?;
                Target::Https {
                    host: "127.0.0.1".into(),
                    port: 7480,
                    tls,
                }
            }
        };
        Ok(Client {
            target,
            token,
            sub: tokio::sync::OnceCell::new(),
        })
    }

    /// The bearer token this client sends.
    pub fn token(&self) -> &str {
        &self.token
    }

    pub async fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<Reply> {
        let sep = if path.contains('?') { '&' } else { '?' };
        let uri = format!("{path}{sep}api-version=2024-07-01");
        let data = body
            .map(serde_json::to_vec)
            .transpose()?
            .unwrap_or_default();
        let req = Request::builder()
            .method(method)
            .uri(&uri)
            .header("host", "localhost")
            .header("authorization", format!("Bearer {}", self.token))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(data)))?;
        let res = match &self.target {
            Target::Unix(p) => {
                let s = tokio::net::UnixStream::connect(p).await.with_context(|| {
                    format!(
                        "cannot reach the daemon at {}: is `vmnode serve` running?",
                        p.display()
                    )
                })?;
                send(s, req).await?
            }
            Target::Https { host, port, tls } => {
                let tcp = tokio::net::TcpStream::connect((host.as_str(), *port))
                    .await
                    .with_context(|| format!("cannot reach the daemon at https://{host}:{port}: is `vmnode serve` running?"))?;
                let name = rustls::pki_types::ServerName::try_from(host.clone())?;
                let s = tokio_rustls::TlsConnector::from(tls.clone())
                    .connect(name, tcp)
                    .await?;
                send(s, req).await?
            }
        };
        let status = res.status();
        let headers = res.headers().clone();
        let bytes = res.into_body().collect().await?.to_bytes();
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        let bytes = bytes.to_vec();
        Ok(Reply {
            status,
            headers,
            bytes,
            body,
            text,
        })
    }

    /// Follows a 202's `Azure-AsyncOperation` until the operation ends; errors if it failed.
    pub async fn wait_operation(&self, accepted: &Reply, what: &str) -> anyhow::Result<()> {
        let Some(url) = accepted
            .headers
            .get("azure-asyncoperation")
            .and_then(|v| v.to_str().ok())
        else {
            return Ok(());
        };
        // The URL is absolute (for SDKs); this client only needs its path.
        let path = url.split_once("://").map(|(_, rest)| rest).unwrap_or(url);
        let path = &path[path.find('/').unwrap_or(0)..];
        let path = path.split('?').next().unwrap_or(path);
        let start = std::time::Instant::now();
        let mut dots = std::time::Instant::now();
        loop {
            let r = self.get(path).await?.ok()?;
            match r.body["status"].as_str() {
                Some("InProgress") => {}
                Some("Succeeded") => {
                    eprintln!(" done ({:.1}s)", start.elapsed().as_secs_f64());
                    return Ok(());
                }
                _ => {
                    eprintln!();
                    anyhow::bail!(
                        "{what} failed: {}",
                        r.body["error"]["message"]
                            .as_str()
                            .unwrap_or("unknown error")
                    );
                }
            }
            if dots.elapsed() > std::time::Duration::from_secs(2) {
                eprint!(".");
                dots = std::time::Instant::now();
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }

    /// A GET whose body is binary (a screenshot); errors carry the cloud's message.
    pub async fn get_bytes(&self, path: &str) -> anyhow::Result<Vec<u8>> {
        Ok(self.get(path).await?.ok()?.bytes)
    }

    pub async fn get(&self, path: &str) -> anyhow::Result<Reply> {
        self.request(Method::GET, path, None).await
    }

    /// The node's subscription id (asked once).
    pub async fn subscription(&self) -> anyhow::Result<String> {
        self.sub
            .get_or_try_init(|| async {
                let r = self.get("/subscriptions").await?.ok()?;
                r.body["value"][0]["subscriptionId"]
                    .as_str()
                    .map(str::to_string)
                    .ok_or_else(|| anyhow!("the daemon did not report a subscription"))
            })
            .await
            .cloned()
    }

    pub async fn rg_path(&self, rg: &str) -> anyhow::Result<String> {
        Ok(format!(
            "/subscriptions/{}/resourceGroups/{rg}",
            self.subscription().await?
        ))
    }

    pub async fn vm_path(&self, rg: &str, name: &str) -> anyhow::Result<String> {
        Ok(format!(
            "{}/providers/Microsoft.Compute/virtualMachines/{name}",
            self.rg_path(rg).await?
        ))
    }
}

async fn send<S>(
    stream: S,
    req: Request<Full<Bytes>>,
) -> anyhow::Result<hyper::Response<hyper::body::Incoming>>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender.send_request(req).await?)
}
