#!/usr/bin/env bash
# Builds the release binaries and runs the origin seeder benchmark on loopback,
# printing a markdown table (pass --json for JSON). Extra arguments go to
# seeder-bench, e.g. `bash bench/seeder.sh --object-mib 128 --sections publish,seed`.
# The target folder is $CARGO_TARGET_DIR when set, else ./target.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -f "$HOME/.cargo/env" ] && . "$HOME/.cargo/env"
target="${CARGO_TARGET_DIR:-target}"
cargo build --release --quiet -p ota-seeder --bin ota-seeder -p ota-bench --bin seeder-bench >&2
exec "$target/release/seeder-bench" "$@"
