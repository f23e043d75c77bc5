//! The HTTP/1.1 face of a vnet's platform listener (IMDS at 169.254.169.254:80 on its bridge):
//! guests are outsiders, so what one can make happen stays in its connection.
//!
//! - request heads are bounded (hyper's read buffer, [`MAX_HEAD`]) and must arrive within
//!   [`HEAD_TIMEOUT`]; bodies are never read (IMDS takes none; a POST is 405);
//! - at most [`MAX_CONNECTIONS`] connections per vnet at once: one more is accepted and closed
//!   at once, so a guest that opens many cannot hold the listener;
//! - a handler that panics is that request's 500 (`serve::unwinding`), never the daemon's end,
//!   and accept failures back off (`serve::Acceptor`).

use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};

use super::attribution::View;
use super::imds;

/// hyper's smallest read buffer, which bounds a request head.
const MAX_HEAD: usize = 8192;
/// How long a request head (or an idle keep-alive connection's next one) may take to arrive.
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections served at once per vnet.
const MAX_CONNECTIONS: usize = 64;

/// Serves IMDS on `listener` for the vnet `view` names, until the task is aborted.
pub async fn serve(listener: tokio::net::TcpListener, view: Arc<View>) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let mut accepting = crate::serve::Acceptor::new("IMDS");
    loop {
        let (tcp, peer) = accepting.next(|| listener.accept()).await;
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::debug!(%peer, vnet = %view.vnet, "IMDS: too many connections; closed");
            continue;
        };
        let view = view.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                let view = view.clone();
                async move { Ok::<_, Infallible>(handle(req, peer, &view).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .max_buf_size(MAX_HEAD)
                .timer(TokioTimer::new())
                .header_read_timeout(HEAD_TIMEOUT)
                .serve_connection(TokioIo::new(tcp), svc)
                .await;
            drop(slot);
        });
    }
}

/// The caller's IPv4 address (an IPv4-mapped IPv6 one as IPv4); `None` for real IPv6.
fn source(peer: SocketAddr) -> Option<Ipv4Addr> {
    match peer.ip() {
        IpAddr::V4(a) => Some(a),
        IpAddr::V6(a) => a.to_ipv4_mapped(),
    }
}

/// One request: read into [`imds::Request`], answered by [`imds::answer`] with the caller found
/// by [`View::facts`].
async fn handle(req: Request<Incoming>, peer: SocketAddr, view: &View) -> Response<Full<Bytes>> {
    let r = imds::Request {
        method: req.method().as_str().into(),
        path: req.uri().path().into(),
        query: req.uri().query().unwrap_or("").into(),
        headers: req
            .headers()
            .iter()
            .map(|(k, v)| {
                let v = String::from_utf8_lossy(v.as_bytes()).into_owned();
                (k.as_str().to_string(), v)
            })
            .collect(),
    };
    let lookup = || {
        let ip = source(peer)?;
        match view.facts(ip) {
            Ok(Some(f)) => Some(f),
            Ok(None) => {
                tracing::warn!(source = %ip, vnet = %view.vnet, path = %r.path,
                    "IMDS: no VM on this network holds the caller's address; refused (403)");
                None
            }
            Err(e) => {
                tracing::error!(source = %ip, vnet = %view.vnet, error = %crate::report::chain(&e),
                    "IMDS: cannot read the store; refused (403)");
                None
            }
        }
    };
    let res = crate::serve::unwinding(req.method(), &r.path, async { imds::answer(&r, lookup) })
        .await
        .unwrap_or_else(|p| imds::Response::error(500, &format!("Internal error ({p}).")));
    tracing::debug!(%peer, vnet = %view.vnet, method = %r.method, path = %r.path,
        status = res.status, "IMDS request");
    Response::builder()
        .status(res.status)
        .header(hyper::header::CONTENT_TYPE, res.content_type)
        .body(Full::new(Bytes::from(res.body)))
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;
    use crate::storage::db::Db;

    /// What the listener answers `raw` with, on a connection of its own (read to its close).
    async fn exchange(at: SocketAddr, raw: impl AsRef<[u8]>) -> String {
        let mut c = tokio::net::TcpStream::connect(at).await.unwrap();
        c.write_all(raw.as_ref()).await.unwrap();
        let mut out = Vec::new();
        let _ = c.read_to_end(&mut out).await;
        String::from_utf8_lossy(&out).into_owned()
    }

    #[tokio::test]
    async fn every_request_is_answered_or_closed() {
        let dir = tempfile::tempdir().unwrap();
        let view = Arc::new(View {
            db: Db::open(&dir.path().join("db.sqlite")).unwrap(),
            subscription: "s".into(),
            vnet: "vmnode/vmnode-vnet".into(),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let at = listener.local_addr().unwrap();
        let server = tokio::spawn(serve(listener, view));
        let ask = |target: &str, extra: &str| {
            format!("GET {target} HTTP/1.1\r\nHost: x\r\n{extra}Connection: close\r\n\r\n")
        };
        let versions = exchange(at, ask("/metadata/versions", "Metadata: true\r\n"));
        assert!(versions.await.starts_with("HTTP/1.1 200"));
        // 127.0.0.1 is no VM's address.
        let doc = ask(
            "/metadata/instance?api-version=2021-02-01",
            "Metadata: true\r\n",
        );
        let got = exchange(at, doc).await;
        assert!(
            got.starts_with("HTTP/1.1 403") && got.contains("application/json"),
            "{got}"
        );
        let got = exchange(at, ask("/metadata/instance", "")).await;
        assert!(got.starts_with("HTTP/1.1 400"), "{got}");
        // A head over the bound, and bytes that are no request: hyper's refusal, then closed.
        let huge = ask("/", &format!("X-Pad: {}\r\n", "a".repeat(MAX_HEAD * 4)));
        let got = exchange(at, huge).await;
        assert!(got.is_empty() || got.starts_with("HTTP/1.1 431"), "{got}");
        let got = exchange(at, b"\x00\xff\r\n\r\n").await;
        assert!(got.is_empty() || got.starts_with("HTTP/1.1 400"), "{got}");
        // The listener goes on.
        let again = exchange(at, ask("/metadata/versions", "Metadata: True\r\n"));
        assert!(again.await.starts_with("HTTP/1.1 200"));
        server.abort();
    }
}
