//! Handlers of container operations.

use hyper::{Response, StatusCode};

use super::body::Body;
use super::request::{lease_op, max_results, Req};
use super::response::{
    container_headers, done, empty, lease_response, listing, with_etag, xml_response,
};
use super::xml;
use crate::blob::error::{BlobError, Result};
use crate::blob::store::{etag, http_date, now_ms, ContainerMeta, PublicAccess};

pub(super) fn list_containers(r: &Req) -> Result<Response<Body>> {
    let prefix = r.q("prefix").unwrap_or("");
    let marker = r.q("marker").filter(|m| !m.is_empty());
    let max = max_results(r)?;
    let with_meta = r
        .q("include")
        .is_some_and(|i| i.split(',').any(|x| x == "metadata"));
    let all = r.store.list_containers(&r.account)?;
    let mut w = listing(r, "", prefix, marker, max);
    w.open("Containers");
    let mut next = None;
    for (n, c) in all
        .iter()
        .filter(|c| c.name.starts_with(prefix) && marker.is_none_or(|m| c.name.as_str() >= m))
        .enumerate()
    {
        if n == max {
            next = Some(c.name.clone());
            break;
        }
        w.open("Container").elem("Name", &c.name).open("Properties");
        w.elem("Last-Modified", &http_date(c.modified_ns))
            .elem("Etag", &etag(c.modified_ns));
        let now = now_ms();
        let st = c.lease.state(now);
        w.elem("LeaseStatus", st.status())
            .elem("LeaseState", st.as_str());
        if let Some(d) = c.lease.duration_header(now) {
            w.elem("LeaseDuration", d);
        }
        if let Some(a) = c.public_access.header() {
            w.elem("PublicAccess", a);
        }
        w.elem("DefaultEncryptionScope", "$account-encryption-key")
            .elem("DenyEncryptionScopeOverride", "false")
            .elem("HasImmutabilityPolicy", "false")
            .elem("HasLegalHold", "false")
            .close("Properties");
        if with_meta {
            w.metadata(&c.metadata);
        }
        w.close("Container");
    }
    w.close("Containers").opt("NextMarker", next.as_deref());
    Ok(xml_response(
        StatusCode::OK,
        w.close("EnumerationResults").finish(),
    ))
}

pub(super) fn create_container(r: &Req) -> Result<Response<Body>> {
    let access = match r.h("x-ms-blob-public-access") {
        None => PublicAccess::Off,
        Some(v) => PublicAccess::parse(v)
            .ok_or_else(|| BlobError::invalid_header("x-ms-blob-public-access", v))?,
    };
    let m = r
        .store
        .create_container(&r.account, &r.container, r.metadata()?, access)?;
    done(with_etag(empty(StatusCode::CREATED), m.modified_ns))
}

pub(super) fn check_container_lease(m: &ContainerMeta, r: &Req, write: bool) -> Result<()> {
    let now = now_ms();
    let given = r.access.lease_id.as_deref();
    let res = if write {
        m.lease.check_write(now, given)
    } else {
        m.lease.check_read(now, given)
    };
    res.map_err(|e| BlobError::lease_access(e, true))
}

pub(super) fn container_props(r: &Req) -> Result<Response<Body>> {
    let m = r.store.load_container(&r.account, &r.container)?;
    check_container_lease(&m, r, false)?;
    done(container_headers(empty(StatusCode::OK), &m))
}

pub(super) fn delete_container(r: &Req) -> Result<Response<Body>> {
    r.store.delete_container(&r.account, &r.container, |m| {
        // Deleting a leased container needs its lease id; one that is not leased takes none.
        if m.lease.state(now_ms()).status() == "locked" || r.access.lease_id.is_some() {
            check_container_lease(m, r, true)?;
        }
        r.access.cond.check(m.modified_ns, false)
    })?;
    done(empty(StatusCode::ACCEPTED))
}

pub(super) fn set_container_metadata(r: &Req) -> Result<Response<Body>> {
    let md = r.metadata()?;
    let m = r.store.update_container(&r.account, &r.container, |m| {
        check_container_lease(m, r, false)?;
        r.access.cond.check(m.modified_ns, false)?;
        m.metadata = md;
        m.touch();
        Ok((m.clone(), true))
    })?;
    done(with_etag(empty(StatusCode::OK), m.modified_ns))
}

pub(super) fn get_acl(r: &Req) -> Result<Response<Body>> {
    let m = r.store.load_container(&r.account, &r.container)?;
    check_container_lease(&m, r, false)?;
    let mut w = xml::Writer::new();
    w.open("SignedIdentifiers");
    for p in &m.identifiers {
        w.open("SignedIdentifier")
            .elem("Id", &p.id)
            .open("AccessPolicy");
        if let Some(s) = &p.start {
            w.elem("Start", s);
        }
        if let Some(s) = &p.expiry {
            w.elem("Expiry", s);
        }
        if let Some(s) = &p.permission {
            w.elem("Permission", s);
        }
        w.close("AccessPolicy").close("SignedIdentifier");
    }
    let body = w.close("SignedIdentifiers").finish();
    let mut b = with_etag(empty(StatusCode::OK), m.modified_ns)
        .header("content-type", "application/xml")
        .header("content-length", body.len());
    if let Some(a) = m.public_access.header() {
        b = b.header("x-ms-blob-public-access", a);
    }
    b.body(if r.head {
        Body::empty()
    } else {
        Body::from(body)
    })
    .map_err(BlobError::internal)
}

pub(super) fn set_acl(r: &Req, body: &[u8]) -> Result<Response<Body>> {
    let access = match r.h("x-ms-blob-public-access") {
        None => PublicAccess::Off,
        Some(v) => PublicAccess::parse(v)
            .ok_or_else(|| BlobError::invalid_header("x-ms-blob-public-access", v))?,
    };
    let ids = super::xml_bodies::signed_identifiers(body)?;
    let m = r.store.update_container(&r.account, &r.container, |m| {
        check_container_lease(m, r, false)?;
        r.access.cond.check(m.modified_ns, false)?;
        m.public_access = access;
        m.identifiers = ids;
        m.touch();
        Ok((m.clone(), true))
    })?;
    done(with_etag(empty(StatusCode::OK), m.modified_ns))
}

pub(super) fn container_lease(r: &Req) -> Result<Response<Body>> {
    let op = lease_op(r)?;
    let (out, m) = r.store.update_container(&r.account, &r.container, |m| {
        r.access.cond.check(m.modified_ns, false)?;
        let (l, out) = m.lease.apply(now_ms(), &op).map_err(BlobError::lease)?;
        m.lease = l;
        Ok(((out, m.modified_ns), true))
    })?;
    lease_response(&op, &out, m)
}
