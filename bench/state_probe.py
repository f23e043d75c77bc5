#!/usr/bin/env python3
"""What the state dir check costs (src/storage/health.rs): the `statvfs` it makes at every request
and the probe write it trusts for a second, a one-byte unnamed temp file (`O_TMPFILE`, as
`tempfile::tempfile_in` makes it on Linux), each timed on its own.

    python3 bench/state_probe.py [--dir DIR] [--runs 2000]

DIR defaults to the system's temp dir; give the state dir's filesystem to measure that one.
Prints the filesystem, then p50 / p99 / max of each step in µs. Needs no root.
"""

import argparse
import os
import statistics
import subprocess
import tempfile
import time


def timed(f, runs):
    """`runs` times of `f()`, in µs."""
    out = []
    for _ in range(runs):
        t = time.perf_counter_ns()
        f()
        out.append((time.perf_counter_ns() - t) / 1000)
    return out


def probe_write(d):
    fd = os.open(d, os.O_TMPFILE | os.O_WRONLY, 0o600)
    try:
        os.write(fd, b"v")
    finally:
        os.close(fd)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", default=tempfile.gettempdir())
    ap.add_argument("--runs", type=int, default=2000)
    a = ap.parse_args()
    fs = subprocess.run(["findmnt", "-n", "-o", "FSTYPE,OPTIONS", "--target", a.dir],
                        capture_output=True, text=True).stdout.strip()
    print(f"{a.dir} ({fs}), {a.runs} runs each, load average {os.getloadavg()[0]:.1f}, "
          f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    print("| step | p50 µs | p99 µs | max µs |\n|---|---:|---:|---:|")
    for name, f in [("statvfs", lambda: os.statvfs(a.dir)),
                    ("one-byte O_TMPFILE write", lambda: probe_write(a.dir))]:
        xs = sorted(timed(f, a.runs))
        p99 = xs[min(len(xs) - 1, int(0.99 * len(xs)))]
        print(f"| {name} | {statistics.median(xs):.1f} | {p99:.1f} | {xs[-1]:.1f} |")


if __name__ == "__main__":
    main()
