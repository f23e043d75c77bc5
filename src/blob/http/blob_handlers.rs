//! Handlers of blob operations: put/get, blocks, pages, snapshots, leases.

use std::ops::Range;

use hyper::body::Incoming;
use hyper::{Response, StatusCode};

use super::body::{self, Body};
use super::request::{http_props, lease_op, max_results, page_range, range, u64_header, Req};
use super::response::{
    blob_headers, blocking, done, empty, lease_response, listing, meta_headers, with_etag,
    xml_response,
};
use super::xml;
use crate::blob::blobs::{DeleteSnapshots, Entry, NewBlob};
use crate::blob::error::{BlobError, Result};
use crate::blob::pages::PAGE;
use crate::blob::store::{http_date, now_ms, BlobMeta, BlobType};

/// Put Page update: at most 4 MiB a call.
const MAX_PAGE_WRITE: u64 = 4 << 20;

pub(super) fn list_blobs(r: &Req) -> Result<Response<Body>> {
    let prefix = r.q("prefix").unwrap_or("");
    let delimiter = r.q("delimiter").filter(|d| !d.is_empty());
    let marker = r.q("marker").filter(|m| !m.is_empty());
    let max = max_results(r)?;
    let include: Vec<&str> = r
        .q("include")
        .map(|i| i.split(',').collect())
        .unwrap_or_default();
    let (entries, next) = r.store.list_blobs(
        &r.account,
        &r.container,
        prefix,
        delimiter,
        marker,
        max,
        include.contains(&"snapshots"),
        include.contains(&"uncommittedblobs"),
    )?;
    let with_meta = include.contains(&"metadata");
    let container = format!(" ContainerName=\"{}\"", xml::escape(&r.container));
    let mut w = listing(r, &container, prefix, marker, max);
    if let Some(d) = delimiter {
        w.elem("Delimiter", d);
    }
    w.open("Blobs");
    for e in &entries {
        match e {
            Entry::Prefix(p) => {
                w.open("BlobPrefix").elem("Name", p).close("BlobPrefix");
            }
            Entry::Blob(m) => blob_xml(&mut w, m, with_meta),
        }
    }
    w.close("Blobs").opt("NextMarker", next.as_deref());
    Ok(xml_response(
        StatusCode::OK,
        w.close("EnumerationResults").finish(),
    ))
}

pub(super) fn blob_xml(w: &mut xml::Writer, m: &BlobMeta, with_meta: bool) {
    w.open("Blob").elem("Name", &m.name);
    if let Some(s) = &m.snapshot {
        w.elem("Snapshot", s);
    }
    w.open("Properties")
        .elem("Creation-Time", &http_date(m.created_ns))
        .elem("Last-Modified", &http_date(m.modified_ns))
        .elem("Etag", &format!("0x{:X}", m.modified_ns))
        .elem("Content-Length", &m.size.to_string())
        .elem(
            "Content-Type",
            m.props
                .content_type
                .as_deref()
                .unwrap_or("application/octet-stream"),
        )
        .opt("Content-Encoding", m.props.content_encoding.as_deref())
        .opt("Content-Language", m.props.content_language.as_deref())
        .opt("Content-CRC64", None)
        .opt("Content-MD5", m.props.content_md5.as_deref())
        .opt("Cache-Control", m.props.cache_control.as_deref())
        .opt(
            "Content-Disposition",
            m.props.content_disposition.as_deref(),
        );
    if m.blob_type == BlobType::PageBlob {
        w.elem("x-ms-blob-sequence-number", &m.sequence_number.to_string());
    }
    w.elem("BlobType", m.blob_type.as_str());
    if m.blob_type == BlobType::BlockBlob {
        w.elem("AccessTier", "Hot")
            .elem("AccessTierInferred", "true");
    }
    if m.snapshot.is_none() {
        let now = now_ms();
        let st = m.lease.state(now);
        w.elem("LeaseStatus", st.status())
            .elem("LeaseState", st.as_str());
        if let Some(d) = m.lease.duration_header(now) {
            w.elem("LeaseDuration", d);
        }
    }
    w.elem("ServerEncrypted", "true").close("Properties");
    if with_meta {
        w.metadata(&m.metadata);
    }
    w.close("Blob");
}

