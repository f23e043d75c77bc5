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
    /// `osProfile.linuxConfiguration.ssh.publicKeys[].keyData` (adminPassword and customData
    /// are never stored: the cloud never returns them).
    #[serde(default)]
    pub ssh_public_keys: Vec<String>,
    /// The NoCloud seed of a cloud-init image (vm/cloudinit.rs), attached read-only.
    #[serde(default)]
    pub cloud_init_seed: Option<PathBuf>,
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

/// The VM's instance view: statuses (provisioning, power) and, vmnode's addition, the DIP.
pub fn instance_view(r: &VmRecord, lease_ip: Option<Ipv4Addr>) -> Value {
    let mut statuses = vec![json!({
        "code": format!("ProvisioningState/{}", provisioning_str(r.provisioning_state).to_lowercase()),
        "level": if r.provisioning_state == ProvisioningState::Failed { "Error" } else { "Info" },
        "time": r.state_time,
        "displayStatus": format!("Provisioning {}", provisioning_str(r.provisioning_state).to_lowercase()),
        "message": r.error.as_ref().map(|e| e.message.clone()),
    })];
    statuses.push(json!({
        "code": r.power.code(),
        "level": "Info",
        "displayStatus": r.power.display(),
    }));
    json!({
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
    })
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
                "linuxConfiguration": {
                    "disablePasswordAuthentication": false,
                    "provisionVMAgent": true,
                    "ssh": { "publicKeys": r.ssh_public_keys.iter().map(|k| json!({
                        "path": format!("/home/{}/.ssh/authorized_keys", r.admin_username),
                        "keyData": k,
                    })).collect::<Vec<_>>() },
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
