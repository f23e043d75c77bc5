#!/usr/bin/env python3
"""DHCP responder throughput and latency: vmnode vs Kea vs dnsmasq, same run, same wire.

  sudo python3 bench/dhcp.py [--period 10] [--rates 200,2000,4000,6000,8000,10000] [--runs 2]

Two network namespaces made here (and deleted at the end): a "server" one with bridge br0
(10.1.0.1/16) and a "client" one whose eth0 (10.1.0.2/16) is a veth into that bridge. Each
server in turn listens on br0; perfdhcp (Debian: kea-admin) runs in the client namespace as a
relay (giaddr 10.1.0.2), with up to 60000 made-up client MACs, at each rate for --period
seconds. Nothing leaves the two namespaces.

Servers, every one persisting leases to a file before it answers:
  vmnode   network/examples/dhcp_bench_server (the real serve()/handle(), a "bench mode"
           book: any MAC, addresses from a pool, each lease appended + fdatasync before ACK)
  kea      kea-dhcp4 2.2, memfile lease file (persist=true; Kea flushes, it does not fsync);
           its default single thread, and with multi-threading (2 threads)
  dnsmasq  dnsmasq --no-ping with a lease file (rewritten on change)

Per server and rate: 4-way exchanges/s (ACKs received per second), drops (% of DISCOVERs and
REQUESTs with no answer within 1 s), DISCOVER->OFFER p50/p99 (perfdhcp -x t timers). Before the
perfdhcp runs, a third namespace's busybox udhcpc measures link up -> lease (--lease-tries). The
"best" per server is the most exchanges/s of any run with <= 1% drops. The rate-200 row is
the unloaded latency. Servers take turns within each run, so background load (the 1-minute load
average is printed per row) hits them alike. Prints a Markdown table.
"""
import argparse, json, os, re, shutil, signal, statistics, subprocess, sys, tempfile, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TAG = f"vmnbd-{os.getpid()}"
SRV, CLI, GST = f"{TAG}-s", f"{TAG}-c", f"{TAG}-g"


def sh(*a, check=True):
    return subprocess.run(a, check=check, capture_output=True, text=True).stdout


def need(binary, package):
    if shutil.which(binary) is None:
        print(f"installing {package} (for {binary})", file=sys.stderr)
        subprocess.run(["apt-get", "install", "-y", "-q", package], check=True,
                       env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"),
                       stdout=subprocess.DEVNULL)


def setup():
    sh("ip", "netns", "add", SRV)
    sh("ip", "netns", "add", CLI)
    sh("ip", "netns", "add", GST)
    for ns in (SRV, CLI, GST):
        sh("ip", "-n", ns, "link", "set", "lo", "up")
    sh("ip", "-n", SRV, "link", "add", "br0", "type", "bridge")
    sh("ip", "-n", SRV, "addr", "add", "10.1.0.1/16", "dev", "br0")
    sh("ip", "-n", SRV, "link", "set", "br0", "up")
    sh("ip", "-n", SRV, "link", "add", "vcl0", "type", "veth", "peer", "name", "eth0", "netns", CLI)
    sh("ip", "-n", SRV, "link", "set", "vcl0", "master", "br0", "up")
    sh("ip", "-n", CLI, "addr", "add", "10.1.0.2/16", "dev", "eth0")
    sh("ip", "-n", CLI, "link", "set", "eth0", "up")
    # A "guest" for link-up -> lease: a plain DHCP client on its own port of the bridge.
    sh("ip", "-n", SRV, "link", "add", "vgs0", "type", "veth", "peer", "name", "eth0", "netns", GST)
    sh("ip", "-n", SRV, "link", "set", "vgs0", "master", "br0", "up")
    time.sleep(0.5)


def teardown():
    for ns in (SRV, CLI, GST):
        subprocess.run(["ip", "netns", "delete", ns], capture_output=True)


class Server:
    """A server process in the server namespace; `start` waits until it answers."""

    def __init__(self, name, argv, workdir, env=None):
        self.name, self.argv, self.workdir, self.env = name, argv, workdir, env
        self.proc = None

    def start(self):
        log = open(os.path.join(self.workdir, f"{self.name}.log"), "w")
        self.proc = subprocess.Popen(["ip", "netns", "exec", SRV, *self.argv], stdout=log,
                                     stderr=subprocess.STDOUT, env=self.env, cwd=self.workdir)
        # Ready when a small perfdhcp run gets its leases.
        deadline = time.time() + 20
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited; see {log.name}")
            r = perfdhcp(rate=10, period=1, clients=10, timers=False)
            if r and r["acks"] > 0:
                return
            time.sleep(0.2)
        raise RuntimeError(f"{self.name} does not answer; see {log.name}")

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


