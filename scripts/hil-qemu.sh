#!/usr/bin/env bash
# Hardware-in-the-loop tests without hardware (issue #7): the firmware image's own kernel and
# system booted in qemu-system-aarch64 -M virt, with real kernel interfaces standing in for the
# Pi's devices. One command, one verdict:
#
#   scripts/hil-qemu.sh [IMAGE.img[.xz]] [options]        (as root)
#
# IMAGE defaults to $HARMONY_IMAGE_OUT/harmony-rpi4b-latest.img.xz (scripts/build-image.sh).
#
#   --work DIR        scratch space (default /var/tmp/harmony-image/work/hil); kept afterwards
#   --no-powercut     skip the second boot (power cut while logging)
#   --timeout S       per boot (default 900)
#   --ssh-key FILE    the private key of the image's --authorized-key: boot 1 then has a
#                     network (qemu user networking, DHCP from systemd-networkd) and the host
#                     logs in as pi with the key (harmony ctl, the uplink key with sudo, the
#                     image's sudo policy) and checks that a password login is refused. Without it SSH is not exercised.
#   --quiet           only the verdict
#
# What runs (image/README.md, "HIL under qemu", has the details and what is not covered):
#   boot 1  a copy of the image (its partitions, kernel, initramfs, read-only root, data
#           partition grown at first boot), plus a small HIL disk and five files added to the
#           root (the qemu board file, two units, their links): harmony.service starts under
#           systemd with the hardware watchdog (i6300esb); GPS = 16550 on PCI fed from a host
#           pty (hot-unplugged and replugged), radio = usb-serial to `harmony ground` on the
#           host, CAN = vcan0 with canplayer (down and up), I2C = i2c-stub with LIDAR-Lite
#           registers; the service watchdog kills a frozen firmware; CPU at 16,000 frames/s
#           (cangen); a clean stop; tests/hil.rs with HARMONY_HIL=1 as the service user
#   boot 2  logging with cangen flooding vcan0 (16,000 frames/s asked; the emulated guest
#           reaches far fewer), then SIGKILL to qemu (the power is cut)
#   host    every log file from the data partition through `harmony log check`; the system
#           partitions byte-identical before and after; fsck of the data partition
set -euo pipefail
# shellcheck disable=SC2034 # used by say/die in image/lib.sh
PROG=hil-qemu
repo=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=../image/lib.sh
. "$repo/image/lib.sh"

image=
work=$HARMONY_IMAGE_WORK/hil
powercut=true
timeout=900
quiet=false
ssh_key=
while [ $# -gt 0 ]; do
    case $1 in
        -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        --work) work=$2; shift 2 ;;
        --no-powercut) powercut=false; shift ;;
        --timeout) timeout=$2; shift 2 ;;
        --quiet) quiet=true; shift ;;
        --ssh-key) ssh_key=$2; shift 2 ;;
        -*) die "unknown option $1 (see --help)" ;;
        *) image=$1; shift ;;
    esac
