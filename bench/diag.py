#!/usr/bin/env python3
"""Boot diagnostics benchmarks (issue 6), all three in the same run.

  sudo python3 bench/diag.py [--runs N] [--shots N] [--tails N] [--bin target/release/vmnode]

1. Screenshot (QMP screendump -> PPM -> BMP + PNG stored, screen text read, frame recorded): the
   daemon's own measure, `elapsed_us` on its `screenshot` debug line (VMNODE_LOG=vmnode=debug),
   for the automatic boot captures and for `vmnode vm boot-diagnostics screenshot` on a booted
   tiny VM; the CLI round-trip beside it for scale.
2. `GET .../bootDiagnostics/serialTail?cursor=C&max=65536` over the unix socket, keep-alive,
   following the returned cursor: a quiet guest, then a guest flooding its console (`yes` into
   /dev/ttyS0, started through the guest agent).
3. create request -> the guest's serial says `dhcp-bound` (the spool QEMU writes, read
   directly, as bench/run.py does), with the periodic boot screenshots on and off
   (VMNODE_BOOT_SCREENSHOTS=off; the daemon is restarted for each run), alternating.
Prints a Markdown table; paste it into docs/BENCHMARKS.md.
"""
import argparse, http.client, json, os, re, shutil, signal, socket, statistics, subprocess, sys, tempfile, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from run import Node, serial_file, vmnode_argv, wait_phases, wait_line, loadavg, procs_under  # noqa: E402

IMAGE = "vmnode:tiny:1:latest"


class UnixHTTP(http.client.HTTPConnection):
    def __init__(self, path):
        super().__init__("localhost")
        self.path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.connect(self.path)


def qga_exec(sock_path, argv):
    """guest-exec through the agent's socket (as tests/common guest_exec); returns its pid."""
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(20)
    s.connect(sock_path)
    f = s.makefile("rb")
    s.sendall(b"\xff")
    s.sendall(json.dumps({"execute": "guest-sync-delimited", "arguments": {"id": 4242}}).encode() + b"\n")
    def read(want):
        while True:
            line = f.readline().replace(b"\xff", b"")
            try:
                v = json.loads(line)
            except ValueError:
                continue
            if want(v):
                return v
    read(lambda v: v.get("return") == 4242)
    s.sendall(json.dumps({"execute": "guest-exec", "arguments": {"path": argv[0], "arg": argv[1:]}}).encode() + b"\n")
    v = read(lambda v: "return" in v or "error" in v)
    s.close()
    if "return" not in v:
        raise SystemExit(f"guest-exec failed: {v}")
    return v["return"]["pid"]


