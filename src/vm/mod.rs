//! VMs: the manager (validation, the registry of VM actors) and one actor per VM.
//!
//! ```text
//!            create                 QEMU up, QMP ok
//!   (none) ─────────▶ Creating ───────────────────────▶ Succeeded/running
//!                        │ step failed                      │  QEMU exits / QMP closes
//!                        ▼                                  ▼
//!                      Failed                         Succeeded/stopped
//!   any state ── delete ──▶ Deleting ──▶ (gone: QEMU, tap, lease, address, disk, logs)
//!   daemon restart: every stored VM is re-adopted (pid + UUID checked, QMP reconnected);
//!   a live QEMU whose QMP cannot be reached is shown `unknown` and never killed on a guess.
//! ```
//! API handlers never touch a VM: they call the manager, which sends the VM's actor a command
//! and reads its published state (a tokio `watch`).

pub mod actor;
pub mod cloudinit;
mod create;
pub mod lifecycle;
pub mod model;
pub mod ops;
pub mod osprofile;
pub mod provision;
pub mod sizes;
pub mod snapshot;
mod validate;

pub use validate::{capacity, validate_computer_name, validate_rg_name, validate_vm_name};

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, oneshot, watch};

use crate::catalog::{CatalogError, ImageRef};
use crate::config::DaemonConfig;
use crate::diagnostics::recorder::Recorder;
use crate::doctor::AccelDecision;
use crate::net::NodeNet;
use crate::qemu::qga::Agent;
use crate::storage::db::{Db, DbError, Kind};
pub use actor::ActorError;
use model::VmRecord;

