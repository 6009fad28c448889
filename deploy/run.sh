#!/usr/bin/env bash
# The main job: a flash crowd of device agents fetching a real update package
# (Debian's chromium .deb by default) from an embedded S3 server through the
# tracker, the S3-backed seeder and BitTorrent, all on loopback.
#
#   bash deploy/run.sh                      # 10 devices, chromium .deb
#   DEVICES=4 bash deploy/run.sh --package /path/to/file
#
# Extra arguments go to flash-crowd (see "$bin"/flash-crowd --help).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -f "$HOME/.cargo/env" ] && . "$HOME/.cargo/env"
cargo build --release --workspace --bins
bin=${CARGO_TARGET_DIR:-target}/release
mkdir -p deploy/results
"$bin"/flash-crowd --devices "${DEVICES:-10}" \
  --summary-json deploy/results/last-run.json \
  --record deploy/results/records.json "$@"
"$bin"/ota-billing-report savings --input deploy/results/records.json
