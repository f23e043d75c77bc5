#!/usr/bin/env python3
"""debian-12 under TCG: create → login prompt on serial, and → guest agent answers, for vmnode,
for the same QEMU argv started by hand, and for libvirt (`virsh create`, same files) — measured
in the same run, alternating, each boot on a fresh sparse copy of the image's disk (a first boot:
ssh host keys and machine-id are made then, for every peer alike). Issue 7.

  sudo python3 bench/debian.py [--runs 3] [--bin target/release/vmnode] [--no-libvirt]

"Login" = ` login:` on ttyS0 (getty); "agent" = qemu-guest-agent answers guest-sync (vmnode and
raw QEMU: the VM's qga socket, probed from outside; libvirt: `virsh qemu-agent-command
guest-ping`, since libvirt owns that socket). Prints a Markdown table for docs/BENCHMARKS.md.
"""
import argparse, json, os, re, shutil, signal, socket, statistics, subprocess, sys, tempfile, threading, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import libvirt  # noqa: E402
from run import Node, cleanup, loadavg, serial_file, sh, vmnode_argv  # noqa: E402

URN = "vmnode:debian:12:latest"


def qga_probe(path, stop):
    """Time (perf_counter) at which the agent on the unix socket `path` first answers a sync."""
    while not stop.is_set():
        try:
            c = socket.socket(socket.AF_UNIX)
            c.settimeout(1.0)
            c.connect(path)
            c.sendall(b'\xff{"execute":"guest-sync-delimited","arguments":{"id":4242}}\n')
            buf = b""
            while b"4242" not in buf:
                chunk = c.recv(4096)
                if not chunk:
                    break
                buf += chunk
            c.close()
            if b"4242" in buf:
                return time.perf_counter()
        except OSError:
            pass
        time.sleep(0.05)
    return None


def virsh_probe(lv, dom, stop):
    while not stop.is_set():
        r = subprocess.run(["virsh", "-q", "-c", lv.uri, "qemu-agent-command", dom, "--timeout", "1",
                            '{"execute":"guest-ping"}'], capture_output=True)
        if r.returncode == 0:
            return time.perf_counter()
        time.sleep(0.05)
    return None


