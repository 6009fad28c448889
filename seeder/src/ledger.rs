//! The origin's egress ledger, in SQL through sqlx (SQLite by default):
//! every byte the origin sends, by release, path (BitTorrent or HTTP), peer
//! address, device when known, and second. Exported as CSV or JSON for the
//! billing report.
//!
//! BitTorrent bytes come from librqbit's per-peer upload counters, sampled
//! by the seeder and written as deltas ([`UploadSampler`], pure); HTTP bytes
//! are summed per response and written with the next sample.
//!
//! Rows are aggregated: one row per (release, path, peer, second), its
//! `at_ms` the start of that second; a write into a second that already has
//! a row adds to its bytes (migration `0002_egress_per_second`). So a flood
//! of requests from one connection costs one row per second, not one per
//! request.
//!
//! Exports never load the whole table: [`Ledger::export`] reads
//! [`EXPORT_PAGE_ROWS`] rows at a time (keyset pagination on the row id,
//! no read transaction held while a slow client reads) and yields one
//! chunk per page. CSV cells are neutralised against formula injection
//! ([`csv_cell`]).

use std::borrow::Cow;
use std::collections::HashMap;

use anyhow::Context;
use bytes::Bytes;
use futures::Stream;
use ota_proto::InfoHash;
use serde::{Deserialize, Serialize};
use sqlx::sqlite::SqliteRow;
use sqlx::{Row, SqlitePool};

/// How a byte left the origin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
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
    /// Time, milliseconds since the Unix epoch. [`Ledger::record`] stores
    /// the start of its second (a multiple of 1000).
    pub at_ms: i64,
    /// Release info hash (hex in SQL, CSV and JSON).
    pub info_hash: InfoHash,
    /// BitTorrent or HTTP.
    pub path: EgressPath,
    /// Peer address (`ip:port`) as the origin saw it.
    pub peer: String,
    /// Device id when known: on the HTTP path, the device the tracker
    /// vouched for (never a header the client chose).
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
///
/// Memory is bounded by the peers of the latest sample: a peer missing from
/// a release's sample is forgotten ([`Self::deltas`]), and a release no
/// longer sampled is forgotten with [`Self::retain_releases`].
#[derive(Debug, Default)]
pub struct UploadSampler {
    last: HashMap<InfoHash, HashMap<String, u64>>,
}

impl UploadSampler {
    /// Deltas since the previous sample for `info_hash`, as `(peer, bytes)`
    /// with bytes > 0. `counters` is the release's whole current peer list:
    /// peers not in it have left and their state is dropped (a peer that
    /// comes back starts from a new librqbit counter, so from 0).
    pub fn deltas(
        &mut self,
        info_hash: &InfoHash,
        counters: impl IntoIterator<Item = (String, u64)>,
    ) -> Vec<(String, u64)> {
        let mut prev = self.last.remove(info_hash).unwrap_or_default();
        let mut now = HashMap::new();
        let mut out = Vec::new();
        for (peer, total) in counters {
            let before = prev.remove(&peer).unwrap_or(0);
            let delta = if total >= before { total - before } else { total };
            if delta > 0 {
                out.push((peer.clone(), delta));
            }
            now.insert(peer, total);
        }
        if !now.is_empty() {
            self.last.insert(*info_hash, now);
        }
        out
    }

    /// Forgets every release for which `keep` is false (releases that
    /// stopped seeding or whose torrent is no longer live).
    pub fn retain_releases(&mut self, keep: impl Fn(&InfoHash) -> bool) {
        self.last.retain(|ih, _| keep(ih));
    }

    /// How many (release, peer) counters are remembered.
    pub fn tracked(&self) -> usize {
        self.last.values().map(HashMap::len).sum()
    }
}

/// Rows per page (and per chunk) of [`Ledger::export`].
pub const EXPORT_PAGE_ROWS: i64 = 1000;

/// Export formats of [`Ledger::export`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportFormat {
    /// CSV with the header [`CSV_HEADER`], one line per row ([`csv_row`]).
    Csv,
    /// A JSON array of [`EgressEntry`] objects, one per line.
    Json,
}

