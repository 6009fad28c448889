//! Persistent release registry, devices and telemetry, in SQL through sqlx's
//! `Any` driver: SQLite by default (`sqlite://PATH`, created if missing, WAL
//! journal), PostgreSQL when the URL is `postgres://…` / `postgresql://…`.
//! The same migrations (`tracker/migrations`, portable SQL) run at start on
//! both; fixed queries use `$N` placeholders, which both accept; the batched
//! statements of the persistence round use `?` on SQLite (see
//! [`placeholders`]). Queries are checked at run time, so the build needs no
//! database.

use std::collections::HashSet;

use anyhow::Context;
use sqlx::{AnyPool, AssertSqlSafe, Row};

use crate::peer_store::{PeerRecord, StoreChanges};
use ota_proto::api::{Device, NewRelease, Release, TelemetryReport};
use ota_proto::InfoHash;

/// Errors of the registry that API callers can act on.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The request body is not a valid release or device.
    #[error("invalid {0}")]
    Invalid(String),
    /// A device with this id is already registered.
    #[error("device {0:?} is already registered")]
    Exists(String),
    /// A database failure.
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
}

pub use ota_common::db::Backend;

/// Handle to the registry database.
#[derive(Clone, Debug)]
pub struct Registry {
    pool: AnyPool,
    backend: Backend,
}

/// A stored release with its raw info dictionary.
#[derive(Debug, Clone)]
pub struct StoredRelease {
    /// The release as the API shows it (`origin_peers` left empty here).
    pub release: Release,
    /// The bencoded info dictionary.
    pub info: Vec<u8>,
    /// Whether the release was ever pushed ([`Registry::mark_pushed`]).
    pub pushed: bool,
}

/// What the tracker keeps in memory of a device to check its announces:
/// loaded by [`Registry::device_credentials`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceCredential {
    /// SHA-256 of the device's token (32 bytes).
    pub token_sha256: [u8; 32],
    /// Device id.
    pub device_id: String,
    /// Update channel, e.g. `stable`.
    pub channel: String,
    /// Device model.
    pub model: String,
}

/// Device activity gathered in memory and written in the periodic
/// persistence round ([`Registry::save_device_activity`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceActivity {
    /// `(device id, last seen in seconds since the Unix epoch)`.
    pub last_seen: Vec<(String, i64)>,
    /// `(device id, info hash, completed events since the last write)`.
    pub completions: Vec<(String, InfoHash, u32)>,
}

impl DeviceActivity {
    /// Whether there is nothing to write.
    pub fn is_empty(&self) -> bool {
        self.last_seen.is_empty() && self.completions.is_empty()
    }
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// SHA-256 of a device token's text (the hex string as sent).
pub fn token_digest(token: &str) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(token.as_bytes()).into()
}

/// Rows per multi-row statement of [`Registry::save_swarms`]: 10 columns ×
/// 1000 rows = 10,000 parameters, under SQLite's 32,766 and PostgreSQL's
/// 65,535 bind-parameter limits.
const BATCH_ROWS: usize = 1000;

/// `rows` groups of `cols` placeholders: `($1, $2, …), ($k+1, …), …` for
/// PostgreSQL, `(?, ?, …), …` for SQLite. (SQLite resolves each named or
/// numbered parameter's name by a linear scan, which sqlx does once per
/// parameter: O(n²) for a 10,000-parameter statement, 0.4 s per 1,000-row
/// batch; anonymous `?` parameters bind in O(1).)
fn placeholders(rows: usize, cols: usize, backend: Backend) -> String {
    let mut s = String::with_capacity(rows * cols * 5);
    for r in 0..rows {
        if r > 0 {
            s.push_str(", ");
        }
        s.push('(');
        for c in 0..cols {
            if c > 0 {
                s.push_str(", ");
            }
            match backend {
                Backend::Postgres => {
                    s.push('$');
                    s.push_str(&(r * cols + c + 1).to_string());
                }
                Backend::Sqlite => s.push('?'),
            }
        }
        s.push(')');
    }
    s
}

/// Reads the `info_hash` column (40 hex characters) of a row.
fn info_hash_column(row: &sqlx::any::AnyRow) -> Result<InfoHash, sqlx::Error> {
    let text: String = row.try_get("info_hash")?;
    text.parse().map_err(|e| sqlx::Error::ColumnDecode { index: "info_hash".into(), source: Box::new(e) })
}

fn valid_label(what: &str, s: &str) -> Result<(), RegistryError> {
    if s.is_empty() || s.len() > 128 || !s.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(RegistryError::Invalid(format!(
            "{what}: 1 to 128 printable ASCII characters without spaces, got {s:?}"
        )));
    }
    Ok(())
}

