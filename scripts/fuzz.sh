#!/usr/bin/env bash
# Fuzzes the NMEA intake with cargo-fuzz (libFuzzer). Not run by CI.
#
#   scripts/fuzz.sh [SECONDS]     default 60 s; corpus in fuzz/corpus/nmea_intake
#
# cargo-fuzz needs nightly compiler features; the machine's stable toolchain provides them
# with RUSTC_BOOTSTRAP=1. The corpus is seeded with the gpsd captures in fixtures/nmea.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-60}
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz
corpus=fuzz/corpus/nmea_intake
mkdir -p "$corpus"
for f in fixtures/nmea/*.log; do cp -n "$f" "$corpus/$(basename "$f")" 2>/dev/null || true; done
export RUSTC_BOOTSTRAP=1
cd fuzz
exec cargo fuzz run nmea_intake "../$corpus" -- -max_total_time="$secs" -max_len=4096
