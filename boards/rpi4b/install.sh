#!/bin/sh
# Installs Concurrent Harmony on the Pi from the bundle scripts/deploy.sh copied next to this
# script. Runs ON THE PI, as root: `sudo sh /tmp/harmony-deploy.XXXX/install.sh`.
#
#   --replace-board   overwrite an existing /etc/harmony/board.toml (the old one is kept as
#                     board.toml.bak-DATE); without it an edited board file is left alone and
#                     the new one is written next to it as board.toml.new
#
# DESTDIR=/some/dir installs into a directory tree instead of / and skips the root check (the
# test suite uses it with stand-ins for systemctl & co. on PATH).
set -eu

here=$(cd "$(dirname "$0")" && pwd)
root=${DESTDIR:-}
replace_board=false
for a in "$@"; do
    case $a in
        --replace-board) replace_board=true ;;
        *) echo "install.sh: unknown option $a" >&2; exit 2 ;;
    esac
done

say() { printf 'install: %s\n' "$*"; }
die() { printf 'install: ERROR: %s\n' "$*" >&2; exit 1; }
have() { command -v "$1" >/dev/null 2>&1; }

[ -n "$root" ] || [ "$(id -u)" -eq 0 ] || die "must run as root (sudo sh $0)"
arch=$(uname -m)
[ "$arch" = aarch64 ] || die "this machine is $arch; the firmware is built for aarch64"
for f in harmony harmony.service board.toml harmony-sysusers.conf 60-harmony-devices.rules \
    harmony-modules.conf 80-can0.network harmony-uplink-key.service make-uplink-key; do
    [ -f "$here/$f" ] || die "bundle incomplete: $here/$f missing"
done
# The new binary must run here before it replaces the one that flies.
chmod 0755 "$here/harmony"
version=$("$here/harmony" --version) || die "the new binary does not run on this machine"
say "installing $version"

# Users and groups.
install -D -m 0644 "$here/harmony-sysusers.conf" "$root/etc/sysusers.d/harmony.conf"
if have systemd-sysusers; then
    if [ -n "$root" ]; then
        systemd-sysusers --root="$root" "$root/etc/sysusers.d/harmony.conf"
    else
        systemd-sysusers /etc/sysusers.d/harmony.conf
    fi
elif [ -z "$root" ]; then
    for g in dialout i2c gpio; do getent group "$g" >/dev/null || groupadd --system "$g"; done
    getent passwd harmony >/dev/null || useradd --system --user-group --home-dir /var/lib/harmony \
        --no-create-home --shell /usr/sbin/nologin --comment "Concurrent Harmony drone firmware" harmony
fi

# Devices: group ownership of I2C/GPIO nodes, i2c-dev and can_raw at boot.
install -D -m 0644 "$here/60-harmony-devices.rules" "$root/etc/udev/rules.d/60-harmony-devices.rules"
install -D -m 0644 "$here/harmony-modules.conf" "$root/etc/modules-load.d/harmony.conf"
if [ -z "$root" ]; then
    modprobe i2c-dev 2>/dev/null || say "note: could not load i2c-dev (no I2C enabled?)"
    modprobe can_raw 2>/dev/null || say "note: could not load can_raw"
    if have udevadm; then
        udevadm control --reload || true
        udevadm trigger --action=change --subsystem-match=i2c-dev --subsystem-match=gpio || true
    fi
fi

# can0 via systemd-networkd.
install -D -m 0644 "$here/80-can0.network" "$root/etc/systemd/network/80-can0.network"
if [ -z "$root" ]; then
    if systemctl is-active --quiet systemd-networkd; then
        networkctl reload || true
    else
        say "note: systemd-networkd is not running, so can0 is not configured from"
        say "      /etc/systemd/network/80-can0.network; see boards/rpi4b/README.md"
    fi
fi

# The binary: written next to the old one and renamed over it, so a crash halfway leaves a
# whole file (and a running firmware keeps its old inode until the restart below).
install -D -m 0755 "$here/harmony" "$root/usr/local/bin/harmony.new"
mv -f "$root/usr/local/bin/harmony.new" "$root/usr/local/bin/harmony"

# The board file: never silently replace one that was edited on the Pi.
board="$root/etc/harmony/board.toml"
install -d -m 0755 "$root/etc/harmony"
if [ ! -e "$board" ]; then
    install -m 0644 "$here/board.toml" "$board"
    say "installed $board"
elif cmp -s "$here/board.toml" "$board"; then
    say "$board unchanged"
    rm -f "$board.new"
elif $replace_board; then
    backup="$board.bak-$(date +%Y%m%d-%H%M%S)"
    cp -p "$board" "$backup"
    install -m 0644 "$here/board.toml" "$board"
    say "replaced $board (previous one kept as $backup)"
else
    install -m 0644 "$here/board.toml" "$board.new"
    say "WARNING: $board differs from the deployed board file and was KEPT;"
    say "         the new one is $board.new (diff them; deploy with --replace-board to overwrite)"
fi

install -D -m 0644 "$here/README.md" "$root/usr/local/share/doc/harmony/README.md" 2>/dev/null || true
install -D -m 0644 "$here/harmony.service" "$root/etc/systemd/system/harmony.service"
# The uplink's signing key of this Pi (issue #11): made before the firmware's first start
# by harmony-uplink-key.service (wanted by harmony.service), never replaced once there.
install -D -m 0755 "$here/make-uplink-key" "$root/usr/local/lib/harmony/make-uplink-key"
install -D -m 0644 "$here/harmony-uplink-key.service" "$root/etc/systemd/system/harmony-uplink-key.service"

status=0
if [ -z "$root" ]; then
    systemctl daemon-reload
    systemctl enable harmony-uplink-key.service harmony.service
    # Type=notify: this returns once the firmware said READY=1, or fails.
    if ! systemctl restart harmony.service; then
        status=1
        say "ERROR: harmony.service did not start; the last log lines:"
        journalctl -u harmony.service -n 30 --no-pager || true
    fi
    systemctl --no-pager --full status harmony.service || true
    say "the ground station needs this Pi's uplink key:"
    say "  ssh pi@<this Pi> sudo cat /var/lib/harmony/uplink.key > uplink.key && chmod 600 uplink.key"
fi

case $here in
    /tmp/harmony-deploy.*) rm -rf "$here" ;;
esac
exit $status
