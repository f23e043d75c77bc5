"""End-to-end checks of vmnode's blob service with the real azure-storage-blob SDK.

Usage: sdk_test.py SECTION   (connection string in VMNODE_CONN; the blob endpoint's
base URL in VMNODE_BLOB_URL, e.g. http://127.0.0.1:7481/vmnodeab12cd34)

Each check is a function; the run ends with a line "N passed, M failed" and exits non-zero on
any failure.
"""

import datetime as dt
import os
import sys
import time
import traceback
import uuid

from azure.core import MatchConditions
from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
)
from azure.storage.blob import (
    AccessPolicy,
    AccountSasPermissions,
    BlobClient,
    BlobLeaseClient,
    BlobSasPermissions,
    BlobServiceClient,
    BlobBlock,
    ContainerClient,
    ContainerSasPermissions,
    ContentSettings,
    ResourceTypes,
    generate_account_sas,
    generate_blob_sas,
    generate_container_sas,
)

CONN = os.environ["VMNODE_CONN"]
BASE = os.environ["VMNODE_BLOB_URL"].rstrip("/")
svc = BlobServiceClient.from_connection_string(CONN)
ACCOUNT = svc.account_name
KEY = svc.credential.account_key
CHECKS = {}


def check(section):
    def wrap(f):
        CHECKS.setdefault(section, []).append(f)
        return f
    return wrap


def name(prefix="c"):
    return f"{prefix}{uuid.uuid4().hex[:12]}"


def fails(fn, status, code=None, exc=HttpResponseError):
    """Runs fn, expecting the service to refuse with status (and error code)."""
    try:
        fn()
    except exc as e:
        got = getattr(e, "status_code", None)
        assert got == status, f"expected HTTP {status}, got {got}: {e}"
        if code is not None:
            got_code = getattr(e, "error_code", None) or e.response.headers.get("x-ms-error-code")
            assert got_code == code, f"expected {code}, got {got_code}: {e}"
        return e
    raise AssertionError(f"expected HTTP {status} {code or ''}, but it succeeded")


def later(seconds):
    return dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=seconds)


# ---------------------------------------------------------------- containers
@check("containers")
def container_lifecycle():
    n = name()
    c = svc.create_container(n, metadata={"owner": "ops"})
    fails(lambda: svc.create_container(n), 409, "ContainerAlreadyExists", ResourceExistsError)
    p = c.get_container_properties()
    assert p.metadata == {"owner": "ops"}, p.metadata
    assert p.public_access is None
    assert p.lease.status == "unlocked" and p.lease.state == "available"
    c.set_container_metadata({"a": "1", "b": "2"})
    assert c.get_container_properties().metadata == {"a": "1", "b": "2"}
    c.set_container_access_policy(signed_identifiers={}, public_access="blob")
    acl = c.get_container_access_policy()
    assert acl["public_access"] == "blob", acl
    c.set_container_access_policy(signed_identifiers={}, public_access="container")
    assert c.get_container_access_policy()["public_access"] == "container"
    c.delete_container()
    fails(c.get_container_properties, 404, "ContainerNotFound", ResourceNotFoundError)
    fails(c.delete_container, 404, "ContainerNotFound", ResourceNotFoundError)


@check("containers")
def container_listing_with_prefix_and_pages():
    pre = name("lst")
    for i in range(5):
        svc.create_container(f"{pre}-{i}", metadata={"i": str(i)})
    got = [c.name for c in svc.list_containers(name_starts_with=pre)]
    assert got == [f"{pre}-{i}" for i in range(5)], got
    with_meta = list(svc.list_containers(name_starts_with=pre, include_metadata=True))
    assert with_meta[3].metadata == {"i": "3"}
    paged = svc.list_containers(name_starts_with=pre, results_per_page=2).by_page()
    pages = [[c.name for c in page] for page in paged]
    assert [len(p) for p in pages] == [2, 2, 1], pages


@check("containers")
def container_names_and_missing_ones():
    fails(lambda: svc.create_container("Bad_Name"), 400, "InvalidResourceName")
    fails(lambda: svc.get_container_client(name()).get_container_properties(), 404,
          "ContainerNotFound", ResourceNotFoundError)
    fails(lambda: svc.get_blob_client(name(), "x").upload_blob(b"x"), 404, "ContainerNotFound")


@check("containers")
def container_lease():
    c = svc.create_container(name())
    lease = c.acquire_lease(lease_duration=-1)
    p = c.get_container_properties()
    assert (p.lease.state, p.lease.duration) == ("leased", "infinite"), p.lease
    fails(c.delete_container, 412, "LeaseIdMissing")
    fails(lambda: c.delete_container(lease=str(uuid.uuid4())), 412,
          "LeaseIdMismatchWithContainerOperation")
    c.delete_container(lease=lease)


@check("containers")
def account_information():
    info = svc.get_account_information()
    assert info["sku_name"] == "Standard_LRS", info
    svc.get_service_properties()


