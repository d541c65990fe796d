#!/bin/sh
# mmdebstrap --customize-hook of the image's base (scripts/build-image.sh): runs on the host
# once every package is installed, before the tree is packed into the cached base tarball.
set -eu
root=$1
info=$root/usr/share/harmony-image
mkdir -p "$info"

# Which archive state the packages came from (the apt lists are deleted after this hook).
for r in "$root"/var/lib/apt/lists/*_InRelease "$root"/var/lib/apt/lists/*_Release; do
    [ -f "$r" ] || continue
    printf '%s: %s\n' "$(basename "$r" | sed 's/_\(In\)\{0,1\}Release$//; s/_/\//g')" \
        "$(sed -n 's/^Date: //p' "$r" | head -n1)"
done | sort -u >"$info/archive-dates.txt"

# Per-image secrets and identity are made when an image is composed, not in the shared base.
rm -f "$root"/etc/ssh/ssh_host_*
: >"$root/etc/machine-id"
rm -f "$root/var/lib/dbus/machine-id"
ln -s /etc/machine-id "$root/var/lib/dbus/machine-id"
rm -f "$root/etc/hostname"