pub(super) async fn put_blob(r: Req, body: Incoming) -> Result<Response<Body>> {
    let kind = r
        .h("x-ms-blob-type")
        .ok_or_else(|| BlobError::missing_header("x-ms-blob-type"))?;
    let kind =
        BlobType::parse(kind).ok_or_else(|| BlobError::invalid_header("x-ms-blob-type", kind))?;
    let props = http_props(&r.h, true).unwrap_or_default();
    let md = r.metadata()?;
    match kind {
        BlobType::BlockBlob => {
            let tmp = stage(&r, body, "put").await?;
            blocking(move || {
                let res = r.store.put_blob(
                    &r.account,
                    &r.container,
                    &r.blob,
                    NewBlob::Block(&tmp),
                    props,
                    md,
                    &r.access,
                );
                // Renamed into place on success; only a failed write leaves it behind. (An
                // unlink that finds nothing still takes the directory's lock.)
                if res.is_err() {
                    let _ = std::fs::remove_file(&tmp);
                }
                let m = res?;
                let mut b = with_etag(empty(StatusCode::CREATED), m.modified_ns)
                    .header("x-ms-request-server-encrypted", "true");
                if let Some(md5) = &m.props.content_md5 {
                    b = b.header("content-md5", md5);
                }
                done(b)
            })
            .await
        }
        BlobType::PageBlob | BlobType::AppendBlob => {
            let new = if kind == BlobType::PageBlob {
                let size = u64_header(&r, "x-ms-blob-content-length")?
                    .ok_or_else(|| BlobError::missing_header("x-ms-blob-content-length"))?;
                if size % PAGE != 0 {
                    return Err(BlobError::invalid_header(
                        "x-ms-blob-content-length",
                        &size.to_string(),
                    ));
                }
                let sequence = u64_header(&r, "x-ms-blob-sequence-number")?.unwrap_or(0);
                Some((size, sequence))
            } else {
                None
            };
            let b = body::body_bytes(body, 0).await?;
            if !b.is_empty() {
                return Err(BlobError::invalid_header(
                    "Content-Length",
                    &b.len().to_string(),
                ));
            }
            blocking(move || {
                let new = match new {
                    Some((size, sequence)) => NewBlob::Page { size, sequence },
                    None => NewBlob::Append,
                };
                let m = r.store.put_blob(
                    &r.account,
                    &r.container,
                    &r.blob,
                    new,
                    props,
                    md,
                    &r.access,
                )?;
                done(
                    with_etag(empty(StatusCode::CREATED), m.modified_ns)
                        .header("x-ms-request-server-encrypted", "true"),
                )
            })
            .await
        }
    }
}

pub(super) fn get_blob(r: &Req) -> Result<Response<Body>> {
    let range = range(&r.h)?;
    let (m, file) = r.store.open_read(
        &r.account,
        &r.container,
        &r.blob,
        r.q("snapshot"),
        &r.access,
    )?;
    let size = m.size;
    let mut b = blob_headers(empty(StatusCode::OK), &m);
    let (off, len) = match range {
        None => {
            if let Some(md5) = &m.props.content_md5 {
                b = b.header("content-md5", md5);
            }
            (0, size)
        }
        Some((_, a, end)) => {
            if a >= size {
                let e = BlobError::invalid_range();
                return Err(e);
            }
            let last = end.unwrap_or(u64::MAX).min(size - 1);
            if let Some(md5) = &m.props.content_md5 {
                b = b.header("x-ms-blob-content-md5", md5);
            }
            b = b
                .status(StatusCode::PARTIAL_CONTENT)
                .header("content-range", format!("bytes {a}-{last}/{size}"));
            (a, last - a + 1)
        }
    };
    if let Some(s) = r.q("snapshot") {
        b = b.header("x-ms-snapshot", s);
    }
    b = b.header("content-length", len);
    let body = if r.head {
        Body::empty()
    } else {
        body::file_body(file, off, len)
    };
    b.body(body).map_err(BlobError::internal)
}

pub(super) fn get_blob_metadata(r: &Req) -> Result<Response<Body>> {
    let (m, _) = r.store.read_meta(
        &r.account,
        &r.container,
        &r.blob,
        r.q("snapshot"),
        &r.access,
    )?;
    done(meta_headers(
        with_etag(empty(StatusCode::OK), m.modified_ns),
        &m.metadata,
    ))
}

pub(super) fn delete_blob(r: &Req) -> Result<Response<Body>> {
    let ds = match r.h("x-ms-delete-snapshots") {
        None => None,
        Some("include") => Some(DeleteSnapshots::Include),
        Some("only") => Some(DeleteSnapshots::Only),
        Some(v) => return Err(BlobError::invalid_header("x-ms-delete-snapshots", v)),
    };
    r.store.delete_blob(
        &r.account,
        &r.container,
        &r.blob,
        r.q("snapshot"),
        ds,
        &r.access,
    )?;
    done(empty(StatusCode::ACCEPTED).header("x-ms-delete-type-permanent", "true"))
}

