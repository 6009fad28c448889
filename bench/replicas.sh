#!/usr/bin/env bash
# Tracker replicas on one PostgreSQL (issue 18): two `ota-tracker serve
# --replica-id` processes on a throwaway PostgreSQL cluster (initdb into a
# temp dir as the postgres user, loopback only, default durability), the
# announce load of `ota-tracker-load` against replica r0 (keep-alive), then
# against both at once (half the connections each); afterwards how many of
# r0's peers replica r1 holds (`ota_tracker_remote_peers`) and the rows each
# replica wrote and read (`ota_tracker_persisted_rows_total`).
#
#   bench/replicas.sh                          # defaults below
#   SWARMS=100 PEERS=1000 CONC=64 DURATION=20 bench/replicas.sh
#
# Needs: cargo, python3, Debian's postgresql (/usr/lib/postgresql/*/bin).
# Honours CARGO_TARGET_DIR. Every child is stopped by PID on exit.
set -euo pipefail

SWARMS=${SWARMS:-1000}
PEERS=${PEERS:-100}
CONC=${CONC:-64}
DURATION=${DURATION:-20}
WARMUP=${WARMUP:-3}
SEED=${SEED:-42}
PERSIST=${PERSIST:-5}
TOKEN=bench-admin-token

ROOT=$(cd "$(dirname "$0")/.." && pwd)
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
. "$ROOT/bench/pg-cluster.sh"
echo "building (release)..." >&2
(cd "$ROOT" && cargo build --release -q -p ota-tracker -p ota-bench --bin ota-tracker --bin ota-tracker-load)
TRACKER=$TARGET_DIR/release/ota-tracker
LOAD=$TARGET_DIR/release/ota-tracker-load

TMP=$(mktemp -d /tmp/bench-replicas.XXXXXX)
PIDS=()
cleanup() {
    set +e
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null; done
    for pid in "${PIDS[@]}"; do
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$pid" 2>/dev/null
    done
    pg_cluster_stop "$TMP"
    rm -rf "$TMP"
}
trap cleanup EXIT INT TERM

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_http() { # url
    for _ in $(seq 100); do
        python3 -c "import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=1).read()" "$1" 2>/dev/null && return 0
        sleep 0.1
    done
    echo "no answer from $1" >&2; return 1
}
metric() { # port name: the metric's value (sum over its series)
    python3 - "$1" "$2" "$TOKEN" <<'PY'
import sys, urllib.request
port, name, token = sys.argv[1:]
req = urllib.request.Request(f"http://127.0.0.1:{port}/metrics", headers={"Authorization": f"Bearer {token}"})
text = urllib.request.urlopen(req, timeout=5).read().decode()
print(int(sum(float(l.split()[-1]) for l in text.splitlines() if l.startswith(name) and not l.startswith("#"))))
PY
}

pg_cluster_start "$TMP"
DB="postgres://postgres@127.0.0.1:$PGPORT/bench"

PORTS=()
for r in 0 1; do
    port=$(free_port)
    "$TRACKER" serve --worker-threads 1 --listen "127.0.0.1:$port" --database-url "$DB" \
        --admin-token "$TOKEN" --announce-interval 1800 --persist-interval "$PERSIST" \
        --device-auth off --connectability off --stun-listen off --replica-id "r$r" \
        > "$TMP/r$r.log" 2>&1 &
    PIDS+=("$!")
    PORTS+=("$port")
    wait_http "http://127.0.0.1:$port/health"
done

COMMON=(--swarms "$SWARMS" --peers-per-swarm "$PEERS" --duration-secs "$DURATION" --warmup-secs "$WARMUP" --seed "$SEED")
LIMIT=$((WARMUP + DURATION + 300))
echo "load: $SWARMS swarms x $PEERS peers, $CONC connections, ${WARMUP}s + ${DURATION}s; persist interval ${PERSIST}s" >&2
echo "### one replica loaded (r0), the other running"
timeout "$LIMIT" "$LOAD" "${COMMON[@]}" --concurrency "$CONC" --register-admin-token "$TOKEN" \
    --target-url "r0=http://127.0.0.1:${PORTS[0]}/announce"
# Two rounds for r1 to read what r0 wrote.
sleep $((2 * PERSIST + 1))
echo
echo "r1 holds $(metric "${PORTS[1]}" ota_tracker_remote_peers) remote peers (announced to r0); r0 holds $(metric "${PORTS[0]}" ota_tracker_remote_peers)"
echo
echo "### both replicas loaded at once ($((CONC / 2)) connections each)"
timeout "$LIMIT" "$LOAD" "${COMMON[@]}" --concurrency $((CONC / 2)) \
    --target-url "r0=http://127.0.0.1:${PORTS[0]}/announce" > "$TMP/both0" &
L0=$!
timeout "$LIMIT" "$LOAD" "${COMMON[@]}" --concurrency $((CONC / 2)) --no-header \
    --target-url "r1=http://127.0.0.1:${PORTS[1]}/announce" > "$TMP/both1" &
L1=$!
wait "$L0" "$L1"
cat "$TMP/both0" "$TMP/both1"
sleep $((PERSIST + 1))
echo
for r in 0 1; do
    echo "r$r: rows written by its persistence rounds $(metric "${PORTS[$r]}" ota_tracker_persisted_rows_total), persist failures $(metric "${PORTS[$r]}" ota_tracker_persist_failures_total), remote peers $(metric "${PORTS[$r]}" ota_tracker_remote_peers)"
done
