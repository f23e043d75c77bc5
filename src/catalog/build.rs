//! `vmnode image build NAME`: runs a recipe from `images/` (embedded in the binary) and
//! publishes the result into the state dir's image store.
//!
//! Builds are cached under the cache dir keyed by the sha256 of the recipe's files, and Debian
//! packages are cached beside them, so a second build (or a CI run on the same machine) is a
//! copy. Publishing is atomic: the version folder is assembled under a hidden name and renamed.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use sha2::{Digest, Sha256};

use super::{FileEntry, ImageVersion, Manifest};

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("unknown image recipe '{0}'; known recipes: {1}")]
    UnknownRecipe(String, String),
    #[error("image recipe '{name}' failed (exit {code}); its output is above")]
    RecipeFailed { name: String, code: i32 },
    #[error("{what} {path}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("bad embedded catalog")]
    Catalog(#[source] serde_json::Error),
    /// The files just published do not hash to their manifest.
    #[error(transparent)]
    Verify(Box<super::CatalogError>),
}

const CATALOG: &str = include_str!("../../images/catalog.json");
const RECIPE_FILES: &[(&str, &str)] = &[
    ("tiny/build.sh", include_str!("../../images/tiny/build.sh")),
    ("tiny/init", include_str!("../../images/tiny/init")),
    (
        "tiny/udhcpc.script",
        include_str!("../../images/tiny/udhcpc.script"),
    ),
    ("tiny/shutdown", include_str!("../../images/tiny/shutdown")),
    (
        "debian-12/build.sh",
        include_str!("../../images/debian-12/build.sh"),
    ),
    (
        "debian-12/initramfs.conf",
        include_str!("../../images/debian-12/initramfs.conf"),
    ),
    (
        "debian-12/initramfs.modules",
        include_str!("../../images/debian-12/initramfs.modules"),
    ),
    (
        "debian-12/interfaces",
        include_str!("../../images/debian-12/interfaces"),
    ),
    (
        "debian-12/dhclient-hostname",
        include_str!("../../images/debian-12/dhclient-hostname"),
    ),
    (
        "debian-12/ssh-host-keys.service",
        include_str!("../../images/debian-12/ssh-host-keys.service"),
    ),
    (
        "debian-12-cloudinit/build.sh",
        include_str!("../../images/debian-12-cloudinit/build.sh"),
    ),
    (
        "debian-12-cloudinit/cloud.cfg",
        include_str!("../../images/debian-12-cloudinit/cloud.cfg"),
    ),
    (
        "debian-12/syslinux.cfg",
        include_str!("../../images/debian-12/syslinux.cfg"),
    ),
];

#[derive(serde::Deserialize)]
struct Catalog {
    recipes: std::collections::BTreeMap<String, Recipe>,
}

#[derive(serde::Deserialize, serde::Serialize, Clone)]
pub struct Recipe {
    pub publisher: String,
    pub offer: String,
    pub sku: String,
    pub version: String,
    pub boot: String,
    pub cmdline: String,
    pub recipe: Vec<String>,
    pub description: String,
    /// How VMs of this image are provisioned (absent: through the guest agent).
    #[serde(default, skip_serializing_if = "super::Provisioning::is_agent")]
    pub provisioning: super::Provisioning,
    /// Its init knows the boot snapshot protocol (see `Manifest::boot_snapshot`).
    #[serde(
        default,
        rename = "bootSnapshot",
        skip_serializing_if = "std::ops::Not::not"
    )]
    pub boot_snapshot: bool,
}

pub fn recipes() -> Result<std::collections::BTreeMap<String, Recipe>, BuildError> {
    Ok(serde_json::from_str::<Catalog>(CATALOG)
        .map_err(BuildError::Catalog)?
        .recipes)
}

fn io<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> BuildError + 'a {
    move |source| BuildError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// sha256 and length of a file (holes of sparse files hashed as zeros without reading them).
pub fn sha256_file(path: &Path) -> std::io::Result<(String, u64)> {
    super::verify::sha256_file(path)
}

