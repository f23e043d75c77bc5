//! A VM as stored (`VmRecord`) and as the ARM API shows it (`to_arm`).

use std::net::Ipv4Addr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::catalog::ImageRef;
pub use crate::net::nic::{mac_azure, nic_id as nic_arm_id, NicRecord};

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub enum ProvisioningState {
    Creating,
    Updating,
    Succeeded,
    Failed,
    Deleting,
}

/// `PowerState/...` codes of the instance view.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum PowerState {
    Starting,
    Running,
    Stopping,
    Stopped,
    Deallocating,
    Deallocated,
    Unknown,
}

impl PowerState {
    pub fn code(self) -> &'static str {
        match self {
            PowerState::Starting => "PowerState/starting",
            PowerState::Running => "PowerState/running",
            PowerState::Stopping => "PowerState/stopping",
            PowerState::Stopped => "PowerState/stopped",
            PowerState::Deallocating => "PowerState/deallocating",
            PowerState::Deallocated => "PowerState/deallocated",
            PowerState::Unknown => "PowerState/unknown",
        }
    }
    pub fn display(self) -> &'static str {
        match self {
            PowerState::Starting => "VM starting",
            PowerState::Running => "VM running",
            PowerState::Stopping => "VM stopping",
            PowerState::Stopped => "VM stopped",
            PowerState::Deallocating => "VM deallocating",
            PowerState::Deallocated => "VM deallocated",
            PowerState::Unknown => "VM status unknown",
        }
    }
}

/// `osProfile.linuxConfiguration.ssh.publicKeys[]`: a key and the file it goes into.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct SshKey {
    pub path: String,
    pub key_data: String,
}

/// How far the guest's OS provisioning (host name, admin user, keys: `vm/provision.rs`) got.
/// It runs once, the first time the guest agent answers after create, and is remembered.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub enum OsProvisioning {
    /// Nothing to do: `provisionVMAgent` false, an image that provisions itself, or a VM made
    /// before vmnode provisioned guests.
    #[default]
    NotNeeded,
    /// Waiting for the guest agent (the timeout runs), or running its steps.
    Pending,
    Succeeded,
    /// A step failed in the guest (`OSProvisioningClientError`).
    Failed,
    /// The agent never answered in time (`OSProvisioningTimedOut`); done late if it ever does.
    TimedOut,
}

/// What the guest agent last said, for the instance view's `vmAgent` (kept in memory and
/// persisted only when Ready/Not Ready changes).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct VmAgent {
    pub ready: bool,
    /// qemu-guest-agent's version (`guest-info`), once known.
    pub version: Option<String>,
    /// When the agent last answered (RFC 3339).
    pub last_answer: Option<String>,
}

/// The cloud's nested error shape.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ErrorBody {
    pub code: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub details: Vec<ErrorBody>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct VmRecord {
    pub rg: String,
    pub name: String,
    pub vm_id: String,
    pub location: String,
    pub size: String,
    pub image: ImageRef,
    pub exact_version: String,
    pub computer_name: String,
    pub admin_username: String,
    pub os_disk_name: String,
    pub os_disk_path: PathBuf,
    pub os_disk_uri: String,
    pub caching: String,
    pub nic: NicRecord,
    pub provisioning_state: ProvisioningState,
    pub power: PowerState,
    pub error: Option<ErrorBody>,
    pub time_created: String,
    pub tags: serde_json::Map<String, Value>,
    pub serial_log: PathBuf,
    pub pid: Option<i32>,
    /// The temporary resource disk (local, sparse; lost on deallocate and redeploy).
    #[serde(default)]
    pub temp_disk: PathBuf,
    /// When the provisioning and power states last changed (instance view `time`).
    #[serde(default)]
    pub state_time: String,
    /// The OS disk's size in GiB (`diskSizeGB`).
    #[serde(default)]
    pub os_disk_gb: u64,
    /// Data disks, each a page blob under the VM's lease, hot-plugged into a running guest.
    #[serde(default)]
    pub data_disks: Vec<DataDisk>,
    /// `osDisk.deleteOption`: Delete (the blob goes with the VM) or Detach (kept, lease released).
    #[serde(default = "delete_option_default")]
    pub os_disk_delete_option: String,
    /// When QEMU last started (the NIC's link-up, for the DHCP diagnosis).
    #[serde(default)]
    pub last_boot: Option<std::time::SystemTime>,
    /// `diagnosticsProfile.bootDiagnostics.storageUri` as given (none: the node's own account).
    #[serde(default)]
    pub diag_storage_uri: Option<String>,
    /// `osProfile.adminPassword`, only as its sha512-crypt hash (`$6$...`); never shown.
    #[serde(default)]
    pub admin_password_hash: Option<String>,
    #[serde(default)]
    pub ssh_public_keys: Vec<SshKey>,
    /// `osProfile.customData` as given (base64); never shown.
    #[serde(default)]
    pub custom_data: Option<String>,
    #[serde(default)]
    pub disable_password_auth: bool,
    /// `osProfile.linuxConfiguration.provisionVMAgent`.
    #[serde(default = "yes")]
    pub provision_vm_agent: bool,
    #[serde(default)]
    pub os_provisioning: OsProvisioning,
    /// When OS provisioning began waiting for the agent (the timeout counts from here).
    #[serde(default)]
    pub os_provisioning_since: Option<std::time::SystemTime>,
    /// What provisioning did and skipped, for the instance view (no secrets).
    #[serde(default)]
    pub os_provisioning_message: Option<String>,
    #[serde(default)]
    pub vm_agent: Option<VmAgent>,
    /// The NoCloud seed of a cloud-init image (vm/cloudinit.rs), attached read-only.
    #[serde(default)]
    pub cloud_init_seed: Option<PathBuf>,
}

