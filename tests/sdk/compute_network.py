"""The official Azure SDKs for Python drive a vmnode node, unmodified.

  python compute_network.py BASE_URL SUBSCRIPTION TOKEN CA_PATH

Every step asserts what the node returned; the script exits non-zero on the first failure and
prints `sdk-ok` at the end.
"""
import sys, time, urllib.request

from azure.core.credentials import AccessToken
from azure.mgmt.compute import ComputeManagementClient
from azure.mgmt.network import NetworkManagementClient
from azure.mgmt.storage import StorageManagementClient
try:  # azure-mgmt-resource >= 24 moved the client into a subpackage
    from azure.mgmt.resource.resources import ResourceManagementClient
except ImportError:
    from azure.mgmt.resource import ResourceManagementClient

base, sub, token, ca = sys.argv[1:5]


class NodeToken:
    """A credential that returns the node's bearer token (what `vmnode account get-access-token` prints)."""

    def get_token(self, *scopes, **kwargs):
        return AccessToken(token, int(time.time()) + 3600)


kw = dict(base_url=base, connection_verify=ca, polling_interval=0.2)
cred = NodeToken()
res = ResourceManagementClient(cred, sub, **kw)
net = NetworkManagementClient(cred, sub, **kw)
comp = ComputeManagementClient(cred, sub, **kw)
st = StorageManagementClient(cred, sub, **kw)

rg = res.resource_groups.create_or_update("sdk", {"location": "local"})
assert rg.name == "sdk" and rg.location == "local", rg

vnet = net.virtual_networks.begin_create_or_update(
    "sdk", "sdkvnet",
    # Bodies as the REST API has them (the SDK sends a dict as is).
    {"location": "local", "properties": {"addressSpace": {"addressPrefixes": ["10.7.0.0/16"]},
     "subnets": [{"name": "web", "properties": {"addressPrefix": "10.7.1.0/24"}}]}},
).result()
assert vnet.provisioning_state == "Succeeded", vnet
assert vnet.subnets[0].address_prefix == "10.7.1.0/24"
subnet = net.subnets.get("sdk", "sdkvnet", "web")
nic = net.network_interfaces.begin_create_or_update(
    "sdk", "sdknic",
    {"location": "local", "properties": {"ipConfigurations": [{"name": "ipconfig1", "properties": {"subnet": {"id": subnet.id}}}]}},
).result()
assert nic.ip_configurations[0].private_ip_address == "10.7.1.4", nic
assert nic.mac_address.startswith("00-0D-3A-"), nic.mac_address

sizes = {s.name: s for s in comp.virtual_machine_sizes.list("local")}
ds1 = sizes["Standard_DS1_v2"]
assert (ds1.number_of_cores, ds1.memory_in_mb, ds1.resource_disk_size_in_mb, ds1.max_data_disk_count) == (1, 3584, 7168, 2)
versions = [v.name for v in comp.virtual_machine_images.list("local", "vmnode", "tiny", "1")]
assert versions, "no image versions"

# Boot diagnostics go to a storage account of the user's, named by its blob endpoint.
diag = st.storage_accounts.begin_create(
    "sdk", "diagstore1", {"location": "local", "sku": {"name": "Standard_LRS"}, "kind": "StorageV2"}
).result()
diag_uri = diag.primary_endpoints.blob

vm_body = {
        "location": "local",
        "properties": {
            "hardwareProfile": {"vmSize": "Standard_B1s"},
            "storageProfile": {
                "imageReference": {"publisher": "vmnode", "offer": "tiny", "sku": "1", "version": "latest"},
                "osDisk": {"createOption": "FromImage", "caching": "ReadWrite"},
            },
            "osProfile": {"computerName": "sdkvm", "adminUsername": "azureuser", "adminPassword": "Passw0rd!Passw0rd"},
            "networkProfile": {"networkInterfaces": [{"id": nic.id, "properties": {"primary": True}}]},
            "diagnosticsProfile": {"bootDiagnostics": {"enabled": True, "storageUri": diag_uri}},
        },
    }
vm = comp.virtual_machines.begin_create_or_update("sdk", "sdkvm", vm_body).result()
assert vm.provisioning_state == "Succeeded", vm.provisioning_state
assert vm.vm_id and vm.hardware_profile.vm_size == "Standard_B1s"
ref = vm.storage_profile.image_reference
assert ref.version == "latest" and ref.exact_version == versions[-1], ref
assert vm.storage_profile.os_disk.vhd.uri.endswith(".vhd"), vm.storage_profile.os_disk
assert vm.storage_profile.os_disk.create_option == "FromImage"
assert vm.os_profile.computer_name == "sdkvm"
assert vm.os_profile.linux_configuration.provision_vm_agent is True
assert vm.os_profile.admin_password is None and vm.os_profile.custom_data is None  # never returned
assert vm.network_profile.network_interfaces[0].id.lower() == nic.id.lower()
assert vm.diagnostics_profile.boot_diagnostics.enabled is True
assert vm.diagnostics_profile.boot_diagnostics.storage_uri == diag_uri, vm.diagnostics_profile