/// Builds (or finds in the cache) recipe `name` and publishes it into `images_dir`.
/// `progress` receives one line per step.
pub fn build_and_publish(
    name: &str,
    cache_dir: &Path,
    images_dir: &Path,
    rebuild: bool,
    progress: &mut dyn FnMut(&str),
) -> Result<ImageVersion, BuildError> {
    let all = recipes()?;
    let recipe = all.get(name).cloned().ok_or_else(|| {
        BuildError::UnknownRecipe(
            name.into(),
            all.keys().cloned().collect::<Vec<_>>().join(", "),
        )
    })?;
    let mut key = Sha256::new();
    key.update(name.as_bytes());
    // The recipe's own catalog entry, not the whole catalog: adding an image rebuilds no other.
    key.update(serde_json::to_vec(&recipe).map_err(BuildError::Catalog)?);
    for (path, body) in RECIPE_FILES
        .iter()
        .filter(|(p, _)| recipe.recipe.iter().any(|r| r == p))
    {
        key.update(path.as_bytes());
        key.update(body.as_bytes());
    }
    let key = hex::encode(key.finalize());
    let built = cache_dir
        .join("images")
        .join(format!("{name}-{}", &key[..16]));
    let debs = cache_dir.join("debs");
    // A recipe's own state kept between builds (debian-12: its debootstrap tree), so an
    // interrupted or changed build resumes instead of starting over.
    let work = cache_dir.join("work").join(name);
    if rebuild && built.exists() {
        std::fs::remove_dir_all(&built).map_err(io("cannot clear", &built))?;
    }
    if built.join("manifest.json").exists() {
        progress(&format!("using cached build {}", built.display()));
    } else {
        run_recipe(name, &recipe, &built, &debs, &work, progress)?;
    }
    publish(&built, images_dir, progress)
}

fn run_recipe(
    name: &str,
    recipe: &Recipe,
    built: &Path,
    debs: &Path,
    work: &Path,
    progress: &mut dyn FnMut(&str),
) -> Result<(), BuildError> {
    let parent = built.parent().unwrap_or(Path::new("/"));
    std::fs::create_dir_all(parent).map_err(io("cannot create", parent))?;
    let src = tempfile::Builder::new()
        .prefix(".recipe-")
        .tempdir_in(parent)
        .map_err(io("cannot create a temp dir in", parent))?;
    for (path, body) in RECIPE_FILES {
        let p = src.path().join(path);
        if let Some(d) = p.parent() {
            std::fs::create_dir_all(d).map_err(io("cannot create", d))?;
        }
        std::fs::write(&p, body).map_err(io("cannot write", &p))?;
    }
    let out = tempfile::Builder::new()
        .prefix(".build-")
        .tempdir_in(parent)
        .map_err(io("cannot create a temp dir in", parent))?;
    let script = src.path().join(&recipe.recipe[0]);
    progress(&format!(
        "building image recipe '{name}' ({})",
        recipe.description
    ));
    let mut child = Command::new("bash")
        .arg(&script)
        .arg(out.path())
        .arg(debs)
        .arg(work)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(io("cannot run", &script))?;
    if let Some(stdout) = child.stdout.take() {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            progress(&line);
        }
    }
    let status = child.wait().map_err(io("cannot wait for", &script))?;
    if !status.success() {
        return Err(BuildError::RecipeFailed {
            name: name.into(),
            code: status.code().unwrap_or(-1),
        });
    }
    progress("hashing image files");
    let mut files = std::collections::BTreeMap::new();
    for f in ["vmlinux", "vmlinuz", "initrd.cpio", "disk.raw"] {
        let p = out.path().join(f);
        if f == "vmlinuz" && !p.exists() {
            continue; // optional: only for `boot: bzimage`
        }
        let (sha256, size) = sha256_file(&p).map_err(io("cannot read", &p))?;
        files.insert(f.to_string(), FileEntry { sha256, size });
    }
    let kernel_release = std::fs::read_to_string(out.path().join("kernel.txt"))
        .unwrap_or_default()
        .trim()
        .to_string();
    let manifest = Manifest {
        publisher: recipe.publisher.clone(),
        offer: recipe.offer.clone(),
        sku: recipe.sku.clone(),
        version: recipe.version.clone(),
        boot: recipe.boot.clone(),
        cmdline: recipe.cmdline.clone(),
        kernel_release,
        os_type: "Linux".into(),
        files,
        built_at: crate::report::time_now(),
        provisioning: recipe.provisioning,
        boot_snapshot: recipe.boot_snapshot,
    };
    let mpath = out.path().join("manifest.json");
    let body = serde_json::to_vec_pretty(&manifest).map_err(BuildError::Catalog)?;
    std::fs::write(&mpath, body).map_err(io("cannot write", &mpath))?;
    let out = out.keep();
    if let Err(e) = std::fs::rename(&out, built) {
        let _ = std::fs::remove_dir_all(&out);
        // Another build of the same recipe finished first: its result is as good as ours.
        if !built.join("manifest.json").exists() {
            return Err(BuildError::Io {
                what: "cannot move the build into",
                path: built.into(),
                source: e,
            });
        }
    }
    Ok(())
}

