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

use std::path::PathBuf;

use crate::doctor::Accel;

/// The fd number the tap is given in the QEMU process.
pub const TAP_FD: i32 = 3;

#[derive(Clone, Debug)]
pub struct DataDiskSpec {
    pub lun: u32,
    pub path: PathBuf,
    pub caching: String,
}

/// The QMP/`-blockdev`/`-device` arguments of a data disk; the same for boot and hot-plug.
pub fn data_disk_blockdev(d: &DataDiskSpec) -> (String, String, String) {
    let direct = if cache_mode(&d.caching) == "none" {
        "on"
    } else {
        "off"
    };
    (
        format!(
            "driver=file,node-name=dd{}-file,filename={},cache.direct={direct},discard=unmap",
            d.lun,
            d.path.display()
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
}

fn cache_mode(caching: &str) -> &'static str {
    match caching.to_ascii_lowercase().as_str() {
        "none" => "none",
        "readonly" => "writethrough",
        _ => "writeback",
    }
}

/// Builds the argument vector (without the binary).
pub fn build(s: &VmSpec) -> Vec<String> {
    let p = |p: &PathBuf| p.display().to_string();
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
    push(&["-machine", &format!("q35,accel={}", s.accel.qemu_name())]);
    push(&["-cpu", cpu]);
    push(&["-smp", &s.cpus.to_string()]);
    push(&["-m", &format!("{}M", s.memory_mb)]);
    if s.boot == Boot::Kernel {
        push(&[
            "-kernel",
            &p(&s.kernel),
            "-initrd",
            &p(&s.initrd),
            "-append",
            &s.cmdline,
        ]);
    }
    push(&["-device", "VGA,id=video0"]);
    push(&[
        "-chardev",
        &format!("file,id=serial0,path={},append=on", p(&s.serial_log)),
        "-serial",
        "chardev:serial0",
    ]);
    push(&[
        "-blockdev",
        &format!(
            "driver=file,node-name=osdisk-file,filename={},cache.direct={},discard=unmap",
            p(&s.disk),
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
    if let Some(t) = &s.temp_disk {
        push(&[
            "-blockdev",
            &format!(
                "driver=file,node-name=resdisk-file,filename={},discard=unmap",
                p(t)
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
    push(&[
        "-netdev",
        &format!("tap,id=net0,fd={TAP_FD}"),
        "-device",
        &format!(
            "virtio-net-pci,netdev=net0,mac={},id=nic0",
            s.mac.to_lowercase()
        ),
    ]);
    if let Some(seed) = &s.seed {
        push(&[
            "-blockdev",
            &format!(
                "driver=file,node-name=seed-file,filename={},read-only=on",
                p(seed)
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
        &format!(
            "socket,id=qga0,path={},server=on,wait=off",
            p(&s.qga_socket)
        ),
        "-device",
        "virtserialport,chardev=qga0,name=org.qemu.guest_agent.0",
    ]);
    push(&[
        "-qmp",
        &format!("unix:{},server=on,wait=off", p(&s.qmp_socket)),
    ]);
    push(&["-pidfile", &p(&s.pidfile)]);
    a
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
        }
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
        assert!(
            a.contains("filename=/state/local/x/cidata.iso,read-only=on"),
            "{a}"
        );
        // The serial console is the same spool either way.
        assert!(a.contains("path=/diag/serial.log,append=on"), "{a}");
        let k = build(&spec()).join(" ");
        assert!(
            k.contains("-kernel /img/vmlinux") && !k.contains("bootindex"),
            "{k}"
        );
    }

    #[test]
    fn argv_has_the_pieces() {
        let a = build(&spec()).join(" ");
        for want in [
            "-nodefaults",
            "q35,accel=tcg",
            "-cpu max",
            "-m 3584M",
            "-kernel /img/vmlinux",
            "fd=3",
            "mac=00:0d:3a:01:02:03",
            "path=/diag/serial.log,append=on",
            "-uuid 11111111-2222-3333-4444-555555555555",
            "name=org.qemu.guest_agent.0",
            "unix:/run/qmp.sock,server=on,wait=off",
            "VGA",
            "filename=/local/vm1/resource.raw",
            "serial=resource",
            "pcie-root-port,id=rp1,bus=pcie.0,chassis=2,slot=2",
            "serial=lun1,bus=rp1",
            "filename=/blobs/d1.vhd,cache.direct=on",
        ] {
            assert!(a.contains(want), "missing {want} in {a}");
        }
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
