//! The QEMU command line for a VM.
//!
//! A `-nodefaults` q35 machine; the uncompressed kernel is booted directly through its PVH entry
//! note (no bzImage decompression, which costs seconds under TCG); a virtio disk and NIC (the tap
//! arrives as an inherited fd); a VGA device for screenshots; the serial console written by QEMU
//! itself into the diagnostics store (capture does not depend on the daemon); a virtio-serial
//! channel for the guest agent; QMP on a unix socket in the VM's run dir.
//!
//! An image without a kernel (manifest `boot: "firmware"`) boots instead through SeaBIOS from
//! its OS disk (`bootindex=0`); `-nographic` makes SeaBIOS mirror its text output to the same
//! serial port, so the bootloader shows in the boot log before the kernel does. A cloud-init
//! image's NoCloud seed is a read-only virtio disk.
//!
//! Hardening (R3, see `jail.rs`): QEMU opens no path of the host itself. Every file arrives as
//! an fd at the number [`passed`] gives it: disks and the serial spool through `-add-fd` fd sets
//! (`/dev/fdset/N`, which QEMU dups with the flags it wants), the kernel and initrd as
//! `/proc/self/fd/N` (QEMU's loader `fopen`s a path), QMP and the guest agent as sockets the
//! daemon already listens on (`-chardev socket,fd=N,server=on`); the pidfile is the daemon's.
//! `-sandbox` installs QEMU's seccomp filter. There is no TCP monitor and no `-monitor`.

use std::path::PathBuf;

use super::jail::{Access, Passed, SANDBOX};
use crate::doctor::Accel;

/// The fd number the tap is given in the QEMU process.
pub const TAP_FD: i32 = 3;
/// The listening QMP socket.
pub const QMP_FD: i32 = 4;
/// The listening guest-agent socket.
pub const QGA_FD: i32 = 5;
/// The serial spool (write-only, append).
pub const SERIAL_FD: i32 = 6;
/// The first fd of the rest (kernel, initrd, disks), numbered in [`passed`]'s order.
const FIRST_FILE_FD: i32 = 7;
/// A data disk's fd set is this plus its LUN, at boot and at hot-plug alike, so a detach knows
/// which set to drop.
pub const DATA_DISK_SET_BASE: i32 = 1000;
/// The fd set a screendump's file is handed over in (QMP `add-fd`, then removed).
pub const SCREENDUMP_SET: i32 = 2000;

/// The fd set of a data disk.
pub fn data_disk_set(lun: u32) -> i32 {
    DATA_DISK_SET_BASE + lun as i32
}

#[derive(Clone, Debug)]
pub struct DataDiskSpec {
    pub lun: u32,
    pub path: PathBuf,
    pub caching: String,
}

/// The `-blockdev`/`-device` arguments of a data disk at boot (its file is fd set
/// [`data_disk_set`]).
pub fn data_disk_blockdev(d: &DataDiskSpec) -> (String, String, String) {
    let direct = if cache_mode(&d.caching) == "none" {
        "on"
    } else {
        "off"
    };
    (
        format!(
            "driver=file,node-name=dd{}-file,filename=/dev/fdset/{},cache.direct={direct},discard=unmap",
            d.lun,
            data_disk_set(d.lun)
        ),
        format!("driver=raw,node-name=dd{0},file=dd{0}-file", d.lun),
        format!(
            "virtio-blk-pci,drive=dd{0},id=dd{0}-dev,serial=lun{0},bus=rp{0}",
            d.lun
        ),
    )
}

/// How the guest starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Boot {
    /// The image's kernel and initrd, loaded by QEMU (PVH entry) with the image's command line.
    Kernel,
    /// Firmware (SeaBIOS) boots the OS disk; `kernel`, `initrd` and `cmdline` are unused.
    Firmware,
}

#[derive(Clone, Debug)]
pub struct VmSpec {
    pub name: String,
    pub vm_id: String,
    pub accel: Accel,
    pub cpus: u32,
    pub memory_mb: u64,
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    pub cmdline: String,
    pub disk: PathBuf,
    /// The temporary resource disk, if the size has one.
    pub temp_disk: Option<PathBuf>,
    /// Hot-plug slots (PCIe root ports), one per data-disk LUN the size allows.
    pub hotplug_slots: u32,
    /// Data disks attached at boot.
    pub data_disks: Vec<DataDiskSpec>,
    /// Azure caching mode: None, ReadOnly, ReadWrite.
    pub caching: String,
    pub mac: String,
    pub serial_log: PathBuf,
    pub qmp_socket: PathBuf,
    pub qga_socket: PathBuf,
    pub pidfile: PathBuf,
    pub boot: Boot,
    /// The cloud-init NoCloud seed (`cidata`), attached read-only.
    pub seed: Option<PathBuf>,
    /// A boot snapshot this QEMU makes or resumes (`vm/snapshot.rs`).
    pub snapshot: Option<Snapshot>,
}

