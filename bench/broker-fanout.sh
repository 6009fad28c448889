#!/usr/bin/env bash
# Push fan-out through an MQTT broker (issue 18, docs/capacity.md): Debian's
# mosquitto on loopback, N device subscriptions through the agent's own
# subscriber code, 3 retained QoS 1 notices published as the tracker does;
# prints per round the delivery latency p50/p99/last and deliveries per
# second. Every process is stopped by the benchmark (mosquitto by PID).
#
#   bench/broker-fanout.sh                 # N = 1000 and 5000
#   SUBSCRIBERS="1000 10000" bench/broker-fanout.sh
#
# Needs: cargo, mosquitto (apt-get install mosquitto). Honours CARGO_TARGET_DIR.
set -euo pipefail
SUBSCRIBERS=${SUBSCRIBERS:-"1000 5000"}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
echo "building (release)..." >&2
(cd "$ROOT" && cargo build --release -q -p ota-bench --bin broker-fanout-bench)
# One socket per subscriber on each side of loopback: raise the soft limit
# to the hard one (a subscriber count above it fails to connect).
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
echo "open files limit: $(ulimit -n)" >&2
for n in $SUBSCRIBERS; do
    "$TARGET_DIR/release/broker-fanout-bench" --subscribers "$n"
done
