#!/usr/bin/env bash
# The test command: builds every binary (the end-to-end test starts them as
# processes) and runs the whole workspace's tests.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -f "$HOME/.cargo/env" ] && . "$HOME/.cargo/env"
cargo build --workspace --bins
cargo test --workspace
