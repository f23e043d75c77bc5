#!/usr/bin/env python3
"""The same azure-storage-blob workload against vmnode's blob service and Azurite, in one run.

    sudo /var/cache/vmnode/venv/bin/python bench/blob.py [--vmnode target/release/vmnode]
        [--azurite PATH] [--quick] [--rounds 3]
        [--only vmnode|Azurite] [--perf FILE] [--json] [--sdk python|js|rust] [--rust-client PATH]
        [--together] [--each]

`--azurite` defaults to `azurite-blob` found on PATH (`npm install azurite` puts it in
`node_modules/.bin`; add that to PATH or pass the path).
Starts a throwaway vmnode daemon (own state dir, ports and netns; needs root) or an Azurite
blob server (its own temp dir), only the one being measured: each round starts its server, warms
it up, measures and stops it (`--together`: both run throughout, and on a host that hands freed
memory back to its hypervisor, each server's round then starts on memory the other one's round
left cold); runs the workload against each in alternating rounds and prints the medians as a Markdown table, with vmnode's
own time per operation (request head to response head, from its debug log); `--each` prints
every round's figures to stderr as well.
`--sdk js` drives the same workload through the JavaScript SDK (bench/blob_js.mjs; install it
with `npm install --prefix /var/cache/vmnode/npm-sdk @azure/storage-blob`), whose client costs
less per request, so the ratio says more about the servers.
`--sdk rust` drives it through the official Azure SDK for Rust (azure_storage_blob, bench/blob_rs,
its own cargo project), cheaper still per request. It is built when missing into its own
target dir, `bench/blob_rs/target` or `$VMNODE_BENCH_RUST_TARGET` (`nice -n 19 cargo build
--release -j1`; `--rust-client PATH` runs another build). That SDK has no SharedKey auth, so this script makes the container and hands the client
its URL with a service SAS.
Workload: 4 MiB page writes, page-range listing of a fragmented page blob, lease operations
(acquire/renew/change/release), block upload and download (4 MiB blocks, 4 in flight).
"""

import argparse
import datetime
import functools
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid

from azure.storage.blob import BlobServiceClient, ContainerSasPermissions, generate_container_sas

