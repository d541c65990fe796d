#!/usr/bin/env bash
# Builds the flashable SD card image of the firmware (issue #7):
#
#   scripts/build-image.sh [BOARD] [options]         (as root; BOARD: rpi4b, the default)
#
# -> $OUT/harmony-rpi4b-<version>.img.xz, its .sha256 and .manifest.txt (default OUT:
#    /var/tmp/harmony-image/out). Write it with rpi-imager ("Use custom") or
#    `xzcat harmony-rpi4b-*.img.xz | sudo dd of=/dev/sdX bs=4M conv=fsync`.
#
# Options:
#   --authorized-key FILE  an SSH public key: user "pi" (groups harmony & devices) may log in
#                          with it, keys only. Without it SSH is off. Each card makes its own
#                          SSH host keys at its first boot, on the data partition.
#   --passwordless-sudo    pi may run anything as root without a password (a bench Pi). The
#                          default: only the commands of image/sudo/010-harmony-pi (read the
#                          uplink key, start/stop/restart harmony, reboot, power off).
#   --signing-key FILE     put this uplink signing key (32 raw bytes) on the data partition of
#                          the image, so every card flashed from it shares it and the image
#                          file is then a secret. The default: each card makes its own at its
#                          first boot (/var/lib/harmony/uplink.key).
#   --binary FILE          use this static aarch64 harmony binary instead of building one
#   --out DIR              where the image goes ($HARMONY_IMAGE_OUT)
#   --cache DIR            cached base tarballs ($HARMONY_IMAGE_CACHE)
#   --rebuild-base         make the Debian base again (new package versions)
#   --hostname NAME        (default: harmony)
#   --data-mib N           the data partition in the image (default 256); it grows to the end
#                          of the SD card at the first boot
#   --can-oscillator HZ    the CAN HAT's MCP2515 crystal (default 16000000)
#   --can-interrupt GPIO   the GPIO its INT line is wired to (default 25)
#   --no-can-hat           leave SPI0 off (no MCP2515 in the device tree)
#   --xz-level N           xz preset (default 3: ~2 min and 147 MB here; 6 took ~10 min)
#   --keep-img             keep the uncompressed .img next to the .img.xz
#   --no-check             skip image/check-image.sh at the end
#
# The Debian part comes from the package archive only (deb.debian.org, or
# $HARMONY_DEBIAN_MIRROR / $HARMONY_DEBIAN_SECURITY); no Docker. What each step costs is
# printed at the end and kept in OUT/<name>.build-times.txt; image/README.md explains the
# layout and the choices.
set -euo pipefail
# shellcheck disable=SC2034 # used by say/die in image/lib.sh
PROG=build-image
repo=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=../image/lib.sh
. "$repo/image/lib.sh"

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }

board=rpi4b
key=
passwordless_sudo=false
signing_key=
binary=
rebuild_base=false
hostname=harmony
data_mib=256
can_args=()
xz_level=3
keep_img=false
check=true
while [ $# -gt 0 ]; do
    case $1 in
        -h | --help) usage; exit 0 ;;
        --authorized-key) key=$2; shift 2 ;;
        --passwordless-sudo) passwordless_sudo=true; shift ;;
        --signing-key) signing_key=$2; shift 2 ;;
        --binary) binary=$2; shift 2 ;;
        --out) HARMONY_IMAGE_OUT=$2; shift 2 ;;
        --cache) HARMONY_IMAGE_CACHE=$2; shift 2 ;;
        --rebuild-base) rebuild_base=true; shift ;;
        --hostname) hostname=$2; shift 2 ;;
        --data-mib) data_mib=$2; shift 2 ;;
        --can-oscillator) can_args+=(--can-oscillator "$2"); shift 2 ;;
        --can-interrupt) can_args+=(--can-interrupt "$2"); shift 2 ;;
        --no-can-hat) can_args+=(--no-can-hat); shift ;;
        --xz-level) xz_level=$2; shift 2 ;;
        --keep-img) keep_img=true; shift ;;
        --no-check) check=false; shift ;;
        -*) die "unknown option $1 (see --help)" ;;
        *) board=$1; shift ;;
    esac
done

