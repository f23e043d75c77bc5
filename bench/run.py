#!/usr/bin/env python3
"""vmnode benchmarks, each measured beside its peer in the same run.

  sudo python3 bench/run.py [--runs N] [--bin target/release/vmnode]

1. create request -> guest holds its DHCP lease, vs the same QEMU argv started by hand
   (same kernel, initrd, disk, MAC, tap on the same bridge, same DHCP responder). vmnode's VMs
   resume the shape's boot snapshot (made in a warm-up first); the peers boot cold, as they
   would (`--serve-arg=--boot-snapshots=off` boots vmnode's cold too).
   "Holds its lease" = the guest's udhcpc script printed `dhcp-bound` on the serial console.
2. create request -> QEMU spawned (the daemon's own measure, `since_request_us`), vs the cost
   of fork+exec of the same QEMU binary by hand (the floor any manager pays).
3. daemon cold start: exec of `vmnode serve` -> first API answer, on an existing state dir.
4. guest poweroff -> everything freed (QEMU gone, tap gone, VM shown stopped).
5. 30 tiny VMs at once: the daemon's RSS.
libvirt (bench/libvirt.py: a private libvirtd in vmnode's network namespace, TCG, the same files,
machine and MAC) is measured beside vmnode in 1 and 4, in the same iterations, when virsh and
libvirtd are installed (`--no-libvirt` skips it).
Prints a Markdown table; paste it into docs/BENCHMARKS.md.
"""
import argparse, json, os, re, shutil, signal, socket, statistics, subprocess, sys, tempfile, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import libvirt  # noqa: E402  (bench/libvirt.py)

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
        self.serve_extra = []  # more `vmnode serve` arguments
    def cli(self, *a):
        return subprocess.run([self.bin, *a], env=self.env, check=True, capture_output=True, text=True).stdout
    def start(self):
        t0 = time.perf_counter()
        log = open(os.path.join(self.root, "daemon.log"), "a")
        self.proc = subprocess.Popen([self.bin, "serve", "--netns", self.netns, "--listen", f"127.0.0.1:{self.port}", "--host-netns", "off", *self.serve_extra],
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

def gone(pid):
    """The process has exited (gone or a zombie)."""
    try:
        return open(f"/proc/{pid}/stat").read().split(") ")[1].startswith("Z")
    except (OSError, IndexError):
        return True

def serial_file(argv):
    """The file QEMU itself writes the serial console to (`-chardev file,id=serial0,path=…`): the
    VM's spool, which the daemon then copies into the boot diagnostics. Read directly, so the
    guest's milestones are timed as QEMU writes them, not when the daemon publishes them."""
    for a in argv:
        if a.startswith("file,") and "id=serial0" in a:
            return re.search(r"path=([^,]+)", a).group(1)
    raise SystemExit("no serial chardev in the VM's argv")

def by_path(argv, pid, sock_dir):
    """vmnode's QEMU argv names no file: every one is passed as an fd (src/qemu/jail.rs). This is
    the same command with paths, for a QEMU started by hand: `-add-fd` sets and /proc/self/fd/N
    resolved through /proc/PID/fd of vmnode's QEMU (call it while that one runs), the QMP and
    guest-agent sockets as paths in `sock_dir` (`qmp.sock`, `qga.sock`). The tap stays `fd=3`
    (callers give theirs by name)."""
    path_of = lambda n: os.readlink(f"/proc/{pid}/fd/{n}")
    # QEMU dups an fd set's file and closes the number it was passed at: each set is found among
    # the files QEMU holds by what its `opaque` label says it is.
    held = [os.readlink(f"/proc/{pid}/fd/{n}") for n in os.listdir(f"/proc/{pid}/fd")]
    looks = {"serial-spool": lambda t: t.endswith("/serial.spool"),
             "osdisk": lambda t: "/vhds/" in t and "osdisk" in t,
             "resdisk": lambda t: t.endswith("/resource.raw"),
             "seed": lambda t: t.endswith("/cidata.iso")}
    sets = {}
    for flag, val in zip(argv, argv[1:]):
        if flag == "-add-fd":
            kv = dict(p.split("=", 1) for p in val.split(","))
            hits = [t for t in held if looks.get(kv["opaque"], lambda t: False)(t)]
            if not hits:
                raise SystemExit(f"cannot find the file of fd set {val} among QEMU's: {held}")
            sets[kv["set"]] = hits[0]
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
            continue
        if a == "-add-fd":
            skip = True
            continue
        a = re.sub(r"/dev/fdset/(\d+)", lambda m: sets[m.group(1)], a)
        a = re.sub(r"/proc/self/fd/(\d+)", lambda m: path_of(m.group(1)), a)
        m = re.match(r"socket,id=(qmp|qga)0,fd=\d+,(.*)", a)
        if m:
            a = f"socket,id={m.group(1)}0,path={os.path.join(sock_dir, m.group(1) + '.sock')},{m.group(2)}"
        out.append(a)
    return out

def without_incoming(argv):
    """The argv without `-incoming fd:N` (a VM resumed from a boot snapshot)."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == "-incoming":
            skip = True
        else:
            out.append(a)
    return out

def snapshot_files(node):
    d = os.path.join(node.state, "snapshots")
    if not os.path.isdir(d):
        return []
    return [os.path.join(d, k, "state.bin") for k in os.listdir(d)
            if not k.startswith(".") and os.path.isfile(os.path.join(d, k, "state.bin"))]

def warm_up(node, limit=400):
    """Creates one VM of the bench's shape and waits for the node to make its boot snapshot
    (vmnode does so after the first VM of a shape has booted); deletes the VM. Seconds taken."""
    t0 = time.perf_counter()
    node.cli("vm", "create", "-g", "bench", "-n", "warmup", "--image", "vmnode:tiny:1:latest",
             "--size", "Standard_B1s", "-o", "json")
    while not snapshot_files(node):
        if time.perf_counter() - t0 > limit:
            raise SystemExit("no boot snapshot was made: see daemon.log")
        time.sleep(0.2)
    took = time.perf_counter() - t0
    node.cli("vm", "delete", "-g", "bench", "-n", "warmup", "--yes")
    return took

def vmnode_argv(run_dir):
    """The running VM's QEMU argv with paths (see `by_path`) and its pid."""
    pid = int(open(os.path.join(run_dir, "qemu.pid")).read())
    argv = json.load(open(os.path.join(run_dir, "qemu.argv.json")))
    return by_path(argv, pid, run_dir), pid

def serial_has(path, needle):
    try:
        with open(path, "rb") as f:
            return needle in f.read()
    except FileNotFoundError:
        return False

def loadavg():
    return open("/proc/loadavg").read().split()[0]

def procs_under(root):
    """Pids whose command line mentions this run's temp dir (libvirtd, hand-started QEMUs) or
    that hold a file in it (vmnode's QEMUs name no path: their files are passed as fds) — to end
    by id."""
    pids = []
    for d in os.listdir("/proc"):
        if d.isdigit() and int(d) != os.getpid():
            try:
                if root in open(f"/proc/{d}/cmdline").read():
                    pids.append(int(d))
                    continue
                for fd in os.listdir(f"/proc/{d}/fd"):
                    if os.readlink(f"/proc/{d}/fd/{fd}").startswith(root):
                        pids.append(int(d))
                        break
            except OSError:
                pass
    return pids

POWER_DOWN = b"reboot: Power down"  # the guest kernel's last line before the ACPI poweroff

def watch_teardown(serial, pid, tap, netns, stopped, limit=60):
    """After a guest poweroff: when the guest kernel printed "Power down", when QEMU exited (gone
    or a zombie), when the tap left the namespace, when the manager said stopped (`stopped()`).
    perf_counter instants. The console and /proc are read every millisecond; the tap and the
    manager (each a command: `ip`, the manager's CLI) only from the power-down on, back to back."""
    t = {}
    deadline = time.time() + limit
    last_slow = 0.0
    while len(t) < 4:
        if time.time() > deadline:
            raise SystemExit(f"teardown not finished: {t}")
        now = time.perf_counter()
        if "down" not in t and serial_has(serial, POWER_DOWN):
            t["down"] = now
        if "exit" not in t and gone(pid):
            t["exit"] = now
            t.setdefault("down", now)  # (the console line can trail the exit by a poll)
        # Until QEMU has exited the slow checks run every 10 ms, so its exit is seen to the ms.
        if "down" in t and ("exit" in t or now - last_slow > 0.01):
            last_slow = now
            if "tap" not in t and tap not in sh("ip", "-n", netns, "-o", "link"):
                t["tap"] = time.perf_counter()
            if "stopped" not in t and stopped():
                t["stopped"] = time.perf_counter()
        time.sleep(0.001)
    return t

PHASES = [b"init", b"dhcp-start", b"dhcp-bound"]

def wait_phases(path, offset, limit=120):
    """Waits for `dhcp-bound` on the serial log, noting when each of PHASES first appeared."""
    seen, deadline = {}, time.time() + limit
    while time.time() < deadline:
        try:
            with open(path, "rb") as f:
                f.seek(offset)
                text = f.read()
        except FileNotFoundError:
            text = b""
        now = time.perf_counter()
        for p in PHASES + [b"resumed"]:
            if p not in seen and b"VMNODE-BOOT: " + p in text:
                seen[p] = now
        if b"dhcp-bound" in seen:
            return seen
        time.sleep(0.005)
    raise SystemExit(f"timeout waiting for dhcp-bound in {path}")

REST = 4.0  # --rest

def settle(quiet=0.5, limit=5.0):
    """Waits until the host has been idle for `quiet` seconds (at most `limit`): each boot is
    timed from a quiet machine, not in the tail of the previous peer's teardown (a killed QEMU's
    clean-up, a deleted VM's disk, libvirt's daemons)."""
    def busy():
        f = open("/proc/stat").readline().split()[1:]
        return sum(int(x) for i, x in enumerate(f) if i not in (3, 4)), sum(int(x) for x in f)
    deadline, since = time.time() + limit, time.time()
    b0, t0 = busy()
    while time.time() < deadline:
        time.sleep(0.1)
        b1, t1 = busy()
        if t1 > t0 and (b1 - b0) / (t1 - t0) > 0.2:
            since = time.time()
        b0, t0 = b1, t1
        if time.time() - since >= quiet:
            break
    # The same memory for every peer: on a host that hands free memory back to its hypervisor
    # (virtio-balloon free page reporting, 2 s after it is freed), a QEMU started right after
    # another one died gets that one's still-mapped pages, and one started later gets pages
    # the hypervisor must fault in again (~2.5 us a page here). Without the rest, whichever
    # peer boots right after a kill boots faster.
    time.sleep(REST)

def phases(t0, seen):
    """(t0 -> init, init -> dhcp-start, dhcp-start -> dhcp-bound) in seconds; for a guest
    resumed from a boot snapshot, whose log begins with the snapshot's boot, `resumed` takes
    `init`'s place."""
    marks = [b"resumed" if b"resumed" in seen else b"init", *PHASES[1:]]
    ts = [t0] + [seen.get(p, seen[b"dhcp-bound"]) for p in marks]
    return tuple(b - a for a, b in zip(ts, ts[1:]))

def main():
    global REST
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--bin", default="target/release/vmnode")
    ap.add_argument("--serve-arg", action="append", default=[], metavar="ARG",
                    help="one more `vmnode serve` argument (repeatable), e.g. --serve-arg=--daemon-cpu-weight=0")
    ap.add_argument("--rest", type=float, default=4.0,
                    help="seconds of rest before each boot, after the host is quiet (default 4: "
                         "freed memory has gone back to the hypervisor, the same for every peer)")
    ap.add_argument("--no-libvirt", action="store_true", help="skip the libvirt peer")
    ap.add_argument("--only", default="lease,poweroff,many,cold",
                    help="comma-separated sections: lease, poweroff, many, cold")
    args = ap.parse_args()
    REST = args.rest
    only = set(args.only.split(","))
    binary = os.path.abspath(args.bin)
    root = tempfile.mkdtemp(prefix="vmnode-bench-")
    node = Node(binary, root)
    node.serve_extra += args.serve_arg
    lv = None
    loads = [loadavg()]
    try:
        node.cli("image", "build", "tiny")
        node.start()
        node.cli("group", "create", "-n", "bench")
        if not args.no_libvirt and shutil.which("virsh") and shutil.which("libvirtd"):
            lv = libvirt.Libvirt(root, node.netns)
            lv.start()
        lease_vmnode, lease_raw, lease_lv, spawn_us, fork_exec = [], [], [], [], []
        split = {"vmnode": [], "raw QEMU": [], "libvirt": []}
        resumed = []
        if "lease" in only and not any("boot-snapshots" in a and "off" in a for a in node.serve_extra):
            print(f"boot snapshot of the bench's shape: {warm_up(node):.1f} s (a first VM boots, then the node makes it)",
                  file=sys.stderr)
        for i in range(args.runs if "lease" in only else 0):
            name = f"b{i}"
            settle()
            t0 = time.perf_counter()
            out = json.loads(node.cli("vm", "create", "-g", "bench", "-n", name, "--image", "vmnode:tiny:1:latest",
                                      "--size", "Standard_B1s", "--ip-timeout", "0", "-o", "json"))
            vm_id = out["properties"]["vmId"]
            run_dir = os.path.join(node.run, "vms", vm_id)
            argv, pid = vmnode_argv(run_dir)
            serial = serial_file(argv)
            seen = wait_phases(serial, 0)
            lease_vmnode.append(seen[b"dhcp-bound"] - t0)
            # The peers boot what vmnode's QEMU would boot without its boot snapshot.
            resumed.append("-incoming" in argv)
            argv = without_incoming(argv)
            split["vmnode"].append(phases(t0, seen))
            m = re.findall(r"since_request_us=(\d+)", open(os.path.join(root, "daemon.log")).read())
            spawn_us.append(int(m[-1]))
            # The peer: kill vmnode's QEMU, start the same argv by hand (tap by name, same bridge,
            # its own serial file).
            os.kill(pid, signal.SIGKILL)
            while os.path.exists(f"/proc/{pid}"):
                time.sleep(0.01)
            tap = f"vb{i}{os.getpid() % 10000}"
            sh("ip", "-n", node.netns, "tuntap", "add", "dev", tap, "mode", "tap", "vnet_hdr")
            sh("ip", "-n", node.netns, "link", "set", tap, "master", "vnbr0", "up")
            argv = [a.replace("fd=3", f"ifname={tap},script=no,downscript=no") for a in argv]
            raw_serial = os.path.join(root, f"raw-{name}.serial.log")
            argv = [a.replace(run_dir, run_dir + "-raw").replace(f"path={serial},", f"path={raw_serial},")
                    for a in argv]
            os.makedirs(run_dir + "-raw", exist_ok=True)
            settle()
            t0 = time.perf_counter()
            raw = subprocess.Popen(["ip", "netns", "exec", node.netns, "qemu-system-x86_64", *argv],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            seen = wait_phases(raw_serial, 0)
            lease_raw.append(seen[b"dhcp-bound"] - t0)
            split["raw QEMU"].append(phases(t0, seen))
            raw.kill(); raw.wait()
            sh("ip", "-n", node.netns, "link", "del", tap)
            if lv:
                # The libvirt peer: the same kernel, initrd, disks, MAC and bridge, `virsh create`.
                lv_serial = os.path.join(root, f"lv-{name}.serial.log")
                xml = os.path.join(root, f"lv-{name}.xml")
                with open(xml, "w") as f:
                    f.write(libvirt.domain_xml(f"lv-{name}", libvirt.parse_argv(argv), lv_serial, "vnbr0"))
                settle()
                t0 = time.perf_counter()
                lv.virsh("create", xml)
                seen = wait_phases(lv_serial, 0)
                lease_lv.append(seen[b"dhcp-bound"] - t0)
                split["libvirt"].append(phases(t0, seen))
                lv.virsh("destroy", f"lv-{name}")
            t0 = time.perf_counter()
            subprocess.run(["qemu-system-x86_64", "--version"], capture_output=True)
            fork_exec.append(time.perf_counter() - t0)
            node.cli("vm", "delete", "-g", "bench", "-n", name, "--yes")
        loads.append(loadavg())
        # Guest poweroff -> everything freed (QEMU gone, tap gone, the VM shown stopped).
        # freed: from QEMU's exit, vmnode's own measure since issue 2. Beside libvirt the common
        # t0 is the guest kernel's "Power down" console line: libvirt runs QEMU with -no-shutdown
        # and SIGTERMs it itself after the guest's SHUTDOWN event, so QEMU's exit is in the middle
        # of libvirt's teardown, not before it.
        freed, td = [], {"vmnode": [], "libvirt": []}
        for i in range(args.runs if "poweroff" in only else 0):
            name = f"p{i}"
            out = json.loads(node.cli("vm", "create", "-g", "bench", "-n", name, "--image", "vmnode:tiny:1:latest",
                                      "--size", "Standard_B1s", "-o", "json"))
            vm_id = out["properties"]["vmId"]
            argv, pid = vmnode_argv(os.path.join(node.run, "vms", vm_id))
            serial = serial_file(argv)
            wait_line(serial, b"VMNODE-BOOT: ready", 0)
            tap = json.loads(node.cli("network", "nic", "show", "-g", "bench", "-n", f"{name}VMNic", "-o", "json"))["properties"]["tapName"]
            qga = os.path.join(node.run, "vms", vm_id, "qga.sock")
            c = socket.socket(socket.AF_UNIX); c.connect(qga)
            c.sendall(b'\xff{"execute":"guest-sync-delimited","arguments":{"id":1}}\n')
            c.sendall(b'{"execute":"guest-exec","arguments":{"path":"/bin/poweroff","arg":["-f"]}}\n')
            t = watch_teardown(serial, pid, tap, node.netns, lambda: json.loads(
                node.cli("vm", "show", "-g", "bench", "-n", name, "-o", "json"))["powerState"] == "VM stopped")
            td["vmnode"].append(t)
            freed.append(max(t["tap"], t["stopped"]) - t["exit"])
            c.close()
            if lv:
                # The same guest under libvirt, powered off the same way (guest-exec through the
                # agent, which libvirt owns: `virsh qemu-agent-command`).
                dom = f"lvp-{i}"
                lv_serial = os.path.join(root, f"{dom}.serial.log")
                xml = os.path.join(root, f"{dom}.xml")
                with open(xml, "w") as f:
                    f.write(libvirt.domain_xml(dom, libvirt.parse_argv(argv), lv_serial, "vnbr0"))
                lv.virsh("create", xml)
                wait_line(lv_serial, b"VMNODE-BOOT: ready", 0)
                lv_tap, lv_pid = lv.tap(dom), lv.qemu_pid(dom)
                deadline = time.time() + 30
                while True:  # the agent answers once libvirt has connected to its channel
                    r = subprocess.run(["virsh", "-q", "-c", lv.uri, "qemu-agent-command", dom,
                                        '{"execute":"guest-exec","arguments":{"path":"/bin/poweroff","arg":["-f"]}}'],
                                       capture_output=True, text=True)
                    if r.returncode == 0 or time.time() > deadline:
                        break
                    time.sleep(0.05)
                td["libvirt"].append(watch_teardown(lv_serial, lv_pid, lv_tap, node.netns,
                                                    lambda: lv.state(dom) == "shut off"))
            node.cli("vm", "delete", "-g", "bench", "-n", name, "--yes")
        loads.append(loadavg())
        # 30 tiny VMs running at once; the daemon's resident memory.
        many = 30 if "many" in only else 0
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
                    # The daemon's QEMU children (their argv names no path of the run any more:
                    # files are handed over as fds, and their command name is vmnode-<vm>).
                    ppid = int(open(f"/proc/{d}/stat").read().rsplit(")", 1)[1].split()[1])
                    if ppid == node.proc.pid and "qemu-system" in open(f"/proc/{d}/cmdline").read():
                        qemu_rss += int([l for l in open(f"/proc/{d}/status") if l.startswith("VmRSS")][0].split()[1])
                except OSError:
                    pass
        for i in range(many):
            node.cli("vm", "delete", "-g", "bench", "-n", f"m{i}", "--yes", "--no-wait")
        if many:
            time.sleep(3)
        loads.append(loadavg())
        lv_version = lv.version() if lv else None
        if lv:
            lv.stop()
        node.stop()
        cold = []
        for _ in range(args.runs if "cold" in only else 0):
            cold.append(node.start()); node.stop()
        med = statistics.median
        qemu = sh("qemu-system-x86_64", "--version").splitlines()[0]
        print(f"\nRun {time.strftime('%Y-%m-%d %H:%M')} UTC, {args.runs} runs each, median (min-max); {qemu}; "
              f"{os.cpu_count()} cores; 1-minute load average at each section's start/end: {', '.join(loads)}"
              + (f"; libvirt: {lv_version}" if lv_version else "") + "\n")
        if lease_vmnode:
            how = ("resumed from its boot snapshot" if all(resumed) else
                   "booted cold" if not any(resumed) else f"{sum(resumed)}/{len(resumed)} resumed")
            print(f"vmnode's VMs in the lease rows: {how}; the peers boot the same argv cold.\n")
        print("| measure | vmnode | peer (same run) | ratio | goal |")
        print("|---|---|---|---|---|")
        rng = lambda xs, f=1: f"{med(xs)*f:.3g} ({min(xs)*f:.3g}-{max(xs)*f:.3g})" if xs else "–"
        if lease_vmnode:
            print(f"| create request → guest holds DHCP lease (s) | {rng(lease_vmnode)} | raw QEMU, same argv: {rng(lease_raw)} | "
                  f"{med(lease_vmnode)/med(lease_raw):.3f}× | ≤ 1.05× |")
            if lease_lv:
                print(f"| create request → guest holds DHCP lease (s) | {rng(lease_vmnode)} | libvirt `virsh create`, same files: {rng(lease_lv)} | "
                      f"{med(lease_vmnode)/med(lease_lv):.3f}× | ≤ 0.6× |")
            print(f"| create request → QEMU spawned (ms) | {rng([u/1000 for u in spawn_us])} | fork+exec of QEMU alone: {rng(fork_exec, 1000)} | – | ≤ 20 ms |")
        if cold:
            print(f"| daemon cold start → API answers (ms) | {rng(cold, 1000)} | – | – | ≤ 100 ms |")
        if freed:
            print(f"| guest poweroff (QEMU exit) → VM stopped, tap gone (ms) | {rng(freed, 1000)} | – | – | ≤ 200 ms |")
            span = lambda ts, *ks: [max(t[k] for k in ks) - t["down"] for t in ts]
            for who, ts in td.items():
                if ts:
                    print(f"<!-- {who} teardown, ms after \"Power down\" (exit/tap/stopped): " + "; ".join(
                        "/".join(f"{(t[k] - t['down']) * 1000:.0f}" for k in ("exit", "tap", "stopped")) for t in ts) + " -->")
            for label, ks in [("all freed: QEMU exited, tap gone, VM stopped", ("exit", "tap", "stopped")),
                              ("VM shown stopped and tap gone", ("tap", "stopped")),
                              ("QEMU exited", ("exit",))]:
                a, b = span(td["vmnode"], *ks), span(td["libvirt"], *ks)
                print(f"| guest \"Power down\" → {label} (ms) | {rng(a, 1000)} | "
                      + (f"libvirt: {rng(b, 1000)} | {med(a)/med(b):.3f}×" if b else "– | –")
                      + (" | ≤ 200 ms (libvirt ~1.8 s) |" if ks[0] == "exit" and len(ks) == 3 else " | – |"))
        if many:
            print(f"| {many} tiny VMs running at once: daemon RSS (MiB) | {rss_kib/1024:.1f} ({running}/{many} running; created in {create_all:.1f} s; all QEMUs {qemu_rss/1024:.0f} MiB) | – | – | ≤ 40 MiB |")
        if lease_vmnode:
            print("\ncreate → lease, split by the guest's serial milestones (median s): "
                  "start → `init` (manager + QEMU + kernel; for a resumed guest `resumed`: manager + QEMU + state load + identity) / `init` → `dhcp-start` (guest userland) / "
                  "`dhcp-start` → `dhcp-bound` (DHCP exchange)\n")
            for who, xs in split.items():
                if xs:
                    print(f"- {who}: " + " / ".join(f"{med([x[k] for x in xs]):.2f}" for k in range(3)))
    finally:
        cleanup(node, root, lv)


def cleanup(node, root, lv=None):
    """Ends everything a run started (libvirtd, the daemon, any process under `root`), removes
    its namespace and its temp dir."""
    if lv:
        lv.stop()
    node.stop()
    for pid in procs_under(root):  # anything of this run still alive, by pid
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    subprocess.run(["ip", "netns", "del", node.netns], capture_output=True)
    shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
