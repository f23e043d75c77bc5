#!/usr/bin/env python3
"""Writes docs/openapi.json: vmnode's management API as src/api/routes.rs serves it.

Run `python3 docs/openapi.py` after adding or changing a route; `tests/api_fuzz.rs`
(`openapi_names_every_route`) fails when a route of routes.rs is missing here, and the fuzzer in
the same file drives every operation listed here against a real daemon.

Schemas name the fields the handlers in src/api/*.rs read (and what they answer), not every field
the cloud defines: vmnode ignores the rest.
"""

import json
import os
import re

SUB = "/subscriptions/{sub}"
RG = SUB + "/resourceGroups/{rg}"
VM = RG + "/providers/Microsoft.Compute/virtualMachines"
LOC = SUB + "/providers/Microsoft.Compute/locations/{loc}"
STG = RG + "/providers/Microsoft.Storage"
NET = RG + "/providers/Microsoft.Network"
IMG = "/publishers/{publisher}/artifacttypes/vmimage/offers"
DEP = RG + "/providers/Microsoft.Resources/deployments"
VIEWER = "/vmnode/v1/viewer"

PARAM_DOC = {
    "sub": "The node's subscription id (`vmnode account show`); any other is 404 SubscriptionNotFound.",
    "rg": "Resource group name: 1-90 letters, digits, '-', '_', '.', '(' or ')', not ending with '.'.",
    "vm": "Virtual machine name.",
    "loc": "The node's location (`vmnode account show`); others are 404 LocationNotAvailable.",
    "id": "An operation id (from an Azure-AsyncOperation header) or Run Command id.",
    "name": "The child resource's name (extension or deployment: 1-64 letters, digits, '-', '_', '.', '(' or ')').",
    "publisher": "Image publisher.",
    "offer": "Image offer.",
    "sku": "Image sku.",
    "version": "Image version, or `latest`.",
    "vnet": "Virtual network name: 1-64 letters, digits, '-', '_' or '.'.",
    "subnet": "Subnet name: 1-80 letters, digits, '-', '_' or '.', starting with a letter or digit, ending with one or '_'.",
    "nic": "Network interface name: 1-80 letters, digits, '-', '_' or '.', starting with a letter or digit, ending with one or '_'.",
    "account": "Storage account name: 3-24 lowercase letters and digits.",
    "op": "A deployment operation id.",
    "file": "`viewer.css`, `viewer.js` or `url`.",
}


def ref(name):
    return {"$ref": f"#/components/schemas/{name}"}


def obj(props, required=None, **extra):
    o = {"type": "object", "properties": props}
    if required:
        o["required"] = required
    o.update(extra)
    return o


S = {"type": "string"}
I = {"type": "integer"}
B = {"type": "boolean"}
TAGS = {"type": "object", "additionalProperties": S}
ANY = {"type": "object", "additionalProperties": True}

