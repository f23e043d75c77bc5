//! What dpkg and apt say of a set of packages: the installed versions (`dpkg-query`) and the
//! candidates (`apt-cache policy`). The parsers are pure and tested on the tools' real output.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use super::plan::PkgState;
use super::InstallError;

/// Installed versions from `dpkg-query -W -f '${Package}\t${db:Status-Abbrev}\t${Version}\n'`:
/// only packages whose status is `ii` (installed; `rc` is removed with its config left).
pub fn parse_dpkg_query(out: &str) -> BTreeMap<String, String> {
    out.lines()
        .filter_map(|l| {
            let mut f = l.split('\t');
            let (pkg, status, ver) = (f.next()?, f.next()?, f.next()?);
            (status.trim() == "ii" && !ver.is_empty()).then(|| {
                let pkg = pkg.split(':').next().unwrap_or(pkg);
                (pkg.to_string(), ver.trim().to_string())
            })
        })
        .collect()
}

/// Candidates from `apt-cache policy P...`: each package's block starts with `P:` at column 0;
/// `Candidate: (none)` means none.
pub fn parse_apt_policy(out: &str) -> BTreeMap<String, String> {
    let mut res = BTreeMap::new();
    let mut current: Option<&str> = None;
    for l in out.lines() {
        if !l.starts_with(' ') && l.ends_with(':') {
            current = Some(l.trim_end_matches(':'));
        } else if let (Some(p), Some(v)) = (current, l.trim().strip_prefix("Candidate:")) {
            let v = v.trim();
            if v != "(none)" && !v.is_empty() {
                res.insert(p.to_string(), v.to_string());
            }
        }
    }
    res
}

fn output(cmd: &str, args: &[&str]) -> Result<String, InstallError> {
    let out = Command::new(cmd)
        .args(args)
        .env("LC_ALL", "C")
        .output()
        .map_err(|source| InstallError::Spawn {
            cmd: cmd.into(),
            source,
        })?;
    // dpkg-query exits 1 when some package is unknown and still prints the known ones.
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Asks dpkg and apt about `pkgs`.
pub fn probe(pkgs: &[&str]) -> Result<BTreeMap<String, PkgState>, InstallError> {
    probe_in(pkgs, None)
}

/// [`probe`] against another dpkg database: `admindir` holds a `status` file in place of
/// /var/lib/dpkg's (the tests' made-up hosts, checked against the real apt).
pub fn probe_in(
    pkgs: &[&str],
    admindir: Option<&Path>,
) -> Result<BTreeMap<String, PkgState>, InstallError> {
    let dir = admindir.map(|d| format!("--admindir={}", d.display()));
    let status = admindir.map(|d| format!("Dir::State::status={}", d.join("status").display()));
    let mut args: Vec<&str> = dir.iter().map(String::as_str).collect();
    args.extend(["-W", "-f", "${Package}\t${db:Status-Abbrev}\t${Version}\n"]);
    args.extend(pkgs);
    let installed = parse_dpkg_query(&output("dpkg-query", &args)?);
    let mut args: Vec<&str> = status.iter().flat_map(|s| ["-o", s.as_str()]).collect();
    args.push("policy");
    args.extend(pkgs);
    let candidates = parse_apt_policy(&output("apt-cache", &args)?);
    Ok(pkgs
        .iter()
        .map(|p| {
            (
                p.to_string(),
                PkgState {
                    installed: installed.get(*p).cloned(),
                    candidate: candidates.get(*p).cloned(),
                },
            )
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dpkg_query_keeps_only_installed() {
        let out = "qemu-utils\tii \t1:10.0.2+ds-2+deb13u1~bpo12+1\n\
                   cpio\trc \t2.13+dfsg-7.1\n\
                   libc6:amd64\tii \t2.36-9+deb12u10\n\
                   chromium\tun \t\n";
        let m = parse_dpkg_query(out);
        assert_eq!(m.len(), 2, "{m:?}");
        assert_eq!(m["qemu-utils"], "1:10.0.2+ds-2+deb13u1~bpo12+1");
        assert_eq!(m["libc6"], "2.36-9+deb12u10");
    }

    /// `apt-cache policy qemu-utils qemu-system-x86 nosuch` on the fresh machine.
    #[test]
    fn apt_policy_candidates() {
        let out = "qemu-utils:
  Installed: 1:10.0.2+ds-2+deb13u1~bpo12+1
  Candidate: 1:10.0.2+ds-2+deb13u1~bpo12+1
  Version table:
 *** 1:10.0.2+ds-2+deb13u1~bpo12+1 100
        100 /var/lib/dpkg/status
     1:7.2+dfsg-7+deb12u18+b3 500
        500 http://mirror.example/debian bookworm/main amd64 Packages
qemu-system-x86:
  Installed: (none)
  Candidate: 1:7.2+dfsg-7+deb12u18+b3
  Version table:
     1:7.2+dfsg-7+deb12u18+b3 500
        500 http://mirror.example/debian bookworm/main amd64 Packages
genisoimage:
  Installed: (none)
  Candidate: (none)
  Version table:
";
        let m = parse_apt_policy(out);
        assert_eq!(m["qemu-utils"], "1:10.0.2+ds-2+deb13u1~bpo12+1");
        assert_eq!(m["qemu-system-x86"], "1:7.2+dfsg-7+deb12u18+b3");
        assert!(!m.contains_key("genisoimage"));
    }
}