def perfdhcp(rate, period, clients, timers=True):
    """One perfdhcp run; returns counts and DISCOVER->OFFER delays (ms)."""
    argv = ["ip", "netns", "exec", CLI, "perfdhcp", "-4", "-l", "eth0", "-r", str(rate),
            "-p", str(period), "-R", str(clients), "-d", "1", "-W", "1000000"]
    if timers:
        argv += ["-x", "t"]
    argv.append("10.1.0.1")
    out = subprocess.run(argv, capture_output=True, text=True, timeout=period + 60).stdout
    stats = {}
    # Two blocks: "***Statistics for: DISCOVER-OFFER***" and "REQUEST-ACK".
    for block in re.split(r"\*\*\*Statistics for: ", out)[1:]:
        kind = block.split("*", 1)[0].strip()
        num = lambda k: int(re.search(rf"{k}: (\d+)", block).group(1)) if re.search(rf"{k}: (\d+)", block) else 0
        stats[kind] = {"sent": num("sent packets"), "recv": num("received packets"),
                       "drops": num("drops")}
    if "DISCOVER-OFFER" not in stats:
        return None
    do, ra = stats["DISCOVER-OFFER"], stats.get("REQUEST-ACK", {"sent": 0, "recv": 0, "drops": 0})
    delays = []
    if timers:
        # -x t prints, per successful exchange and type, lines with send and receive times.
        delays = parse_timers(out)
    sent = do["sent"] + ra["sent"]
    lost = do["drops"] + ra["drops"] + max(0, do["sent"] - do["recv"] - do["drops"]) \
        + max(0, ra["sent"] - ra["recv"] - ra["drops"])
    # perfdhcp's own "Rate" divides by the run plus its exit wait; count ACKs per second sent.
    per_s = ra["recv"] / period
    return {"acks": ra["recv"], "per_s": per_s, "sent": sent,
            "drop_pct": 100.0 * lost / sent if sent else 0.0, "delays": delays, "raw": out}


def parse_timers(out):
    """DISCOVER->OFFER delays in ms from perfdhcp's -x t dump."""
    delays, section = [], None
    for line in out.splitlines():
        if "Timestamps for packets: DISCOVER-OFFER" in line:
            section = "do"
            continue
        if "Timestamps for packets:" in line:
            section = None
            continue
        if section == "do":
            m = re.search(r"sent / received:\s*([\d.]+)\s*/\s*([\d.]+)", line)
            if m:
                delays.append((float(m.group(2)) - float(m.group(1))) * 1000.0)
    return delays


def link_up_to_lease(tries):
    """ms from `ip link set eth0 up` in the guest namespace to busybox udhcpc holding a lease
    (full DISCOVER/OFFER/REQUEST/ACK; the script configures nothing, so every try is alike)."""
    times = []
    for _ in range(tries):
        sh("ip", "-n", GST, "link", "set", "eth0", "down")
        time.sleep(0.05)
        t0 = time.perf_counter()
        sh("ip", "-n", GST, "link", "set", "eth0", "up")
        r = subprocess.run(["ip", "netns", "exec", GST, "busybox", "udhcpc", "-f", "-q", "-n", "-t", "5",
                            "-T", "1", "-i", "eth0", "-s", "/bin/true"], capture_output=True)
        if r.returncode == 0:
            times.append((time.perf_counter() - t0) * 1000)
    return times


