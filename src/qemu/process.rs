//! The QEMU process, independent of the daemon.
//!
//! QEMU is started in its own session (setsid), with the tap fd inherited as fd 3 and every file
//! it needs at the numbers `argv::passed` gives (see `jail.rs`), its own stdout/stderr going to
//! `qemu.log` in the VM's run dir, as the unprivileged QEMU user (dropped to between fork and
//! exec), and a pidfile the daemon writes there. Stopping or killing the daemon therefore never
//! stops a VM. After a restart the daemon re-adopts a VM by reading the pidfile and checking
//! `/proc/<pid>/cmdline` carries the VM's UUID.
//!
//! Where systemd manages the host, QEMU is also put in its own transient scope
//! (`vmnode-vm-<vmId>.scope` in `machine.slice`, see [`Placement`]), so it is not in the daemon's
//! cgroup and `systemctl stop|restart vmnode` cannot reach it whatever the unit's `KillMode`.

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::argv::TAP_FD;
use super::jail::{self, Creds, FdPlan};
use crate::doctor::QEMU_BIN;

#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error("cannot start {bin}")]
    Spawn {
        bin: String,
        #[source]
        source: std::io::Error,
    },
    #[error("QEMU exited during start-up ({status}): {log}")]
    EarlyExit { status: String, log: String },
    #[error("cannot hand QEMU its files")]
    Jail(#[from] jail::JailError),
    #[error("cannot prepare {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Where QEMU's process is put on the host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Placement {
    /// QEMU is the daemon's child in the daemon's own cgroup (no systemd manages the host, as in
    /// containers and tests, or `VMNODE_QEMU_SCOPE=off`).
    Direct,
    /// `systemd-run --scope` runs first: it asks systemd for the transient scope
    /// `vmnode-vm-<vmId>.scope` in `machine.slice`, moves itself into it and then execs QEMU in
    /// place. The pid is therefore QEMU's own (the daemon's child, reaped as before), the
    /// inherited fds (the tap as fd 3) stay open, and `/proc/<pid>/cmdline` is QEMU's. The
    /// scope's name is the VM's, so a new QEMU of the same VM needs the old scope gone: with
    /// `--collect` systemd drops it when its last process exits, and the daemon only starts a
    /// VM's next QEMU after the previous one has exited. If systemd-run fails (say the scope
    /// still exists), its message lands in `qemu.log` and the start fails with it, like any QEMU
    /// start-up error. The tests run without systemd; a stand-in for systemd-run checks the
    /// exec-in-place contract (pid, fd 3, argv).
    SystemdScope {
        systemd_run: PathBuf,
        /// systemd ≥ 254 expands `$VAR` in a scope's command line unless told not to.
        no_expand: bool,
    },
}

/// Where systemd keeps the marker that it is PID 1 (sd_booted(3)).
const SYSTEMD_MARKER: &str = "/run/systemd/system";
const SYSTEMD_RUN: [&str; 2] = ["/usr/bin/systemd-run", "/bin/systemd-run"];

impl Placement {
    /// The placement for this host: a scope when `/run/systemd/system` exists and
    /// `systemd-run` is installed, unless `scope` is false (`serve --qemu-scope off`).
    pub fn probe(scope: bool) -> Placement {
        let systemd_run = SYSTEMD_RUN.iter().map(PathBuf::from).find(|p| p.is_file());
        let version = systemd_run.as_deref().and_then(systemd_version);
        Self::decide(
            Path::new(SYSTEMD_MARKER).is_dir(),
            (!scope).then_some("off"),
            systemd_run,
            version,
        )
    }

    /// The decision itself, from what [`Placement::probe`] found on the host.
    pub fn decide(
        systemd_booted: bool,
        setting: Option<&str>,
        systemd_run: Option<PathBuf>,
        systemd_version: Option<u32>,
    ) -> Placement {
        let off = matches!(setting, Some(s) if s.eq_ignore_ascii_case("off") || s == "0");
        match systemd_run {
            Some(systemd_run) if systemd_booted && !off => Placement::SystemdScope {
                systemd_run,
                no_expand: systemd_version.is_some_and(|v| v >= 254),
            },
            _ => Placement::Direct,
        }
    }

