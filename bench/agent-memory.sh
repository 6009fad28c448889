#!/usr/bin/env bash
# Builds the release binaries and measures the device agent's peak RSS
# (VmHWM) while it downloads the chromium .deb (fetched with apt-get download
# into deploy/.cache when missing) from 4 seeding peers on loopback. Prints
# one JSON object. Extra arguments go to agent-memory-bench, e.g.
# `bash bench/agent-memory.sh --peers 8 --package FILE`.
# The target folder is $CARGO_TARGET_DIR when set, else ./target.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -f "$HOME/.cargo/env" ] && . "$HOME/.cargo/env"
target="${CARGO_TARGET_DIR:-target}"
cargo build --release --quiet -p ota-device-agent --bin ota-device-agent -p ota-bench --bin agent-memory-bench >&2
exec "$target/release/agent-memory-bench" "$@"
