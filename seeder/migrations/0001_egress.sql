CREATE TABLE IF NOT EXISTS egress (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    at_ms     INTEGER NOT NULL,
    info_hash TEXT NOT NULL,
    path      TEXT NOT NULL CHECK (path IN ('bittorrent', 'http')),
    peer      TEXT NOT NULL,
    device    TEXT,
    bytes     INTEGER NOT NULL
);

CREATE INDEX IF NOT EXISTS egress_by_release ON egress (info_hash, path);
