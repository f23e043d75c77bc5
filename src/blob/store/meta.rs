//! What the store keeps about blobs and containers besides their bytes.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::clock::now_ns;
use crate::blob::lease::Lease;
use crate::blob::pages::RangeSet;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[allow(clippy::enum_variant_names)] // the cloud's names
pub enum BlobType {
    BlockBlob,
    PageBlob,
    AppendBlob,
}

impl BlobType {
    pub fn as_str(self) -> &'static str {
        match self {
            BlobType::BlockBlob => "BlockBlob",
            BlobType::PageBlob => "PageBlob",
            BlobType::AppendBlob => "AppendBlob",
        }
    }
    pub fn parse(s: &str) -> Option<BlobType> {
        match s {
            "BlockBlob" => Some(BlobType::BlockBlob),
            "PageBlob" => Some(BlobType::PageBlob),
            "AppendBlob" => Some(BlobType::AppendBlob),
            _ => None,
        }
    }
}

/// The standard HTTP properties a blob keeps.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HttpProps {
    pub content_type: Option<String>,
    pub content_encoding: Option<String>,
    pub content_language: Option<String>,
    pub content_md5: Option<String>,
    pub cache_control: Option<String>,
    pub content_disposition: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Block {
    /// The block id as the client sent it (base64).
    pub id: String,
    pub size: u64,
}

/// Everything about a blob except its bytes.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BlobMeta {
    pub name: String,
    pub blob_type: BlobType,
    pub created_ns: u64,
    /// Last change of content, properties or metadata; the ETag is derived from it.
    pub modified_ns: u64,
    /// Content length (a page blob's declared size).
    pub size: u64,
    #[serde(default)]
    pub props: HttpProps,
    /// User metadata (`x-ms-meta-*`), names as the client cased them.
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    #[serde(default)]
    pub lease: Lease,
    #[serde(default)]
    pub sequence_number: u64,
    /// Page blob: pages written through the API.
    #[serde(default)]
    pub pages: RangeSet,
    /// Page blob written by others too (a VM's disk): the file's data extents count as pages,
    /// minus `cleared` (sub-block pieces the API cleared).
    #[serde(default)]
    pub fs_tracked: bool,
    #[serde(default)]
    pub cleared: RangeSet,
    /// Page blob: pages written or cleared since each live snapshot (for `prevsnapshot`).
    #[serde(default)]
    pub changes: BTreeMap<String, RangeSet>,
    /// Block blob: the committed block list, in order.
    #[serde(default)]
    pub blocks: Vec<Block>,
    /// Append blob: committed block count.
    #[serde(default)]
    pub append_blocks: u64,
    /// Set on a snapshot's own metadata.
    #[serde(default)]
    pub snapshot: Option<String>,
    /// The VM (id) whose disk this is, while it holds the disk's lease.
    #[serde(default)]
    pub disk_of: Option<String>,
}

impl BlobMeta {
    pub fn new(name: &str, blob_type: BlobType, size: u64) -> Self {
        let now = now_ns();
        BlobMeta {
            name: name.to_string(),
            blob_type,
            created_ns: now,
            modified_ns: now,
            size,
            props: HttpProps::default(),
            metadata: BTreeMap::new(),
            lease: Lease::default(),
            sequence_number: 0,
            pages: RangeSet::new(),
            fs_tracked: false,
            cleared: RangeSet::new(),
            changes: BTreeMap::new(),
            blocks: Vec::new(),
            append_blocks: 0,
            snapshot: None,
            disk_of: None,
        }
    }

    /// Marks a change: a fresh, strictly newer Last-Modified/ETag.
    pub fn touch(&mut self) {
        self.modified_ns = now_ns().max(self.modified_ns + 1);
    }
}

/// Public access level of a container.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum PublicAccess {
    #[default]
    Off,
    Blob,
    Container,
}

impl PublicAccess {
    pub fn header(self) -> Option<&'static str> {
        match self {
            PublicAccess::Off => None,
            PublicAccess::Blob => Some("blob"),
            PublicAccess::Container => Some("container"),
        }
    }
    pub fn parse(s: &str) -> Option<PublicAccess> {
        match s.to_ascii_lowercase().as_str() {
            "" | "off" | "private" | "none" => Some(PublicAccess::Off),
            "blob" => Some(PublicAccess::Blob),
            "container" => Some(PublicAccess::Container),
            _ => None,
        }
    }
}

/// A stored access policy (`<SignedIdentifier>`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessPolicy {
    pub id: String,
    pub start: Option<String>,
    pub expiry: Option<String>,
    pub permission: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ContainerMeta {
    pub name: String,
    pub created_ns: u64,
    pub modified_ns: u64,
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    #[serde(default)]
    pub public_access: PublicAccess,
    #[serde(default)]
    pub identifiers: Vec<AccessPolicy>,
    #[serde(default)]
    pub lease: Lease,
}

impl ContainerMeta {
    pub fn touch(&mut self) {
        self.modified_ns = now_ns().max(self.modified_ns + 1);
    }
}
