//! `vmnode image import --file X --urn P:O:S:V`: a disk the user brings (qcow2, raw, VHD, VHDX,
//! VMDK) becomes an image version, a sparse raw `disk.raw` booted through firmware.
//!
//! The file is converted by `qemu-img convert` (zeros skipped, so the result is sparse, with its
//! progress read from `-p`) into a hidden folder `images/.import-{pid}-*`, hashed, given its
//! manifest, and renamed into `images/{p}/{o}/{s}/{v}` in one step: the catalog (read from disk
//! by a running daemon too) sees the whole version or nothing. A failure or an interrupt (the
//! `cancel` flag: the CLI sets it on Ctrl-C) removes the hidden folder; one left by a killed
//! import is swept by the next import once its pid is gone.
//!
//! The format: the file's extension says what it must be (`.qcow2`, `.vhd`, `.vhdx`, `.vmdk`,
//! `.raw`/`.img`), and `qemu-img info` must agree; without a known extension, a format qemu-img
//! recognises is taken, but bytes it cannot recognise are refused rather than guessed to be raw.
//! A fixed VHD (the cloud's kind) has its `conectix` footer only at the end, which qemu-img's
//! probe does not look at: it is recognised here by that footer.
//!
//! `--cloud-init auto` looks for `/usr/bin/cloud-init` on the disk's ext2/3/4 partitions with
//! `debugfs` (reading at the partition's offset; nothing mounted).

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};

use super::build::sha256_file;
use super::{
    CatalogError, FileEntry, ImageRef, ImageVersion, Manifest, Provisioning, BOOT_FIRMWARE,
};

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error(transparent)]
    Urn(#[from] CatalogError),
    #[error("'{part}' is not a valid image {what}: use letters, digits, '.', '-' and '_' (not starting with '.')")]
    BadName { what: &'static str, part: String },
    #[error("'{0}' is not a valid image version: use Major.Minor.Patch numbers (e.g. 1.0.0); `latest` names no version")]
    BadVersion(String),
    #[error("image {urn} already exists at {dir}; import under another version")]
    Exists { urn: String, dir: PathBuf },
    #[error("cannot read {path}")]
    Unreadable {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {why}; supported: qcow2, raw (.raw/.img), VHD (.vhd), VHDX, VMDK")]
    UnknownFormat { path: PathBuf, why: String },
    #[error("--os-type '{0}' is invalid: use Linux or Windows")]
    BadOsType(String),
    #[error("qemu-img {what} failed on {path} (exit {code}): {stderr}")]
    QemuImg {
        what: &'static str,
        path: PathBuf,
        code: i32,
        stderr: String,
    },
    #[error("the import was interrupted; nothing was published")]
    Interrupted,
    #[error("{what} {path}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// `--cloud-init`: whether VMs of the image get a NoCloud seed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum CloudInit {
    /// Yes if the disk has /usr/bin/cloud-init on an ext2/3/4 partition.
    Auto,
    Yes,
    No,
}

pub struct ImportRequest {
    pub file: PathBuf,
    pub urn: String,
    pub os_type: String,
    pub cloud_init: CloudInit,
}

fn io<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> ImportError + 'a {
    move |source| ImportError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// Checks the URN of a new version: four safe path parts, a numeric version.
pub fn check_urn(urn: &str) -> Result<ImageRef, ImportError> {
    let r = ImageRef::parse_urn(urn)?;
    for (what, part) in [
        ("publisher", &r.publisher),
        ("offer", &r.offer),
        ("sku", &r.sku),
    ] {
        let ok = !part.starts_with('.')
            && part
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'));
        if !ok {
            return Err(ImportError::BadName {
                what,
                part: part.clone(),
            });
        }
    }
    let parts: Vec<&str> = r.version.split('.').collect();
    let numeric = parts.len() == 3
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.len() <= 9 && p.chars().all(|c| c.is_ascii_digit()));
    if !numeric {
        return Err(ImportError::BadVersion(r.version));
    }
    Ok(r)
}

/// The qemu-img format the file's name promises, if its extension says one.
fn format_of_name(path: &Path) -> Option<&'static str> {
    let ext = path.extension()?.to_str()?.to_ascii_lowercase();
    Some(match ext.as_str() {
        "qcow2" | "qcow" => "qcow2",
        "raw" | "img" => "raw",
        "vhd" => "vpc",
        "vhdx" => "vhdx",
        "vmdk" => "vmdk",
        _ => return None,
    })
}

