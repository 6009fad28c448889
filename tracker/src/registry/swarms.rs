//! The mirror of the live swarms (tables `peers`, `swarm_counters`),
//! written by the persistence round and read back at start; with tracker
//! replicas, also the others' live peers and the origin-grant leases
//! (table `origin_grant_leases`), read and claimed on the same beat.

use std::collections::HashSet;

use sqlx::{AssertSqlSafe, Row};

use ota_proto::InfoHash;

use super::{param, placeholders, Registry, BATCH_ROWS};
use crate::swarm::{PeerRecord, StoreChanges};

/// What the database holds of the swarms: live peers (ages measured at the
/// `now_ms` given to [`Registry::load_swarms`]) and completed-download counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoredSwarms {
    /// Live peers as last written, with their ages at load time.
    pub peers: Vec<PeerRecord>,
    /// Completed downloads per swarm (BEP 48 `downloaded`).
    pub downloaded: Vec<(InfoHash, u32)>,
}

impl Registry {
    /// Writes peer-store changes in one transaction, with multi-row
    /// statements of up to 1,000 rows (`INSERT … VALUES (…), (…)
    /// ON CONFLICT DO UPDATE`, `DELETE … WHERE (info_hash, peer_id) IN
    /// (VALUES …)`). `now_ms` is the wall clock (milliseconds since the Unix
    /// epoch) at which the changes were taken: a peer's `last_seen_ms` is
    /// stored as `now_ms − age`. With `changes.full`, every stored peer is
    /// deleted first. A peer listed twice in `upserts` is written once (the
    /// last entry). Rows are written as this handle's replica
    /// ([`Registry::with_replica`]): a full resync deletes only that
    /// replica's rows, an upsert takes over a row another replica wrote (the
    /// peer announced here last), and removals name peers this replica
    /// holds as its own.
    ///
    /// Errors: a database failure; nothing is written then (the caller should
    /// ask the store for a full resync).
    pub async fn save_swarms(&self, changes: &StoreChanges, now_ms: i64) -> Result<(), sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        if changes.full {
            sqlx::query("DELETE FROM peers WHERE replica = $1")
                .bind(self.replica.to_string())
                .execute(&mut *tx)
                .await?;
        }
        for chunk in changes.removals.chunks(BATCH_ROWS) {
            // No `replica` filter here: with it, PostgreSQL's planner left
            // the primary key (100,000 removals: 1.7 s instead of 0.66 s;
            // 1,000,000 did not finish in a minute). A peer that moved to
            // another replica is never removed here: this replica's entry
            // turns remote at the first round after the other wrote it
            // ([`crate::swarm::PeerStore::merge_remote`]), long before it
            // could time out, and remote entries record no removal.
            let sql = format!(
                "DELETE FROM peers WHERE (info_hash, peer_id) IN (VALUES {})",
                placeholders(chunk.len(), 2, self.backend)
            );
            let mut q = sqlx::query(AssertSqlSafe(sql));
            for (ih, id) in chunk {
                q = q.bind(ih.to_hex()).bind(id.0.to_vec());
            }
            q.execute(&mut *tx).await?;
        }
        // One row per key and statement (PostgreSQL refuses to update a row
        // twice in one INSERT … ON CONFLICT); the last entry wins.
        let mut seen = HashSet::with_capacity(changes.upserts.len());
        let mut upserts: Vec<&PeerRecord> = changes
            .upserts
            .iter()
            .rev()
            .filter(|p| seen.insert((p.info_hash, p.peer_id)))
            .collect();
        upserts.reverse();
        for chunk in upserts.chunks(BATCH_ROWS) {
            let sql = format!(
                "INSERT INTO peers (info_hash, peer_id, ip, port, left_bytes, stalled, is_origin, granted, device, last_seen_ms, replica)
                 VALUES {}
                 ON CONFLICT (info_hash, peer_id) DO UPDATE SET ip = excluded.ip, port = excluded.port,
                   left_bytes = excluded.left_bytes, stalled = excluded.stalled, is_origin = excluded.is_origin,
                   granted = excluded.granted, device = excluded.device, last_seen_ms = excluded.last_seen_ms,
                   replica = excluded.replica",
                placeholders(chunk.len(), 11, self.backend)
            );
            let mut q = sqlx::query(AssertSqlSafe(sql));
            for p in chunk {
                let age_ms = i64::try_from(p.age.as_millis()).unwrap_or(i64::MAX);
                q = q
                    .bind(p.info_hash.to_hex())
                    .bind(p.peer_id.0.to_vec())
                    .bind(p.addr.ip().to_string())
                    .bind(p.addr.port() as i64)
                    .bind(i64::try_from(p.left).unwrap_or(i64::MAX))
                    .bind(p.stalled as i64)
                    .bind(p.is_origin as i64)
                    // Bit 0: the origin grant; bit 1: a believed `left=0` (no column of its own).
                    .bind(p.granted as i64 | (p.verified as i64) << 1)
                    .bind(p.device.clone())
                    .bind(now_ms.saturating_sub(age_ms))
                    .bind(self.replica.to_string());
            }
            q.execute(&mut *tx).await?;
        }
        for chunk in changes.downloaded.chunks(BATCH_ROWS) {
            let sql = format!(
                "INSERT INTO swarm_counters (info_hash, downloaded) VALUES {}
                 ON CONFLICT (info_hash) DO UPDATE SET downloaded = excluded.downloaded",
                placeholders(chunk.len(), 2, self.backend)
            );
            let mut q = sqlx::query(AssertSqlSafe(sql));
            for (ih, n) in chunk {
                q = q.bind(ih.to_hex()).bind(*n as i64);
            }
            q.execute(&mut *tx).await?;
        }
        tx.commit().await
    }

    /// Reads this replica's stored peers and every counter. A peer's age
    /// is `now_ms − last_seen_ms` (0 if the wall clock went back). Rows that
    /// do not parse (bad hex, a peer id that is not 20 bytes, a bad address)
    /// are skipped with a warning.
    ///
    /// Errors: a database failure.
    pub async fn load_swarms(&self, now_ms: i64) -> Result<StoredSwarms, sqlx::Error> {
        let mut out = StoredSwarms::default();
        let rows = sqlx::query("SELECT * FROM peers WHERE replica = $1")
            .bind(self.replica.to_string())
            .fetch_all(&self.pool)
            .await?;
        for r in rows {
            out.peers.extend(peer_of_row(&r, now_ms)?);
        }
        for r in sqlx::query("SELECT * FROM swarm_counters")
            .fetch_all(&self.pool)
            .await?
        {
            let info_hash: String = r.try_get("info_hash")?;
            let n: i64 = r.try_get("downloaded")?;
            if let Ok(ih) = info_hash.parse::<InfoHash>() {
                out.downloaded.push((ih, n.clamp(0, u32::MAX as i64) as u32));
            }
        }
        Ok(out)
    }

    /// The live peers other replicas wrote, last seen at most `max_age_ms`
    /// before `now_ms` (wall-clock milliseconds since the Unix epoch), with
    /// their ages at `now_ms`; unreadable rows are skipped as in
    /// [`Registry::load_swarms`]. One scan of `peers` (the others' rows
    /// are most of it).
    ///
    /// Errors: a database failure.
    pub async fn load_remote_peers(&self, now_ms: i64, max_age_ms: i64) -> Result<Vec<PeerRecord>, sqlx::Error> {
        let rows = sqlx::query("SELECT * FROM peers WHERE replica <> $1 AND last_seen_ms >= $2")
            .bind(self.replica.to_string())
            .bind(now_ms.saturating_sub(max_age_ms))
            .fetch_all(&self.pool)
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            out.extend(peer_of_row(&r, now_ms)?);
        }
        Ok(out)
    }

    /// Claims, or renews, the origin-grant lease of each swarm in `wanted`
    /// until `now_ms + ttl_ms`: a lease is taken only when no other replica
    /// holds one that is still valid (one atomic upsert per 1,000 swarms).
    /// Leases this replica holds on swarms not in `wanted` are given up in
    /// the same transaction, so a replica with leechers there takes them at
    /// its next round. Returns the swarms whose lease this replica holds
    /// after the claim (a subset of `wanted`).
    ///
    /// Errors: a database failure (the caller should then grant nothing new).
    pub async fn claim_grant_leases(
        &self,
        wanted: &[InfoHash],
        now_ms: i64,
        ttl_ms: i64,
    ) -> Result<Vec<InfoHash>, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        self.upsert_grant_leases(&mut tx, wanted, now_ms, ttl_ms).await?;
        let rows = sqlx::query("SELECT info_hash FROM origin_grant_leases WHERE replica = $1 AND expires_ms > $2")
            .bind(self.replica.to_string())
            .bind(now_ms)
            .fetch_all(&mut *tx)
            .await?;
        let wanted: HashSet<&InfoHash> = wanted.iter().collect();
        let (held, unwanted): (Vec<InfoHash>, Vec<InfoHash>) = rows
            .iter()
            .filter_map(|r| super::info_hash_column(r).ok())
            .partition(|ih| wanted.contains(ih));
        for chunk in unwanted.chunks(BATCH_ROWS) {
            let sql = format!(
                "DELETE FROM origin_grant_leases WHERE replica = {} AND info_hash IN ({})",
                param(1, self.backend),
                (0..chunk.len())
                    .map(|i| param(i + 2, self.backend))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            let mut q = sqlx::query(AssertSqlSafe(sql)).bind(self.replica.to_string());
            for ih in chunk {
                q = q.bind(ih.to_hex());
            }
            q.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(held)
    }

    /// Claims, or renews, the origin-grant lease of one swarm until
    /// `now_ms + ttl_ms` if no other replica holds a valid one, leaving this
    /// replica's other leases alone; returns whether this replica holds it.
    ///
    /// Errors: a database failure.
    pub async fn claim_grant_lease(&self, info_hash: &InfoHash, now_ms: i64, ttl_ms: i64) -> Result<bool, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        self.upsert_grant_leases(&mut tx, std::slice::from_ref(info_hash), now_ms, ttl_ms)
            .await?;
        let held = sqlx::query("SELECT replica FROM origin_grant_leases WHERE info_hash = $1")
            .bind(info_hash.to_hex())
            .fetch_optional(&mut *tx)
            .await?
            .map(|r| r.try_get::<String, _>("replica"))
            .transpose()?;
        tx.commit().await?;
        Ok(held.as_deref() == Some(&*self.replica))
    }

    /// Within `tx`, takes or renews the lease of each of `swarms` until
    /// `now_ms + ttl_ms`, except where another replica's lease is still
    /// valid: one upsert per 1,000 swarms, shared by both claims.
    async fn upsert_grant_leases(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Any>,
        swarms: &[InfoHash],
        now_ms: i64,
        ttl_ms: i64,
    ) -> Result<(), sqlx::Error> {
        for chunk in swarms.chunks(BATCH_ROWS) {
            let sql = format!(
                "INSERT INTO origin_grant_leases (info_hash, replica, expires_ms) VALUES {}
                 ON CONFLICT (info_hash) DO UPDATE SET replica = excluded.replica, expires_ms = excluded.expires_ms
                 WHERE origin_grant_leases.replica = excluded.replica OR origin_grant_leases.expires_ms < {}",
                placeholders(chunk.len(), 3, self.backend),
                param(chunk.len() * 3 + 1, self.backend)
            );
            let mut q = sqlx::query(AssertSqlSafe(sql));
            for ih in chunk {
                q = q
                    .bind(ih.to_hex())
                    .bind(self.replica.to_string())
                    .bind(now_ms.saturating_add(ttl_ms));
            }
            q.bind(now_ms).execute(&mut **tx).await?;
        }
        Ok(())
    }

    /// Gives up every origin-grant lease of this replica (at graceful
    /// shutdown), so another replica takes them at its next round.
    ///
    /// Errors: a database failure.
    pub async fn release_grant_leases(&self) -> Result<(), sqlx::Error> {
        sqlx::query("DELETE FROM origin_grant_leases WHERE replica = $1")
            .bind(self.replica.to_string())
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

/// One `peers` row as a record aged at `now_ms`; `None` (with a warning)
/// for a row that does not parse.
fn peer_of_row(r: &sqlx::any::AnyRow, now_ms: i64) -> Result<Option<PeerRecord>, sqlx::Error> {
    let info_hash: String = r.try_get("info_hash")?;
    let peer_id: Vec<u8> = r.try_get("peer_id")?;
    let ip: String = r.try_get("ip")?;
    let port: i64 = r.try_get("port")?;
    let parsed = (
        info_hash.parse::<InfoHash>().ok(),
        ota_proto::PeerId::from_slice(&peer_id).ok(),
        ip.parse::<std::net::IpAddr>().ok(),
        u16::try_from(port).ok(),
    );
    let (Some(info_hash), Some(peer_id), Some(ip), Some(port)) = parsed else {
        tracing::warn!(%info_hash, %ip, port, "skipping an unreadable stored peer");
        return Ok(None);
    };
    let last_seen_ms: i64 = r.try_get("last_seen_ms")?;
    let granted: i64 = r.try_get("granted")?;
    Ok(Some(PeerRecord {
        info_hash,
        peer_id,
        addr: std::net::SocketAddr::new(ip, port),
        left: r.try_get::<i64, _>("left_bytes")?.max(0) as u64,
        stalled: r.try_get::<i64, _>("stalled")?.clamp(0, u32::MAX as i64) as u32,
        is_origin: r.try_get::<i64, _>("is_origin")? != 0,
        granted: granted & 1 != 0,
        verified: granted & 2 != 0,
        device: r.try_get("device")?,
        lan: None,
        age: std::time::Duration::from_millis(now_ms.saturating_sub(last_seen_ms).max(0) as u64),
    }))
}
