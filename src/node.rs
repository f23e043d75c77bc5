//! The daemon's context: what every part of `vmnode serve` shares, built once in `daemon.rs`
//! and handed down (no part reaches for a process-wide value). The VM manager (`vm::Vms`), the
//! API's handlers, extensions and the network watch all hold one `Arc<Node>`.
//!
//! ```text
//!   daemon::run ── builds ──▶ Node { cfg, db, subscription, account, accel, net, blobs,
//!                                    accounts, qemu, health }
//!                                 ▲            ▲              ▲
//!                 vm::Vms ────────┘   api::AppState ───┘   extensions ──┘
//! ```

use std::sync::Arc;

use crate::blob::{accounts::Accounts, Store};
use crate::config::DaemonConfig;
use crate::doctor::AccelDecision;
use crate::net::NodeNet;
use crate::qemu::host::QemuHost;
use crate::storage::{db::Db, health::Health};

pub struct Node {
    pub cfg: DaemonConfig,
    /// The state store (VMs, NICs, vnets, addresses, groups, accounts, extensions).
    pub db: Db,
    /// The node's one subscription.
    pub subscription: String,
    /// The node's own storage account (OS disks, diagnostics).
    pub account: String,
    /// KVM or TCG, and why.
    pub accel: AccelDecision,
    /// Bridges, taps, DHCP, DNS, NAT.
    pub net: NodeNet,
    /// The blob store the blob service serves; OS disks are its page blobs.
    pub blobs: Arc<Store>,
    /// Storage accounts as resources.
    pub accounts: Arc<Accounts>,
    /// Who QEMU runs as, where it is placed, its cpu cgroup (decided at start).
    pub qemu: Arc<QemuHost>,
    /// The state dir's checker: new work it cannot take is refused up front.
    pub health: Arc<Health>,
}