done
image=${image:-$HARMONY_IMAGE_OUT/harmony-rpi4b-latest.img.xz}
[ -e "$image" ] || die "no image at $image (build one: scripts/build-image.sh)"
image=$(readlink -f "$image")
[ "$(id -u)" -eq 0 ] || die "must run as root (chroot for the i2c-stub build)"
case $work/ in "$repo"/*) die "--work must be outside the repository" ;; esac

TIMES_FILE=$(mktemp)
host_checks=$(mktemp)
trap 'rm -f "$TIMES_FILE" "$host_checks"' EXIT
hcheck() { # hcheck NAME STATUS DETAIL
    if [ "$2" -eq 0 ]; then
        echo "ok $1${3:+ ($3)}" >>"$host_checks"
    else
        echo "FAIL $1${3:+ ($3)}" >>"$host_checks"
    fi
    $quiet || printf '%s %s%s\n' "$([ "$2" -eq 0 ] && echo ok || echo FAIL)" "$1" "${3:+ ($3)}" >&2
}

# ---------------------------------------------------------------------------------------------
step "host tools"
need_tools qemu-system-aarch64:qemu-system-arm python3:python3 mcopy:mtools mdir:mtools \
    sfdisk:fdisk debugfs:e2fsprogs e2fsck:e2fsprogs mkfs.ext4:e2fsprogs zstd:zstd xz:xz-utils \
    file:file cpio:cpio
# With --ssh-key the guest gets a virtio NIC, whose option ROM is in ipxe-qemu (only a
# Recommends of qemu-system-arm, so not installed with --no-install-recommends).
[ -z "$ssh_key" ] || need_tools ssh:openssh-client /usr/share/qemu/efi-virtio.rom:ipxe-qemu
need_binfmt
rm -rf "$work"
mkdir -p "$work"

# ---------------------------------------------------------------------------------------------
step "build: harmony for the host (ground station, log check) and the aarch64 HIL tests"
(cd "$repo" && CARGO_TARGET_DIR=/tmp/target-image-host cargo build --locked --release >&2)
host_bin=/tmp/target-image-host/release/harmony
hil_bin=$(cd "$repo" && CARGO_TARGET_DIR=/tmp/target-image cargo test --locked --release \
    --target aarch64-unknown-linux-musl --test hil --no-run --message-format=json 2>/dev/null |
    python3 -c 'import json, sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "hil" and m.get("executable"):
        print(m["executable"])' | tail -n1)
[ -x "$hil_bin" ] || die "the aarch64 HIL test binary was not built"
file "$hil_bin" | grep -q 'ARM aarch64.*statically linked' || die "$hil_bin is not a static aarch64 binary"

# ---------------------------------------------------------------------------------------------
step "image: copy, kernel and initramfs, base"
img=$(image_plain "$image" "$work")
disk=$work/disk.img
cp --sparse=always "$img" "$disk"
[ "$img" = "$image" ] || rm -f "$img"
# The "SD card" is 2 GiB larger than the image, so the first boot grows the data partition.
truncate -s +2G "$disk"
b_start=$(part_field "$disk" 1 start)
r_start=$(part_field "$disk" 2 start)
r_size=$(part_field "$disk" 2 size)
export MTOOLS_SKIP_CHECK=1
kernel=$(mdir -b -i "$disk@@$b_start" :: | sed -n 's|^::/\(vmlinuz-.*\)|\1|p' | head -n1)
initrd=$(mdir -b -i "$disk@@$b_start" :: | sed -n 's|^::/\(initrd.img-.*\)|\1|p' | head -n1)
[ -n "$kernel" ] && [ -n "$initrd" ] || die "no kernel/initramfs on the image's boot partition"
mcopy -n -i "$disk@@$b_start" "::$kernel" "$work/vmlinuz"
mcopy -n -i "$disk@@$b_start" "::$initrd" "$work/initrd.img"
kver=${kernel#vmlinuz-}
manifest=$(debugfs -R 'cat /usr/share/harmony-image/manifest.txt' "$disk?offset=$r_start" 2>/dev/null)
base_name=$(echo "$manifest" | sed -n 's/^base: *\([^ ]*\).*/\1/p')
say "kernel $kver; image base $base_name"

# ---------------------------------------------------------------------------------------------
stub_key=$(cat "$repo/image/hil/i2c-stub-plain-i2c.py" "$repo/image/hil/build-i2c-stub.sh" | sha256sum | cut -c1-12)
stub=$HARMONY_IMAGE_CACHE/i2c-stub-$kver-$stub_key.ko
if [ -f "$stub" ]; then
    step "i2c-stub.ko for $kver (cached: $stub)"
else
    step "i2c-stub.ko for $kver: built from the archive's linux-source (then cached)"
    [ -f "$HARMONY_IMAGE_CACHE/$base_name" ] ||
        die "the image's base tarball $base_name is not in $HARMONY_IMAGE_CACHE (needed once to build i2c-stub for $kver)"
    bash "$repo/image/hil/build-i2c-stub.sh" "$HARMONY_IMAGE_CACHE/$base_name" "$stub.part"
    mv "$stub.part" "$stub"