    /// The program and arguments that start QEMU with `argv` for the VM `vm_id`. With `creds`,
    /// a scope's QEMU drops to them through `setpriv` (util-linux, exec in place, so the pid and
    /// fds stay): systemd-run must run as root to ask systemd for the scope, so the drop cannot
    /// happen before it. A direct QEMU drops in the forked child instead (see `spawn`).
    pub fn command(
        &self,
        vm_id: &str,
        argv: &[String],
        creds: Option<&Creds>,
    ) -> (PathBuf, Vec<String>) {
        match self {
            Placement::Direct => (PathBuf::from(QEMU_BIN), argv.to_vec()),
            Placement::SystemdScope {
                systemd_run,
                no_expand,
            } => {
                let mut a = vec![
                    "--scope".to_string(),
                    "--quiet".into(),
                    "--collect".into(),
                    "--slice=machine.slice".into(),
                    format!("--unit={}", scope_unit(vm_id)),
                    format!("--description=vmnode VM {vm_id}"),
                ];
                if *no_expand {
                    a.push("--expand-environment=no".into());
                }
                a.push("--".into());
                if let Some(c) = creds {
                    let groups: Vec<String> = c.groups.iter().map(u32::to_string).collect();
                    a.extend([
                        SETPRIV.to_string(),
                        format!("--reuid={}", c.uid),
                        format!("--regid={}", c.gid),
                        if groups.is_empty() {
                            "--clear-groups".to_string()
                        } else {
                            format!("--groups={}", groups.join(","))
                        },
                        "--no-new-privs".into(),
                        "--".into(),
                    ]);
                }
                a.push(QEMU_BIN.into());
                a.extend(argv.iter().cloned());
                (systemd_run.clone(), a)
            }
        }
    }
}

/// util-linux's `setpriv`, which a scope's QEMU is exec'd through to drop privileges.
pub const SETPRIV: &str = "/usr/bin/setpriv";

/// The scope unit of a VM's QEMU (`systemctl status vmnode-vm-<vmId>.scope`).
pub fn scope_unit(vm_id: &str) -> String {
    format!("vmnode-vm-{vm_id}.scope")
}

/// `systemd-run --version` → 252 from "systemd 252 (252.38-1~deb12u1)".
fn systemd_version(systemd_run: &Path) -> Option<u32> {
    let out = std::process::Command::new(systemd_run)
        .arg("--version")
        .output()
        .ok()?;
    parse_systemd_version(&String::from_utf8_lossy(&out.stdout))
}

fn parse_systemd_version(text: &str) -> Option<u32> {
    text.split_whitespace().nth(1)?.parse().ok()
}

/// The vmId an argv carries (`-uuid <vmId>`, see `argv::build`).
fn vm_id_of(argv: &[String]) -> &str {
    argv.iter()
        .position(|a| a == "-uuid")
        .and_then(|i| argv.get(i + 1))
        .map(String::as_str)
        .unwrap_or("unknown")
}

/// Starts QEMU with `argv`, handing it `tap` as fd 3 and `files` at their numbers, as the
/// unprivileged QEMU user, placed and grouped as `host` says. Writes `pidfile`.
/// Returns the child (the caller reaps it); its pid is QEMU's in either placement.
pub fn spawn(
    host: &super::host::QemuHost,
    argv: &[String],
    tap: &OwnedFd,
    files: &[(i32, OwnedFd)],
    log: &Path,
    pidfile: &Path,
) -> Result<tokio::process::Child, ProcessError> {
    let child = spawn_placed(host, argv, tap, files, log)?;
    let mut child = child;
    crate::failpoint::crash_point("boot.qemu_forked");
    if let Some(pid) = child.id() {
        let written = write_pidfile(pidfile, pid as i32);
        if let Err(source) = written {
            // Without its pidfile a restarted daemon could not re-adopt it: do not keep it.
            let _ = child.start_kill();
            return Err(ProcessError::Io {
                path: pidfile.into(),
                source,
            });
        }
    }
    Ok(child)
}

