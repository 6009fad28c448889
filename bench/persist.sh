#!/usr/bin/env bash
# Persistence benchmark: how long one round of the tracker's live-peer
# persistence (Registry::save_swarms: one transaction, multi-row statements)
# takes for N changed peers, on SQLite (temp file) and PostgreSQL (a
# throwaway cluster: initdb into a temp dir as the postgres user, loopback
# only, stopped and removed at exit).
#
#   bench/persist.sh            # N=100000
#   PEERS=200000 bench/persist.sh
#
# Needs: cargo, Debian's postgresql package (/usr/lib/postgresql/*/bin).
# Honours CARGO_TARGET_DIR. Prints "backend round peers ms" lines.
set -euo pipefail

PEERS=${PEERS:-100000}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
PGBIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
[ -n "$PGBIN" ] && [ -x "$PGBIN/initdb" ] || { echo "PostgreSQL not found (apt-get install -y postgresql)" >&2; exit 1; }

echo "building (release)..." >&2
(cd "$ROOT" && cargo build --release -q -p ota-bench --bin ota-tracker-persist-bench)
BENCH=$TARGET_DIR/release/ota-tracker-persist-bench

TMP=$(mktemp -d /tmp/bench-persist.XXXXXX)
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
[ "$(id -u)" = 0 ] && chown postgres: "$TMP"
cleanup() {
    set +e
    if [ -f "$TMP/data/postmaster.pid" ]; then
        pid=$(head -1 "$TMP/data/postmaster.pid")
        as_pg "$PGBIN/pg_ctl" -D "$TMP/data" -m immediate -w stop >/dev/null 2>&1
        kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
    fi
    rm -rf "$TMP"
}
trap cleanup EXIT INT TERM

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
as_pg "$PGBIN/initdb" -A trust -U postgres -E UTF8 -D "$TMP/data" >/dev/null
# Default durability (fsync on), as a deployment would run it.
as_pg "$PGBIN/pg_ctl" -D "$TMP/data" -l "$TMP/pg.log" -w -o "-h 127.0.0.1 -p $PORT -k $TMP" start >/dev/null
as_pg "$PGBIN/psql" -h 127.0.0.1 -p "$PORT" -U postgres -q -c 'CREATE DATABASE bench' postgres

"$BENCH" --database-url "sqlite://$TMP/bench.db" --peers "$PEERS"
"$BENCH" --database-url "postgres://postgres@127.0.0.1:$PORT/bench" --peers "$PEERS"