# ---------------------------------------------------------------- page blobs
MiB = 1 << 20


@check("pages")
def page_blob_writes_ranges_and_holes():
    c = svc.create_container(name())
    b = c.get_blob_client("disk.vhd")
    b.create_page_blob(size=8 * MiB)
    props = b.get_blob_properties()
    assert props.blob_type == "PageBlob" and props.size == 8 * MiB
    assert b.get_page_ranges() == ([], [])
    b.upload_page(b"a" * 512, offset=0, length=512)
    b.upload_page(b"b" * 512, offset=512, length=512)  # touches the first: merged
    data = os.urandom(4 * MiB)
    b.upload_page(data, offset=4 * MiB, length=4 * MiB)  # the largest write allowed
    pages, clears = b.get_page_ranges()
    assert pages == [{"start": 0, "end": 1023}, {"start": 4 * MiB, "end": 8 * MiB - 1}], pages
    assert clears == []
    # A window cuts ranges at its edges.
    pages, _ = b.get_page_ranges(offset=512, length=4 * MiB)
    assert pages == [{"start": 512, "end": 1023}, {"start": 4 * MiB, "end": 4 * MiB + 511}], pages
    # The hole between reads as zeros; written bytes read back.
    assert b.download_blob(offset=1024, length=8192).readall() == bytes(8192)
    assert b.download_blob(offset=0, length=1024).readall() == b"a" * 512 + b"b" * 512
    assert b.download_blob(offset=4 * MiB, length=4 * MiB).readall() == data
    whole = b.download_blob().readall()
    assert len(whole) == 8 * MiB and whole[4 * MiB:] == data
    # Clear the first page: the range shrinks and the bytes are zeros again.
    b.clear_page(offset=0, length=512)
    pages, _ = b.get_page_ranges()
    assert pages[0] == {"start": 512, "end": 1023}, pages
    assert b.download_blob(offset=0, length=512).readall() == bytes(512)
    lst = list(b.list_page_ranges())
    assert [(r.start, r.end, r.cleared) for r in lst] == [
        (512, 1023, False), (4 * MiB, 8 * MiB - 1, False)], lst


@check("pages")
def page_blob_resize():
    c = svc.create_container(name())
    b = c.get_blob_client("grow.vhd")
    b.create_page_blob(size=1 * MiB)
    b.upload_page(b"z" * 1024, offset=MiB - 1024, length=1024)
    b.resize_blob(4 * MiB)
    assert b.get_blob_properties().size == 4 * MiB
    assert b.download_blob(offset=2 * MiB, length=512).readall() == bytes(512)
    b.resize_blob(MiB - 512)
    assert b.get_blob_properties().size == MiB - 512
    assert b.get_page_ranges()[0] == [{"start": MiB - 1024, "end": MiB - 513}]
    fails(lambda: b.resize_blob(1000), 400, "InvalidHeaderValue")


@check("pages")
def page_blob_refuses_bad_ranges():
    c = svc.create_container(name())
    b = c.get_blob_client("bad.vhd")
    fails(lambda: b.create_page_blob(size=1000), 400, "InvalidHeaderValue")
    b.create_page_blob(size=MiB)
    gen = b._client.page_blob  # the raw operation: the SDK would refuse before sending
    e = fails(lambda: gen.upload_pages(body=b"x" * 512, content_length=512, range="bytes=1-512"),
              400, "InvalidHeaderValue")
    assert "x-ms-range" in str(e), str(e)
    fails(lambda: gen.upload_pages(body=b"x" * 100, content_length=100, range="bytes=0-99"), 400,
          "InvalidHeaderValue")
    # Beyond the blob's size: 416.
    fails(lambda: b.upload_page(b"x" * 512, offset=MiB, length=512), 416, "InvalidPageRange")
    fails(lambda: b.clear_page(offset=MiB - 512, length=1024), 416, "InvalidPageRange")
    # Page writes on a block blob are refused.
    bb = c.get_blob_client("block")
    bb.upload_blob(b"x" * 512)
    fails(lambda: bb.upload_page(b"x" * 512, offset=0, length=512), 409, "InvalidBlobType")


@check("pages")
def page_range_diff_against_a_snapshot():
    c = svc.create_container(name())
    b = c.get_blob_client("diff.vhd")
    b.create_page_blob(size=MiB)
    b.upload_page(b"1" * 1024, offset=0, length=1024)
    b.upload_page(b"2" * 512, offset=8192, length=512)
    snap = b.create_snapshot()["snapshot"]
    b.upload_page(b"3" * 512, offset=4096, length=512)
    b.clear_page(offset=8192, length=512)
    pages, clears = b.get_page_ranges(previous_snapshot_diff=snap)
    assert pages == [{"start": 4096, "end": 4607}], pages
    assert clears == [{"start": 8192, "end": 8703}], clears
    # The snapshot itself did not change.
    s = c.get_blob_client("diff.vhd", snapshot=snap)
    assert s.get_page_ranges()[0] == [{"start": 0, "end": 1023}, {"start": 8192, "end": 8703}]
    assert s.download_blob(offset=8192, length=512).readall() == b"2" * 512


