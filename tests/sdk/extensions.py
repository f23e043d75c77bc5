"""VM extensions and Run Command through the official azure-mgmt-compute SDK, unmodified.

  python extensions.py BASE_URL SUBSCRIPTION TOKEN CA_PATH SAS_URL

The node has VM `vm1` in group `rg` running; SAS_URL is a script that prints `hello-sdk`.
Every step asserts what the node returned; prints `extensions-sdk-ok` at the end.
"""
import sys, time

from azure.core.credentials import AccessToken
from azure.core.exceptions import HttpResponseError
from azure.mgmt.compute import ComputeManagementClient

base, sub, token, ca, sas = sys.argv[1:6]


class NodeToken:
    def get_token(self, *scopes, **kwargs):
        return AccessToken(token, int(time.time()) + 3600)


comp = ComputeManagementClient(NodeToken(), sub, base_url=base, connection_verify=ca, polling_interval=0.2)

# Bodies as the REST API has them (the SDK sends a dict as is).
ext = comp.virtual_machine_extensions.begin_create_or_update("rg", "vm1", "cse", {
    "location": "local",
    "properties": {
        "publisher": "Microsoft.Azure.Extensions",
        "type": "CustomScript",
        "typeHandlerVersion": "2.1",
        "autoUpgradeMinorVersion": True,
        "settings": {"fileUris": [sas]},
        "protectedSettings": {"commandToExecute": "sh hello.sh"},
    },
}).result()
assert ext.provisioning_state == "Succeeded", ext
assert ext.protected_settings is None, ext

got = comp.virtual_machine_extensions.get("rg", "vm1", "cse", expand="instanceView")
iv = got.instance_view
assert iv.statuses[0].code == "ProvisioningState/succeeded", iv
assert iv.substatuses[0].code == "ComponentStatus/StdOut/succeeded", iv
assert iv.substatuses[0].message == "hello-sdk\n", iv

# A failing command: the poller raises the cloud's error.
try:
    comp.virtual_machine_extensions.begin_create_or_update("rg", "vm1", "cse", {
        "location": "local",
        "properties": {
            "publisher": "Microsoft.Azure.Extensions",
            "type": "CustomScript",
            "typeHandlerVersion": "2.1",
            "settings": {"fileUris": [sas], "commandToExecute": "sh missing.sh"},
        },
    }).result()
    raise SystemExit("a failing extension did not raise")
except HttpResponseError as e:
    assert "VMExtensionProvisioningError" in str(e), e
    assert "non-zero exit code" in str(e), e

vm = comp.virtual_machines.get("rg", "vm1")
assert [r.name for r in vm.resources] == ["cse"], vm.resources

r = comp.virtual_machines.begin_run_command("rg", "vm1", {
    "commandId": "RunShellScript",
    "script": ["echo out", "echo err >&2", "exit 3"],
}).result()
assert r.value[0].message == "Enable failed: failed to execute command: command terminated with exit status=3\n[stdout]\nout\n\n[stderr]\nerr\n", r.value
r = comp.virtual_machines.begin_run_command("rg", "vm1", {"commandId": "RunShellScript", "script": ["echo fine"]}).result()
assert r.value[0].code == "ProvisioningState/succeeded", r.value
assert r.value[0].message == "Enable succeeded: \n[stdout]\nfine\n\n[stderr]\n", r.value
print("extensions-sdk-ok")