def elapsed(log, start, field="elapsed_us"):
    """`field` (elapsed_us: the whole capture; dump_us: the QMP screendump within it; store_us:
    PPM -> BMP + PNG) of the daemon's screenshot lines from byte `start` of its log, in ms."""
    with open(log, "rb") as f:
        f.seek(start)
        text = f.read().decode(errors="replace")
    lines = [l for l in text.splitlines() if re.search(r"screenshot w=\d+ h=\d+ elapsed_us=", l)]
    return [int(re.search(field + r"=(\d+)", l).group(1)) / 1000 for l in lines]


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=6, help="boots with screenshots on, and as many off")
    ap.add_argument("--shots", type=int, default=40, help="on-demand screenshots")
    ap.add_argument("--tails", type=int, default=300, help="serialTail calls, quiet and flooded")
    ap.add_argument("--bin", default="target/release/vmnode")
    args = ap.parse_args()
    binary = os.path.abspath(args.bin)
    root = tempfile.mkdtemp(prefix="vmnode-diagbench-")
    node = Node(binary, root)
    log = os.path.join(root, "daemon.log")
    base_env = dict(node.env, VMNODE_LOG="info,vmnode=debug")
    loads = [("start", loadavg())]
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())

    def restart(shots_on):
        node.stop()
        node.env = dict(base_env, VMNODE_BOOT_SCREENSHOTS="on" if shots_on else "off")
        node.start()

    def create(name):
        out = json.loads(node.cli("vm", "create", "-g", "diag", "-n", name, "--image", IMAGE,
                                  "--size", "Standard_B1s", "--ip-timeout", "0", "-o", "json"))
        vm_id = out["properties"]["vmId"]
        run_dir = os.path.join(node.run, "vms", vm_id)
        argv, _ = vmnode_argv(run_dir)
        return vm_id, run_dir, serial_file(argv)

    try:
        node.env = base_env
        node.cli("image", "build", "tiny")
        restart(True)
        node.cli("group", "create", "-n", "diag")

        # 3. create -> dhcp-bound, boot screenshots on / off, alternating. The automatic
        # captures of the "on" boots are figure 1's first half.
        boot = {True: [], False: []}
        auto_ms, auto_dump, auto_store = [], [], []
        for i in range(2 * args.runs):
            on = i % 4 in (0, 3)  # on, off, off, on, on, off, ...
            restart(on)
            mark = os.path.getsize(log)
            t0 = time.perf_counter()
            _, _, serial = create(f"b{i}")
            seen = wait_phases(serial, 0)
            boot[on].append(seen[b"dhcp-bound"] - t0)
            wait_line(serial, b"VMNODE-BOOT: ready", 0)
            time.sleep(1)  # the final screenshot of a booted guest
            shots = elapsed(log, mark)
            if on:
                auto_ms += shots
                auto_dump += elapsed(log, mark, "dump_us")
                auto_store += elapsed(log, mark, "store_us")
            elif shots:
                raise SystemExit(f"boot screenshots taken with VMNODE_BOOT_SCREENSHOTS=off: {shots}")
            node.cli("vm", "delete", "-g", "diag", "-n", f"b{i}", "--yes")
        loads.append(("after boots", loadavg()))

        # 1. on-demand screenshots of a booted tiny VM, daemon's measure and CLI round-trip.
        restart(True)
        vm_id, run_dir, serial = create("s")
        wait_line(serial, b"VMNODE-BOOT: ready", 0)
        time.sleep(4)  # past the boot's final automatic capture
        mark = os.path.getsize(log)
        cli_ms = []
        png = os.path.join(root, "shot.png")
        for _ in range(args.shots):
            t0 = time.perf_counter()
            node.cli("vm", "boot-diagnostics", "screenshot", "-g", "diag", "-n", "s", "--file", png)
            cli_ms.append((time.perf_counter() - t0) * 1000)
        demand_ms = elapsed(log, mark)
        demand_dump, demand_store = elapsed(log, mark, "dump_us"), elapsed(log, mark, "store_us")
        loads.append(("after screenshots", loadavg()))

        # 2. serialTail over the unix socket, keep-alive, following the cursor.
        token = open(os.path.join(node.state, "token")).read().strip()
        conn = UnixHTTP(os.path.join(node.run, "vmnode.sock"))
        hdr = {"Authorization": f"Bearer {token}"}

        def get(path):
            conn.request("GET", path, headers=hdr)
            r = conn.getresponse()
            body = r.read()
            if r.status != 200:
                raise SystemExit(f"GET {path}: {r.status} {body[:300]!r}")
            return json.loads(body)

        sub = get("/subscriptions")["value"][0]["subscriptionId"]
        vm = f"/subscriptions/{sub}/resourceGroups/diag/providers/Microsoft.Compute/virtualMachines/s"

        def tails(n):
            cursor, ms, got = 0, [], 0
            for _ in range(n):
                t0 = time.perf_counter()
                t = get(f"{vm}/bootDiagnostics/serialTail?cursor={cursor}&max=65536")
                ms.append((time.perf_counter() - t0) * 1000)
                cursor = t["cursor"]
                got += len(t["text"])
            return ms, got

        get(f"{vm}/bootDiagnostics/serialTail?cursor=0&max=65536")  # the connection made
        quiet_ms, quiet_bytes = tails(args.tails)
        qga_exec(os.path.join(run_dir, "qga.sock"), [
            "/bin/sh", "-c",
            "yes 'vmnode serial flood 0123456789 abcdefghijklmnopqrstuvwxyz' >/dev/ttyS0 2>/dev/null </dev/null &"])
        time.sleep(3)
        spool0 = os.path.getsize(serial)
        t_flood = time.perf_counter()
        flood_ms, flood_bytes = tails(args.tails)
        flood_s = time.perf_counter() - t_flood
        flood_rate = (os.path.getsize(serial) - spool0) / flood_s / 1024 if os.path.getsize(serial) >= spool0 else float("nan")
        conn.close()
        loads.append(("after tails", loadavg()))
        node.cli("vm", "delete", "-g", "diag", "-n", "s", "--yes")

        med = statistics.median
        rng = lambda xs: f"{med(xs):.3g} (p99 {pct(xs, 99):.3g}, {min(xs):.3g}-{max(xs):.3g}; n={len(xs)})"
        print(f"\nvmnode boot diagnostics, {started}, `{' '.join(sys.argv)}`; 1-minute load average: "
              + ", ".join(f"{k} {v}" for k, v in loads) + "\n")
        print("| measure | vmnode: median (p99, min-max; n) | goal |")
        print("|---|---|---|")
        ok = lambda c: "✓" if c else "✗"
        print(f"| screenshot, daemon-side (ms): automatic boot captures | {rng(auto_ms)} | ≤ 30 ms {ok(med(auto_ms) <= 30)} |")
        print(f"| screenshot, daemon-side (ms): on demand, booted VM | {rng(demand_ms)} | ≤ 30 ms {ok(med(demand_ms) <= 30)} |")
        print(f"| … of which QMP screendump (ms): automatic / on demand | {rng(auto_dump)} / {rng(demand_dump)} | – |")
        print(f"| … of which PPM → BMP + PNG stored (ms): automatic / on demand | {rng(auto_store)} / {rng(demand_store)} | – |")
        print(f"| screenshot, CLI round-trip incl. process start (ms) | {rng(cli_ms)} | – |")
        print(f"| serialTail cursor follow, quiet guest (ms) | {rng(quiet_ms)} ({quiet_bytes} chars) | ≤ 5 ms {ok(med(quiet_ms) <= 5)} |")
        print(f"| serialTail cursor follow, guest flooding (ms) | {rng(flood_ms)} ({flood_bytes} chars, spool grew {flood_rate:.0f} KiB/s) | ≤ 5 ms {ok(med(flood_ms) <= 5)} |")
        on_m, off_m = med(boot[True]), med(boot[False])
        fmt = lambda xs: f"{med(xs):.3g} ({min(xs):.3g}-{max(xs):.3g})"
        print(f"| create → `dhcp-bound` (s), boot screenshots on / off | {fmt(boot[True])} / {fmt(boot[False])}: "
              f"{on_m / off_m:.3f}× | ≤ 1.02× {ok(on_m / off_m <= 1.02)} |")
        print("\nper run (s): on " + ", ".join(f"{x:.2f}" for x in boot[True])
              + "; off " + ", ".join(f"{x:.2f}" for x in boot[False]))
    finally:
        node.stop()
        for pid in procs_under(root):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        subprocess.run(["ip", "netns", "del", node.netns], capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
