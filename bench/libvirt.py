#!/usr/bin/env python3
"""libvirt as a peer of vmnode in bench/run.py (issue 5).

A private libvirtd, started and stopped by the benchmark, that runs the same tiny guest as vmnode:
the same kernel, initrd, command line, OS and resource disk files, the same q35 machine under TCG
(domain type `qemu`), PVH direct kernel boot (`<os><kernel>`), and a NIC with the MAC of a NIC
vmnode knows, on a tap libvirt makes itself on vmnode's vnet bridge, so vmnode's DHCP responder
answers it exactly as it answers vmnode's own guest.

How libvirtd is run, so that nothing of the host is touched:
- only `libvirt-daemon`, `libvirt-daemon-driver-qemu`, `libvirt-clients` are installed
  (`apt-get install --no-install-recommends`; no `libvirt-daemon-system`, which depends on
  `libvirt-daemon-config-network`, the `default` NAT network on virbr0). The QEMU driver resolves
  its built-in user `libvirt-qemu` before it reads qemu.conf, so that system user must exist
  (libvirt-daemon-system's postinst would make it):
  `adduser --system --group --no-create-home --home /var/lib/libvirt --disabled-login libvirt-qemu`;
- it runs in a private mount namespace (`unshare -m`) where /etc/libvirt, /run/libvirt,
  /var/lib/libvirt, /var/cache/libvirt and /var/log/libvirt are bind mounts of directories under
  the benchmark's temp dir, and /dev is a copy without `kvm` (see `start`): the host's /dev/kvm
  is the paravirtual kvm_pvm; guests run under TCG (domain type `qemu`) as vmnode's do;
- it runs inside vmnode's network namespace (`ip netns exec`), so the taps it makes for
  `<interface type='bridge'>` land on vmnode's bridge and nothing it does reaches the host's
  network;
- qemu.conf: QEMU runs as root (as vmnode's does; the image files sit in a 0700 temp dir) and
  writes its stdout/stderr to a file instead of through virtlogd (which is not started here).
  Everything else is libvirt's default (cgroups, per-domain /dev namespace, seccomp sandbox).
- virsh reaches it from the host through the socket's path:
  `qemu:///system?socket=<dir>/run/libvirt-sock`.

  sudo python3 bench/libvirt.py --check   # start libvirtd, print its version, stop it
"""
import os, re, shutil, subprocess, sys, time
from xml.sax.saxutils import escape

# The host directories libvirtd (system mode) uses, each replaced by a private one.
DIRS = {"etc": "/etc/libvirt", "run": "/run/libvirt", "lib": "/var/lib/libvirt",
        "cache": "/var/cache/libvirt", "log": "/var/log/libvirt"}

QEMU_CONF = """\
# Written by bench/libvirt.py. QEMU runs as root like vmnode's (the images are in a 0700 dir);
# stdout/stderr go to a file rather than through virtlogd, which is not running here.
user = "root"
group = "root"
stdio_handler = "file"
"""

LIBVIRTD_CONF = """\
# Written by bench/libvirt.py: unix socket only, no auth beyond the socket's mode (root only).
listen_tls = 0
listen_tcp = 0
unix_sock_group = "root"
unix_sock_rw_perms = "0700"
auth_unix_ro = "none"
auth_unix_rw = "none"
log_outputs = "3:stderr"
"""


def parse_argv(argv):
    """The pieces of vmnode's QEMU argv (qemu.argv.json) that a libvirt domain needs."""
    spec = {"disks": []}
    for flag, val in zip(argv, argv[1:]):
        if flag == "-m":
            spec["memory_mib"] = int(val.rstrip("M"))
        elif flag == "-smp":
            spec["cpus"] = int(val.split(",")[0])
        elif flag == "-kernel":
            spec["kernel"] = val
        elif flag == "-initrd":
            spec["initrd"] = val
        elif flag == "-append":
            spec["cmdline"] = val
        elif flag == "-blockdev" and "driver=file" in val:
            kv = dict(p.split("=", 1) for p in val.split(",") if "=" in p)
            spec["disks"].append({"file": kv["filename"], "direct": kv.get("cache.direct") == "on"})
        elif flag == "-device" and val.startswith("virtio-net-pci"):
            spec["mac"] = re.search(r"mac=([0-9a-fA-F:]{17})", val).group(1)
        elif flag == "-machine":
            spec["machine"] = val.split(",")[0]
    return spec


