#!/usr/bin/env bash
# Checks a Concurrent Harmony SD card image without a Pi (issue #7):
#
#   image/check-image.sh IMAGE.img|IMAGE.img.xz [BOARD_TOML]
#
# Reads the image with sfdisk, mtools, fdtget, debugfs and e2fsck (no mounting, no root
# needed): partition table, boot files, the device tree changes, the kernel's initramfs, the
# binary (static aarch64), its board file, unit and set-up files, the read-only system, the
# data partition where the logger writes. Prints one line per check; exits 1 if any failed.
# BOARD_TOML (default boards/rpi4b.toml of this checkout) is what /etc/harmony/board.toml
# must equal. Run by scripts/build-image.sh on every image and by tests/image.rs with
# HARMONY_IMAGE=PATH.
set -uo pipefail
# shellcheck disable=SC2034 # used by say/die in lib.sh
PROG=check-image
repo=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=lib.sh
. "$repo/image/lib.sh"

src=${1:?usage: image/check-image.sh IMAGE.img[.xz] [BOARD_TOML]}
board_toml=${2:-$repo/boards/rpi4b.toml}
[ -f "$src" ] || die "$src: no such file"
# Installed when missing (as root or with sudo -n; otherwise it says what to install).
need_tools sfdisk:fdisk mdir:mtools mcopy:mtools mlabel:mtools fdtget:device-tree-compiler \
    debugfs:e2fsprogs dumpe2fs:e2fsprogs e2fsck:e2fsprogs fsck.vfat:dosfstools file:file \
    cpio:cpio zstd:zstd xz:xz-utils gzip:gzip || exit 1
PATH=$PATH:/usr/sbin:/sbin

