-- Tracker replicas on one database (issue 18). Each live peer row belongs to
-- the replica it last announced to (`replica`, the `--replica-id`; '' for a
-- single tracker): a replica rewrites and deletes only its own rows and reads
-- the others' on the persistence round's beat.
ALTER TABLE peers ADD COLUMN replica TEXT NOT NULL DEFAULT '';
-- No index on `replica`: a replica reads (N-1)/N of the table, a plain scan,
-- and an index there made the planners prefer it over the primary key for
-- the batched removals (5x slower at 100,000 removals).

-- Which replica may hand out new origin grants of a swarm, until when
-- (wall-clock milliseconds since the Unix epoch). One holder per swarm, so
-- replicas together grant no more origin slots than one tracker would.
CREATE TABLE IF NOT EXISTS origin_grant_leases (
    info_hash  TEXT PRIMARY KEY NOT NULL,
    replica    TEXT NOT NULL,
    expires_ms BIGINT NOT NULL
);