[ "$board" = rpi4b ] || die "board '$board': only rpi4b has an image recipe (image/README.md)"
[ -f "$repo/boards/$board.toml" ] || die "boards/$board.toml missing"
[ "$(id -u)" -eq 0 ] || die "must run as root (debootstrapping, chroot, file ownership)"
[ -z "$key" ] || [ -f "$key" ] || die "--authorized-key $key: no such file"
[ -z "$key" ] || grep -qE '^(ssh-|ecdsa-|sk-)' "$key" || die "--authorized-key $key: not an SSH public key"
[[ $data_mib =~ ^[0-9]+$ ]] && [ "$data_mib" -ge 64 ] || die "--data-mib: at least 64"
if [ -n "$signing_key" ]; then
    [ -f "$signing_key" ] || die "--signing-key $signing_key: no such file"
    [ "$(stat -L -c %s "$signing_key")" -eq 32 ] || die "--signing-key $signing_key: not 32 bytes"
fi
! $passwordless_sudo || [ -n "$key" ] || die "--passwordless-sudo needs --authorized-key (pi exists only with SSH)"

out=$HARMONY_IMAGE_OUT
cache=$HARMONY_IMAGE_CACHE
work=$HARMONY_IMAGE_WORK/build-$board
mkdir -p "$out" "$cache" "$HARMONY_IMAGE_WORK"
case $out/ in "$repo"/*) die "--out must be outside the repository ($out)" ;; esac
case $cache/ in "$repo"/*) die "--cache must be outside the repository ($cache)" ;; esac

# One build at a time per work directory.
exec 9>"$HARMONY_IMAGE_WORK/.build-$board.lock"
flock -n 9 || die "another build-image.sh is running ($HARMONY_IMAGE_WORK/.build-$board.lock)"

TIMES_FILE=$(mktemp)
trap 'rm -f "$TIMES_FILE"' EXIT

# ---------------------------------------------------------------------------------------------
step "host tools"
need_tools mmdebstrap:mmdebstrap mkfs.vfat:dosfstools mcopy:mtools sfdisk:fdisk \
    mkfs.ext4:e2fsprogs debugfs:e2fsprogs fdtput:device-tree-compiler dtc:device-tree-compiler \
    e2fsck:e2fsprogs xz:xz-utils zstd:zstd file:file ssh-keygen:openssh-client flock:util-linux \
    dpkg-query:dpkg arch-test:arch-test systemctl:systemd cpio:cpio mdir:mtools mlabel:mtools \
    fdtget:device-tree-compiler fsck.vfat:dosfstools dumpe2fs:e2fsprogs
need_binfmt

# ---------------------------------------------------------------------------------------------
step "harmony binary (static aarch64)"
if [ -z "$binary" ]; then
    export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/tmp/target-image}
    (cd "$repo" && cargo build --locked --release --target aarch64-unknown-linux-musl >&2)
    binary=$CARGO_TARGET_DIR/aarch64-unknown-linux-musl/release/harmony
fi
[ -f "$binary" ] || die "no binary at $binary"
file -L "$binary" | grep -q 'ARM aarch64.*statically linked' ||
    die "$binary is not a static aarch64 executable: $(file -L "$binary")"
version_line=$("$binary" --version) || die "$binary --version failed (binfmt_misc?)"
# "harmony 0.1.0 (abc1234567[-dirty], aarch64-unknown-linux-musl)" -> 0.1.0, abc1234567[-dirty]
version=$(echo "$version_line" | awk '{print $2}')
rev=$(echo "$version_line" | sed -n 's/.*(\([^,]*\),.*/\1/p')
name=harmony-$board-$version-${rev:-norev}
say "$version_line -> $name"

