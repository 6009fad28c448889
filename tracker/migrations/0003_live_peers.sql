-- Live peers of every swarm, mirrored from the in-memory peer store every few
-- seconds and at graceful shutdown, read back at start (see server.rs).
-- last_seen_ms is wall-clock milliseconds since the Unix epoch of the peer's
-- last announce, so that expiry continues across a restart.
CREATE TABLE IF NOT EXISTS peers (
    info_hash    TEXT NOT NULL,
    peer_id      BLOB NOT NULL,
    ip           TEXT NOT NULL,
    port         INTEGER NOT NULL,
    left_bytes   INTEGER NOT NULL,
    stalled      INTEGER NOT NULL,
    is_origin    INTEGER NOT NULL,
    granted      INTEGER NOT NULL,
    device       TEXT,
    last_seen_ms INTEGER NOT NULL,
    PRIMARY KEY (info_hash, peer_id)
);

-- Completed downloads per swarm (BEP 48 scrape `downloaded`).
CREATE TABLE IF NOT EXISTS swarm_counters (
    info_hash  TEXT PRIMARY KEY NOT NULL,
    downloaded INTEGER NOT NULL
);
