//! The image catalog: publishers → offers → skus → versions, as the cloud's image API lists them.
//!
//! An image version is a folder `images/{publisher}/{offer}/{sku}/{version}/` in the state dir
//! holding its files and a `manifest.json` with their sha256. Folders appear atomically (built
//! aside, then renamed), so the catalog is simply what is on disk.

pub mod build;
pub mod import;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("'{0}' is not an image URN: expected Publisher:Offer:Sku:Version (e.g. vmnode:tiny:1:latest)")]
    BadUrn(String),
    #[error("image {urn} not found; available: {available}")]
    NotFound { urn: String, available: String },
    #[error("cannot read the image store at {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// A reference as a VM's `storageProfile.imageReference` carries it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ImageRef {
    pub publisher: String,
    pub offer: String,
    pub sku: String,
    pub version: String,
}

impl ImageRef {
    pub fn parse_urn(urn: &str) -> Result<ImageRef, CatalogError> {
        let parts: Vec<&str> = urn.split(':').collect();
        if parts.len() != 4 || parts.iter().any(|p| p.is_empty()) {
            return Err(CatalogError::BadUrn(urn.into()));
        }
        Ok(ImageRef {
            publisher: parts[0].into(),
            offer: parts[1].into(),
            sku: parts[2].into(),
            version: parts[3].into(),
        })
    }
    pub fn urn(&self) -> String {
        format!(
            "{}:{}:{}:{}",
            self.publisher, self.offer, self.sku, self.version
        )
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FileEntry {
    pub sha256: String,
    pub size: u64,
}

/// `manifest.json` of one image version.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    pub publisher: String,
    pub offer: String,
    pub sku: String,
    pub version: String,
    pub boot: String,
    pub cmdline: String,
    pub kernel_release: String,
    pub os_type: String,
    pub files: std::collections::BTreeMap<String, FileEntry>,
    pub built_at: String,
    /// The image carries cloud-init (NoCloud): each VM gets a `cidata` seed from its osProfile.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cloud_init: bool,
}

/// `Manifest::boot` of an image without a kernel: the VM boots from its disk through firmware.
pub const BOOT_FIRMWARE: &str = "firmware";

/// One image version found in the store.
#[derive(Clone, Debug)]
pub struct ImageVersion {
    pub manifest: Manifest,
    pub dir: PathBuf,
}

impl ImageVersion {
    pub fn urn(&self) -> String {
        let m = &self.manifest;
        format!("{}:{}:{}:{}", m.publisher, m.offer, m.sku, m.version)
    }
    pub fn kernel(&self) -> PathBuf {
        self.dir.join("vmlinux")
    }
    pub fn initrd(&self) -> PathBuf {
        self.dir.join("initrd.cpio")
    }
    pub fn disk(&self) -> PathBuf {
        self.dir.join("disk.raw")
    }
    /// Boots through firmware (SeaBIOS) from its disk rather than from a kernel file.
    pub fn firmware_boot(&self) -> bool {
        self.manifest.boot.eq_ignore_ascii_case(BOOT_FIRMWARE)
    }
}

/// Compares versions the way the cloud orders them: dot-separated integers, then text.
pub fn version_key(v: &str) -> Vec<(u64, String)> {
    v.split('.')
        .map(|p| (p.parse::<u64>().unwrap_or(0), p.to_string()))
        .collect()
}

/// Every image version in the store, sorted by URN and version.
pub fn list(images: &Path) -> Result<Vec<ImageVersion>, CatalogError> {
    let mut out = Vec::new();
    let io = |p: &Path, e| CatalogError::Io {
        path: p.to_path_buf(),
        source: e,
    };
    if !images.exists() {
        return Ok(out);
    }
    // publisher/offer/sku/version/manifest.json
    let mut stack = vec![(images.to_path_buf(), 0)];
    while let Some((dir, depth)) = stack.pop() {
        for entry in std::fs::read_dir(&dir).map_err(|e| io(&dir, e))?.flatten() {
            let path = entry.path();
            let hidden = entry.file_name().to_string_lossy().starts_with('.');
            if !path.is_dir() || hidden {
                continue;
            }
            if depth < 3 {
                stack.push((path, depth + 1));
                continue;
            }
            let mpath = path.join("manifest.json");
            match std::fs::read(&mpath).map(|b| serde_json::from_slice::<Manifest>(&b)) {
                Ok(Ok(manifest)) => out.push(ImageVersion {
                    manifest,
                    dir: path,
                }),
                Ok(Err(e)) => {
                    tracing::warn!(path = %mpath.display(), error = %e, "bad image manifest")
                }
                Err(_) => {}
            }
        }
    }
    out.sort_by(|a, b| {
        let (ma, mb) = (&a.manifest, &b.manifest);
        (
            ma.publisher.to_lowercase(),
            ma.offer.to_lowercase(),
            ma.sku.to_lowercase(),
            version_key(&ma.version),
        )
            .cmp(&(
                mb.publisher.to_lowercase(),
                mb.offer.to_lowercase(),
                mb.sku.to_lowercase(),
                version_key(&mb.version),
            ))
    });
    Ok(out)
}

/// Resolves a reference (version `latest` = the highest) to an image in the store.
pub fn resolve(images: &Path, r: &ImageRef) -> Result<ImageVersion, CatalogError> {
    let all = list(images)?;
    let same_sku: Vec<&ImageVersion> = all
        .iter()
        .filter(|i| {
            let m = &i.manifest;
            m.publisher.eq_ignore_ascii_case(&r.publisher)
                && m.offer.eq_ignore_ascii_case(&r.offer)
                && m.sku.eq_ignore_ascii_case(&r.sku)
        })
        .collect();
    let found = if r.version.eq_ignore_ascii_case("latest") {
        same_sku.last().copied()
    } else {
        same_sku
            .iter()
            .copied()
            .find(|i| i.manifest.version == r.version)
    };
    found.cloned().ok_or_else(|| CatalogError::NotFound {
        urn: r.urn(),
        available: if all.is_empty() {
            "none (build one with `vmnode image build tiny`)".into()
        } else {
            all.iter()
                .map(ImageVersion::urn)
                .collect::<Vec<_>>()
                .join(", ")
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(root: &Path, v: &str) {
        let dir = root.join("vmnode/tiny/1").join(v);
        std::fs::create_dir_all(&dir).unwrap();
        let m = Manifest {
            publisher: "vmnode".into(),
            offer: "tiny".into(),
            sku: "1".into(),
            version: v.into(),
            boot: "pvh".into(),
            cmdline: String::new(),
            kernel_release: String::new(),
            os_type: "Linux".into(),
            files: Default::default(),
            built_at: String::new(),
            cloud_init: false,
        };
        std::fs::write(dir.join("manifest.json"), serde_json::to_vec(&m).unwrap()).unwrap();
    }

    #[test]
    fn latest_is_the_highest_numeric_version() {
        let dir = tempfile::tempdir().unwrap();
        put(dir.path(), "1.0.9");
        put(dir.path(), "1.0.10");
        let r = ImageRef::parse_urn("VMNODE:tiny:1:latest").unwrap();
        assert_eq!(resolve(dir.path(), &r).unwrap().manifest.version, "1.0.10");
        let r = ImageRef::parse_urn("vmnode:tiny:1:1.0.9").unwrap();
        assert_eq!(resolve(dir.path(), &r).unwrap().manifest.version, "1.0.9");
        let r = ImageRef::parse_urn("vmnode:tiny:1:2.0.0").unwrap();
        let e = resolve(dir.path(), &r).unwrap_err().to_string();
        assert!(e.contains("vmnode:tiny:1:1.0.10"), "{e}");
    }

    #[test]
    fn urn_must_have_four_parts() {
        assert!(ImageRef::parse_urn("vmnode:tiny:1").is_err());
        assert!(ImageRef::parse_urn("a::b:c").is_err());
    }
}
