//! Host checks and the accelerator decision.
//!
//! KVM is used only when `/dev/kvm` is backed by hardware KVM (`kvm_intel` / `kvm_amd`). A
//! paravirtual nested hypervisor (`kvm_pvm`) exposes `/dev/kvm` too but hangs stock kernels, so
//! there, as when `/dev/kvm` is missing, guests run under TCG.

use std::fmt;
use std::path::Path;
use std::process::Command;

/// What the user asked for with `--accel`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum AccelChoice {
    Auto,
    Kvm,
    Tcg,
}

/// The accelerator QEMU will use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Accel {
    Kvm,
    Tcg,
}

impl Accel {
    pub fn qemu_name(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        }
    }
}

impl fmt::Display for Accel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.qemu_name())
    }
}

/// The decision and the reason for it, as `doctor` prints it.
#[derive(Clone, Debug)]
pub struct AccelDecision {
    pub accel: Accel,
    pub reason: String,
}

/// Loaded kernel modules: /sys/module (also lists built-ins; some hosts have no /proc/modules),
/// plus /proc/modules where it exists.
fn loaded_modules() -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir("/sys/module")
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    out.extend(
        std::fs::read_to_string("/proc/modules")
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split_whitespace().next().map(str::to_string)),
    );
    out
}

/// Decides from the modules list and whether /dev/kvm exists (split out for tests).
pub fn decide_from(modules: &[String], dev_kvm: bool, choice: AccelChoice) -> AccelDecision {
    let has = |m: &str| modules.iter().any(|x| x == m);
    let hw = if has("kvm_intel") {
        Some("kvm_intel")
    } else if has("kvm_amd") {
        Some("kvm_amd")
    } else {
        None
    };
    let auto = match (dev_kvm, hw) {
        (true, Some(m)) => AccelDecision {
            accel: Accel::Kvm,
            reason: format!("/dev/kvm is hardware KVM ({m})"),
        },
        (true, None) if has("kvm_pvm") => AccelDecision {
            accel: Accel::Tcg,
            reason: "/dev/kvm is the paravirtual kvm_pvm, which hangs stock kernels: using TCG"
                .into(),
        },
        (true, None) => AccelDecision {
            accel: Accel::Tcg,
            reason: "/dev/kvm exists but neither kvm_intel nor kvm_amd is loaded: using TCG".into(),
        },
        (false, _) => AccelDecision {
            accel: Accel::Tcg,
            reason: "no /dev/kvm: using TCG (software emulation)".into(),
        },
    };
    match choice {
        AccelChoice::Auto => auto,
        AccelChoice::Tcg => AccelDecision {
            accel: Accel::Tcg,
            reason: "--accel tcg".into(),
        },
        AccelChoice::Kvm => AccelDecision {
            accel: Accel::Kvm,
            reason: format!("--accel kvm (auto would say: {})", auto.reason),
        },
    }
}

pub fn decide(choice: AccelChoice) -> AccelDecision {
    decide_from(&loaded_modules(), Path::new("/dev/kvm").exists(), choice)
}

pub const QEMU_BIN: &str = "qemu-system-x86_64";

/// What every missing-package check says to run.
const FIX: &str = "vmnode doctor --fix";

/// The installer's plan for quickstart's packages: empty when all are in.
fn packages_check() -> Check {
    let (ok, detail) = match crate::install::plan_for(crate::install::Purpose::Quickstart) {
        Ok(p) if p.is_empty() => (true, "quickstart's Debian packages installed".to_string()),
        Ok(p) => (
            false,
            format!(
                "missing or mismatched: {} (fix runs: {})",
                p.packages().join(" "),
                p.command_line()
            ),
        ),
        Err(e) => (false, e.to_string()),
    };
    Check {
        name: "packages",
        ok,
        detail,
        fix: Some(FIX.into()),
    }
}

/// One line of the doctor's report.
pub struct Check {
    pub name: &'static str,
    pub ok: bool,
    pub detail: String,
    pub fix: Option<String>,
}

