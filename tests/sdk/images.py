"""The image catalog through azure-mgmt-compute, unmodified: publishers -> offers -> skus ->
versions -> one version, as the cloud lists them, and the cloud's errors for what is missing.

  python images.py BASE_URL SUBSCRIPTION TOKEN CA_PATH

The node has vmnode:tiny:1 at its built version plus 1.1.0 and 1.10.0 (1.2.0 was published and
unpublished). Prints `images-ok` at the end; exits non-zero on the first failed assertion.
"""
import sys, time

from azure.core.credentials import AccessToken
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.mgmt.compute import ComputeManagementClient

base, sub, token, ca = sys.argv[1:5]


class NodeToken:
    def get_token(self, *scopes, **kwargs):
        return AccessToken(token, int(time.time()) + 3600)


comp = ComputeManagementClient(NodeToken(), sub, base_url=base, connection_verify=ca, polling_interval=0.2)
imgs = comp.virtual_machine_images
loc = "local"

pubs = imgs.list_publishers(loc)
assert [p.name for p in pubs] == ["vmnode"], pubs
assert pubs[0].location == loc
assert pubs[0].id.endswith("/Providers/Microsoft.Compute/Locations/local/Publishers/vmnode"), pubs[0].id
offers = imgs.list_offers(loc, "vmnode")
assert [o.name for o in offers] == ["tiny"], offers
assert offers[0].id.endswith("/Publishers/vmnode/ArtifactTypes/VMImage/Offers/tiny"), offers[0].id
skus = imgs.list_skus(loc, "vmnode", "tiny")
assert [s.name for s in skus] == ["1"], skus

# Versions in version order (1.10.0 after 1.1.0 and after the build's 1.0.x), 1.2.0 gone.
versions = [v.name for v in imgs.list(loc, "vmnode", "tiny", "1")]
assert versions[-2:] == ["1.1.0", "1.10.0"], versions
assert "1.2.0" not in versions, versions
assert len(versions) == 3 and versions[0].startswith("1.0."), versions
# What tools send to find the newest: $orderby=name desc&$top=1.
newest = imgs.list(loc, "vmnode", "tiny", "1", top=1, orderby="name desc")
assert [v.name for v in newest] == ["1.10.0"], newest
# Publisher, offer and sku are case-insensitive, as in the cloud.
assert [v.name for v in imgs.list(loc, "VMNODE", "Tiny", "1")] == versions

img = imgs.get(loc, "vmnode", "tiny", "1", "1.10.0")
assert img.name == "1.10.0" and img.location == loc, img
assert img.id.endswith("/Publishers/vmnode/ArtifactTypes/VMImage/Offers/tiny/Skus/1/Versions/1.10.0"), img.id
assert img.os_disk_image.operating_system == "Linux", img.os_disk_image
assert img.hyper_v_generation == "V1", img.hyper_v_generation
assert img.architecture == "x64", img.architecture
assert img.data_disk_images == [], img.data_disk_images
assert img.automatic_os_upgrade_properties.automatic_os_upgrade_supported is False
assert img.disallowed.vm_disk_type == "None", img.disallowed
feats = {f.name: f.value for f in img.features}
assert feats.get("IsAcceleratedNetworkSupported") == "False", feats
assert img.image_deprecation_status.image_state == "Active", img.image_deprecation_status
# The disk's size, as the cloud's body has it (not in the SDK's model): the raw JSON.
raw = imgs.get(loc, "vmnode", "tiny", "1", "1.10.0", cls=lambda resp, _model, _h: resp.http_response.json())
disk = raw["properties"]["osDiskImage"]
assert disk["sizeInBytes"] == 1 << 30 and disk["sizeInGb"] == 1, disk

# What the node does not have: the cloud's 404 NotFound.
for call in (lambda: imgs.get(loc, "vmnode", "tiny", "1", "1.2.0"),
             lambda: imgs.get(loc, "vmnode", "nope", "1", "1.0.0"),
             lambda: imgs.list(loc, "vmnode", "tiny", "2")):
    try:
        call()
        raise AssertionError("expected 404")
    except ResourceNotFoundError as e:
        assert e.status_code == 404 and e.error.code == "NotFound", (e.status_code, e.error)
        assert e.error.message == "Artifact: VMImage was not found.", e.error.message

# A VM pinned to the unpublished version: 404 PlatformImageNotFound on imageReference, naming
# the versions that exist. (The azure-mgmt-network NIC is not needed: the create fails first.)
try:
    comp.virtual_machines.begin_create_or_update("sdkimg", "sdkgone", {
        "location": loc,
        "properties": {
            "hardwareProfile": {"vmSize": "Standard_B1s"},
            "storageProfile": {
                "imageReference": {"publisher": "vmnode", "offer": "tiny", "sku": "1", "version": "1.2.0"},
                "osDisk": {"createOption": "FromImage"},
            },
            "osProfile": {"computerName": "sdkgone", "adminUsername": "azureuser"},
        },
    }).result()
    raise AssertionError("a create from an unpublished version succeeded")
except HttpResponseError as e:
    assert e.status_code == 404, e.status_code
    assert e.error.code == "PlatformImageNotFound", e.error.code
    assert e.error.target == "imageReference", e.error.target
    msg = e.error.message
    assert msg.startswith("The platform image 'vmnode:tiny:1:1.2.0' is not available. Verify that all fields in the storage profile are correct."), msg
    assert "Versions of vmnode:tiny:1 on this node: " in msg and "1.1.0, 1.10.0 (or `latest`)." in msg, msg

print("images-ok")
