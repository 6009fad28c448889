//! Opening the SQL databases every service uses, through sqlx: SQLite (the
//! embedded default) and PostgreSQL (beyond one machine).

use anyhow::Context;

/// Which SQL server a pool talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// SQLite (a file).
    Sqlite,
    /// PostgreSQL.
    Postgres,
}

/// Opens a SQLite pool the way every service here does: create the file if
/// missing, WAL journal, at most 4 connections. Callers run their own
/// migrations on the pool.
///
/// Errors: a malformed URL or an unopenable database, naming the URL.
pub async fn open_sqlite(url: &str) -> anyhow::Result<sqlx::SqlitePool> {
    use std::str::FromStr;
    let opts = sqlx::sqlite::SqliteConnectOptions::from_str(url)
        .map_err(|e| anyhow::anyhow!("bad database URL {url:?}: {e}"))?
        .create_if_missing(true)
        .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal);
    sqlx::sqlite::SqlitePoolOptions::new()
        .max_connections(4)
        .connect_with(opts)
        .await
        .map_err(|e| anyhow::anyhow!("cannot open database {url:?}: {e}"))
}

/// Opens `url` through sqlx's `Any` driver: `sqlite://PATH` (the file is
/// created if missing and switched to WAL, a persistent setting the `Any`
/// driver cannot set) or `postgres://…` / `postgresql://…` (the database must
/// exist). At most 4 connections. Callers run their own migrations.
///
/// Errors: an unknown URL scheme, or an unreachable or unwritable database
/// (the message names the URL with its password hidden).
pub async fn open_any(url: &str) -> anyhow::Result<(sqlx::AnyPool, Backend)> {
    sqlx::any::install_default_drivers();
    let backend = if url.starts_with("sqlite:") {
        open_sqlite(url).await?.close().await;
        Backend::Sqlite
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Backend::Postgres
    } else {
        anyhow::bail!("database URL {url:?}: expected sqlite://PATH or postgres://…");
    };
    let pool = sqlx::any::AnyPoolOptions::new()
        .max_connections(4)
        .connect(url)
        .await
        .with_context(|| format!("cannot open database {}", redact(url)))?;
    Ok((pool, backend))
}

/// A database URL with its password replaced by `***`, for messages.
pub fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_hidden() {
        assert_eq!(redact("postgres://ota:secret@db/ota"), "postgres://ota:***@db/ota");
        assert_eq!(redact("sqlite://x.db"), "sqlite://x.db");
    }

    #[tokio::test]
    async fn sqlite_opens_and_unknown_schemes_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display());
        let (_pool, backend) = open_any(&url).await.unwrap();
        assert_eq!(backend, Backend::Sqlite);
        assert!(open_any("mysql://x")
            .await
            .unwrap_err()
            .to_string()
            .contains("expected sqlite"));
    }
}