SCHEMAS = {
    "Error": obj(
        {
            "error": obj(
                {
                    "code": S,
                    "message": S,
                    "target": S,
                    "details": {"type": "array", "items": ANY},
                },
                ["code", "message"],
            )
        },
        ["error"],
        description="The cloud's error shape; the code is also in the x-ms-error-code header.",
    ),
    "List": obj({"value": {"type": "array", "items": ANY}}, ["value"]),
    "NameList": {"type": "array", "items": obj({"name": S, "location": S, "id": S})},
    "Resource": obj(
        {"id": S, "name": S, "type": S, "location": S, "tags": TAGS, "properties": ANY},
        description="An ARM resource as vmnode renders it.",
    ),
    "Subscription": obj(
        {"id": S, "subscriptionId": S, "displayName": S, "state": S, "tenantId": S}
    ),
    "ResourceGroupPut": obj(
        {
            "location": {**S, "description": "Must be the node's location when given."},
            "tags": TAGS,
        }
    ),
    "VirtualMachinePut": obj(
        {
            "location": S,
            "tags": TAGS,
            "properties": obj(
                {
                    "hardwareProfile": obj({"vmSize": S}, ["vmSize"]),
                    "storageProfile": obj(
                        {
                            "imageReference": obj(
                                {"publisher": S, "offer": S, "sku": S, "version": S},
                                ["publisher", "offer", "sku"],
                            ),
                            "osDisk": obj(
                                {"caching": S, "diskSizeGB": I, "deleteOption": S}
                            ),
                            "dataDisks": {
                                "type": "array",
                                "items": obj(
                                    {
                                        "lun": I,
                                        "name": S,
                                        "diskSizeGB": I,
                                        "caching": S,
                                        "createOption": {"type": "string", "enum": ["Empty", "Attach"]},
                                    },
                                    ["lun"],
                                ),
                            },
                        },
                        ["imageReference"],
                    ),
                    "osProfile": obj(
                        {
                            "computerName": S,
                            "adminUsername": S,
                            "adminPassword": S,
                            "customData": {**S, "description": "base64"},
                            "linuxConfiguration": obj(
                                {
                                    "disablePasswordAuthentication": B,
                                    "provisionVMAgent": B,
                                    "ssh": obj(
                                        {
                                            "publicKeys": {
                                                "type": "array",
                                                "items": obj({"path": S, "keyData": S}, ["keyData"]),
                                            }
                                        }
                                    ),
                                }
                            ),
                        }
                    ),
                    "networkProfile": obj(
                        {
                            "networkInterfaces": {
                                "type": "array",
                                "items": obj(
                                    {"id": S, "properties": obj({"primary": B, "deleteOption": S})},
                                    ["id"],
                                ),
                            }
                        }
                    ),
                    "diagnosticsProfile": obj(
                        {"bootDiagnostics": obj({"enabled": B, "storageUri": S})}
                    ),
                },
                ["hardwareProfile", "storageProfile"],
            ),
        },
        ["properties"],
    ),
    "VirtualMachinePatch": {
        "allOf": [ref("VirtualMachinePut")],
        "description": "A JSON merge patch (RFC 7396) of the VM; only tags and data disks may change.",
    },
    "VirtualNetworkPut": obj(
        {
            "location": S,
            "tags": TAGS,
            "properties": obj(
                {
                    "addressSpace": obj({"addressPrefixes": {"type": "array", "items": S}}),
                    "subnets": {
                        "type": "array",
                        "items": obj(
                            {"name": S, "properties": obj({"addressPrefix": S}, ["addressPrefix"])},
                            ["name", "properties"],
                        ),
                    },
                }
            ),
        }
    ),
    "SubnetPut": obj({"properties": obj({"addressPrefix": S}, ["addressPrefix"])}, ["properties"]),
    "NetworkInterfacePut": obj(
        {
            "location": S,
            "properties": obj(
                {
                    "ipConfigurations": {
                        "type": "array",
                        "items": obj(
                            {
                                "name": S,
                                "properties": obj(
                                    {
                                        "subnet": obj({"id": S}, ["id"]),
                                        "privateIPAllocationMethod": {"type": "string", "enum": ["Dynamic", "Static"]},
                                        "privateIPAddress": S,
                                    },
                                    ["subnet"],
                                ),
                            }
                        ),
                    }
                },
                ["ipConfigurations"],
            ),
        },
        ["properties"],
    ),
    "StorageAccountPut": obj({"location": S, "kind": S, "sku": obj({"name": S})}),
    "StorageKeys": obj(
        {"keys": {"type": "array", "items": obj({"keyName": S, "value": S, "permissions": S})}}
    ),
    "DeploymentPut": obj(
        {
            "properties": obj(
                {
                    "mode": {"type": "string", "enum": ["Incremental"]},
                    "template": {**ANY, "description": "An ARM template, inline (templateLink is refused)."},
                    "parameters": ANY,
                },
                ["template"],
            )
        },
        ["properties"],
    ),
    "ExtensionPut": obj(
        {
            "location": S,
            "tags": TAGS,
            "properties": obj(
                {
                    "publisher": S,
                    "type": S,
                    "typeHandlerVersion": S,
                    "autoUpgradeMinorVersion": B,
                    "settings": ANY,
                    "protectedSettings": ANY,
                    "forceUpdateTag": S,
                },
                ["publisher", "type"],
            ),
        },
        ["properties"],
    ),
    "RunCommandInput": obj(
        {
            "commandId": S,
            "script": {"type": "array", "items": S},
            "parameters": {"type": "array", "items": obj({"name": S, "value": S})},
        },
        ["commandId"],
    ),
    "OperationStatus": obj({"name": S, "status": S, "startTime": S, "endTime": S, "error": ANY}),
}

