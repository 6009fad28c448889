# Sourced by the benchmarks that need PostgreSQL (persist.sh, replicas.sh):
# a throwaway cluster in a temp folder, run as the postgres user when root,
# loopback only, default durability (fsync on, as a deployment runs it).
#
#   . bench/pg-cluster.sh
#   pg_cluster_start "$TMP"          # sets PGBIN, PGPORT; creates database `bench`
#   ... postgres://postgres@127.0.0.1:$PGPORT/bench ...
#   pg_cluster_stop "$TMP"           # in the EXIT trap
#
# Needs Debian's postgresql package (/usr/lib/postgresql/*/bin) and python3.

PGBIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
[ -n "$PGBIN" ] && [ -x "$PGBIN/initdb" ] || { echo "PostgreSQL not found (apt-get install -y postgresql)" >&2; exit 1; }

as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }

pg_cluster_start() { # dir
    [ "$(id -u)" = 0 ] && chown postgres: "$1"
    PGPORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    as_pg "$PGBIN/initdb" -A trust -U postgres -E UTF8 -D "$1/data" >/dev/null
    as_pg "$PGBIN/pg_ctl" -D "$1/data" -l "$1/pg.log" -w -o "-h 127.0.0.1 -p $PGPORT -k $1" start >/dev/null
    as_pg "$PGBIN/psql" -h 127.0.0.1 -p "$PGPORT" -U postgres -q -c 'CREATE DATABASE bench' postgres
}

pg_cluster_stop() { # dir: stops the cluster (by its postmaster PID if pg_ctl fails)
    local pid
    if [ -f "$1/data/postmaster.pid" ]; then
        pid=$(head -1 "$1/data/postmaster.pid")
        as_pg "$PGBIN/pg_ctl" -D "$1/data" -m immediate -w stop >/dev/null 2>&1
        kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
    fi
    return 0
}
