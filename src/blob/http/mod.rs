//! The blob service's HTTP face: the cloud's Blob REST API, path-style
//! (`http://{blob-listen}/{account}/{container}/{blob}`), over the engine in [`crate::blob`].
//! Handlers call the engine; the engine never calls back here.
//!
//! | file | role |
//! |---|---|
//! | `server.rs` | the accept loop, one request's life: operation routing, authorization, dispatch |
//! | `request.rs` | [`request::Req`] and the readers of headers and query parameters |
//! | `response.rs` | response builders, blob/container/lease headers, the error document |
//! | `body.rs` | bodies in and out: the response body type, request bodies to memory or a file |
//! | `xml_bodies.rs` | the XML documents clients send (block lists, ACLs), within the cloud's limits |
//! | `container_handlers.rs`, `blob_handlers.rs` | the handlers: a request in, the cloud's response out |
//! | `auth.rs` | SharedKey, service and account SAS, anonymous access |
//! | `wire.rs` | the case of `x-ms-meta-*` names on the wire (hyper lower-cases them) |
//! | `xml.rs` | XML in and out |

pub mod auth;
mod blob_handlers;
pub mod body;
mod container_handlers;
mod request;
mod response;
pub mod server;
pub(crate) mod wire;
pub mod xml;
pub mod xml_bodies;

use std::sync::Arc;

use super::{AttachedFn, Store};

/// Starts the blob service on `listener` for `store`'s accounts; `endpoint` is the base URL
/// clients use (`http://127.0.0.1:7481`); `attached` tells the consistency check (`comp=
/// vmnode-check`) which disks VMs have attached.
///
/// It runs on a runtime of its own (threads `blob-*`, with its own blocking pool): twenty VM
/// creates at once fill the daemon's blocking pool with disk clones, network set-up and
/// screenshots, and a blob read or write queued behind them waited seconds (bench/load.py).
pub fn start(
    store: Arc<Store>,
    listener: tokio::net::TcpListener,
    endpoint: String,
    attached: AttachedFn,
    health: Arc<crate::storage::health::Health>,
) -> std::io::Result<()> {
    super::set_node_store(store.clone());
    let svc = Arc::new(server::Service {
        store,
        endpoint,
        attached,
        health,
    });
    let listener = listener.into_std()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(16)
        .thread_name("blob")
        .enable_all()
        .build()?;
    std::thread::Builder::new()
        .name("blob-rt".into())
        .spawn(move || {
            rt.block_on(async move {
                match tokio::net::TcpListener::from_std(listener) {
                    Ok(l) => server::serve(l, svc).await,
                    Err(e) => tracing::error!(error = %e, "the blob service cannot listen"),
                }
            })
        })?;
    Ok(())
}
