//! `vmnode image publish|unpublish`: versions in and out of the catalog, without the daemon.
//!
//! Publishing copies an image's files (reflink where the filesystem has it, else a sparse copy:
//! a published version owns its files, so damage to one cannot spread to another) into a hidden
//! folder beside the target, checks the copy against the manifest (stamping it, so the first VM
//! made from it does not hash again), and renames it into place; the rename refuses to replace an
//! existing version. Unpublishing renames the version folder to
//! `images/.unpublished/{p}/{o}/{s}/{v}@{nanos}`: new VMs cannot use it; VMs made from it keep
//! their OS disks (clones) and can still boot its kernel ([`super::resolve_pinned`]).

use std::path::{Path, PathBuf};

use serde_json::Value;

use super::{verify, CatalogError, ImageRef, ImageVersion, Manifest};

/// Where unpublished versions go, under the images dir.
pub const UNPUBLISHED: &str = ".unpublished";

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error("'{0}' needs an exact version Major.Minor.Patch (digits, e.g. 1.0.6), as the cloud's image versions are")]
    BadVersion(String),
    #[error("image {0} is already published; choose another version, or unpublish it first (`vmnode image unpublish --urn {0}`)")]
    Exists(String),
    #[error("image {urn} is not published, so there is nothing to unpublish. {available} See `vmnode image list`.")]
    NotPublished { urn: String, available: String },
    #[error("'{0}' is neither an image folder nor an image URN Publisher:Offer:Sku:Version; `--from` takes either (a disk file is brought in with `vmnode image import`)")]
    BadSource(String),
    #[error("{} is not an image folder: it has no manifest.json. `--from` takes an image version's folder (a build in the cache, an unpublished version) or a published URN; a disk file is brought in with `vmnode image import`", .0.display())]
    NotAnImageDir(PathBuf),
    #[error("bad image manifest {}", path.display())]
    Manifest {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("{what} {}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn io<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> PublishError + 'a {
    move |source| PublishError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// What `--from` names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// An image version's folder (files + manifest.json) anywhere.
    Dir(PathBuf),
    /// A version in this catalog (`latest` allowed).
    Urn(ImageRef),
}

impl Source {
    /// A path that exists is a folder; otherwise it must be a URN.
    pub fn parse(s: &str) -> Result<Source, PublishError> {
        if Path::new(s).exists() {
            return Ok(Source::Dir(s.into()));
        }
        ImageRef::parse_urn(s)
            .map(Source::Urn)
            .map_err(|_| PublishError::BadSource(s.into()))
    }
}

/// Cloud image versions are three dot-separated integers.
fn check_version(r: &ImageRef) -> Result<(), PublishError> {
    let parts: Vec<&str> = r.version.split('.').collect();
    let ok = parts.len() == 3
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.len() <= 10 && p.bytes().all(|b| b.is_ascii_digit()));
    if ok {
        Ok(())
    } else {
        Err(PublishError::BadVersion(r.urn()))
    }
}

/// The published version `r` names exactly (publisher, offer and sku without regard to case).
fn find_exact(images: &Path, r: &ImageRef) -> Result<Option<ImageVersion>, CatalogError> {
    Ok(super::list(images)?
        .into_iter()
        .find(|i| r.same_sku(&i.manifest) && i.manifest.version == r.version))
}

/// `parent/name`, reusing an existing entry that differs only in case (one folder per name).
fn child(parent: &Path, name: &str) -> PathBuf {
    std::fs::read_dir(parent)
        .ok()
        .and_then(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .find(|n| n.eq_ignore_ascii_case(name))
        })
        .map(|n| parent.join(n))
        .unwrap_or_else(|| parent.join(name))
}

fn sku_dir(root: &Path, r: &ImageRef) -> PathBuf {
    let p = child(root, &r.publisher);
    let o = child(&p, &r.offer);
    child(&o, &r.sku)
}

