#!/usr/bin/env bash
# The test command (CI runs exactly this through .ci/run): installs the Debian
# packages the tests use (deploy/test-deps.sh), checks formatting, lints
# (clippy, warnings denied) and the API docs, builds every binary (the
# end-to-end tests start them as processes), runs the whole workspace's tests,
# and closes with one summary line "N passed, N failed" over every test binary.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -f "$HOME/.cargo/env" ] && . "$HOME/.cargo/env"
bash deploy/test-deps.sh
# A fresh clone gains nothing from incremental compilation, and its caches
# are a large part of target/ (CI once ran out of disk while compiling).
export CARGO_INCREMENTAL=0
# Disk: the whole run needs about 6.5 GiB in target/ (measured, README);
# say so plainly instead of failing later in the middle of a compile.
need_gb=8
avail_kb=$(df -Pk . | awk 'NR == 2 { print $4 }')
echo "disk: $((avail_kb / 1024 / 1024)) GiB free here, about ${need_gb} GiB needed by target/"
if [ "$avail_kb" -lt $((need_gb * 1024 * 1024)) ] && [ ! -d target/debug ]; then
    echo "error: less than ${need_gb} GiB free on $(df -P . | awk 'NR == 2 { print $6 }'); free some space (or point CARGO_TARGET_DIR at a larger disk) and rerun" >&2
    exit 1
fi
cargo fmt --all --check
cargo clippy --workspace --all-targets --quiet -- -D warnings
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --quiet
cargo build --workspace --bins
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
cargo test --workspace --no-fail-fast 2>&1 | tee "$log" || status=$?
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "%d passed, %d failed\n", p, f }' "$log"
exit "$status"
