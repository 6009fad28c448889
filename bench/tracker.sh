#!/usr/bin/env bash
# Load benchmark: ota-tracker (persistence on, temp SQLite) against Debian's
# opentracker on the same machine, loopback only, identical request mix.
#
#   bench/tracker.sh            # defaults below
#   SWARMS=1000 PEERS=100 CONC=64 DURATION=20 WARMUP=3 bench/tracker.sh
#   OTA_WORKERS=0 bench/tracker.sh   # ota-tracker with one worker per CPU
#
# ota-tracker runs with --worker-threads ${OTA_WORKERS:-1}: one event-loop
# thread, like opentracker, since the load generator shares this machine.
#
# Needs: cargo, python3 (free ports), opentracker (apt-get install opentracker).
# Honours CARGO_TARGET_DIR. Prints a markdown table and the RSS of
# ota-tracker per 100,000 live peers. Every child is stopped by PID on exit.
#
# Debian builds opentracker in whitelist mode (README.Debian: "open" mode
# needs a recompile), so it is started with a whitelist holding exactly the
# benchmark's info hashes: the same "only these swarms" semantics as
# ota-tracker's registered releases.
set -euo pipefail

SWARMS=${SWARMS:-1000}
PEERS=${PEERS:-100}
CONC=${CONC:-64}
DURATION=${DURATION:-20}
WARMUP=${WARMUP:-3}
SEED=${SEED:-42}
CLIENT_THREADS=${CLIENT_THREADS:-1}
RSS_SWARMS=${RSS_SWARMS:-100}
RSS_PEERS=${RSS_PEERS:-1000}
TOKEN=bench-admin-token

ROOT=$(cd "$(dirname "$0")/.." && pwd)
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
OT_BIN=${OPENTRACKER:-$(command -v opentracker || true)}
[ -n "$OT_BIN" ] || { echo "opentracker not found (apt-get install -y opentracker)" >&2; exit 1; }

echo "building (release)..." >&2
(cd "$ROOT" && cargo build --release -q -p ota-tracker -p ota-bench --bin ota-tracker --bin ota-tracker-load)
TRACKER=$TARGET_DIR/release/ota-tracker
LOAD=$TARGET_DIR/release/ota-tracker-load

TMP=$(mktemp -d /tmp/bench-tracker.XXXXXX)
chmod 755 "$TMP"
PIDS=()
cleanup() {
    set +e
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$pid" 2>/dev/null || true
    done
    rm -rf "$TMP"
}
trap cleanup EXIT INT TERM

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

wait_http() { # url
    for _ in $(seq 100); do
        if python3 - "$1" <<'EOF' 2>/dev/null; then return 0; fi
import sys, urllib.request
urllib.request.urlopen(sys.argv[1], timeout=1).read()
EOF
        sleep 0.1
    done
    echo "no answer from $1" >&2
    return 1
}

wait_tcp() { # port
    for _ in $(seq 100); do
        if python3 -c "import socket,sys; socket.create_connection(('127.0.0.1',$1),1)" 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    echo "nothing listening on $1" >&2
    return 1
}

start_opentracker() { # dir port swarms -> sets OT_PID
    mkdir -p "$1" && chmod 755 "$1"
    "$LOAD" --print-info-hashes --swarms "$3" --seed "$SEED" > "$1/whitelist.txt"
    chmod 644 "$1/whitelist.txt"
    # -d: chroot dir when root (whitelist path is relative to it); -u: drop to nobody.
    (cd "$1" && exec "$OT_BIN" -i 127.0.0.1 -p "$2" -P "$2" -d "$1" -u nobody -w whitelist.txt) \
        > "$1/log" 2>&1 &
    OT_PID=$!
    PIDS+=("$OT_PID")
    wait_tcp "$2"
    sleep 1 # the whitelist is loaded by a separate thread
}

# tracker-load sends plain BitTorrent announces without device tokens (as
# opentracker gets them), hence --device-auth off.
start_ota() { # dir port -> sets OTA_PID
    mkdir -p "$1"
    "$TRACKER" serve --worker-threads "${OTA_WORKERS:-1}" --listen "127.0.0.1:$2" --database-url "sqlite://$1/ota.db?mode=rwc" \
        --admin-token "$TOKEN" --announce-interval 1800 --persist-interval 5 \
        --device-auth off \
        > "$1/log" 2>&1 &
    OTA_PID=$!
    PIDS+=("$OTA_PID")
    wait_http "http://127.0.0.1:$2/health"
}

stop() { # pid: stop it and forget it (so cleanup never signals a reused PID)
    local keep=() p
    kill "$1" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$1" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
    for p in "${PIDS[@]}"; do [ "$p" = "$1" ] || keep+=("$p"); done
    PIDS=("${keep[@]}")
}

rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }

LIMIT=$((WARMUP + DURATION + 300))
COMMON=(--swarms "$SWARMS" --peers-per-swarm "$PEERS" --concurrency "$CONC" --duration-secs "$DURATION"
        --warmup-secs "$WARMUP" --seed "$SEED" --client-threads "$CLIENT_THREADS")

# --- throughput -----------------------------------------------------------
OT_PORT=$(free_port)
start_opentracker "$TMP/ot" "$OT_PORT" "$SWARMS"
OTA_PORT=$(free_port)
start_ota "$TMP/ota" "$OTA_PORT"

