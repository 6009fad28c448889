#!/usr/bin/env bash
# NAT-lab flash-crowd experiments (root: network namespaces, nftables):
# - thesis-lan: scenarios ideal, worst, general of the 2017 study, five
#   devices behind one home router;
# - internet: 20 and 50 devices, each behind its own router, at the default
#   router mix;
# each in the modes client-server, bittorrent-baseline and p2p, RUNS runs
# each, Debian's chromium .deb unless PACKAGE is given. Writes under OUT the
# records (one JSON file per topology, size and mode), the results table
# (results.md), the billing report of each record file with its plots, and
# the wall time of the whole set (wall-time.txt).
#
#   RUNS=10 OUT=docs/results bash deploy/lab-experiments.sh           # all
#   RUNS=10 OUT=docs/results bash deploy/lab-experiments.sh thesis-lan
#   RUNS=3 SIZES="20" bash deploy/lab-experiments.sh internet
#
# Extra flash-crowd settings go in FLAGS, e.g. FLAGS="--wan-delay-ms 20".
set -euo pipefail
cd "$(dirname "$0")/.."
[ -f "$HOME/.cargo/env" ] && . "$HOME/.cargo/env"
WHAT=${1:-all}
RUNS=${RUNS:-10}
OUT=${OUT:-deploy/results/lab}
SIZES=${SIZES:-"20 50"}
MODES=${MODES:-"client-server bittorrent-baseline p2p"}
read -r -a flags <<< "${FLAGS:-}"
package=()
[ -n "${PACKAGE:-}" ] && package=(--package "$PACKAGE")
cargo build --release --workspace --bins
bin=${CARGO_TARGET_DIR:-target}/release
mkdir -p "$OUT/logs"
started=$(date +%s)

run() { # records name, log name, then flash-crowd arguments
  local name=$1 log=$2
  shift 2
  echo "== $log $*"
  "$bin"/flash-crowd "${package[@]}" "${flags[@]}" --runs "$RUNS" --record "$OUT/$name.json" "$@" \
    > "$OUT/logs/$log.txt" 2> "$OUT/logs/$log.err" || { tail -n 5 "$OUT/logs/$log.err"; return 1; }
  grep -E '^saving|^completion' "$OUT/logs/$log.txt" | tail -n 2
}

if [ "$WHAT" = all ] || [ "$WHAT" = thesis-lan ]; then
  for mode in $MODES; do
    rm -f "$OUT/thesis-lan-$mode.json"
    for scenario in ideal worst general; do
      run "thesis-lan-$mode" "thesis-lan-$scenario-$mode" --topology thesis-lan --scenario "$scenario" --mode "$mode"
    done
  done
fi
if [ "$WHAT" = all ] || [ "$WHAT" = internet ]; then
  for n in $SIZES; do
    for mode in $MODES; do
      rm -f "$OUT/internet-$n-$mode.json"
      run "internet-$n-$mode" "internet-$n-$mode" --topology internet --devices "$n" --mode "$mode"
    done
  done
fi

"$bin"/flash-crowd results "$OUT"/*.json > "$OUT/results.md"
for records in "$OUT"/*.json; do
  name=$(basename "$records" .json)
  "$bin"/ota-billing-report savings --input "$records" --format markdown \
    --plot-dir "$OUT/plots/$name" > "$OUT/report-$name.md"
done
echo "wall time of the set ($WHAT, RUNS=$RUNS): $(( $(date +%s) - started )) s" | tee "$OUT/wall-time.txt"
cat "$OUT/results.md"