# Example bodies: valid requests (the fuzzer mutates these). `{...}` is filled in by the fuzzer.
EXAMPLES = {
    "ResourceGroupPut": {"location": "local", "tags": {"team": "fuzz"}},
    "VirtualMachinePut": {
        "location": "local",
        "properties": {
            "hardwareProfile": {"vmSize": "Standard_B1s"},
            "storageProfile": {
                "imageReference": {"publisher": "vmnode", "offer": "tiny", "sku": "1", "version": "latest"},
                "osDisk": {"caching": "ReadWrite", "diskSizeGB": 1},
                "dataDisks": [{"lun": 0, "diskSizeGB": 1, "createOption": "Empty"}],
            },
            "osProfile": {
                "computerName": "fuzzvm",
                "adminUsername": "azureuser",
                "adminPassword": "Passw0rd!Passw0rd",
                "linuxConfiguration": {
                    "disablePasswordAuthentication": False,
                    "ssh": {"publicKeys": [{"path": "/home/azureuser/.ssh/authorized_keys", "keyData": "ssh-ed25519 AAAA fuzz"}]},
                },
            },
            "networkProfile": {"networkInterfaces": [{"id": SUB + "/resourceGroups/{rg}/providers/Microsoft.Network/networkInterfaces/{nic}", "properties": {"primary": True}}]},
            "diagnosticsProfile": {"bootDiagnostics": {"enabled": True}},
        },
    },
    "VirtualMachinePatch": {"tags": {"a": "b"}},
    "VirtualNetworkPut": {
        "location": "local",
        "properties": {
            "addressSpace": {"addressPrefixes": ["10.77.0.0/16"]},
            "subnets": [{"name": "default", "properties": {"addressPrefix": "10.77.0.0/24"}}],
        },
    },
    "SubnetPut": {"properties": {"addressPrefix": "10.77.1.0/24"}},
    "NetworkInterfacePut": {
        "location": "local",
        "properties": {
            "ipConfigurations": [
                {
                    "name": "ipconfig1",
                    "properties": {
                        "subnet": {"id": SUB + "/resourceGroups/{rg}/providers/Microsoft.Network/virtualNetworks/{vnet}/subnets/{subnet}"},
                        "privateIPAllocationMethod": "Dynamic",
                    },
                }
            ]
        },
    },
    "StorageAccountPut": {"location": "local", "kind": "StorageV2", "sku": {"name": "Standard_LRS"}},
    "DeploymentPut": {
        "properties": {
            "mode": "Incremental",
            "template": {
                "$schema": "https://schema.management.azure.com/schemas/2019-04-01/deploymentTemplate.json#",
                "contentVersion": "1.0.0.0",
                "parameters": {"p": {"type": "string", "defaultValue": "x"}},
                "resources": [],
            },
            "parameters": {"p": {"value": "y"}},
        }
    },
    "ExtensionPut": {
        "location": "local",
        "properties": {
            "publisher": "Microsoft.Azure.Extensions",
            "type": "CustomScript",
            "typeHandlerVersion": "2.1",
            "settings": {"commandToExecute": "true"},
        },
    },
    "RunCommandInput": {"commandId": "RunShellScript", "script": ["echo hi"]},
}

E = {"description": "Error", "content": {"application/json": {"schema": ref("Error")}}}


def js(schema_name, desc="OK"):
    return {"description": desc, "content": {"application/json": {"schema": ref(schema_name)}}}


def empty(desc):
    return {"description": desc}


def accepted(desc="Accepted: poll the Azure-AsyncOperation / Location header."):
    return {
        "description": desc,
        "headers": {
            "Azure-AsyncOperation": {"schema": S},
            "Location": {"schema": S},
            "Retry-After": {"schema": I},
        },
    }


def q(name, desc, schema=None):
    return {"name": name, "in": "query", "required": False, "schema": schema or S, "description": desc}