impl Registry {
    /// Opens the database at `url` and runs the migrations. `sqlite://PATH`
    /// (the file is created if missing, WAL journal) or `postgres://…` /
    /// `postgresql://…` (the database must exist).
    ///
    /// Errors: an unknown URL scheme, an unreachable or unwritable database,
    /// a failed migration.
    pub async fn open(url: &str) -> anyhow::Result<Self> {
        let (pool, backend) = ota_common::db::open_any(url).await?;
        sqlx::migrate!("./migrations")
            .run(&pool)
            .await
            .context("database migration failed")?;
        Ok(Registry { pool, backend })
    }

    /// The SQL server behind this registry.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Validates and stores a release; registering the same info hash again
    /// replaces its metadata (and its rollout percentage when given).
    ///
    /// Errors: [`RegistryError::Invalid`] when hex fields are malformed, the
    /// info dictionary does not hash to `info_hash`, or the rollout
    /// percentage is above 100.
    pub async fn register(&self, r: &NewRelease) -> Result<Release, RegistryError> {
        let info = hex::decode(&r.info_hex)
            .map_err(|e| RegistryError::Invalid(format!("release: info_hex: {e}")))?;
        let ih = ota_proto::metainfo::info_hash(&info);
        if ih != r.info_hash {
            return Err(RegistryError::Invalid(format!(
                "release: info_hash {} does not match the info dictionary ({ih})",
                r.info_hash
            )));
        }
        if r.sha256.len() != 64 || hex::decode(&r.sha256).is_err() {
            return Err(RegistryError::Invalid("release: sha256 must be 64 hex characters".into()));
        }
        if r.name.is_empty() || r.name.contains('/') {
            return Err(RegistryError::Invalid("release: name must be non-empty, without '/'".into()));
        }
        if r.rollout_percent.is_some_and(|p| p > 100) {
            return Err(RegistryError::Invalid("release: rollout_percent must be 0..=100".into()));
        }
        if let Some(signed) = &r.manifest {
            // The tracker does not hold the public key; it checks that the
            // manifest describes this release, devices check the signature.
            let m: ota_proto::manifest::Manifest = serde_json::from_str(&signed.manifest)
                .map_err(|e| RegistryError::Invalid(format!("release: manifest: {e}")))?;
            if m.info_hash != ih || !m.sha256.eq_ignore_ascii_case(&r.sha256) || m.size != r.size {
                return Err(RegistryError::Invalid("release: manifest does not describe this release".into()));
            }
        }
        let created_at = now_secs();
        let rollout = r.rollout_percent.map(i64::from);
        sqlx::query(
            "INSERT INTO releases (info_hash, name, version, size, piece_length, sha256, info, http_url, source, created_at,
               manifest, signature, etag, rollout_percent)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, COALESCE($14, 100))
             ON CONFLICT (info_hash) DO UPDATE SET name = excluded.name, version = excluded.version,
               sha256 = excluded.sha256, http_url = excluded.http_url, source = excluded.source,
               manifest = excluded.manifest, signature = excluded.signature, etag = excluded.etag,
               rollout_percent = COALESCE($14, releases.rollout_percent)",
        )
        .bind(ih.to_hex())
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
        .bind(rollout)
        .execute(&self.pool)
        .await?;
        Ok(self.get(&ih).await?.map(|s| s.release).expect("just inserted"))
    }

    /// Sets a release's rollout percentage (0..=100); returns false when no
    /// such release is registered.
    ///
    /// Errors: a database failure.
    pub async fn set_rollout(&self, info_hash: &InfoHash, percent: u8) -> Result<bool, sqlx::Error> {
        let r = sqlx::query("UPDATE releases SET rollout_percent = $1 WHERE info_hash = $2")
            .bind(i64::from(percent.min(100)))
            .bind(info_hash.to_hex())
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected() > 0)
    }

    /// Records that a release was pushed now.
    ///
    /// Errors: a database failure.
    pub async fn mark_pushed(&self, info_hash: &InfoHash) -> Result<(), sqlx::Error> {
        sqlx::query("UPDATE releases SET pushed_at = $1 WHERE info_hash = $2")
            .bind(now_secs())
            .bind(info_hash.to_hex())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    fn row_to_release(row: &sqlx::any::AnyRow) -> Result<StoredRelease, sqlx::Error> {
        Ok(StoredRelease {
            release: Release {
                info_hash: info_hash_column(row)?,
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
                    (Some(manifest), Some(signature)) => Some(ota_proto::manifest::SignedManifest { manifest, signature }),
                    _ => None,
                },
                rollout_percent: row.try_get::<i64, _>("rollout_percent")?.clamp(0, 100) as u8,
            },
            info: row.try_get("info")?,
            pushed: row.try_get::<Option<i64>, _>("pushed_at")?.is_some(),
        })
    }

    /// One release by info hash, with its info dictionary.
    pub async fn get(&self, info_hash: &InfoHash) -> Result<Option<StoredRelease>, sqlx::Error> {
        let row = sqlx::query("SELECT * FROM releases WHERE info_hash = $1")
            .bind(info_hash.to_hex())
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

    /// Stores one telemetry report: it replaces the device's previous report
    /// for the release (the count of reports goes up).
    pub async fn add_telemetry(&self, t: &TelemetryReport) -> Result<(), sqlx::Error> {
        sqlx::query(
            "INSERT INTO telemetry (info_hash, device, bytes_from_peers, bytes_from_lan_peers, bytes_from_internet_peers,
               bytes_from_origin, bytes_from_origin_http, bytes_uploaded, duration_ms, verified, error, received_at, reports)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, 1)
             ON CONFLICT (info_hash, device) DO UPDATE SET bytes_from_peers = excluded.bytes_from_peers,
               bytes_from_lan_peers = excluded.bytes_from_lan_peers,
               bytes_from_internet_peers = excluded.bytes_from_internet_peers,
               bytes_from_origin = excluded.bytes_from_origin, bytes_from_origin_http = excluded.bytes_from_origin_http,
               bytes_uploaded = excluded.bytes_uploaded, duration_ms = excluded.duration_ms,
               verified = excluded.verified, error = excluded.error, received_at = excluded.received_at,
               reports = telemetry.reports + 1",
        )
        .bind(t.info_hash.to_hex())
        .bind(&t.device)
        .bind(t.bytes_from_peers as i64)
        .bind(t.bytes_from_lan_peers as i64)
        .bind(t.bytes_from_internet_peers as i64)
        .bind(t.bytes_from_origin as i64)
        .bind(t.bytes_from_origin_http as i64)
        .bind(t.bytes_uploaded as i64)
        .bind(t.duration_ms as i64)
        .bind(t.verified as i64)
        .bind(&t.error)
        .bind(now_secs())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The latest report of each device for a release, by device id.
    pub async fn telemetry(&self, info_hash: &InfoHash) -> Result<Vec<TelemetryReport>, sqlx::Error> {
        let rows = sqlx::query("SELECT * FROM telemetry WHERE info_hash = $1 ORDER BY device")
            .bind(info_hash.to_hex())
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                Ok(TelemetryReport {
                    device: r.try_get("device")?,
                    info_hash: info_hash_column(r)?,
                    bytes_from_peers: r.try_get::<i64, _>("bytes_from_peers")? as u64,
                    bytes_from_lan_peers: r.try_get::<i64, _>("bytes_from_lan_peers")? as u64,
                    bytes_from_internet_peers: r.try_get::<i64, _>("bytes_from_internet_peers")? as u64,
                    bytes_from_origin: r.try_get::<i64, _>("bytes_from_origin")? as u64,
                    bytes_from_origin_http: r.try_get::<i64, _>("bytes_from_origin_http")? as u64,
                    bytes_uploaded: r.try_get::<i64, _>("bytes_uploaded")? as u64,
                    duration_ms: r.try_get::<i64, _>("duration_ms")? as u64,
                    verified: r.try_get::<i64, _>("verified")? != 0,
                    error: r.try_get("error")?,
                })
            })
            .collect()
    }
}