/// What a QEMU does with a boot snapshot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Snapshot {
    /// Boots the snapshot's guest: `vmnode.template` on the kernel command line makes its init
    /// wait at the snapshot point, and its NIC is on no network (a hub port of its own).
    Make,
    /// Resumes the state saved in this file (`-incoming fd:N`) instead of booting.
    Resume(PathBuf),
}

fn cache_mode(caching: &str) -> &'static str {
    match caching.to_ascii_lowercase().as_str() {
        "none" => "none",
        "readonly" => "writethrough",
        _ => "writeback",
    }
}

/// What a passed file is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    Qmp,
    Qga,
    Serial,
    Kernel,
    Initrd,
    OsDisk,
    ResDisk,
    Seed,
    Data(u32),
    Snapshot,
}

fn files(s: &VmSpec) -> Vec<(Role, Passed)> {
    let mut out = vec![
        (Role::Qmp, QMP_FD, s.qmp_socket.clone(), Access::Listen),
        (Role::Qga, QGA_FD, s.qga_socket.clone(), Access::Listen),
        (
            Role::Serial,
            SERIAL_FD,
            s.serial_log.clone(),
            Access::Append,
        ),
    ];
    let mut next = FIRST_FILE_FD;
    let mut add = |role, path: &PathBuf, access| {
        out.push((role, next, path.clone(), access));
        next += 1;
    };
    if s.boot == Boot::Kernel {
        add(Role::Kernel, &s.kernel, Access::Reopen);
        add(Role::Initrd, &s.initrd, Access::Reopen);
    }
    add(Role::OsDisk, &s.disk, Access::ReadWrite);
    if let Some(t) = &s.temp_disk {
        add(Role::ResDisk, t, Access::ReadWrite);
    }
    if let Some(seed) = &s.seed {
        add(Role::Seed, seed, Access::Read);
    }
    for d in &s.data_disks {
        add(Role::Data(d.lun), &d.path, Access::ReadWrite);
    }
    if let Some(Snapshot::Resume(state)) = &s.snapshot {
        add(Role::Snapshot, state, Access::Read);
    }
    out.into_iter()
        .map(|(r, fd, path, access)| (r, Passed { fd, path, access }))
        .collect()
}

/// Every file QEMU gets as an fd (besides the tap, [`TAP_FD`]), at the numbers [`build`] uses.
pub fn passed(s: &VmSpec) -> Vec<Passed> {
    files(s).into_iter().map(|(_, p)| p).collect()
}

