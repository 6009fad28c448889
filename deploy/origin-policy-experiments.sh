#!/usr/bin/env bash
# The origin-policy ablation of issue 17 in the NAT lab (root: network
# namespaces, nftables): the `internet` topology with the issue's links (home
# downlink 50 Mbit/s, uplink 10 Mbit/s, 20 ms one way), the origin's uplink
# at 1 Gbit/s and at 100 Mbit/s, and for each: client-server, the 2017
# client (origin listed to every device: bittorrent-baseline), today's
# one-slot hand-out at full speed (p2p, --origin-goal fastest), and the
# cost/speed dial (p2p with cheapest and within:SECS at two targets).
# Writes under OUT one record file per uplink and policy, results.md (the
# table) and wall-time.txt.
#
#   RUNS=2 SIZES="20" OUT=docs/results/origin-policy bash deploy/origin-policy-experiments.sh
#
# TARGETS="60 120" sets the within:SECS targets; UPLINKS="1000 100" the
# origin uplinks in Mbit/s; POLICIES limits the set, e.g.
# POLICIES="fastest cheapest within".
set -euo pipefail
cd "$(dirname "$0")/.."
[ -f "$HOME/.cargo/env" ] && . "$HOME/.cargo/env"
RUNS=${RUNS:-2}
OUT=${OUT:-deploy/results/origin-policy}
SIZES=${SIZES:-"20"}
UPLINKS=${UPLINKS:-"1000 100"}
TARGETS=${TARGETS:-"60 120"}
POLICIES=${POLICIES:-"client-server baseline fastest cheapest within"}
package=()
[ -n "${PACKAGE:-}" ] && package=(--package "$PACKAGE")
cargo build --release --workspace --bins
bin=${CARGO_TARGET_DIR:-target}/release
mkdir -p "$OUT/logs"
started=$(date +%s)
links=(--home-downlink-mbit 50 --home-uplink-mbit 10 --wan-delay-ms 20)

run() { # name, then flash-crowd arguments
  local name=$1
  shift
  echo "== $name $*"
  rm -f "$OUT/$name.json"
  "$bin"/flash-crowd "${package[@]}" "${links[@]}" --topology internet --runs "$RUNS" --record "$OUT/$name.json" "$@" \
    > "$OUT/logs/$name.txt" 2> "$OUT/logs/$name.err" || { tail -n 5 "$OUT/logs/$name.err"; return 1; }
  grep -E '^saving|^completion' "$OUT/logs/$name.txt" | tail -n 2
}

for n in $SIZES; do
  for up in $UPLINKS; do
    common=(--devices "$n" --origin-uplink-mbit "$up")
    for policy in $POLICIES; do
      case $policy in
        client-server) run "internet-$n-up$up-client-server" "${common[@]}" --mode client-server ;;
        baseline) run "internet-$n-up$up-baseline" "${common[@]}" --mode bittorrent-baseline ;;
        fastest | cheapest) run "internet-$n-up$up-$policy" "${common[@]}" --mode p2p --origin-goal "$policy" ;;
        within)
          for t in $TARGETS; do
            run "internet-$n-up$up-within$t" "${common[@]}" --mode p2p --origin-goal "within:$t"
          done
          ;;
        *) echo "unknown policy $policy" >&2; exit 2 ;;
      esac
    done
  done
done

for up in $UPLINKS; do
  echo "### origin uplink $up Mbit/s"
  echo
  "$bin"/flash-crowd results "$OUT"/internet-*-up"$up"-*.json
  echo
done > "$OUT/results.md"
echo "$(( $(date +%s) - started )) s for RUNS=$RUNS SIZES=\"$SIZES\" UPLINKS=\"$UPLINKS\" POLICIES=\"$POLICIES\" TARGETS=\"$TARGETS\"" > "$OUT/wall-time.txt"
cat "$OUT/results.md"
