#!/bin/bash
# Guest side of scripts/hil-qemu.sh, run by harmony-hil.service once harmony.service is up:
# the scenario, then power-off. The mode comes from the kernel command line (harmony.hil=):
#
#   full      the firmware under systemd against the stand-in devices: time to the first
#             record; CAN interface down and up; GPS device unplugged and plugged back (PCIe
#             hot-unplug of the 16550, done by the host on request); the service watchdog
#             (a frozen firmware is killed and restarted by systemd); CPU share at 16,000 CAN
#             frames/s (cangen); a clean stop; then the HIL tests of tests/hil.rs as the
#             service user with the unit's groups (dialout, i2c, gpio)
#   powercut  the firmware logging at the saturated CAN rate, then the host pulls the plug
#
# Requests to the host and progress are "@@HIL ..." lines on the console; results go to the
# HIL disk (/run/hil/results), which the host reads after the guest is off.
set -uo pipefail
H=/run/hil
R=$H/results
D=/var/lib/harmony
mode=$(sed -n 's/.*harmony\.hil=\([a-z]*\).*/\1/p' /proc/cmdline)
up() { cut -d' ' -f1 /proc/uptime; }
mark() { echo "@@HIL $*" >/dev/console; }
kv() { echo "$1=$2" >>"$R/summary.txt"; }
check() { # check NAME CONDITION-STATUS DETAIL
    if [ "$2" -eq 0 ]; then
        echo "ok $1${3:+ ($3)}" >>"$R/checks.txt"
        mark ok "$1${3:+ ($3)}"
    else
        echo "FAIL $1${3:+ ($3)}" >>"$R/checks.txt"
        mark FAIL "$1${3:+ ($3)}"
    fi
}
state() { cat "/run/harmony/state/$1.state" 2>/dev/null; }
metric() { state "$1" | sed -n "s/^metric\.$2=//p" | head -n1; }
note() { state "$1" | sed -n 's/^note=//p' | head -n1; }
main_pid() { systemctl show -p MainPID --value harmony.service; }
ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat" 2>/dev/null || echo 0; }
lines() { cat "$D"/latest/$1 2>/dev/null | wc -l; }
snapshot() { # snapshot NAME: every state file, for the record
    { echo "# $1 at uptime $(up)"; for f in /run/harmony/state/*.state; do echo "## $f"; cat "$f"; done; } \
        >>"$R/states.txt" 2>&1
}
not() { ! "$@"; }
gps_hw() { readlink -f /sys/class/tty/ttyS0/device 2>/dev/null | grep -q '/pci'; }
wait_for() { # wait_for SECONDS COMMAND...: polls every 0.2 s
    local end=$(($(date +%s) + $1))
    shift
    until "$@"; do
        [ "$(date +%s)" -lt "$end" ] || return 1
        sleep 0.2
    done
}
finish() {
    mark phase collect
    journalctl -b --no-pager >"$R/journal.txt" 2>&1
    dmesg >"$R/dmesg.txt" 2>&1
    systemctl --failed --no-legend --plain >"$R/failed-units.txt" 2>&1
    findmnt -o TARGET,SOURCE,FSTYPE,OPTIONS >"$R/mounts.txt" 2>&1
    systemd-analyze >"$R/systemd-analyze.txt" 2>&1
    systemd-analyze blame >>"$R/systemd-analyze.txt" 2>&1
    kv end_uptime "$(up)"
    mark "done" "$(up)"
    sync
    umount "$H" 2>/dev/null || umount -l "$H"
    systemctl poweroff
    exit 0
}
trap finish EXIT

mark run-start "$mode $(up)"
kv mode "$mode"
kv harmony_version "$(/usr/local/bin/harmony --version)"
kv kernel "$(uname -r)"
kv harmony_active_uptime "$(awk -v t="$(systemctl show -p ActiveEnterTimestampMonotonic --value harmony)" 'BEGIN { printf "%.2f", t / 1e6 }')"
kv harmony_start_uptime "$(awk -v t="$(systemctl show -p ExecMainStartTimestampMonotonic --value harmony)" 'BEGIN { printf "%.2f", t / 1e6 }')"

# Nothing below means anything without the firmware running.
if ! systemctl is-active --quiet harmony.service; then
    systemctl status --no-pager --full harmony.service >"$R/harmony-status.txt" 2>&1
    check "harmony.service active after boot" 1 "$(systemctl show -p ActiveState -p SubState -p Result --value harmony | tr '\n' ' ')"
    exit 0
fi

# The first record (hil-first-record.service polls since before harmony started).
wait_for 120 grep -q '^first_record_uptime=' "$R/summary.txt"
check "first record on disk" $? "$(sed -n 's/^first_record_\(.*\)=\(.*\)/\1 \2/p' "$R/summary.txt" | tr '\n' ' ')"

if [ "$mode" = powercut ]; then
    # Saturated bus while the plug is pulled: the most unsynced data there can be. (cangen is
    # asked for 16,000 frames/s; the emulated guest delivers what it can, recorded here.)
    bash "$H/guest/replay.sh" stop hil-canplayer
    iface=$(sed -n 's/^interface *= *"\(.*\)"/\1/p' /etc/harmony/board.toml | head -n1)
    bash "$H/guest/replay.sh" flood hil-flood 16000
    sleep 2
    x0=$(cat "/sys/class/net/$iface/statistics/tx_packets")
    t0=$(date +%s.%N)
    sleep 10
    x1=$(cat "/sys/class/net/$iface/statistics/tx_packets")
    kv powercut_can_fps "$(awk -v a="$x0" -v b="$x1" -v t0="$t0" -v t1="$(date +%s.%N)" 'BEGIN { printf "%.0f", (b - a) / (t1 - t0) }')"
    kv powercut_session "$(readlink "$D/latest")"
    ls -l "$D/latest/" >"$R/powercut-files.txt" 2>&1
    kv powercut_uptime "$(up)"
    kv powercut_realtime "$(date +%s.%N)"
    sync -f "$R/summary.txt"
    trap - EXIT
    mark powercut "$(up)"
    sleep 120
    exit 0
fi

# ---- the system as booted -------------------------------------------------------------------
mark phase system
findmnt -no OPTIONS / | grep -qE '(^|,)ro(,|$)'
check "root file system mounted read-only" $? "$(findmnt -no OPTIONS /)"
findmnt -no SOURCE,OPTIONS "$D" | grep -q 'rw'
check "data partition mounted read-write on $D" $? "$(findmnt -no SOURCE,FSTYPE,OPTIONS "$D" | tr -s ' ')"
size_mib=$(($(df -B1 --output=size "$D" | tail -n1) / 1048576))
kv data_fs_mib "$size_mib"
[ "$size_mib" -gt 512 ]
check "data partition grown to the end of the disk at first boot" $? "$size_mib MiB file system"
touch /usr/hil-probe 2>/dev/null
[ $? -ne 0 ]
check "writing to the system fails (read-only)" $?
failed=$(systemctl --failed --no-legend --plain | awk '{ print $1 }' | tr '\n' ' ')
[ -z "$failed" ]
check "no failed units" $? "${failed:-none}"
kv system_state "$(systemctl is-system-running)"
wd=$(cat /sys/class/watchdog/watchdog0/identity 2>/dev/null)
kv watchdog_identity "${wd:-none}"
kv runtime_watchdog_usec "$(systemctl show -p RuntimeWatchdogUSec --value)"
[ -n "$wd" ] && [ "$(cat /sys/class/watchdog/watchdog0/state 2>/dev/null)" = active ]
check "hardware watchdog open by systemd (RuntimeWatchdogSec)" $? "${wd:-no watchdog0}, $(systemctl show -p RuntimeWatchdogUSec --value) us"
ps -o user=,group=,supgrp= -p "$(main_pid)" >"$R/harmony-credentials.txt" 2>&1
[ "$(ps -o user= -p "$(main_pid)")" = harmony ]
check "firmware runs as user harmony" $? "$(tr -s ' ' <"$R/harmony-credentials.txt")"
for dev in /dev/ttyS0 /dev/ttyUSB0 /dev/i2c-"$(sed -n 's/^i2c_bus *= *//p' /etc/harmony/board.toml)"; do
    kv "perm_${dev##*/}" "$(stat -c '%A %U:%G' "$dev" 2>/dev/null || echo missing)"
done
ls -la /run/harmony /run/harmony/state >"$R/run-dir.txt" 2>&1
[ -S /run/harmony/control.sock ]
check "control socket in /run/harmony" $? "$(stat -c '%A %U:%G' /run/harmony/control.sock 2>/dev/null)"
/usr/local/bin/harmony ctl --run-dir /run/harmony status >"$R/ctl-status.txt" 2>&1
check "harmony ctl status answers" $?
# Issue #11: this card's own keys, made at its first boot on the data partition.
[ "$(stat -c '%s %a %U' "$D/uplink.key" 2>/dev/null)" = "32 600 harmony" ]
check "uplink signing key of this card on the data partition (32 bytes, 0600, harmony)" $? \
    "$(stat -c '%s bytes %a %U' "$D/uplink.key" 2>&1)"
note uplink | grep -q ', signed$'
check "the uplink signs with it" $? "$(note uplink)"
if systemctl -q is-enabled ssh.service 2>/dev/null; then
    hostkeys_ok() {
        [ "$(stat -c '%U %a' "$D/ssh-host-keys")" = "root 700" ] &&
            ssh-keygen -l -f "$D/ssh-host-keys/ssh_host_ed25519_key" >/dev/null &&
            not ls /etc/ssh/ssh_host_*_key >/dev/null 2>&1
    }
    hostkeys_ok
    check "SSH host keys of this card on the data partition, none in the image" $? \
        "$(ssh-keygen -l -f "$D/ssh-host-keys/ssh_host_ed25519_key" 2>&1)"
    kv ssh_host_key_ed25519 "$(ssh-keygen -l -f "$D/ssh-host-keys/ssh_host_ed25519_key" 2>&1)"
fi
# SSH (only when the image has an authorized key and the host has its private key): the host
# logs in as pi with the key (and runs harmony ctl and sudo), and fails with a password.
if [ -f /home/pi/.ssh/authorized_keys ] && grep -qw 'harmony.ssh=1' /proc/cmdline; then
    mark request ssh-check
    wait_for 120 bash -c "journalctl -b -u ssh --no-pager | grep -q 'Accepted publickey for pi'"
    check "SSH login as pi with the authorized key" $? "$(journalctl -b -u ssh --no-pager | grep 'Accepted publickey' | tail -n1 | sed 's/.*: //')"
    sleep 3
fi
sleep 5
snapshot steady
for p in gps rangefinder can; do kv "note_$p" "$(note $p)"; done
[ "$(metric gps sentences)" -gt 0 ] 2>/dev/null
check "GPS sentences from the host's simulator on /dev/ttyS0" $? "$(metric gps sentences) sentences, $(metric gps bad_checksum) bad checksums"
[ "$(metric rangefinder readings)" -gt 0 ] 2>/dev/null
check "rangefinder readings from i2c-stub" $? "$(metric rangefinder readings) readings, $(metric rangefinder nacks) NACKs"
[ "$(metric can frames)" -gt 0 ] 2>/dev/null
check "CAN frames from vcan0" $? "$(metric can frames) frames"

# ---- CAN: the interface goes down and comes back -----------------------------------------------
mark phase can-down-up
iface=$(sed -n 's/^interface *= *"\(.*\)"/\1/p' /etc/harmony/board.toml | head -n1)
f0=$(metric can frames)
r0=$(metric can reopens)
ip link set "$iface" down
mark can-down "$(up)"
sleep 6
kv can_note_while_down "$(note can)"
f_down=$(metric can frames)
ip link set "$iface" up
mark can-up "$(up)"
sleep 12
f1=$(metric can frames)
r1=$(metric can reopens)
kv can_frames_before_down "$f0"
kv can_frames_at_up "$f_down"
kv can_frames_12s_after_up "$f1"
kv can_reopens "$r0 -> $r1"
[ "$f1" -gt "$f_down" ]
check "CAN frames again after $iface went down and up" $? "$((f1 - f_down)) frames in the 12 s after up; reopens $r0 -> $r1"

# ---- GPS: the device disappears and comes back ---------------------------------------------
mark phase gps-unplug
s0=$(metric gps sentences)
mark request gps-unplug
# /dev/ttyS0 itself stays: the 8250 driver keeps its first 4 ports as placeholders, which
# answer open() with EIO once the hardware is gone (as a USB receiver's node disappears).
wait_for 40 not gps_hw
check "GPS UART removed (PCIe hot-unplug of the 16550 behind /dev/ttyS0)" $? "at uptime $(up)"
sleep 8
kv gps_note_while_gone "$(note gps)"
s_gone=$(metric gps sentences)
mark request gps-replug
wait_for 40 gps_hw
check "GPS UART back (PCIe hot-plug, /dev/ttyS0 on the 16550 again)" $? "at uptime $(up)"
sleep 12
s1=$(metric gps sentences)
kv gps_sentences_before_unplug "$s0"
kv gps_sentences_at_replug "$s_gone"
kv gps_sentences_12s_after_replug "$s1"
kv gps_reopens "$(metric gps reopens)"
[ "$s1" -gt "$s_gone" ]
check "GPS sentences again after the device came back" $? "$((s1 - s_gone)) sentences in 12 s; reopens $(metric gps reopens); note while gone: $(sed -n 's/^gps_note_while_gone=//p' "$R/summary.txt")"

# ---- the service watchdog: a frozen firmware is restarted by systemd -----------------------
mark phase watchdog
n0=$(systemctl show -p NRestarts --value harmony)
pid0=$(main_pid)
t0=$(date +%s.%N)
[ "$pid0" -gt 1 ] && kill -STOP "$pid0"
mark firmware-frozen "$pid0"
restarted() {
    local p
    p=$(main_pid)
    [ "$(systemctl show -p NRestarts --value harmony)" -gt "$n0" ] && [ "$p" != 0 ] && [ "$p" != "$pid0" ] &&
        [ "$(systemctl show -p ActiveState --value harmony)" = active ]
}
wait_for 90 restarted
ok=$?
t1=$(date +%s.%N)
wd_lines=$(journalctl -b -u harmony --no-pager | grep -ci 'watchdog timeout')
kv watchdog_restart_s "$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')"
[ $ok -eq 0 ] && [ "$wd_lines" -gt 0 ]
check "frozen firmware killed by the service watchdog and restarted" $? "$(sed -n 's/^watchdog_restart_s=//p' "$R/summary.txt") s, NRestarts $n0 -> $(systemctl show -p NRestarts --value harmony), journal: $(journalctl -b -u harmony --no-pager | grep -i 'watchdog timeout' | tail -n1 | sed 's/.*: //')"
sleep 5

# ---- CPU share at the saturated CAN rate ---------------------------------------------------
# cangen offers 0 (baseline: GPS, rangefinder, uplink only), 2,000 .. 16,000 frames/s (16,000 =
# the board's worst case, CAN_WORST_FPS); for
# each rate: what reached vcan0, what the firmware read, its CPU (utime + stime of all its
# threads, % of one core), the whole guest's CPU, the firmware's queue drops.
mark phase cpu-benchmark
bash "$H/guest/replay.sh" stop hil-canplayer
hz=$(getconf CLK_TCK)
iface_stats=/sys/class/net/$iface/statistics
bench_rate() { # bench_rate FPS SECONDS (0: no CAN traffic, the firmware's baseline)
    [ "$1" -gt 0 ] && bash "$H/guest/replay.sh" flood hil-flood "$1"
    sleep 3
    local pid cp_pid u n s i w q sq st busy0 all0 busy1 all1 h0 h1 c0 c1 f0 f1 x0 x1 d0 d1 t0 t1
    pid=$(main_pid)
    cp_pid=$(systemctl show -p MainPID --value hil-flood)
    read -r _ u n s i w q sq st _ </proc/stat
    busy0=$((u + n + s + q + sq + st)); all0=$((busy0 + i + w))
    h0=$(ticks "$pid"); c0=$(ticks "$cp_pid"); f0=$(metric can frames)
    x0=$(cat "$iface_stats/tx_packets"); d0=$(state can | sed -n 's/^metric\.queue\.[a-z_]*logger\.dropped=//p' | head -n1)
    t0=$(date +%s.%N)
    sleep "$2"
    t1=$(date +%s.%N)
    read -r _ u n s i w q sq st _ </proc/stat
    busy1=$((u + n + s + q + sq + st)); all1=$((busy1 + i + w))
    h1=$(ticks "$pid"); c1=$(ticks "$cp_pid"); f1=$(metric can frames)
    x1=$(cat "$iface_stats/tx_packets"); d1=$(state can | sed -n 's/^metric\.queue\.[a-z_]*logger\.dropped=//p' | head -n1)
    bash "$H/guest/replay.sh" stop hil-flood
    awk -v r="$1" -v t0="$t0" -v t1="$t1" -v h0="$h0" -v h1="$h1" -v c0="$c0" -v c1="$c1" -v hz="$hz" \
        -v f0="$f0" -v f1="$f1" -v x0="$x0" -v x1="$x1" -v b0="$busy0" -v b1="$busy1" -v a0="$all0" \
        -v a1="$all1" -v d0="${d0:-0}" -v d1="${d1:-0}" 'BEGIN {
            dt = t1 - t0
            printf "bench_%d_offered_fps=%.0f\n", r, (x1 - x0) / dt
            printf "bench_%d_read_fps=%.0f\n", r, (f1 - f0) / dt
            printf "bench_%d_harmony_cpu_pct_one_core=%.1f\n", r, 100 * (h1 - h0) / hz / dt
            printf "bench_%d_cangen_cpu_pct_one_core=%.1f\n", r, 100 * (c1 - c0) / hz / dt
            printf "bench_%d_guest_busy_pct_all_cores=%.1f\n", r, 100 * (b1 - b0) / (a1 - a0)
            printf "bench_%d_queue_dropped=%d\n", r, d1 - d0
        }' >"$R/bench-$1.txt"
    cat "$R/bench-$1.txt" >>"$R/summary.txt"
    mark bench "$(tr '\n' ' ' <"$R/bench-$1.txt")"
}
for rate in 0 2000 4000 8000 16000; do bench_rate $rate 15; done
snapshot cpu-benchmark
kv bench_nproc "$(nproc)"
bash "$H/guest/replay.sh" start hil-canplayer "$H/can/candump.log"
sleep 3

# ---- clean stop ----------------------------------------------------------------------------
mark phase stop
t0=$(date +%s.%N)
systemctl stop harmony.service
kv stop_seconds "$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')"
res=$(systemctl show -p Result --value harmony)
st=$(systemctl show -p ExecMainStatus --value harmony)
[ "$res" = success ] && [ "$st" = 0 ]
check "firmware stops cleanly on SIGTERM (systemctl stop)" $? "Result=$res, exit status $st, $(sed -n 's/^stop_seconds=//p' "$R/summary.txt") s"

# ---- the HIL tests of tests/hil.rs, as the service user --------------------------------------
mark phase hil-tests
bus=$(sed -n 's/^i2c_bus *= *//p' /etc/harmony/board.toml)
(
    cd /tmp &&
        setpriv --reuid=harmony --regid=harmony --groups=dialout,i2c,gpio \
            env HOME=/tmp TMPDIR=/tmp HARMONY_HIL=1 HARMONY_HIL_GPS=/dev/ttyS0 HARMONY_HIL_GPS_BAUD=115200 \
            HARMONY_HIL_I2C_BUS="$bus" HARMONY_HIL_RANGE_MODEL=lidar-lite-v3 HARMONY_HIL_CAN="$iface" \
            "$H/hil" --test-threads=1 --nocapture
) >"$R/hil-tests.txt" 2>&1
rc=$?
kv hil_tests_exit "$rc"
sed -n 's/^test \(.*\) \.\.\. \(.*\)$/@@HIL test \1: \2/p; /^test result/s/^/@@HIL /p' "$R/hil-tests.txt" >/dev/console
check "HIL tests (tests/hil.rs) pass against the kernel's devices" $rc "$(grep '^test result' "$R/hil-tests.txt")"
exit 0
