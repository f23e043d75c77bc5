//! `vmnode image`: build, list, publish, unpublish, verify and import the node's images. All but
//! build-then-publish work on the store directly, without a daemon.

use std::time::Instant;

use clap::Subcommand;
use serde_json::{json, Value};

use super::output::print;
use super::Global;

#[derive(Subcommand)]
pub enum ImageCmd {
    /// Build an image from its recipe under images/ (cached) and publish it into the catalog.
    Build {
        /// Recipe name (e.g. tiny).
        name: String,
        /// Where downloaded packages and builds are cached.
        #[arg(long, env = "VMNODE_CACHE_DIR", default_value = crate::config::DEFAULT_CACHE_DIR)]
        cache_dir: std::path::PathBuf,
        /// Ignore the cached build.
        #[arg(long)]
        rebuild: bool,
    },
    /// The images in this node's store (no daemon needed).
    List,
    /// Publish an image folder or an existing version as a new version (no daemon needed).
    Publish {
        /// The new version, Publisher:Offer:Sku:Version (e.g. vmnode:tiny:1:1.0.6).
        #[arg(long)]
        urn: String,
        /// An image version's folder (files + manifest.json) or a published URN (`latest` allowed).
        #[arg(long)]
        from: String,
    },
    /// Take a version out of the catalog: new VMs cannot use it; existing VMs keep working.
    Unpublish {
        /// The exact version, Publisher:Offer:Sku:Version.
        #[arg(long)]
        urn: String,
    },
    /// Hash every file of a version and compare it with its manifest (ignores the cached result).
    Verify {
        /// Publisher:Offer:Sku:Version (`latest` allowed).
        #[arg(long)]
        urn: String,
    },
    /// Import a disk you bring (qcow2, raw, VHD, VHDX, VMDK) as a new image version, booted
    /// through firmware (no daemon needed; a running daemon sees it at once).
    Import {
        /// The disk file: its extension names its format (.qcow2, .raw/.img, .vhd, .vhdx, .vmdk).
        #[arg(long)]
        file: std::path::PathBuf,
        /// The new version's URN, Publisher:Offer:Sku:Version (version Major.Minor.Patch).
        #[arg(long)]
        urn: String,
        #[arg(long, default_value = "Linux")]
        os_type: String,
        /// Whether its VMs get a NoCloud `cidata` seed from their osProfile (auto: if the disk
        /// has /usr/bin/cloud-init).
        #[arg(long, value_enum, default_value = "auto")]
        cloud_init: crate::catalog::import::CloudInit,
    },
}

pub async fn run(g: &Global, c: ImageCmd) -> anyhow::Result<()> {
    let paths = g.paths();
    match c {
        ImageCmd::Build {
            name,
            cache_dir,
            rebuild,
        } => {
            let images = paths.images();
            let start = Instant::now();
            let v = tokio::task::spawn_blocking(move || {
                crate::catalog::build::build_and_publish(
                    &name,
                    &cache_dir,
                    &images,
                    rebuild,
                    &mut |l| eprintln!("[{:>5.1}s] {l}", start.elapsed().as_secs_f64()),
                )
            })
            .await??;
            println!("{}", v.urn());
        }
        ImageCmd::Import {
            file,
            urn,
            os_type,
            cloud_init,
        } => {
            let images = paths.images();
            let start = Instant::now();
            let cancel = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
            let flag = cancel.clone();
            let req = crate::catalog::import::ImportRequest {
                file,
                urn,
                os_type,
                cloud_init,
            };
            let mut task = tokio::task::spawn_blocking(move || {
                crate::catalog::import::import(&req, &images, &flag, &mut |l| {
                    eprintln!("[{:>5.1}s] {l}", start.elapsed().as_secs_f64())
                })
            });
            // Ctrl-C: qemu-img is stopped and the half-made folder removed before exiting.
            let v = tokio::select! {
                r = &mut task => r??,
                _ = tokio::signal::ctrl_c() => {
                    cancel.store(true, std::sync::atomic::Ordering::SeqCst);
                    task.await??
                }
            };
            println!("{}", v.urn());
        }
        ImageCmd::List => {
            let rows: Vec<Value> = crate::catalog::list(&paths.images())?
                .iter()
                .map(|i| json!({ "urn": i.urn(), "kernel": i.manifest.kernel_release, "boot": i.manifest.boot, "dir": i.dir }))
                .collect();
            print(
                g.output,
                &Value::Array(rows),
                &[
                    ("Urn", "urn"),
                    ("Kernel", "kernel"),
                    ("Boot", "boot"),
                    ("Dir", "dir"),
                ],
            );
        }
        ImageCmd::Publish { urn, from } => {
            use crate::catalog::publish;
            let target = crate::catalog::ImageRef::parse_urn(&urn)?;
            let from = publish::Source::parse(&from)?;
            let images = paths.images();
            let start = Instant::now();
            let v = tokio::task::spawn_blocking(move || {
                publish::publish(&images, &target, &from, &mut |l| {
                    eprintln!("[{:>5.1}s] {l}", start.elapsed().as_secs_f64())
                })
            })
            .await??;
            println!("{}", v.urn());
        }
        ImageCmd::Unpublish { urn } => {
            let r = crate::catalog::ImageRef::parse_urn(&urn)?;
            let moved = crate::catalog::publish::unpublish(&paths.images(), &r)?;
            eprintln!(
                "unpublished {urn}: new VMs cannot use it; VMs made from it keep working (its files are kept in {})",
                moved.display()
            );
        }
        ImageCmd::Verify { urn } => {
            let r = crate::catalog::parse_image(&urn)?;
            let images = paths.images();
            let out = tokio::task::spawn_blocking(move || {
                let img = crate::catalog::resolve(&images, &r)?;
                crate::catalog::verify::verify_full(&img).map(|o| (img, o))
            })
            .await??;
            println!(
                "{}: {} files match the manifest ({})",
                out.0.urn(),
                out.1.hashed.len(),
                out.1.hashed.join(", ")
            );
        }
    }
    Ok(())
}