# ---------------------------------------------------------------- snapshots, conditions
@check("snapshots")
def snapshot_isolation_and_deletion():
    c = svc.create_container(name())
    b = c.get_blob_client("doc.txt")
    b.upload_blob(b"version one", metadata={"v": "1"})
    snap = b.create_snapshot()
    b.upload_blob(b"version two", overwrite=True, metadata={"v": "2"})
    s = c.get_blob_client("doc.txt", snapshot=snap["snapshot"])
    assert s.download_blob().readall() == b"version one"
    assert s.get_blob_properties().metadata == {"v": "1"}
    assert b.download_blob().readall() == b"version two"
    listed = [(x.name, x.snapshot) for x in c.list_blobs(include=["snapshots"])]
    assert listed == [("doc.txt", snap["snapshot"]), ("doc.txt", None)], listed
    fails(b.delete_blob, 409, "SnapshotsPresent")
    b.delete_blob(delete_snapshots="only")
    assert [x.snapshot for x in c.list_blobs(include=["snapshots"])] == [None]
    b.create_snapshot()
    b.delete_blob(delete_snapshots="include")
    assert list(c.list_blobs(include=["snapshots"])) == []
    fails(s.get_blob_properties, 404, None, ResourceNotFoundError)


@check("snapshots")
def page_snapshot_isolation():
    c = svc.create_container(name())
    b = c.get_blob_client("d.vhd")
    b.create_page_blob(size=MiB)
    b.upload_page(b"A" * 512, offset=0, length=512)
    snap = b.create_snapshot()["snapshot"]
    b.upload_page(b"B" * 512, offset=0, length=512)
    s = c.get_blob_client("d.vhd", snapshot=snap)
    assert s.download_blob(offset=0, length=512).readall() == b"A" * 512
    assert b.download_blob(offset=0, length=512).readall() == b"B" * 512
    s.delete_blob()
    fails(s.get_blob_properties, 404, None, ResourceNotFoundError)
    b.delete_blob()


@check("snapshots")
def etags_and_conditions():
    c = svc.create_container(name())
    b = c.get_blob_client("cond")
    first = b.upload_blob(b"one")
    p = b.get_blob_properties()
    assert p.etag == first["etag"] and p.last_modified is not None
    second = b.upload_blob(b"two", overwrite=True)
    assert second["etag"] != first["etag"]
    # If-Match with a stale ETag: 412.
    fails(lambda: b.upload_blob(b"three", overwrite=True, etag=first["etag"],
                                match_condition=MatchConditions.IfNotModified),
          412, "ConditionNotMet", ResourceModifiedError)
    b.upload_blob(b"three", overwrite=True, etag=second["etag"],
                  match_condition=MatchConditions.IfNotModified)
    cur = b.get_blob_properties().etag
    # If-None-Match with the current ETag on a read: 304.
    fails(lambda: b.download_blob(etag=cur, match_condition=MatchConditions.IfModified), 304,
          "ConditionNotMet")
    # If-Modified-Since in the future: 304; in the past: the body.
    fails(lambda: b.download_blob(if_modified_since=later(3600)), 304, "ConditionNotMet")
    assert b.download_blob(if_modified_since=later(-3600)).readall() == b"three"
    # Create-only: If-None-Match: * on an existing blob.
    fails(lambda: b.upload_blob(b"x"), 409, "BlobAlreadyExists", ResourceExistsError)
    # Metadata and properties change the ETag.
    b.set_blob_metadata({"k": "v"})
    p2 = b.get_blob_properties()
    assert p2.metadata == {"k": "v"} and p2.etag != cur
    b.set_http_headers(ContentSettings(content_type="text/plain", cache_control="no-cache"))
    p3 = b.get_blob_properties()
    assert p3.content_settings.content_type == "text/plain", p3.content_settings
    assert p3.content_settings.cache_control == "no-cache"


# ---------------------------------------------------------------- leases
def leased_blob():
    c = svc.create_container(name())
    b = c.get_blob_client("leased")
    b.upload_blob(b"data")
    return c, b


def lease_state(b):
    p = b.get_blob_properties()
    return (p.lease.status, p.lease.state, p.lease.duration)


