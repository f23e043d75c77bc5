"""azure-mgmt-storage creates a storage account on the node and lists its keys; azure-storage-blob
then uses the account with those keys. The node's own account is listed in group `vmnode`.

  python storage_accounts.py BASE_URL SUBSCRIPTION TOKEN CA_PATH
"""
import sys, time

from azure.core.credentials import AccessToken
from azure.core.exceptions import HttpResponseError
from azure.mgmt.storage import StorageManagementClient
from azure.storage.blob import BlobServiceClient

base, sub, token, ca = sys.argv[1:5]


class NodeToken:
    def get_token(self, *scopes, **kwargs):
        return AccessToken(token, int(time.time()) + 3600)


st = StorageManagementClient(NodeToken(), sub, base_url=base, connection_verify=ca, polling_interval=0.2)
own = list(st.storage_accounts.list_by_resource_group("vmnode"))
assert len(own) == 1 and own[0].name.startswith("vmnode"), own

acct = st.storage_accounts.begin_create(
    "sa", "labstore1", {"location": "local", "sku": {"name": "Standard_LRS"}, "kind": "StorageV2"}
).result()
assert acct.name == "labstore1" and acct.provisioning_state == "Succeeded", acct
endpoint = acct.primary_endpoints.blob
res = st.storage_accounts.list_keys("sa", "labstore1")
try:  # new-style models are mappings, where .keys is the mapping's method
    keys = res["keys"]
except (TypeError, KeyError):
    keys = res.keys
names = [getattr(k, "key_name", None) or k["keyName"] for k in keys]
assert names == ["key1", "key2"], names
key1 = getattr(keys[0], "value", None) or keys[0]["value"]

svc = BlobServiceClient(account_url=endpoint, credential={"account_name": "labstore1", "account_key": key1})
svc.create_container("scripts")
svc.get_blob_client("scripts", "hello.sh").upload_blob(b"echo hello\n")
assert svc.get_blob_client("scripts", "hello.sh").download_blob().readall() == b"echo hello\n"

try:
    st.storage_accounts.begin_create("sa", "Bad_Name", {"location": "local", "sku": {"name": "Standard_LRS"}, "kind": "StorageV2"}).result()
    raise SystemExit("an invalid name was accepted")
except HttpResponseError as e:
    assert e.error.code == "AccountNameInvalid", e.error.code

st.storage_accounts.delete("sa", "labstore1")
assert [a.name for a in st.storage_accounts.list_by_resource_group("sa")] == []
print("storage-ok")
