//! The XML request bodies clients send (Put Block List, Set Container ACL), read within the
//! cloud's limits and refused with the cloud's codes before anything is stored:
//!
//! - not XML, not the expected elements, nested too deep, or more signed identifiers than the
//!   cloud keeps: `400 InvalidXmlDocument`;
//! - a well-formed body with a bad value (a block id that is not base64 of 1 to 64 bytes, an
//!   identifier's id empty or over 64 characters): `400 InvalidXmlNodeValue`;
//! - more than 50,000 blocks: `400 BlockListTooLong`; a body over its byte cap: `413
//!   RequestBodyTooLarge`.
//!
//! The limits go to the reader ([`xml::Limits`]), so an oversized or deep body is refused while it
//! is read, not after a tree of it is built.

use base64::Engine;

use super::xml::{self, Limits, XmlError};
use crate::blob::blobs::BlockRef;
use crate::blob::error::{BlobError, Result};
use crate::blob::store::AccessPolicy;

/// The most blocks a block list may name (and a block blob may have committed).
pub const MAX_BLOCKS: usize = 50_000;
/// A block list's byte cap: 50,000 of the longest entries (`<Uncommitted>`, an 88-character id,
/// the closing tag: 115 bytes) with room for indentation, and no more.
pub const MAX_BLOCK_LIST_BYTES: usize = 8 << 20;
/// The most signed identifiers (stored access policies) a container keeps.
pub const MAX_IDENTIFIERS: usize = 5;
/// A Set Container ACL body's byte cap: five identifiers take well under 2 KiB.
pub const MAX_ACL_BYTES: usize = 64 << 10;
/// The longest signed identifier id, in characters.
const MAX_ID_CHARS: usize = 64;

const BLOCK_LIST: Limits = Limits {
    bytes: MAX_BLOCK_LIST_BYTES,
    // BlockList > Latest|Committed|Uncommitted.
    depth: 2,
    elements: MAX_BLOCKS + 1,
};

const ACL: Limits = Limits {
    bytes: MAX_ACL_BYTES,
    // SignedIdentifiers > SignedIdentifier > AccessPolicy > Start|Expiry|Permission.
    depth: 4,
    // Six identifiers' worth, so a sixth is refused as too many rather than as malformed.
    elements: 1 + (MAX_IDENTIFIERS + 1) * 6,
};

/// The cloud's answer for a document the reader refused. `too_many` is what too many elements
/// means for this body.
fn refused(e: XmlError, too_many: fn() -> BlobError) -> BlobError {
    match e {
        XmlError::TooLarge(_) => BlobError::body_too_large(),
        XmlError::TooManyElements(_) => too_many(),
        XmlError::Malformed(_) | XmlError::TooDeep(_) => BlobError::invalid_xml(),
    }
}

fn utf8(body: &[u8], cap: usize) -> Result<&str> {
    if body.len() > cap {
        return Err(BlobError::body_too_large());
    }
    std::str::from_utf8(body).map_err(|_| BlobError::invalid_xml())
}

/// Whether a block id is what Put Block takes: base64 of 1 to 64 bytes.
pub fn valid_block_id(id: &str) -> bool {
    base64::engine::general_purpose::STANDARD
        .decode(id)
        .is_ok_and(|raw| !raw.is_empty() && raw.len() <= 64)
}

/// A Put Block List body: the blocks to commit, in order.
pub fn block_list(body: &[u8]) -> Result<Vec<(BlockRef, String)>> {
    let text = utf8(body, MAX_BLOCK_LIST_BYTES)?;
    let too_many = || BlobError::block_list_too_long(MAX_BLOCKS);
    let doc = xml::parse_limited(text, &BLOCK_LIST).map_err(|e| refused(e, too_many))?;
    if doc.name != "BlockList" {
        return Err(BlobError::invalid_xml());
    }
    let mut list = Vec::with_capacity(doc.children.len());
    for c in &doc.children {
        let kind = match c.name.as_str() {
            "Committed" => BlockRef::Committed,
            "Uncommitted" => BlockRef::Uncommitted,
            "Latest" => BlockRef::Latest,
            _ => return Err(BlobError::invalid_xml()),
        };
        let id = c.text.trim();
        if !valid_block_id(id) {
            return Err(BlobError::invalid_xml_node(&c.name, id));
        }
        list.push((kind, id.to_string()));
    }
    Ok(list)
}

/// A Set Container ACL body: the container's stored access policies (none for an empty body).
pub fn signed_identifiers(body: &[u8]) -> Result<Vec<AccessPolicy>> {
    let text = utf8(body, MAX_ACL_BYTES)?;
    if text.trim().is_empty() {
        return Ok(Vec::new());
    }
    let doc = xml::parse_limited(text, &ACL).map_err(|e| refused(e, BlobError::invalid_xml))?;
    if doc.name != "SignedIdentifiers" {
        return Err(BlobError::invalid_xml());
    }
    let mut ids = Vec::new();
    for si in &doc.children {
        if si.name != "SignedIdentifier" {
            return Err(BlobError::invalid_xml());
        }
        // The cloud says "XML specified is not syntactically valid" for a sixth identifier.
        if ids.len() == MAX_IDENTIFIERS {
            return Err(BlobError::invalid_xml());
        }
        let id = si.child_text("Id").unwrap_or("").trim();
        if id.is_empty() || id.chars().count() > MAX_ID_CHARS {
            return Err(BlobError::invalid_xml_node("Id", id));
        }
        let ap = si.child("AccessPolicy");
        let field = |n: &str| {
            ap.and_then(|a| a.child_text(n))
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from)
        };
        ids.push(AccessPolicy {
            id: id.to_string(),
            start: field("Start"),
            expiry: field("Expiry"),
            permission: field("Permission"),
        });
    }
    Ok(ids)
}

#[cfg(test)]
mod tests;
