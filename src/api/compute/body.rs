//! The body of `PUT .../virtualMachines/{vm}` as typed serde structs (camelCase, as the SDKs and
//! `az` send it; unknown fields are tolerated as the cloud does), then explicit validation into a
//! [`CreateVm`]. A field of the wrong type is a 400 that names it in `error.target`.

use serde::Deserialize;
use serde_json::Value;

use crate::api::error::ApiError;
use crate::catalog::ImageRef;
use crate::vm::osprofile::{OsProfileReq, SshKeyReq};
use crate::vm::{CreateVm, DataDiskReq};

type Result<T> = std::result::Result<T, ApiError>;

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
pub(super) struct VmBody {
    location: Option<String>,
    tags: Option<serde_json::Map<String, Value>>,
    properties: Option<Properties>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct Properties {
    hardware_profile: Option<HardwareProfile>,
    storage_profile: Option<StorageProfile>,
    os_profile: Option<OsProfile>,
    network_profile: Option<NetworkProfile>,
    diagnostics_profile: Option<DiagnosticsProfile>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct HardwareProfile {
    vm_size: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct StorageProfile {
    image_reference: Option<ImageReference>,
    os_disk: Option<OsDisk>,
    data_disks: Option<Vec<DataDisk>>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct ImageReference {
    publisher: Option<String>,
    offer: Option<String>,
    sku: Option<String>,
    version: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct OsDisk {
    caching: Option<String>,
    #[serde(rename = "diskSizeGB")]
    disk_size_gb: Option<u64>,
    delete_option: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct DataDisk {
    lun: Option<u64>,
    name: Option<String>,
    create_option: Option<String>,
    #[serde(rename = "diskSizeGB")]
    disk_size_gb: Option<u64>,
    caching: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct OsProfile {
    computer_name: Option<String>,
    admin_username: Option<String>,
    admin_password: Option<String>,
    custom_data: Option<String>,
    linux_configuration: Option<LinuxConfiguration>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct LinuxConfiguration {
    disable_password_authentication: Option<bool>,
    #[serde(rename = "provisionVMAgent")]
    provision_vm_agent: Option<bool>,
    ssh: Option<Ssh>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct Ssh {
    public_keys: Option<Vec<PublicKey>>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct PublicKey {
    path: Option<String>,
    key_data: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct NetworkProfile {
    network_interfaces: Option<Vec<NicRef>>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct NicRef {
    id: Option<String>,
    properties: Option<NicRefProperties>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct NicRefProperties {
    primary: Option<bool>,
    delete_option: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct DiagnosticsProfile {
    boot_diagnostics: Option<BootDiagnostics>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct BootDiagnostics {
    storage_uri: Option<String>,
}

/// Parses a VM body; a field of the wrong type is named in `error.target` as the cloud names
/// it: the osProfile's fields from inside it (`adminPassword`), the rest from `properties`.
pub(super) fn parse(body: &Value) -> Result<VmBody> {
    crate::api::body::parse_named(body, &["properties.", "osProfile."])
}

fn missing(name: &str) -> ApiError {
    ApiError::bad_request(format!("Required parameter '{name}' is missing (null)."))
}

impl VmBody {
    /// The create request this body asks for, checked field by field.
    pub(super) fn into_create(self, rg: &str, name: &str) -> Result<CreateVm> {
        let p = self
            .properties
            .ok_or_else(|| ApiError::bad_request("Required parameter 'properties' is missing."))?;
        let storage = p.storage_profile.unwrap_or_default();
        let image = image_of(storage.image_reference)?;
        let os_disk = storage.os_disk.unwrap_or_default();
        let os = p.os_profile.unwrap_or_default();
        let size = p
            .hardware_profile
            .and_then(|h| h.vm_size)
            .ok_or_else(|| missing("hardwareProfile.vmSize"))?;
        Ok(CreateVm {
            rg: rg.into(),
            name: name.into(),
            location: self.location,
            size,
            image,
            computer_name: os.computer_name.clone(),
            admin_username: os
                .admin_username
                .clone()
                .unwrap_or_else(|| "azureuser".into()),
            caching: os_disk.caching.unwrap_or_else(|| "ReadWrite".into()),
            tags: self.tags.unwrap_or_default(),
            nic: primary_nic(p.network_profile)?,
            disk_size_gb: os_disk.disk_size_gb,
            data_disks: storage.data_disks.map(data_disks).transpose()?,
            os_disk_delete_option: os_disk.delete_option,
            diag_storage_uri: p
                .diagnostics_profile
                .and_then(|d| d.boot_diagnostics)
                .and_then(|b| b.storage_uri)
                .filter(|u| !u.is_empty()),
            os_profile: os_profile(os)?,
        })
    }
}

fn image_of(img: Option<ImageReference>) -> Result<ImageRef> {
    let img = img.ok_or_else(|| {
        ApiError::bad_request(
            "Required parameter 'properties.storageProfile.imageReference' is missing.",
        )
    })?;
    let part = |v: Option<String>, k: &str| {
        v.ok_or_else(|| {
            ApiError::bad_request(format!(
                "Required parameter 'storageProfile.imageReference.{k}' is missing."
            ))
        })
    };
    Ok(ImageRef {
        publisher: part(img.publisher, "publisher")?,
        offer: part(img.offer, "offer")?,
        sku: part(img.sku, "sku")?,
        version: img.version.unwrap_or_else(|| "latest".into()),
    })
}

/// The primary NIC, as `networkProfile.networkInterfaces[]` references it: (rg, name, delete
/// it with the VM?), or none to get one made in the node's default vnet.
fn primary_nic(net: Option<NetworkProfile>) -> Result<Option<(String, String, bool)>> {
    let list = net.and_then(|n| n.network_interfaces).unwrap_or_default();
    let is_primary = |n: &NicRef| n.properties.as_ref().and_then(|p| p.primary) == Some(true);
    let Some(n) = list
        .iter()
        .position(is_primary)
        .or(if list.is_empty() { None } else { Some(0) })
        .map(|i| &list[i])
    else {
        return Ok(None);
    };
    let id = n.id.as_deref().ok_or_else(|| {
        ApiError::bad_request("networkProfile.networkInterfaces[].id is missing.")
    })?;
    let at = |k: &str| crate::net::vnet::id_segment(id, k);
    let (Some(nrg), Some(nname)) = (at("resourceGroups"), at("networkInterfaces")) else {
        return Err(ApiError::bad_request(format!(
            "'{id}' is not a network interface id."
        )));
    };
    let delete = n
        .properties
        .as_ref()
        .and_then(|p| p.delete_option.as_deref())
        .is_some_and(|d| d.eq_ignore_ascii_case("Delete"));
    Ok(Some((nrg.to_string(), nname.to_string(), delete)))
}

/// `storageProfile.dataDisks[]`: new empty disks (`createOption: Empty`, or `Attach` of a disk
/// the VM already has, as an SDK's read-modify-write sends them).
fn data_disks(list: Vec<DataDisk>) -> Result<Vec<DataDiskReq>> {
    list.into_iter()
        .map(|d| {
            let lun = d
                .lun
                .ok_or_else(|| ApiError::bad_request("Every data disk needs a lun."))?;
            let opt = d.create_option.as_deref().unwrap_or("Empty");
            if !(opt.eq_ignore_ascii_case("Empty") || opt.eq_ignore_ascii_case("Attach")) {
                return Err(ApiError::bad_request(format!(
                    "dataDisks[lun {lun}].createOption '{opt}' is not supported: use Empty (a new disk)."
                )));
            }
            Ok(DataDiskReq {
                lun: u32::try_from(lun).unwrap_or(u32::MAX),
                name: d.name,
                size_gb: d.disk_size_gb.unwrap_or(1),
                caching: d.caching.unwrap_or_else(|| "None".into()),
            })
        })
        .collect()
}

/// The credential part of `osProfile` (checked later, by `vm::osprofile`, on create only).
fn os_profile(os: OsProfile) -> Result<OsProfileReq> {
    let linux = os.linux_configuration.unwrap_or_default();
    let keys = linux.ssh.and_then(|s| s.public_keys).unwrap_or_default();
    let ssh_keys = keys
        .into_iter()
        .map(|k| {
            let key_data = k.key_data.ok_or_else(|| {
                missing("linuxConfiguration.ssh.publicKeys.keyData")
                    .with_target("linuxConfiguration.ssh.publicKeys.keyData")
            })?;
            Ok(SshKeyReq {
                path: k.path,
                key_data,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(OsProfileReq {
        admin_password: os.admin_password,
        disable_password_auth: linux.disable_password_authentication,
        ssh_keys,
        custom_data: os.custom_data,
        provision_vm_agent: linux.provision_vm_agent,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn err(body: Value) -> ApiError {
        match parse(&body).and_then(|b| b.into_create("rg", "vm")) {
            Err(e) => e,
            Ok(_) => panic!("{body} was accepted"),
        }
    }

    #[test]
    fn wrong_types_name_the_field() {
        let e = err(json!({"properties": {"osProfile": {"adminPassword": 5}}}));
        assert_eq!(e.target.as_deref(), Some("adminPassword"));
        assert_eq!(e.message, "'adminPassword' must be a string.");
        let e = err(json!({"properties": {"osProfile": {"linuxConfiguration": {
            "disablePasswordAuthentication": "yes"}}}}));
        assert_eq!(
            e.target.as_deref(),
            Some("linuxConfiguration.disablePasswordAuthentication")
        );
        assert!(
            e.message.ends_with("must be true or false."),
            "{}",
            e.message
        );
        let e = err(json!({"properties": {"osProfile": {"linuxConfiguration": {
            "ssh": {"publicKeys": "k"}}}}}));
        assert_eq!(
            e.message,
            "'linuxConfiguration.ssh.publicKeys' must be a list of {path, keyData}."
        );
        let e = err(json!({"properties": {"storageProfile": {"dataDisks": [{"lun": "x"}]}}}));
        assert_eq!(e.target.as_deref(), Some("storageProfile.dataDisks.lun"));
    }

    #[test]
    fn a_full_body_parses_and_unknown_fields_are_tolerated() {
        let body = json!({
            "location": "local", "tags": {"a": "b"}, "zones": ["1"],
            "properties": {
                "hardwareProfile": {"vmSize": "Standard_B1s"},
                "storageProfile": {
                    "imageReference": {"publisher": "P", "offer": "O", "sku": "S"},
                    "osDisk": {"caching": "ReadOnly", "diskSizeGB": 8, "createOption": "FromImage"},
                    "dataDisks": [{"lun": 1, "diskSizeGB": 2}]
                },
                "osProfile": {"adminUsername": "u", "linuxConfiguration": {
                    "provisionVMAgent": false,
                    "ssh": {"publicKeys": [{"path": "/home/u/.ssh/authorized_keys", "keyData": "k"}]}}},
                "networkProfile": {"networkInterfaces": [
                    {"id": "/subscriptions/s/resourceGroups/g/providers/Microsoft.Network/networkInterfaces/n0"},
                    {"id": "/subscriptions/s/resourceGroups/g/providers/Microsoft.Network/networkInterfaces/n1",
                     "properties": {"primary": true, "deleteOption": "Delete"}}]},
                "diagnosticsProfile": {"bootDiagnostics": {"enabled": true, "storageUri": ""}}
            }
        });
        let c = parse(&body).unwrap().into_create("rg", "vm").unwrap();
        assert_eq!(c.size, "Standard_B1s");
        assert_eq!(c.image.version, "latest");
        assert_eq!(c.caching, "ReadOnly");
        assert_eq!(c.disk_size_gb, Some(8));
        assert_eq!(c.nic, Some(("g".into(), "n1".into(), true)));
        assert_eq!(c.diag_storage_uri, None);
        assert_eq!(c.admin_username, "u");
        assert_eq!(c.os_profile.provision_vm_agent, Some(false));
        assert_eq!(c.os_profile.ssh_keys.len(), 1);
        let d = c.data_disks.unwrap();
        assert_eq!(
            (d[0].lun, d[0].size_gb, d[0].caching.as_str()),
            (1, 2, "None")
        );
    }

    #[test]
    fn missing_parts_say_which() {
        assert_eq!(
            err(json!({})).message,
            "Required parameter 'properties' is missing."
        );
        let e =
            err(json!({"properties": {"storageProfile": {"imageReference": {"publisher": "P"}}}}));
        assert_eq!(
            e.message,
            "Required parameter 'storageProfile.imageReference.offer' is missing."
        );
        let e = err(json!({"properties": {"storageProfile": {"imageReference":
            {"publisher": "P", "offer": "O", "sku": "S"}}}}));
        assert_eq!(
            e.message,
            "Required parameter 'hardwareProfile.vmSize' is missing (null)."
        );
    }
}
