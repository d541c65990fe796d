#!/usr/bin/env bash
# Builds i2c-stub.ko for the image's kernel (Debian's arm64 kernel has CONFIG_I2C_STUB unset):
#
#   image/hil/build-i2c-stub.sh BASE_TARBALL OUT.ko
#
# The source is drivers/i2c/i2c-stub.c of the archive's linux-source-6.1 of the same version
# as the image's kernel, with plain I2C transfers added (i2c-stub-plain-i2c.py); it is built
# out of tree against linux-headers-<kver> in an arm64 chroot made from the image's own base
# tarball (gcc under qemu-user). The chroot is kept in $HARMONY_IMAGE_WORK/kbuild-<kver>, so a
# second build takes seconds. The module is unsigned: loading it taints the kernel, which the
# HIL rig accepts (Debian's kernel does not enforce module signatures).
set -euo pipefail
# shellcheck disable=SC2034 # used by say/die in lib.sh
PROG=build-i2c-stub
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=../lib.sh
. "$here/../lib.sh"

base=${1:?usage: build-i2c-stub.sh BASE_TARBALL OUT.ko}
out=${2:?usage: build-i2c-stub.sh BASE_TARBALL OUT.ko}
[ "$(id -u)" -eq 0 ] || die "must run as root (chroot)"
need_tools zstd:zstd dpkg-deb:dpkg xz:xz-utils python3:python3
need_binfmt

kver=$( (zstd -q -dc "$base" | tar -t 2>/dev/null |
    sed -n 's|^\./\(usr/\)\{0,1\}lib/modules/\([^/]*\)/$|\2|p') || true)
kver=$(echo "$kver" | head -n1)
[ -n "$kver" ] || die "no kernel in $base"
chroot=$HARMONY_IMAGE_WORK/kbuild-$kver
mounted=()
cleanup() {
    local m
    for m in "${mounted[@]}"; do umount -l "$m" 2>/dev/null || true; done
}
trap cleanup EXIT
mount_in() {
    mkdir -p "$chroot$1"
    mount --bind "$1" "$chroot$1"
    mounted=("$chroot$1" "${mounted[@]}")
}

if [ ! -f "$chroot/.ready" ]; then
    say "making the arm64 build chroot for $kver from $(basename "$base")"
    rm -rf "$chroot"
    mkdir -p "$chroot"
    zstd -q -dc "$base" | tar --numeric-owner -C "$chroot" -xf -
    cp /etc/resolv.conf "$chroot/etc/resolv.conf"
    mount_in /proc
    mount_in /dev
    kpkg_ver=$(chroot "$chroot" dpkg-query -W -f '${Version}' "linux-image-$kver")
    chroot "$chroot" apt-get update -q >&2
    chroot "$chroot" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
        --no-install-recommends gcc make libc6-dev "linux-headers-$kver" >&2 ||
        die "cannot install linux-headers-$kver: the archive has moved on to a newer kernel; rebuild the image (scripts/build-image.sh --rebuild-base)"
    mkdir -p "$chroot/build"
    (cd "$chroot/build" && chroot "$chroot" sh -c "cd /build && apt-get download -q linux-source-6.1=$kpkg_ver" >&2) ||
        die "cannot download linux-source-6.1=$kpkg_ver"
    deb=$(ls "$chroot"/build/linux-source-6.1_*.deb)
    say "extracting drivers/i2c/i2c-stub.c from $(basename "$deb")"
    dpkg-deb --fsys-tarfile "$deb" | tar -xO ./usr/src/linux-source-6.1.tar.xz |
        xz -dc | tar -xO linux-source-6.1/drivers/i2c/i2c-stub.c >"$chroot/build/i2c-stub.orig.c"
    [ -s "$chroot/build/i2c-stub.orig.c" ] || die "i2c-stub.c not found in $deb"
    rm -f "$deb"
    echo "$kpkg_ver" >"$chroot/.ready"
    cleanup
    mounted=()
fi

python3 "$here/i2c-stub-plain-i2c.py" "$chroot/build/i2c-stub.orig.c" "$chroot/build/i2c-stub.c"
echo 'obj-m := i2c-stub.o' >"$chroot/build/Makefile"
rm -f "$chroot/build/i2c-stub.ko"
mount_in /proc
mount_in /dev
chroot "$chroot" make -s -C "/usr/src/linux-headers-$kver" M=/build modules >&2
cp "$chroot/build/i2c-stub.ko" "$out"
say "$out: $(file -b "$out" | cut -d, -f1-2), for $kver (linux-source-6.1 $(cat "$chroot/.ready"))"
