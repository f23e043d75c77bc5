//! What every QEMU process gets from this host, decided once when the daemon starts, from
//! `serve`'s flags: the unprivileged user it runs as (`--qemu-user`), where it is placed (a
//! systemd scope or directly, `--qemu-scope`) and the guests' cpu cgroup (`--guest-cpu-weight`).
//! The daemon context owns the one value; [`super::process::spawn`] reads it.

use super::cgroup::CpuGroup;
use super::jail::{self, Creds, JailError};
use super::process::Placement;

#[derive(Clone, Debug)]
pub struct QemuHost {
    /// Who QEMU runs as; `None` when the daemon is not root (QEMU then runs as its user).
    pub creds: Option<Creds>,
    pub placement: Placement,
    /// The guests' cpu cgroup a directly placed QEMU joins (none: off or impossible).
    pub guest_group: Option<CpuGroup>,
}

impl QemuHost {
    /// Makes the QEMU user if missing (as root), and decides the placement.
    pub fn prepare(
        user: &str,
        scope: bool,
        guest_group: Option<CpuGroup>,
    ) -> Result<QemuHost, JailError> {
        let creds = if nix::unistd::geteuid().is_root() {
            let c = jail::ensure_user(user, std::path::Path::new("/dev/kvm").exists())?;
            tracing::info!(user = %c.user, uid = c.uid, gid = c.gid, groups = ?c.groups, "QEMU runs as");
            Some(c)
        } else {
            tracing::warn!("the daemon is not root: QEMU runs as the daemon's user");
            None
        };
        let placement = Placement::probe(scope);
        tracing::info!(placement = ?placement, "where QEMU processes are placed");
        Ok(QemuHost {
            creds,
            placement,
            guest_group,
        })
    }

    /// QEMU as a plain child of this process, as its user, in no cgroup (unit tests).
    #[cfg(test)]
    pub fn plain() -> std::sync::Arc<QemuHost> {
        std::sync::Arc::new(QemuHost {
            creds: None,
            placement: Placement::Direct,
            guest_group: None,
        })
    }
}