# (method, path, operationId, summary, query params, request body schema, {status: response})
OPS = [
    ("get", "/subscriptions", "Subscriptions_List", "The node's one subscription.", [], None, {"200": js("List")}),
    ("get", SUB, "Subscriptions_Get", "The node's subscription.", [], None, {"200": js("Subscription"), "404": E}),
    ("get", SUB + "/resourceGroups", "ResourceGroups_List", "Resource groups.", [], None, {"200": js("List"), "404": E}),
    ("get", RG, "ResourceGroups_Get", "A resource group.", [], None, {"200": js("Resource"), "404": E}),
    ("put", RG, "ResourceGroups_CreateOrUpdate", "Creates a group (201) or replaces its tags (200).", [], "ResourceGroupPut",
     {"200": js("Resource"), "201": js("Resource", "Created"), "400": E, "404": E}),
    ("delete", RG, "ResourceGroups_Delete", "Deletes an empty group (200; 204 if absent; 409 while it holds VMs).", [], None,
     {"200": empty("Deleted"), "204": empty("Not there"), "404": E, "409": E}),
    ("get", VM, "VirtualMachines_List", "VMs of a group.", [], None, {"200": js("List"), "404": E}),
    ("get", VM + "/{vm}", "VirtualMachines_Get", "A VM.", [q("$expand", "`instanceView` adds the instance view.")], None,
     {"200": js("Resource"), "404": E}),
    ("put", VM + "/{vm}", "VirtualMachines_CreateOrUpdate",
     "Creates and starts a VM (201); on an existing VM, changes tags and data disks (200).", [], "VirtualMachinePut",
     {"200": js("Resource"), "201": js("Resource", "Created"), "400": E, "404": E, "409": E}),
    ("patch", VM + "/{vm}", "VirtualMachines_Update", "Merge-patches a VM (tags, data disks).", [], "VirtualMachinePatch",
     {"200": js("Resource"), "400": E, "404": E, "409": E}),
    ("delete", VM + "/{vm}", "VirtualMachines_Delete", "Deletes a VM (202; 204 if absent).", [], None,
     {"202": accepted(), "204": empty("Not there"), "404": E, "409": E}),
    ("get", VM + "/{vm}/instanceView", "VirtualMachines_InstanceView", "Power state, DHCP ledger and diagnosis, boot diagnostics.", [], None,
     {"200": js("Resource"), "404": E}),
]
for action, summary in [
    ("start", "Starts a VM."),
    ("powerOff", "Powers a VM off (`skipShutdown=true`: at once)."),
    ("deallocate", "Stops a VM and releases its host resources."),
    ("restart", "Restarts a VM."),
    ("redeploy", "Restarts a VM in a fresh QEMU."),
]:
    params = [q("skipShutdown", "`true`: no ACPI shutdown first.")] if action == "powerOff" else []
    OPS.append(("post", VM + "/{vm}/" + action, "VirtualMachines_" + action[0].upper() + action[1:], summary, params, None,
                {"202": accepted(), "404": E, "409": E}))