tmp=$(mktemp -d "${TMPDIR:-/var/tmp}/check-image.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
img=$(image_plain "$src" "$tmp")

fails=0
checks=0
ok() {
    checks=$((checks + 1))
    printf 'ok    %s\n' "$1"
}
fail() {
    checks=$((checks + 1))
    fails=$((fails + 1))
    printf 'FAIL  %s\n' "$1"
}
# check DESCRIPTION COMMAND...: ok when the command succeeds.
check() {
    local d=$1
    shift
    if "$@" >/dev/null 2>&1; then ok "$d"; else fail "$d"; fi
}
has() { grep -q -- "$1" <<<"$2"; }     # has REGEX TEXT
lacks() { ! grep -q -- "$1" <<<"$2"; } # lacks REGEX TEXT
not() { ! "$@"; }
has_opt() { tr ',' '\n' <<<"$2" | grep -qx -- "$1"; } # has_opt OPTION OPTIONS
boot_is_fat_bootable() { [ "$b_type" = c ] && grep -q '1 : .*bootable' <<<"$dump"; }
cmdline_ro() { grep -qw ro <<<"$cmdline" && ! grep -qw rw <<<"$cmdline"; }
unit_has_watchdog() { grep -q '^WatchdogSec=' <<<"$unit" && grep -q '^Type=notify' <<<"$unit"; }
only_data_writable() { # every fstab line of a card partition but the data one is ro
    local spec opts
    grep -q "^LABEL=${LABEL_ROOT}[[:space:]]" <<<"$fstab" || return 1
    while read -r spec _ _ opts _; do
        case $spec in LABEL=* | UUID=* | PARTUUID=* | /dev/*) ;; *) continue ;; esac
        [ "$spec" = "LABEL=$LABEL_DATA" ] && continue
        has_opt ro "$opts" || return 1
    done <<<"$fstab"
}

# ----- partition table -------------------------------------------------------------------------
dump=$(sfdisk --dump "$img" 2>/dev/null)
parts=$(partitions "$img")
check "MBR (dos) partition table" grep -q '^label: dos' <<<"$dump"
check "three partitions" test "$(echo "$parts" | wc -l)" -eq 3
read -r _ b_start _ b_type <<<"$(echo "$parts" | sed -n 1p)"
read -r _ r_start _ r_type <<<"$(echo "$parts" | sed -n 2p)"
read -r _ d_start d_size d_type <<<"$(echo "$parts" | sed -n 3p)"
check "partition 1 is FAT32 (type c) and bootable" \
    boot_is_fat_bootable
check "partitions 2 and 3 are Linux (type 83)" test "$r_type/$d_type" = 83/83
# (Every check below needs the thing it looks at to exist: a missing partition, file or
# field fails its checks instead of passing "nothing forbidden found" ones.)
aligned=true
for s in "$b_start" "$r_start" "$d_start"; do
    [[ $s =~ ^[0-9]+$ ]] && [ "$s" -gt 0 ] && [ $((s % 4194304)) -eq 0 ] || aligned=false
done
check "partitions start on 4 MiB boundaries (SD erase blocks)" $aligned
check "the image holds all of partition 3" \
    test "${d_size:-0}" -gt 0 -a "$(stat -c %s "$img")" -ge $((${d_start:-0} + ${d_size:-0}))

# ----- boot partition --------------------------------------------------------------------------
boot="$img@@$b_start"
export MTOOLS_SKIP_CHECK=1
blist=$(mdir -b -i "$boot" :: 2>/dev/null | sed 's|^::/||')
for f in start4.elf fixup4.dat bcm2711-rpi-4-b.dtb config.txt cmdline.txt; do
    check "boot: $f" grep -qx "$f" <<<"$blist"
done
kernel=$(grep -x 'vmlinuz-.*' <<<"$blist" | head -n1)
initrd=$(grep -x 'initrd.img-.*' <<<"$blist" | head -n1)
check "boot: kernel ($kernel)" test -n "$kernel"
check "boot: initramfs ($initrd)" test -n "$initrd"
check "boot: FAT label $LABEL_BOOT" has "$LABEL_BOOT" "$(mlabel -s -i "$boot" :: 2>/dev/null)"
mcopy -n -i "$boot" ::config.txt ::cmdline.txt ::bcm2711-rpi-4-b.dtb "$tmp/" 2>/dev/null
[ -n "$initrd" ] && mcopy -n -i "$boot" "::$initrd" "$tmp/initrd" 2>/dev/null
[ -n "$kernel" ] && mcopy -n -i "$boot" "::$kernel" "$tmp/kernel" 2>/dev/null
config=$(grep -v '^\s*#' "$tmp/config.txt" 2>/dev/null)
cmdline=$(cat "$tmp/cmdline.txt" 2>/dev/null)
have_config() { grep -q '^\[pi4\]' <<<"$config"; }
have_cmdline() { grep -q 'root=' <<<"$cmdline"; }
config_lacks() { have_config && lacks "$1" "$config"; }
cmdline_lacks() { have_cmdline && lacks "$1" "$cmdline"; }
check "config.txt: arm_64bit=1" grep -qx 'arm_64bit=1' <<<"$config"
check "config.txt: kernel=$kernel" grep -qx "kernel=$kernel" <<<"$config"
check "config.txt: initramfs $initrd" grep -q "^initramfs $initrd" <<<"$config"
check "config.txt: no dtoverlay= lines (they do nothing with Debian's DTB)" \
    config_lacks '^dtoverlay='
check "cmdline.txt: root=LABEL=$LABEL_ROOT" grep -qw "root=LABEL=$LABEL_ROOT" <<<"$cmdline"
check "cmdline.txt: root mounted read-only (ro, no rw)" \
    cmdline_ro
check "cmdline.txt: no serial console on the GPS UART" \
    cmdline_lacks 'console=\(serial\|ttyAMA\|ttyS\)'
check "cmdline.txt: fsck.repair=yes" grep -qw fsck.repair=yes <<<"$cmdline"
check "cmdline.txt: no cma= (a chroot-built raspi-firmware adds cma=64M, fatal on a Pi 4)" \
    cmdline_lacks 'cma='
check "kernel is an arm64 Linux image" has 'ARM64\|aarch64' "$(file "$tmp/kernel")"

dtb=$tmp/bcm2711-rpi-4-b.dtb
check "dtb: Raspberry Pi 4 Model B" has raspberrypi,4-model-b "$(fdtget "$dtb" / compatible)"
u0pins=$(fdtget -t u "$dtb" /soc/gpio@7e200000/uart0_gpio14 phandle 2>/dev/null)
check "dtb: PL011 (ttyAMA0) on GPIO 14/15" \
    test -n "$u0pins" -a "$(fdtget -t u "$dtb" /soc/serial@7e201000 pinctrl-0 2>/dev/null)" = "$u0pins"
check "dtb: Bluetooth off the PL011, mini UART disabled" bash -c \
    "[ \"\$(fdtget '$dtb' /soc/serial@7e201000/bluetooth status)\" = disabled ] &&
     [ \"\$(fdtget '$dtb' /soc/serial@7e215040 status)\" = disabled ]"
check "dtb: alias i2c1 = I2C1 on GPIO 2/3 at 400 kHz" bash -c \
    "[ \"\$(fdtget '$dtb' /aliases i2c1)\" = /soc/i2c@7e804000 ] &&
     [ \"\$(fdtget '$dtb' /soc/i2c@7e804000 status)\" = okay ] &&
     [ \"\$(fdtget -t u '$dtb' /soc/i2c@7e804000 clock-frequency)\" = 400000 ]"
if fdtget "$dtb" /soc/spi@7e204000/can@0 compatible >/dev/null 2>&1; then
    check "dtb: SPI0 on, MCP2515 on CE0 with crystal and interrupt" bash -c \
        "[ \"\$(fdtget '$dtb' /soc/spi@7e204000 status)\" = okay ] &&
         [ \"\$(fdtget '$dtb' /soc/spi@7e204000/can@0 compatible)\" = microchip,mcp2515 ] &&
         fdtget '$dtb' /soc/spi@7e204000/can@0 clocks && fdtget '$dtb' /soc/spi@7e204000/can@0 interrupts"
elif fdtget "$dtb" /soc/spi@7e204000 compatible >/dev/null 2>&1; then
    check "dtb: no CAN HAT configured (built with --no-can-hat): SPI0 off" \
        test "$(fdtget "$dtb" /soc/spi@7e204000 status 2>/dev/null)" = disabled
else
    fail "dtb: no SPI0 node (not Debian's bcm2711-rpi-4-b.dtb)"
fi

# The initramfs must be able to find the root file system on a Pi 4 and under qemu virt.
mkdir -p "$tmp/initrd.d"
(cd "$tmp/initrd.d" && { zstd -dcq ../initrd 2>/dev/null || gzip -dc ../initrd; } | cpio -id --quiet 2>/dev/null)
imods=$(find "$tmp/initrd.d" -name '*.ko*' -printf '%f\n' | sed 's/\.ko.*//')
for m in sdhci-iproc gpio-regulator fixed ext4 virtio_blk virtio_pci; do
    check "initramfs: $m" grep -qx "$m" <<<"$imods"
done
check "initramfs: under 16 MB (MODULES=list)" test "$(stat -c %s "$tmp/initrd")" -lt 16000000

# ----- root partition (read-only) ---------------------------------------------------------------
root="$img?offset=$r_start"
rfs() { debugfs -R "$1" "$root" 2>/dev/null; }
rexists() { debugfs -R "stat $1" "$root" 2>&1 | grep -q '^Inode:'; }
rcat() { debugfs -R "cat $1" "$root" 2>/dev/null; }
rhdr=$(dumpe2fs -h "$root" 2>/dev/null)
check "root: ext4 labelled $LABEL_ROOT" grep -q "^Filesystem volume name: *$LABEL_ROOT\$" <<<"$rhdr"
root_no_journal() { has '^Filesystem features:' "$rhdr" && lacks '^Filesystem features:.*has_journal' "$rhdr"; }
check "root: no journal (never written)" root_no_journal
check "root: e2fsck clean" e2fsck -fn "$root"
rcat /usr/local/bin/harmony >"$tmp/harmony"
check "root: /usr/local/bin/harmony is a static aarch64 executable" \
    has 'ARM aarch64.*statically linked' "$(file "$tmp/harmony")"
check "root: harmony is executable (mode 0755)" \
    has 'Mode:  0755' "$(rfs 'stat /usr/local/bin/harmony')"
rcat /etc/harmony/board.toml >"$tmp/board.toml"
check "root: /etc/harmony/board.toml = $(basename "$board_toml")" cmp -s "$tmp/board.toml" "$board_toml"
check "root: harmony.service installed" rexists /etc/systemd/system/harmony.service
check "root: harmony.service enabled (multi-user.target.wants)" \
    rexists /etc/systemd/system/multi-user.target.wants/harmony.service
unit=$(rcat /etc/systemd/system/harmony.service)
check "root: the unit runs /usr/local/bin/harmony with /etc/harmony/board.toml" \
    grep -q '^ExecStart=/usr/local/bin/harmony run --board /etc/harmony/board.toml' <<<"$unit"
check "root: the unit has a watchdog (WatchdogSec=) and Type=notify" \
    unit_has_watchdog
check "root: systemd-networkd enabled (can0 via 80-can0.network)" \
    has systemd-networkd.service "$(rfs 'ls -l /etc/systemd/system/multi-user.target.wants')"
net=$(rcat /etc/systemd/network/80-can0.network)
bitrate=$(sed -n 's/^bitrate *= *\([0-9_]*\).*/\1/p' "$board_toml" | tr -d _ | head -n1)
check "root: can0 brought up at the board's bitrate ($bitrate)" grep -qx "BitRate=$bitrate" <<<"$net"
check "root: harmony-grow-data.service enabled" \
    rexists /etc/systemd/system/sysinit.target.wants/harmony-grow-data.service
for f in /etc/sysusers.d/harmony.conf /etc/udev/rules.d/60-harmony-devices.rules \
    /etc/udev/rules.d/61-harmony-serial0.rules /etc/modules-load.d/harmony.conf \
    /usr/share/harmony-image/manifest.txt; do
    check "root: $f" rexists "$f"
done
passwd=$(rcat /etc/passwd)
group=$(rcat /etc/group)
check "root: user harmony" grep -q '^harmony:' <<<"$passwd"
for g in dialout i2c gpio; do
    check "root: group $g exists (SupplementaryGroups= of the unit)" grep -q "^$g:" <<<"$group"
done
fstab=$(rcat /etc/fstab | grep -v '^\s*#')
check "fstab: / read-only" has_opt ro "$(awk '$2 == "/" { print $4 }' <<<"$fstab")"
data_dir=$(sed -n 's/^data_dir *= *"\(.*\)"/\1/p' "$board_toml" | head -n1)
check "fstab: data partition mounted read-write on the board's data_dir ($data_dir)" \
    has_opt rw "$(awk -v l="LABEL=$LABEL_DATA" -v d="$data_dir" '$1 == l && $2 == d { print $4 }' <<<"$fstab")"
check "fstab: nothing else on the SD card is mounted writable" \
    only_data_writable
check "root: $data_dir exists (mount point)" rexists "$data_dir"
check "root: hardware watchdog (RuntimeWatchdogSec=)" \
    has '^RuntimeWatchdogSec=' "$(rcat /etc/systemd/system.conf.d/10-harmony-watchdog.conf)"
check "root: journal in RAM (Storage=volatile)" \
    has '^Storage=volatile' "$(rcat /etc/systemd/journald.conf.d/10-harmony.conf)"
sshd=$(rcat /etc/ssh/sshd_config.d/10-harmony.conf)
check "root: sshd keys only (PasswordAuthentication no)" grep -qx 'PasswordAuthentication no' <<<"$sshd"
# Issue #11: per-card secrets are made at the first boot on the data partition, not shipped.
check "root: sshd's host keys are the card's own, on the data partition" \
    grep -qx "HostKey $data_dir/ssh-host-keys/ssh_host_ed25519_key" <<<"$sshd"
no_host_keys_in_image() {
    rexists /etc/ssh/sshd_config && ! rfs 'ls /etc/ssh' | grep -q 'ssh_host_[a-z0-9]*_key'
}
check "root: no SSH host key in the image (each card makes its own at first boot)" \
    no_host_keys_in_image
check "root: make-ssh-host-keys installed (mode 0755)" \
    has 'Mode:  0755' "$(rfs 'stat /usr/local/lib/harmony-image/make-ssh-host-keys')"
check "root: make-uplink-key installed (mode 0755)" \
    has 'Mode:  0755' "$(rfs 'stat /usr/local/lib/harmony/make-uplink-key')"
check "root: harmony-uplink-key.service runs before harmony.service (harmony.service.wants)" \
    rexists /etc/systemd/system/harmony.service.wants/harmony-uplink-key.service
signing_key=$(sed -n 's/^signing_key *= *"\(.*\)"/\1/p' "$tmp/board.toml" 2>/dev/null | head -n1)
key_on_data() { [ -n "$data_dir" ] && [ "$signing_key" = "$data_dir/uplink.key" ]; }
check "root: the board's uplink.signing_key is the card's key on the data partition ($signing_key)" key_on_data
manifest=$(rcat /usr/share/harmony-image/manifest.txt)
if rexists /home/pi/.ssh/authorized_keys; then
    check "root: ssh enabled with an authorized key for pi" \
        rexists /etc/systemd/system/multi-user.target.wants/ssh.service
    check "root: harmony-ssh-host-keys.service runs before ssh.service (ssh.service.wants)" \
        rexists /etc/systemd/system/ssh.service.wants/harmony-ssh-host-keys.service
    sudo_policy=$(sed -n 's/^sudo: *\([a-z]*\).*/\1/p' <<<"$manifest")
    sudoers_is() { rcat /etc/sudoers.d/010-harmony-pi | cmp -s - "$repo/image/sudo/$1"; }
    if [ "$sudo_policy" = passwordless ]; then
        check "root: sudo for pi: everything, no password (built with --passwordless-sudo)" \
            sudoers_is 010-harmony-pi.passwordless
    else
        sudoers_limited() { [ "$sudo_policy" = limited ] && sudoers_is 010-harmony-pi; }
        check "root: sudo for pi: only the commands listed in image/sudo/010-harmony-pi (the default)" \
            sudoers_limited
    fi
    pi_not_sudo_group() { grep -q '^sudo:' <<<"$group" && ! grep -q '^sudo:.*[:,]pi\(,\|$\)' <<<"$group"; }
    check "root: pi is not in group sudo (sudo's rules for pi are in /etc/sudoers.d only)" pi_not_sudo_group
else
    ssh_off() { rexists /lib/systemd/system/ssh.service && not rexists /etc/systemd/system/multi-user.target.wants/ssh.service; }
    check "root: ssh installed but not enabled (no authorized key)" ssh_off
fi
machine_id_empty() { rexists /etc/machine-id && test -z "$(rcat /etc/machine-id)"; }
check "root: machine-id empty (made at boot, not shared by every card)" machine_id_empty

# ----- data partition ----------------------------------------------------------------------------
data="$img?offset=$d_start"
dhdr=$(dumpe2fs -h "$data" 2>/dev/null)
data_label_journal() {
    has "^Filesystem volume name: *$LABEL_DATA\$" "$dhdr" && has '^Filesystem features:.*has_journal' "$dhdr"
}
check "data: ext4 labelled $LABEL_DATA with a journal" data_label_journal
check "data: 4 KiB blocks" grep -q '^Block size: *4096$' <<<"$dhdr"
huid=$(awk -F: '$1 == "harmony" { print $3 }' <<<"$passwd")
droot=$(debugfs -R 'stat /' "$data" 2>/dev/null)
data_owner() { has "User: *$huid " "$droot" && has 'Mode:  0750' "$droot"; }
check "data: owned by harmony (uid $huid), mode 0750" data_owner
check "data: e2fsck clean" e2fsck -fn "$data"
dkey=$(debugfs -R 'stat /uplink.key' "$data" 2>&1)
if grep -q '^uplink key: *given' <<<"$manifest"; then
    data_key_given() { has "User: *$huid " "$dkey" && has 'Mode:  0600' "$dkey" && has 'Size: 32$' "$dkey"; }
    check "data: uplink.key given to build-image.sh: 32 bytes, mode 0600, owned by harmony" data_key_given
else
    data_no_key() { has '^Filesystem features:' "$dhdr" && not has '^Inode:' "$dkey"; }
    check "data: no uplink.key in the image (each card makes its own at first boot)" data_no_key
fi

# ----- boot partition file system ----------------------------------------------------------------
boot_fsck() { (extract_part "$img" 1 "$tmp/boot.vfat") 2>/dev/null && fsck.vfat -n "$tmp/boot.vfat"; }
check "boot: fsck.vfat clean" boot_fsck

echo "$checks checks, $fails failed"
[ "$fails" -eq 0 ]
