//! The mirror of the live swarms (tables `peers`, `swarm_counters`),
//! written by the persistence round and read back at start.

use std::collections::HashSet;

use sqlx::{AssertSqlSafe, Row};

use ota_proto::InfoHash;

use super::{placeholders, Registry, BATCH_ROWS};
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
    /// last entry).
    ///
    /// Errors: a database failure; nothing is written then (the caller should
    /// ask the store for a full resync).
    pub async fn save_swarms(&self, changes: &StoreChanges, now_ms: i64) -> Result<(), sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        if changes.full {
            sqlx::query("DELETE FROM peers").execute(&mut *tx).await?;
        }
        for chunk in changes.removals.chunks(BATCH_ROWS) {
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
                "INSERT INTO peers (info_hash, peer_id, ip, port, left_bytes, stalled, is_origin, granted, device, last_seen_ms)
                 VALUES {}
                 ON CONFLICT (info_hash, peer_id) DO UPDATE SET ip = excluded.ip, port = excluded.port,
                   left_bytes = excluded.left_bytes, stalled = excluded.stalled, is_origin = excluded.is_origin,
                   granted = excluded.granted, device = excluded.device, last_seen_ms = excluded.last_seen_ms",
                placeholders(chunk.len(), 10, self.backend)
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
                    .bind(now_ms.saturating_sub(age_ms));
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

    /// Reads the stored peers and counters. A peer's age is `now_ms −
    /// last_seen_ms` (0 if the wall clock went back). Rows that do not parse
    /// (bad hex, a peer id that is not 20 bytes, a bad address) are skipped
    /// with a warning.
    ///
    /// Errors: a database failure.
    pub async fn load_swarms(&self, now_ms: i64) -> Result<StoredSwarms, sqlx::Error> {
        let mut out = StoredSwarms::default();
        for r in sqlx::query("SELECT * FROM peers").fetch_all(&self.pool).await? {
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
                continue;
            };
            let last_seen_ms: i64 = r.try_get("last_seen_ms")?;
            out.peers.push(PeerRecord {
                info_hash,
                peer_id,
                addr: std::net::SocketAddr::new(ip, port),
                left: r.try_get::<i64, _>("left_bytes")?.max(0) as u64,
                stalled: r.try_get::<i64, _>("stalled")?.clamp(0, u32::MAX as i64) as u32,
                is_origin: r.try_get::<i64, _>("is_origin")? != 0,
                granted: r.try_get::<i64, _>("granted")? & 1 != 0,
                verified: r.try_get::<i64, _>("granted")? & 2 != 0,
                device: r.try_get("device")?,
                lan: None,
                age: std::time::Duration::from_millis(now_ms.saturating_sub(last_seen_ms).max(0) as u64),
            });
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
}