/// Publishes the image `from` as version `target` (an exact version). Returns the new version.
pub fn publish(
    images: &Path,
    target: &ImageRef,
    from: &Source,
    progress: &mut dyn FnMut(&str),
) -> Result<ImageVersion, PublishError> {
    check_version(target)?;
    if find_exact(images, target)?.is_some() {
        return Err(PublishError::Exists(target.urn()));
    }
    // Into an existing publisher/offer/sku, its spelling wins (names are case-insensitive).
    let parent = sku_dir(images, target);
    let name_at = |up: usize| {
        parent
            .ancestors()
            .nth(up)
            .and_then(Path::file_name)
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    let target = &ImageRef {
        publisher: name_at(2),
        offer: name_at(1),
        sku: name_at(0),
        version: target.version.clone(),
    };
    let src = match from {
        Source::Urn(r) => super::resolve(images, r)?,
        Source::Dir(d) => read_dir_image(d)?,
    };
    progress(&format!("checking {} against its manifest", src.urn()));
    verify::verify(&src)?;

    std::fs::create_dir_all(&parent).map_err(io("cannot create", &parent))?;
    let tmp = tempfile::Builder::new()
        .prefix(".publish-")
        .tempdir_in(&parent)
        .map_err(io("cannot create a temp dir in", &parent))?;
    for name in src.manifest.files.keys() {
        let (a, b) = (src.dir.join(name), tmp.path().join(name));
        progress(&format!("copying {name}"));
        crate::storage::disk::sparse_clone(&a, &b).map_err(|e| PublishError::Io {
            what: "cannot copy",
            path: a.clone(),
            source: std::io::Error::other(e),
        })?;
    }
    // The source's manifest as it is (fields this version of vmnode does not know survive),
    // renamed to the target.
    let mpath = src.dir.join("manifest.json");
    let mut m: Value =
        serde_json::from_slice(&std::fs::read(&mpath).map_err(io("cannot read", &mpath))?)
            .map_err(|source| PublishError::Manifest {
                path: mpath.clone(),
                source,
            })?;
    m["publisher"] = target.publisher.clone().into();
    m["offer"] = target.offer.clone().into();
    m["sku"] = target.sku.clone().into();
    m["version"] = target.version.clone().into();
    m["publishedFrom"] = match from {
        Source::Urn(_) => src.urn(),
        Source::Dir(d) => d.display().to_string(),
    }
    .into();
    m["publishedAt"] = crate::report::time_now().into();
    let manifest: Manifest =
        serde_json::from_value(m.clone()).map_err(|source| PublishError::Manifest {
            path: mpath.clone(),
            source,
        })?;
    let out = tmp.path().join("manifest.json");
    let body = serde_json::to_vec_pretty(&m).map_err(|source| PublishError::Manifest {
        path: out.clone(),
        source,
    })?;
    std::fs::write(&out, body).map_err(io("cannot write", &out))?;
    // The copy itself is checked (and stamped, so the first VM does not hash it again).
    progress("checking the copy");
    verify::verify(&ImageVersion {
        manifest: manifest.clone(),
        dir: tmp.path().to_path_buf(),
    })?;
    sync_dir(tmp.path());

    let dest = parent.join(&target.version);
    match nix::fcntl::renameat2(
        None,
        tmp.path(),
        None,
        &dest,
        nix::fcntl::RenameFlags::RENAME_NOREPLACE,
    ) {
        Ok(()) => {
            let _ = tmp.keep();
        }
        Err(nix::errno::Errno::EEXIST) | Err(nix::errno::Errno::ENOTEMPTY) => {
            return Err(PublishError::Exists(target.urn()))
        }
        Err(e) => {
            return Err(PublishError::Io {
                what: "cannot publish into",
                path: dest,
                source: e.into(),
            })
        }
    }
    sync_dir(&parent);
    progress(&format!("published {} at {}", target.urn(), dest.display()));
    Ok(ImageVersion {
        manifest,
        dir: dest,
    })
}

fn read_dir_image(d: &Path) -> Result<ImageVersion, PublishError> {
    let mpath = d.join("manifest.json");
    let body = match std::fs::read(&mpath) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(PublishError::NotAnImageDir(d.into()))
        }
        Err(e) => return Err(io("cannot read", &mpath)(e)),
    };
    let manifest = serde_json::from_slice(&body).map_err(|source| PublishError::Manifest {
        path: mpath.clone(),
        source,
    })?;
    Ok(ImageVersion {
        manifest,
        dir: d.to_path_buf(),
    })
}

fn sync_dir(d: &Path) {
    if let Ok(f) = std::fs::File::open(d) {
        let _ = f.sync_all();
    }
}

