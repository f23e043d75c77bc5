//! A VM's create, by role: the request checked whole (names, size, disks, osProfile, image), so
//! that bad input creates nothing; its NIC chosen (an existing one, or a new one in the default
//! vnet); its record built; the NoCloud seed made; the address, VM and NIC stored in one
//! transaction; then the VM's actor spawned to make the disk, tap and QEMU.

use std::sync::Arc;

use super::model::{self, NicRecord, PowerState, ProvisioningState, VmRecord};
use super::{
    actor, capacity, cloudinit, net_error, osprofile, sizes, validate, validate_computer_name,
    validate_rg_name, validate_vm_name, CreateVm, Node, VmError,
};
use crate::catalog::{self, ImageVersion};
use crate::config::LOCATION;
use crate::net::vnet::VnetRecord;
use crate::storage::db::{DbError, Kind};

/// A create request once checked: everything the record is made of that is not chosen yet.
struct Checked {
    computer_name: String,
    size: &'static sizes::VmSize,
    data_disks: Vec<model::DataDisk>,
    os_profile: osprofile::OsProfile,
    delete_option: String,
    image: ImageVersion,
    /// The guest agent provisions the OS (vm/provision.rs).
    agent_provisions: bool,
    disk_gb: u64,
    /// A cloud-init image's seed (its vmId filled in once there is one).
    seed_input: Option<cloudinit::SeedInput>,
    key: String,
}

/// The VM's NIC: an existing one, or a new one whose address is reserved in `vnet` when the
/// VM is stored.
struct NicChoice {
    nic: NicRecord,
    new_in: Option<VnetRecord>,
}