OPS += [
    ("get", LOC + "/operations/{id}", "Operations_Get", "A long operation's status (`monitor=true`: a Run Command's result).",
     [q("monitor", "`true`: the operation's result document.")], None,
     {"200": js("OperationStatus"), "202": empty("Still running"), "404": E, "409": E}),
    ("get", VM + "/{vm}/extensions", "VirtualMachineExtensions_List", "A VM's extensions.", [q("$expand", "`instanceView`")], None,
     {"200": js("List"), "404": E}),
    ("get", VM + "/{vm}/extensions/{name}", "VirtualMachineExtensions_Get", "An extension.", [q("$expand", "`instanceView`")], None,
     {"200": js("Resource"), "404": E}),
    ("put", VM + "/{vm}/extensions/{name}", "VirtualMachineExtensions_CreateOrUpdate", "Adds (201) or changes (200) an extension.", [],
     "ExtensionPut", {"200": js("Resource"), "201": js("Resource", "Created"), "400": E, "404": E, "409": E}),
    ("delete", VM + "/{vm}/extensions/{name}", "VirtualMachineExtensions_Delete", "Removes an extension (200; 204 if absent).", [], None,
     {"200": empty("Deleted"), "204": empty("Not there"), "404": E, "409": E}),
    ("post", VM + "/{vm}/runCommand", "VirtualMachines_RunCommand", "Runs a script in the guest through its agent.", [], "RunCommandInput",
     {"202": accepted(), "400": E, "404": E, "409": E}),
    ("get", LOC + "/runCommands", "VirtualMachineRunCommands_List", "The Run Command documents.", [], None, {"200": js("List"), "404": E}),
    ("get", LOC + "/runCommands/{id}", "VirtualMachineRunCommands_Get", "A Run Command document.", [], None,
     {"200": js("Resource"), "404": E}),
    ("get", VM + "/{vm}/bootDiagnostics/serialConsoleLog", "BootDiagnostics_SerialConsoleLog", "The current boot's serial log (text/plain).", [], None,
     {"200": {"description": "The log", "content": {"text/plain": {"schema": S}}}, "404": E}),
    ("get", VM + "/{vm}/bootDiagnostics/screenshot", "BootDiagnostics_Screenshot", "The latest console screenshot (PNG; `format=bmp`).",
     [q("format", "`png` (default) or `bmp`.")], None,
     {"200": {"description": "The image", "content": {"image/png": {"schema": {"type": "string", "format": "binary"}}}}, "404": E, "409": E}),
    ("get", VM + "/{vm}/bootDiagnostics/serialTail", "BootDiagnostics_SerialTail", "A cursor-based tail of a boot's serial log.",
     [q("boot", "Boot number (default: the current).", I), q("cursor", "Byte offset to read from.", I), q("max", "Most bytes (1..4 MiB).", I)], None,
     {"200": js("Resource"), "400": E, "404": E}),
    ("get", VM + "/{vm}/bootDiagnostics/boots", "BootDiagnostics_Boots", "Every kept boot, its timeline, screenshots and verdict.",
     [q("sasUriExpirationTimeInMinutes", "Lifetime of the SAS links.", I)], None, {"200": js("List"), "400": E, "404": E}),
    ("post", VM + "/{vm}/retrieveBootDiagnosticsData", "VirtualMachines_RetrieveBootDiagnosticsData", "SAS links to the screenshot and serial log.",
     [q("sasUriExpirationTimeInMinutes", "Lifetime of the SAS links.", I)], None,
     {"200": js("Resource"), "400": E, "404": E, "409": E}),
    ("get", SUB + "/providers/Microsoft.Compute/virtualMachines", "VirtualMachines_ListAll", "Every VM of the node.", [], None,
     {"200": js("List"), "404": E}),
    ("get", LOC + "/vmSizes", "VirtualMachineSizes_List", "The sizes the node offers.", [], None, {"200": js("List"), "404": E}),
    ("get", LOC + "/publishers", "VirtualMachineImages_ListPublishers", "Image publishers.", [], None, {"200": js("NameList"), "404": E}),
    ("get", LOC + IMG, "VirtualMachineImages_ListOffers", "A publisher's offers.", [], None, {"200": js("NameList"), "404": E}),
    ("get", LOC + IMG + "/{offer}/skus", "VirtualMachineImages_ListSkus", "An offer's skus.", [], None, {"200": js("NameList"), "404": E}),
    ("get", LOC + IMG + "/{offer}/skus/{sku}/versions", "VirtualMachineImages_List", "A sku's versions.",
     [q("$top", "At most this many.", I), q("$orderby", "`name desc`: newest first.")], None,
     {"200": js("NameList"), "400": E, "404": E}),
    ("get", LOC + IMG + "/{offer}/skus/{sku}/versions/{version}", "VirtualMachineImages_Get", "An image version.", [], None,
     {"200": js("Resource"), "404": E}),
    ("get", NET + "/virtualNetworks", "VirtualNetworks_List", "Virtual networks of a group.", [], None, {"200": js("List"), "404": E}),
    ("get", NET + "/virtualNetworks/{vnet}", "VirtualNetworks_Get", "A virtual network.", [], None, {"200": js("Resource"), "404": E}),
    ("put", NET + "/virtualNetworks/{vnet}", "VirtualNetworks_CreateOrUpdate", "Creates (201) or replaces (200) a virtual network and its bridge.", [],
     "VirtualNetworkPut", {"200": js("Resource"), "201": js("Resource", "Created"), "400": E, "404": E}),
    ("delete", NET + "/virtualNetworks/{vnet}", "VirtualNetworks_Delete", "Deletes a virtual network without NICs (200; 204 if absent).", [], None,
     {"200": empty("Deleted"), "204": empty("Not there"), "400": E, "404": E}),
    ("get", NET + "/virtualNetworks/{vnet}/subnets/{subnet}", "Subnets_Get", "A subnet.", [], None, {"200": js("Resource"), "404": E}),
    ("put", NET + "/virtualNetworks/{vnet}/subnets/{subnet}", "Subnets_CreateOrUpdate", "Adds (201) or changes (200) a subnet.", [],
     "SubnetPut", {"200": js("Resource"), "201": js("Resource", "Created"), "400": E, "404": E}),
    ("delete", NET + "/virtualNetworks/{vnet}/subnets/{subnet}", "Subnets_Delete", "Removes a subnet without NICs (200; 204 if absent).", [], None,
     {"200": empty("Deleted"), "204": empty("Not there"), "400": E, "404": E}),
    ("get", NET + "/networkInterfaces", "NetworkInterfaces_List", "NICs of a group.", [], None, {"200": js("List"), "404": E}),
    ("get", NET + "/networkInterfaces/{nic}", "NetworkInterfaces_Get", "A NIC, with its DHCP ledger.", [], None,
     {"200": js("Resource"), "404": E}),
    ("put", NET + "/networkInterfaces/{nic}", "NetworkInterfaces_CreateOrUpdate", "Creates a NIC in a subnet (201; 200 if unchanged).", [],
     "NetworkInterfacePut", {"200": js("Resource"), "201": js("Resource", "Created"), "400": E, "404": E, "409": E}),
    ("delete", NET + "/networkInterfaces/{nic}", "NetworkInterfaces_Delete", "Deletes a NIC no VM uses (200; 204 if absent).", [], None,
     {"200": empty("Deleted"), "204": empty("Not there"), "400": E, "404": E}),
    ("get", "/vmnode/v1/dhcp/ledger", "Vmnode_DhcpLedger", "vmnode: every NIC's DHCP exchanges.", [], None, {"200": js("List")}),
    ("get", STG + "/storageAccounts", "StorageAccounts_ListByResourceGroup", "Storage accounts of a group.", [], None,
     {"200": js("List"), "404": E}),
    ("get", STG + "/storageAccounts/{account}", "StorageAccounts_GetProperties", "A storage account.", [], None,
     {"200": js("Resource"), "404": E}),
    ("put", STG + "/storageAccounts/{account}", "StorageAccounts_Create", "Creates an account of the blob service (200).", [],
     "StorageAccountPut", {"200": js("Resource"), "400": E, "404": E, "409": E}),
    ("delete", STG + "/storageAccounts/{account}", "StorageAccounts_Delete", "Deletes an account (200; 204 if absent).", [], None,
     {"200": empty("Deleted"), "204": empty("Not there"), "404": E, "409": E}),
    ("post", STG + "/storageAccounts/{account}/listKeys", "StorageAccounts_ListKeys", "The account's two keys.", [], None,
     {"200": js("StorageKeys"), "404": E}),
    ("get", DEP, "Deployments_ListByResourceGroup", "Deployments of a group.", [], None, {"200": js("List"), "404": E}),
    ("get", DEP + "/{name}", "Deployments_Get", "A deployment.", [], None, {"200": js("Resource"), "404": E}),
    ("put", DEP + "/{name}", "Deployments_CreateOrUpdate", "Starts a template deployment (201, then poll).", [], "DeploymentPut",
     {"201": js("Resource", "Created"), "400": E, "404": E, "409": E}),
    ("delete", DEP + "/{name}", "Deployments_Delete", "Forgets a finished deployment's record (204).", [], None,
     {"204": empty("Deleted or not there"), "400": E, "404": E, "409": E}),
    ("get", DEP + "/{name}/operations", "DeploymentOperations_List", "A deployment's operations.", [], None, {"200": js("List"), "404": E}),
    ("get", RG + "/deployments/{name}/operations", "DeploymentOperations_ListShort",
     "A deployment's operations (the path without the provider segment).", [], None, {"200": js("List"), "404": E}),
    ("get", RG + "/deployments/{name}/operations/{op}", "DeploymentOperations_Get", "One operation of a deployment.", [], None,
     {"200": js("Resource"), "404": E}),
    ("get", DEP + "/{name}/operationStatuses/{op}", "Deployments_OperationStatus", "A deployment's status.", [], None,
     {"200": js("OperationStatus"), "404": E}),
    ("get", "/vmnode/v1/images", "Vmnode_Images", "vmnode: every image version in the store.", [], None, {"200": js("List")}),
    ("get", "/vmnode/v1/dhcp/leases", "Vmnode_DhcpLeases", "vmnode: the DHCP leases.", [], None, {"200": js("List")}),
    ("get", "/vmnode/v1/network/check", "Vmnode_NetworkCheck",
     "vmnode: the NICs against the address table (addresses held for no NIC, NICs without their own, addresses held twice); empty when consistent.",
     [], None, {"200": js("List")}),
    ("get", "/vmnode/v1/node", "Vmnode_Node", "vmnode: the node (subscription, location, accelerator, network).", [], None,
     {"200": js("Resource")}),
    ("get", VIEWER, "Viewer_List", "vmnode: the boot-diagnostics viewer's VM list (HTML; `fragment=1`: sections only).",
     [q("fragment", "`1`: only the sections that update.")], None,
     {"200": {"description": "HTML", "content": {"text/html": {"schema": S}}}}),
    ("get", VIEWER + "/~/{file}", "Viewer_Asset", "vmnode: the viewer's stylesheet, script, or `url` (JSON).", [], None,
     {"200": {"description": "The asset", "content": {"text/css": {"schema": S}, "text/javascript": {"schema": S}, "application/json": {"schema": ANY}}}, "404": E}),
    ("get", VIEWER + "/{rg}/{vm}", "Viewer_Vm", "vmnode: a VM's boot-diagnostics page (HTML, errors as HTML pages too).",
     [q("fragment", "`1`: only the sections that update.")], None,
     {"200": {"description": "HTML", "content": {"text/html": {"schema": S}}},
      "404": {"description": "An HTML page naming the error", "content": {"text/html": {"schema": S}}}}),
    ("get", VIEWER + "/{rg}/{vm}/serialTail", "Viewer_SerialTail", "vmnode: the viewer's serial tail (as BootDiagnostics_SerialTail).",
     [q("boot", "Boot number.", I), q("cursor", "Byte offset.", I), q("max", "Most bytes.", I)], None,
     {"200": js("Resource"), "400": E, "404": E}),
]