fn spawn_placed(
    host: &super::host::QemuHost,
    argv: &[String],
    tap: &OwnedFd,
    files: &[(i32, OwnedFd)],
    log: &Path,
) -> Result<tokio::process::Child, ProcessError> {
    let (placement, creds) = (&host.placement, host.creds.as_ref());
    let logf = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(|e| ProcessError::Io {
            path: log.into(),
            source: e,
        })?;
    let logf2 = logf.try_clone().map_err(|e| ProcessError::Io {
        path: log.into(),
        source: e,
    })?;
    let mut all: Vec<(i32, &OwnedFd)> = vec![(TAP_FD, tap)];
    all.extend(files.iter().map(|(n, f)| (*n, f)));
    let mut plan = FdPlan::new(&all)?;
    // A direct QEMU drops privileges in the child; a scope's through setpriv after systemd-run.
    let direct = *placement == Placement::Direct;
    let drop_to = creds.filter(|_| direct).cloned();
    let groups: Vec<libc::gid_t> = drop_to
        .as_ref()
        .map(|c| c.groups.clone())
        .unwrap_or_default();
    let (program, args) = placement.command(vm_id_of(argv), argv, creds.filter(|_| !direct));
    // A direct QEMU joins the guests' cpu cgroup (a scope's is in machine.slice).
    let join = match host.guest_group.as_ref().filter(|_| direct) {
        Some(g) => Some(g.open_procs().map_err(|source| ProcessError::Io {
            path: g.dir.join("cgroup.procs"),
            source,
        })?),
        None => None,
    };
    let mut cmd = tokio::process::Command::new(&program);
    cmd.args(&args)
        .stdin(std::process::Stdio::null())
        .stdout(logf)
        .stderr(logf2)
        .kill_on_drop(false);
    // SAFETY: the closure runs in the forked child before exec and only calls async-signal-safe
    // functions (setsid, setpriority, write, fcntl, dup2, prctl, set*id) on fds and data prepared
    // before the fork.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The daemon runs above its guests (`serve --nice`); QEMU gets the default priority.
            if libc::setpriority(libc::PRIO_PROCESS, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // "0" moves the writer: this child, before it has a second thread.
            if let Some(fd) = &join {
                use std::os::fd::AsRawFd;
                if libc::write(fd.as_raw_fd(), b"0".as_ptr().cast(), 1) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            jail::install(&mut plan)?;
            if let Some(c) = &drop_to {
                jail::drop_privileges(c, &groups)?;
            }
            Ok(())
        });
    }
    cmd.spawn().map_err(|e| ProcessError::Spawn {
        bin: program.display().to_string(),
        source: e,
    })
}

/// If QEMU has exited (waiting up to `grace` for it), its exit as an error with the last lines
/// of its log: a failed QMP connect right after spawn is most often QEMU refusing its options.
pub async fn exited(
    child: &mut tokio::process::Child,
    log: &Path,
    grace: Duration,
) -> Option<ProcessError> {
    let status = tokio::time::timeout(grace, child.wait()).await.ok()?.ok()?;
    let text = std::fs::read_to_string(log).unwrap_or_default();
    Some(ProcessError::EarlyExit {
        status: status.to_string(),
        log: text
            .trim()
            .lines()
            .rev()
            .take(5)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join(" | "),
    })
}

/// True if `pid` is alive and its command line carries `vm_id` (so it is this VM's QEMU, not a
/// recycled pid).
pub fn pid_is_vm(pid: i32, vm_id: &str) -> bool {
    match std::fs::read(format!("/proc/{pid}/cmdline")) {
        Ok(raw) => {
            let args: Vec<&[u8]> = raw.split(|b| *b == 0).collect();
            let is_qemu = args
                .first()
                .map(|a| a.ends_with(QEMU_BIN.as_bytes()))
                .unwrap_or(false);
            is_qemu && args.contains(&vm_id.as_bytes())
        }
        Err(_) => false,
    }
}

/// The QEMU of `vm_id`, looked for among all processes: for a daemon killed between spawning
/// QEMU and writing its pidfile.
pub fn find_vm(vm_id: &str) -> Option<i32> {
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .find(|pid| pid_is_vm(*pid, vm_id) && !is_gone(*pid))
}

/// Writes QEMU's pidfile (atomically, 0600): what a restarted daemon reads first.
pub fn write_pidfile(path: &Path, pid: i32) -> std::io::Result<()> {
    crate::storage::fsutil::write_atomic(path, format!("{pid}\n").as_bytes(), 0o600)
}

