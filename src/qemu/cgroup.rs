//! The guests' cpu cgroup: without systemd, every QEMU of the node joins `vmnode-guests`, which
//! gives them what `machine.slice` gives a scope's QEMU under systemd (see `process.rs`).
//!
//! Grouped, twenty booting guests compete with the daemon for the CPU as one scheduling entity,
//! not as twenty: the API, the blob service and DHCP keep their latency while every core is
//! busy with guests, and whatever CPU the host leaves unused is still all the guests'. Among
//! themselves guests share fairly, as before. Each QEMU joins in its forked child, before exec,
//! so it is never scheduled outside the group. cgroup v2 (`cpu.weight`) and v1 (`cpu.shares`)
//! are both handled; where neither can be used the guests run ungrouped, with a warning.
//!
//! The daemon itself, when started in the root cgroup (no service manager placed it), moves to
//! `vmnode-daemon`, a sibling of the guests' group with ten times its weight. In the root it
//! would be in its login session's autogroup, sharing one process's worth of CPU with every
//! other program started from that session (a shell, a benchmark's clients), whatever their
//! niceness: while guests booted, its blob threads then waited seconds to run.

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

/// The group's directory name, under the cpu hierarchy.
pub const NAME: &str = "vmnode-guests";

/// The group's weight in cgroup v2 units (1..10000; 100 is one ordinary process's worth).
pub const DEFAULT_WEIGHT: u32 = 100;

/// The daemon's group, beside the guests' (made only when the daemon starts in the root).
pub const DAEMON_NAME: &str = "vmnode-daemon";

/// The daemon group's weight: ten times all guests together.
pub const DEFAULT_DAEMON_WEIGHT: u32 = 1000;

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("no cpu controller is available (no cgroup v1 `cpu` hierarchy, and cgroup v2 offers no `cpu` here)")]
    NoCpuController,
    #[error("cannot {what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    V1,
    V2,
}

/// A cpu cgroup of the node's (the guests' or the daemon's): where it is (or would be) made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CpuGroup {
    pub dir: PathBuf,
    pub version: Version,
}

/// Makes the guests' group with `weight` (`serve --guest-cpu-weight`; 0 leaves guests
/// ungrouped); `None` when turned off or impossible (said in the log). Called once, before the
/// daemon leaves the cgroup it started in (see [`join_daemon_group`]).
pub fn guests(weight: u32) -> Option<CpuGroup> {
    if weight == 0 {
        tracing::info!("guests are not grouped in a cpu cgroup (--guest-cpu-weight 0)");
        return None;
    }
    match make(weight) {
        Ok(g) => {
            tracing::info!(dir = %g.dir.display(), version = ?g.version, weight, "guests share a cpu cgroup");
            Some(g)
        }
        Err(e) => {
            tracing::warn!(error = %e, "guests run without a cpu cgroup of their own: a busy guest can delay the node's services");
            None
        }
    }
}

impl CpuGroup {
    /// The group's `cgroup.procs`, opened for the child to join through (write "0").
    pub fn open_procs(&self) -> std::io::Result<OwnedFd> {
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(self.dir.join("cgroup.procs"))?;
        Ok(f.into())
    }
}

fn io_err<'a>(
    what: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> CgroupError + 'a {
    move |source| CgroupError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// This process's cgroup files: (`/proc/self/mountinfo`, `/proc/self/cgroup`).
fn own_cgroup() -> Result<(String, String), CgroupError> {
    let read = |p: &str| std::fs::read_to_string(p).map_err(io_err("read", Path::new(p)));
    Ok((read("/proc/self/mountinfo")?, read("/proc/self/cgroup")?))
}

fn v2_has_cpu(mount: &Path, at: &Path) -> bool {
    std::fs::read_to_string(mount.join(rel(at)).join("cgroup.controllers"))
        .is_ok_and(|c| c.split_whitespace().any(|x| x == "cpu"))
}

fn make(weight: u32) -> Result<CpuGroup, CgroupError> {
    let (mounts, own) = own_cgroup()?;
    let g = locate(&mounts, &own, v2_has_cpu).ok_or(CgroupError::NoCpuController)?;
    create(&g, weight)?;
    Ok(g)
}

/// Moves the whole daemon (every thread) into `vmnode-daemon` with `weight` (v2 units) when it
/// runs in the root cpu cgroup; elsewhere its service manager placed it, and it stays. Returns
/// the group joined. Call after [`guests`], so the guests' group is placed from where the daemon
/// started.
pub fn join_daemon_group(weight: u32) -> Result<Option<PathBuf>, CgroupError> {
    let (mounts, own) = own_cgroup()?;
    let Some(g) = locate_daemon(&mounts, &own, v2_has_cpu) else {
        return Ok(None);
    };
    create(&g, weight)?;
    let procs = g.dir.join("cgroup.procs");
    std::fs::write(&procs, std::process::id().to_string())
        .map_err(io_err("join the daemon to", &procs))?;
    Ok(Some(g.dir))
}

