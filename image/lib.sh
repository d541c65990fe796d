# Shell functions shared by scripts/build-image.sh, scripts/hil-qemu.sh and
# image/check-image.sh. Sourced, not run.
# shellcheck shell=bash
# (Its variables are used by the scripts that source it.)
# shellcheck disable=SC2034

# Defaults, overridable from the environment.
: "${HARMONY_IMAGE_ROOT:=/var/tmp/harmony-image}"
: "${HARMONY_IMAGE_CACHE:=$HARMONY_IMAGE_ROOT/cache}"
: "${HARMONY_IMAGE_OUT:=$HARMONY_IMAGE_ROOT/out}"
: "${HARMONY_IMAGE_WORK:=$HARMONY_IMAGE_ROOT/work}"
: "${HARMONY_DEBIAN_MIRROR:=http://deb.debian.org/debian}"
: "${HARMONY_DEBIAN_SECURITY:=http://deb.debian.org/debian-security}"
HARMONY_SUITE=bookworm

# Partition labels; /etc/fstab, cmdline.txt and harmony-grow-data.service use the same.
LABEL_BOOT=HARMONYBOOT
LABEL_ROOT=HARMONYROOT
LABEL_DATA=HARMONYDATA

_t0=$(date +%s)
_step_name=
_step_t0=
: "${TIMES_FILE:=/dev/null}"

say() { printf '%s: %s\n' "${PROG:-harmony-image}" "$*" >&2; }
die() {
    printf '%s: ERROR: %s\n' "${PROG:-harmony-image}" "$*" >&2
    exit 1
}

# step NAME: ends the previous step (its time goes to $TIMES_FILE) and starts the next one.
step() {
    step_end
    _step_name=$1
    _step_t0=$(date +%s.%N)
    printf '\n==> %s\n' "$1" >&2
}
step_end() {
    if [ -n "$_step_name" ]; then
        local t
        t=$(awk -v a="$_step_t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
        printf '%-58s %8s s\n' "$_step_name" "$t" >>"$TIMES_FILE"
        printf '    (%s s)\n' "$t" >&2
        _step_name=
    fi
}
elapsed() { echo $(($(date +%s) - _t0)); }

# need_tools CMD:PACKAGE ...: installs what is missing (scripts/tools.sh).
# shellcheck source=../scripts/tools.sh
. "$(dirname "${BASH_SOURCE[0]}")/../scripts/tools.sh"

# binfmt_misc must run aarch64 binaries (chroot into the arm64 tree, the harmony binary).
need_binfmt() {
    if [ ! -e /proc/sys/fs/binfmt_misc/status ]; then
        mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc 2>/dev/null || true
    fi
    if [ ! -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]; then
        need_tools qemu-aarch64-static:qemu-user-static
        if [ -f /usr/lib/binfmt.d/qemu-aarch64.conf ]; then
            cat /usr/lib/binfmt.d/qemu-aarch64.conf >/proc/sys/fs/binfmt_misc/register 2>/dev/null || true
        fi
        command -v update-binfmts >/dev/null && update-binfmts --enable qemu-aarch64 2>/dev/null || true
    fi
    [ -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ] ||
        die "binfmt_misc has no qemu-aarch64 entry: cannot run arm64 programs"
}

# partitions IMG: one line per partition: NUMBER START_BYTES SIZE_BYTES TYPE
partitions() {
    sfdisk --dump "$1" | awk '
        /^[^ ]+ : start=/ {
            n = $1; sub(/.*[^0-9]/, "", n)
            s = $0; sub(/.*start= */, "", s); sub(/,.*/, "", s)
            z = $0; sub(/.*size= */, "", z); sub(/,.*/, "", z)
            t = $0; sub(/.*type= */, "", t); sub(/,.*/, "", t)
            printf "%d %.0f %.0f %s\n", n, s * 512, z * 512, t
        }'
}

# part_field IMG NUMBER start|size: byte offset or size of one partition.
part_field() {
    partitions "$1" | awk -v n="$2" -v f="$3" '$1 == n { print (f == "start" ? $2 : $3) }'
}

# extract_part IMG NUMBER OUT: copies one partition into a file (sparse).
extract_part() {
    local start size
    start=$(part_field "$1" "$2" start)
    size=$(part_field "$1" "$2" size)
    [ -n "$start" ] || die "$1 has no partition $2"
    dd if="$1" of="$3" bs=1M iflag=skip_bytes,count_bytes skip="$start" count="$size" \
        conv=sparse status=none
}

# image_plain IMG_OR_XZ DIR: prints the path of an uncompressed image (decompressed into DIR
# when given an .xz).
image_plain() {
    case $1 in
        *.xz)
            local out
            out=$2/$(basename "${1%.xz}")
            if [ ! -f "$out" ] || [ "$1" -nt "$out" ]; then
                say "decompressing $1"
                xz -dc -T0 "$1" >"$out.part" && mv "$out.part" "$out"
            fi
            echo "$out"
            ;;
        *) echo "$1" ;;
    esac
}