def domain_xml(name, spec, serial_log, bridge):
    """A transient domain equal to vmnode's VM: q35/TCG, PVH direct boot, virtio disks, a virtio
    NIC on `bridge` with vmnode's MAC, serial console to a file, VGA, the guest agent channel.
    No USB controller and no balloon (vmnode's machine has neither)."""
    disks = []
    for i, d in enumerate(spec["disks"]):
        cache = "none" if d["direct"] else "writeback"
        disks.append(f"""    <disk type='file' device='disk'>
      <driver name='qemu' type='raw' cache='{cache}' discard='unmap'/>
      <source file='{escape(d["file"])}'/>
      <target dev='vd{chr(ord("a") + i)}' bus='virtio'/>
    </disk>""")
    disks = "\n".join(disks)
    return f"""<domain type='qemu'>
  <name>{escape(name)}</name>
  <memory unit='MiB'>{spec["memory_mib"]}</memory>
  <vcpu>{spec["cpus"]}</vcpu>
  <os>
    <type arch='x86_64' machine='{spec.get("machine", "q35")}'>hvm</type>
    <kernel>{escape(spec["kernel"])}</kernel>
    <initrd>{escape(spec["initrd"])}</initrd>
    <cmdline>{escape(spec["cmdline"])}</cmdline>
  </os>
  <features><acpi/></features>
  <cpu mode='maximum' check='none'/>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>restart</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
{disks}
    <interface type='bridge'>
      <source bridge='{escape(bridge)}'/>
      <mac address='{spec["mac"].lower()}'/>
      <model type='virtio'/>
    </interface>
    <serial type='file'>
      <source path='{escape(serial_log)}' append='on'/>
      <target port='0'/>
    </serial>
    <channel type='unix'>
      <target type='virtio' name='org.qemu.guest_agent.0'/>
    </channel>
    <video><model type='vga'/></video>
    <controller type='usb' model='none'/>
    <memballoon model='none'/>
  </devices>
</domain>
"""