/// Makes the group (and, under v2, hands the cpu controller down to it) with `weight`.
fn create(g: &CpuGroup, weight: u32) -> Result<(), CgroupError> {
    if g.version == Version::V2 {
        // The parent must hand the cpu controller down to its children.
        let parent = g.dir.parent().unwrap_or(Path::new("/"));
        let ctl = parent.join("cgroup.subtree_control");
        let on =
            std::fs::read_to_string(&ctl).is_ok_and(|c| c.split_whitespace().any(|x| x == "cpu"));
        if !on {
            std::fs::write(&ctl, "+cpu").map_err(io_err("enable cpu in", &ctl))?;
        }
    }
    match std::fs::create_dir(&g.dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(io_err("create", &g.dir)(e)),
    }
    let (file, value) = match g.version {
        Version::V2 => ("cpu.weight", weight.clamp(1, 10_000)),
        Version::V1 => ("cpu.shares", (weight.clamp(1, 10_000) * 1024 / 100).max(2)),
    };
    let path = g.dir.join(file);
    std::fs::write(&path, value.to_string()).map_err(io_err("write", &path))?;
    Ok(())
}

fn rel(p: &Path) -> &Path {
    p.strip_prefix("/").unwrap_or(p)
}

/// Where the group goes, from `/proc/self/mountinfo` and `/proc/self/cgroup`: a v1 `cpu`
/// hierarchy wins (on hybrid hosts it owns the controller); else cgroup v2 if it offers `cpu`
/// (asked through `v2_has_cpu(mount, cgroup)`). Under v1 the group is a child of the daemon's
/// own cgroup; under v2 a sibling (a v2 cgroup with processes cannot share out to children),
/// or a child of the root when the daemon is in the root. A daemon already in `vmnode-daemon`
/// counts as being in that group's parent.
pub fn locate(
    mountinfo: &str,
    own: &str,
    v2_has_cpu: impl Fn(&Path, &Path) -> bool,
) -> Option<CpuGroup> {
    let (mount, version, at) = own_cpu_cgroup(mountinfo, own)?;
    let parent = match version {
        Version::V1 => at,
        Version::V2 => at.parent().unwrap_or(Path::new("/")).to_path_buf(),
    };
    (version == Version::V1 || v2_has_cpu(&mount, &parent)).then(|| CpuGroup {
        dir: mount.join(rel(&parent)).join(NAME),
        version,
    })
}

/// Where the daemon's own group goes: `vmnode-daemon` in the root, beside the guests' group,
/// and only when the daemon is in the root cpu cgroup (else `None`: it stays where it is).
pub fn locate_daemon(
    mountinfo: &str,
    own: &str,
    v2_has_cpu: impl Fn(&Path, &Path) -> bool,
) -> Option<CpuGroup> {
    let (mount, version, at) = own_cpu_cgroup(mountinfo, own)?;
    let root = Path::new("/");
    (at == root && (version == Version::V1 || v2_has_cpu(&mount, root))).then(|| CpuGroup {
        dir: mount.join(DAEMON_NAME),
        version,
    })
}

