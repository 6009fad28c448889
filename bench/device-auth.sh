#!/usr/bin/env bash
# What device tokens cost an announce: ota-tracker (persistence on, temp
# SQLite) with --device-auth off (plain announces) and with --device-auth
# required (every announce carries token=HEX of a registered device: one
# SHA-256 of the token, one hash-map look-up, the rollout-wave check), same
# seeded request mix from ota-tracker-load, loopback only.
#
#   bench/device-auth.sh                 # defaults below
#   SWARMS=1000 PEERS=100 CONC=64 DURATION=10 bench/device-auth.sh
#
# Needs: cargo, python3, curl. Honours CARGO_TARGET_DIR. Prints a markdown
# table. Every child is stopped by PID on exit.
set -euo pipefail

SWARMS=${SWARMS:-1000}
PEERS=${PEERS:-100}
CONC=${CONC:-64}
DURATION=${DURATION:-10}
WARMUP=${WARMUP:-3}
TOKEN=bench-admin-token

ROOT=$(cd "$(dirname "$0")/.." && pwd)
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
echo "building (release)..." >&2
(cd "$ROOT" && cargo build --release -q -p ota-tracker -p ota-bench --bin ota-tracker --bin ota-tracker-load)
TRACKER=$TARGET_DIR/release/ota-tracker
LOAD=$TARGET_DIR/release/ota-tracker-load

TMP=$(mktemp -d /tmp/bench-device-auth.XXXXXX)
PIDS=()
cleanup() {
    set +e
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null; done
    for pid in "${PIDS[@]}"; do
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$pid" 2>/dev/null
    done
    rm -rf "$TMP"
}
trap cleanup EXIT INT TERM

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_http() {
    for _ in $(seq 100); do curl -sf "$1" >/dev/null && return 0; sleep 0.1; done
    echo "no answer from $1" >&2; return 1
}

header=1
for mode in off required; do
    port=$(free_port)
    mkdir -p "$TMP/$mode"
    "$TRACKER" serve --listen "127.0.0.1:$port" --database-url "sqlite://$TMP/$mode/ota.db?mode=rwc" \
        --admin-token "$TOKEN" --announce-interval 1800 --persist-interval 5 --device-auth "$mode" \
        > "$TMP/$mode/log" 2>&1 &
    pid=$!
    PIDS+=("$pid")
    wait_http "http://127.0.0.1:$port/health"
    url="http://127.0.0.1:$port/announce"
    "$LOAD" --target-url "$url" --swarms "$SWARMS" --peers-per-swarm "$PEERS" \
        --register-admin-token "$TOKEN" --register-only >/dev/null
    if [ "$mode" = required ]; then
        dev=$(curl -sf -X POST -H "Authorization: Bearer $TOKEN" -H 'content-type: application/json' \
            -d '{"device_id":"bench-device","channel":"stable","model":"generic"}' "http://127.0.0.1:$port/api/devices" |
            python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])')
        url="$url?token=$dev"
    fi
    args=(--swarms "$SWARMS" --peers-per-swarm "$PEERS" --concurrency "$CONC"
          --duration-secs "$DURATION" --warmup-secs "$WARMUP")
    [ $header = 1 ] || args+=(--no-header)
    header=0
    "$LOAD" --target-url "device-auth $mode=$url" "${args[@]}"
    kill "$pid"
done
