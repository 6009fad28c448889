//! HTTP fallback: when peers deliver no payload byte for a configurable
//! delay, the missing pieces are fetched from the origin's plain-HTTP path
//! (`GET {http_url}` with `Range: bytes=a-b`, RFC 9110 §14, and `If-Match`
//! on the release's S3 ETag, RFC 9110 §13.1.1), one piece at a time.
//!
//! Every piece is checked against its SHA-1 from the torrent's info
//! dictionary (BEP 3 `pieces`) before it is written; a piece that fails is
//! an error and is never written. The caller then hands the file back to
//! librqbit, whose initial check finds the written pieces (see
//! [`crate::download`]).
//!
//! Pure parts: [`PieceTable`] (piece ranges and hashes), [`StallWatch`]
//! (the "no byte for T" detector). I/O parts: [`missing_pieces`] (reads the
//! partial file), [`fetch_piece`] and [`fill_missing`].

use std::io::{Read, Seek, SeekFrom, Write};
use std::ops::Range;
use std::path::Path;
use std::time::{Duration, Instant};

use sha1::{Digest, Sha1};

/// Why the HTTP fallback failed.
#[derive(Debug, thiserror::Error)]
pub enum FallbackError {
    /// The `.torrent` could not be parsed or is not a single-file torrent.
    #[error("bad torrent: {0}")]
    Torrent(String),
    /// The release has no HTTP URL.
    #[error("the release has no HTTP URL for the fallback")]
    NoUrl,
    /// The HTTP request failed or the origin answered with an error status.
    #[error("HTTP fetch of piece {piece} failed: {reason}")]
    Http {
        /// Piece index.
        piece: u32,
        /// What went wrong.
        reason: String,
    },
    /// The origin sent a body of the wrong length or whose SHA-1 differs
    /// from the info dictionary's: the piece is refused and not written.
    #[error("piece {piece} from HTTP failed its SHA-1 check (got {got} bytes); not written")]
    BadPiece {
        /// Piece index.
        piece: u32,
        /// Body length received, bytes.
        got: usize,
    },
    /// The origin declared (`Content-Length`) or sent more bytes than the
    /// piece has: refused without reading (or buffering) past the piece.
    #[error("piece {piece} from HTTP: {reason}; not written")]
    Oversized {
        /// Piece index.
        piece: u32,
        /// What was too large.
        reason: String,
    },
    /// Reading or writing the package file failed (e.g. no space left).
    #[error("package file: {0}")]
    Io(#[from] std::io::Error),
}

/// Piece layout and SHA-1 hashes of a single-file torrent (BEP 3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PieceTable {
    /// Piece length, bytes.
    pub piece_length: u64,
    /// File size, bytes.
    pub size: u64,
    /// SHA-1 of each piece, in order.
    pub hashes: Vec<[u8; 20]>,
}

impl PieceTable {
    /// Reads the table from `.torrent` bytes.
    ///
    /// Errors: not bencode, a multi-file torrent, or a `pieces` string whose
    /// length is not 20 × the piece count.
    pub fn from_torrent(torrent: &[u8]) -> Result<Self, FallbackError> {
        let t = librqbit::torrent_from_bytes(torrent).map_err(|e| FallbackError::Torrent(e.to_string()))?;
        let info = &t.info.data;
        let size = info
            .length
            .ok_or_else(|| FallbackError::Torrent("not a single-file torrent".into()))?;
        Self::new(info.piece_length as u64, size, info.pieces.as_ref())
    }

    /// Builds a table from a piece length, a size and the concatenated
    /// 20-byte SHA-1 hashes.
    pub fn new(piece_length: u64, size: u64, pieces: &[u8]) -> Result<Self, FallbackError> {
        if piece_length == 0 {
            return Err(FallbackError::Torrent("piece length 0".into()));
        }
        let count = size.div_ceil(piece_length);
        if pieces.len() as u64 != count * 20 {
            return Err(FallbackError::Torrent(format!(
                "{} hash bytes for {count} pieces",
                pieces.len()
            )));
        }
        let hashes = pieces
            .chunks_exact(20)
            .map(|c| c.try_into().expect("20 bytes"))
            .collect();
        Ok(PieceTable {
            piece_length,
            size,
            hashes,
        })
    }

    /// Number of pieces.
    pub fn count(&self) -> u32 {
        self.hashes.len() as u32
    }

