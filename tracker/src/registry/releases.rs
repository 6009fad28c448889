//! Releases and their telemetry (tables `releases`, `telemetry`).

use sqlx::Row;

use ota_common::clock::wall_secs;
use ota_proto::api::{NewRelease, Release, TelemetryReport};
use ota_proto::origin_goal::OriginGoal;
use ota_proto::InfoHash;

use super::{info_hash_column, Registry, RegistryError};

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

impl Registry {
    /// Validates and stores a release; registering the same info hash again
    /// replaces its metadata (and its rollout percentage when given).
    ///
    /// Errors: [`RegistryError::Invalid`] when hex fields are malformed, the
    /// info dictionary does not hash to `info_hash`, or the rollout
    /// percentage is above 100.
    pub async fn register(&self, r: &NewRelease) -> Result<Release, RegistryError> {
        let info = hex::decode(&r.info_hex).map_err(|e| RegistryError::Invalid(format!("release: info_hex: {e}")))?;
        let ih = ota_proto::metainfo::info_hash(&info);
        if ih != r.info_hash {
            return Err(RegistryError::Invalid(format!(
                "release: info_hash {} does not match the info dictionary ({ih})",
                r.info_hash
            )));
        }
        if r.sha256.len() != 64 || hex::decode(&r.sha256).is_err() {
            return Err(RegistryError::Invalid(
                "release: sha256 must be 64 hex characters".into(),
            ));
        }
        if r.name.is_empty() || r.name.contains('/') {
            return Err(RegistryError::Invalid(
                "release: name must be non-empty, without '/'".into(),
            ));
        }
        if r.rollout_percent.is_some_and(|p| p > 100) {
            return Err(RegistryError::Invalid(
                "release: rollout_percent must be 0..=100".into(),
            ));
        }
        if let Some(signed) = &r.manifest {
            // The tracker does not hold the public key; it checks that the
            // manifest describes this release, devices check the signature.
            let m: ota_proto::manifest::Manifest = serde_json::from_str(&signed.manifest)
                .map_err(|e| RegistryError::Invalid(format!("release: manifest: {e}")))?;
            if m.info_hash != ih || !m.sha256.eq_ignore_ascii_case(&r.sha256) || m.size != r.size {
                return Err(RegistryError::Invalid(
                    "release: manifest does not describe this release".into(),
                ));
            }
        }
        let created_at = wall_secs();
        let rollout = r.rollout_percent.map(i64::from);
        sqlx::query(
            "INSERT INTO releases (info_hash, name, version, size, piece_length, sha256, info, http_url, source, created_at,
               manifest, signature, etag, rollout_percent, origin_goal)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, COALESCE($14, 100), $15)
             ON CONFLICT (info_hash) DO UPDATE SET name = excluded.name, version = excluded.version,
               sha256 = excluded.sha256, http_url = excluded.http_url, source = excluded.source,
               manifest = excluded.manifest, signature = excluded.signature, etag = excluded.etag,
               rollout_percent = COALESCE($14, releases.rollout_percent),
               origin_goal = COALESCE($15, releases.origin_goal)",
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
        .bind(r.origin_goal.map(|g| g.to_string()))
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

    /// Sets (or with `None` clears) a release's origin cost/speed dial;
    /// returns false when no such release is registered.
    ///
    /// Errors: a database failure.
    pub async fn set_origin_goal(&self, info_hash: &InfoHash, goal: Option<OriginGoal>) -> Result<bool, sqlx::Error> {
        let r = sqlx::query("UPDATE releases SET origin_goal = $1 WHERE info_hash = $2")
            .bind(goal.map(|g| g.to_string()))
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
            .bind(wall_secs())
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
                manifest: match (
                    row.try_get::<Option<String>, _>("manifest")?,
                    row.try_get::<Option<String>, _>("signature")?,
                ) {
                    (Some(manifest), Some(signature)) => {
                        Some(ota_proto::manifest::SignedManifest { manifest, signature })
                    }
                    _ => None,
                },
                rollout_percent: row.try_get::<i64, _>("rollout_percent")?.clamp(0, 100) as u8,
                origin_goal: row
                    .try_get::<Option<String>, _>("origin_goal")?
                    .map(|g| g.parse::<OriginGoal>())
                    .transpose()
                    .map_err(|e| sqlx::Error::Decode(e.into()))?,
            },
            info: row.try_get("info")?,
            pushed: row.try_get::<Option<i64>, _>("pushed_at")?.is_some(),
        })
    }

    /// One release by info hash, with its info dictionary; `None` when not
    /// registered.
    ///
    /// Errors: a database failure.
    pub async fn get(&self, info_hash: &InfoHash) -> Result<Option<StoredRelease>, sqlx::Error> {
        let row = sqlx::query("SELECT * FROM releases WHERE info_hash = $1")
            .bind(info_hash.to_hex())
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(Self::row_to_release).transpose()
    }

    /// All releases, newest first (by registration time, then info hash).
    ///
    /// Errors: a database failure.
    pub async fn list(&self) -> Result<Vec<StoredRelease>, sqlx::Error> {
        let rows = sqlx::query("SELECT * FROM releases ORDER BY created_at DESC, info_hash")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(Self::row_to_release).collect()
    }

    /// Stores one telemetry report: it replaces the device's previous report
    /// for the release (the count of reports goes up). The release need not
    /// be registered (the API checks that).
    ///
    /// Errors: a database failure.
    pub async fn add_telemetry(&self, t: &TelemetryReport) -> Result<(), sqlx::Error> {
        sqlx::query(
            "INSERT INTO telemetry (info_hash, device, bytes_from_peers, bytes_from_lan_peers, bytes_from_internet_peers,
               bytes_from_origin, bytes_from_origin_http, bytes_uploaded, duration_ms, verified, error, received_at, reports, nat)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, 1, $13)
             ON CONFLICT (info_hash, device) DO UPDATE SET bytes_from_peers = excluded.bytes_from_peers,
               bytes_from_lan_peers = excluded.bytes_from_lan_peers,
               bytes_from_internet_peers = excluded.bytes_from_internet_peers,
               bytes_from_origin = excluded.bytes_from_origin, bytes_from_origin_http = excluded.bytes_from_origin_http,
               bytes_uploaded = excluded.bytes_uploaded, duration_ms = excluded.duration_ms,
               verified = excluded.verified, error = excluded.error, received_at = excluded.received_at,
               reports = telemetry.reports + 1, nat = excluded.nat",
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
        .bind(wall_secs())
        .bind(&t.nat)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The latest report of each device for a release, by device id.
    ///
    /// Errors: a database failure.
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
                    nat: r.try_get("nat")?,
                })
            })
            .collect()
    }
}
