//! Persistent release registry and telemetry, in SQL through sqlx.
//!
//! SQLite by default (`sqlite://PATH?mode=rwc`); migrations from
//! `tracker/migrations` run at start. Queries are checked at run time, so the
//! build needs no database.

use anyhow::Context;
use sqlx::{Row, SqlitePool};

use crate::peer_store::{PeerRecord, StoreChanges};
use crate::release::{NewRelease, Release, TelemetryReport};

/// Errors of the registry that API callers can act on.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The request body is not a valid release.
    #[error("invalid release: {0}")]
    Invalid(String),
    /// A database failure.
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
}

/// Handle to the registry database.
#[derive(Clone, Debug)]
pub struct Registry {
    pool: SqlitePool,
}

/// A stored release with its raw info dictionary.
#[derive(Debug, Clone)]
pub struct StoredRelease {
    /// The release as the API shows it (`origin_peers` left empty here).
    pub release: Release,
    /// The bencoded info dictionary.
    pub info: Vec<u8>,
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

impl Registry {
    /// Opens (creating if needed) the database at `url` and runs migrations.
    ///
    /// Errors: an unreachable or unwritable database, a failed migration.
    pub async fn open(url: &str) -> anyhow::Result<Self> {
        let pool = crate::config::open_sqlite(url).await?;
        sqlx::migrate!("./migrations")
            .run(&pool)
            .await
            .context("database migration failed")?;
        Ok(Registry { pool })
    }

    /// Validates and stores a release; registering the same info hash again
    /// replaces its metadata.
    ///
    /// Errors: [`RegistryError::Invalid`] when hex fields are malformed or the
    /// info dictionary does not hash to `info_hash`.
    pub async fn register(&self, r: &NewRelease) -> Result<Release, RegistryError> {
        let info = hex::decode(&r.info_hex)
            .map_err(|e| RegistryError::Invalid(format!("info_hex: {e}")))?;
        let ih = hex::encode(crate::metainfo::info_hash(&info));
        if ih != r.info_hash.to_ascii_lowercase() {
            return Err(RegistryError::Invalid(format!(
                "info_hash {} does not match the info dictionary ({ih})",
                r.info_hash
            )));
        }
        if r.sha256.len() != 64 || hex::decode(&r.sha256).is_err() {
            return Err(RegistryError::Invalid("sha256 must be 64 hex characters".into()));
        }
        if r.name.is_empty() || r.name.contains('/') {
            return Err(RegistryError::Invalid("name must be non-empty, without '/'".into()));
        }
        if let Some(signed) = &r.manifest {
            // The tracker does not hold the public key; it checks that the
            // manifest describes this release, devices check the signature.
            let m: crate::manifest::Manifest = serde_json::from_str(&signed.manifest)
                .map_err(|e| RegistryError::Invalid(format!("manifest: {e}")))?;
            if !m.info_hash.eq_ignore_ascii_case(&ih) || !m.sha256.eq_ignore_ascii_case(&r.sha256) || m.size != r.size {
                return Err(RegistryError::Invalid("manifest does not describe this release".into()));
            }
        }
        let created_at = now_secs();
        sqlx::query(
            "INSERT INTO releases (info_hash, name, version, size, piece_length, sha256, info, http_url, source, created_at,
               manifest, signature, etag)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
             ON CONFLICT(info_hash) DO UPDATE SET name = excluded.name, version = excluded.version,
               sha256 = excluded.sha256, http_url = excluded.http_url, source = excluded.source,
               manifest = excluded.manifest, signature = excluded.signature, etag = excluded.etag",
        )
        .bind(&ih)
        .bind(&r.name)
        .bind(&r.version)
        .bind(r.size as i64)
        .bind(r.piece_length as i64)
        .bind(r.sha256.to_ascii_lowercase())
        .bind(&info)
        .bind(&r.http_url)
        .bind(&r.source)
        .bind(created_at)
        .bind(r.manifest.as_ref().map(|m| m.manifest.clone()))
        .bind(r.manifest.as_ref().map(|m| m.signature.clone()))
        .bind(&r.etag)
        .execute(&self.pool)
        .await?;
        Ok(self.get(&ih).await?.map(|s| s.release).expect("just inserted"))
    }

    fn row_to_release(row: &sqlx::sqlite::SqliteRow) -> Result<StoredRelease, sqlx::Error> {
        Ok(StoredRelease {
            release: Release {
                info_hash: row.try_get("info_hash")?,
                name: row.try_get("name")?,
                version: row.try_get("version")?,
                size: row.try_get::<i64, _>("size")? as u64,
                piece_length: row.try_get::<i64, _>("piece_length")? as u64,
                sha256: row.try_get("sha256")?,
                http_url: row.try_get("http_url")?,
                source: row.try_get("source")?,
                created_at: row.try_get("created_at")?,
                origin_peers: Vec::new(),
                etag: row.try_get("etag")?,
                manifest: match (row.try_get::<Option<String>, _>("manifest")?, row.try_get::<Option<String>, _>("signature")?) {
                    (Some(manifest), Some(signature)) => Some(crate::manifest::SignedManifest { manifest, signature }),
                    _ => None,
                },
            },
            info: row.try_get("info")?,
        })
    }

