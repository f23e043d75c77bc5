//! Brings back what a host network restart takes away: every [`CHECK_EVERY`] the daemon's
//! namespace is listed, and
//! - a vnet whose bridge is gone (one this daemon brought up and is not tearing down) gets it
//!   again, with its gateways and the platform addresses, and
//!   new DHCP, DNS and IMDS sockets (the old ones were bound to the deleted link, which no new link of
//!   the same name revives); the host-access veth goes back on the default bridge;
//! - a running VM whose tap is gone gets it re-made on QEMU's own descriptor
//!   (`plumbing::reattach_tap`: the link vanishes on `ip link del` even while QEMU holds it), then
//!   attached to its bridge and admitted through the filter again; a tap left without its bridge
//!   (the bridge was re-made) is put back on it.
//!
//! The guest keeps its address: its lease is in the store, and its next renewal reaches the
//! re-bound responder. A bridge deleted and made again by someone else between two checks is not
//! noticed (the name is there); its taps stay off it until a VM restarts.

use std::time::Duration;

use vmnode_network::plumbing;

use super::nic::NicRecord;
use super::vnet::VnetRecord;
use super::{NodeNet, DEFAULT_BRIDGE};
use crate::storage::db::Kind;

/// How often the namespace is checked.
pub const CHECK_EVERY: Duration = Duration::from_secs(2);

/// The host-access veth's end in the namespace (see [`NodeNet::setup`]).
const HOST_VETH: &str = "vnhost0";

/// A running VM's NIC and the QEMU process holding its tap.
pub struct Attached {
    pub nic: NicRecord,
    pub pid: i32,
}

impl NodeNet {
    /// One check: rebuilds missing bridges and taps. Returns what it rebuilt (for logs and
    /// tests); failures are logged and tried again at the next check.
    pub fn repair(&self, running: &[Attached]) -> Vec<String> {
        let ns = self.inner.ns.clone();
        let mut done = Vec::new();
        let links = match plumbing::list_links(&ns) {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(error = %crate::report::chain(&e), "cannot list the namespace's links");
                return done;
            }
        };
        let vnets = match self.inner.db.list::<VnetRecord>(Kind::Vnet) {
            Ok(v) => v,
            Err(e) => {
                tracing::error!(error = %crate::report::chain(&e), "cannot read the vnets");
                return done;
            }
        };
        let mut rebuilt = Vec::new();
        // Bridges gone, and those whose last rebuild failed (an empty runtime).
        let failed = |v: &&VnetRecord| {
            self.inner
                .runtimes
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(&super::vnet::key(&v.rg, &v.name))
                .is_some_and(|rt| rt.tasks.is_empty())
        };
        for v in vnets
            .iter()
            .filter(|v| !links.contains(&v.bridge) || failed(v))
        {
            // Only a vnet this daemon brought up (and is not tearing down) is rebuilt.
            let _rebuild = self.inner.rebuild.lock().unwrap_or_else(|p| p.into_inner());
            let key = super::vnet::key(&v.rg, &v.name);
            let old = self
                .inner
                .runtimes
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&key);
            let Some(old) = old else { continue };
            tracing::warn!(vnet = %v.name, bridge = %v.bridge, "the vnet's bridge is gone (a host network restart?): rebuilding it");
            // Its DHCP, DNS and IMDS sockets were bound to the old link: they go, new ones come.
            for t in old.tasks {
                t.abort();
            }
            match self.bring_up(v) {
                Ok(()) => {
                    done.push(format!("bridge {}", v.bridge));
                    rebuilt.push(v.bridge.clone());
                }
                Err(e) => {
                    tracing::error!(bridge = %v.bridge, error = %crate::report::chain(&e), "cannot rebuild the bridge (tried again at the next check)");
                    // An empty runtime marks it as this daemon's, so the next check tries again.
                    self.inner
                        .runtimes
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(key, super::Runtime { tasks: Vec::new() });
                }
            }
        }
        if rebuilt.iter().any(|b| b == DEFAULT_BRIDGE) && links.iter().any(|l| l == HOST_VETH) {
            match plumbing::attach_to_bridge(&ns, HOST_VETH, DEFAULT_BRIDGE) {
                Ok(()) => done.push(format!("{HOST_VETH} on {DEFAULT_BRIDGE}")),
                Err(e) => {
                    tracing::error!(error = %crate::report::chain(&e), "cannot put the host veth back on the bridge")
                }
            }
        }
        for a in running {
            let tap = &a.nic.tap;
            let bridge = match self.vnet(&a.nic.vnet_rg, &a.nic.vnet_name) {
                Ok(Some(v)) => v.bridge,
                _ => continue,
            };
            let missing = !links.contains(tap);
            if missing {
                match plumbing::reattach_tap(a.pid, tap) {
                    Ok(true) => {
                        tracing::warn!(%tap, pid = a.pid, "a running VM's tap was gone: re-made on QEMU's descriptor");
                    }
                    // Made again in the meantime (e.g. the VM restarted).
                    Ok(false) => {}
                    Err(e) => {
                        tracing::error!(%tap, pid = a.pid, error = %crate::report::chain(&e), "cannot re-make the tap");
                        continue;
                    }
                }
            } else if !rebuilt.contains(&bridge) {
                continue;
            }
            let put_back = plumbing::attach_to_bridge(&self.inner.ns, tap, &bridge)
                .map_err(super::NetError::from)
                .and_then(|_| self.admit(&a.nic));
            match put_back {
                Ok(()) => done.push(format!("tap {tap} on {bridge}")),
                Err(e) => {
                    tracing::error!(%tap, error = %crate::report::chain(&e), "cannot put the tap back on its bridge")
                }
            }
        }
        if !done.is_empty() {
            tracing::info!(repaired = ?done, "network rebuilt");
        }
        done
    }
}

/// Checks the namespace forever; `running` lists the running VMs' NICs at each check.
pub async fn watch<F>(net: NodeNet, running: F)
where
    F: Fn() -> Vec<Attached> + Send + Sync + 'static,
{
    let running = std::sync::Arc::new(running);
    let mut tick = tokio::time::interval(CHECK_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let (net, running) = (net.clone(), running.clone());
        let _ = tokio::task::spawn_blocking(move || net.repair(&running())).await;
    }
}