@check("leases")
def acquire_renew_change_release():
    _, b = leased_blob()
    assert lease_state(b) == ("unlocked", "available", None)
    l1 = b.acquire_lease(lease_duration=15)
    assert lease_state(b) == ("locked", "leased", "fixed")
    other = BlobLeaseClient(b, lease_id=str(uuid.uuid4()))
    fails(lambda: other.acquire(lease_duration=15), 409, "LeaseAlreadyPresent")
    l1.acquire(lease_duration=30)  # the holder may acquire again
    fails(other.renew, 409, "LeaseIdMismatchWithLeaseOperation")
    fails(other.release, 409, "LeaseIdMismatchWithLeaseOperation")
    fails(lambda: other.change(str(uuid.uuid4())), 409, "LeaseIdMismatchWithLeaseOperation")
    l1.renew()
    new_id = str(uuid.uuid4())
    l1.change(new_id)
    assert l1.id == new_id
    # Blob operations under a lease.
    fails(lambda: b.upload_blob(b"x", overwrite=True), 412, "LeaseIdMissing")
    fails(lambda: b.upload_blob(b"x", overwrite=True, lease=other), 412,
          "LeaseIdMismatchWithBlobOperation")
    fails(b.delete_blob, 412, "LeaseIdMissing")
    fails(lambda: b.set_blob_metadata({"a": "b"}), 412, "LeaseIdMissing")
    b.upload_blob(b"mine", overwrite=True, lease=l1)
    assert b.download_blob().readall() == b"mine"  # reads need no lease
    fails(lambda: b.download_blob(lease=other), 412, "LeaseIdMismatchWithBlobOperation")
    held = l1.id
    l1.release()
    assert lease_state(b) == ("unlocked", "available", None)
    l1 = BlobLeaseClient(b, lease_id=held)  # the SDK forgets the id on release
    fails(l1.release, 409, "LeaseNotPresentWithLeaseOperation")
    fails(l1.renew, 409, "LeaseNotPresentWithLeaseOperation")
    fails(lambda: l1.change(str(uuid.uuid4())), 409, "LeaseNotPresentWithLeaseOperation")
    fails(lambda: l1.break_lease(), 409, "LeaseNotPresentWithLeaseOperation")
    fails(lambda: b.upload_blob(b"x", overwrite=True, lease=l1), 412,
          "LeaseNotPresentWithBlobOperation")
    b.delete_blob()


@check("leases")
def break_breaking_broken():
    _, b = leased_blob()
    lease = b.acquire_lease(lease_duration=-1)
    assert lease_state(b) == ("locked", "leased", "infinite")
    t = lease.break_lease(lease_break_period=30)
    assert t == 30, t
    assert lease_state(b)[:2] == ("locked", "breaking")
    fails(lambda: lease.acquire(lease_duration=15), 409, "LeaseIsBreakingAndCannotBeAcquired")
    other = BlobLeaseClient(b, lease_id=str(uuid.uuid4()))
    fails(lambda: other.acquire(lease_duration=15), 409, "LeaseAlreadyPresent")
    fails(lambda: lease.change(str(uuid.uuid4())), 409, "LeaseIsBreakingAndCannotBeChanged")
    fails(lease.renew, 409, "LeaseIsBrokenAndCannotBeRenewed")
    fails(lambda: b.upload_blob(b"x", overwrite=True), 412, "LeaseIdMissing")
    # Breaking again with 0 ends it now.
    assert lease.break_lease(lease_break_period=0) == 0
    assert lease_state(b)[:2] == ("unlocked", "broken")
    fails(lease.renew, 409, "LeaseIsBrokenAndCannotBeRenewed")
    fails(lambda: lease.change(str(uuid.uuid4())), 409, "LeaseNotPresentWithLeaseOperation")
    b.upload_blob(b"x", overwrite=True)  # broken: writes need no id
    lease.release()
    assert lease_state(b)[:2] == ("unlocked", "available")
    # Broken -> acquire by anyone.
    l2 = b.acquire_lease(lease_duration=15)
    l2.break_lease(lease_break_period=0)
    b.acquire_lease(lease_duration=-1, lease_id=str(uuid.uuid4()))


@check("leases")
def lease_arguments_are_checked():
    _, b = leased_blob()
    fails(lambda: b.acquire_lease(lease_duration=10), 400, "InvalidHeaderValue")
    fails(lambda: b.acquire_lease(lease_duration=61), 400, "InvalidHeaderValue")
    l = b.acquire_lease(lease_duration=15)
    fails(lambda: l.break_lease(lease_break_period=61), 400, "InvalidHeaderValue")


@check("leases")
def lease_expires():
    _, b = leased_blob()
    l = b.acquire_lease(lease_duration=15)
    time.sleep(15.5)
    assert lease_state(b)[:2] == ("unlocked", "expired")
    b.upload_blob(b"free", overwrite=True)  # expired: no id needed
    l.renew()  # the holder may renew an expired lease
    assert lease_state(b)[:2] == ("locked", "leased")
    l.release()


