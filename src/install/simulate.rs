//! The installer's plans checked against the real apt (`apt-get -s`, which changes nothing) on
//! made-up hosts: copies of this host's dpkg database with packages taken out or replaced.

use std::path::Path;
use std::process::Command;

use super::{plan, probe, probed, Purpose};

const QEMU_ALL: &[&str] = &[
    "qemu-system-x86",
    "qemu-utils",
    "qemu-block-extra",
    "qemu-system-common",
    "qemu-system-gui",
    "qemu-system-data",
];

/// The preinstalled backport of the project's fresh machine, as dpkg records it (its `Breaks`
/// is the one that stopped `quickstart`).
const QEMU_UTILS_10: &str = "Package: qemu-utils
Status: install ok installed
Priority: optional
Section: otherosfs
Installed-Size: 9000
Maintainer: Debian QEMU Team
Architecture: amd64
Source: qemu
Version: 1:10.0.2+ds-2+deb13u1~bpo12+1
Breaks: qemu-system-common (<< 1:8.0+dfsg-5~)
Description: QEMU utilities";

/// The packages a dpkg stanza depends on (Depends and Pre-Depends, alternatives included).
fn depends_of(stanza: &str) -> Vec<&str> {
    stanza
        .lines()
        .filter_map(|l| {
            l.strip_prefix("Depends: ")
                .or_else(|| l.strip_prefix("Pre-Depends: "))
        })
        .flat_map(|d| d.split([',', '|']))
        .filter_map(|d| d.split_whitespace().next())
        .map(|d| d.split(':').next().unwrap_or(d))
        .collect()
}

/// A dpkg admin dir whose `status` is this host's without the packages in `drop` and those that
/// depend on them (a consistent host that never had them), plus `add`.
fn host_without(drop: &[&str], add: Option<&str>) -> tempfile::TempDir {
    let real = std::fs::read_to_string("/var/lib/dpkg/status").expect("a Debian host");
    let name = |st: &str| {
        st.lines()
            .next()
            .and_then(|l| l.strip_prefix("Package: "))
            .map(str::to_string)
    };
    let mut gone: std::collections::BTreeSet<String> = drop.iter().map(|d| d.to_string()).collect();
    let mut out: Vec<&str> = real.split("\n\n").filter(|st| name(st).is_some()).collect();
    loop {
        let before = out.len();
        out.retain(|st| {
            let n = name(st).unwrap_or_default();
            let keep = !gone.contains(&n) && !depends_of(st).iter().any(|d| gone.contains(*d));
            if !keep {
                gone.insert(n);
            }
            keep
        });
        if out.len() == before {
            break;
        }
    }
    out.extend(add);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("status"), out.join("\n\n") + "\n").unwrap();
    dir
}

/// What apt said, when it refused to resolve a line.
#[derive(Debug, thiserror::Error)]
#[error("apt-get -s refused: {0}")]
struct Refused(String);

/// `apt-get -s` of `args` against `dir`'s database: Ok(output) when apt resolves it.
fn simulate(dir: &Path, args: &[String]) -> Result<String, Refused> {
    let out = Command::new("apt-get")
        .arg("-s")
        .arg("-o")
        .arg(format!(
            "Dir::State::status={}",
            dir.join("status").display()
        ))
        .args(args)
        .env("LC_ALL", "C")
        .output()
        .expect("apt-get");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() {
        Ok(text)
    } else {
        Err(Refused(text))
    }
}

fn plan_in(dir: &Path, purpose: Purpose) -> plan::Plan {
    let wanted = purpose.packages();
    let state = probe::probe_in(&probed(&wanted), Some(dir)).unwrap();
    plan::plan(&wanted, &state).unwrap()
}

/// The case: qemu-utils 10.x installed, no qemu-system-x86. apt refuses the unpinned
/// line (so the made-up host is the real trouble), and takes the plan's.
#[test]
fn the_plan_for_a_host_with_a_newer_qemu_utils_resolves_in_apt() {
    let dir = host_without(&[QEMU_ALL, &["cpio"]].concat(), Some(QEMU_UTILS_10));
    let old = ["install", "-y", "qemu-system-x86", "qemu-utils", "cpio"].map(String::from);
    let refused = simulate(dir.path(), &old).expect_err("the unpinned line must fail here");
    assert!(
        refused.0.contains("Breaks: qemu-system-common"),
        "{refused}"
    );
    let p = plan_in(dir.path(), Purpose::Quickstart);
    assert!(p.allow_downgrades, "{}", p.command_line());
    let ok =
        simulate(dir.path(), &p.apt_args()).unwrap_or_else(|e| panic!("{}: {e}", p.command_line()));
    assert!(ok.contains("Inst qemu-system-x86 "), "{ok}");
    assert!(
        ok.contains("Inst qemu-utils [1:10.0.2"),
        "qemu-utils is downgraded: {ok}"
    );
}

/// None of the test suite's packages installed (nor QEMU): the plan installs them all.
#[test]
fn the_plan_for_a_bare_host_resolves_in_apt() {
    let wanted = Purpose::Tests.packages();
    // e2fsprogs is Essential on Debian: a host without it is not a host apt can work on.
    let drop: Vec<&str> = wanted
        .iter()
        .copied()
        .filter(|w| *w != "e2fsprogs")
        .collect();
    let dir = host_without(&[QEMU_ALL, &drop].concat(), None);
    let p = plan_in(dir.path(), Purpose::Tests);
    let names = p.packages();
    for w in &wanted {
        assert!(
            names.contains(w) || *w == "e2fsprogs",
            "{w} not in {names:?}"
        );
    }
    let ok =
        simulate(dir.path(), &p.apt_args()).unwrap_or_else(|e| panic!("{}: {e}", p.command_line()));
    assert!(ok.contains("Inst qemu-system-x86 "), "{ok}");
}

/// This host as it is: after `.ci/run`'s `vmnode doctor --fix --for tests` it has everything,
/// and the plan is empty; on any other host the plan it gives resolves.
#[test]
fn the_plan_for_this_host_resolves_and_is_empty_when_all_is_installed() {
    let dir = host_without(&[], None);
    let wanted = Purpose::Tests.packages();
    let state = probe::probe_in(&probed(&wanted), Some(dir.path())).unwrap();
    let p = plan::plan(&wanted, &state).unwrap();
    let all_in = wanted.iter().all(|w| state[*w].installed.is_some());
    if all_in {
        assert!(
            p.is_empty() || p.packages().iter().all(|n| QEMU_ALL.contains(n)),
            "{p:?}"
        );
    }
    if !p.is_empty() {
        simulate(dir.path(), &p.apt_args()).unwrap_or_else(|e| panic!("{}: {e}", p.command_line()));
    }
}