# ---------------------------------------------------------------------------------------------
step "Debian base (cached tarball or mmdebstrap)"
pkgs=$(sed 's/#.*//' "$repo/image/base/packages.txt" | tr -s ' \n' ' ' | sed 's/^ //; s/ $//')
sources=(
    "deb $HARMONY_DEBIAN_MIRROR $HARMONY_SUITE main non-free-firmware"
    "deb $HARMONY_DEBIAN_MIRROR $HARMONY_SUITE-updates main non-free-firmware"
    "deb $HARMONY_DEBIAN_SECURITY $HARMONY_SUITE-security main non-free-firmware"
)
base_recipe=$(
    echo "recipe 1"
    printf '%s\n' "$pkgs" "${sources[@]}"
    cat "$repo"/image/base/*
)
base_key=$(echo "$base_recipe" | sha256sum | cut -c1-16)
base_tar=$cache/base-$HARMONY_SUITE-arm64-$base_key.tar.zst
if $rebuild_base || [ ! -f "$base_tar" ]; then
    bdir=$HARMONY_IMAGE_WORK/base-$base_key
    rm -rf "$bdir"
    say "building the base with mmdebstrap (arm64 under qemu-user): $pkgs"
    t_mm=$(date +%s)
    mmdebstrap --arch=arm64 --variant=minbase --mode=root --format=directory \
        --aptopt='Acquire::Languages "none"' \
        --dpkgopt=force-confold \
        --dpkgopt='path-exclude=/usr/share/man/*' \
        --dpkgopt='path-exclude=/usr/share/locale/*' \
        --dpkgopt='path-include=/usr/share/locale/locale.alias' \
        --dpkgopt='path-exclude=/usr/share/doc/*' \
        --dpkgopt='path-include=/usr/share/doc/*/copyright' \
        --dpkgopt='path-exclude=/usr/share/info/*' \
        --essential-hook="sh $repo/image/base/essential-hook.sh \"\$1\"" \
        --customize-hook="sh $repo/image/base/customize-hook.sh \"\$1\"" \
        --include="$pkgs" \
        "$HARMONY_SUITE" "$bdir" "${sources[@]}" >&2
    say "mmdebstrap took $(($(date +%s) - t_mm)) s"
    tar --numeric-owner --xattrs --xattrs-include='*' -C "$bdir" -cf - . |
        zstd -q -T0 -3 -o "$base_tar.part"
    mv "$base_tar.part" "$base_tar"
    rm -rf "$bdir"
    base_note="built now ($(($(date +%s) - t_mm)) s)"
else
    base_note="cached"
fi
say "base: $base_tar ($base_note, $(du -h "$base_tar" | cut -f1))"

# ---------------------------------------------------------------------------------------------
step "compose the root file system"
rm -rf "$work"
mkdir -p "$work"
stage=$work/root
mkdir "$stage"
zstd -q -dc "$base_tar" | tar --numeric-owner --xattrs --xattrs-include='*' -C "$stage" -xf -
kvers=$(ls "$stage/lib/modules")
[ "$(echo "$kvers" | wc -w)" -eq 1 ] || die "expected one kernel in the base, found: $kvers"
kver=$kvers
cp -a --no-preserve=ownership "$repo/image/rootfs/." "$stage/"
chmod 0755 "$stage/usr/local/lib/harmony-image/grow-data" \
    "$stage/usr/local/lib/harmony-image/make-ssh-host-keys"
install -D -m 0644 "$repo/image/README.md" "$stage/usr/share/doc/harmony-image/README.md"

# The firmware, exactly as scripts/deploy.sh installs it on a hand-made Pi: the Field-kit
# bundle and its install.sh, run inside the arm64 tree (DESTDIR=/ skips systemctl & co.).
bundle=$stage/tmp/harmony-deploy.image
mkdir -p "$bundle"
install -m 0755 "$binary" "$bundle/harmony"
install -m 0644 "$repo/boards/$board.toml" "$bundle/board.toml"
for f in harmony.service harmony-sysusers.conf 60-harmony-devices.rules harmony-modules.conf \
    80-can0.network harmony-uplink-key.service make-uplink-key install.sh README.md; do
    install -m 0644 "$repo/boards/$board/$f" "$bundle/$f"
done
chroot "$stage" /usr/bin/env DESTDIR=/ /bin/sh /tmp/harmony-deploy.image/install.sh >&2
rm -rf "$bundle"
[ -x "$stage/usr/local/bin/harmony" ] || die "install.sh did not install the binary"
grep -q '^harmony:' "$stage/etc/passwd" || die "install.sh did not create user harmony"

# The data partition is mounted over the board's data_dir (/var/lib/harmony).
data_dir=$(sed -n 's/^data_dir *= *"\(.*\)"/\1/p' "$repo/boards/$board.toml" | head -n1)
[ "$data_dir" = /var/lib/harmony ] ||
    die "boards/$board.toml data_dir is '$data_dir'; image/rootfs/etc/fstab mounts the data partition on /var/lib/harmony"
mkdir -p "$stage$data_dir"
chmod 0750 "$stage$data_dir"

# The read-only system: what units would otherwise try to create under /var/lib at start
# (logind's StateDirectory=systemd/linger fails the unit with EROFS), and dbus's machine-id
# link (a tmpfiles.d line). rfkill and backlight state is not saved (nothing to save it to).
install -d -m 0755 "$stage/var/lib/systemd/linger" "$stage/var/lib/systemd/backlight" \
    "$stage/var/lib/systemd/rfkill" "$stage/var/lib/systemd/pstore" "$stage/var/lib/dbus"
ln -sfn /etc/machine-id "$stage/var/lib/dbus/machine-id"

# Units: the firmware, networkd (can0 at the board's bitrate, Ethernet), the data partition's
# growth. Timers that write to the read-only system are masked.
systemctl --root="$stage" enable harmony.service systemd-networkd.service \
    harmony-grow-data.service harmony-uplink-key.service >&2
systemctl --root="$stage" mask apt-daily.timer apt-daily-upgrade.timer dpkg-db-backup.timer \
    e2scrub_all.timer e2scrub_reap.service fstrim.timer systemd-networkd-wait-online.service \
    systemd-rfkill.service systemd-rfkill.socket systemd-backlight@.service >&2

# SSH: key-only login for "pi" when a key was given, else no SSH at all. No host keys in the
# image: openssh-server's installation made some in the base, shared by every card flashed
# from it; each card makes its own at its first boot on the data partition
# (harmony-ssh-host-keys.service, before ssh.service).
rm -f "$stage"/etc/ssh/ssh_host_*
if [ -n "$key" ]; then
    chroot "$stage" useradd --create-home --shell /bin/bash \
        --comment "Concurrent Harmony operator" \
        --groups harmony,dialout,i2c,gpio,systemd-journal pi
    chroot "$stage" usermod -p '*' pi # no password at all (not "locked"): keys only
    install -d -m 0700 "$stage/home/pi/.ssh"
    install -m 0600 "$key" "$stage/home/pi/.ssh/authorized_keys"
    chroot "$stage" chown -R pi:pi /home/pi/.ssh
    # sudo: pi has no password, so sudo can only be what the rules allow without one.
    if $passwordless_sudo; then
        install -m 0440 "$repo/image/sudo/010-harmony-pi.passwordless" "$stage/etc/sudoers.d/010-harmony-pi"
        sudo_note="sudo: passwordless (--passwordless-sudo): pi may run anything as root"
    else
        install -m 0440 "$repo/image/sudo/010-harmony-pi" "$stage/etc/sudoers.d/010-harmony-pi"
        sudo_note="sudo: limited: pi may run only the commands of /etc/sudoers.d/010-harmony-pi"
    fi
    chroot "$stage" visudo -c -q -f /etc/sudoers.d/010-harmony-pi >&2 ||
        die "sudoers rules for pi do not parse"
    systemctl --root="$stage" enable ssh.service harmony-ssh-host-keys.service >&2
    ssh_note="ssh: on, user pi, keys only; authorized key $(ssh-keygen -l -f "$key")"
else
    systemctl --root="$stage" disable ssh.service >&2
    ssh_note="ssh: off (no --authorized-key given)"
    sudo_note="sudo: none (no user pi without --authorized-key)"
fi
if [ -n "$signing_key" ]; then
    key_note="uplink key: given to build-image.sh (--signing-key), the same on every card from this image; sha256 $(sha256sum "$signing_key" | cut -c1-16)"
else
    key_note="uplink key: none in the image; each card makes its own at its first boot ($data_dir/uplink.key)"
fi
printf 'Defaults lecture=never\n' >"$stage/etc/sudoers.d/000-harmony-defaults"
chmod 0440 "$stage/etc/sudoers.d/000-harmony-defaults"

echo "$hostname" >"$stage/etc/hostname"
printf '127.0.0.1\tlocalhost\n127.0.1.1\t%s\n::1\t\tlocalhost ip6-localhost ip6-loopback\n' \
    "$hostname" >"$stage/etc/hosts"
# The Pi has no real-time clock: systemd starts the clock no earlier than this file's time.
touch "$stage/usr/lib/clock-epoch"

# ---------------------------------------------------------------------------------------------
step "boot partition files (config.txt, cmdline.txt, device tree)"
bootfs=$stage/boot/firmware
for f in start4.elf fixup4.dat bcm2711-rpi-4-b.dtb "vmlinuz-$kver" "initrd.img-$kver"; do
    [ -f "$bootfs/$f" ] || die "raspi-firmware's hook left no /boot/firmware/$f"
done
sed "s/@KVER@/$kver/g" "$repo/image/boot/config.txt.in" >"$bootfs/config.txt"
cp "$repo/image/boot/cmdline.txt.in" "$bootfs/cmdline.txt"
bash "$repo/image/dt/patch-rpi4b-dtb.sh" "$bootfs/bcm2711-rpi-4-b.dtb" \
    "$bootfs/harmony-dt-changes.txt" "${can_args[@]}" >&2

# ---------------------------------------------------------------------------------------------
step "manifest"
info=$stage/usr/share/harmony-image
mkdir -p "$info"
manifest=$info/manifest.txt
{
    echo "# Concurrent Harmony SD card image: $name"
    echo "image:      $name.img"
    echo "built:      $(date -u +%Y-%m-%dT%H:%M:%SZ) by scripts/build-image.sh on $(uname -n)"
    echo "source:     $(git -C "$repo" rev-parse HEAD 2>/dev/null || echo unknown)$(git -C "$repo" diff --quiet 2>/dev/null || echo ' (working tree with changes)')"
    echo "harmony:    $version_line"
    echo "binary:     /usr/local/bin/harmony sha256 $(sha256sum "$binary" | cut -d' ' -f1)"
    echo "board:      /etc/harmony/board.toml = boards/$board.toml sha256 $(sha256sum "$repo/boards/$board.toml" | cut -d' ' -f1)"
    echo "kernel:     $kver"
    echo "base:       $(basename "$base_tar") (mmdebstrap --variant=minbase, $HARMONY_SUITE arm64)"
    echo "mirrors:    $HARMONY_DEBIAN_MIRROR $HARMONY_DEBIAN_SECURITY"
    sed 's/^/archive:    /' "$info/archive-dates.txt" 2>/dev/null || true
    echo "hostname:   $hostname"
    echo "$ssh_note"
    echo "ssh host keys: none in the image; each card makes its own at its first boot ($data_dir/ssh-host-keys)"
    echo "$sudo_note"
    echo "$key_note"
    echo
    echo "# Device tree"
    cat "$bootfs/harmony-dt-changes.txt"
    echo
    echo "# Debian packages (dpkg-query -W): name version architecture"
    dpkg-query --admindir="$stage/var/lib/dpkg" -W -f '${Package} ${Version} ${Architecture}\n' |
        sort
} >"$manifest"
cp "$manifest" "$out/$name.manifest.txt"
say "$(grep -c '^[a-z0-9].* [a-z0-9]*$' "$manifest" || true) lines in $out/$name.manifest.txt"

# ---------------------------------------------------------------------------------------------
step "file systems (FAT32 boot, read-only ext4 root, ext4 data)"
mib() { echo $((($1 + 1048575) / 1048576)); }
# Boot partition: what raspi-firmware's hook put into /boot/firmware.
boot_mib=256
rm -f "$work/boot.vfat"
mkfs.vfat -F 32 -n "$LABEL_BOOT" -C "$work/boot.vfat" $((boot_mib * 1024)) >&2
mcopy -s -m -i "$work/boot.vfat" "$bootfs"/* ::
mkdir -p "$work/bootfs"
mv "$bootfs"/* "$work/bootfs/"

# Root: no journal (it is never written), sized to its contents (+8 % for ext4's own
# metadata) plus 64 MiB; made bigger if mkfs.ext4 -d finds it too small.
used=$(du -s --block-size=1M "$stage" | cut -f1)
root_mib=$(((used * 108 / 100 + 64 + 3) / 4 * 4))
until mkfs.ext4 -q -F -L "$LABEL_ROOT" -O ^has_journal -b 4096 -m 0 -d "$stage" \
    "$work/root.ext4" "${root_mib}M" >&2 2>"$work/mkfs-root.err"; do
    [ "$root_mib" -lt $((used * 2 + 256)) ] || die "mkfs.ext4 -d failed: $(cat "$work/mkfs-root.err")"
    root_mib=$(((root_mib * 110 / 100 + 3) / 4 * 4))
    say "root file system too small, trying $root_mib MiB"
done
e2fsck -fn "$work/root.ext4" >&2

# Data: the logs. 4 KiB blocks even though it starts small (it grows on the card), 1 % reserve
# (the logger keeps its own free-space floor), all inode tables written now (no lazy init
# writing in the background during the first flight), owned by the service user.
uidgid=$(awk -F: '$1 == "harmony" { print $3 ":" $4 }' "$stage/etc/passwd")
mkfs.ext4 -q -F -L "$LABEL_DATA" -b 4096 -m 1 \
    -E "lazy_itable_init=0,lazy_journal_init=0,root_owner=$uidgid" \
    "$work/data.ext4" "${data_mib}M" >&2
debugfs -w -R "set_inode_field / mode 040750" "$work/data.ext4" >/dev/null 2>&1
if [ -n "$signing_key" ]; then
    # The same key on every card from this image (--signing-key): harmony's, 0600.
    debugfs -w -f - "$work/data.ext4" >/dev/null 2>&1 <<EOF
write $signing_key uplink.key
set_inode_field uplink.key uid ${uidgid%%:*}
set_inode_field uplink.key gid ${uidgid##*:}
set_inode_field uplink.key mode 0100600
EOF
    [ "$(debugfs -R 'cat /uplink.key' "$work/data.ext4" 2>/dev/null | wc -c)" -eq 32 ] ||
        die "could not write the signing key onto the data partition"
fi
e2fsck -fn "$work/data.ext4" >&2

# ---------------------------------------------------------------------------------------------
step "partition table and image"
img=$work/$name.img
align=4 # MiB: SD cards erase in 4 MiB units
p1=$align
p2=$((p1 + boot_mib))
p3=$((p2 + root_mib))
total=$((p3 + data_mib))
rm -f "$img"
truncate -s "${total}M" "$img"
sfdisk --quiet "$img" <<EOF
label: dos
unit: sectors
start=$((p1 * 2048)), size=$((boot_mib * 2048)), type=c, bootable
start=$((p2 * 2048)), size=$((root_mib * 2048)), type=83
start=$((p3 * 2048)), size=$((data_mib * 2048)), type=83
EOF
dd if="$work/boot.vfat" of="$img" bs=1M seek="$p1" conv=notrunc,sparse status=none
dd if="$work/root.ext4" of="$img" bs=1M seek="$p2" conv=notrunc,sparse status=none
dd if="$work/data.ext4" of="$img" bs=1M seek="$p3" conv=notrunc,sparse status=none
rm -f "$work/boot.vfat" "$work/root.ext4" "$work/data.ext4"
say "$img: boot ${boot_mib} MiB, root ${root_mib} MiB (read-only), data ${data_mib} MiB, total ${total} MiB"

if $check; then
    step "check the image (image/check-image.sh)"
    bash "$repo/image/check-image.sh" "$img" >&2
fi

# ---------------------------------------------------------------------------------------------
step "compress (xz -$xz_level, all cores) and checksum"
xz -T0 -"$xz_level" -c "$img" >"$out/$name.img.xz.part"
mv "$out/$name.img.xz.part" "$out/$name.img.xz"
(cd "$out" && sha256sum "$name.img.xz" >"$name.img.xz.sha256")
if $keep_img; then
    mv "$img" "$out/$name.img"
else
    rm -f "$img"
fi
step_end

{
    echo "# scripts/build-image.sh $board: $(date -u +%Y-%m-%dT%H:%M:%SZ), $(nproc) cores, base $base_note"
    cat "$TIMES_FILE"
    printf '%-58s %8s s\n' "total" "$(elapsed)"
    echo "image: $total MiB raw, $(stat -c %s "$out/$name.img.xz") bytes as .img.xz"
} >"$out/$name.build-times.txt"
cat "$out/$name.build-times.txt" >&2
ln -sfn "$name.img.xz" "$out/harmony-$board-latest.img.xz"
rm -rf "$work/root"
echo "$out/$name.img.xz"
