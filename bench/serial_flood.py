#!/usr/bin/env python3
"""Serial flood (issue 9, R5): a guest floods its serial console for --seconds (default 600);
its boot log must stay within its bound (first MiB + marker + last MiB, compacted once it is
1 MiB past that: 3 MiB + marker) and the daemon's memory must stay flat.

  sudo python3 bench/serial_flood.py [--seconds 600] [--bin target/release/vmnode]

The flood: a busybox loop in the tiny guest, started by `vm run-command invoke` (through the
guest agent), `cat`ing /proc/cpuinfo and /proc/meminfo to /dev/ttyS0 as fast as the emulated
UART takes them. Every 10 s the script samples the daemon's RSS, the boot log's size, the spool
file's allocated bytes (the daemon punches out what it has read) and the bytes the guest has
written so far (the log's marker says how many were cut). Prints a Markdown table for
docs/RELIABILITY.md.
"""
import argparse, glob, json, os, re, statistics, sys, tempfile, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from run import Node, cleanup, loadavg  # noqa: E402

MARKER_LEN = len("\n[vmnode: " + " " * 20 + " bytes of serial output cut here; the first and last MiB of this boot are kept]\n")
BOUND = (3 << 20) + MARKER_LEN
MARK = re.compile(rb"\[vmnode: +(\d+) bytes of serial output cut here")


def rss_kib(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def log_state(path):
    """(file size, bytes of guest output it stands for)."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read((1 << 20) + 200)
    m = MARK.search(head)
    cut = int(m.group(1)) if m else 0
    return size, (size - MARKER_LEN + cut) if m else size


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=600)
    ap.add_argument("--bin", default="target/release/vmnode")
    args = ap.parse_args()
    root = tempfile.mkdtemp(prefix="vmnode-bench-flood-")
    node = Node(os.path.abspath(args.bin), root)
    loads = [loadavg()]
    try:
        node.cli("image", "build", "tiny")
        node.start()
        node.cli("group", "create", "-n", "flood")
        node.cli("vm", "create", "-g", "flood", "-n", "f1", "--image", "vmnode:tiny:1:latest", "-o", "json")
        # Let the guest settle: the boot's screenshots and agent probe are done.
        time.sleep(5)
        # The first boot's own log (the cloud-named `{vm}.{vmId}.serialconsole.log` is a link to it).
        logs = glob.glob(os.path.join(node.state, "**", "f1.*.boot1.serialconsole.log"), recursive=True)
        spools = glob.glob(os.path.join(node.state, "**", "serial.spool"), recursive=True, include_hidden=True)
        if not logs or not spools:
            sys.exit(f"cannot find the VM's serial log/spool under {node.state}: {logs} {spools}")
        log, spool = logs[0], spools[0]
        dpid = node.proc.pid
        script = (f"(end=$(( $(date +%s) + {args.seconds} )); while [ $(date +%s) -lt $end ]; do "
                  "cat /proc/cpuinfo /proc/meminfo > /dev/ttyS0; done) </dev/null >/dev/null 2>&1 &")
        node.cli("vm", "run-command", "invoke", "-g", "flood", "-n", "f1", "--command-id", "RunShellScript",
                 "--scripts", script)
        t0 = time.time()
        _, before = log_state(log)
        samples = []  # (t, rss KiB, log size, spool allocated, guest bytes)
        while time.time() - t0 < args.seconds + 5:
            time.sleep(10)
            size, total = log_state(log)
            st = os.stat(spool)
            samples.append((time.time() - t0, rss_kib(dpid), size, st.st_blocks * 512, total - before))
            print(f"[{samples[-1][0]:5.0f}s] daemon RSS {samples[-1][1] / 1024:.1f} MiB, log {size / 2**20:.2f} MiB, "
                  f"spool {samples[-1][3] / 2**20:.2f} MiB allocated, guest wrote {samples[-1][4] / 2**20:.1f} MiB",
                  file=sys.stderr, flush=True)
        loads.append(loadavg())
        rss = [s[1] for s in samples]
        # Memory after the first minute (allocator warm) vs the end: the slope per minute.
        warm = [s for s in samples if s[0] >= 60] or samples
        slope = (warm[-1][1] - warm[0][1]) / max(1e-9, (warm[-1][0] - warm[0][0]) / 60)
        wrote = samples[-1][4]
        print(f"\nRun {time.strftime('%Y-%m-%d %H:%M')} UTC; {os.cpu_count()} cores, TCG; binary {args.bin}; "
              f"1-minute load average: {', '.join(loads)}\n")
        print("| measure | result | goal |")
        print("|---|---|---|")
        print(f"| guest output during the flood ({args.seconds} s) | {wrote / 2**20:.1f} MiB "
              f"({wrote / 2**10 / args.seconds:.0f} KiB/s) | — |")
        print(f"| boot log size (max over {len(samples)} samples) | {max(s[2] for s in samples) / 2**20:.2f} MiB "
              f"(bound {BOUND / 2**20:.2f} MiB) | within its bound |")
        print(f"| spool file allocated (max) | {max(s[3] for s in samples) / 2**20:.2f} MiB | — |")
        print(f"| daemon RSS start / min / median / max / end | {rss[0] / 1024:.1f} / {min(rss) / 1024:.1f} / "
              f"{statistics.median(rss) / 1024:.1f} / {max(rss) / 1024:.1f} / {rss[-1] / 1024:.1f} MiB | flat |")
        print(f"| daemon RSS slope after the first minute | {slope:+.1f} KiB/min | flat |")
        ok = max(s[2] for s in samples) <= BOUND
        print(f"\nlog within bound: {ok}")
    finally:
        cleanup(node, root)


if __name__ == "__main__":
    main()
