#!/usr/bin/env bash
# The test command: formatting, lints, host tests, then the static aarch64 build and its tests
# under qemu-aarch64-static (the code that flies is the code that is tested).
#
#   scripts/test.sh            everything (what CI runs)
#   scripts/test.sh --host     skip the aarch64 part (quick local loop)
set -euo pipefail
cd "$(dirname "$0")/.."

host_only=false
[ "${1:-}" = "--host" ] && host_only=true

scripts/setup.sh

# The venv scripts/setup.sh made for the pymavlink interop test (tests/uplink.rs).
[ -x target/pyvenv/bin/python ] && export HARMONY_PYMAVLINK_PYTHON="$PWD/target/pyvenv/bin/python"

step() { printf '\n==> %s\n' "$*" >&2; }

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets --locked -- -D warnings

step "host tests"
cargo test --locked

if ! $host_only; then
    step "static aarch64 build"
    cargo build --locked --release --target aarch64-unknown-linux-musl
    # Printed through the stream already open on stderr: `tee /dev/stderr` would reopen the
    # file behind it and, with `scripts/test.sh > test.log 2>&1`, truncate the log (issue #11).
    desc=$(file target/aarch64-unknown-linux-musl/release/harmony)
    printf '%s\n' "$desc" >&2
    grep -q 'ARM aarch64.*statically linked' <<<"$desc"

    step "aarch64 tests under qemu-aarch64-static"
    cargo test --locked --target aarch64-unknown-linux-musl
fi
step "all tests passed"
