//! The installer's decision, a pure function: what the host has and what apt offers in, the
//! packages (with pins) to install out.
//!
//! The one rule apt cannot work out alone: QEMU's packages must come from one release. A host can
//! come with a newer `qemu-utils` (a backport) than the release's `qemu-system-x86`; asking apt
//! for both unpinned keeps the newer one, whose `Breaks: qemu-system-common (<< 1:8.0)` then
//! refuses the install. So every QEMU package that is wanted or already installed is pinned to
//! the version `qemu-system-x86` has (installed) or will have (its candidate).

use std::collections::BTreeMap;

/// QEMU's architecture-specific packages, which must share one version. `qemu-system-x86` leads:
/// the others follow it. (`qemu-system-data` is `Architecture: all`, so its version lacks the
/// binNMU suffix `+bN` the others may carry; apt brings it at the candidate without a pin.)
pub const QEMU_FAMILY: &[&str] = &[
    "qemu-system-x86",
    "qemu-utils",
    "qemu-block-extra",
    "qemu-system-common",
    "qemu-system-gui",
];

/// The source release of a Debian version: without a binNMU suffix (`1:7.2+dfsg-7+deb12u18+b3`
/// and `1:7.2+dfsg-7+deb12u18` are one release, rebuilt).
fn release(v: &str) -> &str {
    match v.rfind("+b") {
        Some(i) if i + 2 < v.len() && v[i + 2..].bytes().all(|b| b.is_ascii_digit()) => &v[..i],
        _ => v,
    }
}
const QEMU_LEAD: &str = "qemu-system-x86";

/// What dpkg and apt say of one package.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PkgState {
    /// The installed version (`dpkg-query`, status `ii`), if installed.
    pub installed: Option<String>,
    /// The version `apt-get install` would pick (`apt-cache policy`'s Candidate), if any.
    pub candidate: Option<String>,
}

/// One package to install, with the version to pin it to where one is needed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pin {
    pub package: String,
    pub version: Option<String>,
}

impl Pin {
    /// As apt takes it: `name` or `name=version`.
    pub fn arg(&self) -> String {
        match &self.version {
            Some(v) => format!("{}={v}", self.package),
            None => self.package.clone(),
        }
    }
}

/// What to ask apt for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub install: Vec<Pin>,
    /// An installed package is pinned to another version (possibly older): apt needs
    /// `--allow-downgrades` to take it.
    pub allow_downgrades: bool,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PlanError {
    #[error(
        "apt knows no installable version of {0} (run `apt-get update`; is the host Debian 12 with its main archive in /etc/apt/sources.list?)"
    )]
    NoCandidate(String),
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.install.is_empty()
    }

    /// The packages' names, without versions.
    pub fn packages(&self) -> Vec<&str> {
        self.install.iter().map(|i| i.package.as_str()).collect()
    }

    /// The arguments after `apt-get`.
    pub fn apt_args(&self) -> Vec<String> {
        let mut a: Vec<String> = ["install", "-y", "-q"].map(String::from).to_vec();
        if self.allow_downgrades {
            a.push("--allow-downgrades".into());
        }
        a.extend(self.install.iter().map(Pin::arg));
        a
    }

    /// The exact command, as printed to the user.
    pub fn command_line(&self) -> String {
        format!("apt-get {}", self.apt_args().join(" "))
    }
}