/// A fixed VHD: a 512-byte footer starting with `conectix` at the very end.
fn has_vhd_footer(path: &Path) -> std::io::Result<bool> {
    let mut f = std::fs::File::open(path)?;
    let len = f.metadata()?.len();
    if len < 512 {
        return Ok(false);
    }
    f.seek(SeekFrom::Start(len - 512))?;
    let mut cookie = [0u8; 8];
    f.read_exact(&mut cookie)?;
    Ok(&cookie == b"conectix")
}

/// What `qemu-img info` makes of the file (its probe: `raw` when nothing else matches).
fn probe(path: &Path) -> Result<String, ImportError> {
    let out = Command::new("qemu-img")
        .args(["info", "--output=json", "-U"])
        .arg(path)
        .output()
        .map_err(io("cannot run qemu-img info on", path))?;
    if !out.status.success() {
        return Err(ImportError::QemuImg {
            what: "info",
            path: path.into(),
            code: out.status.code().unwrap_or(-1),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    Ok(v["format"].as_str().unwrap_or("raw").to_string())
}

/// The format to convert from, checked against the file's name and content.
pub fn detect_format(path: &Path) -> Result<&'static str, ImportError> {
    let named = format_of_name(path);
    let probed = probe(path)?;
    let vhd_footer = probed == "raw"
        && has_vhd_footer(path).map_err(|source| ImportError::Unreadable {
            path: path.into(),
            source,
        })?;
    let seen: &'static str = match probed.as_str() {
        "qcow2" => "qcow2",
        "vpc" => "vpc",
        "vhdx" => "vhdx",
        "vmdk" => "vmdk",
        "raw" if vhd_footer => "vpc",
        "raw" => "raw",
        other => {
            return Err(ImportError::UnknownFormat {
                path: path.into(),
                why: format!("qemu-img reads it as '{other}', which vmnode does not import"),
            })
        }
    };
    match named {
        Some(n) if n == seen => Ok(n),
        // A raw disk's bytes can be anything; only its name says it is one.
        Some(n) => Err(ImportError::UnknownFormat {
            path: path.into(),
            why: format!(
                "its name says {} but its content is {}",
                label(n),
                if seen == "raw" {
                    "no image format qemu-img knows".to_string()
                } else {
                    label(seen).to_string()
                }
            ),
        }),
        None if seen != "raw" => Ok(seen),
        None => Err(ImportError::UnknownFormat {
            path: path.into(),
            why: "its format is not recognised (a raw disk must be named .raw or .img)".into(),
        }),
    }
}

fn label(fmt: &str) -> &str {
    match fmt {
        "vpc" => "VHD",
        "raw" => "a raw disk",
        f => f,
    }
}

/// Removes hidden import folders whose importing process is gone.
fn sweep_stale(images: &Path) {
    let Ok(rd) = std::fs::read_dir(images) else {
        return;
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        let Some(pid) = name
            .strip_prefix(".import-")
            .and_then(|r| r.split('-').next())
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// Runs `qemu-img convert -p` and reports every 5 % of progress.
fn convert(
    src: &Path,
    fmt: &str,
    dst: &Path,
    cancel: &AtomicBool,
    progress: &mut dyn FnMut(&str),
) -> Result<(), ImportError> {
    let mut child = Command::new("qemu-img")
        .args(["convert", "-p", "-U", "-f", fmt, "-O", "raw", "-S", "4k"])
        .arg(src)
        .arg(dst)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(io("cannot run qemu-img convert on", src))?;
    let mut stderr = child.stderr.take();
    let errs = std::thread::spawn(move || {
        let mut s = String::new();
        if let Some(e) = stderr.as_mut() {
            let _ = e.read_to_string(&mut s);
        }
        s
    });
    // `-p` rewrites one line: "    (12.34/100%)\r". A reader thread turns it into percents.
    let (tx, rx) = std::sync::mpsc::channel::<u32>();
    let mut stdout = child.stdout.take();
    let reader = std::thread::spawn(move || {
        let mut buf = [0u8; 256];
        let mut acc = String::new();
        while let Some(Ok(n)) = stdout.as_mut().map(|o| o.read(&mut buf)) {
            if n == 0 {
                break;
            }
            acc.push_str(&String::from_utf8_lossy(&buf[..n]));
            while let Some(end) = acc.find(['\r', '\n']) {
                let item: String = acc.drain(..=end).collect();
                if let Some(p) = parse_percent(&item) {
                    let _ = tx.send(p);
                }
            }
        }
    });
    let mut shown = None::<u32>;
    let status = loop {
        while let Ok(p) = rx.try_recv() {
            let step = p / 5 * 5;
            if shown.is_none_or(|s| step > s) {
                shown = Some(step);
                progress(&format!("converting: {step}%"));
            }
        }
        if cancel.load(Ordering::SeqCst) {
            let _ = child.kill();
            let _ = child.wait();
            let _ = reader.join();
            return Err(ImportError::Interrupted);
        }
        match child
            .try_wait()
            .map_err(io("cannot wait for qemu-img on", src))?
        {
            Some(s) => break s,
            None => std::thread::sleep(std::time::Duration::from_millis(100)),
        }
    };
    let _ = reader.join();
    let stderr = errs.join().unwrap_or_default();
    if cancel.load(Ordering::SeqCst) {
        return Err(ImportError::Interrupted);
    }
    if !status.success() {
        return Err(ImportError::QemuImg {
            what: "convert",
            path: src.into(),
            code: status.code().unwrap_or(-1),
            stderr: stderr.trim().to_string(),
        });
    }
    Ok(())
}

fn parse_percent(s: &str) -> Option<u32> {
    let inner = s.trim().strip_prefix('(')?.split('/').next()?;
    inner.parse::<f64>().ok().map(|f| f as u32)
}

/// Byte offsets of the disk's partitions (sfdisk), or the whole disk when it has none.
fn partition_offsets(disk: &Path) -> Vec<u64> {
    let out = Command::new("sfdisk").arg("--json").arg(disk).output();
    let parts = out
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| serde_json::from_slice::<serde_json::Value>(&o.stdout).ok())
        .and_then(|v| {
            let t = &v["partitiontable"];
            let ss = t["sectorsize"].as_u64().unwrap_or(512);
            t["partitions"].as_array().map(|a| {
                a.iter()
                    .filter_map(|p| p["start"].as_u64().map(|s| s * ss))
                    .collect::<Vec<_>>()
            })
        });
    match parts {
        Some(p) if !p.is_empty() => p,
        _ => vec![0],
    }
}

/// Whether an ext2/3/4 file system on the disk holds `/usr/bin/cloud-init`.
pub fn has_cloud_init(disk: &Path) -> bool {
    partition_offsets(disk).into_iter().any(|off| {
        Command::new("debugfs")
            .args(["-R", "stat /usr/bin/cloud-init"])
            .arg(format!("{}?offset={off}", disk.display()))
            .stdin(Stdio::null())
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("Inode:"))
    })
}

/// Imports `req.file` as a new image version in `images`. `cancel` stops it cleanly.
pub fn import(
    req: &ImportRequest,
    images: &Path,
    cancel: &AtomicBool,
    progress: &mut dyn FnMut(&str),
) -> Result<ImageVersion, ImportError> {
    let r = check_urn(&req.urn)?;
    let os_type = match req.os_type.to_ascii_lowercase().as_str() {
        "linux" => "Linux",
        "windows" => "Windows",
        _ => return Err(ImportError::BadOsType(req.os_type.clone())),
    };
    let exists = |r: &ImageRef| -> Result<(), ImportError> {
        match super::resolve(images, r) {
            Ok(v) => Err(ImportError::Exists {
                urn: v.urn(),
                dir: v.dir,
            }),
            Err(CatalogError::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    };
    exists(&r)?;
    // Readable, a regular file, and a format we take — before anything is written.
    let meta = std::fs::metadata(&req.file).map_err(|source| ImportError::Unreadable {
        path: req.file.clone(),
        source,
    })?;
    if !meta.is_file() {
        return Err(ImportError::Unreadable {
            path: req.file.clone(),
            source: std::io::Error::other("not a regular file"),
        });
    }
    std::fs::File::open(&req.file).map_err(|source| ImportError::Unreadable {
        path: req.file.clone(),
        source,
    })?;
    let fmt = detect_format(&req.file)?;
    progress(&format!(
        "importing {} ({}, {} MiB) as {}",
        req.file.display(),
        label(fmt),
        meta.len() >> 20,
        r.urn()
    ));

    std::fs::create_dir_all(images).map_err(io("cannot create", images))?;
    sweep_stale(images);
    let tmp = tempfile::Builder::new()
        .prefix(&format!(".import-{}-", std::process::id()))
        .tempdir_in(images)
        .map_err(io("cannot create a temp dir in", images))?;
    let disk = tmp.path().join("disk.raw");
    convert(&req.file, fmt, &disk, cancel, progress)?;
    progress("hashing disk.raw");
    let (sha256, size) = sha256_file(&disk).map_err(io("cannot read", &disk))?;
    if cancel.load(Ordering::SeqCst) {
        return Err(ImportError::Interrupted);
    }
    let cloud_init = match req.cloud_init {
        CloudInit::Yes => true,
        CloudInit::No => false,
        CloudInit::Auto => {
            let found = has_cloud_init(&disk);
            progress(&format!(
                "cloud-init: {}",
                if found {
                    "found /usr/bin/cloud-init: VMs get a NoCloud seed"
                } else {
                    "not found on an ext2/3/4 partition (pass --cloud-init yes to force a seed)"
                }
            ));
            found
        }
    };
    let manifest = Manifest {
        publisher: r.publisher.clone(),
        offer: r.offer.clone(),
        sku: r.sku.clone(),
        version: r.version.clone(),
        boot: BOOT_FIRMWARE.into(),
        cmdline: String::new(),
        kernel_release: String::new(),
        os_type: os_type.into(),
        files: [("disk.raw".to_string(), FileEntry { sha256, size })].into(),
        built_at: crate::report::time_now(),
        // A disk of the user's: its cloud-init takes the osProfile from a seed; without
        // cloud-init nothing in it is known to, so vmnode does not try.
        provisioning: if cloud_init {
            Provisioning::CloudInit
        } else {
            Provisioning::None
        },
        boot_snapshot: false,
    };
    let mpath = tmp.path().join("manifest.json");
    let body = serde_json::to_vec_pretty(&manifest).map_err(|e| ImportError::Io {
        what: "cannot encode",
        path: mpath.clone(),
        source: std::io::Error::other(e),
    })?;
    crate::storage::fsutil::write_atomic(&mpath, &body, 0o644)
        .map_err(io("cannot write", &mpath))?;
    // Another import of the same version may have finished meanwhile.
    exists(&r)?;
    let dest = images
        .join(&r.publisher)
        .join(&r.offer)
        .join(&r.sku)
        .join(&r.version);
    let parent = dest.parent().unwrap_or(images);
    std::fs::create_dir_all(parent).map_err(io("cannot create", parent))?;
    if cancel.load(Ordering::SeqCst) {
        return Err(ImportError::Interrupted);
    }
    // rename(2) onto an existing non-empty folder fails: the version is never overwritten.
    if let Err(e) = std::fs::rename(tmp.path(), &dest) {
        return Err(if dest.join("manifest.json").exists() {
            ImportError::Exists {
                urn: r.urn(),
                dir: dest,
            }
        } else {
            ImportError::Io {
                what: "cannot publish into",
                path: dest,
                source: e,
            }
        });
    }
    let _ = tmp.keep();
    if let Ok(d) = std::fs::File::open(parent) {
        let _ = d.sync_all();
    }
    progress(&format!("published {} at {}", r.urn(), dest.display()));
    Ok(ImageVersion {
        manifest,
        dir: dest,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(file: &Path, urn: &str) -> ImportRequest {
        ImportRequest {
            file: file.into(),
            urn: urn.into(),
            os_type: "Linux".into(),
            cloud_init: CloudInit::No,
        }
    }

    fn run(r: &ImportRequest, images: &Path) -> Result<ImageVersion, ImportError> {
        import(r, images, &AtomicBool::new(false), &mut |_| {})
    }

    /// Nothing but the published versions: no hidden folder, no half-made version.
    fn entries(images: &Path) -> Vec<String> {
        let mut out = vec![];
        let mut stack = vec![images.to_path_buf()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
                out.push(e.path().strip_prefix(images).unwrap().display().to_string());
                if e.path().is_dir() {
                    stack.push(e.path());
                }
            }
        }
        out.sort();
        out
    }

    fn qemu_img(args: &[&str]) {
        let s = Command::new("qemu-img").args(args).status().unwrap();
        assert!(s.success(), "qemu-img {args:?}");
    }

    #[test]
    fn urns_are_checked() {
        assert!(matches!(check_urn("a:b:c"), Err(ImportError::Urn(_))));
        assert!(matches!(
            check_urn("a:b:c:latest"),
            Err(ImportError::BadVersion(_))
        ));
        assert!(matches!(
            check_urn("a:../x:c:1.0.0"),
            Err(ImportError::BadName { .. })
        ));
        assert!(check_urn("Contoso:my-os:22_04:1.2.3").is_ok());
    }

    #[test]
    fn qcow2_and_raw_import_sparse_and_published() {
        let dir = tempfile::tempdir().unwrap();
        let images = dir.path().join("images");
        let raw = dir.path().join("disk.img");
        // 64 MiB with 1 MiB of data in the middle.
        let f = std::fs::File::create(&raw).unwrap();
        f.set_len(64 << 20).unwrap();
        std::os::unix::fs::FileExt::write_at(&f, &[0xabu8; 1 << 20], 32 << 20).unwrap();
        let q = dir.path().join("disk.qcow2");
        qemu_img(&[
            "convert",
            "-f",
            "raw",
            "-O",
            "qcow2",
            raw.to_str().unwrap(),
            q.to_str().unwrap(),
        ]);
        let mut lines = vec![];
        let v = import(
            &req(&q, "Contoso:byo:1:1.0.0"),
            &images,
            &AtomicBool::new(false),
            &mut |l| lines.push(l.to_string()),
        )
        .unwrap();
        assert!(lines.iter().any(|l| l == "converting: 100%"), "{lines:?}");
        assert!(v.firmware_boot() && v.manifest.provisioning == Provisioning::None);
        let (sha, size) = sha256_file(&raw).unwrap();
        assert_eq!(v.manifest.files["disk.raw"].sha256, sha);
        assert_eq!(size, 64 << 20);
        // Sparse: about the 1 MiB of data is allocated.
        let blocks = std::os::unix::fs::MetadataExt::blocks(&std::fs::metadata(v.disk()).unwrap());
        assert!(blocks * 512 < 8 << 20, "{blocks} blocks allocated");
        // The catalog sees it.
        let r = ImageRef::parse_urn("contoso:BYO:1:latest").unwrap();
        assert_eq!(super::super::resolve(&images, &r).unwrap().dir, v.dir);
        // A raw file by its name.
        let v2 = run(&req(&raw, "Contoso:byo:1:1.0.1"), &images).unwrap();
        assert_eq!(v2.manifest.files["disk.raw"].sha256, sha);
        assert_eq!(
            entries(&images),
            [
                "Contoso",
                "Contoso/byo",
                "Contoso/byo/1",
                "Contoso/byo/1/1.0.0",
                "Contoso/byo/1/1.0.0/disk.raw",
                "Contoso/byo/1/1.0.0/manifest.json",
                "Contoso/byo/1/1.0.1",
                "Contoso/byo/1/1.0.1/disk.raw",
                "Contoso/byo/1/1.0.1/manifest.json",
            ]
        );
    }

    #[test]
    fn errors_leave_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let images = dir.path().join("images");
        // Unknown format: text named .qcow2, and a file with no known extension.
        let txt = dir.path().join("notes.qcow2");
        std::fs::write(&txt, "not a disk\n".repeat(100)).unwrap();
        let e = run(&req(&txt, "p:o:s:1.0.0"), &images).unwrap_err();
        assert!(matches!(e, ImportError::UnknownFormat { .. }), "{e}");
        assert!(e.to_string().contains("its name says qcow2"), "{e}");
        let other = dir.path().join("disk.bin");
        std::fs::write(&other, [0u8; 4096]).unwrap();
        let e = run(&req(&other, "p:o:s:1.0.0"), &images).unwrap_err();
        assert!(matches!(e, ImportError::UnknownFormat { .. }), "{e}");
        // Missing file.
        let e = run(&req(&dir.path().join("gone.qcow2"), "p:o:s:1.0.0"), &images).unwrap_err();
        assert!(matches!(e, ImportError::Unreadable { .. }), "{e}");
        // Bad URN.
        let raw = dir.path().join("d.raw");
        std::fs::File::create(&raw)
            .unwrap()
            .set_len(1 << 20)
            .unwrap();
        assert!(run(&req(&raw, "p:o:s"), &images).is_err());
        // A corrupt qcow2 (valid header, truncated body) fails in qemu-img: nothing published.
        let q = dir.path().join("bad.qcow2");
        qemu_img(&["create", "-f", "qcow2", q.to_str().unwrap(), "64M"]);
        let mut bytes = std::fs::read(&q).unwrap();
        bytes[0x20..0x28].copy_from_slice(&u64::MAX.to_be_bytes()); // l1 table offset
        std::fs::write(&q, &bytes).unwrap();
        let e = run(&req(&q, "p:o:s:1.0.0"), &images).unwrap_err();
        assert!(
            matches!(
                e,
                ImportError::QemuImg { .. } | ImportError::UnknownFormat { .. }
            ),
            "{e}"
        );
        assert!(entries(&images).is_empty(), "{:?}", entries(&images));
        // An existing version is refused and kept as it was.
        let v = run(&req(&raw, "p:o:s:1.0.0"), &images).unwrap();
        let before = std::fs::read(v.dir.join("manifest.json")).unwrap();
        let e = run(&req(&raw, "P:O:S:1.0.0"), &images).unwrap_err();
        assert!(matches!(e, ImportError::Exists { .. }), "{e}");
        assert_eq!(std::fs::read(v.dir.join("manifest.json")).unwrap(), before);
        assert_eq!(entries(&images).len(), 6, "{:?}", entries(&images));
        // Interrupted: the hidden folder goes.
        let e = import(
            &req(&raw, "p:o:s:1.0.1"),
            &images,
            &AtomicBool::new(true),
            &mut |_| {},
        )
        .unwrap_err();
        assert!(matches!(e, ImportError::Interrupted), "{e}");
        assert_eq!(entries(&images).len(), 6, "{:?}", entries(&images));
    }

    #[test]
    fn fixed_vhd_is_recognised_by_its_footer() {
        let dir = tempfile::tempdir().unwrap();
        let raw = dir.path().join("d.raw");
        std::fs::File::create(&raw)
            .unwrap()
            .set_len(8 << 20)
            .unwrap();
        let vhd = dir.path().join("d.vhd");
        qemu_img(&[
            "convert",
            "-f",
            "raw",
            "-O",
            "vpc",
            "-o",
            "subformat=fixed",
            raw.to_str().unwrap(),
            vhd.to_str().unwrap(),
        ]);
        assert_eq!(detect_format(&vhd).unwrap(), "vpc");
        assert_eq!(parse_percent("    (45.50/100%)\r"), Some(45));
    }
}