/// Takes version `r` (exact) out of the catalog: its folder is renamed under `.unpublished/`.
/// Returns where it went.
pub fn unpublish(images: &Path, r: &ImageRef) -> Result<PathBuf, PublishError> {
    let Some(found) = find_exact(images, r)? else {
        let all = super::list(images)?;
        let same: Vec<&ImageVersion> = all.iter().filter(|i| r.same_sku(&i.manifest)).collect();
        let mut available = super::what_exists(r, &all, &same);
        if r.version.eq_ignore_ascii_case("latest") {
            available.insert_str(0, "Unpublish takes an exact version, not `latest`. ");
        }
        return Err(PublishError::NotPublished {
            urn: r.urn(),
            available,
        });
    };
    let m = &found.manifest;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let parent = sku_dir(
        &images.join(UNPUBLISHED),
        &ImageRef {
            publisher: m.publisher.clone(),
            offer: m.offer.clone(),
            sku: m.sku.clone(),
            version: m.version.clone(),
        },
    );
    std::fs::create_dir_all(&parent).map_err(io("cannot create", &parent))?;
    let dest = parent.join(format!("{}@{nanos}", m.version));
    std::fs::rename(&found.dir, &dest).map_err(io("cannot move away", &found.dir))?;
    if let Some(p) = found.dir.parent() {
        sync_dir(p);
    }
    Ok(dest)
}

