"""Template deployments through azure-mgmt-resource, unmodified: a vnet, a NIC and a VM from one
ARM template, in dependency order; a failing resource gives the cloud's nested error and skips
what depends on it; a bad template is refused before anything is made.

  python deployments.py BASE_URL SUBSCRIPTION TOKEN CA_PATH
"""
import sys, time

from azure.core.credentials import AccessToken
from azure.core.exceptions import HttpResponseError
from azure.mgmt.compute import ComputeManagementClient
from azure.mgmt.network import NetworkManagementClient
try:
    from azure.mgmt.resource.resources import ResourceManagementClient
except ImportError:
    from azure.mgmt.resource import ResourceManagementClient
try:  # azure-mgmt-resource >= 24 moved deployments into azure-mgmt-resource-deployments
    from azure.mgmt.resource.deployments import DeploymentsMgmtClient
except ImportError:
    DeploymentsMgmtClient = None

base, sub, token, ca = sys.argv[1:5]


class NodeToken:
    def get_token(self, *scopes, **kwargs):
        return AccessToken(token, int(time.time()) + 3600)


kw = dict(base_url=base, connection_verify=ca, polling_interval=0.2)
res = ResourceManagementClient(NodeToken(), sub, **kw)
groups = res
if DeploymentsMgmtClient is not None:
    res = DeploymentsMgmtClient(NodeToken(), sub, **kw)
comp = ComputeManagementClient(NodeToken(), sub, **kw)
net = NetworkManagementClient(NodeToken(), sub, **kw)
groups.resource_groups.create_or_update("dep", {"location": "local"})

template = {
    "$schema": "https://schema.management.azure.com/schemas/2019-04-01/deploymentTemplate.json#",
    "contentVersion": "1.0.0.0",
    "parameters": {
        "vmName": {"type": "string"},
        "vmSize": {"type": "string", "defaultValue": "Standard_B1s", "allowedValues": ["Standard_B1s", "Standard_Nope"]},
        "adminPassword": {"type": "securestring"},
    },
    "variables": {
        "vnetName": "[concat(parameters('vmName'), '-vnet')]",
        "nicName": "[concat(parameters('vmName'), '-nic')]",
        "subnetId": "[resourceId('Microsoft.Network/virtualNetworks/subnets', variables('vnetName'), 'default')]",
    },
    "resources": [
        {
            "type": "Microsoft.Compute/virtualMachines",
            "apiVersion": "2023-03-01",
            "name": "[parameters('vmName')]",
            "location": "[resourceGroup().location]",
            "dependsOn": ["[resourceId('Microsoft.Network/networkInterfaces', variables('nicName'))]"],
            "properties": {
                "hardwareProfile": {"vmSize": "[parameters('vmSize')]"},
                "storageProfile": {
                    "imageReference": {"publisher": "vmnode", "offer": "tiny", "sku": "1", "version": "latest"},
                    "osDisk": {"createOption": "FromImage"},
                },
                "osProfile": {"computerName": "[parameters('vmName')]", "adminUsername": "azureuser",
                              "adminPassword": "[parameters('adminPassword')]"},
                "networkProfile": {"networkInterfaces": [
                    {"id": "[resourceId('Microsoft.Network/networkInterfaces', variables('nicName'))]"}]},
            },
        },
        {
            "type": "Microsoft.Network/networkInterfaces",
            "apiVersion": "2023-05-01",
            "name": "[variables('nicName')]",
            "location": "[resourceGroup().location]",
            "dependsOn": ["[resourceId('Microsoft.Network/virtualNetworks', variables('vnetName'))]"],
            "properties": {"ipConfigurations": [{"name": "ipconfig1", "properties": {"subnet": {"id": "[variables('subnetId')]"}}}]},
        },
        {
            "type": "Microsoft.Network/virtualNetworks",
            "apiVersion": "2023-05-01",
            "name": "[variables('vnetName')]",
            "location": "[resourceGroup().location]",
            "properties": {"addressSpace": {"addressPrefixes": ["10.9.0.0/16"]},
                           "subnets": [{"name": "default", "properties": {"addressPrefix": "10.9.0.0/24"}}]},
        },
    ],
}
secret = "Sup3r-Secret-Passw0rd!"


