#!/usr/bin/env python3
"""vmnode benchmarks, each measured beside its peer in the same run.

  sudo python3 bench/run.py [--runs N] [--bin target/release/vmnode]

1. create request -> guest holds its DHCP lease, vs the same QEMU argv started by hand
   (same kernel, initrd, disk, MAC, tap on the same bridge, same DHCP responder).
   "Holds its lease" = the guest's udhcpc script printed `dhcp-bound` on the serial console.
2. create request -> QEMU spawned (the daemon's own measure, `since_request_us`), vs the cost
   of fork+exec of the same QEMU binary by hand (the floor any manager pays).
3. daemon cold start: exec of `vmnode serve` -> first API answer, on an existing state dir.
Prints a Markdown table; paste it into docs/BENCHMARKS.md.
"""
import argparse, json, os, re, shutil, signal, socket, statistics, subprocess, sys, tempfile, time

def sh(*a, **kw):
    return subprocess.run(a, check=True, capture_output=True, text=True, **kw).stdout

class Node:
    def __init__(self, binary, root):
        self.bin, self.root = binary, root
        self.state, self.run = os.path.join(root, "state"), os.path.join(root, "run")
        self.netns = f"vmnb-{os.getpid()}"
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0)); self.port = s.getsockname()[1]
        self.env = dict(os.environ, VMNODE_STATE_DIR=self.state, VMNODE_RUN_DIR=self.run)
        self.proc = None
    def cli(self, *a):
        return subprocess.run([self.bin, *a], env=self.env, check=True, capture_output=True, text=True).stdout
    def start(self):
        t0 = time.perf_counter()
        log = open(os.path.join(self.root, "daemon.log"), "a")
        self.proc = subprocess.Popen([self.bin, "serve", "--netns", self.netns, "--listen", f"127.0.0.1:{self.port}", "--host-netns", "off"],
                                     env=self.env, stdout=log, stderr=log)
        sock = os.path.join(self.run, "vmnode.sock")
        while True:
            if os.path.exists(sock):
                try:
                    c = socket.socket(socket.AF_UNIX); c.connect(sock)
                    c.sendall(b"GET /vmnode/v1/node HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " +
                              open(os.path.join(self.state, "token")).read().strip().encode() + b"\r\nConnection: close\r\n\r\n")
                    if c.recv(64).startswith(b"HTTP/1.1 200"):
                        c.close(); return time.perf_counter() - t0
                    c.close()
                except OSError:
                    pass
            time.sleep(0.001)
    def stop(self):
        if self.proc:
            self.proc.send_signal(signal.SIGTERM); self.proc.wait(); self.proc = None