def fetch(url):
    with urllib.request.urlopen(url, timeout=10) as r:
        return r.status, r.read()


# retrieveBootDiagnosticsData: SAS links into that account, which work as plain URLs.
links = comp.virtual_machines.retrieve_boot_diagnostics_data("sdk", "sdkvm", sas_uri_expiration_time_in_minutes=10)
log_uri, shot_uri = links.serial_console_log_blob_uri, links.console_screenshot_blob_uri
assert "/diagstore1/bootdiagnostics-sdkvm-" in log_uri and "sig=" in log_uri, log_uri
assert log_uri.split("?")[0].endswith(vm.vm_id + ".serialconsole.log"), log_uri
assert shot_uri.split("?")[0].endswith(vm.vm_id + ".screenshot.bmp"), shot_uri
deadline = time.time() + 120
while True:
    status, body = fetch(log_uri)
    if b"VMNODE-BOOT: ready" in body:
        break
    assert time.time() < deadline, body[-2000:]
    time.sleep(1)
status, bmp = fetch(shot_uri)
assert status == 200 and bmp[:2] == b"BM", (status, bmp[:16])

# The guest agent's status as the SDK reads it (instanceView.vmAgent): Ready once it answers.
deadline = time.time() + 120
while True:
    agent = comp.virtual_machines.instance_view("sdk", "sdkvm").vm_agent
    if agent and agent.statuses and agent.statuses[0].display_status == "Ready":
        break
    assert time.time() < deadline, agent
    time.sleep(1)
assert agent.vm_agent_version and agent.statuses[0].code == "ProvisioningState/succeeded", agent


def power():
    view = comp.virtual_machines.instance_view("sdk", "sdkvm")
    return [s.code for s in view.statuses if s.code.startswith("PowerState/")][0]


assert power() == "PowerState/running", power()
comp.virtual_machines.begin_power_off("sdk", "sdkvm", skip_shutdown=True).result()
assert power() == "PowerState/stopped", power()
comp.virtual_machines.begin_deallocate("sdk", "sdkvm").result()
assert power() == "PowerState/deallocated", power()
comp.virtual_machines.begin_start("sdk", "sdkvm").result()
assert power() == "PowerState/running", power()
comp.virtual_machines.begin_restart("sdk", "sdkvm").result()
assert power() == "PowerState/running", power()
# Attach a data disk to the running VM (hot-plugged), then detach it: a PUT of the same VM.
vm_body["properties"]["storageProfile"]["dataDisks"] = [{"lun": 0, "name": "sdkdata", "createOption": "Empty", "diskSizeGB": 1}]
vm = comp.virtual_machines.begin_create_or_update("sdk", "sdkvm", vm_body).result()
assert [(d.lun, d.name, d.disk_size_gb) for d in vm.storage_profile.data_disks] == [(0, "sdkdata", 1)], vm.storage_profile.data_disks
vm_body["properties"]["storageProfile"]["dataDisks"] = []
vm = comp.virtual_machines.begin_create_or_update("sdk", "sdkvm", vm_body).result()
assert vm.storage_profile.data_disks == [], vm.storage_profile.data_disks
# PATCH (begin_update): tags change, nothing else does.
vm = comp.virtual_machines.begin_update("sdk", "sdkvm", {"tags": {"env": "test"}}).result()
assert vm.tags == {"env": "test"}, vm.tags
assert comp.virtual_machines.get("sdk", "sdkvm").tags == {"env": "test"}
names = [v.name for v in comp.virtual_machines.list("sdk")]
assert names == ["sdkvm"], names
comp.virtual_machines.begin_delete("sdk", "sdkvm").result()
assert [v.name for v in comp.virtual_machines.list("sdk")] == []
# The NIC was the user's: it stays, detached, with its address.
nic = net.network_interfaces.get("sdk", "sdknic")
assert nic.virtual_machine is None and nic.ip_configurations[0].private_ip_address == "10.7.1.4"
net.network_interfaces.begin_delete("sdk", "sdknic").result()
net.virtual_networks.begin_delete("sdk", "sdkvnet").result()
print("sdk-ok")
