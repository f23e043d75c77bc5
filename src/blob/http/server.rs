//! The blob service's HTTP front: path-style URLs `/{account}/{container}/{blob}`, the
//! operation picked from method + `restype` + `comp`, authentication and authorization, then
//! the store operation (on a blocking thread) and the cloud's response shape.

use std::net::SocketAddr;
use std::sync::Arc;

use hyper::body::Incoming;
use hyper::header::HeaderValue;
use hyper::{HeaderMap, Method, Request, Response, StatusCode};

use super::auth::{self, Principal};
use super::blob_handlers::*;
use super::body::{self, Body};
use super::container_handlers::*;
use super::request::{access_of, decode, header, Req};
use super::response::{blocking, empty, error_response, service_properties, xml_response};
use super::wire::{CaseIo, MetaCase, Wire};
use crate::blob::error::{BlobError, Result};
use crate::blob::store::{http_date, now_ns, AccessPolicy, ContainerMeta, PublicAccess};
use crate::blob::{AttachedFn, Store};

/// The service version we answer with when the client names none.
pub const VERSION: &str = "2025-11-05";

/// What the service serves: the store, how clients reach it, and which disks VMs hold.
pub struct Service {
    pub store: Arc<Store>,
    /// `http://host:port`, for `ServiceEndpoint` in listings.
    pub endpoint: String,
    /// The state dir's checker: a write it cannot take is refused up front (507/503).
    pub health: Arc<crate::storage::health::Health>,
    /// The disks VMs have attached, for the consistency check.
    pub attached: AttachedFn,
}