pub(super) fn set_blob_props(r: &Req) -> Result<Response<Body>> {
    let mut m: Option<BlobMeta> = None;
    if let Some(size) = u64_header(r, "x-ms-blob-content-length")? {
        if size % PAGE != 0 {
            return Err(BlobError::invalid_header(
                "x-ms-blob-content-length",
                &size.to_string(),
            ));
        }
        m = Some(
            r.store
                .resize(&r.account, &r.container, &r.blob, size, &r.access)?,
        );
    }
    let props = http_props(&r.h, false);
    let seq_action = r.h("x-ms-sequence-number-action").map(str::to_string);
    let seq = u64_header(r, "x-ms-blob-sequence-number")?;
    if props.is_some() || seq_action.is_some() || m.is_none() {
        let ((), nm) =
            r.store
                .update_blob(&r.account, &r.container, &r.blob, &r.access, |_, m| {
                    if let Some(p) = props {
                        m.props = p;
                    }
                    match seq_action.as_deref() {
                        None => {}
                        Some("max") => m.sequence_number = m.sequence_number.max(seq.unwrap_or(0)),
                        Some("update") => m.sequence_number = seq.unwrap_or(0),
                        Some("increment") => m.sequence_number += 1,
                        Some(v) => {
                            return Err(BlobError::invalid_header("x-ms-sequence-number-action", v))
                        }
                    }
                    m.touch();
                    Ok(())
                })?;
        m = Some(nm);
    }
    let m = m.ok_or_else(BlobError::blob_not_found)?;
    let mut b = with_etag(empty(StatusCode::OK), m.modified_ns);
    if m.blob_type == BlobType::PageBlob {
        b = b.header("x-ms-blob-sequence-number", m.sequence_number);
    }
    done(b)
}

pub(super) fn set_blob_metadata(r: &Req) -> Result<Response<Body>> {
    let md = r.metadata()?;
    let ((), m) = r
        .store
        .update_blob(&r.account, &r.container, &r.blob, &r.access, |_, m| {
            m.metadata = md;
            m.touch();
            Ok(())
        })?;
    done(
        with_etag(empty(StatusCode::OK), m.modified_ns)
            .header("x-ms-request-server-encrypted", "true"),
    )
}

/// Receives a request body into a new staging file of the blob's container
/// (`.tmp/{what}-{uuid}`), for the store to take in; the container must exist.
async fn stage(r: &Req, body: Incoming, what: &str) -> Result<std::path::PathBuf> {
    if !r.store.container_exists(&r.account, &r.container) {
        return Err(BlobError::container_not_found());
    }
    let p = r.store.blob_paths(&r.account, &r.container, &r.blob);
    let tmp = p.tmp.join(format!("{what}-{}", uuid::Uuid::new_v4()));
    body::body_to_file(body, &tmp, &r.store).await?;
    Ok(tmp)
}

pub(super) async fn put_block(r: Req, body: Incoming) -> Result<Response<Body>> {
    let id = r
        .q("blockid")
        .ok_or_else(|| BlobError::invalid_query("blockid", ""))?
        .to_string();
    let tmp = stage(&r, body, "block").await?;
    blocking(move || {
        let res = r
            .store
            .put_block(&r.account, &r.container, &r.blob, &id, &tmp, &r.access);
        let _ = std::fs::remove_file(&tmp);
        res?;
        done(empty(StatusCode::CREATED).header("x-ms-request-server-encrypted", "true"))
    })
    .await
}

pub(super) fn put_block_list(r: &Req, body: &[u8]) -> Result<Response<Body>> {
    let list = super::xml_bodies::block_list(body)?;
    let props = http_props(&r.h, false).unwrap_or_default();
    let m = r.store.put_block_list(
        &r.account,
        &r.container,
        &r.blob,
        &list,
        props,
        r.metadata()?,
        &r.access,
    )?;
    done(
        with_etag(empty(StatusCode::CREATED), m.modified_ns)
            .header("x-ms-request-server-encrypted", "true"),
    )
}

pub(super) fn get_block_list(r: &Req) -> Result<Response<Body>> {
    let which = r
        .q("blocklisttype")
        .unwrap_or("committed")
        .to_ascii_lowercase();
    let (m, committed, uncommitted) = r.store.block_list(
        &r.account,
        &r.container,
        &r.blob,
        r.q("snapshot"),
        &r.access,
    )?;
    let mut w = xml::Writer::new();
    w.open("BlockList");
    let list = |w: &mut xml::Writer, tag: &str, blocks: &[crate::blob::store::Block]| {
        w.open(tag);
        for b in blocks {
            w.open("Block")
                .elem("Name", &b.id)
                .elem("Size", &b.size.to_string())
                .close("Block");
        }
        w.close(tag);
    };
    if which == "committed" || which == "all" {
        list(&mut w, "CommittedBlocks", &committed);
    }
    if which == "uncommitted" || which == "all" {
        list(&mut w, "UncommittedBlocks", &uncommitted);
    }
    let body = w.close("BlockList").finish();
    let mut b = empty(StatusCode::OK)
        .header("content-type", "application/xml")
        .header("content-length", body.len());
    if let Some(m) = &m {
        b = with_etag(b, m.modified_ns).header("x-ms-blob-content-length", m.size);
    }
    b.body(Body::from(body)).map_err(BlobError::internal)
}

