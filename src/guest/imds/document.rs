//! The IMDS instance document (`/metadata/instance`): what one VM is, as the cloud's Instance
//! Metadata Service shows it to the guest (design note §6.2). Pure: a [`Facts`] in, JSON out.
//! Every primitive is a string, as the cloud's are (`"diskSizeGB": "30"`), and what does not
//! apply is `""`; `extended` is added only when asked for.

use serde_json::{json, Value};

/// What the document says of one VM: read from its record, its NIC and its subnet by
/// `guest::attribution`, or made up by a test or the fuzz loop.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Facts {
    pub vm_id: String,
    pub name: String,
    pub resource_group: String,
    pub subscription: String,
    pub location: String,
    pub vm_size: String,
    pub computer_name: String,
    pub admin_username: String,
    pub disable_password_auth: bool,
    /// `(keyData, path)` of each SSH key.
    pub public_keys: Vec<(String, String)>,
    /// Tags in their stored order.
    pub tags: Vec<(String, String)>,
    pub image: Image,
    pub os_disk: Disk,
    pub data_disks: Vec<Disk>,
    /// The temporary resource disk's size in MB ("" when unknown).
    pub resource_disk_mb: String,
    /// Upper-case hex without separators (`000D3A047598`), as the cloud gives it here.
    pub mac: String,
    pub private_ip: String,
    /// The subnet's network address and prefix length.
    pub subnet_address: String,
    pub subnet_prefix: String,
    /// `userData` (base64) as given; the node takes none yet, so "".
    pub user_data: String,
    pub has_custom_data: bool,
}

/// `storageProfile.imageReference`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Image {
    pub publisher: String,
    pub offer: String,
    pub sku: String,
    pub version: String,
}

/// An OS or data disk as the document lists it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Disk {
    pub name: String,
    /// The data disk's LUN ("" for the OS disk, where the cloud has none).
    pub lun: String,
    pub size_gb: String,
    pub caching: String,
}

/// `tags` as the cloud flattens them: `k1:v1;k2:v2`.
fn flat_tags(tags: &[(String, String)]) -> String {
    tags.iter()
        .map(|(k, v)| format!("{k}:{v}"))
        .collect::<Vec<_>>()
        .join(";")
}

fn resource_id(f: &Facts) -> String {
    format!(
        "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.Compute/virtualMachines/{}",
        f.subscription, f.resource_group, f.name
    )
}

fn compute(f: &Facts) -> Value {
    let image = &f.image;
    json!({
        "azEnvironment": "AzurePublicCloud",
        "location": f.location,
        "name": f.name,
        "vmId": f.vm_id,
        "vmSize": f.vm_size,
        "osType": "Linux",
        "publisher": image.publisher,
        "offer": image.offer,
        "sku": image.sku,
        "version": image.version,
        "resourceGroupName": f.resource_group,
        "subscriptionId": f.subscription,
        "resourceId": resource_id(f),
        "platformFaultDomain": "0",
        "platformUpdateDomain": "0",
        "placementGroupId": "",
        "zone": "",
        "tags": flat_tags(&f.tags),
        "tagsList": f.tags.iter().map(|(k, v)| json!({"name": k, "value": v})).collect::<Vec<_>>(),
        "vmScaleSetName": "",
        "provider": "Microsoft.Compute",
        "osProfile": {
            "adminUsername": f.admin_username,
            "computerName": f.computer_name,
            "disablePasswordAuthentication": f.disable_password_auth.to_string(),
        },
        "publicKeys": f.public_keys.iter()
            .map(|(key, path)| json!({"keyData": key, "path": path}))
            .collect::<Vec<_>>(),
        "userData": f.user_data,
        "storageProfile": {
            "imageReference": {
                "publisher": image.publisher, "offer": image.offer, "sku": image.sku,
                "version": image.version, "id": "",
            },
            "osDisk": {
                "name": f.os_disk.name, "osType": "Linux", "diskSizeGB": f.os_disk.size_gb,
                "caching": f.os_disk.caching, "createOption": "FromImage",
            },
            "dataDisks": f.data_disks.iter().map(|d| json!({
                "name": d.name, "lun": d.lun, "diskSizeGB": d.size_gb, "caching": d.caching,
                "createOption": "Empty",
            })).collect::<Vec<_>>(),
            "resourceDisk": {"size": f.resource_disk_mb},
        },
        "securityProfile": {"secureBootEnabled": "false", "virtualTpmEnabled": "false"},
    })
}

fn network(f: &Facts) -> Value {
    json!({
        "interface": [{
            "macAddress": f.mac,
            "ipv4": {
                "ipAddress": [{"privateIpAddress": f.private_ip, "publicIpAddress": ""}],
                "subnet": [{"address": f.subnet_address, "prefix": f.subnet_prefix}],
            },
            "ipv6": {"ipAddress": []},
        }]
    })
}

/// The whole document; `extended` adds the `extended` section (the caller decides when).
pub fn instance(f: &Facts, extended: bool) -> Value {
    let mut doc = json!({ "compute": compute(f), "network": network(f) });
    if extended {
        doc["extended"] = json!({
            "compute": {"ppsType": "None", "hasCustomData": f.has_custom_data}
        });
    }
    doc
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every primitive the document holds, outside `extended`, is a string.
    fn all_strings(v: &Value) -> bool {
        match v {
            Value::String(_) => true,
            Value::Array(a) => a.iter().all(all_strings),
            Value::Object(o) => o.values().all(all_strings),
            _ => false,
        }
    }

    #[test]
    fn primitives_are_strings_and_tags_flattened() {
        let f = Facts {
            name: "vm1".into(),
            tags: vec![("a".into(), "1".into()), ("b".into(), "x y".into())],
            public_keys: vec![("ssh-rsa AAAA".into(), "/home/u/.ssh/authorized_keys".into())],
            data_disks: vec![Disk {
                lun: "0".into(),
                ..Disk::default()
            }],
            ..Facts::default()
        };
        let doc = instance(&f, false);
        assert!(all_strings(&doc), "{doc}");
        assert_eq!(doc["compute"]["tags"], "a:1;b:x y");
        assert_eq!(doc["compute"]["tagsList"][1]["value"], "x y");
        assert_eq!(doc["compute"]["publicKeys"][0]["keyData"], "ssh-rsa AAAA");
        assert!(doc.get("extended").is_none());
        let ext = instance(&f, true);
        assert_eq!(ext["extended"]["compute"]["hasCustomData"], false);
    }
}
