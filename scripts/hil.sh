#!/usr/bin/env bash
# Hardware-in-the-loop tests on a real Pi with the sensors attached (issue #3).
#
#   scripts/hil.sh HOST [SSH OPTIONS...]
#
# Builds the aarch64 test binary of tests/hil.rs (static, musl), copies it to HOST over ssh and
# runs it there with HARMONY_HIL=1. Device settings can be passed through the environment:
# HARMONY_HIL_GPS, HARMONY_HIL_GPS_BAUD, HARMONY_HIL_I2C_BUS, HARMONY_HIL_RANGE_MODEL,
# HARMONY_HIL_CAN. The same tests run in CI against the simulated devices.
set -euo pipefail
cd "$(dirname "$0")/.."
host=${1:?usage: scripts/hil.sh HOST [ssh options]}
shift
target=aarch64-unknown-linux-musl
scripts/setup.sh >/dev/null
# shellcheck source=tools.sh
. scripts/tools.sh
PROG=hil
need_tools python3:python3 file:file ssh:openssh-client scp:openssh-client
bin=$(cargo test --release --target "$target" --test hil --no-run --message-format=json 2>/dev/null \
    | python3 -c 'import json,sys
for l in sys.stdin:
    m=json.loads(l)
    if m.get("reason")=="compiler-artifact" and m["target"]["name"]=="hil" and m.get("executable"):
        print(m["executable"])' | tail -n1)
[ -x "$bin" ] || { echo "hil.sh: test binary not built" >&2; exit 1; }
file "$bin" | grep -q 'ARM aarch64' || { echo "hil.sh: $bin is not an aarch64 binary" >&2; exit 1; }
remote=/tmp/harmony-hil
ssh "$@" "$host" "mkdir -p $remote"
scp "$@" "$bin" "$host:$remote/hil"
envs="HARMONY_HIL=1"
for v in HARMONY_HIL_GPS HARMONY_HIL_GPS_BAUD HARMONY_HIL_I2C_BUS HARMONY_HIL_RANGE_MODEL HARMONY_HIL_CAN; do
    [ -n "${!v:-}" ] && envs="$envs $v=${!v}"
done
echo "hil.sh: running on $host ($envs)"
ssh "$@" "$host" "cd $remote && env $envs ./hil --test-threads=1 --nocapture"