    /// Byte range of piece `i` in the file (the last piece may be short).
    pub fn range(&self, i: u32) -> Range<u64> {
        let start = i as u64 * self.piece_length;
        start..(start + self.piece_length).min(self.size)
    }

    /// Whether `data` is piece `i` (right length and SHA-1).
    pub fn check(&self, i: u32, data: &[u8]) -> bool {
        let r = self.range(i);
        data.len() as u64 == r.end - r.start && Sha1::digest(data)[..] == self.hashes[i as usize][..]
    }
}

/// Detects "no payload byte for `after`": fed the running byte counter, it
/// answers true once the counter has not moved for `after`.
#[derive(Debug, Clone)]
pub struct StallWatch {
    after: Duration,
    last_bytes: u64,
    since: Instant,
}

impl StallWatch {
    /// Starts watching at `now` with `bytes` received so far.
    pub fn new(after: Duration, bytes: u64, now: Instant) -> Self {
        StallWatch {
            after,
            last_bytes: bytes,
            since: now,
        }
    }

    /// Records the counter at `now`; true when it has not grown for `after`.
    pub fn stalled(&mut self, bytes: u64, now: Instant) -> bool {
        if bytes != self.last_bytes {
            self.last_bytes = bytes;
            self.since = now;
            return false;
        }
        now.duration_since(self.since) >= self.after
    }
}

/// Pieces of `file` that are absent or fail their SHA-1 (a missing or short
/// file counts its absent pieces as missing).
pub fn missing_pieces(table: &PieceTable, file: &Path) -> std::io::Result<Vec<u32>> {
    let mut f = match std::fs::File::open(file) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((0..table.count()).collect()),
        Err(e) => return Err(e),
    };
    let mut buf = vec![0u8; table.piece_length as usize];
    let mut out = Vec::new();
    for i in 0..table.count() {
        let r = table.range(i);
        let n = (r.end - r.start) as usize;
        f.seek(SeekFrom::Start(r.start))?;
        let ok = match f.read_exact(&mut buf[..n]) {
            Ok(()) => table.check(i, &buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => false,
            Err(e) => return Err(e),
        };
        if !ok {
            out.push(i);
        }
    }
    Ok(out)
}

/// Where and how to fetch from the origin over HTTP.
#[derive(Debug, Clone)]
pub struct HttpSource {
    /// The release's `http_url` (the seeder's `/packages/{key}`).
    pub url: String,
    /// The release's ETag, sent as `If-Match` so a changed object is refused.
    pub etag: Option<String>,
    /// This device's id, sent as `X-Device-Id` for the origin's ledger.
    pub device: String,
    /// This device's token, sent as `Authorization: Bearer TOKEN` (the
    /// origin's `/packages/{key}` takes the device from it).
    pub token: Option<String>,
}

/// Longest one piece request may take, connection to last byte.
pub const PIECE_TIMEOUT: Duration = Duration::from_secs(120);

/// Fetches piece `i` with one Range request (at most [`PIECE_TIMEOUT`])
/// and checks it. The body's `Content-Length` must be the piece's length,
/// and no more than the piece is ever read or buffered.
///
/// Errors: [`FallbackError::Http`] (request failed or a status other than
/// 206), [`FallbackError::Oversized`] (a longer body declared or sent),
/// [`FallbackError::BadPiece`] (wrong length or SHA-1).
pub async fn fetch_piece(
    client: &reqwest::Client,
    src: &HttpSource,
    table: &PieceTable,
    i: u32,
) -> Result<Vec<u8>, FallbackError> {
    let r = table.range(i);
    let http = |reason: String| FallbackError::Http { piece: i, reason };
    let mut req = client
        .get(&src.url)
        .header(reqwest::header::RANGE, format!("bytes={}-{}", r.start, r.end - 1))
        .header("x-device-id", &src.device)
        .timeout(PIECE_TIMEOUT);
    if let Some(token) = &src.token {
        req = req.bearer_auth(token);
    }
    if let Some(etag) = &src.etag {
        req = req.header(reqwest::header::IF_MATCH, etag);
    }
    let resp = req.send().await.map_err(|e| http(e.to_string()))?;
    let status = resp.status();
    let want = r.end - r.start;
    if status != reqwest::StatusCode::PARTIAL_CONTENT {
        let body = ota_client::read_limited(resp, 200, "error body")
            .await
            .unwrap_or_default();
        return Err(http(format!("status {status}: {}", String::from_utf8_lossy(&body))));
    }
    if let Some(n) = resp.content_length().filter(|n| *n != want) {
        return Err(FallbackError::Oversized {
            piece: i,
            reason: format!("Content-Length {n}, the piece is {want} bytes"),
        });
    }
    let body = match ota_client::read_limited(resp, want, "piece").await {
        Ok(b) => b,
        Err(ota_client::ReadError::TooLarge(_)) => {
            return Err(FallbackError::Oversized {
                piece: i,
                reason: format!("body longer than the piece's {want} bytes"),
            })
        }
        Err(e) => return Err(http(e.to_string())),
    };
    if !table.check(i, &body) {
        return Err(FallbackError::BadPiece {
            piece: i,
            got: body.len(),
        });
    }
    Ok(body)
}

