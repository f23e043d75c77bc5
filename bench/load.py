#!/usr/bin/env python3
"""Load (issue 9, R7): 20 VM creates at once, all must reach running with a DHCP lease, while the
blob service is driven with a mixed read/write load; the blob service's throughput and latency
are measured during the boots and, for reference, on an idle node in the same run.

  sudo python3 bench/load.py [--vms 20] [--seconds 30] [--threads 8] [--bin target/release/vmnode]

The blob clients run in a process of their own at niceness -10 and in a cpu cgroup of their own,
`vmnode-bench-clients`, of weight `--client-cpu-weight` (they stand in for remote clients, which
would not share the node's cores with its guests; without the group they would share their
session's autogroup, whatever their niceness); the daemon runs at its defaults (`serve --nice -5`,
its own `vmnode-daemon` group), QEMU at 0 in `vmnode-guests`.

The blob load: `--threads` client threads, each with its own keep-alive HTTP connection, doing
80 % GETs of a 4 KiB block blob and 20 % PUTs of 4 KiB block blobs (service SAS with racwd on the
container, as any client would use). Latency is per request (send → whole answer read).
Prints a Markdown table for docs/RELIABILITY.md.
"""
import argparse, http.client, json, multiprocessing, os, random, shutil, signal, statistics, subprocess, sys, tempfile, threading, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from run import Node, cleanup, loadavg  # noqa: E402


def blob_port(node):
    info = json.loads(node.cli("storage", "account", "show-connection-string", "-o", "json"))
    cs = info["connectionString"] if isinstance(info, dict) else info
    endpoint = [p for p in cs.split(";") if p.startswith("BlobEndpoint=")][0].split("=", 1)[1]
    hostport = endpoint.split("//")[1].split("/")[0]
    account = endpoint.rstrip("/").split("/")[-1]
    return hostport, account