/// The cpu controller's mount, its version, and this process's cgroup in it (with a trailing
/// `vmnode-daemon` taken off).
fn own_cpu_cgroup(mountinfo: &str, own: &str) -> Option<(PathBuf, Version, PathBuf)> {
    let mut v1 = None;
    let mut v2 = None;
    let fields = |line: &str| {
        let (pre, post) = line.split_once(" - ")?;
        let mount = pre.split_whitespace().nth(4)?.to_string();
        let mut post = post.split_whitespace();
        let fstype = post.next()?.to_string();
        let opts = post.nth(1).unwrap_or("").to_string();
        Some((mount, fstype, opts))
    };
    for (mount, fstype, opts) in mountinfo.lines().filter_map(fields) {
        match fstype.as_str() {
            "cgroup" if opts.split(',').any(|o| o == "cpu") => v1 = Some(PathBuf::from(&mount)),
            "cgroup2" => v2 = Some(PathBuf::from(&mount)),
            _ => {}
        }
    }
    let own_path = |pred: &dyn Fn(&str, &str) -> bool| {
        own.lines().find_map(|l| {
            let mut f = l.splitn(3, ':');
            let (id, ctrls, path) = (f.next()?, f.next()?, f.next()?);
            pred(id, ctrls).then(|| PathBuf::from(path))
        })
    };
    let (mount, version, at) = match v1 {
        Some(m) => (
            m,
            Version::V1,
            own_path(&|_, c| c.split(',').any(|x| x == "cpu"))?,
        ),
        None => (
            v2?,
            Version::V2,
            own_path(&|id, c| id == "0" && c.is_empty())?,
        ),
    };
    let at = match at.file_name() {
        Some(n) if n == DAEMON_NAME => at.parent().unwrap_or(Path::new("/")).to_path_buf(),
        _ => at,
    };
    Some((mount, version, at))
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
25 24 0:22 / /sys/fs/cgroup rw,relatime - tmpfs none rw,mode=755
26 25 0:23 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
27 25 0:24 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
28 25 0:25 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset
35 25 0:30 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw";

    const UNIFIED: &str = "\
30 24 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot";

    #[test]
    fn a_v1_cpu_hierarchy_wins_and_the_group_is_a_child_of_the_daemons() {
        let own = "4:memory:/x\n1:cpu:/\n0::/\n";
        let g = locate(HYBRID, own, |_, _| true).unwrap();
        assert_eq!(g.dir, Path::new("/sys/fs/cgroup/cpu/vmnode-guests"));
        assert_eq!(g.version, Version::V1);
        let own = "2:cpu,cpuacct:/lab/node1\n";
        let g = locate(
            "26 25 0:23 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct",
            own,
            |_, _| false,
        )
        .unwrap();
        assert_eq!(
            g.dir,
            Path::new("/sys/fs/cgroup/cpu,cpuacct/lab/node1/vmnode-guests")
        );
        // cpuset and cpuacct alone are not the cpu controller.
        let only = "27 25 0:24 / /c rw - cgroup cgroup rw,cpuacct\n28 25 0:25 / /s rw - cgroup cgroup rw,cpuset";
        assert_eq!(locate(only, "1:cpuacct:/\n", |_, _| true), None);
    }

    #[test]
    fn under_v2_the_group_is_a_sibling_and_needs_the_cpu_controller() {
        let g = locate(UNIFIED, "0::/\n", |m, at| {
            assert_eq!((m, at), (Path::new("/sys/fs/cgroup"), Path::new("/")));
            true
        })
        .unwrap();
        assert_eq!(g.dir, Path::new("/sys/fs/cgroup/vmnode-guests"));
        assert_eq!(g.version, Version::V2);
        let g = locate(UNIFIED, "0::/system.slice/vmnode.service\n", |_, at| {
            at == Path::new("/system.slice")
        })
        .unwrap();
        assert_eq!(
            g.dir,
            Path::new("/sys/fs/cgroup/system.slice/vmnode-guests")
        );
        assert_eq!(locate(UNIFIED, "0::/\n", |_, _| false), None);
        assert_eq!(locate("", "0::/\n", |_, _| true), None);
    }

    #[test]
    fn the_daemon_gets_its_own_group_only_from_the_root_and_the_guests_stay_beside_it() {
        let own = "4:memory:/x\n1:cpu:/\n0::/\n";
        let d = locate_daemon(HYBRID, own, |_, _| true).unwrap();
        assert_eq!(d.dir, Path::new("/sys/fs/cgroup/cpu/vmnode-daemon"));
        assert_eq!(d.version, Version::V1);
        let d = locate_daemon(UNIFIED, "0::/\n", |_, _| true).unwrap();
        assert_eq!(d.dir, Path::new("/sys/fs/cgroup/vmnode-daemon"));
        assert_eq!(locate_daemon(UNIFIED, "0::/\n", |_, _| false), None);
        // Placed by a service manager: it stays.
        assert_eq!(locate_daemon(HYBRID, "1:cpu:/lab\n", |_, _| true), None);
        let svc = "0::/system.slice/vmnode.service\n";
        assert_eq!(locate_daemon(UNIFIED, svc, |_, _| true), None);
        // Already in vmnode-daemon (a restart from inside it): it is where it belongs, and the
        // guests' group is still in the root, not under the daemon's.
        let moved = "1:cpu:/vmnode-daemon\n";
        assert_eq!(
            locate_daemon(HYBRID, moved, |_, _| true).unwrap().dir,
            Path::new("/sys/fs/cgroup/cpu/vmnode-daemon")
        );
        assert_eq!(
            locate(HYBRID, moved, |_, _| true).unwrap().dir,
            Path::new("/sys/fs/cgroup/cpu/vmnode-guests")
        );
        assert_eq!(
            locate(UNIFIED, "0::/vmnode-daemon\n", |_, _| true)
                .unwrap()
                .dir,
            Path::new("/sys/fs/cgroup/vmnode-guests")
        );
    }
}
