#!/usr/bin/env python3
"""Replacing and deleting blobs through the Python SDK, timed at the client (the blob reaper,
src/blob/reaper.rs: the old file's last close, which waits on the device's discard, is off the
request's path).

    sudo /var/cache/vmnode/venv/bin/python bench/overwrite.py [--vmnode target/release/vmnode ...]
        [--runs 2] [--overwrites 300] [--names 8] [--mib 4]

Each run starts a throwaway vmnode daemon (bench/blob.py's: own state dir, ports and netns; needs
root), puts `--names` blobs of `--mib` MiB (not timed: those are creates), then times
`--overwrites` Put Blobs over them in turn (each replaces a blob of the same size) and then one
delete of each. Give `--vmnode` several times to compare builds: the runs alternate between them
(A B B A ...), so a change in the machine's load falls on each alike. Prints one Markdown row per
run (overwrite p50 / p99, delete p50, in ms) and one with each build's medians.
"""

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from blob import MiB, BlobServiceClient, pct, start_vmnode  # noqa: E402


def one_run(binary, overwrites, names, mib):
    """Timings (ms) of one run against a fresh daemon: the overwrites, then the deletes."""
    tmp = tempfile.mkdtemp(prefix="bench-overwrite-")
    conn, stop, _ = start_vmnode(binary, tmp)
    try:
        svc = BlobServiceClient.from_connection_string(conn, max_single_put_size=(mib + 1) * MiB)
        c = svc.create_container(f"bench{uuid.uuid4().hex[:8]}")
        data = os.urandom(mib * MiB)
        blobs = [c.get_blob_client(f"b{i}") for i in range(names)]
        for b in blobs:
            b.upload_blob(data, overwrite=True)
        os.sync()
        put = []
        for i in range(overwrites):
            t = time.perf_counter()
            blobs[i % names].upload_blob(data, overwrite=True)
            put.append((time.perf_counter() - t) * 1000)
        delete = []
        for b in blobs:
            t = time.perf_counter()
            b.delete_blob()
            delete.append((time.perf_counter() - t) * 1000)
        if list(c.list_blobs()):
            sys.exit("blobs left after the deletes")
        return put, delete
    finally:
        stop()
        shutil.rmtree(tmp, ignore_errors=True)


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser()
    ap.add_argument("--vmnode", action="append", metavar="PATH",
                    help="a vmnode binary; give it again to compare builds "
                    "(default: target/release/vmnode)")
    ap.add_argument("--runs", type=int, default=2, help="runs per build")
    ap.add_argument("--overwrites", type=int, default=300)
    ap.add_argument("--names", type=int, default=8, help="blobs overwritten in turn")
    ap.add_argument("--mib", type=int, default=4, help="size of each blob")
    a = ap.parse_args()
    bins = a.vmnode or [os.path.join(here, "..", "target", "release", "vmnode")]
    for b in bins:
        if not os.access(b, os.X_OK):
            sys.exit(f"{b} is not an executable vmnode")
    order = [b for r in range(a.runs) for b in (bins if r % 2 == 0 else bins[::-1])]
    got = {b: [] for b in bins}
    print(f"{a.overwrites} overwrites of {a.mib} MiB over {a.names} names, then {a.names} deletes; "
          f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    print("| build | run | overwrite p50 / p99 ms | delete p50 ms |\n|---|---|---|---|")
    for b in order:
        put, delete = one_run(b, a.overwrites, a.names, a.mib)
        got[b].append((put, delete))
        print(f"| {b} | {len(got[b])} | {statistics.median(put):.2f} / {pct(put, 99):.2f} | "
              f"{statistics.median(delete):.2f} |", flush=True)
    for b, runs in got.items():
        print(f"| {b} | median of {len(runs)} | "
              f"{statistics.median(statistics.median(p) for p, _ in runs):.2f} / "
              f"{statistics.median(pct(p, 99) for p, _ in runs):.2f} | "
              f"{statistics.median(statistics.median(d) for _, d in runs):.2f} |")


if __name__ == "__main__":
    main()