fn yes() -> bool {
    true
}

fn delete_option_default() -> String {
    "Delete".into()
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct DataDisk {
    pub lun: u32,
    pub name: String,
    pub path: PathBuf,
    pub uri: String,
    pub size_gb: u64,
    pub caching: String,
}

impl VmRecord {
    pub fn key(&self) -> String {
        vm_key(&self.rg, &self.name)
    }
}

pub fn vm_key(rg: &str, name: &str) -> String {
    format!("{}/{}", rg.to_lowercase(), name.to_lowercase())
}

pub fn rg_id(sub: &str, rg: &str) -> String {
    format!("/subscriptions/{sub}/resourceGroups/{rg}")
}

pub fn vm_arm_id(sub: &str, rg: &str, name: &str) -> String {
    format!(
        "{}/providers/Microsoft.Compute/virtualMachines/{name}",
        rg_id(sub, rg)
    )
}

/// The VM's instance view: statuses (provisioning, power, OS provisioning), the guest agent
/// (`vmAgent`) and, vmnode's addition, the DIP.
pub fn instance_view(r: &VmRecord, lease_ip: Option<Ipv4Addr>) -> Value {
    let prov = provisioning_str(r.provisioning_state).to_lowercase();
    // A failed VM's code names its error, as the cloud's does (`ProvisioningState/failed/...`).
    let code = match (&r.error, r.provisioning_state) {
        (Some(e), ProvisioningState::Failed) => format!("ProvisioningState/{prov}/{}", e.code),
        _ => format!("ProvisioningState/{prov}"),
    };
    let mut statuses = vec![json!({
        "code": code,
        "level": if r.provisioning_state == ProvisioningState::Failed { "Error" } else { "Info" },
        "time": r.state_time,
        "displayStatus": format!("Provisioning {prov}"),
        "message": r.error.as_ref().map(|e| e.message.clone()),
    })];
    statuses.push(json!({
        "code": r.power.code(),
        "level": "Info",
        "displayStatus": r.power.display(),
    }));
    match r.os_provisioning {
        OsProvisioning::Pending => statuses.push(json!({
            "code": "OSProvisioningInProgress",
            "level": "Info",
            "displayStatus": "OS provisioning in progress",
            "message": "Waiting for the guest agent to set the host name, the admin user and its keys.",
        })),
        OsProvisioning::Succeeded => statuses.push(json!({
            "code": "OSProvisioningComplete",
            "level": "Info",
            "displayStatus": "OS provisioning complete",
            "message": r.os_provisioning_message,
        })),
        _ => {}
    }
    let mut v = json!({
        "computerName": r.computer_name,
        "osName": "Linux",
        "hyperVGeneration": "V1",
        "bootDiagnostics": {},
        "statuses": statuses,
        "networkInterfaces": [{
            "name": r.nic.name,
            "macAddress": mac_azure(&r.nic.mac),
            "privateIPAddress": lease_ip.map(|ip| ip.to_string()),
        }],
    });
    if let Some(a) = vm_agent_view(r) {
        v["vmAgent"] = a;
    }
    v
}

/// `instanceView.vmAgent` as the cloud shows it: Ready while the guest agent answers, Not Ready
/// (with the time of its last answer) when it stops. Only for a running VM that uses the agent.
pub fn vm_agent_view(r: &VmRecord) -> Option<Value> {
    if r.power != PowerState::Running || !r.provision_vm_agent {
        return None;
    }
    let a = r.vm_agent.clone().unwrap_or_default();
    let status = if a.ready {
        json!({
            "code": "ProvisioningState/succeeded",
            "level": "Info",
            "displayStatus": "Ready",
            "message": "Guest Agent is running",
            "time": a.last_answer,
        })
    } else {
        json!({
            "code": "ProvisioningState/Unavailable",
            "level": "Warning",
            "displayStatus": "Not Ready",
            "message": match &a.last_answer {
                Some(t) => format!("VM Agent is unresponsive: it last answered at {t}."),
                None => "VM Agent is unresponsive: it has not answered since the VM started.".into(),
            },
            "time": a.last_answer,
        })
    };
    Some(json!({
        "vmAgentVersion": a.version.unwrap_or_else(|| "Unknown".into()),
        "statuses": [status],
        "extensionHandlers": [],
    }))
}

pub fn provisioning_str(p: ProvisioningState) -> &'static str {
    match p {
        ProvisioningState::Creating => "Creating",
        ProvisioningState::Updating => "Updating",
        ProvisioningState::Succeeded => "Succeeded",
        ProvisioningState::Failed => "Failed",
        ProvisioningState::Deleting => "Deleting",
    }
}

