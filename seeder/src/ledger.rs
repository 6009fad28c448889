//! The origin's egress ledger, in SQL through sqlx (SQLite by default):
//! every byte the origin sends, by release, path (BitTorrent or HTTP), peer
//! address, device when known, and time. Exported as CSV or JSON for the
//! billing report.
//!
//! BitTorrent bytes come from librqbit's per-peer upload counters, sampled
//! by the seeder and written as deltas ([`UploadSampler`], pure); HTTP bytes
//! are written once per response when its body ends.

use std::collections::HashMap;

use anyhow::Context;
use ota_proto::InfoHash;
use serde::{Deserialize, Serialize};
use sqlx::sqlite::SqliteRow;
use sqlx::{Row, SqlitePool};

/// How a byte left the origin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EgressPath {
    /// Peer wire (BEP 3) payload.
    Bittorrent,
    /// Plain-HTTP body bytes.
    Http,
}

impl EgressPath {
    fn as_str(self) -> &'static str {
        match self {
            EgressPath::Bittorrent => "bittorrent",
            EgressPath::Http => "http",
        }
    }
}

/// One ledger row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EgressEntry {
    /// Time, milliseconds since the Unix epoch.
    pub at_ms: i64,
    /// Release info hash (hex in SQL, CSV and JSON).
    pub info_hash: InfoHash,
    /// BitTorrent or HTTP.
    pub path: EgressPath,
    /// Peer address (`ip:port`) as the origin saw it.
    pub peer: String,
    /// Device id when known (HTTP requests may name it).
    pub device: Option<String>,
    /// Bytes sent.
    pub bytes: u64,
}

/// Totals of one release.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseTotals {
    /// Release info hash (hex in SQL and JSON).
    pub info_hash: InfoHash,
    /// BitTorrent payload bytes.
    pub bittorrent_bytes: u64,
    /// HTTP body bytes.
    pub http_bytes: u64,
}

/// Turns cumulative per-peer upload counters into deltas. librqbit keeps a
/// counter per peer address for the life of a torrent; a counter that goes
/// down (a peer entry was replaced) restarts from 0.
#[derive(Debug, Default)]
pub struct UploadSampler {
    last: HashMap<(InfoHash, String), u64>,
}

impl UploadSampler {
    /// Deltas since the previous sample for `info_hash`, as `(peer, bytes)`
    /// with bytes > 0.
    pub fn deltas(
        &mut self,
        info_hash: &InfoHash,
        counters: impl IntoIterator<Item = (String, u64)>,
    ) -> Vec<(String, u64)> {
        let mut out = Vec::new();
        for (peer, total) in counters {
            let prev = self.last.insert((*info_hash, peer.clone()), total).unwrap_or(0);
            let delta = if total >= prev { total - prev } else { total };
            if delta > 0 {
                out.push((peer, delta));
            }
        }
        out
    }
}

/// Handle to the ledger database.
#[derive(Clone, Debug)]
pub struct Ledger {
    pool: SqlitePool,
}

/// Milliseconds since the Unix epoch, now (wall clock).
pub fn now_ms() -> i64 {
    ota_common::clock::wall_ms()
}

impl Ledger {
    /// Opens (creating if needed) the ledger at `url` and runs its migrations.
    pub async fn open(url: &str) -> anyhow::Result<Self> {
        let pool = ota_common::db::open_sqlite(url).await.context("egress ledger")?;
        sqlx::migrate!("./migrations")
            .run(&pool)
            .await
            .context("ledger migration failed")?;
        Ok(Ledger { pool })
    }

    /// Appends rows in one transaction.
    pub async fn record(&self, entries: &[EgressEntry]) -> Result<(), sqlx::Error> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut tx = self.pool.begin().await?;
        for e in entries {
            sqlx::query("INSERT INTO egress (at_ms, info_hash, path, peer, device, bytes) VALUES (?, ?, ?, ?, ?, ?)")
                .bind(e.at_ms)
                .bind(e.info_hash.to_hex())
                .bind(e.path.as_str())
                .bind(&e.peer)
                .bind(&e.device)
                .bind(e.bytes as i64)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await
    }