@check("lease-persist-1")
def leave_leases_behind():
    c = svc.create_container("persist")
    for n, d in [("infinite", -1), ("fixed", 60)]:
        b = c.get_blob_client(n)
        b.upload_blob(b"x")
        b.acquire_lease(lease_duration=d, lease_id="00000000-0000-4000-8000-00000000000" + str(abs(d) % 10))
    b = c.get_blob_client("breaking")
    b.upload_blob(b"x")
    b.acquire_lease(lease_duration=-1).break_lease(lease_break_period=60)


@check("lease-persist-2")
def leases_survived_the_restart():
    c = svc.get_container_client("persist")
    assert lease_state(c.get_blob_client("infinite")) == ("locked", "leased", "infinite")
    assert lease_state(c.get_blob_client("fixed")) == ("locked", "leased", "fixed")
    assert lease_state(c.get_blob_client("breaking"))[:2] == ("locked", "breaking")
    fails(lambda: c.get_blob_client("infinite").delete_blob(), 412, "LeaseIdMissing")
    c.get_blob_client("infinite").delete_blob(lease="00000000-0000-4000-8000-000000000001")


# ---------------------------------------------------------------- SAS
def sas_blob(container, blob, **kw):
    kw.setdefault("expiry", later(3600))
    return generate_blob_sas(ACCOUNT, container, blob, account_key=KEY, **kw)


@check("sas")
def sas_read_and_write():
    c = svc.create_container(name())
    c.get_blob_client("r.txt").upload_blob(b"readable")
    ro = sas_blob(c.container_name, "r.txt", permission=BlobSasPermissions(read=True))
    rb = BlobClient.from_blob_url(f"{BASE}/{c.container_name}/r.txt?{ro}")
    assert rb.download_blob().readall() == b"readable"
    assert rb.get_blob_properties().size == 8
    fails(lambda: rb.upload_blob(b"x", overwrite=True), 403, "AuthorizationPermissionMismatch")
    fails(rb.delete_blob, 403, "AuthorizationPermissionMismatch")
    rw = sas_blob(c.container_name, "w.txt",
                  permission=BlobSasPermissions(create=True, write=True))
    wb = BlobClient.from_blob_url(f"{BASE}/{c.container_name}/w.txt?{rw}")
    wb.upload_blob(b"written via SAS")
    fails(wb.download_blob, 403, "AuthorizationPermissionMismatch")
    assert c.get_blob_client("w.txt").download_blob().readall() == b"written via SAS"
    d = sas_blob(c.container_name, "w.txt", permission=BlobSasPermissions(delete=True))
    BlobClient.from_blob_url(f"{BASE}/{c.container_name}/w.txt?{d}").delete_blob()


@check("sas")
def sas_tampered_or_misused():
    c = svc.create_container(name())
    c.get_blob_client("a").upload_blob(b"a")
    c.get_blob_client("b").upload_blob(b"b")
    tok = sas_blob(c.container_name, "a", permission=BlobSasPermissions(read=True))
    # Another blob with a's token.
    fails(BlobClient.from_blob_url(f"{BASE}/{c.container_name}/b?{tok}").download_blob, 403,
          "AuthenticationFailed")
    # Widening the permission in the URL breaks the signature.
    wide = tok.replace("sp=r", "sp=rwd")
    fails(lambda: BlobClient.from_blob_url(f"{BASE}/{c.container_name}/a?{wide}")
          .upload_blob(b"x", overwrite=True), 403, "AuthenticationFailed")
    # A flipped signature character.
    i = tok.index("sig=") + 6
    bad = tok[:i] + ("A" if tok[i] != "A" else "B") + tok[i + 1:]
    fails(BlobClient.from_blob_url(f"{BASE}/{c.container_name}/a?{bad}").download_blob, 403,
          "AuthenticationFailed")
    # A wrong account key.
    wrong = BlobServiceClient(f"{BASE}", credential={"account_name": ACCOUNT,
                                                      "account_key": "d3Jvbmcga2V5"})
    fails(lambda: wrong.get_blob_client(c.container_name, "a").download_blob(), 403,
          "AuthenticationFailed", ClientAuthenticationError)


@check("sas")
def sas_time_ip_protocol():
    c = svc.create_container(name())
    c.get_blob_client("t").upload_blob(b"t")
    url = f"{BASE}/{c.container_name}/t?"
    perm = BlobSasPermissions(read=True)
    expired = sas_blob(c.container_name, "t", permission=perm, expiry=later(-60))
    fails(BlobClient.from_blob_url(url + expired).download_blob, 403, "AuthenticationFailed")
    future = sas_blob(c.container_name, "t", permission=perm, start=later(600))
    fails(BlobClient.from_blob_url(url + future).download_blob, 403, "AuthenticationFailed")
    ok_ip = sas_blob(c.container_name, "t", permission=perm, ip="127.0.0.1")
    assert BlobClient.from_blob_url(url + ok_ip).download_blob().readall() == b"t"
    ip_range = sas_blob(c.container_name, "t", permission=perm, ip="127.0.0.0-127.0.0.255")
    assert BlobClient.from_blob_url(url + ip_range).download_blob().readall() == b"t"
    bad_ip = sas_blob(c.container_name, "t", permission=perm, ip="198.51.100.7")
    fails(BlobClient.from_blob_url(url + bad_ip).download_blob, 403,
          "AuthorizationSourceIPMismatch")
    https = sas_blob(c.container_name, "t", permission=perm, protocol="https")
    fails(BlobClient.from_blob_url(url + https).download_blob, 403,
          "AuthorizationProtocolMismatch")
    both = sas_blob(c.container_name, "t", permission=perm, protocol="https,http")
    assert BlobClient.from_blob_url(url + both).download_blob().readall() == b"t"


