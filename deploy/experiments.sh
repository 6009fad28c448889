#!/usr/bin/env bash
# Loopback flash-crowd experiments: RUNS runs of each scenario (p2p and the
# plain-BitTorrent baseline, 10 and 5 devices, Debian's chromium .deb), then
# the billing report with costs and plots, written under OUT.
#
#   RUNS=3 OUT=docs/experiments bash deploy/experiments.sh
set -euo pipefail
cd "$(dirname "$0")/.."
[ -f "$HOME/.cargo/env" ] && . "$HOME/.cargo/env"
RUNS=${RUNS:-3}
OUT=${OUT:-docs/experiments}
cargo build --release --workspace --bins
bin=${CARGO_TARGET_DIR:-target}/release
mkdir -p "$OUT"
rm -f "$OUT/records.json" "$OUT"/ledger-*.csv "$OUT"/run-*.txt
for spec in p2p-10:10:p2p baseline-10:10:bittorrent-baseline p2p-5:5:p2p baseline-5:5:bittorrent-baseline; do
  IFS=: read -r name devices mode <<< "$spec"
  for run in $(seq 1 "$RUNS"); do
    ledger=()
    [ "$run" = 1 ] && ledger=(--ledger-out "$OUT/ledger-$name.csv")
    "$bin"/flash-crowd --devices "$devices" --mode "$mode" --scenario "$name" \
      --record "$OUT/records.json" "${ledger[@]}" > "$OUT/run-$name-$run.txt"
    tail -n 4 "$OUT/run-$name-$run.txt" | head -n 3
  done
done
package_bytes=$(stat -c %s deploy/.cache/chromium_*.deb | head -n 1)
"$bin"/ota-billing-report savings --input "$OUT/records.json" --format markdown \
  --prices billing-report/prices/cloudfront-2026-example.toml \
  --fleet-devices 1000000 --package-bytes "$package_bytes" --releases-per-month 1 \
  --plot-dir "$OUT/plots" > "$OUT/report.md"
"$bin"/ota-billing-report egress --ledger "$OUT"/ledger-*.csv --format markdown > "$OUT/ledger-egress.md"
cat "$OUT/report.md"