    /// Totals per release, ordered by info hash.
    pub async fn totals(&self) -> Result<Vec<ReleaseTotals>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT info_hash,
                    SUM(CASE WHEN path = 'bittorrent' THEN bytes ELSE 0 END) AS bt,
                    SUM(CASE WHEN path = 'http' THEN bytes ELSE 0 END) AS http
             FROM egress GROUP BY info_hash ORDER BY info_hash",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(ReleaseTotals {
                    info_hash: info_hash_column(r)?,
                    bittorrent_bytes: r.try_get::<i64, _>("bt")? as u64,
                    http_bytes: r.try_get::<i64, _>("http")? as u64,
                })
            })
            .collect()
    }

    /// Every row, oldest first.
    pub async fn entries(&self) -> Result<Vec<EgressEntry>, sqlx::Error> {
        let rows = sqlx::query("SELECT at_ms, info_hash, path, peer, device, bytes FROM egress ORDER BY id")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                let path: String = r.try_get("path")?;
                Ok(EgressEntry {
                    at_ms: r.try_get("at_ms")?,
                    info_hash: info_hash_column(r)?,
                    path: if path == "http" {
                        EgressPath::Http
                    } else {
                        EgressPath::Bittorrent
                    },
                    peer: r.try_get("peer")?,
                    device: r.try_get("device")?,
                    bytes: r.try_get::<i64, _>("bytes")? as u64,
                })
            })
            .collect()
    }
}

/// The `info_hash` column (40 hex characters) of a ledger row.
fn info_hash_column(r: &SqliteRow) -> Result<InfoHash, sqlx::Error> {
    let hex: String = r.try_get("info_hash")?;
    hex.parse().map_err(|e| sqlx::Error::ColumnDecode {
        index: "info_hash".into(),
        source: Box::new(e),
    })
}

/// Renders rows as CSV with the header `at_ms,info_hash,path,peer,device,bytes`
/// (fields with commas or quotes are quoted).
pub fn to_csv(entries: &[EgressEntry]) -> String {
    let q = |s: &str| {
        if s.contains([',', '"', '\n']) {
            format!("\"{}\"", s.replace('"', "\"\""))
        } else {
            s.to_string()
        }
    };
    let mut out = String::from("at_ms,info_hash,path,peer,device,bytes\n");
    for e in entries {
        out.push_str(&format!(
            "{},{},{},{},{},{}\n",
            e.at_ms,
            e.info_hash,
            e.path.as_str(),
            q(&e.peer),
            q(e.device.as_deref().unwrap_or("")),
            e.bytes
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sampler_emits_deltas_and_survives_counter_resets() {
        let mut s = UploadSampler::default();
        let (a, b) = (InfoHash([0xa; 20]), InfoHash([0xb; 20]));
        assert_eq!(
            s.deltas(&a, [("p1".into(), 100), ("p2".into(), 0)]),
            vec![("p1".into(), 100)]
        );
        assert_eq!(
            s.deltas(&a, [("p1".into(), 250), ("p2".into(), 5)]),
            vec![("p1".into(), 150), ("p2".into(), 5)]
        );
        assert_eq!(s.deltas(&a, [("p1".into(), 250)]), vec![]);
        assert_eq!(
            s.deltas(&a, [("p1".into(), 40)]),
            vec![("p1".into(), 40)],
            "reset counter restarts"
        );
        assert_eq!(
            s.deltas(&b, [("p1".into(), 7)]),
            vec![("p1".into(), 7)],
            "releases are separate"
        );
    }

    #[tokio::test]
    async fn ledger_totals_and_export() {
        let dir = tempfile::tempdir().unwrap();
        let l = Ledger::open(&format!("sqlite://{}/l.db", dir.path().display()))
            .await
            .unwrap();
        let ih = InfoHash([0xab; 20]);
        let e = |path, bytes, device: Option<&str>| EgressEntry {
            at_ms: 1,
            info_hash: ih,
            path,
            peer: "127.0.0.1:1".into(),
            device: device.map(Into::into),
            bytes,
        };
        l.record(&[
            e(EgressPath::Bittorrent, 10, None),
            e(EgressPath::Http, 5, Some("dev,1")),
            e(EgressPath::Bittorrent, 3, None),
        ])
        .await
        .unwrap();
        assert_eq!(
            l.totals().await.unwrap(),
            vec![ReleaseTotals {
                info_hash: ih,
                bittorrent_bytes: 13,
                http_bytes: 5
            }]
        );
        let csv = to_csv(&l.entries().await.unwrap());
        assert_eq!(csv.lines().count(), 4);
        assert!(csv.contains(&format!("1,{ih},http,127.0.0.1:1,\"dev,1\",5")), "{csv}");
        let json = serde_json::to_value(&l.entries().await.unwrap()[0]).unwrap();
        assert_eq!(json["info_hash"], "ab".repeat(20), "JSON keeps the hex form");
    }
}