def deploy(name, params):
    body = {"properties": {"mode": "Incremental", "template": template,
                           "parameters": {k: {"value": v} for k, v in params.items()}}}
    return res.deployments.begin_create_or_update("dep", name, body).result()


# 1. The whole template: three resources, in dependency order (the template lists them backwards).
d = deploy("web", {"vmName": "depvm", "adminPassword": secret})
assert d.properties.provisioning_state == "Succeeded", d.properties
ids = sorted(r.id.split("/providers/")[1] for r in d.properties.output_resources)
assert ids == ["Microsoft.Compute/virtualMachines/depvm", "Microsoft.Network/networkInterfaces/depvm-nic",
               "Microsoft.Network/virtualNetworks/depvm-vnet"], ids
assert "value" not in d.properties.parameters["adminPassword"], d.properties.parameters
assert d.properties.parameters["vmSize"]["value"] == "Standard_B1s"
ops = list(res.deployment_operations.list("dep", "web"))
order = [o.properties.target_resource.resource_type for o in sorted(ops, key=lambda o: o.properties.timestamp)]
assert order == ["Microsoft.Network/virtualNetworks", "Microsoft.Network/networkInterfaces",
                 "Microsoft.Compute/virtualMachines"], order
assert all(o.properties.provisioning_state == "Succeeded" for o in ops), ops
vm = comp.virtual_machines.get("dep", "depvm")
assert vm.provisioning_state == "Succeeded"
view = comp.virtual_machines.instance_view("dep", "depvm")
assert "PowerState/running" in [s.code for s in view.statuses], view.statuses
assert net.network_interfaces.get("dep", "depvm-nic").ip_configurations[0].private_ip_address == "10.9.0.4"
assert [x.name for x in res.deployments.list_by_resource_group("dep")] == ["web"]
assert secret not in str(res.deployments.get("dep", "web").as_dict())

# 2. A resource the provider refuses: the deployment fails with DeploymentFailed naming the
# provider's error; what depends on it is not attempted; what was made stays.
try:
    deploy("bad", {"vmName": "badvm", "vmSize": "Standard_Nope", "adminPassword": secret})
    raise AssertionError("a deployment with a bad VM size succeeded")
except HttpResponseError as e:
    assert e.error.code == "DeploymentFailed", e.error
    detail = e.error.details[0]
    assert "Standard_Nope" in detail.message, detail
d = res.deployments.get("dep", "bad")
assert d.properties.provisioning_state == "Failed"
states = {o.properties.target_resource.resource_name: o.properties.provisioning_state
          for o in res.deployment_operations.list("dep", "bad")}
assert states == {"badvm-vnet": "Succeeded", "badvm-nic": "Succeeded", "badvm": "Failed"}, states
try:
    comp.virtual_machines.get("dep", "badvm")
    raise AssertionError("the refused VM exists")
except HttpResponseError as e:
    assert e.status_code == 404

# 3. A template that cannot be evaluated is refused at once, and nothing is made.
try:
    deploy("broken", {"vmName": "x", "adminPassword": secret, "nope": 1})
    raise AssertionError("an undeclared parameter was accepted")
except HttpResponseError as e:
    assert e.status_code == 400 and e.error.code == "InvalidTemplate", e.error
    assert "'nope'" in e.error.message, e.error.message
assert [x.name for x in net.virtual_networks.list("dep")] == ["badvm-vnet", "depvm-vnet"], \
    [x.name for x in net.virtual_networks.list("dep")]

comp.virtual_machines.begin_delete("dep", "depvm").result()
res.deployments.begin_delete("dep", "web").result()
assert [x.name for x in res.deployments.list_by_resource_group("dep")] == ["bad"]
print("deploy-ok")