/// Versions matching `r` exactly that were unpublished, oldest withdrawal first.
pub fn unpublished(images: &Path, r: &ImageRef) -> Result<Vec<ImageVersion>, CatalogError> {
    let dir = sku_dir(&images.join(UNPUBLISHED), r);
    let mut found: Vec<(u128, ImageVersion)> = Vec::new();
    let Ok(rd) = std::fs::read_dir(&dir) else {
        return Ok(found.into_iter().map(|(_, v)| v).collect());
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some((v, when)) = name.rsplit_once('@') else {
            continue;
        };
        if v != r.version {
            continue;
        }
        let Ok(body) = std::fs::read(e.path().join("manifest.json")) else {
            continue;
        };
        if let Ok(manifest) = serde_json::from_slice::<Manifest>(&body) {
            found.push((
                when.parse().unwrap_or(0),
                ImageVersion {
                    manifest,
                    dir: e.path(),
                },
            ));
        }
    }
    found.sort_by_key(|(w, _)| *w);
    Ok(found.into_iter().map(|(_, v)| v).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::{resolve, resolve_pinned};

    /// A small image version built in `root` (outside any catalog) with a manifest that has a
    /// field this code does not know.
    fn source(root: &Path) -> PathBuf {
        let d = root.join("src");
        std::fs::create_dir_all(&d).unwrap();
        let mut files = serde_json::Map::new();
        for (n, body) in [
            ("vmlinux", &b"k"[..]),
            ("initrd.cpio", b"i"),
            ("disk.raw", b"d"),
        ] {
            std::fs::write(d.join(n), body).unwrap();
            let (sha256, size) = verify::sha256_file(&d.join(n)).unwrap();
            files.insert(
                n.into(),
                serde_json::json!({ "sha256": sha256, "size": size }),
            );
        }
        let m = serde_json::json!({
            "publisher": "src", "offer": "src", "sku": "1", "version": "9.9.9", "boot": "pvh",
            "cmdline": "console=ttyS0", "kernelRelease": "6.1", "osType": "Linux",
            "files": files, "builtAt": "", "futureField": {"kept": true},
        });
        std::fs::write(d.join("manifest.json"), m.to_string()).unwrap();
        d
    }

    fn urn(s: &str) -> ImageRef {
        ImageRef::parse_urn(s).unwrap()
    }

    #[test]
    fn publish_from_a_folder_then_from_a_urn_then_unpublish() {
        let t = tempfile::tempdir().unwrap();
        let images = t.path().join("images");
        let src = source(t.path());
        let v1 = publish(
            &images,
            &urn("vmnode:tiny:1:1.0.0"),
            &Source::Dir(src.clone()),
            &mut |_| {},
        )
        .unwrap();
        assert_eq!(v1.dir, images.join("vmnode/tiny/1/1.0.0"));
        let m: Value =
            serde_json::from_slice(&std::fs::read(v1.dir.join("manifest.json")).unwrap()).unwrap();
        assert_eq!(m["version"], "1.0.0");
        assert_eq!(m["futureField"]["kept"], true, "{m}");
        // Copies, not links: the published version owns its files.
        use std::os::unix::fs::MetadataExt;
        assert_eq!(std::fs::metadata(v1.disk()).unwrap().nlink(), 1);
        // The copy was verified and stamped: nothing to hash at first use.
        assert!(verify::verify(&v1).unwrap().hashed.is_empty());

        // Another case of the same sku goes into the same folder.
        let v2 = publish(
            &images,
            &urn("VMNODE:Tiny:1:1.0.1"),
            &Source::Urn(urn("vmnode:tiny:1:latest")),
            &mut |_| {},
        )
        .unwrap();
        assert_eq!(v2.dir, images.join("vmnode/tiny/1/1.0.1"));
        assert_eq!(
            resolve(&images, &urn("vmnode:tiny:1:latest"))
                .unwrap()
                .manifest
                .version,
            "1.0.1"
        );

        // Not twice, not `latest`, not a bad version.
        for (u, want) in [
            ("vmnode:tiny:1:1.0.1", "already published"),
            ("vmnode:tiny:1:latest", "exact version"),
            ("vmnode:tiny:1:1.0", "exact version"),
        ] {
            let e = publish(&images, &urn(u), &Source::Dir(src.clone()), &mut |_| {})
                .unwrap_err()
                .to_string();
            assert!(e.contains(want), "{u}: {e}");
        }

        let gone = unpublish(&images, &urn("vmnode:TINY:1:1.0.1")).unwrap();
        assert!(gone.starts_with(images.join(UNPUBLISHED).join("vmnode/tiny/1")));
        assert!(!images.join("vmnode/tiny/1/1.0.1").exists());
        assert_eq!(
            resolve(&images, &urn("vmnode:tiny:1:latest"))
                .unwrap()
                .manifest
                .version,
            "1.0.0"
        );
        let e = resolve(&images, &urn("vmnode:tiny:1:1.0.1"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("Versions of vmnode:tiny:1 on this node: 1.0.0"),
            "{e}"
        );
        // A VM pinned to it still finds its files.
        assert_eq!(
            resolve_pinned(&images, &urn("vmnode:tiny:1:1.0.1"))
                .unwrap()
                .dir,
            gone
        );
        // Unpublished versions are not images.
        assert_eq!(crate::catalog::list(&images).unwrap().len(), 1);

        // Publish it again and withdraw it again: two withdrawn copies, the latest is used.
        publish(
            &images,
            &urn("vmnode:tiny:1:1.0.1"),
            &Source::Dir(gone.clone()),
            &mut |_| {},
        )
        .unwrap();
        let gone2 = unpublish(&images, &urn("vmnode:tiny:1:1.0.1")).unwrap();
        assert_ne!(gone, gone2);
        assert_eq!(
            resolve_pinned(&images, &urn("vmnode:tiny:1:1.0.1"))
                .unwrap()
                .dir,
            gone2
        );
    }

    #[test]
    fn clear_errors() {
        let t = tempfile::tempdir().unwrap();
        let images = t.path().join("images");
        let src = source(t.path());
        publish(
            &images,
            &urn("vmnode:tiny:1:1.0.0"),
            &Source::Dir(src.clone()),
            &mut |_| {},
        )
        .unwrap();
        let e = unpublish(&images, &urn("vmnode:tiny:1:2.0.0"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("vmnode:tiny:1:2.0.0 is not published") && e.contains("1.0.0"),
            "{e}"
        );
        let e = unpublish(&images, &urn("vmnode:tiny:1:latest"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("exact version, not `latest`"), "{e}");
        let e = unpublish(&images, &urn("nobody:x:y:1.0.0"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("images are: vmnode:tiny:1:1.0.0"), "{e}");

        // Unknown source URN: the cloud's not-found text.
        let e = publish(
            &images,
            &urn("vmnode:tiny:1:1.0.2"),
            &Source::Urn(urn("vmnode:tiny:1:7.0.0")),
            &mut |_| {},
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("The platform image 'vmnode:tiny:1:7.0.0' is not available"),
            "{e}"
        );
        // A folder without a manifest, something that is neither.
        let e = publish(
            &images,
            &urn("vmnode:tiny:1:1.0.2"),
            &Source::Dir(t.path().to_path_buf()),
            &mut |_| {},
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("has no manifest.json"), "{e}");
        assert!(matches!(
            Source::parse("/no/such/dir"),
            Err(PublishError::BadSource(_))
        ));

        // A corrupted source is not published, and leaves nothing behind.
        std::fs::write(src.join("initrd.cpio"), b"changed").unwrap();
        let e = publish(
            &images,
            &urn("vmnode:tiny:1:1.0.2"),
            &Source::Dir(src.clone()),
            &mut |_| {},
        )
        .unwrap_err();
        assert!(
            matches!(e, PublishError::Catalog(CatalogError::Corrupted { .. })),
            "{e}"
        );
        let left: Vec<_> = std::fs::read_dir(images.join("vmnode/tiny/1"))
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(left, vec![std::ffi::OsString::from("1.0.0")]);
    }
}
