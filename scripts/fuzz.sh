#!/usr/bin/env bash
# Fuzzes what comes in from outside with cargo-fuzz (libFuzzer). Not run by CI.
#
#   scripts/fuzz.sh [TARGET] [SECONDS]   default nmea_intake, 60 s; corpus in fuzz/corpus/TARGET
#
# Targets: nmea_intake (the GPS receiver's bytes, issue #3), uplink_rx (the radio's bytes from
# the ground, issue #5).
#
# cargo-fuzz needs nightly compiler features; the machine's stable toolchain provides them
# with RUSTC_BOOTSTRAP=1. The corpus is seeded with the gpsd captures in fixtures/nmea.
set -euo pipefail
cd "$(dirname "$0")/.."
target=nmea_intake
case ${1:-} in [a-z]*) target=$1; shift ;; esac
secs=${1:-60}
# libFuzzer is C++, built by libfuzzer-sys with the host's compiler (issue #11: installed here).
# shellcheck source=tools.sh
. scripts/tools.sh
PROG=fuzz
need_tools c++:g++
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz
corpus=fuzz/corpus/$target
mkdir -p "$corpus"
if [ "$target" = nmea_intake ]; then
    for f in fixtures/nmea/*.log; do cp -n "$f" "$corpus/$(basename "$f")" 2>/dev/null || true; done
fi
export RUSTC_BOOTSTRAP=1
cd fuzz
exec cargo fuzz run "$target" "../$corpus" -- -max_total_time="$secs" -max_len=4096
