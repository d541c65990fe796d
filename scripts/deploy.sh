#!/usr/bin/env bash
# Deploys the firmware to a Raspberry Pi over ssh (issue #6).
#
#   scripts/deploy.sh [OPTIONS] HOST [SSH OPTIONS...]
#
# 1. runs the project's tests (scripts/test.sh) and REFUSES to deploy if they fail;
# 2. builds the static aarch64 binary (cross when it and Docker work, else cargo + rust-lld);
# 3. REFUSES to deploy a binary that is not a static aarch64 ELF;
# 4. copies the binary, boards/rpi4b/harmony.service, the board file and the Pi-side files
#    (boards/rpi4b/) to HOST with scp, runs boards/rpi4b/install.sh there with sudo (user and
#    groups, udev rules, can0 network file, /usr/local/bin/harmony, /etc/harmony/board.toml,
#    daemon-reload, enable, restart) and prints `systemctl status harmony`.
# Nothing is copied unless steps 1-3 passed.
#
# Options (before HOST):
#   --dry-run          print every command instead of running it (read-only checks still run)
#   --board FILE       board file to install as /etc/harmony/board.toml (default boards/rpi4b.toml)
#   --replace-board    overwrite an existing, different /etc/harmony/board.toml on the Pi (the
#                      old one is kept as board.toml.bak-DATE). Without it an edited board file
#                      is kept and the new one lands next to it as board.toml.new.
#   --binary FILE      deploy FILE instead of building (also: $HARMONY_DEPLOY_BINARY); it is
#                      still checked, and the tests still run
#   --builder B        cross | cargo (default: cross if installed and Docker answers, else cargo)
#   --skip-tests       !!! DEPLOY WITHOUT RUNNING THE TESTS !!! For a bench Pi when you know
#                      what you are doing; prints a warning and is never the default.
#   -h, --help
# SSH OPTIONS are passed to both ssh and scp, so use forms both accept: `-i KEY`,
# `-o Port=2222`, `-o StrictHostKeyChecking=accept-new`, `-F CONFIG`.
#
# Environment:
#   HARMONY_TEST_CMD       the test command, run with `sh -c` from the repository root
#                          (default: scripts/test.sh). The refusal tests set it to `false`.
#   HARMONY_DEPLOY_BINARY  as --binary
#   HARMONY_REMOTE_SUDO    how to become root on the Pi (default: sudo; empty when HOST is root@...)
#   CARGO_TARGET_DIR       where the build output is looked for (default: ./target)
#
# Exit codes: 0 deployed, 2 usage, 3 tests failed, 4 binary refused, 5 build failed,
# 6 copying or installing on the Pi failed.
set -euo pipefail