/// Copies a built image into the store as `{publisher}/{offer}/{sku}/{version}` (hard links
/// when on the same filesystem, sparse copies otherwise).
fn publish(
    built: &Path,
    images_dir: &Path,
    progress: &mut dyn FnMut(&str),
) -> Result<ImageVersion, BuildError> {
    let mpath = built.join("manifest.json");
    let manifest: Manifest =
        serde_json::from_slice(&std::fs::read(&mpath).map_err(io("cannot read", &mpath))?)
            .map_err(BuildError::Catalog)?;
    let dest = images_dir
        .join(&manifest.publisher)
        .join(&manifest.offer)
        .join(&manifest.sku)
        .join(&manifest.version);
    if let Ok(existing) = std::fs::read(dest.join("manifest.json")) {
        if let Ok(m) = serde_json::from_slice::<Manifest>(&existing) {
            let same = m.files.iter().all(|(k, v)| {
                manifest
                    .files
                    .get(k)
                    .map(|x| x.sha256 == v.sha256)
                    .unwrap_or(false)
            });
            // Already there — unless its files were damaged since: then it is replaced.
            let intact = same
                && super::verify::verify(&ImageVersion {
                    manifest: m.clone(),
                    dir: dest.clone(),
                })
                .is_ok();
            if intact {
                progress(&format!("already published at {}", dest.display()));
                return Ok(ImageVersion {
                    manifest,
                    dir: dest,
                });
            }
        }
        std::fs::remove_dir_all(&dest).map_err(io("cannot replace", &dest))?;
    }
    let parent = dest.parent().unwrap_or(images_dir);
    std::fs::create_dir_all(parent).map_err(io("cannot create", parent))?;
    let tmp = tempfile::Builder::new()
        .prefix(".publish-")
        .tempdir_in(parent)
        .map_err(io("cannot create a temp dir in", parent))?;
    for f in manifest
        .files
        .keys()
        .map(String::as_str)
        .chain(["manifest.json"])
    {
        let (from, to) = (built.join(f), tmp.path().join(f));
        if std::fs::hard_link(&from, &to).is_err() {
            crate::storage::disk::sparse_clone(&from, &to).map_err(|e| BuildError::Io {
                what: "cannot copy",
                path: from.clone(),
                source: std::io::Error::other(e),
            })?;
        }
    }
    let tmp = tmp.keep();
    if let Err(e) = std::fs::rename(&tmp, &dest) {
        let _ = std::fs::remove_dir_all(&tmp);
        if !dest.join("manifest.json").exists() {
            return Err(BuildError::Io {
                what: "cannot publish into",
                path: dest,
                source: e,
            });
        }
    }
    let published = ImageVersion {
        manifest,
        dir: dest,
    };
    // Hashed once here, so that no VM create pays for it (the stamp then vouches for the files).
    progress("verifying the published files");
    super::verify::verify(&published).map_err(|e| BuildError::Verify(Box::new(e)))?;
    let m = &published.manifest;
    progress(&format!(
        "published {}:{}:{}:{} at {}",
        m.publisher,
        m.offer,
        m.sku,
        m.version,
        published.dir.display()
    ));
    Ok(published)
}