impl Registry {
    /// Registers a device and returns its token: 32 random bytes, hex (64
    /// characters). Only the token's SHA-256 is stored, so the token is
    /// shown this once.
    ///
    /// Errors: [`RegistryError::Invalid`] for an id, channel or model that
    /// is empty, longer than 128 bytes or not printable ASCII;
    /// [`RegistryError::Exists`] when the id is taken.
    pub async fn register_device(&self, device_id: &str, channel: &str, model: &str) -> Result<String, RegistryError> {
        valid_label("device id", device_id)?;
        valid_label("channel", channel)?;
        valid_label("model", model)?;
        let token = hex::encode(rand::random::<[u8; 32]>());
        let r = sqlx::query(
            "INSERT INTO devices (device_id, token_sha256, channel, model, created_at) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (device_id) DO NOTHING",
        )
        .bind(device_id)
        .bind(hex::encode(token_digest(&token)))
        .bind(channel)
        .bind(model)
        .bind(now_secs())
        .execute(&self.pool)
        .await?;
        if r.rows_affected() == 0 {
            return Err(RegistryError::Exists(device_id.into()));
        }
        Ok(token)
    }

    /// Deletes a device (its token stops working); returns false when no
    /// such device is registered.
    pub async fn revoke_device(&self, device_id: &str) -> Result<bool, sqlx::Error> {
        let r = sqlx::query("DELETE FROM devices WHERE device_id = $1")
            .bind(device_id)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected() > 0)
    }

    /// Every registered device by id, with its completed downloads.
    pub async fn devices(&self) -> Result<Vec<Device>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT d.device_id, d.channel, d.model, d.created_at, d.last_seen,
               CAST((SELECT COALESCE(SUM(c.completed), 0) FROM device_completions c WHERE c.device_id = d.device_id) AS BIGINT) AS completed
             FROM devices d ORDER BY d.device_id",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(Device {
                    device_id: r.try_get("device_id")?,
                    channel: r.try_get("channel")?,
                    model: r.try_get("model")?,
                    created_at: r.try_get("created_at")?,
                    last_seen: r.try_get("last_seen")?,
                    completed: r.try_get::<i64, _>("completed")?.max(0) as u64,
                })
            })
            .collect()
    }

    /// Completed-download counts of one device per release, by info hash.
    pub async fn device_completions(&self, device_id: &str) -> Result<Vec<(InfoHash, u64)>, sqlx::Error> {
        let rows = sqlx::query("SELECT info_hash, completed FROM device_completions WHERE device_id = $1 ORDER BY info_hash")
            .bind(device_id)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| Ok((info_hash_column(r)?, r.try_get::<i64, _>("completed")?.max(0) as u64)))
            .collect()
    }

    /// Every device's token digest, id, channel and model (for the
    /// tracker's in-memory check of announces). Rows with a malformed
    /// digest are skipped with a warning.
    pub async fn device_credentials(&self) -> Result<Vec<DeviceCredential>, sqlx::Error> {
        let rows = sqlx::query("SELECT device_id, token_sha256, channel, model FROM devices")
            .fetch_all(&self.pool)
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let device_id: String = r.try_get("device_id")?;
            let digest: String = r.try_get("token_sha256")?;
            let Some(token_sha256) = hex::decode(&digest).ok().and_then(|d| <[u8; 32]>::try_from(d).ok()) else {
                tracing::warn!(%device_id, "skipping a device with a malformed token digest");
                continue;
            };
            out.push(DeviceCredential { token_sha256, device_id, channel: r.try_get("channel")?, model: r.try_get("model")? });
        }
        Ok(out)
    }

    /// Writes devices' last-seen times and adds their completed-download
    /// counts, in one transaction with multi-row statements.
    ///
    /// Errors: a database failure; nothing is written then.
    pub async fn save_device_activity(&self, a: &DeviceActivity) -> Result<(), sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        for chunk in a.last_seen.chunks(BATCH_ROWS) {
            // A device revoked meanwhile has no row to update: skipped.
            let sql = format!(
                "UPDATE devices SET last_seen = v.column2 FROM (VALUES {}) AS v WHERE devices.device_id = v.column1",
                placeholders(chunk.len(), 2, self.backend)
            );
            let mut q = sqlx::query(AssertSqlSafe(sql));
            for (id, seen) in chunk {
                q = q.bind(id).bind(*seen);
            }
            q.execute(&mut *tx).await?;
        }
        for chunk in a.completions.chunks(BATCH_ROWS) {
            let sql = format!(
                "INSERT INTO device_completions (device_id, info_hash, completed) VALUES {}
                 ON CONFLICT (device_id, info_hash) DO UPDATE SET completed = device_completions.completed + excluded.completed",
                placeholders(chunk.len(), 3, self.backend)
            );
            let mut q = sqlx::query(AssertSqlSafe(sql));
            for (id, ih, n) in chunk {
                q = q.bind(id).bind(ih.to_hex()).bind(i64::from(*n));
            }
            q.execute(&mut *tx).await?;
        }
        tx.commit().await
    }
}

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
    /// statements of up to [`BATCH_ROWS`] rows (`INSERT … VALUES (…), (…)
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
        let mut upserts: Vec<&PeerRecord> =
            changes.upserts.iter().rev().filter(|p| seen.insert((p.info_hash, p.peer_id))).collect();
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
                    .bind(p.granted as i64)
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
                granted: r.try_get::<i64, _>("granted")? != 0,
                device: r.try_get("device")?,
                age: std::time::Duration::from_millis(now_ms.saturating_sub(last_seen_ms).max(0) as u64),
            });
        }
        for r in sqlx::query("SELECT * FROM swarm_counters").fetch_all(&self.pool).await? {
            let info_hash: String = r.try_get("info_hash")?;
            let n: i64 = r.try_get("downloaded")?;
            if let Ok(ih) = info_hash.parse::<InfoHash>() {
                out.downloaded.push((ih, n.clamp(0, u32::MAX as i64) as u32));
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_number_every_parameter() {
        assert_eq!(placeholders(2, 3, Backend::Postgres), "($1, $2, $3), ($4, $5, $6)");
        assert_eq!(placeholders(1, 1, Backend::Postgres), "($1)");
        assert_eq!(placeholders(2, 2, Backend::Sqlite), "(?, ?), (?, ?)");
    }
}