def boot(serial, probe, limit=300):
    """Waits for ` login:` on `serial` while `probe()` waits for the agent; returns both times."""
    out = {}
    stop = threading.Event()
    t = threading.Thread(target=lambda: out.__setitem__("agent", probe(stop)))
    t.start()
    deadline = time.time() + limit
    try:
        while time.time() < deadline:
            try:
                with open(serial, "rb") as f:
                    if b" login:" in f.read():
                        out["login"] = time.perf_counter()
                        break
            except FileNotFoundError:
                pass
            time.sleep(0.01)
        else:
            raise SystemExit(f"no login prompt in {serial} within {limit}s")
        t.join(limit)
    finally:
        stop.set()
        t.join()
    if out.get("agent") is None:
        raise SystemExit("the guest agent never answered")
    return out["login"], out["agent"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--bin", default="target/release/vmnode")
    ap.add_argument("--no-libvirt", action="store_true")
    ap.add_argument("--screenshots", choices=["on", "off"], default="on",
                    help="vmnode's boot screenshots (VMNODE_BOOT_SCREENSHOTS), to see what they cost")
    args = ap.parse_args()
    root = tempfile.mkdtemp(prefix="vmnode-bench-deb-")
    node = Node(os.path.abspath(args.bin), root)
    node.env["VMNODE_BOOT_SCREENSHOTS"] = args.screenshots
    lv = None
    res = {"vmnode": [], "raw QEMU": [], "libvirt": []}
    loads = [loadavg()]
    try:
        node.cli("image", "build", "debian-12")
        versions = os.path.join(node.state, "images", "vmnode", "debian", "12")
        latest = sorted(os.listdir(versions), key=lambda v: [int(x) for x in v.split(".")])[-1]
        image_disk = os.path.join(versions, latest, "disk.raw")
        node.start()
        node.cli("group", "create", "-n", "bench")
        if not args.no_libvirt and shutil.which("virsh"):
            lv = libvirt.Libvirt(root, node.netns)
            lv.start()
        for i in range(args.runs):
            name = f"d{i}"
            t0 = time.perf_counter()
            out = json.loads(node.cli("vm", "create", "-g", "bench", "-n", name, "--image", URN,
                                      "--size", "Standard_B1s", "--ip-timeout", "0", "-o", "json"))
            run_dir = os.path.join(node.run, "vms", out["properties"]["vmId"])
            argv, pid = vmnode_argv(run_dir)
            login, agent = boot(serial_file(argv), lambda s: qga_probe(os.path.join(run_dir, "qga.sock"), s))
            res["vmnode"].append((login - t0, agent - t0))
            # vmnode's QEMU goes (the VM and its NIC stay, so DHCP still knows the MAC).
            os.kill(pid, signal.SIGKILL)
            while os.path.exists(f"/proc/{pid}"):
                time.sleep(0.01)
            # The same argv by hand, on a fresh copy of the image's disk.
            os_disk = next(re.search(r"filename=([^,]+)", a).group(1) for a in argv
                           if a.startswith("driver=file") and "node-name=osdisk-file" in a)
            fresh = os.path.join(root, f"{name}-raw.disk")
            sh("cp", "--sparse=always", image_disk, fresh)
            tap = f"vd{i}{os.getpid() % 10000}"
            sh("ip", "-n", node.netns, "tuntap", "add", "dev", tap, "mode", "tap", "vnet_hdr")
            sh("ip", "-n", node.netns, "link", "set", tap, "master", "vnbr0", "up")
            raw_dir = run_dir + "-raw"
            os.makedirs(raw_dir, exist_ok=True)
            raw_serial = os.path.join(root, f"raw-{name}.serial.log")
            rargv = [a.replace("fd=3", f"ifname={tap},script=no,downscript=no")
                      .replace(os_disk, fresh).replace(run_dir, raw_dir)
                      .replace(f"path={serial_file(argv)},", f"path={raw_serial},") for a in argv]
            t0 = time.perf_counter()
            raw = subprocess.Popen(["ip", "netns", "exec", node.netns, "qemu-system-x86_64", *rargv],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            login, agent = boot(raw_serial, lambda s: qga_probe(os.path.join(raw_dir, "qga.sock"), s))
            res["raw QEMU"].append((login - t0, agent - t0))
            raw.kill(); raw.wait()
            sh("ip", "-n", node.netns, "link", "del", tap)
            if lv:
                sh("cp", "--sparse=always", image_disk, fresh)
                dom = f"lv-{name}"
                lv_serial = os.path.join(root, f"{dom}.serial.log")
                spec = libvirt.parse_argv(rargv)
                xml = os.path.join(root, f"{dom}.xml")
                with open(xml, "w") as f:
                    f.write(libvirt.domain_xml(dom, spec, lv_serial, "vnbr0"))
                t0 = time.perf_counter()
                lv.virsh("create", xml)
                login, agent = boot(lv_serial, lambda s: virsh_probe(lv, dom, s))
                res["libvirt"].append((login - t0, agent - t0))
                lv.virsh("destroy", dom)
            os.unlink(fresh)
            node.cli("vm", "delete", "-g", "bench", "-n", name, "--yes")
            loads.append(loadavg())
        lv_version = lv.version() if lv else None
        med = statistics.median
        rng = lambda xs: f"{med(xs):.1f} ({min(xs):.1f}-{max(xs):.1f})"
        qemu = sh("qemu-system-x86_64", "--version").splitlines()[0]
        print(f"\nRun {time.strftime('%Y-%m-%d %H:%M')} UTC, {args.runs} runs each, alternating, median (min-max) s; "
              f"{qemu}; {os.cpu_count()} cores, TCG; 1-minute load average after each round: {', '.join(loads)}"
              + (f"; libvirt: {lv_version}" if lv_version else "") + "\n")
        print("| debian-12, create/start → | vmnode | raw QEMU, same argv | libvirt, same files | vmnode ÷ raw | vmnode ÷ libvirt |")
        print("|---|---|---|---|---|---|")
        for k, label in [(0, "login prompt on ttyS0"), (1, "guest agent answers")]:
            v = [x[k] for x in res["vmnode"]]
            r = [x[k] for x in res["raw QEMU"]]
            l = [x[k] for x in res["libvirt"]]
            print(f"| {label} | {rng(v)} | {rng(r)} | {rng(l) if l else '–'} | {med(v)/med(r):.3f}× | "
                  + (f"{med(v)/med(l):.3f}× |" if l else "– |"))
        print(f"\nPer round (vmnode / raw / libvirt, login s; boot screenshots {args.screenshots}): "
              + "; ".join(" / ".join(f"{res[w][i][0]:.1f}" for w in res if len(res[w]) > i)
                          for i in range(args.runs)))
    finally:
        cleanup(node, root, lv)


if __name__ == "__main__":
    main()