    /// One release by hex info hash, with its info dictionary.
    pub async fn get(&self, info_hash: &str) -> Result<Option<StoredRelease>, sqlx::Error> {
        let row = sqlx::query("SELECT * FROM releases WHERE info_hash = ?")
            .bind(info_hash.to_ascii_lowercase())
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(Self::row_to_release).transpose()
    }

    /// All releases, newest first.
    pub async fn list(&self) -> Result<Vec<StoredRelease>, sqlx::Error> {
        let rows = sqlx::query("SELECT * FROM releases ORDER BY created_at DESC, info_hash")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(Self::row_to_release).collect()
    }

    /// Stores one telemetry report.
    pub async fn add_telemetry(&self, t: &TelemetryReport) -> Result<(), sqlx::Error> {
        sqlx::query(
            "INSERT INTO telemetry (info_hash, device, bytes_from_peers, bytes_from_lan_peers, bytes_from_internet_peers,
               bytes_from_origin, bytes_from_origin_http, bytes_uploaded, duration_ms, verified, error, received_at)
               VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(t.info_hash.to_ascii_lowercase())
        .bind(&t.device)
        .bind(t.bytes_from_peers as i64)
        .bind(t.bytes_from_lan_peers as i64)
        .bind(t.bytes_from_internet_peers as i64)
        .bind(t.bytes_from_origin as i64)
        .bind(t.bytes_from_origin_http as i64)
        .bind(t.bytes_uploaded as i64)
        .bind(t.duration_ms as i64)
        .bind(t.verified)
        .bind(&t.error)
        .bind(now_secs())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The latest report of each device for a release.
    pub async fn telemetry(&self, info_hash: &str) -> Result<Vec<TelemetryReport>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT * FROM telemetry WHERE id IN
               (SELECT MAX(id) FROM telemetry WHERE info_hash = ? GROUP BY device) ORDER BY device",
        )
        .bind(info_hash.to_ascii_lowercase())
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(TelemetryReport {
                    device: r.try_get("device")?,
                    info_hash: r.try_get("info_hash")?,
                    bytes_from_peers: r.try_get::<i64, _>("bytes_from_peers")? as u64,
                    bytes_from_lan_peers: r.try_get::<i64, _>("bytes_from_lan_peers")? as u64,
                    bytes_from_internet_peers: r.try_get::<i64, _>("bytes_from_internet_peers")? as u64,
                    bytes_from_origin: r.try_get::<i64, _>("bytes_from_origin")? as u64,
                    bytes_from_origin_http: r.try_get::<i64, _>("bytes_from_origin_http")? as u64,
                    bytes_uploaded: r.try_get::<i64, _>("bytes_uploaded")? as u64,
                    duration_ms: r.try_get::<i64, _>("duration_ms")? as u64,
                    verified: r.try_get("verified")?,
                    error: r.try_get("error")?,
                })
            })
            .collect()
    }
}

/// What the database holds of the swarms: live peers (ages measured at the
/// `now_ms` given to [`Registry::load_swarms`]) and completed-download counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoredSwarms {
    /// Live peers as last written, with their ages at load time.
    pub peers: Vec<PeerRecord>,
    /// Completed downloads per swarm (BEP 48 `downloaded`).
    pub downloaded: Vec<([u8; 20], u32)>,
}

fn ih20(s: &str) -> Option<[u8; 20]> {
    hex::decode(s).ok()?.try_into().ok()
}