impl Node {
    /// Validates everything first, so that bad input creates nothing; then records the VM and
    /// its NIC and hands the rest (disk, tap, QEMU) to the VM's actor.
    pub fn create(self: &Arc<Self>, req: CreateVm) -> Result<VmRecord, VmError> {
        let requested = std::time::Instant::now();
        let mut c = self.check_create(&req)?;
        // Nothing is written before this: a full or read-only state dir refuses the create whole.
        self.health.check(&self.cfg.paths.state)?;
        let vm_id = uuid::Uuid::new_v4().to_string();
        let local = self.cfg.paths.state.join("local").join(&vm_id);
        let seed = c.seed_input.as_ref().map(|_| local.join("cidata.iso"));
        let nic = self.choose_nic(&req, &c.computer_name, &vm_id)?;
        let rec = self.new_record(&req, &c, nic.nic, &vm_id, seed.clone())?;
        // The NoCloud seed, made before the VM is recorded (it holds the only copy of the
        // password hash and customData).
        let seeded = match (c.seed_input.as_mut(), &seed) {
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
        let rec = match self.store_new(&req, &c.key, rec, nic.new_in.as_ref()) {
            Ok(rec) => rec,
            Err(e) => {
                if seed.is_some() {
                    let _ = std::fs::remove_dir_all(&local);
                }
                return Err(e);
            }
        };
        crate::failpoint::crash_point("create.recorded");
        self.spawn_actor(
            rec.clone(),
            actor::Start::Create(Box::new(c.image), requested),
        );
        Ok(rec)
    }

    /// Every check of a create, in the order the cloud reports them; nothing is written.
    fn check_create(&self, req: &CreateVm) -> Result<Checked, VmError> {
        validate_rg_name(&req.rg)?;
        validate_vm_name(&req.name)?;
        if !self.rg_exists(&req.rg)? {
            return Err(VmError::ResourceGroupNotFound(req.rg.clone()));
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
        check_placement(req)?;
        let os_profile = osprofile::check(&req.admin_username, &req.os_profile)?;
        let delete_option = delete_option(req)?;
        let image = self.checked_image(req)?;
        // The guest agent provisions the OS (vm/provision.rs) if asked and the image uses it.
        let agent_provisions = os_profile.provision_vm_agent
            && image.manifest.provisioning == catalog::Provisioning::Agent;
        let disk_gb = os_disk_gb(req, &image)?;
        let seed_input = seed_input(req, &image, &computer_name, &os_profile)?;
        let key = model::vm_key(&req.rg, &req.name);
        if self.registry().contains_key(&key) || self.db.get::<VmRecord>(Kind::Vm, &key)?.is_some()
        {
            return Err(VmError::Exists(req.name.clone(), req.rg.clone()));
        }
        Ok(Checked {
            computer_name,
            size,
            data_disks,
            os_profile,
            delete_option,
            image,
            agent_provisions,
            disk_gb,
            seed_input,
            key,
        })
    }

    /// The image the request names, resolved in the catalog and its files checked against its
    /// manifest before anything is made from them (hashed once; then a stamp in the image's
    /// folder vouches for unchanged files).
    fn checked_image(&self, req: &CreateVm) -> Result<ImageVersion, VmError> {
        let image = catalog::resolve(&self.cfg.paths.images(), &req.image)?;
        let checked = catalog::verify::verify(&image).inspect_err(|e| {
            tracing::error!(image = %image.urn(), error = %e, "image files do not match their manifest")
        })?;
        if !checked.hashed.is_empty() {
            tracing::info!(image = %image.urn(), hashed = ?checked.hashed, "image files verified");
        }
        Ok(image)
    }

    /// The NIC: an existing one (checked, then attached), or a new one in the default vnet.
    fn choose_nic(
        &self,
        req: &CreateVm,
        computer_name: &str,
        vm_id: &str,
    ) -> Result<NicChoice, VmError> {
        if let Some((nrg, nname, delete_with_vm)) = &req.nic {
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
            n.hostname = computer_name.to_string();
            n.delete_with_vm = *delete_with_vm;
            return Ok(NicChoice {
                nic: n,
                new_in: None,
            });
        }
        // A new NIC's address is reserved in the transaction that stores the VM and the NIC
        // (`store_new`): `new_in` is its vnet, the record's address a placeholder until then.
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
            tap: vmnode_network::plumbing::tap_name_for(vm_id),
            vm: req.name.clone(),
            hostname: computer_name.to_string(),
            vnet_rg: v.rg.clone(),
            vnet_name: v.name.clone(),
            subnet_name: crate::net::SUBNET_NAME.into(),
            allocation: "Dynamic".into(),
            delete_with_vm: true,
        };
        Ok(NicChoice {
            nic: n,
            new_in: Some(v),
        })
    }

    /// The new VM's record: its disks' paths and URIs, its diagnostics container, its NIC.
    fn new_record(
        &self,
        req: &CreateVm,
        c: &Checked,
        nic: NicRecord,
        vm_id: &str,
        seed: Option<std::path::PathBuf>,
    ) -> Result<VmRecord, VmError> {
        let disk_name = format!("{}-osdisk-{}", req.name, &vm_id[..8]);
        let vhds = self.cfg.paths.blobs().join(&self.account).join("vhds");
        let diag_account = match &req.diag_storage_uri {
            Some(u) => self.diag_account(u)?,
            None => self.account.clone(),
        };
        let diag = self
            .cfg
            .paths
            .blobs()
            .join(&diag_account)
            .join(crate::diagnostics::container_name(&req.name, vm_id));
        let p = &c.os_profile;
        Ok(VmRecord {
            rg: req.rg.clone(),
            name: req.name.clone(),
            vm_id: vm_id.to_string(),
            location: LOCATION.into(),
            size: c.size.name.into(),
            image: req.image.clone(),
            exact_version: c.image.manifest.version.clone(),
            computer_name: c.computer_name.clone(),
            admin_username: req.admin_username.clone(),
            os_disk_uri: format!(
                "http://{}/{}/vhds/{disk_name}.vhd",
                self.cfg.blob_listen, self.account
            ),
            os_disk_path: vhds.join(format!("{disk_name}.vhd")),
            os_disk_name: disk_name,
            caching: req.caching.clone(),
            nic,
            provisioning_state: ProvisioningState::Creating,
            power: PowerState::Starting,
            error: None,
            time_created: crate::report::time_now(),
            tags: req.tags.clone(),
            serial_log: crate::diagnostics::serial_log_path(&diag, &req.name, vm_id),
            pid: None,
            os_disk_gb: c.disk_gb,
            data_disks: c.data_disks.clone(),
            os_disk_delete_option: c.delete_option.clone(),
            last_boot: None,
            diag_storage_uri: req.diag_storage_uri.clone(),
            temp_disk: self
                .cfg
                .paths
                .state
                .join("local")
                .join(vm_id)
                .join("resource.raw"),
            state_time: crate::report::time_now(),
            admin_password_hash: p.admin_password_hash.clone(),
            ssh_public_keys: p.ssh_public_keys.clone(),
            custom_data: p.custom_data.clone(),
            disable_password_auth: p.disable_password_auth,
            provision_vm_agent: p.provision_vm_agent,
            os_provisioning: if c.agent_provisions {
                model::OsProvisioning::Pending
            } else {
                model::OsProvisioning::NotNeeded
            },
            os_provisioning_since: None,
            os_provisioning_message: None,
            vm_agent: None,
            cloud_init_seed: seed,
        })
    }

    /// The address, the VM and its NIC: one transaction, so a kill anywhere in it leaves none
    /// of them (no address reserved for a NIC that was never stored). Returns the record with
    /// its NIC's address.
    fn store_new(
        &self,
        req: &CreateVm,
        key: &str,
        mut rec: VmRecord,
        new_in: Option<&VnetRecord>,
    ) -> Result<VmRecord, VmError> {
        let nic_key = rec.nic.key();
        self.db.transaction(|tx| {
            if let Some(v) = new_in {
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
            tx.insert(Kind::Vm, key, &rec).map_err(|e| match e {
                DbError::Exists(_) => VmError::Exists(req.name.clone(), req.rg.clone()),
                e => e.into(),
            })?;
            crate::failpoint::crash_point("create.addr_allocated");
            tx.put(Kind::Nic, &nic_key, &rec.nic)?;
            Ok::<_, VmError>(())
        })?;
        Ok(rec)
    }
}

/// The location (this node's only) and the OS disk's caching.
fn check_placement(req: &CreateVm) -> Result<(), VmError> {
    if let Some(loc) = &req.location {
        if !loc.eq_ignore_ascii_case(LOCATION) {
            return Err(VmError::InvalidParameter(format!(
                "The location '{loc}' is not available on this node; its location is '{LOCATION}'."
            )));
        }
    }
    validate::validate_caching("osDisk.caching", &req.caching)
}

/// `osDisk.deleteOption` in the cloud's spelling (Delete by default).
fn delete_option(req: &CreateVm) -> Result<String, VmError> {
    let given = req
        .os_disk_delete_option
        .clone()
        .unwrap_or_else(|| "Delete".into());
    match given.to_ascii_lowercase().as_str() {
        "delete" => Ok("Delete".to_string()),
        "detach" => Ok("Detach".to_string()),
        other => Err(VmError::InvalidParameter(format!(
            "osDisk.deleteOption '{other}' is invalid: use Delete or Detach."
        ))),
    }
}

/// The OS disk's size: at least the image's, at most 4095 GB.
fn os_disk_gb(req: &CreateVm, image: &ImageVersion) -> Result<u64, VmError> {
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
    Ok(disk_gb)
}

/// A cloud-init image takes its osProfile from a NoCloud seed (vm/cloudinit.rs): what goes in
/// it, checked; none for other images.
fn seed_input(
    req: &CreateVm,
    image: &ImageVersion,
    computer_name: &str,
    os_profile: &osprofile::OsProfile,
) -> Result<Option<cloudinit::SeedInput>, VmError> {
    if image.manifest.provisioning != catalog::Provisioning::CloudInit {
        return Ok(None);
    }
    let i = cloudinit::SeedInput {
        vm_id: String::new(),
        computer_name: computer_name.to_string(),
        admin_username: req.admin_username.clone(),
        ssh_public_keys: os_profile
            .ssh_public_keys
            .iter()
            .map(|k| k.key_data.clone())
            .collect(),
        admin_password_hash: os_profile.admin_password_hash.clone(),
        disable_password_auth: os_profile.disable_password_auth,
        custom_data: os_profile.custom_data.clone(),
    };
    cloudinit::validate(&i).map_err(|e| VmError::InvalidParameter(e.to_string()))?;
    Ok(Some(i))
}