/// Builds the argument vector (without the binary).
pub fn build(s: &VmSpec) -> Vec<String> {
    let files = files(s);
    let fd = |role: Role| {
        files
            .iter()
            .find(|(r, _)| *r == role)
            .map(|(_, p)| p.fd)
            .unwrap_or(-1)
    };
    let cpu = match s.accel {
        Accel::Kvm => "host",
        Accel::Tcg => "max",
    };
    let mut a: Vec<String> = Vec::new();
    let mut push = |xs: &[&str]| a.extend(xs.iter().map(|x| x.to_string()));
    push(&[
        "-name",
        &format!(
            "guest={},process=vmnode-{},debug-threads=on",
            s.name, s.name
        ),
    ]);
    push(&["-uuid", &s.vm_id]);
    push(&["-nodefaults", "-no-user-config", "-nographic"]);
    push(&["-sandbox", SANDBOX]);
    // The fd sets (disks, the serial spool): one fd each; a data disk's set is numbered by LUN.
    for (role, p) in &files {
        let set = match role {
            Role::Data(lun) => data_disk_set(*lun),
            Role::Serial | Role::OsDisk | Role::ResDisk | Role::Seed => p.fd,
            Role::Qmp | Role::Qga | Role::Kernel | Role::Initrd | Role::Snapshot => continue,
        };
        push(&[
            "-add-fd",
            &format!("fd={},set={set},opaque={}", p.fd, opaque(*role)),
        ]);
    }
    push(&["-machine", &format!("q35,accel={}", s.accel.qemu_name())]);
    push(&["-cpu", cpu]);
    push(&["-smp", &s.cpus.to_string()]);
    push(&["-m", &format!("{}M", s.memory_mb)]);
    if s.boot == Boot::Kernel {
        push(&[
            "-kernel",
            &format!("/proc/self/fd/{}", fd(Role::Kernel)),
            "-initrd",
            &format!("/proc/self/fd/{}", fd(Role::Initrd)),
            "-append",
            &kernel_cmdline(s),
        ]);
    }
    push(&["-device", "VGA,id=video0"]);
    push(&[
        "-chardev",
        &format!(
            "file,id=serial0,path=/dev/fdset/{},append=on",
            fd(Role::Serial)
        ),
        "-serial",
        "chardev:serial0",
    ]);
    a.extend(disk_args(s, &fd));
    let mut push = |xs: &[&str]| a.extend(xs.iter().map(|x| x.to_string()));
    let netdev = match s.snapshot {
        Some(Snapshot::Make) => "hubport,id=net0,hubid=0".to_string(),
        _ => format!("tap,id=net0,fd={TAP_FD}"),
    };
    push(&[
        "-netdev",
        &netdev,
        "-device",
        &format!(
            "virtio-net-pci,netdev=net0,mac={},id=nic0",
            s.mac.to_lowercase()
        ),
    ]);
    if s.seed.is_some() {
        push(&[
            "-blockdev",
            &format!(
                "driver=file,node-name=seed-file,filename=/dev/fdset/{},read-only=on",
                fd(Role::Seed)
            ),
            "-blockdev",
            "driver=raw,node-name=seed,file=seed-file,read-only=on",
            "-device",
            "virtio-blk-pci,drive=seed,id=seed-dev,serial=cidata",
        ]);
    }
    push(&[
        "-device",
        "virtio-serial-pci,id=vser0",
        "-chardev",
        &format!("socket,id=qga0,fd={},server=on,wait=off", fd(Role::Qga)),
        "-device",
        "virtserialport,chardev=qga0,name=org.qemu.guest_agent.0",
    ]);
    push(&[
        "-chardev",
        &format!("socket,id=qmp0,fd={},server=on,wait=off", fd(Role::Qmp)),
        "-mon",
        "chardev=qmp0,mode=control",
    ]);
    // A new generation ID at every QEMU start: a guest resumed from a boot snapshot is told it
    // is a copy and reseeds its random number generator (Linux's vmgenid driver).
    push(&["-device", "vmgenid,id=vmgenid0"]);
    if let Some(Snapshot::Resume(_)) = &s.snapshot {
        push(&["-incoming", &format!("fd:{}", fd(Role::Snapshot))]);
    }
    a
}

/// The disks' part of the argument vector: the OS disk, the temp (resource) disk, the PCIe
/// root ports hot-plugged data disks go into, and the data disks there are at start.
fn disk_args(s: &VmSpec, fd: &dyn Fn(Role) -> i32) -> Vec<String> {
    let mut a: Vec<String> = Vec::new();
    let mut push = |xs: &[&str]| a.extend(xs.iter().map(|x| x.to_string()));
    push(&[
        "-blockdev",
        &format!(
            "driver=file,node-name=osdisk-file,filename=/dev/fdset/{},cache.direct={},discard=unmap",
            fd(Role::OsDisk),
            if cache_mode(&s.caching) == "none" {
                "on"
            } else {
                "off"
            }
        ),
        "-blockdev",
        &format!(
            "driver=raw,node-name=osdisk,file=osdisk-file,cache.no-flush={}",
            "off"
        ),
        "-device",
        &format!(
            "virtio-blk-pci,drive=osdisk,id=osdisk-dev,write-cache={}{}",
            if cache_mode(&s.caching) == "writethrough" {
                "off"
            } else {
                "on"
            },
            if s.boot == Boot::Firmware {
                ",bootindex=0"
            } else {
                ""
            }
        ),
    ]);
    if s.temp_disk.is_some() {
        push(&[
            "-blockdev",
            &format!(
                "driver=file,node-name=resdisk-file,filename=/dev/fdset/{},discard=unmap",
                fd(Role::ResDisk)
            ),
            "-blockdev",
            "driver=raw,node-name=resdisk,file=resdisk-file",
            "-device",
            "virtio-blk-pci,drive=resdisk,id=resdisk-dev,serial=resource",
        ]);
    }
    for i in 0..s.hotplug_slots {
        push(&[
            "-device",
            &format!(
                "pcie-root-port,id=rp{i},bus=pcie.0,chassis={},slot={}",
                i + 1,
                i + 1
            ),
        ]);
    }
    for d in &s.data_disks {
        let (file, raw, dev) = data_disk_blockdev(d);
        push(&["-blockdev", &file, "-blockdev", &raw, "-device", &dev]);
    }
    a
}