def wait_line(path, needle, offset, limit=120):
    deadline = time.time() + limit
    while time.time() < deadline:
        try:
            with open(path, "rb") as f:
                f.seek(offset)
                if needle in f.read():
                    return time.perf_counter()
        except FileNotFoundError:
            pass
        time.sleep(0.005)
    raise SystemExit(f"timeout waiting for {needle!r} in {path}")

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--bin", default="target/release/vmnode")
    args = ap.parse_args()
    binary = os.path.abspath(args.bin)
    root = tempfile.mkdtemp(prefix="vmnode-bench-")
    node = Node(binary, root)
    try:
        node.cli("image", "build", "tiny")
        node.start()
        node.cli("group", "create", "-n", "bench")
        lease_vmnode, lease_raw, spawn_us, fork_exec = [], [], [], []
        for i in range(args.runs):
            name = f"b{i}"
            t0 = time.perf_counter()
            out = json.loads(node.cli("vm", "create", "-g", "bench", "-n", name, "--image", "vmnode:tiny:1:latest",
                                      "--size", "Standard_B1s", "--ip-timeout", "0", "-o", "json"))
            vm_id = out["properties"]["vmId"]
            serial = [p for p in sh("find", node.state, "-name", f"*{vm_id}.serialconsole.log").split() if p][0]
            t1 = wait_line(serial, b"VMNODE-BOOT: dhcp-bound", 0)
            lease_vmnode.append(t1 - t0)
            m = re.findall(r"since_request_us=(\d+)", open(os.path.join(root, "daemon.log")).read())
            spawn_us.append(int(m[-1]))
            # The peer: kill vmnode's QEMU, start the same argv by hand (tap by name, same bridge).
            run_dir = os.path.join(node.run, "vms", vm_id)
            argv = json.load(open(os.path.join(run_dir, "qemu.argv.json")))
            pid = int(open(os.path.join(run_dir, "qemu.pid")).read())
            os.kill(pid, signal.SIGKILL)
            while os.path.exists(f"/proc/{pid}"):
                time.sleep(0.01)
            tap = f"vb{i}{os.getpid() % 10000}"
            sh("ip", "-n", node.netns, "tuntap", "add", "dev", tap, "mode", "tap", "vnet_hdr")
            sh("ip", "-n", node.netns, "link", "set", tap, "master", "vnbr0", "up")
            argv = [a.replace("fd=3", f"ifname={tap},script=no,downscript=no") for a in argv]
            argv = [a.replace(run_dir, run_dir + "-raw") for a in argv]
            os.makedirs(run_dir + "-raw", exist_ok=True)
            offset = os.path.getsize(serial)
            t0 = time.perf_counter()
            raw = subprocess.Popen(["ip", "netns", "exec", node.netns, "qemu-system-x86_64", *argv],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            t1 = wait_line(serial, b"VMNODE-BOOT: dhcp-bound", offset)
            lease_raw.append(t1 - t0)
            raw.kill(); raw.wait()
            sh("ip", "-n", node.netns, "link", "del", tap)
            t0 = time.perf_counter()
            subprocess.run(["qemu-system-x86_64", "--version"], capture_output=True)
            fork_exec.append(time.perf_counter() - t0)
            node.cli("vm", "delete", "-g", "bench", "-n", name, "--yes")
        # Guest poweroff -> everything freed (QEMU gone, tap gone, the VM shown stopped).
        freed = []
        for i in range(args.runs):
            name = f"p{i}"
            out = json.loads(node.cli("vm", "create", "-g", "bench", "-n", name, "--image", "vmnode:tiny:1:latest",
                                      "--size", "Standard_B1s", "-o", "json"))
            vm_id = out["properties"]["vmId"]
            serial = [p for p in sh("find", node.state, "-name", f"*{vm_id}.serialconsole.log").split() if p][0]
            wait_line(serial, b"VMNODE-BOOT: ready", 0)
            tap = json.loads(node.cli("network", "nic", "show", "-g", "bench", "-n", f"{name}VMNic", "-o", "json"))["properties"]["tapName"]
            pid = int(open(os.path.join(node.run, "vms", vm_id, "qemu.pid")).read())
            qga = os.path.join(node.run, "vms", vm_id, "qga.sock")
            c = socket.socket(socket.AF_UNIX); c.connect(qga)
            c.sendall(b'\xff{"execute":"guest-sync-delimited","arguments":{"id":1}}\n')
            c.sendall(b'{"execute":"guest-exec","arguments":{"path":"/bin/poweroff","arg":["-f"]}}\n')
            # t0: QEMU's exit (the guest's poweroff reached the hypervisor).
            while os.path.exists(f"/proc/{pid}") and not open(f"/proc/{pid}/stat").read().split(") ")[1].startswith("Z"):
                time.sleep(0.0005)
            t0 = time.perf_counter()
            while True:
                vm = json.loads(node.cli("vm", "show", "-g", "bench", "-n", name, "-o", "json"))
                links = sh("ip", "-n", node.netns, "-o", "link")
                if vm["powerState"] == "VM stopped" and tap not in links:
                    break
                time.sleep(0.002)
            freed.append(time.perf_counter() - t0)
            c.close()
            node.cli("vm", "delete", "-g", "bench", "-n", name, "--yes")
        # 30 tiny VMs running at once; the daemon's resident memory.
        many = 30
        t0 = time.perf_counter()
        for i in range(many):
            node.cli("vm", "create", "-g", "bench", "-n", f"m{i}", "--image", "vmnode:tiny:1:latest",
                     "--size", "Standard_B1s", "--ip-timeout", "0")
        create_all = time.perf_counter() - t0
        running = sum(1 for v in json.loads(node.cli("vm", "list", "-o", "json")) if v["powerState"] == "VM running")
        rss_kib = int([l for l in open(f"/proc/{node.proc.pid}/status") if l.startswith("VmRSS")][0].split()[1])
        qemu_rss = 0
        for d in os.listdir("/proc"):
            if d.isdigit():
                try:
                    if root in open(f"/proc/{d}/cmdline").read() and "qemu-system" in open(f"/proc/{d}/cmdline").read():
                        qemu_rss += int([l for l in open(f"/proc/{d}/status") if l.startswith("VmRSS")][0].split()[1])
                except OSError:
                    pass
        for i in range(many):
            node.cli("vm", "delete", "-g", "bench", "-n", f"m{i}", "--yes", "--no-wait")
        time.sleep(3)
        node.stop()
        cold = []
        for _ in range(args.runs):
            cold.append(node.start()); node.stop()
        med = statistics.median
        qemu = sh("qemu-system-x86_64", "--version").splitlines()[0]
        print(f"\nRun {time.strftime('%Y-%m-%d %H:%M')} UTC, {args.runs} runs each, median (min-max); {qemu}; "
              f"{os.cpu_count()} cores\n")
        print("| measure | vmnode | peer (same run) | ratio | goal |")
        print("|---|---|---|---|---|")
        rng = lambda xs, f=1: f"{med(xs)*f:.3g} ({min(xs)*f:.3g}-{max(xs)*f:.3g})"
        print(f"| create request → guest holds DHCP lease (s) | {rng(lease_vmnode)} | raw QEMU, same argv: {rng(lease_raw)} | "
              f"{med(lease_vmnode)/med(lease_raw):.3f}× | ≤ 1.05× |")
        print(f"| create request → QEMU spawned (ms) | {rng([u/1000 for u in spawn_us])} | fork+exec of QEMU alone: {rng(fork_exec, 1000)} | – | ≤ 20 ms |")
        print(f"| daemon cold start → API answers (ms) | {rng(cold, 1000)} | – | – | ≤ 100 ms |")
        print(f"| guest poweroff (QEMU exit) → VM stopped, tap gone (ms) | {rng(freed, 1000)} | – | – | ≤ 200 ms |")
        print(f"| {many} tiny VMs running at once: daemon RSS (MiB) | {rss_kib/1024:.1f} ({running}/{many} running; created in {create_all:.1f} s; all QEMUs {qemu_rss/1024:.0f} MiB) | – | – | ≤ 40 MiB |")
    finally:
        node.stop()
        subprocess.run(["pkill", "-9", "-f", root], capture_output=True)
        subprocess.run(["ip", "netns", "del", node.netns], capture_output=True)
        shutil.rmtree(root, ignore_errors=True)

if __name__ == "__main__":
    main()
