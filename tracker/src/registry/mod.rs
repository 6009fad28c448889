//! The registry (Kraken's `originstore` counterpart for metadata): releases,
//! devices, telemetry and the mirror of the live swarms, in SQL through
//! sqlx's `Any` driver — SQLite by default (`sqlite://PATH`, created if
//! missing, WAL journal), PostgreSQL when the URL is `postgres://…` /
//! `postgresql://…`. The same migrations (`tracker/migrations`, portable
//! SQL) run at start on both; fixed queries use `$N` placeholders, which
//! both accept; the batched statements of the persistence round use `?` on
//! SQLite (see `placeholders`). Queries are checked at run time, so the
//! build needs no database.
//!
//! - [`Registry`]: the database handle; its methods are split by table in
//!   `releases` (releases, telemetry), `devices` (devices, completions) and
//!   `swarms` (live peers, swarm counters).
//! - [`directory`]: the in-memory device directory that checks tokens on
//!   every announce and API call, and the [`DeviceAuth`] setting.

use anyhow::Context;
use sqlx::{AnyPool, Row};

use ota_proto::InfoHash;

mod devices;
pub mod directory;
mod releases;
mod swarms;

pub use devices::DeviceActivity;
pub use directory::{token_digest, DeviceAuth, DeviceCredential, DeviceDirectory, DeviceEntry};
pub use ota_common::db::Backend;
pub use releases::StoredRelease;
pub use swarms::StoredSwarms;

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

/// Handle to the registry database (cheap to clone: a connection pool).
#[derive(Clone, Debug)]
pub struct Registry {
    pool: AnyPool,
    backend: Backend,
    /// The replica id this handle writes live peers as ('' for a single
    /// tracker; see [`Registry::with_replica`]).
    replica: std::sync::Arc<str>,
}

/// Rows per multi-row statement of [`Registry::save_swarms`]: 11 columns ×
/// 1000 rows = 11,000 parameters, under SQLite's 32,766 and PostgreSQL's
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

/// The `n`-th (1-based) bind parameter: `$n` for PostgreSQL, `?` for
/// SQLite (whose `?` parameters bind in order, so `n` must follow the ones
/// before it).
fn param(n: usize, backend: Backend) -> String {
    match backend {
        Backend::Postgres => format!("${n}"),
        Backend::Sqlite => "?".into(),
    }
}

/// Reads the `info_hash` column (40 hex characters) of a row.
fn info_hash_column(row: &sqlx::any::AnyRow) -> Result<InfoHash, sqlx::Error> {
    let text: String = row.try_get("info_hash")?;
    text.parse().map_err(|e| sqlx::Error::ColumnDecode {
        index: "info_hash".into(),
        source: Box::new(e),
    })
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
        Ok(Registry {
            pool,
            backend,
            replica: "".into(),
        })
    }

    /// The same database, writing live peers as replica `id` (the tracker's
    /// `--replica-id`): [`Registry::save_swarms`] rewrites and deletes only
    /// that replica's rows, [`Registry::load_swarms`] restores only them, and
    /// [`Registry::load_remote_peers`] reads the other replicas'.
    pub fn with_replica(mut self, id: &str) -> Self {
        self.replica = id.into();
        self
    }

    /// The replica id live peers are written as ('' for a single tracker).
    pub fn replica(&self) -> &str {
        &self.replica
    }

    /// Whether the database answers a trivial query (`SELECT 1`) within
    /// `timeout`: the readiness probe (`GET /ready`).
    pub async fn ping(&self, timeout: std::time::Duration) -> bool {
        matches!(
            tokio::time::timeout(timeout, sqlx::query("SELECT 1").execute(&self.pool)).await,
            Ok(Ok(_))
        )
    }

    /// The SQL server behind this registry.
    pub fn backend(&self) -> Backend {
        self.backend
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