@check("sas")
def container_sas_policy_and_account_sas():
    c = svc.create_container(name())
    for n in ["x/1", "x/2", "y"]:
        c.get_blob_client(n).upload_blob(n.encode())
    cn = c.container_name
    lst = generate_container_sas(ACCOUNT, cn, account_key=KEY,
                                 permission=ContainerSasPermissions(read=True, list=True),
                                 expiry=later(3600))
    cc = ContainerClient.from_container_url(f"{BASE}/{cn}?{lst}")
    assert [b.name for b in cc.list_blobs()] == ["x/1", "x/2", "y"]
    assert cc.get_blob_client("y").download_blob().readall() == b"y"
    fails(lambda: cc.get_blob_client("z").upload_blob(b"z"), 403,
          "AuthorizationPermissionMismatch")
    nolist = generate_container_sas(ACCOUNT, cn, account_key=KEY,
                                    permission=ContainerSasPermissions(read=True),
                                    expiry=later(3600))
    fails(lambda: list(ContainerClient.from_container_url(f"{BASE}/{cn}?{nolist}").list_blobs()),
          403, "AuthorizationPermissionMismatch")
    # A stored access policy carries permission and expiry.
    c.set_container_access_policy(signed_identifiers={
        "readers": AccessPolicy(permission=ContainerSasPermissions(read=True),
                                expiry=later(3600))})
    pol = generate_blob_sas(ACCOUNT, cn, "y", account_key=KEY, policy_id="readers")
    assert BlobClient.from_blob_url(f"{BASE}/{cn}/y?{pol}").download_blob().readall() == b"y"
    unknown = generate_blob_sas(ACCOUNT, cn, "y", account_key=KEY, policy_id="nobody")
    fails(BlobClient.from_blob_url(f"{BASE}/{cn}/y?{unknown}").download_blob, 403,
          "AuthenticationFailed")
    acct = generate_account_sas(ACCOUNT, KEY, ResourceTypes(container=True, object=True),
                                AccountSasPermissions(read=True, list=True), later(3600))
    ac = BlobServiceClient(BASE, credential=acct)
    assert [b.name for b in ac.get_container_client(cn).list_blobs(name_starts_with="x/")] == [
        "x/1", "x/2"]
    fails(lambda: ac.get_blob_client(cn, "q").upload_blob(b"q"), 403,
          "AuthorizationPermissionMismatch")


# ---------------------------------------------------------------- anonymous access
@check("anonymous")
def anonymous_per_level():
    levels = {}
    for level in [None, "blob", "container"]:
        c = svc.create_container(name(), public_access=level)
        c.get_blob_client("pub.txt").upload_blob(b"hello")
        levels[level] = c.container_name
    for level, cn in levels.items():
        anon_b = BlobClient.from_blob_url(f"{BASE}/{cn}/pub.txt")
        anon_c = ContainerClient.from_container_url(f"{BASE}/{cn}")
        if level is None:
            fails(anon_b.download_blob, 404, "ResourceNotFound", ResourceNotFoundError)
        else:
            assert anon_b.download_blob().readall() == b"hello"
            assert anon_b.get_blob_properties().size == 5
        if level == "container":
            assert [b.name for b in anon_c.list_blobs()] == ["pub.txt"]
            anon_c.get_container_properties()
        else:
            fails(lambda: list(anon_c.list_blobs()), 404, "ResourceNotFound")
            fails(anon_c.get_container_properties, 404, None, ResourceNotFoundError)
        # Never a write, never a delete, never the ACL.
        fails(lambda: anon_b.upload_blob(b"x", overwrite=True), 401,
              "NoAuthenticationInformation")
        fails(anon_b.delete_blob, 401, "NoAuthenticationInformation")
        fails(lambda: anon_c.set_container_metadata({"a": "b"}), 401,
              "NoAuthenticationInformation")
        fails(anon_c.get_container_access_policy, 404, None)
    fails(lambda: list(BlobServiceClient(BASE).list_containers()), 404)