fn command_output(cmd: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(cmd).args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

pub fn qemu_version() -> Option<String> {
    command_output(QEMU_BIN, &["--version"]).and_then(|s| s.lines().next().map(str::to_string))
}

pub fn checks(qemu_user: &str) -> Vec<Check> {
    let mut out = Vec::new();
    let qemu = qemu_version();
    out.push(Check {
        name: "qemu",
        ok: qemu.is_some(),
        detail: qemu.unwrap_or_else(|| format!("{QEMU_BIN} not found")),
        fix: Some(FIX.into()),
    });
    out.push(packages_check());
    let d = decide(AccelChoice::Auto);
    out.push(Check {
        name: "accel",
        ok: true,
        detail: format!("{} — {}", d.accel, d.reason),
        fix: None,
    });
    out.push(qemu_user_check(qemu_user));
    let tun = Path::new("/dev/net/tun").exists();
    out.push(Check {
        name: "tun",
        ok: tun,
        detail: if tun {
            "/dev/net/tun present".into()
        } else {
            "/dev/net/tun missing".into()
        },
        fix: Some("modprobe tun".into()),
    });
    let ip = command_output("ip", &["-V"]);
    out.push(Check {
        name: "iproute2",
        ok: ip.is_some(),
        detail: ip.unwrap_or_else(|| "ip not found".into()),
        fix: Some(FIX.into()),
    });
    let netns = Path::new("/proc/self/ns/net").exists();
    out.push(Check {
        name: "netns",
        ok: netns,
        detail: if netns {
            "network namespaces supported".into()
        } else {
            "no netns support".into()
        },
        fix: Some("a kernel with CONFIG_NET_NS".into()),
    });
    let bridge = Path::new("/sys/module/bridge").exists() || Path::new("/sys/class/net").exists();
    out.push(Check {
        name: "bridge",
        ok: bridge,
        detail: "Linux bridge".into(),
        fix: Some("modprobe bridge".into()),
    });
    for (tool, pkg) in [("xz", "xz-utils"), ("cpio", "cpio"), ("dpkg-deb", "dpkg")] {
        let ok = which(tool);
        out.push(Check {
            name: "image-tools",
            ok,
            detail: format!("{tool} {}", if ok { "present" } else { "missing" }),
            fix: Some(format!("{FIX} (or apt-get install -y {pkg})")),
        });
    }
    let root = nix::unistd::geteuid().is_root();
    out.push(Check {
        name: "root",
        ok: root,
        detail: if root {
            "running as root".into()
        } else {
            "not root".into()
        },
        fix: Some("run the daemon as root (it creates namespaces, bridges and taps)".into()),
    });
    out
}

pub fn which(tool: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
        .unwrap_or(false)
}

/// `vmnode doctor`'s line about the QEMU user.
fn qemu_user_check(user: &str) -> Check {
    use crate::qemu::jail::{kvm_gid, lookup, SANDBOX};
    let user = user.to_string();
    let fix = Some(format!(
        "the daemon creates it at start; or: useradd --system --no-create-home --shell /usr/sbin/nologin {user}"
    ));
    match lookup(&user) {
        Ok(Some(u)) => {
            let name = std::ffi::CString::new(user.clone()).unwrap_or_default();
            let groups = nix::unistd::getgrouplist(&name, u.gid).unwrap_or_default();
            let kvm = kvm_gid();
            let in_kvm = kvm.is_some_and(|k| groups.iter().any(|g| g.as_raw() == k));
            // Only a host whose guests run under KVM needs it (not kvm_pvm's, which run TCG).
            let needs_kvm = kvm.is_some() && decide(AccelChoice::Auto).accel == Accel::Kvm;
            Check {
                name: "qemu-user",
                ok: !u.uid.is_root() && (in_kvm || !needs_kvm),
                detail: format!(
                    "QEMU runs as {user} (uid {}, gid {}){}, -sandbox {SANDBOX}",
                    u.uid,
                    u.gid,
                    match (needs_kvm, in_kvm) {
                        (true, true) => ", in group kvm",
                        (true, false) => ", NOT in group kvm: KVM guests cannot start",
                        _ => "",
                    }
                ),
                fix: Some(format!("usermod -a -G kvm {user}"))
                    .filter(|_| needs_kvm && !in_kvm)
                    .or(fix),
            }
        }
        Ok(None) => Check {
            name: "qemu-user",
            ok: true,
            detail: format!("{user} does not exist yet (the daemon creates it at start)"),
            fix,
        },
        Err(e) => Check {
            name: "qemu-user",
            ok: false,
            detail: format!("cannot look up {user}: {e}"),
            fix,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mods(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn hardware_kvm_is_used() {
        let d = decide_from(&mods(&["kvm_intel", "kvm"]), true, AccelChoice::Auto);
        assert_eq!(d.accel, Accel::Kvm);
        let d = decide_from(&mods(&["kvm_amd", "kvm"]), true, AccelChoice::Auto);
        assert_eq!(d.accel, Accel::Kvm);
    }

    #[test]
    fn pvm_means_tcg() {
        let d = decide_from(&mods(&["kvm_pvm", "kvm"]), true, AccelChoice::Auto);
        assert_eq!(d.accel, Accel::Tcg);
        assert!(d.reason.contains("kvm_pvm"), "{}", d.reason);
    }

    #[test]
    fn no_dev_kvm_means_tcg_even_with_modules() {
        let d = decide_from(&mods(&["kvm_intel"]), false, AccelChoice::Auto);
        assert_eq!(d.accel, Accel::Tcg);
    }

    #[test]
    fn explicit_choice_wins() {
        let d = decide_from(&mods(&["kvm_pvm"]), true, AccelChoice::Kvm);
        assert_eq!(d.accel, Accel::Kvm);
        let d = decide_from(&mods(&["kvm_intel"]), true, AccelChoice::Tcg);
        assert_eq!(d.accel, Accel::Tcg);
    }
}
