//! The one installer: CI goes through the command a new user runs, and on a host it has set up
//! it has nothing left to do. (Its decision is unit-tested in src/install/plan.rs and checked
//! against the real apt in src/install/simulate.rs.)

use std::process::Command;

/// `.ci/run` installs through `vmnode doctor --fix` and keeps no apt line of its own, so a
/// green CI proves the path `quickstart` takes.
#[test]
fn ci_installs_through_the_installer_quickstart_uses() {
    let ci = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/.ci/run")).unwrap();
    let live: Vec<&str> = ci
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#'))
        .collect();
    let fix = live
        .iter()
        .position(|l| l.contains("vmnode doctor --fix --for tests"))
        .expect(".ci/run runs vmnode doctor --fix --for tests");
    let build = live
        .iter()
        .position(|l| l.starts_with("cargo build"))
        .expect(".ci/run builds vmnode");
    assert!(build < fix, "the binary is built before it installs");
    for l in &live {
        assert!(
            !(l.contains("apt-get") || l.contains("apt ")),
            ".ci/run has an apt line of its own: {l}"
        );
    }
    let qs = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/src/cli/quickstart.rs"
    ))
    .unwrap();
    assert!(
        qs.contains("crate::install::fix("),
        "quickstart installs through src/install"
    );
}

/// After `.ci/run`'s install the host has all the test suite needs: the installer says so and
/// plans nothing, and `doctor` passes every check.
#[test]
fn on_a_host_it_set_up_the_installer_has_nothing_to_do() {
    let out = Command::new(env!("CARGO_BIN_EXE_vmnode"))
        .args(["doctor", "--fix", "--for", "tests", "--dry-run"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("all installed"), "{err}");
    assert!(!err.contains("would run"), "{err}");
    let out = Command::new(env!("CARGO_BIN_EXE_vmnode"))
        .arg("doctor")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("packages     ok"), "{text}");
    assert!(text.contains("All checks passed."), "{text}");
}
