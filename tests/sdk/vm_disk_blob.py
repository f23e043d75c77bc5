"""A running VM's OS disk, seen through the real azure-storage-blob SDK.

  python vm_disk_blob.py CONNECTION_STRING CONTAINER BLOB

Prints one JSON line: the blob's type, lease state/duration, what deleting it without the lease
id returned, and how many bytes its page ranges cover.
"""
import json, sys

from azure.core.exceptions import HttpResponseError
from azure.storage.blob import BlobServiceClient

conn, container, name = sys.argv[1:4]
blob = BlobServiceClient.from_connection_string(conn).get_blob_client(container, name)
p = blob.get_blob_properties()
ranges, _ = blob.get_page_ranges()
try:
    blob.delete_blob()
    delete = "deleted"
except HttpResponseError as e:
    delete = f"{e.status_code} {getattr(e.error_code, 'value', e.error_code)}"
print(json.dumps({
    "type": str(getattr(p.blob_type, "value", p.blob_type)),
    "lease_state": p.lease.state,
    "lease_duration": p.lease.duration,
    "size": p.size,
    "delete": delete,
    "range_bytes": sum(r["end"] - r["start"] + 1 for r in ranges),
}))
