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
. "$ROOT/bench/pg-cluster.sh"
echo "building (release)..." >&2
(cd "$ROOT" && cargo build --release -q -p ota-bench --bin ota-tracker-persist-bench)
BENCH=$TARGET_DIR/release/ota-tracker-persist-bench

TMP=$(mktemp -d /tmp/bench-persist.XXXXXX)
cleanup() {
    set +e
    pg_cluster_stop "$TMP"
    rm -rf "$TMP"
}
trap cleanup EXIT INT TERM
pg_cluster_start "$TMP"

"$BENCH" --database-url "sqlite://$TMP/bench.db" --peers "$PEERS"
"$BENCH" --database-url "postgres://postgres@127.0.0.1:$PGPORT/bench" --peers "$PEERS"
