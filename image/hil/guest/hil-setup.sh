#!/bin/bash
# Guest side of scripts/hil-qemu.sh, run by harmony-hil-setup.service before harmony.service:
# the stand-ins for the Pi's devices, through real kernel interfaces.
#
#   I2C   i2c-stub (built from the image kernel's source, plain I2C added) with a chip at 0x62
#         holding LIDAR-Lite v3 registers: STATUS 0x01 = 0x20 (healthy, not busy), distance in
#         cm big-endian at 0x8f/0x90 (where the driver's auto-increment read looks) and
#         0x0f/0x10, signal strength 0x0e; a profile changes the distance once a second
#   CAN   vcan0, fed by canplayer replaying the project's capture (fixtures/can/) forever
#   GPS   /dev/ttyS0 (pci-serial) is fed from the host; nothing to do here
#   radio /dev/ttyUSB0 (usb-serial) goes to the host's ground station; nothing to do here
set -euo pipefail
H=/run/hil
R=$H/results
mkdir -p "$R"
up() { cut -d' ' -f1 /proc/uptime; }
mark() { echo "@@HIL $*" >/dev/console; }
kv() { echo "$1=$2" >>"$R/summary.txt"; }

mark setup-start "$(up)"
kv setup_start_uptime "$(up)"
board=/etc/harmony/board.toml
bus=$(sed -n 's/^i2c_bus *= *//p' "$board" | head -n1)
iface=$(sed -n 's/^interface *= *"\(.*\)"/\1/p' "$board" | head -n1)

# --- I2C ------------------------------------------------------------------------------------
modprobe i2c-dev
insmod "$H/i2c-stub.ko" chip_addr=0x62
n=
for a in /sys/bus/i2c/devices/i2c-*; do
    if [ "$(cat "$a/name")" = "SMBus stub driver" ]; then n=${a##*/i2c-}; fi
done
if [ "$n" != "$bus" ]; then
    mark fail "i2c-stub is bus ${n:-none}; the board file says i2c_bus = $bus"
    exit 1
fi
udevadm settle
i2cset -y "$bus" 0x62 0x01 0x20 # STATUS: health ok, not busy
i2cset -y "$bus" 0x62 0x0e 0x60 # signal strength
for r in 0x8f 0x0f; do i2cset -y "$bus" 0x62 $r 0x00; done
for r in 0x90 0x10; do i2cset -y "$bus" 0x62 $r 123; done
systemd-run --quiet --unit=hil-range-profile --description="HIL: rangefinder distance profile" \
    /bin/bash "$H/guest/range-profile.sh" "$bus"
kv i2c_bus "$bus"
kv i2c_adapter "$(cat /sys/bus/i2c/devices/i2c-"$bus"/name)"
kv i2c_dev_perms "$(stat -c '%A %U:%G' /dev/i2c-"$bus")"

# --- CAN ------------------------------------------------------------------------------------
modprobe vcan
ip link add dev "$iface" type vcan
ip link set "$iface" up
bash "$H/guest/replay.sh" start hil-canplayer "$H/can/candump.log"
kv can_interface "$iface"

# --- where the first record will show up -----------------------------------------------------
ls -1 /var/lib/harmony >"$R/sessions-before.txt" 2>/dev/null || true
systemd-run --quiet --unit=hil-first-record --description="HIL: time to the first record" \
    /bin/bash "$H/guest/first-record.sh"
mark setup-done "$(up)"
kv setup_done_uptime "$(up)"