# ---------------------------------------------------------------- block blobs
@check("blocks")
def small_and_multi_block_uploads():
    c = svc.create_container(name())
    b = c.get_blob_client("small.bin")
    b.upload_blob(b"x" * 1000, content_settings=ContentSettings(content_type="text/plain"))
    p = b.get_blob_properties()
    assert (p.size, p.blob_type, p.content_settings.content_type) == (1000, "BlockBlob",
                                                                       "text/plain")
    # The SDK splits big uploads into blocks and downloads in ranges.
    small = BlobServiceClient.from_connection_string(
        CONN, max_single_put_size=64 * 1024, max_block_size=64 * 1024,
        max_single_get_size=64 * 1024, max_chunk_get_size=64 * 1024)
    big = os.urandom(3 * MiB + 123)
    bb = small.get_blob_client(c.container_name, "big.bin")
    bb.upload_blob(big, max_concurrency=4)
    committed, uncommitted = bb.get_block_list("all")
    assert len(committed) == 49 and uncommitted == [], (len(committed), len(uncommitted))
    assert sum(x.size for x in committed) == len(big)
    assert bb.download_blob(max_concurrency=4).readall() == big
    assert b.download_blob(offset=10, length=20).readall() == b"x" * 20
    empty = c.get_blob_client("empty")
    empty.upload_blob(b"")
    assert empty.download_blob().readall() == b""


@check("blocks")
def stage_commit_and_recommit():
    c = svc.create_container(name())
    b = c.get_blob_client("staged")
    b.stage_block("b1", b"hello ")
    b.stage_block("b2", b"world")
    committed, uncommitted = b.get_block_list("all")
    assert committed == [] and sorted(x.id for x in uncommitted) == ["b1", "b2"]
    names = [x.name for x in c.list_blobs()]
    assert names == [], names
    b.commit_block_list([BlobBlock("b1"), BlobBlock("b2")])
    assert b.download_blob().readall() == b"hello world"
    # Keep a committed block, add a new one.
    b.stage_block("b3", b"!")
    b.commit_block_list([BlobBlock("b2"), BlobBlock("b3")])
    assert b.download_blob().readall() == b"world!"
    fails(lambda: b.commit_block_list([BlobBlock("nope")]), 400, "InvalidBlockList")


@check("blocks")
def listing_with_prefix_and_delimiter():
    c = svc.create_container(name())
    for n in ["a/1", "a/2", "a/b/3", "b/4", "c"]:
        c.get_blob_client(n).upload_blob(n.encode(), metadata={"n": n.replace("/", "_")})
    assert [b.name for b in c.list_blobs(name_starts_with="a/")] == ["a/1", "a/2", "a/b/3"]
    top = [x.name for x in c.walk_blobs(delimiter="/")]
    assert top == ["a/", "b/", "c"], top
    inner = [x.name for x in c.walk_blobs(name_starts_with="a/", delimiter="/")]
    assert inner == ["a/b/", "a/1", "a/2"], inner  # the SDK yields a page's prefixes first
    md = {b.name: b.metadata for b in c.list_blobs(include=["metadata"])}
    assert md["a/b/3"] == {"n": "a_b_3"}, md
    pages = [[b.name for b in p] for p in c.list_blobs(results_per_page=2).by_page()]
    assert pages == [["a/1", "a/2"], ["a/b/3", "b/4"], ["c"]], pages


@check("blocks")
def append_blobs():
    c = svc.create_container(name())
    b = c.get_blob_client("log.txt")
    b.create_append_blob()
    r1 = b.append_block(b"line 1\n")
    r2 = b.append_block(b"line 2\n")
    assert (r1["blob_append_offset"], r2["blob_append_offset"]) == ("0", "7"), (r1, r2)
    assert b.download_blob().readall() == b"line 1\nline 2\n"
    p = b.get_blob_properties()
    assert p.blob_type == "AppendBlob" and p.append_blob_committed_block_count == 2


# ---------------------------------------------------------------- metadata names keep their case
MIXED = {"MyKey": "1", "lower": "2", "UPPER": "3", "snake_Case_9": "4"}


def raw_meta_names(resp_headers):
    return sorted(k[len("x-ms-meta-"):] for k in resp_headers if k.lower().startswith("x-ms-meta-"))


@check("metadata-case")
def container_metadata_keeps_case():
    n = name()
    c = svc.create_container(n, metadata=MIXED)
    assert c.get_container_properties().metadata == MIXED, c.get_container_properties().metadata
    listed = [x for x in svc.list_containers(name_starts_with=n, include_metadata=True)]
    assert listed[0].metadata == MIXED, listed[0].metadata
    c.set_container_metadata({"CamelCase": "x"})
    assert c.get_container_properties().metadata == {"CamelCase": "x"}
    # The raw response headers carry the names as stored.
    got = []
    c.get_container_properties(raw_response_hook=lambda r: got.append(r.http_response.headers))
    assert raw_meta_names(got[0]) == ["CamelCase"], raw_meta_names(got[0])


