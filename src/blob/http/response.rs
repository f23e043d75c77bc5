//! The cloud's response shapes: builders, the headers of blobs, containers and leases, the
//! error document, and [`blocking`] for store work too long for an async thread.

use std::collections::BTreeMap;

use hyper::http::response::Builder;
use hyper::{Response, StatusCode};

use super::body::Body;
use super::request::Req;
use super::wire::MetaCase;
use super::xml;
use crate::blob::error::{BlobError, Result};
use crate::blob::lease;
use crate::blob::store::{
    etag, http_date, now_ms, now_ns, snapshot_time, BlobMeta, BlobType, ContainerMeta,
};

/// Runs store work that may take a while (copies, directory walks, bulk reads and writes)
/// off the async threads.
pub(super) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(BlobError::internal)?
}

pub(super) fn empty(status: StatusCode) -> Builder {
    Response::builder().status(status)
}

pub(super) fn done(b: Builder) -> Result<Response<Body>> {
    b.header("content-length", 0)
        .body(Body::empty())
        .map_err(BlobError::internal)
}

pub(super) fn xml_response(status: StatusCode, body: String) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "application/xml")
        .header("content-length", body.len())
        .body(Body::from(body))
        .unwrap_or_else(|_| Response::new(Body::empty()))
}

pub(super) fn with_etag(b: Builder, modified_ns: u64) -> Builder {
    b.header("etag", etag(modified_ns))
        .header("last-modified", http_date(modified_ns))
}

/// `x-ms-meta-*` headers; names that are not all lower-case are re-cased on the wire.
pub(super) fn meta_headers(mut b: Builder, md: &BTreeMap<String, String>) -> Builder {
    for (k, v) in md {
        b = b.header(format!("x-ms-meta-{k}"), v);
    }
    if md.keys().any(|k| k.bytes().any(|c| c.is_ascii_uppercase())) {
        b = b.extension(MetaCase(md.keys().cloned().collect()));
    }
    b
}

pub(super) fn lease_headers(mut b: Builder, l: &lease::Lease) -> Builder {
    let now = now_ms();
    let st = l.state(now);
    b = b
        .header("x-ms-lease-status", st.status())
        .header("x-ms-lease-state", st.as_str());
    if let Some(d) = l.duration_header(now) {
        b = b.header("x-ms-lease-duration", d);
    }
    b
}

pub(super) fn blob_headers(mut b: Builder, m: &BlobMeta) -> Builder {
    b = with_etag(b, m.modified_ns)
        .header("x-ms-creation-time", http_date(m.created_ns))
        .header("x-ms-blob-type", m.blob_type.as_str())
        .header("x-ms-server-encrypted", "true")
        .header("accept-ranges", "bytes")
        .header(
            "content-type",
            m.props
                .content_type
                .as_deref()
                .unwrap_or("application/octet-stream"),
        );
    let p = &m.props;
    for (name, v) in [
        ("content-encoding", &p.content_encoding),
        ("content-language", &p.content_language),
        ("cache-control", &p.cache_control),
        ("content-disposition", &p.content_disposition),
    ] {
        if let Some(v) = v {
            b = b.header(name, v);
        }
    }
    if m.snapshot.is_none() {
        b = lease_headers(b, &m.lease);
    }
    match m.blob_type {
        BlobType::PageBlob => b = b.header("x-ms-blob-sequence-number", m.sequence_number),
        BlobType::AppendBlob => b = b.header("x-ms-blob-committed-block-count", m.append_blocks),
        BlobType::BlockBlob => {
            b = b
                .header("x-ms-access-tier", "Hot")
                .header("x-ms-access-tier-inferred", "true")
        }
    }
    meta_headers(b, &m.metadata)
}

pub(super) fn container_headers(b: Builder, m: &ContainerMeta) -> Builder {
    let mut b = lease_headers(with_etag(b, m.modified_ns), &m.lease)
        .header("x-ms-has-immutability-policy", "false")
        .header("x-ms-has-legal-hold", "false")
        .header("x-ms-default-encryption-scope", "$account-encryption-key")
        .header("x-ms-deny-encryption-scope-override", "false");
    if let Some(a) = m.public_access.header() {
        b = b.header("x-ms-blob-public-access", a);
    }
    meta_headers(b, &m.metadata)
}

