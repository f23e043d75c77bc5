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
