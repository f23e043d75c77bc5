#!/bin/bash
# Recipe for the `vmnode:debian:12` guest image: Debian 12 (bookworm) from Debian's own packages.
#
#   build.sh OUT_DIR DEB_CACHE_DIR [WORK_DIR]
#
# Produces in OUT_DIR:
#   vmlinux       the Debian kernel decompressed to its ELF form, booted through its PVH entry
#                 note (no bzImage self-decompression: seconds under TCG)
#   initrd.cpio   an initramfs-tools initramfs (zstd) with only the modules a vmnode VM needs to
#                 find its root (MODULES=list: virtio_pci, virtio_blk, ext4 and the bochs display)
#   disk.raw      a sparse GPT raw disk; partition 1 is a FAT boot partition with SYSLINUX
#                 (mkfs.vfat --offset, mcopy, syslinux --offset, gptmbr.bin in the MBR) so the
#                 disk also boots through firmware (SeaBIOS); partition 2 is the ext4 root, made
#                 by `mke2fs -d` at its offset (no loop device, nothing mounted)
#   kernel.txt    the kernel release
#
# VARIANT=cloudinit (set by images/debian-12-cloudinit/build.sh) makes the `12-cloudinit` sku from
# the same recipe: the cloud-init package configured for the NoCloud datasource only (the VM's
# `cidata` seed sets host name, user and keys; DHCP leaves the host name alone).
#
# WORK_DIR (default: DEB_CACHE_DIR/../work/debian-12) keeps the debootstrap tree between builds:
# a re-run reuses an intact tree, and the .debs are kept in DEB_CACHE_DIR/bookworm, so even a
# fresh tree downloads nothing twice. Every step prints a `step N/8:` line.
#
# debootstrap mounts /proc and /sys inside its target while packages configure; it runs in a
# private mount namespace (`unshare -m`), so no mount is ever visible outside the build or left
# behind by a killed one. The disk itself is never mounted.
set -euo pipefail

OUT=${1:?usage: build.sh OUT_DIR DEB_CACHE_DIR [WORK_DIR]}
DEBS=${2:?usage: build.sh OUT_DIR DEB_CACHE_DIR [WORK_DIR]}
WORK=${3:-$(dirname "$DEBS")/work/debian-12}
HERE=$(cd "$(dirname "$0")" && pwd)
SUITE=bookworm
DISK_MIB=4096     # the image's virtual size; a VM's OS disk grows sparse to its own size
PART_START=2048   # sectors: partition 1 at 1 MiB
# Fixed ids: the kernel command line in images/catalog.json names the root by its PARTUUID
# (robust whatever order the virtio disks probe in). Every VM gets its own copy of the disk.
PARTUUID=6a8f0d1e-5b2c-4e7a-9c3d-0d3b1e2f4a51
FSUUID=3c1f2b9e-8d4a-4f6b-a1e2-7c5d9e0f1b23
# What is installed, beyond --variant=minbase. isc-dhcp-client + ifupdown: the DHCP client of a
# Debian 12 install; its dhclient-script sets the host name from DHCP option 12 with no D-Bus or
# polkit (systemd-networkd cannot), and it writes resolv.conf itself.
PACKAGES=(linux-image-amd64 initramfs-tools zstd systemd systemd-sysv udev dbus libpam-systemd
    qemu-guest-agent openssh-server isc-dhcp-client ifupdown iproute2 kmod netbase procps
    less)
VARIANT=${VARIANT:-}
case "$VARIANT" in
"") ;;
# python3-cffi-backend: it provides a virtual package python3-cryptography needs, which
# debootstrap's resolver does not follow.
cloudinit) PACKAGES+=(cloud-init sudo python3-cffi-backend) ;;
*) echo "error: unknown VARIANT '$VARIANT' (known: cloudinit)" >&2; exit 3 ;;
esac
# The kernel command line of a firmware boot (the catalog's cmdline says the same for PVH).
CMDLINE="root=PARTUUID=$PARTUUID ro net.ifnames=0 console=tty0 console=ttyS0,115200"
BOOT_MIB=63       # the FAT boot partition, from 1 MiB; the root follows it

steps=8
step() { echo "step $1/$steps: $2"; }
die() { echo "error: $*" >&2; exit 3; }

