#!/usr/bin/env bash
# Connection migration benchmark (issue 16), in the NAT lab (root; the
# packages of deploy/test-deps.sh). One device fetches a package while the
# lab moves it between two home routers of the same kind MOVES times
# (default 20), every EVERY_MS (default 2500): each move cuts its link and
# brings up the other (new address, new NAT mapping, new default route).
# 40 ms round-trip home links. Two cases (CASES, default "origin peer"):
#
# - origin: one device behind a cone router (endpoint-independent
#   mapping) fetches from the origin (8 Mbit/s uplink);
# - peer: two devices; the second gets the package first, then the origin
#   stops and the first (the mover) fetches it from the second, whose home
#   uplink is 8 Mbit/s (`--mover-joins-late`).
#
# Each case runs twice: `quic` (the agent's defaults: QUIC to the origin
# and punched QUIC to the peer, both behind cone routers; the agent follows
# the network and rebinds, the connections it dialed migrate) and `tcp`
# (`OTA_AGENT_QUIC=off`: librqbit's plain TCP peer connections, no bridge;
# in the peer case the peer sits behind a port-forwarding router instead,
# since two cone devices have no TCP path to each other).
# The HTTP fallback is off: every byte comes over BitTorrent.
# For each switch the agent logs the longest gap in received payload bytes
# (librqbit's counter sampled every 10 ms, the same measure for both
# modes) and its detection time; the script prints them and their
# distribution (p50, p90, max) per case and mode, and the completion time.
#
# Usage: bash bench/migration-gaps.sh   (MOVES, EVERY_MS, SIZE_MB, CASES,
# OUT to change; PROFILE=debug uses the debug binaries, for a quick look)
set -euo pipefail
cd "$(dirname "$0")/.."
[ -f "$HOME/.cargo/env" ] && . "$HOME/.cargo/env"
MOVES=${MOVES:-20}
EVERY_MS=${EVERY_MS:-2500}
SIZE_MB=${SIZE_MB:-64}
OUT=${OUT:-target/migration-bench}
CASES=${CASES:-origin peer}
PROFILE=${PROFILE:-release}
target="${CARGO_TARGET_DIR:-target}/$PROFILE"
if [ "$PROFILE" = release ]; then
    cargo build --release --quiet --workspace --bins >&2
else
    cargo build --quiet --workspace --bins >&2
fi
mkdir -p "$OUT"
pkg="$OUT/package-${SIZE_MB}MB.bin"
[ -f "$pkg" ] || head -c $((SIZE_MB * 1000000)) /dev/urandom > "$pkg"

# p50/p90/max of numbers on stdin (one per line).
dist() {
    sort -n | awk '{ v[NR] = $1 } END {
        if (NR == 0) { print "none"; exit }
        i50 = int((NR - 1) * 0.5) + 1; i90 = int((NR - 1) * 0.9) + 1
        printf "n=%d p50=%d p90=%d max=%d\n", NR, v[i50], v[i90], v[NR] }'
}

for case in $CASES; do
for mode in quic tcp; do
    work="$OUT/$case-$mode"
    rm -rf "$work"
    quic=on
    [ "$mode" = tcp ] && quic=off
    case "$case" in
        origin) crowd=(--devices 1 --mix cone=1 --origin-uplink-mbit 8) ;;
        peer)
            mix=cone=1
            [ "$mode" = tcp ] && mix=port-forwarded=1
            crowd=(--devices 2 --mix "$mix" --home-uplink-mbit 8 --mover-joins-late)
            ;;
        *) echo "unknown case $case (origin, peer)" >&2; exit 2 ;;
    esac
    mode="$case-$mode"
    echo "== $mode: $MOVES moves every $EVERY_MS ms, ${SIZE_MB} MB package" >&2
    OTA_AGENT_QUIC=$quic OTA_AGENT_HTTP_FALLBACK_AFTER=0 "$target/flash-crowd" \
        --topology internet --mode p2p "${crowd[@]}" --wan-delay-ms 20 \
        --move-at-pct 3 --moves "$MOVES" --move-every-ms "$EVERY_MS" \
        --package "$pkg" --work-dir "$work" --record "$work.records.json" \
        --timeout-secs 900 > "$work.stdout" 2> "$work.stderr" || {
        echo "$mode: flash-crowd failed (see $work.stderr)" >&2
        tail -5 "$work.stderr" >&2
        continue
    }
    sed 's/\x1b\[[0-9;]*m//g' "$work/logs/dev-01.log" | grep 'network switch: longest gap in received bytes' > "$work.switches" || true
    moves=$(grep -c '"n":' "$work.stdout" || true)
    field() { grep -o " $1=[0-9]*" "$work.switches" | cut -d= -f2; }
    echo "$mode: moves made $moves, switches followed $(wc -l < "$work.switches")"
    echo "$mode: longest gap per switch, ms: $(field longest_gap_ms | tr '\n' ' ')"
    echo "$mode: longest gap, ms: $(field longest_gap_ms | dist)"
    echo "$mode: detection, ms: $(field detection_ms | dist)"
    if [ "$quic" = on ]; then
        echo "$mode: gap over QUIC reads, ms: $(field quic_gap_ms | dist)"
    fi
    # The agent's rebind against the moment the lab's new default route was
    # up (both wall clocks of this machine): the agent's own reaction time.
    grep -o '"cut_at_ms":[0-9]*,"link_ms":[0-9]*' "$work.stdout" | tr -c '0-9\n' ' ' \
        | awk '{ printf "%.0f\n", $1 + $2 }' > "$work.route_up"
    field at_ms > "$work.rebound"
    echo "$mode: rebind after the new route was up, ms: $(paste "$work.rebound" "$work.route_up" \
        | awk 'NF == 2 { printf "%.0f\n", $1 - $2 }' | dist)"
    echo "$mode: the mover's completion, ms: $(python3 -c 'import json,sys; r=json.load(open(sys.argv[1]))[0]; print(next(d["duration_ms"] for d in r["devices"] if d["device"] == "dev-01"))' "$work.records.json")"
done
done
