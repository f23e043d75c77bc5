//! The image catalog: publishers → offers → skus → versions, as the cloud's image API lists them.
//!
//! An image version is a folder `images/{publisher}/{offer}/{sku}/{version}/` in the state dir
//! holding its files and a `manifest.json` with their sha256. Folders appear atomically (built
//! aside, then renamed), so the catalog is simply what is on disk. Unpublished versions are moved
//! under `images/.unpublished/` (see `publish.rs`); `verify.rs` checks the files against the
//! manifest before a VM is made from them.

pub mod build;
pub mod import;
pub mod publish;
pub mod verify;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("'{0}' is not an image URN: expected Publisher:Offer:Sku:Version (e.g. vmnode:tiny:1:latest) or an alias (`vmnode vm image list` shows them)")]
    BadUrn(String),
    /// The cloud's `PlatformImageNotFound` text, then what this node has instead.
    #[error("The platform image '{urn}' is not available. Verify that all fields in the storage profile are correct. For more details about storage profile information, please refer to https://aka.ms/storageprofile. {available}")]
    NotFound { urn: String, available: String },
    #[error("The image {urn} is corrupted: its file {file} has sha256 {actual}, but its manifest says {expected}. {fix}")]
    Corrupted {
        urn: String,
        file: String,
        expected: String,
        actual: String,
        fix: String,
    },
    #[error("The image {urn} is incomplete: cannot read its file {}. {fix}", path.display())]
    FileMissing {
        urn: String,
        path: PathBuf,
        fix: String,
        #[source]
        source: std::io::Error,
    },
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
    /// The manifest is a version of this reference's publisher, offer and sku.
    pub fn same_sku(&self, m: &Manifest) -> bool {
        m.publisher.eq_ignore_ascii_case(&self.publisher)
            && m.offer.eq_ignore_ascii_case(&self.offer)
            && m.sku.eq_ignore_ascii_case(&self.sku)
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
    /// How the image's OS is provisioned from `osProfile` (absent: `agent`).
    #[serde(default, skip_serializing_if = "Provisioning::is_agent")]
    pub provisioning: Provisioning,
    /// The image's init can wait at a boot snapshot point and take a VM's identity from the
    /// guest agent there (`vm/snapshot.rs`), so new VMs of it may resume instead of boot.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub boot_snapshot: bool,
}

/// How an image takes its `osProfile` (host name, admin user, keys, customData): what the image
/// declares it can do, in its catalog entry and manifest.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Provisioning {
    /// vmnode does it through the image's qemu-guest-agent (`vm/provision.rs`), doing what the
    /// guest's tools allow; every vmnode image carries the agent.
    #[default]
    Agent,
    /// The image's cloud-init does it from a seed vmnode attaches.
    CloudInit,
    /// Nothing is provisioned.
    None,
}

impl Provisioning {
    pub fn is_agent(&self) -> bool {
        *self == Provisioning::Agent
    }
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
    /// The kernel QEMU boots: the uncompressed ELF through its PVH entry (`boot: pvh`, fast
    /// under TCG), or the bzImage through the firmware's Linux loader (`boot: bzimage`: seconds
    /// slower, but the kernel keeps the VGA text console from the first line).
    pub fn kernel(&self) -> PathBuf {
        if self.manifest.boot.eq_ignore_ascii_case("bzimage") {
            self.dir.join("vmlinuz")
        } else {
            self.dir.join("vmlinux")
        }
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

/// Image aliases, as `az vm image list` shows them: each recipe's name stands for the newest
/// version of its sku. Returns (alias, `Publisher:Offer:Sku`).
pub fn aliases() -> Vec<(String, String)> {
    build::recipes()
        .map(|all| {
            all.into_iter()
                .map(|(name, r)| (name, format!("{}:{}:{}", r.publisher, r.offer, r.sku)))
                .collect()
        })
        .unwrap_or_default()
}

/// An image given as a URN or an alias (`tiny` = `vmnode:tiny:1:latest`).
pub fn parse_image(s: &str) -> Result<ImageRef, CatalogError> {
    if !s.contains(':') {
        if let Some((_, sku)) = aliases().iter().find(|(a, _)| a.eq_ignore_ascii_case(s)) {
            return ImageRef::parse_urn(&format!("{sku}:latest"));
        }
    }
    ImageRef::parse_urn(s)
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
    let same_sku: Vec<&ImageVersion> = all.iter().filter(|i| r.same_sku(&i.manifest)).collect();
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
        available: what_exists(r, &all, &same_sku),
    })
}

/// The end of a not-found message: the versions the sku has, or else what the node has.
fn what_exists(r: &ImageRef, all: &[ImageVersion], same_sku: &[&ImageVersion]) -> String {
    let sku = format!("{}:{}:{}", r.publisher, r.offer, r.sku);
    if !same_sku.is_empty() {
        let versions: Vec<&str> = same_sku
            .iter()
            .map(|i| i.manifest.version.as_str())
            .collect();
        return format!(
            "Versions of {sku} on this node: {} (or `latest`).",
            versions.join(", ")
        );
    }
    if all.is_empty() {
        return "No image is published on this node; build one with `vmnode image build tiny`."
            .to_string();
    }
    format!(
        "No version of {sku} is published on this node; its images are: {}.",
        all.iter()
            .map(ImageVersion::urn)
            .collect::<Vec<_>>()
            .join(", ")
    )
}

/// Resolves the exact version a VM was created from, for booting it again: the catalog first,
/// then the versions unpublished since (the VM keeps working after its image was withdrawn, as
/// in the cloud; of several withdrawn copies of one version, the latest withdrawn).
pub fn resolve_pinned(images: &Path, r: &ImageRef) -> Result<ImageVersion, CatalogError> {
    match resolve(images, r) {
        Err(CatalogError::NotFound { .. }) => {}
        other => return other,
    }
    publish::unpublished(images, r)?
        .into_iter()
        .next_back()
        .ok_or_else(|| {
            let all = list(images).unwrap_or_default();
            CatalogError::NotFound {
                urn: r.urn(),
                available: what_exists(r, &all, &[]),
            }
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
            provisioning: Default::default(),
            boot_snapshot: false,
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
        assert!(
            e.starts_with("The platform image 'vmnode:tiny:1:2.0.0' is not available."),
            "{e}"
        );
        assert!(
            e.ends_with("Versions of vmnode:tiny:1 on this node: 1.0.9, 1.0.10 (or `latest`)."),
            "{e}"
        );
        let r = ImageRef::parse_urn("vmnode:other:1:latest").unwrap();
        let e = resolve(dir.path(), &r).unwrap_err().to_string();
        assert!(
            e.contains("images are: vmnode:tiny:1:1.0.9, vmnode:tiny:1:1.0.10."),
            "{e}"
        );
    }

    #[test]
    fn aliases_are_recipe_names() {
        assert_eq!(parse_image("tiny").unwrap().urn(), "vmnode:tiny:1:latest");
        assert_eq!(parse_image("vmnode:tiny:1:1.0.0").unwrap().version, "1.0.0");
        assert!(parse_image("nosuchalias").is_err());
    }

    #[test]
    fn urn_must_have_four_parts() {
        assert!(ImageRef::parse_urn("vmnode:tiny:1").is_err());
        assert!(ImageRef::parse_urn("a::b:c").is_err());
    }
}