@check("metadata-case")
def blob_metadata_keeps_case():
    c = svc.create_container(name())
    b = c.get_blob_client("m.bin")
    b.upload_blob(b"x" * 1000, metadata=MIXED)
    assert b.get_blob_properties().metadata == MIXED, b.get_blob_properties().metadata
    d = b.download_blob()
    assert d.properties.metadata == MIXED and d.readall() == b"x" * 1000
    b.set_blob_metadata({"NewKey": "n", "other": "o"})
    assert b.get_blob_properties().metadata == {"NewKey": "n", "other": "o"}
    s = b.create_snapshot(metadata={"SnapKey": "s"})
    sc = c.get_blob_client("m.bin", snapshot=s["snapshot"])
    assert sc.get_blob_properties().metadata == {"SnapKey": "s"}
    listed = {x.name: x.metadata for x in c.list_blobs(include=["metadata"])}
    assert listed == {"m.bin": {"NewKey": "n", "other": "o"}}, listed
    # Put Block List (a multi-block upload) and page blobs keep case too.
    big = c.get_blob_client("big.bin")
    data = os.urandom(3 * 1024 * 1024 + 5)
    big.upload_blob(data, metadata={"BlockList": "yes"}, max_concurrency=2)
    assert big.get_blob_properties().metadata == {"BlockList": "yes"}
    assert big.download_blob(max_concurrency=2).readall() == data
    p = c.get_blob_client("p.vhd")
    p.create_page_blob(size=4096, metadata={"PageKey": "p"})
    assert p.get_blob_properties().metadata == {"PageKey": "p"}


@check("metadata-case")
def metadata_names_are_compared_ignoring_case():
    c = svc.create_container(name())
    b = c.get_blob_client("dup")
    # (The same name twice in two spellings is refused: the SDK cannot send that, see the unit
    # test of http::metadata.)
    b.upload_blob(b"x", metadata={"Key": "1"})
    b.set_blob_metadata({"KEY": "2"})
    assert b.get_blob_properties().metadata == {"KEY": "2"}


@check("metadata-case")
def many_requests_on_one_connection():
    # The SDK keeps one connection: bodies, HEADs and metadata interleave on it.
    c = svc.create_container(name())
    for i in range(20):
        b = c.get_blob_client(f"b{i}")
        body = (b"\r\n\r\nx-ms-meta-Evil: 1\r\n\r\n" * (i + 1))
        b.upload_blob(body, metadata={f"Name{i}": str(i)})
        assert b.get_blob_properties().metadata == {f"Name{i}": str(i)}
        assert b.download_blob().readall() == body
        assert b.exists()


# ---------------------------------------------------------------- key2
@check("key2")
def key2_signs_shared_key_and_sas():
    conn2 = os.environ["VMNODE_CONN2"]
    svc2 = BlobServiceClient.from_connection_string(conn2)
    key2 = svc2.credential.account_key
    assert key2 != KEY
    c = svc2.create_container(name())
    b = c.get_blob_client("k2")
    b.upload_blob(b"two")
    assert b.download_blob().readall() == b"two"
    sas = generate_blob_sas(ACCOUNT, c.container_name, "k2", account_key=key2,
                            permission=BlobSasPermissions(read=True), expiry=later(600))
    assert BlobClient.from_blob_url(f"{BASE}/{c.container_name}/k2?{sas}").download_blob().readall() == b"two"
    csas = generate_container_sas(ACCOUNT, c.container_name, account_key=key2,
                                  permission=ContainerSasPermissions(list=True), expiry=later(600))
    cc = ContainerClient.from_container_url(f"{BASE}/{c.container_name}?{csas}")
    assert [x.name for x in cc.list_blobs()] == ["k2"]


@check("key2")
def a_key_that_is_neither_fails():
    import base64
    wrong = base64.b64encode(os.urandom(64)).decode()
    bad = BlobServiceClient(account_url=BASE, credential={"account_name": ACCOUNT, "account_key": wrong})
    fails(lambda: bad.create_container(name()), 403, "AuthenticationFailed", ClientAuthenticationError)
    c = svc.create_container(name())
    c.get_blob_client("x").upload_blob(b"x")
    sas = generate_blob_sas(ACCOUNT, c.container_name, "x", account_key=wrong,
                            permission=BlobSasPermissions(read=True), expiry=later(600))
    fails(lambda: BlobClient.from_blob_url(f"{BASE}/{c.container_name}/x?{sas}").download_blob(),
          403, "AuthenticationFailed", ClientAuthenticationError)


def main():
    section = sys.argv[1]
    passed, failed = 0, 0
    for f in CHECKS[section]:
        t = time.monotonic()
        try:
            f()
            passed += 1
            print(f"ok   {f.__name__} ({time.monotonic() - t:.2f}s)", flush=True)
        except Exception:  # noqa: BLE001 - report every failure, then go on
            failed += 1
            print(f"FAIL {f.__name__}", flush=True)
            traceback.print_exc()
    print(f"{passed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
