-- One row per (release, path, peer, second) instead of one per request or
-- sample: existing rows are summed into their second, and later writes add
-- to the row of their second (INSERT ... ON CONFLICT DO UPDATE).
CREATE TABLE egress_per_second (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    at_ms     INTEGER NOT NULL,
    info_hash TEXT NOT NULL,
    path      TEXT NOT NULL CHECK (path IN ('bittorrent', 'http')),
    peer      TEXT NOT NULL,
    device    TEXT,
    bytes     INTEGER NOT NULL
);

INSERT INTO egress_per_second (at_ms, info_hash, path, peer, device, bytes)
SELECT (at_ms / 1000) * 1000, info_hash, path, peer, MAX(device), SUM(bytes)
FROM egress
GROUP BY info_hash, path, peer, at_ms / 1000
ORDER BY MIN(id);

DROP TABLE egress;
ALTER TABLE egress_per_second RENAME TO egress;

CREATE INDEX egress_by_release ON egress (info_hash, path);
CREATE UNIQUE INDEX egress_per_second_key ON egress (info_hash, path, peer, at_ms);