pub fn read_pidfile(path: &Path) -> Option<i32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Is the process gone (or a zombie)?
pub fn is_gone(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit(')')
            .next()
            .map(|r| r.trim_start().starts_with('Z'))
            .unwrap_or(false),
        Err(_) => true,
    }
}

/// Waits up to `limit` for `pid` to exit; then SIGKILLs it and waits a little more.
pub async fn ensure_dead(pid: i32, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if is_gone(pid) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tracing::warn!(pid, "QEMU did not exit in time; sending SIGKILL");
    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    for _ in 0..100 {
        if is_gone(pid) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_own_pid_is_not_a_vm() {
        assert!(!super::pid_is_vm(std::process::id() as i32, "x"));
        assert!(super::is_gone(i32::MAX - 1));
    }

    const ID: &str = "11111111-2222-3333-4444-555555555555";

    fn argv() -> Vec<String> {
        [
            "-name",
            "guest=vm1",
            "-uuid",
            ID,
            "-netdev",
            "tap,id=net0,fd=3",
        ]
        .map(String::from)
        .to_vec()
    }

    #[test]
    fn placement_is_a_scope_only_under_systemd_with_systemd_run() {
        let run = Some(PathBuf::from("/usr/bin/systemd-run"));
        assert_eq!(
            Placement::decide(false, None, run.clone(), Some(252)),
            Placement::Direct
        );
        assert_eq!(Placement::decide(true, None, None, None), Placement::Direct);
        for off in ["off", "OFF", "0"] {
            assert_eq!(
                Placement::decide(true, Some(off), run.clone(), Some(252)),
                Placement::Direct
            );
        }
        assert_eq!(
            Placement::decide(true, Some("auto"), run.clone(), Some(252)),
            Placement::SystemdScope {
                systemd_run: "/usr/bin/systemd-run".into(),
                no_expand: false
            }
        );
        assert_eq!(
            Placement::decide(true, None, run, Some(254)),
            Placement::SystemdScope {
                systemd_run: "/usr/bin/systemd-run".into(),
                no_expand: true
            }
        );
    }

    #[test]
    fn direct_runs_qemu_itself() {
        let (prog, args) = Placement::Direct.command(ID, &argv(), None);
        assert_eq!(prog, PathBuf::from(QEMU_BIN));
        assert_eq!(args, argv());
    }

    #[test]
    fn scope_execs_the_same_qemu_argv_after_systemd_run() {
        let p = Placement::SystemdScope {
            systemd_run: "/usr/bin/systemd-run".into(),
            no_expand: true,
        };
        let (prog, args) = p.command(vm_id_of(&argv()), &argv(), None);
        assert_eq!(prog, PathBuf::from("/usr/bin/systemd-run"));
        let sep = args.iter().position(|a| a == "--").unwrap();
        // Everything after `--` is exactly what Direct would exec, so the pid's cmdline (checked
        // by pid_is_vm on re-adoption) and the tap's fd=3 are unchanged.
        assert_eq!(args[sep + 1], QEMU_BIN);
        assert_eq!(&args[sep + 2..], argv().as_slice());
        let opts = &args[..sep];
        for want in [
            "--scope",
            "--quiet",
            "--collect",
            "--slice=machine.slice",
            "--expand-environment=no",
        ] {
            assert!(opts.iter().any(|a| a == want), "missing {want} in {opts:?}");
        }
        assert!(opts.contains(&format!("--unit=vmnode-vm-{ID}.scope")));
        let (_, old) = Placement::SystemdScope {
            systemd_run: "/usr/bin/systemd-run".into(),
            no_expand: false,
        }
        .command(ID, &argv(), None);
        assert!(!old.iter().any(|a| a.starts_with("--expand-environment")));
    }

    #[test]
    fn a_scope_drops_privileges_through_setpriv() {
        let p = Placement::SystemdScope {
            systemd_run: "/usr/bin/systemd-run".into(),
            no_expand: true,
        };
        let c = Creds {
            user: "vmnode-qemu".into(),
            uid: 990,
            gid: 985,
            groups: vec![985, 110],
        };
        let (_, args) = p.command(ID, &argv(), Some(&c));
        let sep = args.iter().position(|a| a == "--").unwrap();
        let tail = &args[sep + 1..];
        assert_eq!(
            &tail[..6],
            [
                SETPRIV,
                "--reuid=990",
                "--regid=985",
                "--groups=985,110",
                "--no-new-privs",
                "--"
            ]
        );
        assert_eq!(tail[6], QEMU_BIN);
        assert_eq!(&tail[7..], argv().as_slice());
        // A direct QEMU drops in the child: its command line is QEMU's alone.
        let (prog, direct) = Placement::Direct.command(ID, &argv(), Some(&c));
        assert_eq!((prog, direct), (PathBuf::from(QEMU_BIN), argv()));
    }

    /// The scope path end to end, with a stand-in for systemd-run that does what the real one
    /// does after systemd has made the scope: exec the command in place. Whatever it execs sees
    /// the tap as fd 3 and has the pid the daemon got back (no systemd runs here).
    #[tokio::test]
    async fn through_a_scope_wrapper_qemu_keeps_the_pid_and_fd_3() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("seen");
        let fake = dir.path().join("systemd-run");
        // Options up to `--`, then the QEMU binary's name, then QEMU's argv: record the pid, where
        // fd 3 points and the argv, as the process that the exec produced.
        std::fs::write(
            &fake,
            format!(
                "#!/bin/sh\nwhile [ \"$1\" != -- ]; do shift; done; shift\n\
                 [ \"$1\" = {QEMU_BIN} ] || exit 9; shift\n\
                 exec sh -c 'echo $$; readlink /proc/$$/fd/3; echo \"$*\"; readlink /proc/$$/fd/9; \
                 ls -l /proc/$$/fd | grep -- \" -> \"' sh \"$@\" > {}\n",
                out.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
        let tap: OwnedFd = std::fs::File::open(dir.path()).unwrap().into();
        let placement = Placement::SystemdScope {
            systemd_run: fake,
            no_expand: false,
        };
        // A passed file lands at its number, whatever number the daemon had it at.
        let disk = dir.path().join("disk");
        std::fs::write(&disk, b"").unwrap();
        let files = vec![(9, jail::open_one(&disk, jail::Access::ReadWrite).unwrap())];
        let host = super::super::host::QemuHost {
            creds: None,
            placement,
            guest_group: None,
        };
        let mut child =
            spawn_placed(&host, &argv(), &tap, &files, &dir.path().join("qemu.log")).unwrap();
        let pid = child.id().unwrap();
        assert!(child.wait().await.unwrap().success());
        let seen = std::fs::read_to_string(&out).unwrap();
        let lines: Vec<&str> = seen.lines().collect();
        assert_eq!(lines[0], pid.to_string(), "{seen}");
        assert_eq!(lines[1], dir.path().display().to_string(), "{seen}");
        assert_eq!(lines[2], argv().join(" "), "{seen}");
        assert_eq!(lines[3], disk.display().to_string(), "{seen}");
        // Only stdio, the tap and the passed file, besides the shell's own (a saved copy of its
        // stdin, which dash keeps above 9): nothing else the test process had open gets through.
        for l in &lines[4..] {
            let (left, target) = l.split_once(" -> ").unwrap();
            let n: i32 = left.rsplit(' ').next().unwrap().parse().unwrap();
            let ok = match n {
                0 => target == "/dev/null",
                1 => target == out.display().to_string(),
                2 => target.ends_with("qemu.log"),
                3 => target == dir.path().display().to_string(),
                9 => target == disk.display().to_string(),
                _ => n >= 10 && target == "/dev/null",
            };
            assert!(ok, "fd {n} -> {target} in {seen}");
        }
    }

    #[test]
    fn systemd_version_and_vm_id_are_read() {
        assert_eq!(
            parse_systemd_version("systemd 252 (252.38-1~deb12u1)\n+PAM +AUDIT"),
            Some(252)
        );
        assert_eq!(parse_systemd_version(""), None);
        assert_eq!(vm_id_of(&argv()), ID);
        assert_eq!(vm_id_of(&[]), "unknown");
    }
}