MiB = 1 << 20
AZURITE_KEY = ("Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/"
               "KBHBeksoGMGw==")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def wait_port(port, proc, what):
    deadline = time.time() + 60
    while time.time() < deadline:
        if proc.poll() is not None:
            sys.exit(f"{what} exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"{what} did not listen on {port}")


def start_vmnode(binary, tmp):
    port, blob_port = free_port(), free_port()
    netns = f"vmnbench-{os.getpid()}"
    # debug: one line per request with the time spent in the service (read back below).
    env = dict(os.environ, VMNODE_STATE_DIR=f"{tmp}/state", VMNODE_RUN_DIR=f"{tmp}/run",
               VMNODE_LOG="vmnode::blob=debug,warn")
    log = open(f"{tmp}/vmnode.log", "w")
    proc = subprocess.Popen([binary, "serve", "--netns", netns, "--listen", f"127.0.0.1:{port}",
                             "--blob-listen", f"127.0.0.1:{blob_port}"], env=env,
                            stdout=log, stderr=log, stdin=subprocess.DEVNULL)
    wait_port(blob_port, proc, "vmnode")
    conn = subprocess.run([binary, "storage", "account", "show-connection-string"], env=env,
                          check=True, capture_output=True, text=True).stdout.strip()

    def stop():
        proc.terminate()
        proc.wait()
        subprocess.run(["ip", "netns", "del", netns], stderr=subprocess.DEVNULL)
    return conn, stop, proc.pid


def start_azurite(binary, tmp):
    port = free_port()
    log = open(f"{tmp}/azurite.log", "w")
    proc = subprocess.Popen([binary, "--blobHost", "127.0.0.1", "--blobPort", str(port),
                             "--location", f"{tmp}/azurite", "--skipApiVersionCheck", "--loose",
                             "--silent"], stdout=log, stderr=log, stdin=subprocess.DEVNULL)
    wait_port(port, proc, "azurite")
    conn = (f"DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={AZURITE_KEY};"
            f"BlobEndpoint=http://127.0.0.1:{port}/devstoreaccount1;")

    def stop():
        proc.terminate()
        proc.wait()
    return conn, stop, proc.pid


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def workload(conn, quick):
    svc = BlobServiceClient.from_connection_string(
        conn, max_single_put_size=4 * MiB, max_block_size=4 * MiB,
        max_single_get_size=4 * MiB, max_chunk_get_size=4 * MiB)
    c = svc.create_container(f"bench{uuid.uuid4().hex[:8]}")
    out = {}

    # 4 MiB page writes.
    n = 16 if quick else 64
    page = c.get_blob_client("disk.vhd")
    page.create_page_blob(size=n * 4 * MiB)
    data = os.urandom(4 * MiB)
    t = time.perf_counter()
    for i in range(n):
        page.upload_page(data, offset=i * 4 * MiB, length=4 * MiB)
    out["page write MiB/s (4 MiB pages)"] = n * 4 / (time.perf_counter() - t)

    # Page-range listing of a fragmented blob: 1000 separate 512-byte pages.
    frag = c.get_blob_client("frag.vhd")
    frag.create_page_blob(size=64 * MiB)
    for i in range(1000):
        frag.upload_page(b"\x01" * 512, offset=i * 64 * 1024, length=512)
    lat = []
    for _ in range(50 if quick else 200):
        t = time.perf_counter()
        ranges, _ = frag.get_page_ranges()
        lat.append((time.perf_counter() - t) * 1000)
    assert len(ranges) == 1000, len(ranges)
    out["get page ranges (1000 ranges) p50 ms"] = statistics.median(lat)
    out["get page ranges ops/s"] = 1000 / statistics.mean(lat)

    # Lease operations.
    lb = c.get_blob_client("leased")
    lb.upload_blob(b"x")
    lat = []
    for _ in range(50 if quick else 250):
        for op in ("acquire", "renew", "change", "release"):
            t = time.perf_counter()
            if op == "acquire":
                lease = lb.acquire_lease(lease_duration=15)
            elif op == "renew":
                lease.renew()
            elif op == "change":
                lease.change(str(uuid.uuid4()))
            else:
                lease.release()
            lat.append((time.perf_counter() - t) * 1000)
    out["lease op p50 ms"] = statistics.median(lat)
    out["lease op p99 ms"] = pct(lat, 99)
    out["lease ops/s (sequential)"] = 1000 / statistics.mean(lat)

    # Block upload and download.
    size = (32 if quick else 128) * MiB
    blob = os.urandom(size)
    bb = c.get_blob_client("big.bin")
    t = time.perf_counter()
    bb.upload_blob(blob, max_concurrency=4)
    out["block upload MiB/s (4 MiB blocks, 4 in flight)"] = size / MiB / (time.perf_counter() - t)
    t = time.perf_counter()
    got = bb.download_blob(max_concurrency=4).readall()
    out["block download MiB/s (4 in flight)"] = size / MiB / (time.perf_counter() - t)
    assert got == blob
    svc.delete_container(c.container_name)
    return out


def workload_js(conn, quick):
    """The same workload through the JavaScript SDK (bench/blob_js.mjs, one node process)."""
    here = os.path.dirname(os.path.abspath(__file__))
    r = subprocess.run(["node", os.path.join(here, "blob_js.mjs"), conn] + (["quick"] if quick else []),
                       capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"the JavaScript workload failed:\n{r.stderr[-2000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


# The Rust client's own target dir (it is a workspace of its own, so it shares no build with
# vmnode's): bench/blob_rs/target unless $VMNODE_BENCH_RUST_TARGET names another.
RUST_TARGET = os.environ.get("VMNODE_BENCH_RUST_TARGET") or os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "blob_rs", "target")


def rust_client(path):
    """The Rust client's binary; the default one is built (one job, niced) when it is missing or
    older than its sources."""
    src = os.path.join(os.path.dirname(os.path.abspath(__file__)), "blob_rs")
    if path != os.path.join(RUST_TARGET, "release", "blob_rs"):
        if not os.path.exists(path):
            sys.exit(f"{path} does not exist")
        return path
    sources = [os.path.join(src, f) for f in ("Cargo.toml", "Cargo.lock")] + \
        [os.path.join(src, "src", f) for f in os.listdir(os.path.join(src, "src"))]
    if not os.path.exists(path) or max(map(os.path.getmtime, sources)) > os.path.getmtime(path):
        subprocess.run(["nice", "-n", "19", "cargo", "build", "--release", "-j1"], cwd=src,
                       env=dict(os.environ, CARGO_TARGET_DIR=RUST_TARGET), check=True)
    return path


def workload_rust(conn, quick, client):
    """The same workload through the Azure SDK for Rust (bench/blob_rs, one process). That SDK
    signs no SharedKey requests, so the container is made here and the client gets its URL with
    a service SAS (read, add, create, write, delete, list; one hour)."""
    svc = BlobServiceClient.from_connection_string(conn)
    c = svc.create_container(f"bench{uuid.uuid4().hex[:8]}")
    try:
        sas = generate_container_sas(
            svc.account_name, c.container_name, account_key=svc.credential.account_key,
            permission=ContainerSasPermissions(read=True, add=True, create=True, write=True,
                                               delete=True, list=True),
            expiry=datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(hours=1))
        r = subprocess.run([client, f"{c.url}?{sas}"] + (["quick"] if quick else []),
                           capture_output=True, text=True)
    finally:
        svc.delete_container(c.container_name)
    if r.returncode != 0:
        sys.exit(f"the Rust workload failed:\n{r.stderr[-2000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def server_side(log):
    """Time inside vmnode (request head to response head) per operation, from its debug log."""
    by_op = {}
    for line in open(log, errors="replace"):
        if "blob request" not in line:
            continue
        f = dict(x.split("=", 1) for x in line.split() if "=" in x)
        op = {"lease": "lease op", "pagelist": "get page ranges", "page": "put page",
              "block": "put block", "blocklist": "put block list" if f.get("method") == "PUT" else None,
              "": "get blob" if f.get("method") == "GET" else None
              }.get(f.get("comp"))
        if op and "us" in f:
            by_op.setdefault(op, []).append(int(f["us"]) / 1000)
    out = {}
    for op, us in by_op.items():
        out[f"{op} in the service p50 ms"] = statistics.median(us)
        out[f"{op} in the service p99 ms"] = pct(us, 99)
    return out


def main():
    ap = argparse.ArgumentParser()
    here = os.path.dirname(os.path.abspath(__file__))
    ap.add_argument("--vmnode", default=os.path.join(here, "..", "target", "release", "vmnode"))
    ap.add_argument("--azurite", default=shutil.which("azurite-blob"),
                    help="Azurite's azurite-blob (default: the one on PATH)")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--only", choices=["vmnode", "Azurite"], help="run against one server only")
    ap.add_argument("--rounds", type=int, default=3, help="measured rounds per server")
    ap.add_argument("--each", action="store_true", help="print every round's figures to stderr too")
    ap.add_argument("--together", action="store_true",
                    help="both servers alive throughout (default: only the one being measured; each "
                    "round starts its server, warms it up, measures and stops it)")
    ap.add_argument("--apart", action="store_true", help="the default; kept for old command lines")
    ap.add_argument("--sdk", choices=["python", "js", "rust"], default="python",
                    help="the client: azure-storage-blob (Python), @azure/storage-blob (JavaScript, "
                    "from $VMNODE_JS_SDK, default /var/cache/vmnode/npm-sdk/node_modules) or "
                    "azure_storage_blob (Rust, bench/blob_rs)")
    ap.add_argument("--rust-client", metavar="PATH",
                    default=os.path.join(RUST_TARGET, "release", "blob_rs"),
                    help="the --sdk rust binary (default: built into %(default)s if missing)")
    ap.add_argument("--perf", metavar="FILE",
                    help="record a perf profile of vmnode during its first measured round")
    a = ap.parse_args()
    a.apart = not a.together
    if a.only != "vmnode" and not a.azurite:
        sys.exit("no azurite-blob on PATH: `npm install azurite` and pass --azurite "
                 "node_modules/.bin/azurite-blob, or --only vmnode")
    servers = [(n, st, b) for n, st, b in [("vmnode", start_vmnode, a.vmnode),
                                           ("Azurite", start_azurite, a.azurite)]
               if not a.only or a.only == n]
    # The rounds alternate between the servers (A B B A ...), so a change in the machine's load
    # (other builds) falls on both alike; each figure is the median over the rounds. Both
    # servers run throughout (--together), or only the one being measured (started, warmed up
    # and stopped for each round), so neither's memory or caches weigh on the other's rounds.
    running, rounds, logs = {}, {}, []
    work = {"python": workload, "js": workload_js}.get(a.sdk)
    if a.sdk == "rust":
        work = functools.partial(workload_rust, client=rust_client(a.rust_client))
    starts = {n: (st, b) for n, st, b in servers}

    def up(name):
        tmp = tempfile.mkdtemp(prefix=f"bench-{name}-")
        conn, stop, pid = starts[name][0](starts[name][1], tmp)
        running[name] = (conn, stop, pid, tmp)
        work(conn, a.quick)  # warm-up: connections, caches, JIT

    def down(name):
        conn, stop, pid, tmp = running.pop(name)
        stop()
        if name == "vmnode":
            logs.append(open(f"{tmp}/vmnode.log").read())
        shutil.rmtree(tmp, ignore_errors=True)
    try:
        names = [n for n, _, _ in servers]
        if not a.apart:
            for name in names:
                up(name)
        for r in range(a.rounds):
            for name in (names if r % 2 == 0 else names[::-1]):
                if a.apart:
                    up(name)
                conn, _, pid, _ = running[name]
                # Each round starts with nothing dirty in the page cache: the previous round's
                # hundreds of MiB, flushed while this one writes, would slow whichever came next.
                os.sync()
                perf = None
                if a.perf and name == "vmnode" and r == 0:
                    perf = subprocess.Popen(["perf", "record", "-g", "-o", a.perf, "-p", str(pid)],
                                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                rounds.setdefault(name, []).append(work(conn, a.quick))
                if a.each:
                    print(f"round {r} {name}: " + "; ".join(f"{k} {v:.2f}" for k, v in rounds[name][-1].items()),
                          file=sys.stderr)
                if perf:
                    perf.send_signal(2)
                    perf.wait()
                if a.apart:
                    down(name)
    finally:
        for name in list(running):
            down(name)
    if logs:
        joined = os.path.join(tempfile.mkdtemp(prefix="bench-vmnode-log-"), "vmnode.log")
        with open(joined, "w") as f:
            f.write("".join(logs))
        in_service = server_side(joined)
        shutil.rmtree(os.path.dirname(joined), ignore_errors=True)
    results = {n: {k: statistics.median(rd[k] for rd in rs) for k in rs[0]}
               for n, rs in rounds.items()}
    if "vmnode" in results and logs:
        results["vmnode"].update(in_service)
    if a.json:
        print(json.dumps(results, indent=2))
        return
    if len(results) == 1:
        print("| metric | value |\n|---|---:|")
        for k, v in next(iter(results.values())).items():
            print(f"| {k} | {v:.2f} |")
        return
    print("| metric | vmnode | Azurite | vmnode / Azurite |")
    print("|---|---:|---:|---:|")
    for k in results["vmnode"]:
        v, z = results["vmnode"][k], results["Azurite"].get(k)
        if z is None:
            print(f"| {k} | {v:.3f} | – | – |")
            continue
        better = z / v if ("ms" in k.split()[-1]) else v / z
        print(f"| {k} | {v:.2f} | {z:.2f} | {better:.1f}x |")


if __name__ == "__main__":
    main()
