-- The tracker's schema, portable between SQLite and PostgreSQL (the same file
-- runs on both through sqlx's Any driver): BIGINT for every integer (64-bit
-- on both; booleans are 0/1), BYTEA for binary (PostgreSQL's binary type;
-- SQLite stores the bound blob as is), TEXT for text, no AUTOINCREMENT.

-- Registered releases. rollout_percent: the share of devices (0..=100) in
-- the release's rollout wave (see src/rollout.rs); pushed_at: the latest
-- push (seconds since the Unix epoch), if any.
CREATE TABLE IF NOT EXISTS releases (
    info_hash       TEXT PRIMARY KEY NOT NULL,
    name            TEXT NOT NULL,
    version         TEXT NOT NULL,
    size            BIGINT NOT NULL,
    piece_length    BIGINT NOT NULL,
    sha256          TEXT NOT NULL,
    info            BYTEA NOT NULL,
    http_url        TEXT,
    source          TEXT NOT NULL,
    created_at      BIGINT NOT NULL,
    manifest        TEXT,
    signature       TEXT,
    etag            TEXT,
    rollout_percent BIGINT NOT NULL DEFAULT 100,
    pushed_at       BIGINT
);

-- The latest telemetry report of each device for each release (bytes per
-- source, completion, errors); `reports` counts the reports received.
CREATE TABLE IF NOT EXISTS telemetry (
    info_hash                 TEXT NOT NULL,
    device                    TEXT NOT NULL,
    bytes_from_peers          BIGINT NOT NULL,
    bytes_from_lan_peers      BIGINT NOT NULL,
    bytes_from_internet_peers BIGINT NOT NULL,
    bytes_from_origin         BIGINT NOT NULL,
    bytes_from_origin_http    BIGINT NOT NULL,
    bytes_uploaded            BIGINT NOT NULL,
    duration_ms               BIGINT NOT NULL,
    verified                  BIGINT NOT NULL,
    error                     TEXT,
    received_at               BIGINT NOT NULL,
    reports                   BIGINT NOT NULL,
    PRIMARY KEY (info_hash, device)
);

-- Live peers of every swarm, mirrored from the in-memory peer store every few
-- seconds and at graceful shutdown, read back at start (see server.rs).
-- last_seen_ms is wall-clock milliseconds since the Unix epoch of the peer's
-- last announce, so that expiry continues across a restart.
CREATE TABLE IF NOT EXISTS peers (
    info_hash    TEXT NOT NULL,
    peer_id      BYTEA NOT NULL,
    ip           TEXT NOT NULL,
    port         BIGINT NOT NULL,
    left_bytes   BIGINT NOT NULL,
    stalled      BIGINT NOT NULL,
    is_origin    BIGINT NOT NULL,
    granted      BIGINT NOT NULL,
    device       TEXT,
    last_seen_ms BIGINT NOT NULL,
    PRIMARY KEY (info_hash, peer_id)
);

-- Completed downloads per swarm (BEP 48 scrape `downloaded`).
CREATE TABLE IF NOT EXISTS swarm_counters (
    info_hash  TEXT PRIMARY KEY NOT NULL,
    downloaded BIGINT NOT NULL
);

-- Registered devices. token_sha256: hex SHA-256 of the device's bearer token
-- (the token itself is shown once, at registration). Times are seconds since
-- the Unix epoch; last_seen is the latest announce.
CREATE TABLE IF NOT EXISTS devices (
    device_id    TEXT PRIMARY KEY NOT NULL,
    token_sha256 TEXT NOT NULL UNIQUE,
    channel      TEXT NOT NULL,
    model        TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    last_seen    BIGINT
);

-- Completed downloads per device and release (announce event `completed`).
CREATE TABLE IF NOT EXISTS device_completions (
    device_id TEXT NOT NULL,
    info_hash TEXT NOT NULL,
    completed BIGINT NOT NULL,
    PRIMARY KEY (device_id, info_hash)
);
