//! The HTTP/1.1 face of a vnet's platform listeners (IMDS at 169.254.169.254:80, the
//! WireServer at 168.63.129.16:80, on its bridge): guests are outsiders, so what one can make
//! happen stays in its connection. One loop serves any [`Service`]:
//!
//! - request heads are bounded (hyper's read buffer, [`MAX_HEAD`]) and must arrive within
//!   [`HEAD_TIMEOUT`]; bodies are read only by a service that takes them, up to its
//!   [`Service::MAX_BODY`] (more is 413) and within [`HEAD_TIMEOUT`] (slower is 408);
//! - at most [`MAX_CONNECTIONS`] connections per vnet at once: one more is accepted and closed
//!   at once, so a guest that opens many cannot hold the listener;
//! - a handler that panics is that request's 500 (`serve::unwinding`), never the daemon's end,
//!   and accept failures back off (`serve::Acceptor`).

use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};

use super::imds;

/// hyper's smallest read buffer, which bounds a request head.
const MAX_HEAD: usize = 8192;
/// How long a request head (or an idle keep-alive connection's next one) may take to arrive.
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections served at once per vnet.
const MAX_CONNECTIONS: usize = 64;

/// What one platform listener answers: a request read (its head, and its body if the service
/// takes bodies) and the caller's address in, a response out.
pub trait Service: Send + Sync + 'static {
    /// The service's name in the logs.
    const NAME: &'static str;
    /// The longest body read; 0: bodies are never read.
    const MAX_BODY: usize;
    /// The answer to one request from `peer`.
    fn answer(&self, req: &imds::Request, body: &[u8], peer: SocketAddr) -> imds::Response;
    /// The vnet served, for the logs.
    fn vnet(&self) -> &str;
}

/// Serves `service` on `listener`, until the task is aborted.
pub async fn serve<S: Service>(listener: tokio::net::TcpListener, service: Arc<S>) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let mut accepting = crate::serve::Acceptor::new(S::NAME);
    loop {
        let (tcp, peer) = accepting.next(|| listener.accept()).await;
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::debug!(%peer, vnet = %service.vnet(), "{}: too many connections; closed",
                S::NAME);
            continue;
        };
        let service = service.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                let service = service.clone();
                async move { Ok::<_, Infallible>(handle(req, peer, &*service).await) }
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
pub fn source(peer: SocketAddr) -> Option<Ipv4Addr> {
    match peer.ip() {
        IpAddr::V4(a) => Some(a),
        IpAddr::V6(a) => a.to_ipv4_mapped(),
    }
}

/// The request's body, if `S` takes bodies: at most `S::MAX_BODY` bytes within
/// [`HEAD_TIMEOUT`]; otherwise the status to answer (413, 408, 400).
async fn body<S: Service>(req: Request<Incoming>) -> Result<Bytes, u16> {
    if S::MAX_BODY == 0 {
        return Ok(Bytes::new());
    }
    let read = Limited::new(req.into_body(), S::MAX_BODY).collect();
    match tokio::time::timeout(HEAD_TIMEOUT, read).await {
        Err(_) => Err(408),
        Ok(Ok(b)) => Ok(b.to_bytes()),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => Err(413),
        Ok(Err(_)) => Err(400),
    }
}

/// One request: read into [`imds::Request`] (and its bounded body), answered by the service.
async fn handle<S: Service>(
    req: Request<Incoming>,
    peer: SocketAddr,
    service: &S,
) -> Response<Full<Bytes>> {
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
    let method = req.method().clone();
    let res = match body::<S>(req).await {
        Ok(b) => crate::serve::unwinding(&method, &r.path, async { service.answer(&r, &b, peer) })
            .await
            .unwrap_or_else(|p| imds::Response::error(500, &format!("Internal error ({p})."))),
        Err(status) => imds::Response::error(status, "The request body cannot be read."),
    };
    tracing::debug!(%peer, vnet = %service.vnet(), method = %r.method, path = %r.path,
        status = res.status, "{} request", S::NAME);
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
    use crate::guest::attribution::View;
    use crate::guest::services::{Imds, Wire};
    use crate::storage::db::Db;

    /// What the listener answers `raw` with, on a connection of its own (read to its close).
    async fn exchange(at: SocketAddr, raw: impl AsRef<[u8]>) -> String {
        let mut c = tokio::net::TcpStream::connect(at).await.unwrap();
        // A server that answers before the whole body is in may close first.
        let _ = c.write_all(raw.as_ref()).await;
        let mut out = Vec::new();
        let _ = c.read_to_end(&mut out).await;
        String::from_utf8_lossy(&out).into_owned()
    }

    fn view(dir: &tempfile::TempDir) -> View {
        View {
            db: Db::open(&dir.path().join("db.sqlite")).unwrap(),
            subscription: "s".into(),
            vnet: "vmnode/vmnode-vnet".into(),
        }
    }

    #[tokio::test]
    async fn the_wire_server_reads_bodies_up_to_its_bound() {
        let dir = tempfile::tempdir().unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let at = listener.local_addr().unwrap();
        let server = tokio::spawn(serve(listener, Arc::new(Wire(view(&dir)))));
        let post = |target: &str, body: &str| {
            format!(
                "POST {target} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\
                 Connection: close\r\n\r\n{body}",
                body.len()
            )
        };
        let got = exchange(at, post("/machine?comp=telemetrydata", "<TelemetryData/>")).await;
        assert!(got.starts_with("HTTP/1.1 200"), "{got}");
        let huge = "a".repeat(crate::guest::wire::MAX_BODY + 1);
        let got = exchange(at, post("/machine?comp=telemetrydata", &huge)).await;
        assert!(got.starts_with("HTTP/1.1 413"), "{got}");
        // 127.0.0.1 is no VM's address: no goal state, no report.
        let got = exchange(at, post("/machine?comp=health", "<Health/>")).await;
        assert!(got.starts_with("HTTP/1.1 403"), "{got}");
        let get = "GET /?comp=versions HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
        let got = exchange(at, get).await;
        assert!(
            got.starts_with("HTTP/1.1 200") && got.contains("2012-11-30"),
            "{got}"
        );
        server.abort();
    }

    #[tokio::test]
    async fn every_request_is_answered_or_closed() {
        let dir = tempfile::tempdir().unwrap();
        let view = Arc::new(Imds(view(&dir)));
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
