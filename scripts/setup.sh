#!/usr/bin/env bash
# Installs what building and testing need, idempotently: the aarch64 musl target, qemu-user
# for running aarch64 binaries, and binfmt_misc so an aarch64 test can spawn the aarch64
# `harmony` binary directly. Safe to run again; does nothing that is already done.
set -euo pipefail

log() { printf 'setup: %s\n' "$*" >&2; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
        log "need root for: $*"; return 1; fi
}

if ! rustup target list --installed 2>/dev/null | grep -qx aarch64-unknown-linux-musl; then
    log "adding rustup target aarch64-unknown-linux-musl"
    rustup target add aarch64-unknown-linux-musl
fi
for c in rustfmt clippy; do
    if ! rustup component list --installed 2>/dev/null | grep -q "^$c"; then
        log "adding rustup component $c"
        rustup component add "$c"
    fi
done

if ! command -v qemu-aarch64-static >/dev/null; then
    log "installing qemu-user-static"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq qemu-user-static >/dev/null
fi

# Tools the tests use; under CI (CI=true) a test whose tool is missing fails (issue #11), so
# they are installed here: tmux drives `harmony top` (tests/tui.rs); systemd-analyze and
# systemd-sysusers check the units and users (tests/systemd_unit.rs, tests/image.rs); file
# describes the binary (scripts/test.sh, deploy.sh); gpsd and gpsfake are compared with the GPS
# fixes (tests/gpsd_compare.rs, issue #15); image/check-image.sh's readers (sfdisk, mtools,
# fdtget, debugfs, fsck.vfat, cpio, zstd, xz) check a disk (tests/image.rs); ssh-keygen and
# visudo check the image's first-boot keys and sudo rules (tests/image.rs); python3-venv makes
# the pymavlink venv below; strace shows which thread touches the card (tests/syscalls.rs).
# shellcheck source=tools.sh
. "$(dirname "$0")/tools.sh"
PROG=setup
if ! need_tools tmux:tmux systemd-analyze:systemd systemd-sysusers:systemd file:file \
    gpsd:gpsd gpsfake:gpsd-clients strace:strace sfdisk:fdisk mdir:mtools mcopy:mtools mlabel:mtools \
    fdtget:device-tree-compiler debugfs:e2fsprogs dumpe2fs:e2fsprogs e2fsck:e2fsprogs \
    fsck.vfat:dosfstools cpio:cpio zstd:zstd xz:xz-utils ssh-keygen:openssh-client \
    visudo:sudo python3:python3; then
    log "WARNING: could not install every tool; tests that need a missing one say SKIPPED (and fail under CI)"
fi
if ! python3 -c 'import ensurepip' 2>/dev/null; then
    # (No command to look for: ensurepip missing is the sign; apt-get install is idempotent.)
    need_tools _python3_venv_:python3-venv ||
        log "WARNING: no python3-venv; tests/uplink.rs's pymavlink tests will say SKIPPED"
fi

# Python tools the interoperability tests use, in a venv under target/ so the system Python is
# untouched (scripts/test.sh points HARMONY_PYMAVLINK_PYTHON at it): pymavlink, a standard
# MAVLink ground tool, decodes the uplink's signed stream (tests/uplink.rs, issue #5) and is the
# peer on `harmony ground --out` (tests/ground_route.rs, issue #13); the `mcap` package is the
# independent reader of `harmony log export --mcap` (tests/mcap_export.rs, issue #13).
# pip runs as `python -m pip`: a venv copied from another checkout keeps working.
venv="$(cd "$(dirname "$0")/.." && pwd)/target/pyvenv"
py_ok() { "$venv/bin/python" -c 'import pymavlink, serial, mcap.reader' 2>/dev/null; }
if [ ! -x "$venv/bin/python" ] || ! py_ok; then
    log "installing pymavlink, pyserial and mcap into $venv"
    if ! { { [ -x "$venv/bin/python" ] || python3 -m venv "$venv"; } &&
        "$venv/bin/python" -m pip install -q --disable-pip-version-check \
            pymavlink==2.4.50 pyserial==3.5 mcap==1.6.0; }; then
        log "WARNING: could not install the Python test tools; their tests skip (and fail under CI=true)"
    fi
fi
# MAVProxy (issue #13: tests/ground_route.rs drives it headless against `harmony ground --out
# tcpin:`). It brings numpy, matplotlib, opencv and vtk wheels (about 1 GB in the venv).
if [ -x "$venv/bin/python" ] && ! "$venv/bin/python" -c 'import MAVProxy' 2>/dev/null; then
    log "installing MAVProxy into $venv"
    "$venv/bin/python" -m pip install -q --disable-pip-version-check MAVProxy==1.8.75 ||
        log "WARNING: could not install MAVProxy; its test skips (and fails under CI=true)"
fi

# binfmt_misc: lets a test exec() an aarch64 binary as if it were native.
if [ ! -e /proc/sys/fs/binfmt_misc/register ]; then
    log "mounting binfmt_misc"
    as_root mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc || true
fi
if [ -e /proc/sys/fs/binfmt_misc/register ] && [ ! -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]; then
    conf=/usr/lib/binfmt.d/qemu-aarch64.conf
    if [ -r "$conf" ]; then
        log "registering qemu-aarch64 with binfmt_misc"
        as_root sh -c "cat '$conf' > /proc/sys/fs/binfmt_misc/register" || true
    fi
fi
if [ ! -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]; then
    log "WARNING: qemu-aarch64 is not registered with binfmt_misc; aarch64 tests that spawn harmony will fail"
fi
