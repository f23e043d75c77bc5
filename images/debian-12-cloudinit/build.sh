#!/bin/bash
# Recipe for the `vmnode:debian:12-cloudinit` guest image: the debian-12 recipe with
# VARIANT=cloudinit (see images/debian-12/build.sh): cloud-init for the NoCloud datasource only,
# and a FAT boot partition with SYSLINUX so the disk also boots through firmware.
#
#   build.sh OUT_DIR DEB_CACHE_DIR [WORK_DIR]
#
# Its debootstrap tree lives in its own WORK_DIR (cache work/debian-12-cloudinit: the package
# list differs); the .debs are shared with debian-12 in DEB_CACHE_DIR/bookworm, so only
# cloud-init and its Python dependencies are downloaded.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
DEBS=${2:?usage: build.sh OUT_DIR DEB_CACHE_DIR [WORK_DIR]}
WORK=${3:-$(dirname "$DEBS")/work/debian-12-cloudinit}
VARIANT=cloudinit exec bash "$HERE/../debian-12/build.sh" "$1" "$DEBS" "$WORK"