fi

# ---------------------------------------------------------------------------------------------
step "HIL disk and the rig's additions to the root partition"
hd=$work/hildisk
mkdir -p "$hd/guest" "$hd/can" "$hd/results"
install -m 0755 "$hil_bin" "$hd/hil"
install -m 0644 "$stub" "$hd/i2c-stub.ko"
install -m 0755 "$repo"/image/hil/guest/*.sh "$hd/guest/"
grep '^(' "$repo/fixtures/can/candumpSample3.txt" >"$hd/can/candump.log"
bash "$repo/image/hil/make-board.sh" "$repo/boards/rpi4b.toml" >"$work/board-qemu.toml"
cp "$work/board-qemu.toml" "$hd/"
mkhil() { # mkhil FILE: a fresh HIL disk from $hd
    rm -f "$1"
    mkfs.ext4 -q -F -L HARMONYHIL -b 4096 -d "$hd" "$1" 256M
}
mkhil "$work/hil1.ext4"

# The root partition of the copy gets the qemu board file and the rig's two units, nothing
# else (debugfs writes into the ext4 image; nothing is mounted on the host).
cat >"$work/inject.debugfs" <<EOF
rm /etc/harmony/board.toml
write $work/board-qemu.toml /etc/harmony/board.toml
write $repo/image/hil/guest/harmony-hil-setup.service /etc/systemd/system/harmony-hil-setup.service
write $repo/image/hil/guest/harmony-hil.service /etc/systemd/system/harmony-hil.service
symlink /etc/systemd/system/multi-user.target.wants/harmony-hil-setup.service /etc/systemd/system/harmony-hil-setup.service
symlink /etc/systemd/system/multi-user.target.wants/harmony-hil.service /etc/systemd/system/harmony-hil.service
EOF
extract_part "$disk" 2 "$work/root.ext4"
debugfs -w -f "$work/inject.debugfs" "$work/root.ext4" >/dev/null 2>"$work/inject.err"
e2fsck -fn "$work/root.ext4" >/dev/null 2>&1 || die "root partition damaged by the injection ($work/inject.err)"
debugfs -R 'cat /etc/harmony/board.toml' "$work/root.ext4" 2>/dev/null | cmp -s - "$work/board-qemu.toml" ||
    die "injection failed ($work/inject.err)"
dd if="$work/root.ext4" of="$disk" bs=1M seek=$((r_start / 1048576)) conv=notrunc status=none
rm -f "$work/root.ext4"
sysparts_sha() { # boot and root partitions: must never change on the card
    {
        dd if="$disk" bs=1M iflag=skip_bytes,count_bytes skip="$b_start" count="$(part_field "$disk" 1 size)" status=none
        dd if="$disk" bs=1M iflag=skip_bytes,count_bytes skip="$r_start" count="$r_size" status=none
    } | sha256sum | cut -c1-16
}
sys_sha0=$(sysparts_sha)
# From here on every outcome is a check in the verdict, not a reason to stop.
set +e

# ---------------------------------------------------------------------------------------------
# shellcheck disable=SC2054 # the commas belong to qemu's option syntax
qemu_base=(
    qemu-system-aarch64 -M virt -cpu cortex-a72 -smp 2 -m 1024 -display none -no-reboot
    -kernel "$work/vmlinuz" -initrd "$work/initrd.img"
    -drive "file=$disk,format=raw,if=none,id=card,cache=writeback" -device virtio-blk-pci,drive=card
    -device pcie-root-port,id=rp1,chassis=1,slot=1
    -chardev pty,id=gps0 -device pci-serial,chardev=gps0,bus=rp1,id=gpsdev
    -device qemu-xhci,id=xhci -chardev pty,id=radio0 -device usb-serial,chardev=radio0,bus=xhci.0
    -device i6300esb -watchdog-action reset
    -device virtio-rng-pci
)
# The Pi's command line (image/boot/cmdline.txt.in) with qemu's console, and no getty on it.
cmdline="console=ttyAMA0 root=LABEL=$LABEL_ROOT rootfstype=ext4 ro rootwait fsck.repair=yes net.ifnames=0 systemd.firstboot=off panic=-1 systemd.mask=serial-getty@ttyAMA0.service systemd.show_status=0 quiet"
rig=(python3 "$repo/image/hil/host-rig.py" --gps-log "$repo/fixtures/nmea/quectel-l76k-nmea.log"
    --ground "$host_bin" --timeout "$timeout")
$quiet && rig+=(--quiet)

ssh_args=()
ssh_rig=()
ssh_append=
if [ -n "$ssh_key" ]; then
    [ -f "$ssh_key" ] || die "--ssh-key $ssh_key: no such file"
    debugfs -R 'stat /home/pi/.ssh/authorized_keys' "$disk?offset=$r_start" 2>&1 | grep -q '^Inode:' ||
        die "--ssh-key: the image has no authorized key for pi (build it with --authorized-key)"
    ssh_port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    ssh_opts="-p $ssh_port -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o BatchMode=yes -o ConnectTimeout=90 -o LogLevel=ERROR"
    # The sudo policy the image was built with (its manifest): limited (only the listed
    # commands, e.g. reading the uplink key) or --passwordless-sudo (everything).
    sudo_policy=$(echo "$manifest" | sed -n 's/^sudo: *\([a-z]*\).*/\1/p')
    ssh_cmd="ssh -i '$ssh_key' -o IdentitiesOnly=yes $ssh_opts pi@127.0.0.1 'id; sudo -n true && echo sudo-all; echo key-bytes=\$(sudo -n cat /var/lib/harmony/uplink.key | wc -c); harmony ctl status | head -n 3' >'$work/ssh-key.txt' 2>&1; echo \$? >'$work/ssh-key.rc';"
    ssh_cmd+=" ssh -o PubkeyAuthentication=no -o PreferredAuthentications=password,keyboard-interactive $ssh_opts pi@127.0.0.1 true >'$work/ssh-password.txt' 2>&1; echo \$? >'$work/ssh-password.rc'"
    ssh_args=(-nic "user,model=virtio-net-pci,hostfwd=tcp:127.0.0.1:$ssh_port-:22")
    ssh_rig=(--exec-at "request ssh-check" "$ssh_cmd")
    ssh_append=" harmony.ssh=1"
