CREATE TABLE IF NOT EXISTS releases (
    info_hash    TEXT PRIMARY KEY NOT NULL,
    name         TEXT NOT NULL,
    version      TEXT NOT NULL,
    size         INTEGER NOT NULL,
    piece_length INTEGER NOT NULL,
    sha256       TEXT NOT NULL,
    info         BLOB NOT NULL,
    http_url     TEXT,
    source       TEXT NOT NULL,
    created_at   INTEGER NOT NULL
);

CREATE TABLE IF NOT EXISTS telemetry (
    id                     INTEGER PRIMARY KEY AUTOINCREMENT,
    info_hash              TEXT NOT NULL,
    device                 TEXT NOT NULL,
    bytes_from_peers       INTEGER NOT NULL,
    bytes_from_origin      INTEGER NOT NULL,
    bytes_from_origin_http INTEGER NOT NULL,
    bytes_uploaded         INTEGER NOT NULL,
    duration_ms            INTEGER NOT NULL,
    verified               INTEGER NOT NULL,
    error                  TEXT,
    received_at            INTEGER NOT NULL
);

CREATE INDEX IF NOT EXISTS telemetry_by_release ON telemetry (info_hash, device);