pub(super) async fn put_page(r: Req, body: Incoming) -> Result<Response<Body>> {
    let range = page_range(&r, true)?.unwrap_or(0..0);
    let write = match r.h("x-ms-page-write") {
        Some(v) if v.eq_ignore_ascii_case("update") => true,
        Some(v) if v.eq_ignore_ascii_case("clear") => false,
        Some(v) => return Err(BlobError::invalid_header("x-ms-page-write", v)),
        None => return Err(BlobError::missing_header("x-ms-page-write")),
    };
    let len = range.end - range.start;
    if write && len > MAX_PAGE_WRITE {
        return Err(BlobError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "RequestBodyTooLarge",
            "The request body is too large and exceeds the maximum permissible limit.",
        ));
    }
    let data = body::body_bytes(body, if write { len as usize } else { 0 }).await?;
    if write && data.len() as u64 != len {
        return Err(BlobError::invalid_header(
            "Content-Length",
            &data.len().to_string(),
        ));
    }
    blocking(move || {
        let m = r.store.put_pages(
            &r.account,
            &r.container,
            &r.blob,
            range,
            write.then_some(&data[..]),
            &r.access,
        )?;
        done(
            with_etag(empty(StatusCode::CREATED), m.modified_ns)
                .header("x-ms-blob-sequence-number", m.sequence_number)
                .header("x-ms-request-server-encrypted", "true"),
        )
    })
    .await
}

pub(super) fn page_ranges(r: &Req) -> Result<Response<Body>> {
    let mut window = page_range(r, false)?;
    let marker = r.q("marker").filter(|m| !m.is_empty());
    if let Some(m) = marker {
        let start: u64 = m
            .parse()
            .map_err(|_| BlobError::invalid_query("marker", m))?;
        let w = window.unwrap_or(0..u64::MAX);
        window = Some(start.max(w.start)..w.end);
    }
    let max = match r.q("maxresults") {
        Some(_) => Some(max_results(r)?),
        None => None,
    };
    let (m, pages, clears) = r.store.page_ranges(
        &r.account,
        &r.container,
        &r.blob,
        r.q("snapshot"),
        r.q("prevsnapshot"),
        window,
        &r.access,
    )?;
    // Page and clear ranges interleaved by offset, as the cloud lists them.
    let mut all: Vec<(bool, Range<u64>)> = pages
        .into_iter()
        .map(|p| (true, p))
        .chain(clears.into_iter().map(|c| (false, c)))
        .collect();
    all.sort_by_key(|(_, r)| r.start);
    let mut next = None;
    if let Some(max) = max {
        if all.len() > max {
            next = Some(all[max].1.start.to_string());
            all.truncate(max);
        }
    }
    let mut w = xml::Writer::new();
    w.open("PageList");
    for (page, rg) in &all {
        let tag = if *page { "PageRange" } else { "ClearRange" };
        w.open(tag)
            .elem("Start", &rg.start.to_string())
            .elem("End", &(rg.end - 1).to_string())
            .close(tag);
    }
    if max.is_some() {
        w.opt("NextMarker", next.as_deref());
    }
    let body = w.close("PageList").finish();
    with_etag(empty(StatusCode::OK), m.modified_ns)
        .header("x-ms-blob-content-length", m.size)
        .header("content-type", "application/xml")
        .header("content-length", body.len())
        .body(Body::from(body))
        .map_err(BlobError::internal)
}

pub(super) fn snapshot(r: &Req) -> Result<Response<Body>> {
    let md = r.metadata()?;
    let (id, m) = r.store.snapshot(
        &r.account,
        &r.container,
        &r.blob,
        (!md.is_empty()).then_some(md),
        &r.access,
    )?;
    done(
        with_etag(empty(StatusCode::CREATED), m.modified_ns)
            .header("x-ms-snapshot", id)
            .header("x-ms-request-server-encrypted", "false"),
    )
}

pub(super) fn blob_lease(r: &Req) -> Result<Response<Body>> {
    let op = lease_op(r)?;
    let (out, m) = r
        .store
        .lease_blob(&r.account, &r.container, &r.blob, &op, &r.access.cond)?;
    lease_response(&op, &out, m.modified_ns)
}

pub(super) fn append_block(r: &Req, data: &[u8]) -> Result<Response<Body>> {
    let (off, m) = r
        .store
        .append_block(&r.account, &r.container, &r.blob, data, &r.access)?;
    done(
        with_etag(empty(StatusCode::CREATED), m.modified_ns)
            .header("x-ms-blob-append-offset", off)
            .header("x-ms-blob-committed-block-count", m.append_blocks)
            .header("x-ms-request-server-encrypted", "true"),
    )
}