class Libvirt:
    """A private libvirtd inside `netns`, with all its state under `root`/libvirt."""

    def __init__(self, root, netns):
        self.dir = os.path.join(root, "libvirt")
        self.netns = netns
        self.uri = f"qemu:///system?socket={self.dir}/run/libvirt-sock"
        self.proc = None
        self.made = []  # host mount points this run created (removed again at stop)

    def virsh(self, *a, check=True):
        r = subprocess.run(["virsh", "-q", "-c", self.uri, *a], capture_output=True, text=True)
        if check and r.returncode != 0:
            raise SystemExit(f"virsh {' '.join(a)}: {r.stderr.strip()}")
        return r.stdout

    def start(self, limit=120):
        """Starts libvirtd and waits until the QEMU driver has probed QEMU (not timed)."""
        if subprocess.run(["getent", "passwd", "libvirt-qemu"], capture_output=True).returncode != 0:
            raise SystemExit("libvirt needs the system user libvirt-qemu (see bench/libvirt.py)")
        for sub, host in DIRS.items():
            os.makedirs(os.path.join(self.dir, sub), exist_ok=True)
            if not os.path.isdir(host):
                os.makedirs(host)
                self.made.append(host)
        with open(os.path.join(self.dir, "etc", "qemu.conf"), "w") as f:
            f.write(QEMU_CONF)
        conf = os.path.join(self.dir, "etc", "libvirtd.conf")
        with open(conf, "w") as f:
            f.write(LIBVIRTD_CONF)
        binds = "".join(f"mount --bind {os.path.join(self.dir, sub)} {host}; " for sub, host in DIRS.items())
        # /dev without kvm: a copy of /dev on a tmpfs (device nodes re-made by `cp -a`; pts and
        # shm bound from the host's) moved over /dev. Masking /dev/kvm by binding /dev/null over
        # it is not enough: before every use of its cached QEMU capabilities libvirt checks
        # whether /dev/kvm has become usable (exists, R+W for QEMU's user); a mask says yes, the
        # capabilities (probed without KVM) say no, and libvirt re-probes QEMU (~2 s under TCG)
        # some twenty times per `virsh create` (~47 s). With no /dev/kvm at all, as on a host
        # without KVM, the cache holds.
        dev = os.path.join(self.dir, "dev")
        os.makedirs(dev, exist_ok=True)
        script = (f"set -e; mount -t tmpfs -o mode=755,nosuid vmnode-bench-dev {dev}; cp -a /dev/. {dev}/; "
                  f"rm -f {dev}/kvm; mount --rbind /dev/pts {dev}/pts; mount --rbind /dev/shm {dev}/shm; "
                  # The old /dev and its submounts go: libvirt moves every /dev/* mount it finds
                  # in /proc/mounts into each domain's own /dev, and hidden duplicates break that.
                  f"umount -R -l /dev; mount --move {dev} /dev; " + binds +
                  f"exec ip netns exec {self.netns} libvirtd -f {conf} --pid-file {self.dir}/run/libvirtd.pid")
        log = open(os.path.join(self.dir, "libvirtd.log"), "a")
        self.proc = subprocess.Popen(["unshare", "-m", "--propagation", "private", "sh", "-c", script],
                                     stdout=log, stderr=log)
        deadline = time.time() + limit
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"libvirtd exited ({self.proc.returncode}); see {self.dir}/libvirtd.log")
            if subprocess.run(["virsh", "-q", "-c", self.uri, "version"], capture_output=True).returncode == 0:
                # Forces the QEMU capability probe now, outside any timed window.
                # (The emulator must be named: by arch alone libvirt probes qemu-system-i386, and
                # the x86_64 probe, a few seconds under TCG, would fall into the first create.)
                self.virsh("domcapabilities", "--emulatorbin", "/usr/bin/qemu-system-x86_64",
                           "--virttype", "qemu", "--machine", "q35")
                return
            time.sleep(0.1)
        raise SystemExit("libvirtd did not answer")

    def version(self):
        return " ".join(self.virsh("version").split())

    def qemu_pid(self, name):
        try:
            return int(open(os.path.join(self.dir, "run", "qemu", f"{name}.pid")).read())
        except (OSError, ValueError):
            return None

    def tap(self, name):
        """The tap libvirt made for the domain's NIC (first column of `domiflist`)."""
        return self.virsh("domiflist", name).split()[0]

    def state(self, name):
        """`virsh domstate`; a transient domain that stopped is gone: reported as `shut off`."""
        r = subprocess.run(["virsh", "-q", "-c", self.uri, "domstate", name], capture_output=True, text=True)
        err = (r.stderr + r.stdout).lower()
        if r.returncode != 0 and ("not found" in err or "failed to get domain" in err):
            return "shut off"
        return r.stdout.strip()

    def stop(self):
        if self.proc is None:
            return
        if self.proc.poll() is None:
            for name in self.virsh("list", "--name", check=False).split():
                self.virsh("destroy", name, check=False)
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill(); self.proc.wait()
        self.proc = None
        for host in self.made:
            try:
                os.rmdir(host)
            except OSError:
                pass
        self.made = []


def check():
    """Starts libvirtd in a throwaway namespace, prints its version, stops it."""
    import tempfile
    root = tempfile.mkdtemp(prefix="vmnode-libvirt-")
    ns = f"vmnlv-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    lv = Libvirt(root, ns)
    try:
        t0 = time.perf_counter()
        lv.start()
        print(f"{lv.version()} (up and probed in {time.perf_counter() - t0:.1f} s)")
    finally:
        lv.stop()
        subprocess.run(["ip", "netns", "del", ns])
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    if "--check" in sys.argv:
        check()
    else:
        print(__doc__)