/// Decides what to install so that every package in `wanted` is installed, QEMU's from one
/// release. `state` holds every package of `wanted` and of [`QEMU_FAMILY`] that dpkg or apt knows
/// (a package absent from it is neither installed nor installable).
pub fn plan(wanted: &[&str], state: &BTreeMap<String, PkgState>) -> Result<Plan, PlanError> {
    let get = |p: &str| state.get(p).cloned().unwrap_or_default();
    let mut out = Plan::default();
    let wants_qemu = wanted.iter().any(|p| QEMU_FAMILY.contains(p));
    let lead = get(QEMU_LEAD);
    let qemu_version = match (&lead.installed, wants_qemu) {
        (Some(v), _) => Some(v.clone()),
        (None, true) => Some(
            lead.candidate
                .clone()
                .ok_or_else(|| PlanError::NoCandidate(QEMU_LEAD.into()))?,
        ),
        (None, false) => None,
    };
    if let Some(v) = &qemu_version {
        // Lead first: apt resolves it, then the others at its version.
        for &p in QEMU_FAMILY {
            let s = get(p);
            let needed = match &s.installed {
                Some(have) => release(have) != release(v),
                None => wanted.contains(&p),
            };
            if needed {
                out.allow_downgrades |= s.installed.is_some();
                out.install.push(Pin {
                    package: p.into(),
                    version: Some(v.clone()),
                });
            }
        }
    }
    for &p in wanted.iter().filter(|p| !QEMU_FAMILY.contains(p)) {
        let s = get(p);
        if s.installed.is_some() {
            continue;
        }
        if s.candidate.is_none() {
            return Err(PlanError::NoCandidate(p.into()));
        }
        out.install.push(Pin {
            package: p.into(),
            version: None,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SYS_72: &str = "1:7.2+dfsg-7+deb12u18+b3";
    const UTILS_10: &str = "1:10.0.2+ds-2+deb13u1~bpo12+1";

    fn st(rows: &[(&str, Option<&str>, Option<&str>)]) -> BTreeMap<String, PkgState> {
        rows.iter()
            .map(|(p, i, c)| {
                (
                    p.to_string(),
                    PkgState {
                        installed: i.map(String::from),
                        candidate: c.map(String::from),
                    },
                )
            })
            .collect()
    }

    const QUICKSTART: &[&str] = super::super::QUICKSTART;

    /// The fresh machine of this project's kind: qemu-utils 10.x from a backport is installed
    /// (and is its own candidate, being newer), qemu-system-x86 7.2 is offered.
    #[test]
    fn a_newer_qemu_utils_is_pinned_down_to_qemu_system_x86s_release() {
        let s = st(&[
            ("qemu-system-x86", None, Some(SYS_72)),
            ("qemu-utils", Some(UTILS_10), Some(UTILS_10)),
            ("qemu-block-extra", None, Some(SYS_72)),
            ("iproute2", Some("6.1.0-3"), Some("6.1.0-3")),
            ("xz-utils", Some("5.4.1-1"), Some("5.4.1-1")),
            ("cpio", None, Some("2.13+dfsg-7.1")),
        ]);
        let p = plan(QUICKSTART, &s).unwrap();
        assert_eq!(
            p.command_line(),
            format!(
                "apt-get install -y -q --allow-downgrades qemu-system-x86={SYS_72} qemu-utils={SYS_72} cpio"
            )
        );
    }

    #[test]
    fn a_bare_host_gets_everything_with_qemu_pinned_to_one_release() {
        let s = st(&[
            ("qemu-system-x86", None, Some(SYS_72)),
            ("qemu-utils", None, Some(SYS_72)),
            ("iproute2", None, Some("6.1.0-3")),
            ("xz-utils", None, Some("5.4.1-1")),
            ("cpio", None, Some("2.13+dfsg-7.1")),
        ]);
        let p = plan(QUICKSTART, &s).unwrap();
        assert!(!p.allow_downgrades, "nothing installed, nothing downgraded");
        assert_eq!(
            p.command_line(),
            format!(
                "apt-get install -y -q qemu-system-x86={SYS_72} qemu-utils={SYS_72} iproute2 xz-utils cpio"
            )
        );
    }

    #[test]
    fn a_host_with_everything_needs_nothing() {
        let s = st(&[
            ("qemu-system-x86", Some(SYS_72), Some(SYS_72)),
            ("qemu-utils", Some(SYS_72), Some(SYS_72)),
            ("qemu-block-extra", Some(SYS_72), Some(SYS_72)),
            ("iproute2", Some("6.1.0-3"), None),
            ("xz-utils", Some("5.4.1-1"), Some("5.4.1-1")),
            ("cpio", Some("2.13"), Some("2.13")),
        ]);
        let p = plan(QUICKSTART, &s).unwrap();
        assert!(p.is_empty(), "{p:?}");
    }

    /// QEMU installed by hand, then a backport of qemu-utils (or its block modules) on top: the
    /// installed qemu-system-x86 leads, and the stray one is brought back to it.
    #[test]
    fn an_installed_qemu_system_x86_leads_a_stray_family_member() {
        let s = st(&[
            ("qemu-system-x86", Some(SYS_72), Some(SYS_72)),
            ("qemu-utils", Some(SYS_72), Some(UTILS_10)),
            ("qemu-block-extra", Some(UTILS_10), Some(UTILS_10)),
            ("iproute2", Some("6.1.0-3"), None),
            ("xz-utils", Some("5"), None),
            ("cpio", Some("2"), None),
        ]);
        let p = plan(QUICKSTART, &s).unwrap();
        assert_eq!(
            p.command_line(),
            format!("apt-get install -y -q --allow-downgrades qemu-block-extra={SYS_72}")
        );
    }

    #[test]
    fn a_binnmu_rebuild_is_the_same_release() {
        assert_eq!(release(SYS_72), "1:7.2+dfsg-7+deb12u18");
        assert_eq!(release("1:7.2+dfsg-7+deb12u18"), "1:7.2+dfsg-7+deb12u18");
        assert_eq!(release("2.0+bzr"), "2.0+bzr");
        let s = st(&[
            ("qemu-system-x86", Some(SYS_72), Some(SYS_72)),
            ("qemu-utils", Some("1:7.2+dfsg-7+deb12u18+b1"), Some(SYS_72)),
            ("qemu-system-common", Some(SYS_72), Some(SYS_72)),
        ]);
        assert!(plan(&["qemu-system-x86", "qemu-utils"], &s)
            .unwrap()
            .is_empty());
    }

    #[test]
    fn no_candidate_says_to_update() {
        let s = st(&[("qemu-utils", Some(UTILS_10), Some(UTILS_10))]);
        let e = plan(QUICKSTART, &s).unwrap_err();
        assert_eq!(e, PlanError::NoCandidate("qemu-system-x86".into()));
        assert!(e.to_string().contains("apt-get update"), "{e}");
        let s = st(&[("qemu-system-x86", Some(SYS_72), None)]);
        let e = plan(&["chromium"], &s).unwrap_err();
        assert_eq!(e, PlanError::NoCandidate("chromium".into()));
    }

    #[test]
    fn packages_without_qemu_are_not_pinned() {
        let s = st(&[
            ("qemu-utils", Some(UTILS_10), Some(UTILS_10)),
            ("chromium", None, Some("156")),
        ]);
        let p = plan(&["chromium"], &s).unwrap();
        assert_eq!(p.command_line(), "apt-get install -y -q chromium");
    }
}
