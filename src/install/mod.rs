//! The one installer: `vmnode doctor --fix` (and `quickstart`, and `.ci/run`) install what a
//! host lacks through here, so CI runs the path a new user takes.
//!
//! [`plan::plan`] decides (pure, unit-tested); [`probe`] asks dpkg and apt; [`fix`] runs apt
//! with the plan's exact line, printing it first, and checks the result.

pub mod plan;
mod probe;
#[cfg(test)]
mod simulate;

use std::process::Command;

pub use plan::Plan;

/// What the packages are for: each set includes the ones before it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Purpose {
    /// `vmnode quickstart` and `vmnode serve` with the tiny image.
    Quickstart,
    /// Also building the debian-12 images (debootstrap, partitions, the boot loader) and
    /// cloud-init seeds.
    Images,
    /// Also the test suite (busybox for the network tests, nftables, Python for the SDK tests,
    /// Chromium for the viewer, ssh for logins).
    Tests,
}

/// `qemu-img` for disks, `ip` for namespaces, `xz`/`cpio` for the tiny image.
const QUICKSTART: &[&str] = &[
    "qemu-system-x86",
    "qemu-utils",
    "iproute2",
    "xz-utils",
    "cpio",
];
/// debootstrap, sfdisk (fdisk), mke2fs -d (e2fsprogs), the boot partition (dosfstools, mtools,
/// syslinux, syslinux-common), NoCloud seeds (genisoimage).
const IMAGES: &[&str] = &[
    "debootstrap",
    "fdisk",
    "e2fsprogs",
    "dosfstools",
    "mtools",
    "syslinux",
    "syslinux-common",
    "genisoimage",
];
/// busybox-static (udhcpc/udhcpd in network tests), nftables, python3-venv (the SDKs and `az`),
/// chromium (the viewer's page), openssh-client (tests/cloud_init.rs logs in).
const TESTS: &[&str] = &[
    "busybox-static",
    "nftables",
    "python3-venv",
    "chromium",
    "openssh-client",
];

impl Purpose {
    pub fn packages(self) -> Vec<&'static str> {
        let mut v = QUICKSTART.to_vec();
        if matches!(self, Purpose::Images | Purpose::Tests) {
            v.extend(IMAGES);
        }
        if self == Purpose::Tests {
            v.extend(TESTS);
        }
        v
    }
}

#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error(transparent)]
    Plan(#[from] plan::PlanError),
    #[error("could not run {cmd}: {source}")]
    Spawn {
        cmd: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "missing packages: {missing}; run as root (sudo vmnode doctor --fix), or: sudo {line}"
    )]
    NotRoot { missing: String, line: String },
    #[error("`{line}` failed ({status}); its output is above")]
    Apt { line: String, status: String },
    #[error("after `{line}`, still not installed as planned: {left}")]
    StillMissing { line: String, left: String },
}

fn say(s: &str) {
    eprintln!("==> {s}");
}

/// Every package the plan looks at: all of QEMU's and the wanted ones.
fn probed(wanted: &[&'static str]) -> Vec<&'static str> {
    let mut v: Vec<&'static str> = plan::QEMU_FAMILY.to_vec();
    v.extend(wanted.iter().filter(|p| !plan::QEMU_FAMILY.contains(p)));
    v
}

/// The plan for this host now (no apt-get update; the candidates are what apt already knows).
pub fn plan_for(purpose: Purpose) -> Result<Plan, InstallError> {
    let wanted = purpose.packages();
    Ok(plan::plan(&wanted, &probe::probe(&probed(&wanted))?)?)
}

fn apt(args: &[String], line: &str) -> Result<(), InstallError> {
    let st = Command::new("apt-get")
        .args(args)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()
        .map_err(|source| InstallError::Spawn {
            cmd: "apt-get".into(),
            source,
        })?;
    if st.success() {
        Ok(())
    } else {
        Err(InstallError::Apt {
            line: line.into(),
            status: st.to_string(),
        })
    }
}

/// Installs what `purpose` needs and is missing. `dry_run` prints the plan and installs nothing.
/// Returns the plan that was carried out (empty: nothing was missing).
pub fn fix(purpose: Purpose, dry_run: bool) -> Result<Plan, InstallError> {
    let wanted = purpose.packages();
    let first = plan::plan(&wanted, &probe::probe(&probed(&wanted))?);
    if matches!(&first, Ok(p) if p.is_empty()) {
        say(&format!(
            "host packages for {purpose:?}: all installed ({})",
            wanted.join(" ")
        ));
        return Ok(Plan::default());
    }
    if dry_run {
        let p = first?;
        say(&format!("would run: {}", p.command_line()));
        return Ok(p);
    }
    if !nix::unistd::geteuid().is_root() {
        let p = first?;
        return Err(InstallError::NotRoot {
            missing: p.packages().join(" "),
            line: p.command_line(),
        });
    }
    // The candidates are only as fresh as apt's lists (none on a new machine): update, plan again.
    say("apt-get update");
    apt(&["update".into(), "-q".into()], "apt-get update")?;
    let p = plan_for(purpose)?;
    let line = p.command_line();
    say(&line);
    if !p.is_empty() {
        apt(&p.apt_args(), &line)?;
    }
    let after = plan_for(purpose)?;
    if !after.is_empty() {
        return Err(InstallError::StillMissing {
            line,
            left: after.command_line(),
        });
    }
    Ok(p)
}