impl Registry {
    /// Writes peer-store changes in one transaction. `now_ms` is the wall
    /// clock (milliseconds since the Unix epoch) at which the changes were
    /// taken: a peer's `last_seen_ms` is stored as `now_ms − age`. With
    /// `changes.full`, every stored peer is deleted first.
    ///
    /// Errors: a database failure; nothing is written then (the caller should
    /// ask the store for a full resync).
    pub async fn save_swarms(&self, changes: &StoreChanges, now_ms: i64) -> Result<(), sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        if changes.full {
            sqlx::query("DELETE FROM peers").execute(&mut *tx).await?;
        }
        for (ih, id) in &changes.removals {
            sqlx::query("DELETE FROM peers WHERE info_hash = ? AND peer_id = ?")
                .bind(hex::encode(ih))
                .bind(id.as_slice())
                .execute(&mut *tx)
                .await?;
        }
        for p in &changes.upserts {
            let age_ms = i64::try_from(p.age.as_millis()).unwrap_or(i64::MAX);
            sqlx::query(
                "INSERT OR REPLACE INTO peers (info_hash, peer_id, ip, port, left_bytes, stalled, is_origin, granted,
                   device, last_seen_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(hex::encode(p.info_hash))
            .bind(p.peer_id.as_slice())
            .bind(p.addr.ip().to_string())
            .bind(p.addr.port() as i64)
            .bind(i64::try_from(p.left).unwrap_or(i64::MAX))
            .bind(p.stalled as i64)
            .bind(p.is_origin)
            .bind(p.granted)
            .bind(&p.device)
            .bind(now_ms.saturating_sub(age_ms))
            .execute(&mut *tx)
            .await?;
        }
        for (ih, n) in &changes.downloaded {
            sqlx::query("INSERT OR REPLACE INTO swarm_counters (info_hash, downloaded) VALUES (?, ?)")
                .bind(hex::encode(ih))
                .bind(*n as i64)
                .execute(&mut *tx)
                .await?;
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
                ih20(&info_hash),
                <[u8; 20]>::try_from(peer_id.as_slice()).ok(),
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
                is_origin: r.try_get("is_origin")?,
                granted: r.try_get("granted")?,
                device: r.try_get("device")?,
                age: std::time::Duration::from_millis(now_ms.saturating_sub(last_seen_ms).max(0) as u64),
            });
        }
        for r in sqlx::query("SELECT * FROM swarm_counters").fetch_all(&self.pool).await? {
            let info_hash: String = r.try_get("info_hash")?;
            let n: i64 = r.try_get("downloaded")?;
            if let Some(ih) = ih20(&info_hash) {
                out.downloaded.push((ih, n.clamp(0, u32::MAX as i64) as u32));
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn release(info: &[u8]) -> NewRelease {
        NewRelease {
            name: "pkg.bin".into(),
            version: "1".into(),
            info_hash: hex::encode(crate::metainfo::info_hash(info)),
            size: 5,
            piece_length: 16384,
            sha256: "ab".repeat(32),
            info_hex: hex::encode(info),
            http_url: None,
            source: "s3://b/k".into(),
            etag: None,
            manifest: None,
        }
    }

    #[tokio::test]
    async fn releases_and_telemetry_persist_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/t.db", dir.path().display());
        let info = b"d4:name1:ae".to_vec();
        {
            let reg = Registry::open(&url).await.unwrap();
            reg.register(&release(&info)).await.unwrap();
            let mut bad = release(&info);
            bad.info_hash = "00".repeat(20);
            assert!(matches!(reg.register(&bad).await, Err(RegistryError::Invalid(_))));
            let t = TelemetryReport {
                device: "d1".into(),
                info_hash: bad.info_hash.clone(),
                bytes_from_peers: 700,
                bytes_from_lan_peers: 500,
                bytes_from_internet_peers: 200,
                bytes_from_origin_http: 33,
                ..Default::default()
            };
            reg.add_telemetry(&t).await.unwrap();
        }
        let reg = Registry::open(&url).await.unwrap();
        let all = reg.list().await.unwrap();
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].info, info);
        let back = reg.telemetry(&"00".repeat(20)).await.unwrap();
        assert_eq!(back.len(), 1);
        assert_eq!(
            (back[0].bytes_from_lan_peers, back[0].bytes_from_internet_peers, back[0].bytes_from_origin_http),
            (500, 200, 33)
        );
    }
    #[tokio::test]
    async fn swarms_round_trip_with_ages() {
        use std::time::Duration;
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/t.db", dir.path().display());
        let peer = |n: u8, age_ms: u64| PeerRecord {
            info_hash: [9; 20],
            peer_id: [n; 20],
            addr: format!("[::1]:{}", 7000 + n as u16).parse().unwrap(),
            left: 10,
            stalled: 2,
            is_origin: n == 0,
            granted: true,
            device: Some("d".into()),
            age: Duration::from_millis(age_ms),
        };
        let reg = Registry::open(&url).await.unwrap();
        let first = StoreChanges {
            full: false,
            upserts: vec![peer(0, 1000), peer(1, 0), peer(2, 0)],
            removals: vec![],
            downloaded: vec![([9; 20], 3)],
        };
        reg.save_swarms(&first, 1_000_000).await.unwrap();
        let second = StoreChanges {
            upserts: vec![peer(1, 500)],
            removals: vec![([9; 20], [2; 20])],
            downloaded: vec![([9; 20], 4)],
            ..Default::default()
        };
        reg.save_swarms(&second, 1_002_000).await.unwrap();
        drop(reg);
        let reg = Registry::open(&url).await.unwrap();
        let mut got = reg.load_swarms(1_010_000).await.unwrap();
        got.peers.sort_by_key(|p| p.peer_id);
        assert_eq!(got.peers, vec![peer(0, 11_000), peer(1, 8_500)]);
        assert_eq!(got.downloaded, vec![([9; 20], 4)]);
        let full = StoreChanges { full: true, upserts: vec![peer(5, 0)], ..Default::default() };
        reg.save_swarms(&full, 1_010_000).await.unwrap();
        let got = reg.load_swarms(1_010_000).await.unwrap();
        assert_eq!(got.peers, vec![peer(5, 0)]);
    }
}