/// The head of a listing (`EnumerationResults` with the account's `ServiceEndpoint` and
/// `attrs` after it, then the `Prefix`, `Marker` and `MaxResults` the request gave).
pub(super) fn listing(
    r: &Req,
    attrs: &str,
    prefix: &str,
    marker: Option<&str>,
    max: usize,
) -> xml::Writer {
    let mut w = xml::Writer::new();
    w.open_with(
        "EnumerationResults",
        &format!(
            " ServiceEndpoint=\"{}/{}\"{attrs}",
            xml::escape(&r.endpoint),
            xml::escape(&r.account)
        ),
    );
    if !prefix.is_empty() {
        w.elem("Prefix", prefix);
    }
    if let Some(m) = marker {
        w.elem("Marker", m);
    }
    if r.q("maxresults").is_some() {
        w.elem("MaxResults", &max.to_string());
    }
    w
}

pub(super) fn service_properties() -> String {
    let mut w = xml::Writer::new();
    w.open("StorageServiceProperties");
    w.open("Logging")
        .elem("Version", "1.0")
        .elem("Read", "false")
        .elem("Write", "false")
        .elem("Delete", "false")
        .open("RetentionPolicy")
        .elem("Enabled", "false")
        .close("RetentionPolicy")
        .close("Logging");
    for m in ["HourMetrics", "MinuteMetrics"] {
        w.open(m)
            .elem("Version", "1.0")
            .elem("Enabled", "false")
            .open("RetentionPolicy")
            .elem("Enabled", "false")
            .close("RetentionPolicy")
            .close(m);
    }
    w.opt("Cors", None)
        .open("DeleteRetentionPolicy")
        .elem("Enabled", "false")
        .close("DeleteRetentionPolicy")
        .open("StaticWebsite")
        .elem("Enabled", "false")
        .close("StaticWebsite");
    w.close("StorageServiceProperties").finish()
}

pub(super) fn lease_response(
    op: &lease::Op,
    out: &lease::Outcome,
    modified_ns: u64,
) -> Result<Response<Body>> {
    let status = match op {
        lease::Op::Acquire { .. } => StatusCode::CREATED,
        lease::Op::Break { .. } => StatusCode::ACCEPTED,
        _ => StatusCode::OK,
    };
    let mut b = with_etag(empty(status), modified_ns);
    if !matches!(op, lease::Op::Break { .. }) {
        if let Some(id) = &out.lease_id {
            b = b.header("x-ms-lease-id", id);
        }
    }
    if let Some(t) = out.lease_time {
        b = b.header("x-ms-lease-time", t);
    }
    done(b)
}

/// Renders an error the way the cloud does.
pub(super) fn error_response(e: &BlobError, request_id: &str, head: bool) -> Response<Body> {
    let mut w = xml::Writer::new();
    w.open("Error").elem("Code", e.code).elem(
        "Message",
        &format!(
            "{}\nRequestId:{request_id}\nTime:{}",
            e.message,
            snapshot_time(now_ns())
        ),
    );
    for (k, v) in &e.details {
        w.elem(k, v);
    }
    w.close("Error");
    let body = w.finish();
    let mut b = Response::builder()
        .status(e.status)
        .header("x-ms-error-code", e.code)
        .header("content-type", "application/xml");
    if e.status == StatusCode::UNAUTHORIZED {
        b = b.header("www-authenticate", "SharedKey realm=\"vmnode\"");
    }
    let no_body = head || e.status == StatusCode::NOT_MODIFIED;
    b = b.header("content-length", if no_body { 0 } else { body.len() });
    b.body(if no_body {
        Body::empty()
    } else {
        Body::from(body)
    })
    .unwrap_or_else(|_| Response::new(Body::empty()))
}