/// The CSV header line (with its newline).
pub const CSV_HEADER: &str = "at_ms,info_hash,path,peer,device,bytes\n";

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
    ///
    /// Errors: the database cannot be opened or migrated.
    pub async fn open(url: &str) -> anyhow::Result<Self> {
        let pool = ota_common::db::open_sqlite(url).await.context("egress ledger")?;
        sqlx::migrate!("./migrations")
            .run(&pool)
            .await
            .context("ledger migration failed")?;
        Ok(Ledger { pool })
    }

    /// Adds rows in one transaction, each to the row of its (release, path,
    /// peer, second), created if missing. A row's device is the first one
    /// known.
    ///
    /// Errors: the database write failed (nothing is written).
    pub async fn record(&self, entries: &[EgressEntry]) -> Result<(), sqlx::Error> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut tx = self.pool.begin().await?;
        for e in entries {
            sqlx::query(
                "INSERT INTO egress (at_ms, info_hash, path, peer, device, bytes) VALUES (?, ?, ?, ?, ?, ?)
                 ON CONFLICT (info_hash, path, peer, at_ms)
                 DO UPDATE SET bytes = bytes + excluded.bytes, device = COALESCE(device, excluded.device)",
            )
            .bind(e.at_ms.div_euclid(1000) * 1000)
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
    ///
    /// Errors: the database read failed.
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

    /// At most `limit` rows with an id above `after_id`, oldest first, each
    /// with its id (pass the last one as the next `after_id`).
    ///
    /// Errors: the database read failed.
    pub async fn page(&self, after_id: i64, limit: i64) -> Result<Vec<(i64, EgressEntry)>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT id, at_ms, info_hash, path, peer, device, bytes FROM egress WHERE id > ? ORDER BY id LIMIT ?",
        )
        .bind(after_id)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let path: String = r.try_get("path")?;
                Ok((
                    r.try_get("id")?,
                    EgressEntry {
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
                    },
                ))
            })
            .collect()
    }

    /// The whole ledger in `format`, oldest row first, as a stream of
    /// chunks: the header (CSV) or `[` (JSON), then one chunk per page of
    /// [`EXPORT_PAGE_ROWS`] rows, then `]` (JSON). At most one page is in
    /// memory at a time. Rows written while the export runs may or may not
    /// be included.
    ///
    /// Errors: a failed page read ends the stream with that error (the
    /// output so far is then truncated).
    pub fn export(&self, format: ExportFormat) -> impl Stream<Item = Result<Bytes, sqlx::Error>> + Send + 'static {
        enum Step {
            Start,
            Rows { after: i64, first: bool },
            Done,
        }
        let ledger = self.clone();
        futures::stream::unfold(Step::Start, move |step| {
            let ledger = ledger.clone();
            async move {
                match step {
                    Step::Start => {
                        let head = match format {
                            ExportFormat::Csv => CSV_HEADER,
                            ExportFormat::Json => "[",
                        };
                        Some((
                            Ok(Bytes::from_static(head.as_bytes())),
                            Step::Rows { after: 0, first: true },
                        ))
                    }
                    Step::Rows { after, first } => match ledger.page(after, EXPORT_PAGE_ROWS).await {
                        Err(e) => Some((Err(e), Step::Done)),
                        Ok(page) if page.is_empty() => match format {
                            ExportFormat::Csv => None,
                            ExportFormat::Json => Some((Ok(Bytes::from_static(b"]\n")), Step::Done)),
                        },
                        Ok(page) => {
                            let last = page.last().map_or(after, |(id, _)| *id);
                            let mut chunk = String::new();
                            for (i, (_, e)) in page.iter().enumerate() {
                                match format {
                                    ExportFormat::Csv => chunk.push_str(&csv_row(e)),
                                    ExportFormat::Json => {
                                        if !(first && i == 0) {
                                            chunk.push(',');
                                        }
                                        chunk.push('\n');
                                        // An entry always serializes (strings and integers).
                                        chunk.push_str(&serde_json::to_string(e).unwrap_or_default());
                                    }
                                }
                            }
                            Some((
                                Ok(Bytes::from(chunk)),
                                Step::Rows {
                                    after: last,
                                    first: false,
                                },
                            ))
                        }
                    },
                    Step::Done => None,
                }
            }
        })
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

/// One CSV cell from untrusted text, safe to open in a spreadsheet.
///
/// A cell starting with `=`, `+`, `-`, `@`, a tab or a carriage return
/// would be run as a formula by Excel, LibreOffice or Google Sheets (CSV
/// injection, OWASP): it gets a leading `'`. A cell with a comma, quote or
/// line break is then quoted (RFC 4180, quotes doubled).
pub fn csv_cell(s: &str) -> Cow<'_, str> {
    let mut cell = Cow::Borrowed(s);
    if s.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        cell = Cow::Owned(format!("'{s}"));
    }
    if cell.contains([',', '"', '\n', '\r']) {
        cell = Cow::Owned(format!("\"{}\"", cell.replace('"', "\"\"")));
    }
    cell
}

/// One CSV line (with its newline) under [`CSV_HEADER`]; the peer and
/// device cells go through [`csv_cell`].
pub fn csv_row(e: &EgressEntry) -> String {
    format!(
        "{},{},{},{},{},{}\n",
        e.at_ms,
        e.info_hash,
        e.path.as_str(),
        csv_cell(&e.peer),
        csv_cell(e.device.as_deref().unwrap_or("")),
        e.bytes
    )
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

    async fn export_text(l: &Ledger, format: ExportFormat) -> String {
        use futures::TryStreamExt;
        let chunks: Vec<Bytes> = l.export(format).try_collect().await.unwrap();
        String::from_utf8(chunks.concat()).unwrap()
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
        let csv = export_text(&l, ExportFormat::Csv).await;
        assert_eq!(
            csv.lines().count(),
            3,
            "the two BitTorrent rows of one second are one: {csv}"
        );
        assert!(csv.contains(&format!("0,{ih},http,127.0.0.1:1,\"dev,1\",5")), "{csv}");
        assert!(csv.contains(&format!("0,{ih},bittorrent,127.0.0.1:1,,13")), "{csv}");
        let json: serde_json::Value = serde_json::from_str(&export_text(&l, ExportFormat::Json).await).unwrap();
        let json = &json[0];
        assert_eq!(json["info_hash"], "ab".repeat(20), "JSON keeps the hex form");
    }
}