def drive(hostport, account, sas, seconds, threads, rate=0, stop_early=None):
    """`threads` clients; with `rate` > 0 they offer that many requests a second in all, each on
    a fixed schedule, and a request's latency counts from when it was due (so a stalled client
    or server is charged for the requests it delayed); with 0 each sends as fast as answered."""
    host, port = hostport.split(":")
    lat, errors, kinds, slow = [], [], {"GET": [], "PUT": []}, []
    lock = threading.Lock()
    end = time.perf_counter() + seconds
    body = os.urandom(4096)

    def worker(n):
        c = http.client.HTTPConnection(host, int(port), timeout=10)
        mine, bad, kind, when = [], 0, {"GET": [], "PUT": []}, []
        i = 0
        interval = threads / rate if rate else 0
        due = time.perf_counter() + interval * n / threads
        while time.perf_counter() < end and not (stop_early and stop_early.is_set()):
            i += 1
            if rate:
                wait = due - time.perf_counter()
                if wait > 0:
                    time.sleep(wait)
            op = "PUT" if random.random() < 0.2 else "GET"
            t0 = due if rate else time.perf_counter()
            due += interval
            if op == "PUT":
                path = f"/{account}/load/w{n}-{i % 50}?{sas}"
                hdr = {"x-ms-blob-type": "BlockBlob", "Content-Length": "4096", "x-ms-version": "2023-11-03"}
                c.request("PUT", path, body=body, headers=hdr)
            else:
                c.request("GET", f"/{account}/load/hot?{sas}", headers={"x-ms-version": "2023-11-03"})
            r = c.getresponse()
            r.read()
            mine.append(time.perf_counter() - t0)
            when.append((time.time() - (time.perf_counter() - t0), mine[-1]))
            kind[op].append(mine[-1])
            if r.status >= 300:
                bad += 1
        with lock:
            lat.extend(mine)
            slow.extend(w for w in when if w[1] > 0.05)
            errors.append(bad)
            for k in kind:
                kinds[k].extend(kind[k])
    ts = [threading.Thread(target=worker, args=(n,)) for n in range(threads)]
    t0 = time.perf_counter()
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    wall = time.perf_counter() - t0
    lat.sort()
    p = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))] * 1000
    split = {}
    for k, v in kinds.items():
        v.sort()
        if v:
            split[k] = (v[len(v) // 2] * 1000, v[min(len(v) - 1, int(0.99 * len(v)))] * 1000)
    # When slow answers (over 50 ms) were asked for, by second (wall clock), to set beside the
    # daemon's log.
    by_second = {}
    for t, l in slow:
        k = time.strftime("%H:%M:%S", time.gmtime(t))
        by_second[k] = max(by_second.get(k, (0, 0))[0], l), by_second.get(k, (0, 0))[1] + 1
    return {"slow": sorted(by_second.items()), "n": len(lat), "rps": len(lat) / wall, "p50": p(0.5), "p99": p(0.99), "max": lat[-1] * 1000,
            "errors": sum(errors), "split": split}


CLIENT_GROUP = "vmnode-bench-clients"


def client_group_dir():
    v1 = "/sys/fs/cgroup/cpu"
    return os.path.join(v1 if os.path.exists(os.path.join(v1, "cgroup.procs")) else "/sys/fs/cgroup", CLIENT_GROUP)


def join_client_group(weight):
    """Moves this process into its own cpu cgroup of `weight` (v2 units; v1 shares scaled)."""
    d = client_group_dir()
    os.makedirs(d, exist_ok=True)
    v1 = os.path.exists(os.path.join(d, "cpu.shares"))
    with open(os.path.join(d, "cpu.shares" if v1 else "cpu.weight"), "w") as f:
        f.write(str(weight * 1024 // 100 if v1 else weight))
    with open(os.path.join(d, "cgroup.procs"), "w") as f:
        f.write(str(os.getpid()))


def _drive_in(q, stop_early, a, weight):
    # The load stands in for clients elsewhere, which would not share the node's two cores with
    # 20 booting guests: its own process (no GIL shared with the create threads) runs above them.
    os.setpriority(os.PRIO_PROCESS, 0, -10)
    if weight:
        join_client_group(weight)
    q.put(drive(*a, stop_early=stop_early))


def drive_apart(*a, stop_early=None, weight=1000):
    """`drive` in a process of its own at niceness -10, in its own cpu cgroup of `weight` (0: none);
    returns a handle whose .result() waits."""
    q, p = multiprocessing.Queue(), None
    p = multiprocessing.Process(target=_drive_in, args=(q, stop_early, a, weight))
    p.start()

    class H:
        def result(self):
            r = q.get()
            p.join()
            return r
    return H()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--vms", type=int, default=20)
    ap.add_argument("--seconds", type=float, default=30)
    ap.add_argument("--threads", type=int, default=8)
    ap.add_argument("--bin", default="target/release/vmnode")
    ap.add_argument("--daemon-nice", type=int, help="`vmnode serve --nice` (default: the daemon's own, -5)")
    ap.add_argument("--rate", type=float, default=600,
                    help="requests a second offered while the VMs boot (0: each client as fast as answered); "
                    "the idle node is always driven as fast as it answers")
    ap.add_argument("--guest-nice", type=int, help="`vmnode serve --guest-nice` (default: the daemon's own)")
    ap.add_argument("--guest-cpu-weight", type=int, help="`vmnode serve --guest-cpu-weight` (default: the daemon's own)")
    ap.add_argument("--client-cpu-weight", type=int, default=1000,
                    help="cpu cgroup weight of the blob clients' own group (v2 units; 0: no group, they share their session's autogroup)")
    ap.add_argument("--daemon-cpu-weight", type=int, help="`vmnode serve --daemon-cpu-weight` (default: the daemon's own)")
    ap.add_argument("--keep-log", help="copy the daemon's log here at the end (with VMNODE_LOG="
                    "info,vmnode::blob::server=debug it holds each blob request's time in the service)")
    args = ap.parse_args()
    root = tempfile.mkdtemp(prefix="vmnode-bench-load-")
    node = Node(os.path.abspath(args.bin), root)
    if args.daemon_nice is not None:
        node.serve_extra.append(f"--nice={args.daemon_nice}")
    if args.guest_nice is not None:
        node.serve_extra.append(f"--guest-nice={args.guest_nice}")
    if args.guest_cpu_weight is not None:
        node.serve_extra.append(f"--guest-cpu-weight={args.guest_cpu_weight}")
    if args.daemon_cpu_weight is not None:
        node.serve_extra.append(f"--daemon-cpu-weight={args.daemon_cpu_weight}")
    loads = [loadavg()]
    try:
        node.cli("image", "build", "tiny")
        node.start()
        node.cli("group", "create", "-n", "load")
        node.cli("storage", "container", "create", "-n", "load")
        hot = os.path.join(root, "hot")
        open(hot, "wb").write(os.urandom(4096))
        node.cli("storage", "blob", "upload", "-c", "load", "-n", "hot", "-f", hot)
        sas = node.cli("storage", "blob", "generate-sas", "-c", "load", "--permissions", "racwd").strip()
        hostport, account = blob_port(node)
        idle = drive_apart(hostport, account, sas, min(10, args.seconds), args.threads,
                           weight=args.client_cpu_weight).result()
        loads.append(loadavg())
        # 20 creates at once (each a CLI call in its own thread, as 20 users would), the blob
        # load running from the first create until the last VM holds its lease.
        results, started = {}, time.perf_counter()
        done = multiprocessing.Event()

        def create(i):
            t0 = time.perf_counter()
            r = subprocess.run([node.bin, "vm", "create", "-g", "load", "-n", f"v{i}", "--image",
                                "vmnode:tiny:1:latest", "--size", "Standard_B1s", "-o", "json"],
                               env=node.env, capture_output=True, text=True)
            results[i] = (r.returncode, time.perf_counter() - t0, r.stderr.strip()[-300:])
        creators = [threading.Thread(target=create, args=(i,)) for i in range(args.vms)]
        loader = drive_apart(hostport, account, sas, 600, args.threads, args.rate, stop_early=done,
                             weight=args.client_cpu_weight)
        for t in creators:
            t.start()
        for t in creators:
            t.join()
        all_created = time.perf_counter() - started
        done.set()
        busy = loader.result()
        loads.append(loadavg())
        vms = json.loads(node.cli("vm", "list", "-g", "load", "-o", "json"))
        running = [v for v in vms if v["powerState"] == "VM running" and v.get("privateIps")]
        ok = [r for r in results.values() if r[0] == 0]
        failures = [r[2] for r in results.values() if r[0] != 0]
        print(f"\nRun {time.strftime('%Y-%m-%d %H:%M')} UTC; {os.cpu_count()} cores, TCG; binary {args.bin}; "
              f"daemon niceness {args.daemon_nice if args.daemon_nice is not None else -5}, QEMU {args.guest_nice if args.guest_nice is not None else 'default'}; "
              f"1-minute load average: {', '.join(loads)}\n")
        print("| measure | result | goal |")
        print("|---|---|---|")
        print(f"| {args.vms} concurrent `vm create` (each waits for the guest's DHCP lease) | "
              f"{len(ok)}/{args.vms} succeeded, {len(running)}/{args.vms} running with a DIP; last done after "
              f"{all_created:.1f} s (per create median {statistics.median([r[1] for r in ok]) if ok else 0:.1f} s) | all reach running |")
        offered = f"{args.rate:.0f} req/s offered" if args.rate else "closed loop"
        for label, m in [(f"blob service while the VMs boot ({offered})", busy),
                         ("blob service, idle node (same run, closed loop)", idle)]:
            print(f"| {label}: {args.threads} clients, 80 % GET / 20 % PUT of 4 KiB | {m['rps']:.0f} req/s, "
                  f"p50 {m['p50']:.1f} ms, p99 {m['p99']:.1f} ms, max {m['max']:.0f} ms, {m['n']} requests, "
                  f"{m['errors']} errors; p50/p99 GET {m['split']['GET'][0]:.1f}/{m['split']['GET'][1]:.1f} ms, "
                  f"PUT {m['split']['PUT'][0]:.1f}/{m['split']['PUT'][1]:.1f} ms | ≥ 500 req/s, p99 ≤ 50 ms |")
        if busy["slow"]:
            print("\n- answers over 50 ms while booting, by second (UTC, worst ms, count): " +
                  ", ".join(f"{k} {w * 1000:.0f} ms ×{n}" for k, (w, n) in busy["slow"]))
        for f in failures:
            print(f"\n- create failed: {f}")
        # Why a VM did not make it: its verdict (with evidence) and the end of its serial log.
        for i, r in sorted(results.items()):
            if r[0] == 0:
                continue
            iv = json.loads(node.cli("vm", "get-instance-view", "-g", "load", "-n", f"v{i}", "-o", "json"))
            print(f"\n- v{i} boot diagnostics: {json.dumps(iv.get('bootDiagnostics'))[:1500]}")
            log = node.cli("vm", "boot-diagnostics", "get-boot-log", "-g", "load", "-n", f"v{i}")
            print("  serial log tail:\n    " + "\n    ".join(log.strip().splitlines()[-15:]))
    finally:
        try:
            os.rmdir(client_group_dir())
        except OSError:
            pass
        if args.keep_log:
            shutil.copy(os.path.join(root, "daemon.log"), args.keep_log)
        cleanup(node, root)


if __name__ == "__main__":
    main()