/// The image's kernel command line, plus `no_timer_check` under TCG: an emulated vCPU that the
/// host deschedules (twenty guests booting on two cores) can miss the kernel's early check that
/// the IO-APIC timer ticks, and the guest then panics with "IO-APIC + timer doesn't work!" (seen
/// in bench/load.py). Cloud images pass the same flag for the same reason.
fn kernel_cmdline(s: &VmSpec) -> String {
    let has = s.cmdline.split_whitespace().any(|w| w == "no_timer_check");
    let line = if s.accel == Accel::Tcg && !has {
        format!("{} no_timer_check", s.cmdline).trim().to_string()
    } else {
        s.cmdline.clone()
    };
    match s.snapshot {
        Some(Snapshot::Make) => format!("{line} vmnode.template"),
        _ => line,
    }
}

/// The `opaque` label of an fd set (shown by `query-fdsets`).
fn opaque(role: Role) -> String {
    match role {
        Role::Serial => "serial-spool".into(),
        Role::OsDisk => "osdisk".into(),
        Role::ResDisk => "resdisk".into(),
        Role::Seed => "seed".into(),
        Role::Data(lun) => format!("dd{lun}"),
        Role::Qmp => "qmp".into(),
        Role::Qga => "qga".into(),
        Role::Kernel => "kernel".into(),
        Role::Initrd => "initrd".into(),
        Role::Snapshot => "snapshot".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> VmSpec {
        VmSpec {
            name: "vm1".into(),
            vm_id: "11111111-2222-3333-4444-555555555555".into(),
            accel: Accel::Tcg,
            cpus: 1,
            memory_mb: 3584,
            kernel: "/img/vmlinux".into(),
            initrd: "/img/initrd.cpio".into(),
            cmdline: "console=ttyS0".into(),
            disk: "/blobs/vm1.vhd".into(),
            temp_disk: Some("/local/vm1/resource.raw".into()),
            hotplug_slots: 2,
            data_disks: vec![DataDiskSpec {
                lun: 1,
                path: "/blobs/d1.vhd".into(),
                caching: "None".into(),
            }],
            caching: "ReadWrite".into(),
            mac: "00:0D:3A:01:02:03".into(),
            serial_log: "/diag/serial.log".into(),
            qmp_socket: "/run/qmp.sock".into(),
            qga_socket: "/run/qga.sock".into(),
            pidfile: "/run/qemu.pid".into(),
            boot: Boot::Kernel,
            seed: None,
            snapshot: None,
        }
    }

    #[test]
    fn a_snapshot_is_made_off_the_network_and_resumed_from_its_fd() {
        let mut s = spec();
        s.snapshot = Some(Snapshot::Make);
        let a = build(&s);
        let i = a.iter().position(|x| x == "-append").unwrap();
        assert_eq!(a[i + 1], "console=ttyS0 no_timer_check vmnode.template");
        let t = a.join(" ");
        assert!(t.contains("-netdev hubport,id=net0,hubid=0"), "{t}");
        assert!(!t.contains("fd=3") && !t.contains("-incoming"), "{t}");
        s.snapshot = Some(Snapshot::Resume("/state/snapshots/k/state.bin".into()));
        let a = build(&s);
        let t = a.join(" ");
        // The state file comes after every other file, read-only.
        assert!(t.ends_with("-incoming fd:12"), "{t}");
        assert!(
            t.contains("tap,id=net0,fd=3") && !t.contains("vmnode.template"),
            "{t}"
        );
        let p = passed(&s).into_iter().find(|p| p.fd == 12).unwrap();
        assert_eq!(
            (p.path.to_str().unwrap(), p.access),
            ("/state/snapshots/k/state.bin", Access::Read)
        );
        assert!(build(&spec())
            .join(" ")
            .contains("-device vmgenid,id=vmgenid0"));
    }

    #[test]
    fn firmware_boot_has_no_kernel_and_boots_the_os_disk() {
        let mut s = spec();
        s.boot = Boot::Firmware;
        s.seed = Some("/state/local/x/cidata.iso".into());
        let a = build(&s).join(" ");
        assert!(!a.contains("-kernel") && !a.contains("-append"), "{a}");
        assert!(
            a.contains("id=osdisk-dev,write-cache=on,bootindex=0"),
            "{a}"
        );
        // No kernel fds: the OS disk is fd 7, the temp disk 8, the seed 9 (read-only).
        assert!(a.contains("filename=/dev/fdset/9,read-only=on"), "{a}");
        let seed = passed(&s).into_iter().find(|p| p.fd == 9).unwrap();
        assert_eq!(
            (seed.path.to_str().unwrap(), seed.access),
            ("/state/local/x/cidata.iso", Access::Read)
        );
        // The serial console is the same spool either way.
        assert!(a.contains("path=/dev/fdset/6,append=on"), "{a}");
        let k = build(&spec()).join(" ");
        assert!(
            k.contains("-kernel /proc/self/fd/7") && !k.contains("bootindex"),
            "{k}"
        );
    }

    #[test]
    fn tcg_guests_skip_the_timer_check_kvm_guests_keep_their_cmdline() {
        let append = |s: &VmSpec| {
            let a = build(s);
            let i = a.iter().position(|x| x == "-append").unwrap();
            a[i + 1].clone()
        };
        assert_eq!(append(&spec()), "console=ttyS0 no_timer_check");
        let mut s = spec();
        s.cmdline = "no_timer_check console=ttyS0".into();
        assert_eq!(append(&s), "no_timer_check console=ttyS0");
        s.accel = Accel::Kvm;
        s.cmdline = "console=ttyS0".into();
        assert_eq!(append(&s), "console=ttyS0");
    }

    #[test]
    fn argv_has_the_pieces() {
        let a = build(&spec()).join(" ");
        for want in [
            "-nodefaults",
            "q35,accel=tcg",
            "-cpu max",
            "-m 3584M",
            "-kernel /proc/self/fd/7",
            "-initrd /proc/self/fd/8",
            "fd=3",
            "mac=00:0d:3a:01:02:03",
            "path=/dev/fdset/6,append=on",
            "-add-fd fd=6,set=6,opaque=serial-spool",
            "-add-fd fd=9,set=9,opaque=osdisk",
            "-add-fd fd=11,set=1001,opaque=dd1",
            "-uuid 11111111-2222-3333-4444-555555555555",
            "name=org.qemu.guest_agent.0",
            "socket,id=qmp0,fd=4,server=on,wait=off",
            "-mon chardev=qmp0,mode=control",
            "socket,id=qga0,fd=5,server=on,wait=off",
            "VGA",
            "filename=/dev/fdset/10,discard=unmap",
            "serial=resource",
            "pcie-root-port,id=rp1,bus=pcie.0,chassis=2,slot=2",
            "serial=lun1,bus=rp1",
            "filename=/dev/fdset/1001,cache.direct=on",
            "-sandbox on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny",
        ] {
            assert!(a.contains(want), "missing {want} in {a}");
        }
    }

    #[test]
    fn qemu_opens_no_path_and_has_no_tcp_monitor() {
        let s = spec();
        let a = build(&s);
        let text = a.join(" ");
        // Every host path of the spec reaches QEMU only as an fd.
        for p in [
            "/img/vmlinux",
            "/img/initrd.cpio",
            "/blobs/vm1.vhd",
            "/local/vm1/resource.raw",
            "/blobs/d1.vhd",
            "/diag/serial.log",
            "/run/qmp.sock",
            "/run/qga.sock",
            "/run/qemu.pid",
        ] {
            assert!(!text.contains(p), "{p} in {text}");
        }
        for bad in [
            "tcp:",
            "telnet",
            "-monitor",
            "host=",
            "port=",
            "-runas",
            "-daemonize",
        ] {
            assert!(!text.contains(bad), "{bad} in {text}");
        }
        let p = passed(&s);
        let fds: Vec<i32> = p.iter().map(|p| p.fd).collect();
        assert_eq!(fds, (4..=11).collect::<Vec<_>>());
        let by = |path: &str| p.iter().find(|x| x.path.to_str() == Some(path)).unwrap();
        assert_eq!(by("/run/qmp.sock").access, Access::Listen);
        assert_eq!(by("/diag/serial.log").access, Access::Append);
        assert_eq!(by("/blobs/d1.vhd").access, Access::ReadWrite);
        assert_eq!(by("/img/vmlinux").access, Access::Reopen);
    }

    #[test]
    fn kvm_uses_host_cpu_and_caching_maps() {
        let mut s = spec();
        s.accel = Accel::Kvm;
        s.caching = "None".into();
        let a = build(&s).join(" ");
        assert!(a.contains("accel=kvm") && a.contains("-cpu host"));
        assert!(a.contains("cache.direct=on"));
    }
}
