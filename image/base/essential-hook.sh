#!/bin/sh
# mmdebstrap --essential-hook of the image's base (scripts/build-image.sh): runs on the host
# after the essential packages are unpacked and before the kernel, initramfs-tools and
# raspi-firmware are installed, so their maintainer scripts see this configuration. The
# files are conffiles of those packages: dpkg keeps them with --force-confold.
set -eu
root=$1
here=$(dirname "$0")
mkdir -p "$root/etc/initramfs-tools/conf.d" "$root/etc/default"
# Only the listed modules (and their dependencies) go into the initramfs: ~1 min under
# qemu-user instead of ~15 min for MODULES=most, 6 MB instead of 36 MB.
printf '# Written by image/base/essential-hook.sh\nMODULES=list\n' \
    >"$root/etc/initramfs-tools/conf.d/harmony.conf"
cp "$here/initramfs-modules" "$root/etc/initramfs-tools/modules"
cp "$here/raspi-firmware.default" "$root/etc/default/raspi-firmware"