/// Fetches every piece of `file` that is missing or broken, verifies each
/// and writes it in place (the file is created and sized as needed).
/// Returns the verified bytes written.
///
/// Errors: the first failing piece (nothing of it is written; pieces
/// written before it stay, they are verified) or a file error.
pub async fn fill_missing(
    client: &reqwest::Client,
    src: &HttpSource,
    table: &PieceTable,
    file: &Path,
) -> Result<u64, FallbackError> {
    let missing = {
        let (t, f) = (table.clone(), file.to_path_buf());
        tokio::task::spawn_blocking(move || missing_pieces(&t, &f))
            .await
            .map_err(std::io::Error::other)??
    };
    tracing::info!(pieces = missing.len(), url = %src.url, "fetching missing pieces over HTTP");
    let mut written = 0u64;
    if missing.is_empty() {
        return Ok(0);
    }
    if let Some(parent) = file.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(false)
        .open(file)?;
    if f.metadata()?.len() < table.size {
        f.set_len(table.size)?;
    }
    for i in missing {
        let data = fetch_piece(client, src, table, i).await?;
        f.seek(SeekFrom::Start(table.range(i).start))?;
        f.write_all(&data)?;
        written += data.len() as u64;
    }
    f.sync_data()?;
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table_for(data: &[u8], pl: u64) -> PieceTable {
        let pieces: Vec<u8> = data
            .chunks(pl as usize)
            .flat_map(|c| Sha1::digest(c).to_vec())
            .collect();
        PieceTable::new(pl, data.len() as u64, &pieces).unwrap()
    }

    #[test]
    fn piece_layout_and_checks() {
        let data: Vec<u8> = (0..2500u32).map(|i| (i % 251) as u8).collect();
        let t = table_for(&data, 1000);
        assert_eq!(t.count(), 3);
        assert_eq!(t.range(2), 2000..2500);
        assert!(t.check(2, &data[2000..]));
        assert!(!t.check(1, &data[2000..]), "wrong piece");
        let mut bad = data[..1000].to_vec();
        bad[7] ^= 1;
        assert!(!t.check(0, &bad));
        assert!(
            PieceTable::new(1000, 2500, &[0u8; 40]).is_err(),
            "hash count must match"
        );
        assert!(PieceTable::new(0, 1, &[]).is_err());
    }

    #[test]
    fn stall_after_no_progress() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut w = StallWatch::new(s(30), 0, t0);
        assert!(!w.stalled(0, t0 + s(29)));
        assert!(!w.stalled(10, t0 + s(31)), "progress resets the clock");
        assert!(!w.stalled(10, t0 + s(60)));
        assert!(w.stalled(10, t0 + s(61)));
    }

    #[test]
    fn missing_pieces_of_a_partial_file() {
        let data: Vec<u8> = (0..2500u32).map(|i| (i % 251) as u8).collect();
        let t = table_for(&data, 1000);
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("pkg");
        assert_eq!(missing_pieces(&t, &p).unwrap(), vec![0, 1, 2]);
        let mut partial = data.clone();
        partial[1500] ^= 0xff;
        std::fs::write(&p, &partial[..2200]).unwrap();
        assert_eq!(missing_pieces(&t, &p).unwrap(), vec![1, 2]);
        std::fs::write(&p, &data).unwrap();
        assert!(missing_pieces(&t, &p).unwrap().is_empty());
    }
}
