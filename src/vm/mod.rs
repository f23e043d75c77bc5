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

use crate::catalog::{self, CatalogError, ImageRef};
use crate::config::{DaemonConfig, LOCATION};
use crate::diagnostics::recorder::Recorder;
use crate::doctor::AccelDecision;
use crate::net::NodeNet;
use crate::qemu::qga::Agent;
use crate::storage::db::{Db, DbError, Kind};
pub use actor::ActorError;
use model::{NicRecord, PowerState, ProvisioningState, VmRecord};

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
    vms: Mutex<HashMap<String, VmHandle>>,
}

impl Node {
    pub fn new(
        cfg: DaemonConfig,
        db: Db,
        subscription: String,
        accel: AccelDecision,
        net: NodeNet,
        account: String,
    ) -> Arc<Node> {
        let snapshots =
            snapshot::Snapshots::new(&cfg.paths.state, &cfg.paths.run, cfg.boot_snapshots);
        Arc::new(Node {
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

    /// Validates everything first, so that bad input creates nothing; then records the VM and
    /// its NIC and hands the rest (disk, tap, QEMU) to the VM's actor.
    pub fn create(self: &Arc<Self>, req: CreateVm) -> Result<VmRecord, VmError> {
        let requested = std::time::Instant::now();
        validate_rg_name(&req.rg)?;
        validate_vm_name(&req.name)?;
        if !self.rg_exists(&req.rg)? {
            return Err(VmError::ResourceGroupNotFound(req.rg));
        }
        let computer_name = req
            .computer_name
            .clone()
            .unwrap_or_else(|| req.name.clone());
        validate_computer_name(&computer_name)?;
        let size = sizes::find(&req.size)
            .ok_or_else(|| VmError::UnknownSize(req.size.clone(), sizes::names()))?;
        capacity(size)?;
        let data_disks = self.plan_data_disks(
            &req.name,
            size.name,
            req.data_disks.as_deref().unwrap_or(&[]),
            &[],
        )?;
        if let Some(loc) = &req.location {
            if !loc.eq_ignore_ascii_case(LOCATION) {
                return Err(VmError::InvalidParameter(format!(
                    "The location '{loc}' is not available on this node; its location is '{LOCATION}'."
                )));
            }
        }
        if !matches!(
            req.caching.to_ascii_lowercase().as_str(),
            "none" | "readonly" | "readwrite"
        ) {
            return Err(VmError::InvalidParameter(format!(
                "osDisk.caching '{}' is invalid: use None, ReadOnly or ReadWrite.",
                req.caching
            )));
        }
        let os_profile = osprofile::check(&req.admin_username, &req.os_profile)?;
        let delete_option = req
            .os_disk_delete_option
            .clone()
            .unwrap_or_else(|| "Delete".into());
        let delete_option = match delete_option.to_ascii_lowercase().as_str() {
            "delete" => "Delete".to_string(),
            "detach" => "Detach".to_string(),
            other => {
                return Err(VmError::InvalidParameter(format!(
                    "osDisk.deleteOption '{other}' is invalid: use Delete or Detach."
                )))
            }
        };
        let image = catalog::resolve(&self.cfg.paths.images(), &req.image)?;
        // Its files must be what its manifest says before anything is made from them (hashed
        // once; then a stamp in the image's folder vouches for unchanged files).
        let checked = catalog::verify::verify(&image).inspect_err(|e| {
            tracing::error!(image = %image.urn(), error = %e, "image files do not match their manifest")
        })?;
        if !checked.hashed.is_empty() {
            tracing::info!(image = %image.urn(), hashed = ?checked.hashed, "image files verified");
        }
        // The guest agent provisions the OS (vm/provision.rs) if asked and the image uses it.
        let agent_provisions = os_profile.provision_vm_agent
            && image.manifest.provisioning == catalog::Provisioning::Agent;
        let image_bytes = image
            .manifest
            .files
            .get("disk.raw")
            .map(|f| f.size)
            .unwrap_or(0);
        let min_gb = image_bytes.div_ceil(1 << 30).max(1);
        let disk_gb = req.disk_size_gb.unwrap_or(min_gb);
        if disk_gb < min_gb || disk_gb > 4095 {
            return Err(VmError::InvalidParameter(format!(
                "osDisk.diskSizeGB {disk_gb} is invalid: the image needs at least {min_gb} GB and the limit is 4095 GB."
            )));
        }
        // A cloud-init image takes its osProfile from a NoCloud seed (vm/cloudinit.rs).
        let cloud_init = image.manifest.provisioning == catalog::Provisioning::CloudInit;
        let mut seed_input = cloud_init.then(|| cloudinit::SeedInput {
            vm_id: String::new(),
            computer_name: computer_name.clone(),
            admin_username: req.admin_username.clone(),
            ssh_public_keys: os_profile
                .ssh_public_keys
                .iter()
                .map(|k| k.key_data.clone())
                .collect(),
            admin_password_hash: os_profile.admin_password_hash.clone(),
            disable_password_auth: os_profile.disable_password_auth,
            custom_data: os_profile.custom_data.clone(),
        });
        if let Some(i) = &seed_input {
            cloudinit::validate(i).map_err(|e| VmError::InvalidParameter(e.to_string()))?;
        }
        let key = model::vm_key(&req.rg, &req.name);
        if self.registry().contains_key(&key) || self.db.get::<VmRecord>(Kind::Vm, &key)?.is_some()
        {
            return Err(VmError::Exists(req.name, req.rg));
        }

        // Nothing is written before this: a full or read-only state dir refuses the create whole.
        crate::storage::health::check(&self.cfg.paths.state)?;
        let vm_id = uuid::Uuid::new_v4().to_string();
        let local = self.cfg.paths.state.join("local").join(&vm_id);
        let seed = seed_input.as_ref().map(|_| local.join("cidata.iso"));
        // The NIC: an existing one (checked, then attached), or a new one in the default vnet.
        let existing_nic = match &req.nic {
            Some((nrg, nname, delete_with_vm)) => {
                let mut n: NicRecord = self
                    .db
                    .get(Kind::Nic, &crate::net::nic::nic_key(nrg, nname))?
                    .ok_or_else(|| {
                        VmError::InvalidParameter(format!(
                            "Network interface '{nname}' in resource group '{nrg}' was not found. Create it first (`vmnode network nic create`)."
                        ))
                    })?;
                if !n.vm.is_empty() && !n.vm.eq_ignore_ascii_case(&req.name) {
                    return Err(VmError::Conflict(format!(
                        "Network interface '{nname}' is already used by VM '{}'.",
                        n.vm
                    )));
                }
                n.vm = req.name.clone();
                n.hostname = computer_name.clone();
                n.delete_with_vm = *delete_with_vm;
                Some(n)
            }
            None => None,
        };
        // A new NIC's address is reserved in the transaction that stores the VM and the NIC
        // (below): `new_nic_vnet` is its vnet, the record's address a placeholder until then.
        let mut new_nic_vnet = None;
        let nic = match existing_nic {
            Some(n) => n,
            None => {
                let v = self
                    .net
                    .vnet(crate::net::DEFAULT_RG, crate::net::VNET_NAME)
                    .map_err(net_error)?
                    .ok_or_else(|| VmError::Conflict("the default network is missing".into()))?;
                let nic_name = format!("{}VMNic", req.name);
                let nkey = crate::net::nic::nic_key(&req.rg, &nic_name);
                if self.db.get::<NicRecord>(Kind::Nic, &nkey)?.is_some() {
                    return Err(VmError::Conflict(format!(
                        "Network interface '{nic_name}' already exists in resource group '{}'; delete it or pass it explicitly.",
                        req.rg
                    )));
                }
                let skey = crate::net::vnet::subnet_key(&v.rg, &v.name, crate::net::SUBNET_NAME);
                let n = NicRecord {
                    rg: req.rg.clone(),
                    name: nic_name,
                    mac: self.net.random_mac(),
                    ip: std::net::Ipv4Addr::UNSPECIFIED,
                    subnet: skey,
                    tap: vmnode_network::plumbing::tap_name_for(&vm_id),
                    vm: req.name.clone(),
                    hostname: computer_name.clone(),
                    vnet_rg: v.rg.clone(),
                    vnet_name: v.name.clone(),
                    subnet_name: crate::net::SUBNET_NAME.into(),
                    allocation: "Dynamic".into(),
                    delete_with_vm: true,
                };
                new_nic_vnet = Some(v);
                n
            }
        };
        let disk_name = format!("{}-osdisk-{}", req.name, &vm_id[..8]);
        let disk_path = self
            .cfg
            .paths
            .blobs()
            .join(&self.account)
            .join("vhds")
            .join(format!("{disk_name}.vhd"));
        let diag_account = match &req.diag_storage_uri {
            Some(u) => self.diag_account(u)?,
            None => self.account.clone(),
        };
        let diag = self
            .cfg
            .paths
            .blobs()
            .join(&diag_account)
            .join(crate::diagnostics::container_name(&req.name, &vm_id));
        let mut rec = VmRecord {
            rg: req.rg.clone(),
            name: req.name.clone(),
            vm_id: vm_id.clone(),
            location: LOCATION.into(),
            size: size.name.into(),
            image: req.image.clone(),
            exact_version: image.manifest.version.clone(),
            computer_name: computer_name.clone(),
            admin_username: req.admin_username.clone(),
            os_disk_uri: format!(
                "http://{}/{}/vhds/{disk_name}.vhd",
                self.cfg.blob_listen, self.account
            ),
            os_disk_name: disk_name,
            os_disk_path: disk_path,
            caching: req.caching.clone(),
            nic: nic.clone(),
            provisioning_state: ProvisioningState::Creating,
            power: PowerState::Starting,
            error: None,
            time_created: crate::report::time_now(),
            tags: req.tags.clone(),
            serial_log: crate::diagnostics::serial_log_path(&diag, &req.name, &vm_id),
            pid: None,
            os_disk_gb: disk_gb,
            data_disks,
            os_disk_delete_option: delete_option,
            last_boot: None,
            diag_storage_uri: req.diag_storage_uri.clone(),
            temp_disk: self
                .cfg
                .paths
                .state
                .join("local")
                .join(&vm_id)
                .join("resource.raw"),
            state_time: crate::report::time_now(),
            admin_password_hash: os_profile.admin_password_hash,
            ssh_public_keys: os_profile.ssh_public_keys,
            custom_data: os_profile.custom_data,
            disable_password_auth: os_profile.disable_password_auth,
            provision_vm_agent: os_profile.provision_vm_agent,
            os_provisioning: if agent_provisions {
                model::OsProvisioning::Pending
            } else {
                model::OsProvisioning::NotNeeded
            },
            os_provisioning_since: None,
            os_provisioning_message: None,
            vm_agent: None,
            cloud_init_seed: seed.clone(),
        };
        let nic_key = nic.key();
        // The NoCloud seed, made before the VM is recorded (it holds the only copy of the
        // password hash and customData).
        let seeded = match (seed_input.as_mut(), &seed) {
            (Some(i), Some(path)) => {
                i.vm_id = vm_id.clone();
                cloudinit::make_seed(i, path).map_err(VmError::Seed)
            }
            _ => Ok(()),
        };
        if let Err(e) = seeded {
            let _ = std::fs::remove_dir_all(&local);
            return Err(e);
        }
        // The address, the VM and its NIC: one transaction, so a kill anywhere in it leaves
        // none of them (no address reserved for a NIC that was never stored).
        let stored = self.db.transaction(|tx| {
            if let Some(v) = &new_nic_vnet {
                let (ip, _) = crate::net::NodeNet::allocate_ip_in(
                    tx,
                    &nic_key,
                    v,
                    crate::net::SUBNET_NAME,
                    None,
                )
                .map_err(net_error)?;
                rec.nic.ip = ip;
            }
            tx.insert(Kind::Vm, &key, &rec).map_err(|e| match e {
                DbError::Exists(_) => VmError::Exists(req.name.clone(), req.rg.clone()),
                e => e.into(),
            })?;
            crate::failpoint::crash_point("create.addr_allocated");
            tx.put(Kind::Nic, &nic_key, &rec.nic)?;
            Ok::<_, VmError>(())
        });
        if let Err(e) = stored {
            if seed.is_some() {
                let _ = std::fs::remove_dir_all(&local);
            }
            return Err(e);
        }
        crate::failpoint::crash_point("create.recorded");
        self.spawn_actor(
            rec.clone(),
            actor::Start::Create(Box::new(image), requested),
        );
        Ok(rec)
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
            crate::storage::health::check(&self.cfg.paths.state)?;
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
            if !matches!(
                w.caching.to_ascii_lowercase().as_str(),
                "none" | "readonly" | "readwrite"
            ) {
                return Err(VmError::InvalidParameter(format!(
                    "caching '{}' is invalid: use None, ReadOnly or ReadWrite.",
                    w.caching
                )));
            }
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
