#!/bin/bash
# Recipe for the `vmnode:tiny:1` guest image, built from Debian packages only.
#
#   build.sh OUT_DIR DEB_CACHE_DIR
#
# Produces in OUT_DIR:
#   vmlinux       the Debian kernel, decompressed to its ELF form: QEMU boots it through the
#                 PVH entry note, skipping bzImage self-decompression (seconds under TCG)
#   initrd.cpio   busybox, /init, a udhcpc script, virtio modules, qemu-ga and its libraries
#   disk.raw      a sparse raw OS disk (a small labelled header, the rest holes)
#   kernel.txt    the kernel release
# Every step prints a `step N/7:` line so the caller can show progress.
# Packages come from apt (`apt-get download`, `dpkg-deb -x`); nothing is installed on the host.
set -euo pipefail

OUT=${1:?usage: build.sh OUT_DIR DEB_CACHE_DIR}
DEBS=${2:?usage: build.sh OUT_DIR DEB_CACHE_DIR}
HERE=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$OUT" "$DEBS"
chmod 0777 "$DEBS" 2>/dev/null || true # apt's _apt user downloads into it
WORK=$(mktemp -d "$OUT/.work.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

step() { echo "step $1/7: $2"; }

# download PKG...: fetch .debs not yet in the cache. The cache is keyed by the exact file name.
download() {
    local missing=()
    for p in "$@"; do
        local ver
        ver=$(apt-cache policy "$p" | awk '/Candidate:/ {print $2}')
        if [ -z "$ver" ] || [ "$ver" = "(none)" ]; then
            echo "error: package $p is not known to apt; run 'apt-get update' first" >&2
            exit 3
        fi
        local fver=${ver//:/%3a}
        if ! ls "$DEBS/${p}_${fver}_"*.deb >/dev/null 2>&1; then missing+=("$p=$ver"); fi
    done
    if [ ${#missing[@]} -gt 0 ]; then
        (cd "$DEBS" && apt-get download -q "${missing[@]}" 2>&1 | grep -v '^W: Download is performed unsandboxed' || true)
    fi
    for p in "$@"; do
        local ver fver
        ver=$(apt-cache policy "$p" | awk '/Candidate:/ {print $2}')
        fver=${ver//:/%3a}
        ls "$DEBS/${p}_${fver}_"*.deb >/dev/null 2>&1 || { echo "error: could not download $p" >&2; exit 3; }
    done
}
deb_of() {
    local ver fver
    ver=$(apt-cache policy "$1" | awk '/Candidate:/ {print $2}')
    fver=${ver//:/%3a}
    ls "$DEBS/${1}_${fver}_"*.deb | head -1
}

step 1 "resolving packages"
KPKG=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-/ {print $2; exit}')
[ -n "$KPKG" ] || { echo "error: cannot resolve linux-image-amd64; run 'apt-get update'" >&2; exit 3; }
QGA_LIBS=$(apt-cache depends --recurse --no-recommends --no-suggests --no-conflicts --no-breaks \
    --no-replaces --no-enhances --no-pre-depends qemu-guest-agent 2>/dev/null |
    grep -E '^(lib|zlib|gcc-)' | sort -u | tr '\n' ' ')

step 2 "downloading $KPKG busybox-static qemu-guest-agent and libraries (cached in $DEBS)"
# shellcheck disable=SC2086
download "$KPKG" busybox-static qemu-guest-agent $QGA_LIBS

step 3 "extracting the kernel to its uncompressed ELF form (PVH entry)"
mkdir -p "$WORK/k"
dpkg-deb --fsys-tarfile "$(deb_of "$KPKG")" | tar -x -C "$WORK/k" ./boot ./lib/modules
KREL=$(basename "$(ls -d "$WORK"/k/lib/modules/*)")
VMLINUZ="$WORK/k/boot/vmlinuz-$KREL"
# The bzImage payload is an xz stream (CONFIG_KERNEL_XZ); find its magic and inflate it.
OFF=$(LC_ALL=C grep -abo -P '\xFD7zXZ\x00' "$VMLINUZ" | head -1 | cut -d: -f1)
[ -n "$OFF" ] || { echo "error: no xz payload found in $VMLINUZ" >&2; exit 4; }
tail -c +$((OFF + 1)) "$VMLINUZ" | xz -dc --single-stream >"$WORK/vmlinux" 2>/dev/null || true
head -c 4 "$WORK/vmlinux" | grep -q 'ELF' || { echo "error: decompressed kernel is not ELF" >&2; exit 4; }
# The bzImage too, for images published with `boot: bzimage` (firmware's Linux loader, so the
# kernel keeps the VGA text console: a panic before any display driver shows on the screen).
cp "$VMLINUZ" "$WORK/vmlinuz"

step 4 "collecting virtio modules in dependency order"
ROOT="$WORK/root"
mkdir -p "$ROOT"/{bin,sbin,etc,proc,sys,dev,run,tmp,var/run,lib/modules,usr/share/udhcpc}
MODDIR="$WORK/k/lib/modules/$KREL"
declare -A SEEN=()
ORDER=()
modpath() { find "$MODDIR/kernel" -name "$1.ko" -o -name "${1//_/-}.ko" | head -1; }
add_module() { # depth-first: dependencies first
    local m=$1
    [ -n "${SEEN[$m]:-}" ] && return 0
    SEEN[$m]=1
    local f
    f=$(modpath "$m")
    [ -n "$f" ] || { echo "error: module $m not found in $KREL" >&2; exit 4; }
    local deps
    deps=$(tr '\0' '\n' <"$f" | sed -n 's/^depends=//p' | head -1 | tr ',' ' ')
    for d in $deps; do add_module "$d"; done
    cp "$f" "$ROOT/lib/modules/"
    ORDER+=("$(basename "$f")")
}
# button + evdev: the ACPI power button reaches busybox acpid (a graceful stop without the agent).
# bochs: a DRM framebuffer on the VGA device, so the console (and screenshots) show the boot;
# a PVH-booted kernel has no BIOS screen info, so the legacy VGA text console stays unused.
for m in virtio_pci virtio_blk virtio_net virtio_console button evdev bochs; do add_module "$m"; done
printf '%s\n' "${ORDER[@]}" >"$ROOT/lib/modules/order"

step 5 "installing busybox and qemu-guest-agent with its shared libraries"
mkdir -p "$WORK/bb" "$WORK/libs"
dpkg-deb -x "$(deb_of busybox-static)" "$WORK/bb"
cp "$WORK/bb/bin/busybox" "$ROOT/bin/busybox"
for a in $("$ROOT/bin/busybox" --list); do
    [ -e "$ROOT/bin/$a" ] || ln -s busybox "$ROOT/bin/$a"
done
for p in qemu-guest-agent $QGA_LIBS; do dpkg-deb -x "$(deb_of "$p")" "$WORK/libs"; done
cp "$WORK/libs/usr/sbin/qemu-ga" "$ROOT/bin/qemu-ga"
LIBPATH="$WORK/libs/lib/x86_64-linux-gnu:$WORK/libs/usr/lib/x86_64-linux-gnu"
LDSO="$WORK/libs/lib64/ld-linux-x86-64.so.2"
[ -e "$LDSO" ] || LDSO="$WORK/libs/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"
mkdir -p "$ROOT/lib/x86_64-linux-gnu" "$ROOT/lib64"
"$LDSO" --library-path "$LIBPATH" --list "$ROOT/bin/qemu-ga" |
    awk '/=> \// {print $3}' | while read -r lib; do
    cp -L "$lib" "$ROOT/lib/x86_64-linux-gnu/"
done
cp -L "$LDSO" "$ROOT/lib64/ld-linux-x86-64.so.2"

step 6 "writing init and the DHCP client script"
install -m 0755 "$HERE/init" "$ROOT/init"
install -m 0755 "$HERE/udhcpc.script" "$ROOT/usr/share/udhcpc/default.script"
mkdir -p "$ROOT/sbin" "$ROOT/etc/acpi/PWRF"
install -m 0755 "$HERE/shutdown" "$ROOT/sbin/shutdown"
printf '#!/bin/sh\nexec /sbin/shutdown -P acpi-power-button\n' >"$ROOT/etc/acpi/PWRF/00000080"
chmod 0755 "$ROOT/etc/acpi/PWRF/00000080"
: >"$ROOT/etc/acpid.conf"
echo "vmnode-tiny" >"$ROOT/etc/hostname"
echo "root:x:0:0:root:/root:/bin/sh" >"$ROOT/etc/passwd"
echo "root:x:0:" >"$ROOT/etc/group"
echo "$KREL" >"$ROOT/etc/kernel-release"
(cd "$ROOT" && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc --reproducible -R 0:0 --quiet) >"$WORK/initrd.cpio"

step 7 "making the sparse OS disk"
DISK="$WORK/disk.raw"
truncate -s 1G "$DISK"
# A labelled header the guest's init reads back, so a test sees the OS disk is the VM's own.
printf 'VMNODE-TINY-DISK v1 kernel=%s\n' "$KREL" | dd of="$DISK" conv=notrunc status=none
echo "$KREL" >"$WORK/kernel.txt"

mv "$WORK/vmlinux" "$WORK/vmlinuz" "$WORK/initrd.cpio" "$WORK/disk.raw" "$WORK/kernel.txt" "$OUT/"
echo "done: kernel $KREL, initrd $(du -k "$OUT/initrd.cpio" | cut -f1) KiB"