ROWS=$TMP/rows.md
CPU_ROWS=$TMP/cpu.md
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; } # utime + stime, clock ticks
run_load() { # label pid extra-args...: one load run; also records the tracker's CPU time
    local label=$1 pid=$2 before after
    shift 2
    before=$(cpu_ticks "$pid")
    timeout "$LIMIT" "$LOAD" "${COMMON[@]}" "$@" > "$TMP/row"
    after=$(cpu_ticks "$pid")
    cat "$TMP/row" >> "$ROWS"
    # requests column (9th field) counts the measured window; scale to warm-up + measured.
    python3 - "$label" "$((after - before))" "$(getconf CLK_TCK)" "$WARMUP" "$DURATION" "$TMP/row" >> "$CPU_ROWS" <<'PY'
import sys
label, ticks, hz, w, d, row = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), sys.argv[6]
line = [l for l in open(row) if l.startswith("| ") and not l.startswith("| target")][-1]
req = int(line.split("|")[9])
cpu = ticks / hz
sent = req * (w + d) / d
print(f"| {label} | {cpu:.1f} | {cpu / (w + d):.2f} | {cpu * 1e6 / max(sent, 1):.0f} |")
PY
}
echo "running load: swarms=$SWARMS peers/swarm=$PEERS connections=$CONC ${WARMUP}s warm-up + ${DURATION}s per target" >&2
: > "$ROWS"
run_load "ota-tracker, keep-alive" "$OTA_PID" --register-admin-token "$TOKEN" \
    --target-url "ota-tracker=http://127.0.0.1:$OTA_PORT/announce"
run_load "ota-tracker, new conn/request" "$OTA_PID" --no-header --connection-close \
    --target-url "ota-tracker=http://127.0.0.1:$OTA_PORT/announce"
# opentracker closes the connection after every reply (no HTTP keep-alive), so
# it is measured with a new connection per request.
run_load "opentracker, new conn/request" "$OT_PID" --no-header --connection-close \
    --target-url "opentracker=http://127.0.0.1:$OT_PORT/announce"
OTA_RSS_AFTER_LOAD=$(rss_kib "$OTA_PID")
OT_RSS_AFTER_LOAD=$(rss_kib "$OT_PID")
PERSISTED=$(grep -c "persisting live peers failed" "$TMP/ota/log" || true)
stop "$OTA_PID"
stop "$OT_PID"

# --- memory per 100k live peers ---------------------------------------------
NPEERS=$((RSS_SWARMS * RSS_PEERS))
OTA_PORT=$(free_port)
start_ota "$TMP/ota-rss" "$OTA_PORT"
timeout 300 "$LOAD" --swarms "$RSS_SWARMS" --peers-per-swarm "$RSS_PEERS" --seed "$SEED" \
    --register-admin-token "$TOKEN" --register-only --target-url "http://127.0.0.1:$OTA_PORT/announce"
sleep 6 # one persistence round
OTA_BEFORE=$(rss_kib "$OTA_PID")
timeout 600 "$LOAD" --swarms "$RSS_SWARMS" --peers-per-swarm "$RSS_PEERS" --seed "$SEED" --concurrency 16 \
    --fill --target-url "ota-tracker=http://127.0.0.1:$OTA_PORT/announce" >&2
sleep 6 # let the periodic write of the new peers run too
OTA_AFTER=$(rss_kib "$OTA_PID")

OT_PORT=$(free_port)
start_opentracker "$TMP/ot-rss" "$OT_PORT" "$RSS_SWARMS"
OT_BEFORE=$(rss_kib "$OT_PID")
timeout 600 "$LOAD" --swarms "$RSS_SWARMS" --peers-per-swarm "$RSS_PEERS" --seed "$SEED" --concurrency 16 \
    --connection-close --fill --target-url "opentracker=http://127.0.0.1:$OT_PORT/announce" >&2
OT_AFTER=$(rss_kib "$OT_PID")

echo
echo "### Tracker load: $SWARMS swarms x $PEERS peers, $CONC connections, ${DURATION}s measured after ${WARMUP}s warm-up, seed $SEED, $(nproc) CPUs, load average $(cut -d" " -f1-3 /proc/loadavg)"
echo
cat "$ROWS"
echo
echo "| tracker CPU (warm-up + measured) | CPU s | cores busy | CPU µs/request |"
echo "|---|---:|---:|---:|"
cat "$CPU_ROWS"
echo
python3 - "$NPEERS" "$OTA_BEFORE" "$OTA_AFTER" "$OT_BEFORE" "$OT_AFTER" <<'EOF'
import sys
n, a0, a1, o0, o1 = map(int, sys.argv[1:])
per = lambda b, e: (e - b) / 1024 * 100000 / n
print(f"| RSS ({n} live peers) | before MiB | after MiB | MiB per 100k peers |")
print("|---|---:|---:|---:|")
print(f"| ota-tracker (persistence on) | {a0/1024:.1f} | {a1/1024:.1f} | {per(a0, a1):.1f} |")
print(f"| opentracker | {o0/1024:.1f} | {o1/1024:.1f} | {per(o0, o1):.1f} |")
EOF
echo
echo "RSS after the throughput runs: ota-tracker $((OTA_RSS_AFTER_LOAD / 1024)) MiB, opentracker $((OT_RSS_AFTER_LOAD / 1024)) MiB; ota-tracker persistence failures logged: $PERSISTED"