orig=$PWD
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
# Paths given by the user are relative to where they ran the script.
abs() { case $1 in /*) echo "$1" ;; *) echo "$orig/$1" ;; esac; }
target=aarch64-unknown-linux-musl

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }
say() { printf 'deploy: %s\n' "$*" >&2; }
refuse() {
    local code=$1
    shift
    printf '\ndeploy: REFUSING TO DEPLOY: %s\n' "$*" >&2
    printf 'deploy: nothing was copied to the Pi.\n' >&2
    exit "$code"
}

dry_run=false
board=boards/rpi4b.toml
replace_board=false
binary=${HARMONY_DEPLOY_BINARY:+$(abs "$HARMONY_DEPLOY_BINARY")}
builder=
skip_tests=false
while [ $# -gt 0 ]; do
    case $1 in
        --dry-run) dry_run=true ;;
        --board) board=$(abs "${2:?--board needs a file}"); shift ;;
        --replace-board) replace_board=true ;;
        --binary) binary=$(abs "${2:?--binary needs a file}"); shift ;;
        --builder) builder=${2:?--builder needs cross or cargo}; shift ;;
        --skip-tests) skip_tests=true ;;
        -h | --help) usage; exit 0 ;;
        --) shift; break ;;
        -*) say "unknown option $1 (options go before HOST; see --help)"; exit 2 ;;
        *) break ;;
    esac
    shift
done
if [ $# -lt 1 ]; then
    usage >&2
    exit 2
fi
host=$1
shift
ssh_opts=("$@")
case $builder in '' | cross | cargo) ;; *) say "--builder must be cross or cargo"; exit 2 ;; esac
# ssh and scp reach the Pi (installed if missing, issue #11; `file` is optional).
# shellcheck source=tools.sh
. "$repo/scripts/tools.sh"
PROG=deploy
need_tools ssh:openssh-client scp:openssh-client || exit 2
[ -f "$board" ] || { say "board file $board not found"; exit 2; }
# The Pi-side files that go with the binary and the board file.
bundle_files=(
    boards/rpi4b/install.sh
    boards/rpi4b/harmony.service
    boards/rpi4b/harmony-sysusers.conf
    boards/rpi4b/60-harmony-devices.rules
    boards/rpi4b/harmony-modules.conf
    boards/rpi4b/80-can0.network
    boards/rpi4b/harmony-uplink-key.service
    boards/rpi4b/make-uplink-key
    boards/rpi4b/README.md
)
for f in "${bundle_files[@]}"; do
    [ -f "$f" ] || { say "$f is missing from the repository"; exit 2; }
done
if [ -z "${HARMONY_REMOTE_SUDO+set}" ]; then
    case $host in root@*) remote_sudo= ;; *) remote_sudo=sudo ;; esac
else
    remote_sudo=$HARMONY_REMOTE_SUDO
fi

# Prints a command (quoted so it can be pasted), and runs it unless --dry-run.
run() {
    if $dry_run; then
        printf 'would run:' >&2
        printf ' %q' "$@" >&2
        printf '\n' >&2
    else
        "$@"
    fi
}

# ---- 1. tests ---------------------------------------------------------------------------
test_cmd=${HARMONY_TEST_CMD:-scripts/test.sh}
if $skip_tests; then
    say "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!"
    say "!!! --skip-tests: deploying WITHOUT running the tests ($test_cmd)."
    say "!!! Do not fly this build."
    say "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!"
elif $dry_run; then
    run sh -c "$test_cmd"
else
    say "running the tests: $test_cmd"
    if ! sh -c "$test_cmd"; then
        refuse 3 "the tests failed ($test_cmd). Fix them; a build whose tests fail does not fly."
    fi
    say "tests passed"
fi

# ---- 2. build ---------------------------------------------------------------------------
if [ -z "$binary" ]; then
    if [ -z "$builder" ]; then
        if command -v cross >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
            builder=cross
        else
            builder=cargo
        fi
    fi
    say "building with $builder"
    if ! run "$builder" build --locked --release --target "$target"; then
        say "the build failed"
        exit 5
    fi
    binary=${CARGO_TARGET_DIR:-$repo/target}/$target/release/harmony
fi

# ---- 3. the binary: a static aarch64 ELF ------------------------------------------------
# Little-endian unsigned integer of $3 bytes at offset $2 of file $1.
le() {
    local v=0 m=1 b
    for b in $(od -An -v -tu1 -j "$2" -N "$3" "$1"); do
        v=$((v + b * m))
        m=$((m * 256))
    done
    echo "$v"
}

# Checks the ELF header itself (no `file` needed): 64-bit, little-endian, EM_AARCH64 (183),
# an executable (ET_EXEC or ET_DYN), and no PT_INTERP program header (a dynamically linked
# binary names its loader there; a static or static-pie one has none).
check_binary() {
    local f=$1
    [ -f "$f" ] || refuse 4 "binary $f does not exist"
    local size
    size=$(wc -c <"$f")
    [ "$size" -ge 64 ] || refuse 4 "$f is not an ELF executable (only $size bytes)"
    local magic
    magic=$(od -An -v -tx1 -N4 "$f" | tr -d ' \n')
    [ "$magic" = 7f454c46 ] || refuse 4 "$f is not an ELF executable (magic $magic)"
    local class data machine type
    class=$(le "$f" 4 1)
    data=$(le "$f" 5 1)
    [ "$class" = 2 ] || refuse 4 "$f is a 32-bit ELF; the Pi runs a 64-bit (aarch64) kernel and this firmware is built for aarch64"
    [ "$data" = 1 ] || refuse 4 "$f is a big-endian ELF, not aarch64"
    machine=$(le "$f" 18 2)
    if [ "$machine" != 183 ]; then
        local name="e_machine $machine"
        case $machine in 62) name="x86-64" ;; 40) name="32-bit ARM" ;; 3) name="i386" ;; 243) name="RISC-V" ;; esac
        refuse 4 "$f is built for $name, not aarch64 (build with --target $target)"
    fi
    type=$(le "$f" 16 2)
    [ "$type" = 2 ] || [ "$type" = 3 ] || refuse 4 "$f is not an executable (ELF type $type)"
    local phoff phentsize phnum i
    phoff=$(le "$f" 32 8)
    phentsize=$(le "$f" 54 2)
    phnum=$(le "$f" 56 2)
    [ "$phnum" -gt 0 ] && [ "$phentsize" -ge 4 ] && [ $((phoff + phnum * phentsize)) -le "$size" ] ||
        refuse 4 "$f has no valid program headers"
    for ((i = 0; i < phnum; i++)); do
        if [ "$(le "$f" $((phoff + i * phentsize)) 4)" = 3 ]; then
            refuse 4 "$f is dynamically linked (it names a program interpreter); the Pi needs the static musl build ($target)"
        fi
    done
    if command -v file >/dev/null 2>&1; then
        say "binary: $(file -b "$f")"
    fi
    say "binary checked: static aarch64 ELF ($f)"
}

if $dry_run && [ ! -f "$binary" ]; then
    say "would check that $binary is a static aarch64 ELF"
else
    check_binary "$binary"
fi

# ---- 4. copy and install ----------------------------------------------------------------
# Staged locally under the names install.sh expects, then copied with one scp.
stage=$(mktemp -d "${TMPDIR:-/tmp}/harmony-bundle.XXXXXX")
trap 'rm -rf "$stage"' EXIT
if ! $dry_run; then
    cp "$binary" "$stage/harmony"
    cp "$board" "$stage/board.toml"
    cp "${bundle_files[@]}" "$stage/"
fi

remote_dir=/tmp/harmony-deploy.$(date +%Y%m%d%H%M%S).$$
remote_cmd="sh $remote_dir/install.sh"
if [ -n "$remote_sudo" ]; then remote_cmd="$remote_sudo $remote_cmd"; fi
if $replace_board; then remote_cmd+=" --replace-board"; fi
tty_opt=()
# A terminal lets sudo ask for a password.
if [ -t 0 ] && ! $dry_run; then tty_opt=(-t); fi

say "copying to $host:$remote_dir"
run ssh "${ssh_opts[@]}" "$host" "mkdir -m 700 $remote_dir" ||
    { say "cannot reach $host or create $remote_dir there"; exit 6; }
(cd "$stage" && run scp "${ssh_opts[@]}" -q harmony board.toml "${bundle_files[@]##*/}" "$host:$remote_dir/") ||
    { say "copying to $host failed"; exit 6; }
say "installing on $host"
run ssh "${tty_opt[@]}" "${ssh_opts[@]}" "$host" "$remote_cmd" ||
    { say "installing on $host failed (see above)"; exit 6; }
$dry_run || say "deployed to $host"