def pct(xs, p):
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def kea_config(workdir, threads):
    cfg = {"Dhcp4": {
        "interfaces-config": {"interfaces": ["br0"], "dhcp-socket-type": "raw"},
        "lease-database": {"type": "memfile", "persist": True, "lfc-interval": 0,
                           "name": os.path.join(workdir, f"kea-leases4-{threads}.csv")},
        "valid-lifetime": 3600,
        "subnet4": [{"id": 1, "subnet": "10.1.0.0/16",
                     "pools": [{"pool": "10.1.0.10 - 10.1.255.250"}],
                     "option-data": [{"name": "routers", "data": "10.1.0.1"}]}],
        "loggers": [{"name": "kea-dhcp4", "severity": "WARN",
                     "output_options": [{"output": os.path.join(workdir, f"kea-{threads}.out")}]}],
    }}
    if threads > 1:
        cfg["Dhcp4"]["multi-threading"] = {"enable-multi-threading": True,
                                           "thread-pool-size": threads, "packet-queue-size": 256}
    path = os.path.join(workdir, f"kea-{threads}.json")
    with open(path, "w") as f:
        json.dump(cfg, f)
    return path


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--period", type=int, default=10)
    ap.add_argument("--rates", default="200,2000,4000,6000,8000,10000")
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--lease-tries", type=int, default=10)
    ap.add_argument("--clients", type=int, default=60000)
    ap.add_argument("--only", default="vmnode,kea,kea-mt,dnsmasq")
    ap.add_argument("--bin", default=os.path.join(os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target")),
                                                  "release/examples/dhcp_bench_server"))
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("run as root (namespaces)")
    need("perfdhcp", "kea-admin")
    need("kea-dhcp4", "kea-dhcp4-server")
    need("dnsmasq", "dnsmasq-base")
    need("busybox", "busybox-static")
    if not os.path.exists(args.bin):
        subprocess.run(["cargo", "build", "--release", "-p", "vmnode-network", "--example",
                        "dhcp_bench_server"], check=True, cwd=ROOT)
    workdir = tempfile.mkdtemp(prefix="vmnode-dhcp-bench-", dir="/var/tmp")
    env = dict(os.environ, KEA_LOCKFILE_DIR="none", KEA_PIDFILE_DIR=workdir)
    servers = {
        "vmnode": lambda: Server("vmnode", [args.bin, "--ns", SRV, "--bridge", "br0", "--leases",
                                            os.path.join(workdir, "vmnode.leases"), "--pool", "10.1.0.0/16"], workdir),
        "kea": lambda: Server("kea", ["kea-dhcp4", "-c", kea_config(workdir, 1)], workdir, env),
        "kea-mt": lambda: Server("kea-mt", ["kea-dhcp4", "-c", kea_config(workdir, 2)], workdir, env),
        "dnsmasq": lambda: Server("dnsmasq", [
            "dnsmasq", "--no-daemon", "--conf-file=/dev/null", "--port=0", "--no-ping", "--quiet-dhcp",
            "--interface=br0", "--bind-interfaces", "--dhcp-authoritative", "--user=root",
            "--pid-file=", "--dhcp-lease-max=70000",
            "--dhcp-range=10.1.0.10,10.1.255.250,255.255.0.0,1h",
            f"--dhcp-leasefile={os.path.join(workdir, 'dnsmasq.leases')}"], workdir),
    }
    rates = [int(r) for r in args.rates.split(",")]
    results, leases = {}, {}
    setup()
    try:
        for run in range(1, args.runs + 1):
            for name in args.only.split(","):
                srv = servers[name]()
                srv.start()
                try:
                    if args.lease_tries:
                        lt = link_up_to_lease(args.lease_tries)
                        leases.setdefault(name, []).extend(lt)
                        print(f"run {run} {name:8} link up -> lease: median {pct(lt, 50):.1f} ms, "
                              f"max {max(lt, default=float('nan')):.1f} ms ({len(lt)}/{args.lease_tries} leased)",
                              file=sys.stderr)
                    for rate in rates:
                        load = os.getloadavg()[0]
                        r = perfdhcp(rate, args.period, args.clients)
                        if r is None:
                            print(f"{name} @ {rate}/s: no statistics", file=sys.stderr)
                            continue
                        r["load"] = load
                        results.setdefault(name, []).append((run, rate, r))
                        print(f"run {run} {name:8} @ {rate:6}/s: {r['per_s']:8.0f} ACK/s, drops "
                              f"{r['drop_pct']:5.2f}%, D->O p50 {pct(r['delays'], 50):.3f} ms "
                              f"p99 {pct(r['delays'], 99):.3f} ms ({len(r['delays'])} timed, "
                              f"load {load:.1f})", file=sys.stderr)
                        with open(os.path.join(workdir, f"{name}-{run}-{rate}.txt"), "w") as f:
                            f.write(r["raw"])
                finally:
                    srv.stop()
    finally:
        teardown()
    print(f"\nraw perfdhcp output in {workdir}\n")
    print("| server | run | offered/s | 4-way exchanges/s | drops | DISCOVER->OFFER p50 | p99 | load |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    best = {}
    for name, rows in results.items():
        for run, rate, r in rows:
            print(f"| {name} | {run} | {rate} | {r['per_s']:.0f} | {r['drop_pct']:.2f}% | "
                  f"{pct(r['delays'], 50):.3f} ms | {pct(r['delays'], 99):.3f} ms | {r['load']:.1f} |")
            if r["drop_pct"] <= 1.0 and r["per_s"] > best.get(name, (0, None))[0]:
                best[name] = (r["per_s"], rate)
    print("\n| server | link up -> lease, median | max | leased |\n|---|---:|---:|---:|")
    for name, lt in leases.items():
        print(f"| {name} | {pct(lt, 50):.1f} ms | {max(lt, default=float('nan')):.1f} ms | {len(lt)} |")
    print("\nbest at <= 1% drops: " + ", ".join(f"{n} {v:.0f}/s (offered {rt}/s)" for n, (v, rt) in best.items()))
    for other in ("kea", "kea-mt", "dnsmasq"):
        if "vmnode" in best and other in best:
            print(f"vmnode / {other}: {best['vmnode'][0] / best[other][0]:.2f}x")


if __name__ == "__main__":
    main()