fi
run_boot() { # run_boot N MODE HILDISK
    local dir=$work/boot$1 net=() exe=() app=
    mkdir -p "$dir"
    if [ "$1" = 1 ] && [ -n "$ssh_key" ]; then
        net=("${ssh_args[@]}")
        exe=("${ssh_rig[@]}")
        app=$ssh_append
    fi
    [ ${#net[@]} -gt 0 ] || net=(-nic none)
    "${rig[@]}" --work "$dir" "${exe[@]}" -- "${qemu_base[@]}" "${net[@]}" \
        -drive "file=$3,format=raw,if=none,id=hil" -device virtio-blk-pci,drive=hil \
        -append "$cmdline harmony.hil=$2$app" || true
    debugfs -R "rdump /results $dir" "$3" >/dev/null 2>&1
    [ -d "$dir/results" ] || mkdir -p "$dir/results"
}
data_copy() { # data_copy OUT.ext4: the data partition as it is now on the card
    extract_part "$disk" 3 "$1"
}
log_check() { # log_check DIR [--repair]: harmony log check over every session
    "$host_bin" log check "$@" 2>&1
}
logsum() { # logsum LOG_CHECK_OUTPUT: "N files ok (R records), T torn tails, C corrupt lines"
    awk '/: ok, [0-9]+ records$/ { n++; r += $(NF - 1) } /torn tail/ { t++ } /CORRUPT/ { c++ }
        END { printf "%d files ok (%d records), %d torn tails, %d corrupt lines", n, r, t, c }' "$1"
}

# ---------------------------------------------------------------------------------------------
step "boot 1: the firmware under systemd against the stand-in devices"
t_boot1=$(date +%s)
run_boot 1 full "$work/hil1.ext4"
say "boot 1 took $(($(date +%s) - t_boot1)) s"
out1=$work/boot1
outcome1=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["outcome"])' "$out1/rig.json" 2>/dev/null || echo none)
hcheck "boot 1 ran to the end and powered off" "$([ "$outcome1" = poweroff ] && echo 0 || echo 1)" "$outcome1"
[ "$(sysparts_sha)" = "$sys_sha0" ]
hcheck "boot and root partitions unchanged by boot 1 (never written)" $?

step "boot 1: collect and check the logs"
data_copy "$work/data1.ext4"
e2fsck -fn "$work/data1.ext4" >"$work/fsck1.txt" 2>&1
hcheck "data partition clean after an orderly shutdown (e2fsck -fn)" $? "$(tail -n1 "$work/fsck1.txt")"
rm -rf "$work/data1"
mkdir -p "$work/data1"
debugfs -R "rdump / $work/data1" "$work/data1.ext4" >/dev/null 2>&1
# Not the logger's: lost+found, the card's keys (checked in the guest) and the signing state.
rm -rf "$work/data1/lost+found" "$work/data1/ssh-host-keys" "$work/data1/uplink.key" \
    "$work/data1/uplink-signing.state"
nsess=$(find "$work/data1" -mindepth 1 -maxdepth 1 -type d | wc -l)
nfiles=$(find "$work/data1" -type f | wc -l)
log_check "$work/data1" >"$work/log-check1.txt"
rc=$?
[ "$nfiles" -gt 0 ] || rc=1
hcheck "harmony log check: every file the logger wrote in boot 1" $rc \
    "$nsess sessions, $nfiles files: $(logsum "$work/log-check1.txt")"
if [ -n "$ssh_key" ]; then
    [ "$(cat "$work/ssh-key.rc" 2>/dev/null)" = 0 ] && grep -q 'uid=.*(pi)' "$work/ssh-key.txt" &&
        grep -q '^key-bytes=32$' "$work/ssh-key.txt"
    hcheck "SSH: pi logs in with the authorized key and fetches the uplink key with sudo" $? "$(head -c 300 "$work/ssh-key.txt" 2>/dev/null | tr '\n' ' ')"
    if [ "$sudo_policy" = passwordless ]; then
        grep -q '^sudo-all$' "$work/ssh-key.txt"
        hcheck "SSH: sudo for everything (built with --passwordless-sudo)" $?
    else
        not_all() { ! grep -q '^sudo-all$' "$work/ssh-key.txt" && [ -s "$work/ssh-key.txt" ]; }
        not_all
        hcheck "SSH: no sudo beyond the listed commands (sudo policy ${sudo_policy:-?})" $?
    fi
    [ "$(cat "$work/ssh-password.rc" 2>/dev/null)" != 0 ] && grep -q 'Permission denied (publickey)' "$work/ssh-password.txt"
    hcheck "SSH: a password login is refused (keys only)" $? "$(head -c 200 "$work/ssh-password.txt" 2>/dev/null | tr '\n' ' ')"
fi
ground_kinds=$(awk '{ print $2 }' "$out1/ground.log" 2>/dev/null | sort | uniq -c | awk '{ printf "%s=%s ", $2, $1 }')
for k in HEARTBEAT GPS RANGE; do
    grep -q " $k " "$out1/ground.log" 2>/dev/null
    hcheck "ground station on the host decoded $k from the radio (usb-serial)" $? "${ground_kinds:-nothing decoded}"
done

# ---------------------------------------------------------------------------------------------
if $powercut; then
    step "boot 2: power cut while logging a flooded vcan0"
    mkhil "$work/hil2.ext4"
    t_boot2=$(date +%s)
    run_boot 2 powercut "$work/hil2.ext4"
    say "boot 2 took $(($(date +%s) - t_boot2)) s"
    outcome2=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["outcome"])' "$work/boot2/rig.json" 2>/dev/null || echo none)
    hcheck "boot 2 logged and had its power cut" "$([ "$outcome2" = powercut ] && echo 0 || echo 1)" "$outcome2"
    [ "$(sysparts_sha)" = "$sys_sha0" ]
    hcheck "boot and root partitions unchanged by the power cut" $?

    step "boot 2: recover and check the logs"
    data_copy "$work/data2.ext4"
    e2fsck -fn "$work/data2.ext4" >"$work/fsck2-before.txt" 2>&1
    e2fsck -fy "$work/data2.ext4" >"$work/fsck2.txt" 2>&1
    rc=$?
    hcheck "data partition: journal replay at the next mount/fsck fixes everything (e2fsck -fy exit $rc)" \
        "$([ $rc -le 1 ] && echo 0 || echo 1)" "$(grep -c 'recovering journal' "$work/fsck2.txt") journal recovery; $(tail -n1 "$work/fsck2.txt")"
    e2fsck -fn "$work/data2.ext4" >/dev/null 2>&1
    hcheck "data partition clean after recovery" $?
    rm -rf "$work/data2"
    mkdir -p "$work/data2"
    debugfs -R "rdump / $work/data2" "$work/data2.ext4" >/dev/null 2>&1
    rm -rf "$work/data2/lost+found" "$work/data2/ssh-host-keys" "$work/data2/uplink.key" \
        "$work/data2/uplink-signing.state"
    cut_sess=$(sed -n 's/^powercut_session=//p' "$work/boot2/results/summary.txt" 2>/dev/null)
    # Sessions written before boot 2 must be byte-identical.
    same=0
    while read -r s; do
        diff -r "$work/data1/$s" "$work/data2/$s" >/dev/null 2>&1 || same=1
    done < <(find "$work/data1" -mindepth 1 -maxdepth 1 -type d -printf '%f\n')
    hcheck "sessions of boot 1 unchanged by the power cut" $same
    if [ -n "$cut_sess" ] && [ -d "$work/data2/$cut_sess" ]; then
        log_check "$work/data2/$cut_sess" >"$work/log-check2.txt"
        rc=$?
        grep -qiE 'corrupt|mid-file|line [0-9]+:' "$work/log-check2.txt" && mid=1 || mid=0
        hcheck "power-cut session: nothing damaged but the unsynced tail" \
            "$([ $mid -eq 0 ] && echo 0 || echo 1)" "log check exit $rc: $(logsum "$work/log-check2.txt")"
        cp -a "$work/data2/$cut_sess" "$work/cut-repaired"
        log_check "$work/cut-repaired" --repair >"$work/log-check2-repair.txt"
        log_check "$work/cut-repaired" >"$work/log-check2-after.txt"
        hcheck "power-cut session passes harmony log check after --repair" $? "$(logsum "$work/log-check2-after.txt")"
        cut_bytes=$(du -sb "$work/data2/$cut_sess" | cut -f1)
        kept=$(cat "$work/data2/$cut_sess"/can.*.log 2>/dev/null | wc -l)
        # How much was lost: from the last CAN record on the card to the moment the power went
        # (the guest's clock at the marker plus the host's random delay before the kill).
        last_ts=$(tail -n1 "$(ls "$work/cut-repaired"/can.*.log | tail -n1)" | sed -n 's/^(\([0-9.]*\)).*/\1/p')
        cut_rt=$(sed -n 's/^powercut_realtime=//p' "$work/boot2/results/summary.txt")
        cut_delay=$(python3 -c 'import json,sys
for e in json.load(open(sys.argv[1]))["events"]:
    if e["event"] == "power-cut": print(e["after_marker_s"])' "$work/boot2/rig.json" 2>/dev/null)
        # The last CAN record on the card, in seconds after the guest printed its marker (the
        # guest's clock); the host cut the power a random cut_delay after reading the marker
        # from the console (which itself lags the guest by up to ~0.1 s).
        last_after_marker=$(awk -v a="$last_ts" -v b="$cut_rt" 'BEGIN { if (a == "" || b == "") print "?"; else printf "%.2f", a - b }')
    else
        hcheck "power-cut session found on the data partition" 1 "${cut_sess:-no session name}"
    fi
fi
step_end

# ---------------------------------------------------------------------------------------------
sum1=$out1/results/summary.txt
val() { sed -n "s/^$1=//p" "$2" 2>/dev/null | tail -n1; }
{
    echo
    echo "==== scripts/hil-qemu.sh: $(basename "$image")"
    echo "-- guest checks (boot 1)"
    cat "$out1/results/checks.txt" 2>/dev/null || echo "FAIL no results from the guest"
    [ -f "$work/boot2/results/checks.txt" ] && { echo "-- guest checks (boot 2)"; cat "$work/boot2/results/checks.txt"; }
    echo "-- host checks"
    cat "$host_checks"
    echo "-- figures"
    for b in 1 2; do
        f=$work/boot$b/results/summary.txt
        [ -f "$f" ] || continue
        echo "boot $b: first record on disk at uptime $(val first_record_uptime "$f") s ($(val first_record_file "$f")); harmony started at $(val harmony_start_uptime "$f") s, READY=1 at $(val harmony_active_uptime "$f") s; the rig's own device set-up before it took $(awk -v a="$(val setup_start_uptime "$f")" -v b="$(val setup_done_uptime "$f")" 'BEGIN { printf "%.1f", b - a }') s"
    done
    echo "CPU share at CAN frame rates (guest: $(val bench_nproc "$sum1") emulated cortex-a72 cores, TCG; % of one core):"
    for r in 0 2000 4000 8000 16000; do
        printf '  cangen asked %5d/s: on vcan0 %6s/s, read by harmony %6s/s, harmony %5s %%, cangen %5s %%, guest busy %5s %% of all cores, queue drops %s\n' \
            "$r" "$(val "bench_${r}_offered_fps" "$sum1")" "$(val "bench_${r}_read_fps" "$sum1")" \
            "$(val "bench_${r}_harmony_cpu_pct_one_core" "$sum1")" "$(val "bench_${r}_cangen_cpu_pct_one_core" "$sum1")" \
            "$(val "bench_${r}_guest_busy_pct_all_cores" "$sum1")" "$(val "bench_${r}_queue_dropped" "$sum1")"
    done
    echo "service watchdog restart after freeze: $(val watchdog_restart_s "$sum1") s"
    echo "data partition after first boot: $(val data_fs_mib "$sum1") MiB"
    [ -n "${cut_bytes:-}" ] && echo "power cut with cangen flooding vcan0 (16,000 frames/s asked, $(val powercut_can_fps "$work/boot2/results/summary.txt") frames/s reached): session $cut_sess kept $cut_bytes bytes ($kept CAN lines); the last CAN record on the card is from ${last_after_marker} s after the guest's marker; the host cut the power ${cut_delay:-?} s after reading it"
    cat "$TIMES_FILE"
    echo "total: $(elapsed) s; work directory: $work"
} | tee "$work/verdict.txt"
nfail=$(cat "$out1/results/checks.txt" "$work/boot2/results/checks.txt" "$host_checks" 2>/dev/null | grep -c '^FAIL')
[ -f "$out1/results/checks.txt" ] || nfail=$((nfail + 1))
if [ "$nfail" -eq 0 ]; then
    echo "VERDICT: PASS"
    exit 0
else
    echo "VERDICT: FAIL ($nfail failed checks; logs in $work)"
    exit 1
fi