#[derive(Debug, thiserror::Error)]
pub enum VmError {
    #[error("Resource group '{0}' could not be found.")]
    ResourceGroupNotFound(String),
    #[error("The Resource 'Microsoft.Compute/virtualMachines/{0}' under resource group '{1}' was not found.")]
    NotFound(String, String),
    #[error("{0}")]
    InvalidParameter(String),
    /// A bad value of one field, named as the cloud's error `target` (`adminPassword`, ...).
    #[error("{message}")]
    InvalidField { target: String, message: String },
    #[error("The requested VM size '{0}' is not available. Available sizes: {1}.")]
    UnknownSize(String, String),
    #[error(transparent)]
    Image(#[from] CatalogError),
    #[error("A virtual machine named '{0}' already exists in resource group '{1}'. Choose another name or delete it first.")]
    Exists(String, String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Capacity(String),
    #[error("state store")]
    Db(#[from] DbError),
    /// The state dir cannot take new work (full or unwritable): nothing was made.
    #[error(transparent)]
    StateDir(#[from] crate::storage::health::HealthError),
    /// The NoCloud seed could not be made (I/O, genisoimage): host trouble, nothing kept.
    #[error("cannot make the cloud-init seed")]
    Seed(#[source] cloudinit::SeedError),
    /// What the VM's actor answered (a lifecycle refusal is a 409, host trouble a 5xx).
    #[error(transparent)]
    Actor(Box<ActorError>),
}

/// A network error of a create: the store failing is host trouble (500); a subnet without a
/// free address, or a missing network, is the request's conflict (409).
fn net_error(e: crate::net::NetError) -> VmError {
    match e {
        crate::net::NetError::Db(d) if !matches!(d, DbError::Exhausted(_)) => VmError::Db(d),
        e => VmError::Conflict(crate::report::chain(&e)),
    }
}

impl From<ActorError> for VmError {
    fn from(e: ActorError) -> Self {
        VmError::Actor(Box::new(e))
    }
}

/// What `PUT .../virtualMachines/{vm}` asks for, after parsing.
#[derive(Clone, Debug)]
pub struct CreateVm {
    pub rg: String,
    pub name: String,
    pub location: Option<String>,
    pub size: String,
    pub image: ImageRef,
    pub computer_name: Option<String>,
    pub admin_username: String,
    pub caching: String,
    pub tags: serde_json::Map<String, serde_json::Value>,
    /// The primary NIC: an existing one (`rg`, `name`, delete it with the VM?), or none to get
    /// one made in the node's default vnet.
    pub nic: Option<(String, String, bool)>,
    /// `storageProfile.osDisk.diskSizeGB`: grow the OS disk (sparse) beyond the image's size.
    pub disk_size_gb: Option<u64>,
    /// `storageProfile.osDisk.deleteOption`: Delete (default) or Detach.
    pub os_disk_delete_option: Option<String>,
    /// `storageProfile.dataDisks` (`None`: the request did not say).
    pub data_disks: Option<Vec<DataDiskReq>>,
    /// `diagnosticsProfile.bootDiagnostics.storageUri`: the account that keeps the diagnostics.
    pub diag_storage_uri: Option<String>,
    /// The rest of `osProfile`: password, SSH keys, customData, provisionVMAgent.
    pub os_profile: osprofile::OsProfileReq,
}

/// Commands a VM actor accepts.
pub enum Command {
    Delete(oneshot::Sender<Result<(), ActorError>>),
    Power(lifecycle::PowerOp, oneshot::Sender<Result<(), ActorError>>),
    /// Replace the VM's tags.
    Tags(
        serde_json::Map<String, serde_json::Value>,
        oneshot::Sender<()>,
    ),
    /// Capture the screen now; replies with the PNG's path.
    Screenshot(oneshot::Sender<Result<std::path::PathBuf, ActorError>>),
    /// Make the VM's data disks these (attach new ones, detach missing ones).
    DataDisks(
        Vec<model::DataDisk>,
        oneshot::Sender<Result<(), ActorError>>,
    ),
}

/// A data disk as a request asks for it (`storageProfile.dataDisks[]`).
#[derive(Clone, Debug)]
pub struct DataDiskReq {
    pub lun: u32,
    pub name: Option<String>,
    pub size_gb: u64,
    pub caching: String,
}

#[derive(Clone)]
pub struct VmHandle {
    pub tx: mpsc::Sender<Command>,
    pub state: watch::Receiver<VmRecord>,
    /// The VM's boot flight recorder (read by the API without going through the actor).
    pub diag: Recorder,
    /// The VM's guest agent: made with the VM, shared by its actor (probe, shutdown,
    /// provisioning, a resumed snapshot's identity) and extensions; one session at a time.
    pub agent: Arc<Agent>,
}

/// Everything the VM actors share: configuration, the store, the network, the subscription.
pub struct Node {
    pub cfg: DaemonConfig,
    pub db: Db,
    pub subscription: String,
    pub accel: AccelDecision,
    pub net: NodeNet,
    pub account: String,
    pub ops: ops::Operations,
    pub snapshots: Arc<snapshot::Snapshots>,
    /// Who QEMU runs as, where it is placed, its cpu cgroup (decided at start).
    pub qemu: Arc<crate::qemu::host::QemuHost>,
    /// The state dir's checker: new work it cannot take is refused up front.
    pub health: Arc<crate::storage::health::Health>,
    /// The fonts boot screenshots are read with (`diagnostics::screen_text`).
    pub fonts: Arc<crate::diagnostics::screen_text::Fonts>,
    vms: Mutex<HashMap<String, VmHandle>>,
}

impl Node {
    #[allow(clippy::too_many_arguments)] // the daemon context (issue 19, item 1) replaces this
    pub fn new(
        cfg: DaemonConfig,
        db: Db,
        subscription: String,
        accel: AccelDecision,
        net: NodeNet,
        account: String,
        qemu: Arc<crate::qemu::host::QemuHost>,
        health: Arc<crate::storage::health::Health>,
    ) -> Arc<Node> {
        let snapshots = snapshot::Snapshots::new(
            &cfg.paths.state,
            &cfg.paths.run,
            cfg.boot_snapshots,
            qemu.clone(),
        );
        Arc::new(Node {
            qemu,
            health,
            fonts: Default::default(),
            snapshots,
            cfg,
            db,
            subscription,
            accel,
            net,
            account,
            ops: ops::Operations::default(),
            vms: Mutex::new(HashMap::new()),
        })
    }

    fn registry(&self) -> std::sync::MutexGuard<'_, HashMap<String, VmHandle>> {
        self.vms.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn rg_exists(&self, rg: &str) -> Result<bool, VmError> {
        Ok(self
            .db
            .get::<serde_json::Value>(Kind::ResourceGroup, rg)?
            .is_some())
    }

    /// Re-adopts every stored VM (called once at daemon start).
    pub fn load(self: &Arc<Self>) -> Result<usize, VmError> {
        let vms: Vec<VmRecord> = self.db.list(Kind::Vm)?;
        let n = vms.len();
        for rec in vms {
            self.spawn_actor(rec, actor::Start::Adopt);
        }
        Ok(n)
    }

    fn spawn_actor(self: &Arc<Self>, rec: VmRecord, start: actor::Start) -> VmHandle {
        let (tx, rx) = mpsc::channel(16);
        let (state_tx, state_rx) = watch::channel(rec.clone());
        let dir = rec
            .serial_log
            .parent()
            .unwrap_or(Path::new(""))
            .to_path_buf();
        let diag = Recorder::open(&dir, &rec.name, &rec.vm_id);
        let agent = Arc::new(Agent::new(self.cfg.paths.vm_run_dir(&rec.vm_id).qga));
        let handle = VmHandle {
            tx,
            state: state_rx,
            diag: diag.clone(),
            agent: agent.clone(),
        };
        self.registry().insert(rec.key(), handle.clone());
        actor::spawn(self.clone(), rec, start, rx, state_tx, diag, agent);
        handle
    }

    /// The storage account a `storageUri` names; it must be one this node serves.
    fn diag_account(&self, uri: &str) -> Result<String, VmError> {
        let bad = |why: &str| {
            VmError::InvalidParameter(format!(
                "diagnosticsProfile.bootDiagnostics.storageUri '{uri}' {why}; give a storage \
                 account's blob endpoint such as http://{}/{}/, or leave storageUri out to use \
                 the node's own account",
                self.cfg.blob_listen, self.account
            ))
        };
        let name = crate::diagnostics::account_of_storage_uri(uri)
            .ok_or_else(|| bad("names no storage account"))?;
        let known = match crate::blob::node_store() {
            Some(store) => store.account(&name).is_some(),
            None => name == self.account,
        };
        if !known {
            return Err(bad(&format!(
                "names storage account '{name}', which this node does not have"
            )));
        }
        Ok(name)
    }

    /// The actor handle of a VM, or NotFound.
    fn handle(&self, rg: &str, name: &str) -> Result<VmHandle, VmError> {
        self.registry()
            .get(&model::vm_key(rg, name))
            .cloned()
            .ok_or_else(|| VmError::NotFound(name.into(), rg.into()))
    }

    /// The boot flight recorder of a VM.
    pub fn recorder(&self, rg: &str, name: &str) -> Result<Recorder, VmError> {
        Ok(self.handle(rg, name)?.diag)
    }

    /// The guest agent of the VM whose vmId is `vm_id` (none once it is deleted).
    pub fn agent(&self, vm_id: &str) -> Option<Arc<Agent>> {
        self.registry()
            .values()
            .find(|h| h.state.borrow().vm_id == vm_id)
            .map(|h| h.agent.clone())
    }

    pub(crate) fn forget(&self, key: &str) {
        self.registry().remove(key);
    }

    pub fn get(&self, rg: &str, name: &str) -> Option<VmRecord> {
        self.registry()
            .get(&model::vm_key(rg, name))
            .map(|h| h.state.borrow().clone())
    }

    pub fn list(&self, rg: Option<&str>) -> Vec<VmRecord> {
        let mut out: Vec<VmRecord> = self
            .registry()
            .values()
            .map(|h| h.state.borrow().clone())
            .filter(|r| rg.is_none_or(|g| g.eq_ignore_ascii_case(&r.rg)))
            .collect();
        out.sort_by_key(|r| r.key());
        out
    }

    pub fn lease_ip(&self, mac: &str) -> Option<std::net::Ipv4Addr> {
        self.db.lease_get(mac).ok().flatten().map(|l| l.ip)
    }

    /// Deletes a VM and everything it owns; returns when nothing is left.
    pub async fn delete(&self, rg: &str, name: &str) -> Result<(), VmError> {
        let handle = self.handle(rg, name)?;
        let (tx, rx) = oneshot::channel();
        handle
            .tx
            .send(Command::Delete(tx))
            .await
            .map_err(|_| VmError::Conflict(format!("VM '{name}' is already being deleted.")))?;
        rx.await
            .map_err(|_| VmError::Conflict(format!("VM '{name}' is already being deleted.")))??;
        Ok(())
    }

    /// Checks a power operation against the VM's current state (409 if illegal), then starts it
    /// and returns the id of the operation that tracks it (the API's 202).
    pub fn power(
        self: &Arc<Self>,
        rg: &str,
        name: &str,
        op: lifecycle::PowerOp,
    ) -> Result<String, VmError> {
        let handle = self.handle(rg, name)?;
        let rec = handle.state.borrow().clone();
        lifecycle::check(op, rec.provisioning_state, rec.power).map_err(ActorError::from)?;
        // A new QEMU needs a temp disk, a serial log and its records: refused up front when the
        // state dir cannot take them (stopping needs nothing, and frees).
        if matches!(op, lifecycle::PowerOp::Start | lifecycle::PowerOp::Redeploy) {
            self.health.check(&self.cfg.paths.state)?;
        }
        let id = self.ops.begin(op.name());
        let node = self.clone();
        let op_id = id.clone();
        tokio::spawn(async move {
            let (tx, rx) = oneshot::channel();
            let r = match handle.tx.send(Command::Power(op, tx)).await {
                Ok(()) => rx.await.unwrap_or(Err(ActorError::Gone)),
                Err(_) => Err(ActorError::Gone),
            };
            node.ops
                .finish(&op_id, r.map_err(|e| ops::failure(&VmError::from(e))));
        });
        Ok(id)
    }

    /// Checks requested data disks against the size (count, LUNs, sizes, names) and turns them
    /// into disks: the ones already attached are kept as they are, new ones get a blob path.
    pub fn plan_data_disks(
        &self,
        vm_name: &str,
        size: &str,
        wanted: &[DataDiskReq],
        current: &[model::DataDisk],
    ) -> Result<Vec<model::DataDisk>, VmError> {
        let size =
            sizes::find(size).ok_or_else(|| VmError::UnknownSize(size.into(), sizes::names()))?;
        if wanted.len() > size.max_data_disk_count as usize {
            return Err(VmError::Conflict(format!(
                "The maximum number of data disks allowed to be attached to a VM of size {} is {}.",
                size.name, size.max_data_disk_count
            )));
        }
        let mut disks = Vec::new();
        for w in wanted {
            if w.lun >= size.max_data_disk_count {
                return Err(VmError::InvalidParameter(format!(
                    "LUN {} is out of range: size {} has LUNs 0-{}.",
                    w.lun,
                    size.name,
                    size.max_data_disk_count - 1
                )));
            }
            if wanted.iter().filter(|o| o.lun == w.lun).count() > 1 {
                return Err(VmError::InvalidParameter(format!(
                    "LUN {} is used twice.",
                    w.lun
                )));
            }
            if !(1..=4095).contains(&w.size_gb) {
                return Err(VmError::InvalidParameter(format!(
                    "diskSizeGB {} is invalid: use 1-4095.",
                    w.size_gb
                )));
            }
            validate::validate_caching("caching", &w.caching)?;
            let dname = w
                .name
                .clone()
                .unwrap_or_else(|| format!("{}-datadisk-{}", vm_name, w.lun));
            validate_vm_name(&dname).map_err(|_| {
                VmError::InvalidParameter(format!("The disk name '{dname}' is invalid."))
            })?;
            if let Some(cur) = current
                .iter()
                .find(|d| d.lun == w.lun && d.name.eq_ignore_ascii_case(&dname))
            {
                disks.push(cur.clone());
                continue;
            }
            let blob = format!("{dname}.vhd");
            disks.push(model::DataDisk {
                lun: w.lun,
                name: dname,
                path: self
                    .cfg
                    .paths
                    .blobs()
                    .join(&self.account)
                    .join("vhds")
                    .join(&blob),
                uri: format!(
                    "http://{}/{}/vhds/{blob}",
                    self.cfg.blob_listen, self.account
                ),
                size_gb: w.size_gb,
                caching: w.caching.clone(),
            });
        }
        Ok(disks)
    }

    /// Sets the VM's data disks: checks the request against the size, then has the VM's actor
    /// attach (hot-plug) and detach what changed. Returns the VM when done.
    pub async fn set_data_disks(
        &self,
        rg: &str,
        name: &str,
        wanted: Vec<DataDiskReq>,
    ) -> Result<VmRecord, VmError> {
        let handle = self.handle(rg, name)?;
        let rec = handle.state.borrow().clone();
        let disks = self.plan_data_disks(&rec.name, &rec.size, &wanted, &rec.data_disks)?;
        let (tx, rx) = oneshot::channel();
        handle
            .tx
            .send(Command::DataDisks(disks, tx))
            .await
            .map_err(|_| VmError::Conflict(format!("VM '{name}' is being deleted.")))?;
        rx.await
            .map_err(|_| VmError::Conflict(format!("VM '{name}' is being deleted.")))??;
        self.get(rg, name)
            .ok_or_else(|| VmError::NotFound(name.into(), rg.into()))
    }

    pub async fn set_tags(
        &self,
        rg: &str,
        name: &str,
        tags: serde_json::Map<String, serde_json::Value>,
    ) -> Result<(), VmError> {
        let handle = self.handle(rg, name)?;
        let (tx, rx) = oneshot::channel();
        handle
            .tx
            .send(Command::Tags(tags, tx))
            .await
            .map_err(|_| VmError::Conflict("the VM is being deleted".into()))?;
        rx.await
            .map_err(|_| VmError::Conflict("the VM is being deleted".into()))
    }

    /// A fresh screenshot of a running VM (the last one stored if it is not running).
    pub async fn screenshot(&self, rg: &str, name: &str) -> Result<std::path::PathBuf, VmError> {
        let handle = self.handle(rg, name)?;
        let (tx, rx) = oneshot::channel();
        handle
            .tx
            .send(Command::Screenshot(tx))
            .await
            .map_err(|_| VmError::Conflict("the VM is being deleted".into()))?;
        Ok(rx
            .await
            .map_err(|_| VmError::Conflict("the VM is being deleted".into()))??)
    }

    /// Starts deletion and returns at once (the API's 202) with the operation's id.
    pub fn delete_nowait(self: &Arc<Self>, rg: &str, name: &str) -> Result<String, VmError> {
        if self.get(rg, name).is_none() {
            return Err(VmError::NotFound(name.into(), rg.into()));
        }
        // Accepted means it will happen: the intent is durable before the 202 goes out.
        self.db.put(
            Kind::DeleteIntent,
            &model::vm_key(rg, name),
            &serde_json::json!({ "operation": "delete" }),
        )?;
        let id = self.ops.begin("delete");
        let node = self.clone();
        let (rg, name, op_id) = (rg.to_string(), name.to_string(), id.clone());
        tokio::spawn(async move {
            let r = node.delete(&rg, &name).await;
            if let Err(e) = &r {
                tracing::warn!(vm = %name, error = %e, "delete failed");
            }
            node.ops.finish(&op_id, r.map_err(|e| ops::failure(&e)));
        });
        Ok(id)
    }
}