def build():
    paths = {}
    for method, path, op_id, summary, query, body, responses in OPS:
        params = [
            {"name": p, "in": "path", "required": True, "schema": S, "description": PARAM_DOC[p]}
            for p in re.findall(r"\{(\w+)\}", path)
        ]
        if not path.startswith("/vmnode/"):
            params.append(q("api-version", "Sent by every SDK; accepted and not checked (the node serves one version of each resource)."))
        params += query
        responses = dict(responses)
        responses["401"] = E
        op = {"operationId": op_id, "summary": summary, "parameters": params, "responses": responses}
        if body:
            op["requestBody"] = {
                "required": body in ("VirtualMachinePut", "ExtensionPut"),
                "content": {"application/json": {"schema": ref(body), "example": EXAMPLES[body]}},
            }
        if method in paths.get(path, {}):
            raise SystemExit(f"{method} {path} twice")
        paths.setdefault(path, {})[method] = op
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "vmnode management API",
            "version": "1",
            "description": "ARM-shaped JSON over HTTPS on `--listen` and plain HTTP on the run dir's unix socket, "
            "both behind the daemon's bearer token (`vmnode account get-access-token`). Path keywords are matched "
            "case-insensitively, as ARM does. Every 4xx/5xx on a JSON route carries the cloud's error shape "
            "(`Error`). Generated by docs/openapi.py from src/api/routes.rs's routes.",
        },
        "servers": [{"url": "https://127.0.0.1:7480"}],
        "security": [{"bearer": []}],
        "paths": paths,
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }


if __name__ == "__main__":
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "openapi.json")
    with open(out, "w") as f:
        json.dump(build(), f, indent=1)
        f.write("\n")
    print(f"wrote {out}: {sum(len(v) for v in build()['paths'].values())} operations")