/// The VM as `GET .../virtualMachines/{vm}` returns it. `lease_ip` is the address the guest
/// holds by DHCP (none until it has asked).
pub fn to_arm(sub: &str, r: &VmRecord, lease_ip: Option<Ipv4Addr>, with_view: bool) -> Value {
    let nic_id = nic_arm_id(sub, &r.rg, &r.nic.name);
    let mut v = json!({
        "id": vm_arm_id(sub, &r.rg, &r.name),
        "name": r.name,
        "type": "Microsoft.Compute/virtualMachines",
        "location": r.location,
        "tags": r.tags,
        "properties": {
            "vmId": r.vm_id,
            "hardwareProfile": { "vmSize": r.size },
            "storageProfile": {
                "imageReference": {
                    "publisher": r.image.publisher,
                    "offer": r.image.offer,
                    "sku": r.image.sku,
                    "version": r.image.version,
                    "exactVersion": r.exact_version,
                },
                "osDisk": {
                    "osType": "Linux",
                    "name": r.os_disk_name,
                    "createOption": "FromImage",
                    "vhd": { "uri": r.os_disk_uri },
                    "caching": r.caching,
                    "diskSizeGB": r.os_disk_gb,
                    "deleteOption": r.os_disk_delete_option,
                },
                "dataDisks": r.data_disks.iter().map(|d| json!({
                    "lun": d.lun,
                    "name": d.name,
                    "createOption": "Empty",
                    "caching": d.caching,
                    "diskSizeGB": d.size_gb,
                    "vhd": { "uri": d.uri },
                    "toBeDetached": false,
                })).collect::<Vec<_>>(),
            },
            "osProfile": {
                "computerName": r.computer_name,
                "adminUsername": r.admin_username,
                // adminPassword and customData are never returned, as in the cloud.
                "linuxConfiguration": {
                    "disablePasswordAuthentication": r.disable_password_auth,
                    "ssh": { "publicKeys": r.ssh_public_keys.iter().map(|k| json!({
                        "path": k.path,
                        "keyData": k.key_data,
                    })).collect::<Vec<_>>() },
                    "provisionVMAgent": r.provision_vm_agent,
                },
                "secrets": [],
                "allowExtensionOperations": true,
            },
            "networkProfile": {
                "networkInterfaces": [{
                    "id": nic_id,
                    "properties": {
                        "primary": true,
                    },
                }],
            },
            "diagnosticsProfile": { "bootDiagnostics": match &r.diag_storage_uri {
                Some(u) => json!({ "enabled": true, "storageUri": u }),
                None => json!({ "enabled": true }),
            } },
            "provisioningState": provisioning_str(r.provisioning_state),
            "timeCreated": r.time_created,
        },
        "resources": [],
    });
    // As `az vm show -d` adds them: the DIP from the lease, the MAC and the power state.
    v["privateIps"] = json!(lease_ip.map(|ip| ip.to_string()).unwrap_or_default());
    v["macAddresses"] = json!(mac_azure(&r.nic.mac));
    v["powerState"] = json!(r.power.display());
    if let Some(e) = &r.error {
        v["properties"]["error"] = json!(e);
    }
    if with_view {
        v["properties"]["instanceView"] = instance_view(r, lease_ip);
    }
    v
}