/// Serves HTTP/1.1 on `listener` until the task is dropped.
pub async fn serve(listener: tokio::net::TcpListener, svc: Arc<Service>) {
    let mut accepting = crate::serve::Acceptor::new("blob service");
    loop {
        let (tcp, peer) = accepting.next(|| listener.accept()).await;
        let _ = tcp.set_nodelay(true);
        let svc = svc.clone();
        tokio::spawn(async move {
            let wire = Arc::new(Wire::default());
            let io = CaseIo::new(tcp, wire.clone());
            let service = hyper::service::service_fn(move |req| {
                let (svc, wire) = (svc.clone(), wire.clone());
                async move { Ok::<_, std::convert::Infallible>(handle(svc, &wire, req, peer).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .keep_alive(true)
                .serve_connection(hyper_util::rt::TokioIo::new(io), service)
                .await;
        });
    }
}

pub async fn handle(
    svc: Arc<Service>,
    wire: &Wire,
    req: Request<Incoming>,
    peer: SocketAddr,
) -> Response<Body> {
    // Metadata names as the client spelt them (hyper lower-cases header names).
    let sent = wire.request_names(req.headers());
    let rid = uuid::Uuid::new_v4().to_string();
    let version = header(req.headers(), "x-ms-version")
        .unwrap_or(VERSION)
        .to_string();
    let client_rid = req.headers().get("x-ms-client-request-id").cloned();
    let head = req.method() == Method::HEAD;
    let (method, path) = (req.method().clone(), req.uri().path().to_string());
    let comp = auth::query_pairs(req.uri().query().unwrap_or(""))
        .into_iter()
        .find(|(k, _)| k == "comp")
        .map(|(_, v)| v)
        .unwrap_or_default();
    let started = std::time::Instant::now();
    let (seq, names) = sent.unzip();
    // A panic in one operation is that request's 500 (src/serve.rs), never the node's end.
    let run = dispatch(svc, req, peer, names.unwrap_or_default());
    let mut resp = match crate::serve::unwinding(&method, &path, run).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => error_response(&e, &rid, head),
        Err(_) => error_response(&BlobError::unlogged_internal(), &rid, head),
    };
    if let (Some(seq), Some(MetaCase(names))) = (seq, resp.extensions_mut().remove()) {
        wire.reply(seq, names);
    }
    let h = resp.headers_mut();
    let set = |h: &mut HeaderMap, k: &'static str, v: &str| {
        if let Ok(v) = HeaderValue::from_str(v) {
            h.insert(k, v);
        }
    };
    set(h, "x-ms-request-id", &rid);
    set(h, "x-ms-version", &version);
    set(h, "date", &http_date(now_ns()));
    set(h, "server", "vmnode-blob/1.0");
    if let Some(c) = client_rid {
        h.insert("x-ms-client-request-id", c);
    }
    // Time in the service, from the request head to the response head.
    tracing::debug!(%method, %path, %comp, status = resp.status().as_u16(),
        us = started.elapsed().as_micros() as u64, "blob request");
    resp
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    ListContainers,
    ServiceProps,
    SetServiceProps,
    AccountInfo,
    Check,
    CreateContainer,
    ContainerProps,
    DeleteContainer,
    SetContainerMetadata,
    GetAcl,
    SetAcl,
    ContainerLease,
    ListBlobs,
    PutBlob,
    GetBlob,
    DeleteBlob,
    SetBlobProps,
    SetBlobMetadata,
    GetBlobMetadata,
    PutBlock,
    PutBlockList,
    GetBlockList,
    PutPage,
    GetPageRanges,
    Snapshot,
    BlobLease,
    AppendBlock,
    SetTier,
}

/// Where an operation acts, for account-SAS resource types.
#[derive(PartialEq, Eq)]
enum Scope {
    Service,
    Container,
    Object,
}

impl Op {
    fn scope(self) -> Scope {
        use Op::*;
        match self {
            ListContainers | ServiceProps | SetServiceProps | AccountInfo | Check => Scope::Service,
            CreateContainer | ContainerProps | DeleteContainer | SetContainerMetadata | GetAcl
            | SetAcl | ContainerLease | ListBlobs => Scope::Container,
            _ => Scope::Object,
        }
    }

    /// SAS permissions of which any one allows the operation.
    fn permissions(self) -> &'static str {
        use Op::*;
        match self {
            GetBlob | GetBlobMetadata | GetBlockList | GetPageRanges | ContainerProps
            | ServiceProps | AccountInfo => "r",
            PutBlob | PutBlockList | Snapshot | CreateContainer => "cw",
            AppendBlock => "aw",
            PutBlock | PutPage | SetBlobProps | SetBlobMetadata | BlobLease | SetTier
            | SetContainerMetadata | ContainerLease | SetServiceProps => "w",
            DeleteBlob | DeleteContainer => "d",
            ListBlobs | ListContainers => "l",
            GetAcl | SetAcl | Check => "",
        }
    }

    /// What anonymous callers may do under a container's public access level.
    fn anonymous(self, level: PublicAccess) -> bool {
        use Op::*;
        let blob_read = matches!(
            self,
            GetBlob | GetBlobMetadata | GetBlockList | GetPageRanges
        );
        match level {
            PublicAccess::Off => false,
            PublicAccess::Blob => blob_read,
            PublicAccess::Container => blob_read || matches!(self, ListBlobs | ContainerProps),
        }
    }

    fn is_read(self) -> bool {
        use Op::*;
        matches!(
            self,
            GetBlob
                | GetBlobMetadata
                | GetBlockList
                | GetPageRanges
                | ContainerProps
                | ListBlobs
                | ListContainers
                | GetAcl
                | ServiceProps
                | AccountInfo
        )
    }
}

fn classify(m: &Method, container: bool, blob: bool, restype: &str, comp: &str) -> Result<Op> {
    use Op::*;
    let get = *m == Method::GET || *m == Method::HEAD;
    let put = *m == Method::PUT;
    let op = match (container, blob) {
        (false, _) => match (restype, comp) {
            (_, "list") if get => Some(ListContainers),
            ("service", "properties") if get => Some(ServiceProps),
            ("service", "properties") if put => Some(SetServiceProps),
            ("account", "properties") if get => Some(AccountInfo),
            (_, "vmnode-check") if *m == Method::POST => Some(Check),
            _ => None,
        },
        (true, false) => match (restype, comp) {
            ("container", "") if put => Some(CreateContainer),
            ("container", "" | "metadata") if get => Some(ContainerProps),
            ("container", "") if *m == Method::DELETE => Some(DeleteContainer),
            ("container", "metadata") if put => Some(SetContainerMetadata),
            ("container", "acl") if get => Some(GetAcl),
            ("container", "acl") if put => Some(SetAcl),
            ("container", "lease") if put => Some(ContainerLease),
            ("container", "list") if get => Some(ListBlobs),
            _ => None,
        },
        (true, true) => match comp {
            "" if put => Some(PutBlob),
            "" if get => Some(GetBlob),
            "" if *m == Method::DELETE => Some(DeleteBlob),
            "properties" if put => Some(SetBlobProps),
            "metadata" if put => Some(SetBlobMetadata),
            "metadata" if get => Some(GetBlobMetadata),
            "block" if put => Some(PutBlock),
            "blocklist" if put => Some(PutBlockList),
            "blocklist" if get => Some(GetBlockList),
            "page" if put => Some(PutPage),
            "pagelist" if get => Some(GetPageRanges),
            "snapshot" if put => Some(Snapshot),
            "lease" if put => Some(BlobLease),
            "appendblock" if put => Some(AppendBlock),
            "tier" if put => Some(SetTier),
            _ => None,
        },
    };
    op.ok_or_else(|| BlobError::unsupported(&format!("{m} restype={restype} comp={comp}")))
}

fn authorize(p: &Principal, op: Op, level: Option<PublicAccess>) -> Result<()> {
    match p {
        Principal::Key => Ok(()),
        Principal::Sas(g) => {
            if g.resource == "account" {
                let need = match op.scope() {
                    Scope::Service => 's',
                    Scope::Container => 'c',
                    Scope::Object => 'o',
                };
                if !g.resource_types.contains(need) {
                    return Err(BlobError::resource_type_mismatch());
                }
            } else if op.scope() == Scope::Service
                || (op.scope() == Scope::Container
                    && !matches!(op, Op::ListBlobs | Op::ContainerProps))
            {
                return Err(BlobError::permission_mismatch());
            }
            if op.permissions().is_empty() || !g.allows(op.permissions()) {
                return Err(BlobError::permission_mismatch());
            }
            Ok(())
        }
        Principal::Anonymous => {
            if level.is_some_and(|l| op.anonymous(l)) {
                Ok(())
            } else if op.is_read() {
                Err(BlobError::public_not_found())
            } else {
                Err(BlobError::no_auth())
            }
        }
    }
}

async fn dispatch(
    svc: Arc<Service>,
    req: Request<Incoming>,
    peer: SocketAddr,
    meta_names: Vec<String>,
) -> Result<Response<Body>> {
    let (parts, body) = req.into_parts();
    let raw_path = parts.uri.path().to_string();
    let raw_query = parts.uri.query().unwrap_or("").to_string();
    let mut segs = raw_path.trim_start_matches('/').splitn(3, '/');
    let account = decode(segs.next().unwrap_or(""));
    let container = segs.next().filter(|s| !s.is_empty()).map(decode);
    let blob = segs.next().filter(|s| !s.is_empty()).map(decode);
    let acct = svc
        .store
        .account(&account)
        .ok_or_else(BlobError::account_not_found)?;
    let q = auth::query_pairs(&raw_query);
    let qv = |n: &str| {
        q.iter()
            .find(|(k, _)| k == n)
            .map(|(_, v)| v.as_str())
            .unwrap_or("")
    };
    let op = classify(
        &parts.method,
        container.is_some(),
        blob.is_some(),
        qv("restype"),
        qv("comp"),
    )?;
    if op == Op::AccountInfo {
        crate::failpoint::panic_point("blob.panic");
    }
    if let Some(c) = &container {
        if !crate::blob::store::valid_container_name(c) {
            return Err(BlobError::new(
                StatusCode::BAD_REQUEST,
                "InvalidResourceName",
                "The specifed resource name contains invalid characters.",
            ));
        }
    }
    if let Some(b) = &blob {
        if !crate::blob::store::valid_blob_name(b) {
            return Err(BlobError::new(
                StatusCode::BAD_REQUEST,
                "InvalidResourceName",
                "The specifed resource name contains invalid characters.",
            ));
        }
    }
    {
        // The container's metadata is needed only for a SAS naming a stored access policy and for
        // anonymous callers (its public access level): it is read only then, not on every request.
        let cmeta: std::cell::OnceCell<Option<ContainerMeta>> = std::cell::OnceCell::new();
        let container_meta = || {
            cmeta
                .get_or_init(|| match &container {
                    Some(c) if op != Op::CreateContainer => {
                        svc.store.load_container(&account, c).ok()
                    }
                    _ => None,
                })
                .as_ref()
        };
        let policy = |id: &str| -> Option<AccessPolicy> {
            container_meta().and_then(|m| m.identifiers.iter().find(|p| p.id == id).cloned())
        };
        let snapshot = q
            .iter()
            .find(|(k, _)| k == "snapshot")
            .map(|(_, v)| v.clone());
        let principal = auth::authenticate(
            &auth::Request {
                method: parts.method.as_str(),
                raw_path: &raw_path,
                raw_query: &raw_query,
                headers: &parts.headers,
                account: &account,
                container: container.as_deref(),
                blob: blob.as_deref(),
                snapshot: snapshot.as_deref(),
                peer: peer.ip(),
            },
            &acct,
            &policy,
        )?;
        let level = match principal {
            Principal::Anonymous => container_meta().map(|m| m.public_access),
            _ => None,
        };
        authorize(&principal, op, level)?;
    }
    if parts.method == Method::PUT && !matches!(op, Op::ContainerLease | Op::BlobLease) {
        // A write the store cannot take is refused before a byte is stored (leases only change
        // a little metadata and may be what frees a disk; reads and deletes always go on).
        crate::blob::error::state_dir(&svc.health, &svc.store.root)?;
    }
    let r = Req {
        store: svc.store.clone(),
        endpoint: svc.endpoint.clone(),
        account,
        container: container.unwrap_or_default(),
        blob: blob.unwrap_or_default(),
        access: access_of(&parts.headers)?,
        meta_names,
        q,
        h: parts.headers,
        head: parts.method == Method::HEAD,
    };
    run(op, r, body, &svc.attached).await
}

async fn run(op: Op, r: Req, body: Incoming, attached: &AttachedFn) -> Result<Response<Body>> {
    use Op::*;
    // Operations that read or write a little metadata run here: a hop to a blocking thread
    // would cost more than the work (and wake-ups on a busy host are what lease latency's p99
    // is made of). Bulk data, copies and directory walks go to blocking threads.
    // Those inline operations take the blob's key lock (`Store::lock`, a condvar) on this
    // runtime worker: while another request holds the same blob (a slow write of it on a
    // blocking thread) the worker waits, and the service's other worker carries on. The lock
    // is held only around the metadata's read and write, and the blob runtime's workers are
    // its own, so the API's are never the ones waiting.
    match op {
        ListContainers => blocking(move || list_containers(&r)).await,
        ServiceProps => Ok(xml_response(StatusCode::OK, service_properties())),
        SetServiceProps => {
            body::body_bytes(body, 1 << 20).await?;
            Ok(empty(StatusCode::ACCEPTED)
                .body(Body::empty())
                .map_err(BlobError::internal)?)
        }
        AccountInfo => Ok(empty(StatusCode::OK)
            .header("x-ms-sku-name", "Standard_LRS")
            .header("x-ms-account-kind", "StorageV2")
            .header("x-ms-is-hns-enabled", "false")
            .body(Body::empty())
            .map_err(BlobError::internal)?),
        Check => {
            let repair = r.q("repair") == Some("true");
            let store = r.store.clone();
            let attached = attached.clone();
            let findings =
                blocking(move || Ok(crate::blob::check(&store, &attached(), repair))).await?;
            let body = serde_json::to_vec(&findings).map_err(BlobError::internal)?;
            Ok(empty(StatusCode::OK)
                .header("content-type", "application/json")
                .header("content-length", body.len())
                .body(Body::from(body))
                .map_err(BlobError::internal)?)
        }
        CreateContainer => create_container(&r),
        ContainerProps => container_props(&r),
        DeleteContainer => blocking(move || delete_container(&r)).await,
        SetContainerMetadata => set_container_metadata(&r),
        GetAcl => get_acl(&r),
        // Bodies read into memory only up to what the cloud allows them (blob/bodies.rs).
        SetAcl => {
            let b = body::body_bytes(body, super::xml_bodies::MAX_ACL_BYTES).await?;
            set_acl(&r, &b)
        }
        ContainerLease => container_lease(&r),
        ListBlobs => blocking(move || list_blobs(&r)).await,
        PutBlob => put_blob(r, body).await,
        GetBlob => get_blob(&r),
        DeleteBlob => blocking(move || delete_blob(&r)).await,
        SetBlobProps => blocking(move || set_blob_props(&r)).await,
        SetBlobMetadata => set_blob_metadata(&r),
        GetBlobMetadata => get_blob_metadata(&r),
        PutBlock => put_block(r, body).await,
        PutBlockList => {
            let b = body::body_bytes(body, super::xml_bodies::MAX_BLOCK_LIST_BYTES).await?;
            blocking(move || put_block_list(&r, &b)).await
        }
        GetBlockList => blocking(move || get_block_list(&r)).await,
        PutPage => put_page(r, body).await,
        // Usually a little metadata, but a VM disk's extents or a snapshot diff read its file:
        // run here, letting the runtime move other tasks to another thread meanwhile.
        GetPageRanges => tokio::task::block_in_place(|| page_ranges(&r)),
        Snapshot => blocking(move || snapshot(&r)).await,
        BlobLease => blob_lease(&r),
        AppendBlock => {
            let b = body::body_bytes(body, 100 << 20).await?;
            blocking(move || append_block(&r, &b)).await
        }
        SetTier => Ok(empty(StatusCode::OK)
            .body(Body::empty())
            .map_err(BlobError::internal)?),
    }
}
