//! Outbound NAT for the daemon, only with `vmnode serve --nat-via IFACE` (the mechanism and
//! where the masquerade happens: `vmnode_network::nat`). What was applied outside the daemon's
//! namespace is recorded in `run/nat.json` before it is applied, so that it can be undone when the
//! daemon stops, and at the next start (with or without the flag) after a crash. The run dir, like
//! the namespace and the sysctls, does not outlive a reboot, so the record never outlives what it
//! describes.

use std::path::Path;

use vmnode_network::nat::{self, Applied, NatError};

use super::NetError;
use crate::storage::fsutil::write_atomic;

/// The namespace IFACE is looked up in: where the host end of the host-access veth goes
/// (`--host-netns NAME`), else the daemon's own (the host's).
fn outer(host_netns: Option<&str>) -> Option<&str> {
    host_netns.filter(|n| !n.is_empty())
}

/// Checks `--nat-via IFACE` before anything is changed.
pub fn plan(ns: &str, host_netns: Option<&str>, iface: &str) -> Result<Applied, NatError> {
    nat::plan(ns, outer(host_netns), iface)
}

/// Removes whatever NAT an earlier run left (the record, else the daemon's side), then applies
/// `wanted`, recording it first.
pub fn reconcile(ns: &str, record: &Path, wanted: Option<&Applied>) -> Result<(), NetError> {
    remove(ns, record)?;
    if let Some(a) = wanted {
        let json = serde_json::to_vec_pretty(a).map_err(|e| NetError::NatRecord(e.into()))?;
        write_atomic(record, &json, 0o600).map_err(NetError::NatRecord)?;
        nat::apply(ns, a)?;
        tracing::info!(
            iface = %a.iface,
            outer = a.outer.as_deref().unwrap_or("(host)"),
            transit = %a.transit,
            "outbound NAT on: the vnets reach out through {}", a.iface
        );
    }
    Ok(())
}

/// Undoes the recorded NAT (if any) and the daemon's side of it; forgets the record.
pub fn remove(ns: &str, record: &Path) -> Result<(), NetError> {
    let stale = match std::fs::read(record) {
        Ok(b) => match serde_json::from_slice::<Applied>(&b) {
            Ok(a) => Some(a),
            Err(e) => {
                tracing::warn!(record = %record.display(), error = %e, "unreadable NAT record: cleaning the daemon's side only");
                None
            }
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(NetError::NatRecord(e)),
    };
    nat::remove(ns, stale.as_ref())?;
    if let Some(a) = &stale {
        tracing::info!(iface = %a.iface, "outbound NAT off");
        std::fs::remove_file(record).map_err(NetError::NatRecord)?;
    }
    Ok(())
}
