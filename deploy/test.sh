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