for t in debootstrap sfdisk mke2fs unshare chroot xz; do
    command -v "$t" >/dev/null || die "$t is missing on the host (apt-get install debootstrap fdisk e2fsprogs util-linux xz-utils)"
done
SYSLINUX_LIB=/usr/lib/syslinux
for t in mkfs.vfat mcopy syslinux; do
    command -v "$t" >/dev/null || die "$t is missing on the host (apt-get install dosfstools mtools syslinux syslinux-common)"
done
[ -f "$SYSLINUX_LIB/mbr/gptmbr.bin" ] || die "$SYSLINUX_LIB/mbr/gptmbr.bin is missing (apt-get install syslinux-common)"
mkdir -p "$OUT" "$WORK" "$DEBS/$SUITE"
exec 9>"$WORK/.lock"
flock 9 # one build of this tree at a time; a second waits and then reuses it
TREE="$WORK/tree"
# sudo: the admin user that provisioning makes (src/vm/provision.rs) gets sudo without a password
# through /etc/sudoers.d, as the cloud's agent does.
PACKAGES+=(sudo)

step 1 "finding the Debian mirror apt uses"
MIRROR=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list \
    /etc/apt/sources.list.d/*.sources 2>/dev/null | grep -E '^(URIs:|deb )' |
    grep -oE 'https?://[^ ]+/debian/?( |$)' | head -1 | tr -d ' ' || true)
MIRROR=${MIRROR%/}
[ -n "$MIRROR" ] || die "no Debian mirror found in /etc/apt/sources.list*"
# The tree is reused only if it was completed from this exact package list and mirror.
WANT=$(printf '%s\n' "$SUITE" "$MIRROR" "${PACKAGES[@]}" | sha256sum | cut -c1-16)
echo "mirror $MIRROR, tree key $WANT"

# Moves the .debs debootstrap fetched into the cache (hard links, same file system) and out of
# the tree, so they are neither downloaded again nor shipped in the image.
save_debs() {
    local a="$TREE/var/cache/apt/archives"
    [ -d "$a" ] || return 0
    find "$a" -maxdepth 1 -name '*.deb' -exec cp -n -l {} "$DEBS/$SUITE/" \; 2>/dev/null ||
        find "$a" -maxdepth 1 -name '*.deb' -exec cp -n {} "$DEBS/$SUITE/" \;
    find "$a" -maxdepth 1 -name '*.deb' -delete
}

if [ "$(cat "$WORK/tree.ok" 2>/dev/null)" = "$WANT" ] && [ -x "$TREE/sbin/init" ]; then
    step 2 "reusing the debootstrap tree in $TREE"
else
    step 2 "debootstrap $SUITE (--variant=minbase + ${#PACKAGES[@]} packages; .debs cached in $DEBS/$SUITE)"
    save_debs
    rm -rf "$TREE" "$WORK/tree.ok"
    mkdir -p "$TREE/var/cache/apt/archives" "$TREE/etc/initramfs-tools/conf.d" \
        "$TREE/usr/share/initramfs-tools/modules.d"
    # Seed the archive with cached .debs: debootstrap validates their checksums and skips the
    # download. Only files whose names the cache has; stale versions are simply unused.
    find "$DEBS/$SUITE" -maxdepth 1 -name '*.deb' -exec cp -l {} "$TREE/var/cache/apt/archives/" \; 2>/dev/null ||
        find "$DEBS/$SUITE" -maxdepth 1 -name '*.deb' -exec cp {} "$TREE/var/cache/apt/archives/" \;
    # The initramfs settings are in place before the kernel's postinst first builds one, so it is
    # built once, small (MODULES=most would pack ~1,000 modules).
    install -m 0644 "$HERE/initramfs.conf" "$TREE/etc/initramfs-tools/conf.d/vmnode.conf"
    install -m 0644 "$HERE/initramfs.modules" "$TREE/usr/share/initramfs-tools/modules.d/vmnode"
    inc=$(IFS=,; echo "${PACKAGES[*]}")
    if ! unshare --mount --propagation private \
        debootstrap --variant=minbase --include="$inc" --components=main \
        --keyring=/usr/share/keyrings/debian-archive-keyring.gpg \
        "$SUITE" "$TREE" "$MIRROR" >"$WORK/debootstrap.log" 2>&1; then
        tail -n 30 "$WORK/debootstrap.log" >&2
        save_debs
        die "debootstrap failed; its log is $WORK/debootstrap.log (downloaded .debs are kept)"
    fi
    # Package lines carry a version; index files (InRelease, Packages) do not.
    echo "$(grep -cE '^I: Retrieving [^ ]+ [^ ]+' "$WORK/debootstrap.log" || true) packages" \
        "downloaded, $(grep -cE '^I: Validating [^ ]+ [^ ]+' "$WORK/debootstrap.log" || true) from the cache"
    save_debs
    echo "$WANT" >"$WORK/tree.ok"
fi

step 3 "configuring: fstab, network (DHCP sets the host name), first-boot ssh keys, apt sources"
install -m 0644 "$HERE/initramfs.conf" "$TREE/etc/initramfs-tools/conf.d/vmnode.conf"
install -m 0644 "$HERE/initramfs.modules" "$TREE/usr/share/initramfs-tools/modules.d/vmnode"
cat >"$TREE/etc/fstab" <<EOF
# <file system>       <mount point> <type> <options>          <dump> <pass>
PARTUUID=$PARTUUID  /             ext4   errors=remount-ro  0      1
EOF
# The name comes from DHCP (the VM's computer name); until then the image is `localhost`.
echo localhost >"$TREE/etc/hostname"
printf '127.0.0.1\tlocalhost\n::1\t\tlocalhost ip6-localhost ip6-loopback\n' >"$TREE/etc/hosts"
install -m 0644 "$HERE/interfaces" "$TREE/etc/network/interfaces"
if [ "$VARIANT" = cloudinit ]; then
    # cloud-init names the host from the seed's meta-data; the DHCP hook would race it.
    rm -f "$TREE/etc/dhcp/dhclient-exit-hooks.d/vmnode-hostname"
    install -m 0644 "$HERE/../debian-12-cloudinit/cloud.cfg" "$TREE/etc/cloud/cloud.cfg.d/90-vmnode.cfg"
    # State of the build host's cloud-init, if any ran in the chroot: every VM starts clean.
    rm -rf "$TREE/var/lib/cloud" "$TREE/var/log/cloud-init"*
else
    install -m 0644 "$HERE/dhclient-hostname" "$TREE/etc/dhcp/dhclient-exit-hooks.d/vmnode-hostname"
fi
install -m 0644 "$HERE/ssh-host-keys.service" "$TREE/etc/systemd/system/vmnode-ssh-host-keys.service"
mkdir -p "$TREE/etc/systemd/system/ssh.service.wants"
ln -sf ../vmnode-ssh-host-keys.service \
    "$TREE/etc/systemd/system/ssh.service.wants/vmnode-ssh-host-keys.service"
cat >"$TREE/etc/apt/sources.list" <<EOF
deb $MIRROR $SUITE main
deb $MIRROR $SUITE-updates main
deb ${MIRROR%/debian}/debian-security $SUITE-security main
EOF
# No password for anyone until the VM is provisioned (a later osProfile step); root is locked.
chroot "$TREE" passwd -l root >/dev/null

step 4 "building the initramfs (initramfs-tools, MODULES=list)"
KREL=$(basename "$(ls -d "$TREE"/lib/modules/* | sort -V | tail -1)")
[ -e "$TREE/boot/vmlinuz-$KREL" ] || die "no kernel installed in the tree"
# The fsck hook cannot resolve PARTUUID= in a chroot and leaves fsck out: systemd-fsck-root
# checks the root instead, while it is still mounted read-only (`ro` on the command line).
chroot "$TREE" update-initramfs -c -k "$KREL" 2>&1 |
    grep -vE "^(update-initramfs: Generating|W: Couldn't identify type of root)" || true
INITRD="$TREE/boot/initrd.img-$KREL"
[ -s "$INITRD" ] || die "update-initramfs made no $INITRD"
INITRD_FILES=$(chroot "$TREE" lsinitramfs "/boot/initrd.img-$KREL")
for m in virtio_pci virtio_blk ext4; do
    grep -q "/$m.ko" <<<"$INITRD_FILES" || die "the initramfs lacks $m"
done

step 5 "extracting the kernel to its uncompressed ELF form (PVH entry) and the initrd"
VMLINUZ="$TREE/boot/vmlinuz-$KREL"
OFF=$(LC_ALL=C grep -abo -P '\xFD7zXZ\x00' "$VMLINUZ" | head -1 | cut -d: -f1)
[ -n "$OFF" ] || die "no xz payload found in $VMLINUZ"
tail -c +$((OFF + 1)) "$VMLINUZ" | xz -dc --single-stream >"$OUT/vmlinux" 2>/dev/null || true
head -c 4 "$OUT/vmlinux" | grep -q 'ELF' || die "decompressed kernel is not ELF"
cp "$INITRD" "$OUT/initrd.cpio"
echo "$KREL" >"$OUT/kernel.txt"

step 6 "clearing what each VM must make its own: machine-id, ssh host keys, logs, caches"
: >"$TREE/etc/machine-id" # empty: systemd makes one at first boot and commits it
rm -f "$TREE/var/lib/dbus/machine-id" "$TREE"/etc/ssh/ssh_host_*
rm -rf "$TREE"/var/lib/apt/lists/* "$TREE"/var/cache/apt/*.bin "$TREE"/var/log/*.log \
    "$TREE"/var/log/apt/* "$TREE"/var/lib/dhcp/*.leases "$TREE"/tmp/* "$TREE"/var/tmp/*
find "$TREE/var/log/journal" -mindepth 1 -delete 2>/dev/null || true

step 7 "making the GPT disk (sfdisk) and its ext4 root from the tree (mke2fs -d, no mount)"
DISK="$OUT/disk.raw"
rm -f "$DISK"
truncate -s "${DISK_MIB}M" "$DISK"
# Partition 1: FAT, legacy-BIOS-bootable (gptmbr.bin boots the partition with that flag), so
# the disk also boots through firmware; partition 2: the root (to the last usable sector).
BOOT_START=$PART_START
PART_START=$((BOOT_START + BOOT_MIB * 2048))
sfdisk --quiet --label gpt "$DISK" <<EOF
label-id: 1d0c5a3e-2f4b-4c6d-8e9f-0a1b2c3d4e5f
start=$BOOT_START, size=$((BOOT_MIB * 2048)), type=EBD0A0A2-B9E5-4433-87C0-68B6B72699C7, name=boot, attrs="LegacyBIOSBootable"
start=$PART_START, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, uuid=$PARTUUID, name=root
EOF
# The root is the last partition.
PSECTORS=$(sfdisk --json "$DISK" | awk -F'[:,]' '/"size"/ {gsub(/ /, "", $0); for (i = 1; i <= NF; i++) if ($i ~ /"size"/) print $(i + 1)}' | tail -1)
[ -n "$PSECTORS" ] || die "cannot read the partition size back from sfdisk"
mke2fs -q -F -t ext4 -L root -U "$FSUUID" -E "offset=$((PART_START * 512))" \
    -d "$TREE" "$DISK" "$((PSECTORS / 2))k"
# The boot partition, written at its offset like the root: kernel, initrd, SYSLINUX.
BOOT_OFF=$((BOOT_START * 512))
mkfs.vfat -F 16 -n VMBOOT -i 5eb0075e --offset "$BOOT_START" "$DISK" $((BOOT_MIB * 1024)) >/dev/null
sed "s|@CMDLINE@|$CMDLINE|" "$HERE/syslinux.cfg" >"$WORK/syslinux.cfg"
export MTOOLS_SKIP_CHECK=1
mcopy -i "$DISK@@$BOOT_OFF" "$VMLINUZ" ::/vmlinuz
mcopy -i "$DISK@@$BOOT_OFF" "$INITRD" ::/initrd.img
mcopy -i "$DISK@@$BOOT_OFF" "$WORK/syslinux.cfg" ::/syslinux.cfg
syslinux --offset "$BOOT_OFF" --install "$DISK"
dd if="$SYSLINUX_LIB/mbr/gptmbr.bin" of="$DISK" bs=440 count=1 conv=notrunc status=none
echo "boot partition: $(mdir -i "$DISK@@$BOOT_OFF" -b :: | tr '\n' ' ')"
# mke2fs -d writes every block of every file; the rest of the disk stays holes.
echo "disk: $(du -m "$DISK" | cut -f1) MiB allocated of $DISK_MIB MiB; tree $(du -sm "$TREE" | cut -f1) MiB"

step 8 "done"
echo "done: kernel $KREL, initrd $(du -k "$OUT/initrd.cpio" | cut -f1) KiB, vmlinux $(du -k "$OUT/vmlinux" | cut -f1) KiB"
