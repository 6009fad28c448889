//! Devices and their completed downloads (tables `devices`,
//! `device_completions`).

use sqlx::{AssertSqlSafe, Row};

use ota_common::clock::wall_secs;
use ota_proto::api::Device;
use ota_proto::InfoHash;

use super::{info_hash_column, placeholders, token_digest, DeviceCredential, Registry, RegistryError, BATCH_ROWS};

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

fn valid_label(what: &str, s: &str) -> Result<(), RegistryError> {
    if s.is_empty() || s.len() > 128 || !s.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(RegistryError::Invalid(format!(
            "{what}: 1 to 128 printable ASCII characters without spaces, got {s:?}"
        )));
    }
    Ok(())
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
        .bind(wall_secs())
        .execute(&self.pool)
        .await?;
        if r.rows_affected() == 0 {
            return Err(RegistryError::Exists(device_id.into()));
        }
        Ok(token)
    }

    /// Deletes a device (its token stops working); returns false when no
    /// such device is registered. Its completion counts stay.
    ///
    /// Errors: a database failure.
    pub async fn revoke_device(&self, device_id: &str) -> Result<bool, sqlx::Error> {
        let r = sqlx::query("DELETE FROM devices WHERE device_id = $1")
            .bind(device_id)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected() > 0)
    }

    /// Every registered device by id, with its completed downloads.
    ///
    /// Errors: a database failure.
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

    /// Completed-download counts (announce event `completed`) of one
    /// device per release, by info hash.
    ///
    /// Errors: a database failure, or a stored info hash that is not 40
    /// hex characters.
    pub async fn device_completions(&self, device_id: &str) -> Result<Vec<(InfoHash, u64)>, sqlx::Error> {
        let rows =
            sqlx::query("SELECT info_hash, completed FROM device_completions WHERE device_id = $1 ORDER BY info_hash")
                .bind(device_id)
                .fetch_all(&self.pool)
                .await?;
        rows.iter()
            .map(|r| Ok((info_hash_column(r)?, r.try_get::<i64, _>("completed")?.max(0) as u64)))
            .collect()
    }

    /// A cheap fingerprint of the `devices` table: `(rows, sum of
    /// created_at, newest created_at)`; a tracker replica reloads its
    /// device directory when it changes (one aggregate read, no rows sent).
    ///
    /// Errors: a database failure.
    pub async fn device_fingerprint(&self) -> Result<(i64, i64, i64), sqlx::Error> {
        let r = sqlx::query(
            "SELECT COUNT(*) AS n, CAST(COALESCE(SUM(created_at), 0) AS BIGINT) AS total, \
             CAST(COALESCE(MAX(created_at), 0) AS BIGINT) AS newest FROM devices",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok((r.try_get("n")?, r.try_get("total")?, r.try_get("newest")?))
    }

    /// Every device's token digest, id, channel and model (for the
    /// tracker's in-memory check of announces). Rows with a malformed
    /// digest are skipped with a warning.
    ///
    /// Errors: a database failure.
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
            out.push(DeviceCredential {
                token_sha256,
                device_id,
                channel: r.try_get("channel")?,
                model: r.try_get("model")?,
            });
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
