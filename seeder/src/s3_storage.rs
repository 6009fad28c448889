//! A read-only librqbit storage that serves pieces straight from S3.
//!
//! librqbit asks for 16 KiB blocks through the synchronous
//! [`TorrentStorage::pread_exact`] (on a blocking section of a multi-thread
//! tokio runtime). A miss, and every reader that starts a piece, moves a
//! read-ahead window along (the [`Pipeline`]): the missing pieces ahead are
//! fetched by coalesced ranged GETs of [`GET_BYTES`] in spawned tasks, several
//! in flight, each response split into pieces as its bytes arrive. Every
//! piece is SHA-1 checked against the info dictionary before it is cached or
//! served, so a changed or corrupt object is never served. Concurrent misses
//! of the same piece share one GET. Writes are refused: the origin never
//! downloads.

use std::collections::{HashMap, VecDeque};
use std::ops::Range;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use bytes::{Bytes, BytesMut};
use futures::channel::oneshot;
use futures::future::{BoxFuture, FutureExt, Shared};
use librqbit::storage::{StorageFactory, StorageFactoryExt, TorrentStorage};
use librqbit::{ManagedTorrentShared, TorrentMetadata};
use ota_proto::InfoHash;
use sha1::{Digest, Sha1};

use crate::origin_store::{self, S3Location};
use crate::piece_cache::PieceCache;

/// Counters of S3 traffic, shared by all releases.
#[derive(Debug, Default)]
pub struct S3Counters {
    /// Bytes read from S3 by piece GETs.
    pub bytes_read: AtomicU64,
    /// Ranged GETs started (retries included); `bytes_read / gets` is the
    /// mean GET size in bytes.
    pub gets: AtomicU64,
    /// Ranged GETs that failed for good (after retries); each fails the
    /// pieces it had not delivered yet.
    pub failures: AtomicU64,
    /// Pieces whose SHA-1 did not match the info dictionary.
    pub hash_mismatches: AtomicU64,
}

type PieceFuture = Shared<BoxFuture<'static, Result<Bytes, Arc<anyhow::Error>>>>;

struct Inner {
    s3: aws_sdk_s3::Client,
    location: S3Location,
    info_hash: InfoHash,
    length: u64,
    piece_length: u64,
    pieces: Vec<[u8; 20]>,
    cache: Arc<Mutex<PieceCache>>,
    inflight: Mutex<HashMap<u32, PieceFuture>>,
    counters: Arc<S3Counters>,
    runtime: tokio::runtime::Handle,
    pipeline: Pipeline,
    read_ahead_on: Arc<AtomicBool>,
    retries: u32,
    permits: Arc<tokio::sync::Semaphore>,
    corrupt: Arc<Mutex<Option<String>>>,
}

/// Creates an [`S3Storage`] for one release; give it to librqbit in
/// `AddTorrentOptions::storage_factory`.
#[derive(Clone)]
pub struct S3StorageFactory {
    inner: Arc<Inner>,
}

/// What one release's storage needs to know.
pub struct S3StorageParams {
    /// S3 client.
    pub s3: aws_sdk_s3::Client,
    /// The package object.
    pub location: S3Location,
    /// The release's info hash.
    pub info_hash: InfoHash,
    /// Package size, bytes.
    pub length: u64,
    /// Piece length, bytes.
    pub piece_length: u64,
    /// Expected SHA-1 of each piece.
    pub pieces: Vec<[u8; 20]>,
    /// Shared piece cache.
    pub cache: Arc<Mutex<PieceCache>>,
    /// Shared S3 counters.
    pub counters: Arc<S3Counters>,
    /// Pieces kept fetched ahead of a reader (on a miss and as it advances),
    /// at most a quarter of the cache ([`Pipeline::new`]).
    pub read_ahead: u32,
    /// GET attempts per piece before giving up (backoff 200 ms, doubling, max 5 s).
    pub retries: u32,
    /// Shared limit on concurrent S3 GETs.
    pub permits: Arc<tokio::sync::Semaphore>,
    /// Set to the reason when a piece fails its SHA-1 (the object changed).
    pub corrupt: Arc<Mutex<Option<String>>>,
    /// Whether reads move the read-ahead window; while `false` a miss
    /// fetches only its own piece. The seeder keeps it `false` during
    /// librqbit's fast-resume spot check (a few scattered pieces per
    /// release; reading ahead of each would read the whole object again)
    /// and sets it once the torrent is live.
    pub read_ahead_on: Arc<AtomicBool>,
}

impl S3StorageFactory {
    /// A factory bound to the current tokio runtime.
    pub fn new(p: S3StorageParams) -> Self {
        let cache_cap = p.cache.lock().unwrap().cap_bytes();
        let pipeline = Pipeline::new(p.read_ahead, p.piece_length, cache_cap, p.pieces.len() as u32);
        S3StorageFactory {
            inner: Arc::new(Inner {
                s3: p.s3,
                location: p.location,
                info_hash: p.info_hash,
                length: p.length,
                piece_length: p.piece_length,
                pieces: p.pieces,
                cache: p.cache,
                inflight: Mutex::new(HashMap::new()),
                counters: p.counters,
                runtime: tokio::runtime::Handle::current(),
                pipeline,
                read_ahead_on: p.read_ahead_on,
                retries: p.retries.max(1),
                permits: p.permits,
                corrupt: p.corrupt,
            }),
        }
    }
}

impl StorageFactory for S3StorageFactory {
    type Storage = S3Storage;

    fn create(&self, _shared: &ManagedTorrentShared, metadata: &TorrentMetadata) -> anyhow::Result<S3Storage> {
        let len = metadata.info.iter_file_details_ext().count();
        if len != 1 {
            anyhow::bail!("S3 storage serves single-file torrents only ({len} files)");
        }
        Ok(S3Storage {
            inner: self.inner.clone(),
        })
    }

    fn clone_box(&self) -> librqbit::storage::BoxStorageFactory {
        self.clone().boxed()
    }
}

/// The storage of one release.
pub struct S3Storage {
    inner: Arc<Inner>,
}

/// Target size of one coalesced read-ahead GET, bytes. Rounded down to whole
/// pieces (at least one piece, at most the window).
pub const GET_BYTES: u64 = 1 << 20;

/// The read-ahead window holds at most the piece cache's cap divided by this,
/// bytes over bytes (a quarter of the cache), so pieces read ahead do not
/// evict each other, or the piece being served, before they are served.
pub const WINDOW_CACHE_DIVISOR: u64 = 4;

/// The shape of one release's read-ahead pipeline, all in pieces. Pure: it
/// plans which GETs to start and does no I/O.
///
/// The release is cut into aligned groups of `per_get` pieces; each GET
/// covers (the missing pieces of) one group. For a reader at piece `r`, the
/// plan covers `r` and the rest of its group, then every group that ends
/// within `r + 1 + window`. As the reader advances, each group that enters
/// the window whole becomes one GET: between `window - per_get + 1` and
/// `window` pieces stay ahead of it, about `window / per_get` GETs in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pipeline {
    /// Most pieces fetched (cached or in flight) ahead of the reader's piece.
    pub window: u32,
    /// Pieces per coalesced GET (the group size), at least 1.
    pub per_get: u32,
    /// Pieces in the release.
    pub count: u32,
}

impl Pipeline {
    /// The pipeline of a release of `count` pieces of `piece_length` bytes:
    /// `read_ahead` pieces ahead, at most `cache_cap_bytes /`
    /// [`WINDOW_CACHE_DIVISOR`] bytes of them, in GETs of [`GET_BYTES`].
    pub fn new(read_ahead: u32, piece_length: u64, cache_cap_bytes: u64, count: u32) -> Self {
        let piece_length = piece_length.max(1);
        let cap = (cache_cap_bytes / WINDOW_CACHE_DIVISOR / piece_length).min(u32::MAX as u64) as u32;
        let window = read_ahead.min(cap);
        let per_get = (GET_BYTES / piece_length).clamp(1, window.max(1) as u64) as u32;
        Pipeline { window, per_get, count }
    }

    /// The GETs to start for a reader at piece `reader`, nearest first: runs
    /// of consecutive piece indexes (end exclusive) for which `have` is false
    /// (`have`: cached or in flight), each within one group.
    pub fn plan(&self, reader: u32, mut have: impl FnMut(u32) -> bool) -> Vec<Range<u32>> {
        let mut runs = Vec::new();
        if reader >= self.count {
            return runs;
        }
        let count = self.count as u64;
        let per_get = self.per_get.max(1) as u64;
        let limit = (reader as u64 + 1 + self.window as u64).min(count);
        let mut group = reader as u64 / per_get * per_get;
        let mut from = reader as u64;
        while group < count {
            let group_end = (group + per_get).min(count);
            let to = if from == reader as u64 {
                group_end.min(limit)
            } else if group_end <= limit {
                group_end
            } else {
                break;
            };
            let mut run: Option<u64> = None;
            for i in from..to {
                if have(i as u32) {
                    if let Some(s) = run.take() {
                        runs.push(s as u32..i as u32);
                    }
                } else if run.is_none() {
                    run = Some(i);
                }
            }
            if let Some(s) = run {
                runs.push(s as u32..to as u32);
            }
            group = group_end;
            from = group_end;
        }
        runs
    }
}

type PieceSender = oneshot::Sender<Result<Bytes, Arc<anyhow::Error>>>;

/// One coalesced GET's pieces not yet delivered: `next..end`, one sender
/// each. Dropped early (the runtime stops), it forgets them as in flight so
/// a later read starts them again.
struct Run {
    inner: Arc<Inner>,
    next: u32,
    end: u32,
    senders: VecDeque<PieceSender>,
}

impl Drop for Run {
    fn drop(&mut self) {
        if self.next < self.end {
            let mut inflight = self.inner.inflight.lock().unwrap();
            for i in self.next..self.end {
                inflight.remove(&i);
            }
        }
    }
}

impl Run {
    /// Fetches the run with retries (backoff 200 ms, doubling, max 5 s);
    /// attempts start again from the first piece not yet delivered, and an
    /// attempt that delivered a piece renews the budget.
    async fn fetch(mut self) {
        let retries = self.inner.retries;
        let mut delay = Duration::from_millis(200);
        let mut attempt = 1;
        let mut last = None;
        while self.next < self.end {
            let before = self.next;
            match self.stream_once().await {
                Ok(()) => return,
                Err(e) => {
                    tracing::warn!(
                        location = %self.inner.location,
                        pieces = ?(self.next..self.end),
                        attempt,
                        error = %e,
                        "piece GET failed"
                    );
                    last = Some(e);
                    if self.next > before {
                        attempt = 1;
                        delay = Duration::from_millis(200);
                    } else {
                        attempt += 1;
                    }
                    if attempt > retries {
                        break;
                    }
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
            }
        }
        if self.next >= self.end {
            return;
        }
        self.inner.counters.failures.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("ota_seeder_s3_failures_total").increment(1);
        let err = Arc::new(last.unwrap_or_else(|| anyhow::anyhow!("no attempt made")));
        while self.next < self.end {
            let index = self.next;
            self.next += 1;
            self.inner.inflight.lock().unwrap().remove(&index);
            if let Some(tx) = self.senders.pop_front() {
                let _ = tx.send(Err(err.clone()));
            }
        }
    }

    /// One ranged GET of pieces `next..end`, each delivered as soon as its
    /// bytes are in.
    async fn stream_once(&mut self) -> anyhow::Result<()> {
        let inner = self.inner.clone();
        let _permit = inner
            .permits
            .acquire()
            .await
            .map_err(|_| anyhow::anyhow!("seeder is stopping"))?;
        let offset = self.next as u64 * inner.piece_length;
        let len = (self.end as u64 * inner.piece_length).min(inner.length) - offset;
        inner.counters.gets.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("ota_seeder_s3_gets_total").increment(1);
        let mut body = origin_store::get_range_body(&inner.s3, &inner.location, offset, len).await?;
        let mut buf = BytesMut::with_capacity(inner.piece_len(self.next) as usize);
        while self.next < self.end {
            let chunk = match body.next().await {
                Some(c) => c.with_context(|| format!("reading {} bytes {offset}+{len}", inner.location))?,
                None => anyhow::bail!(
                    "{}: asked {len} bytes at {offset}, the body ended early",
                    inner.location
                ),
            };
            inner
                .counters
                .bytes_read
                .fetch_add(chunk.len() as u64, Ordering::Relaxed);
            metrics::counter!("ota_seeder_s3_bytes_read_total").increment(chunk.len() as u64);
            let mut rest = &chunk[..];
            while !rest.is_empty() && self.next < self.end {
                let want = inner.piece_len(self.next) as usize - buf.len();
                let take = want.min(rest.len());
                buf.extend_from_slice(&rest[..take]);
                rest = &rest[take..];
                if take == want {
                    let index = self.next;
                    self.next += 1;
                    let next_len = if self.next < self.end {
                        inner.piece_len(self.next) as usize
                    } else {
                        0
                    };
                    let data = std::mem::replace(&mut buf, BytesMut::with_capacity(next_len)).freeze();
                    let tx = self.senders.pop_front();
                    inner.deliver(index, data, tx);
                }
            }
        }
        Ok(())
    }
}

impl Inner {
    fn piece_len(&self, index: u32) -> u64 {
        let start = index as u64 * self.piece_length;
        self.piece_length.min(self.length - start)
    }

    /// SHA-1 checks a piece fresh from S3; caches it if good; hands the
    /// result to its waiters.
    fn deliver(&self, index: u32, data: Bytes, tx: Option<PieceSender>) {
        let got: [u8; 20] = Sha1::digest(&data).into();
        let result = if got == self.pieces[index as usize] {
            self.cache.lock().unwrap().insert((self.info_hash, index), data.clone());
            Ok(data)
        } else {
            self.counters.hash_mismatches.fetch_add(1, Ordering::Relaxed);
            metrics::counter!("ota_seeder_piece_hash_mismatches_total").increment(1);
            let reason = format!(
                "piece {index} of {} fails its SHA-1: the object changed since it was published; not serving it",
                self.location
            );
            self.corrupt.lock().unwrap().get_or_insert(reason.clone());
            Err(Arc::new(anyhow::anyhow!(reason)))
        };
        self.inflight.lock().unwrap().remove(&index);
        if let Some(tx) = tx {
            let _ = tx.send(result);
        }
    }

    /// Starts the GETs the pipeline plans for a reader at `reader` and, if
    /// `want_reader` (the caller missed it in the cache), returns the
    /// reader's piece: its shared in-flight fetch, started if needed, or the
    /// piece itself if it was delivered since the caller's miss. `None` only
    /// without `want_reader` or past the end.
    fn start(self: &Arc<Self>, reader: u32, want_reader: bool) -> Option<PieceFuture> {
        let mut spawn = Vec::new();
        let fut = {
            let mut inflight = self.inflight.lock().unwrap();
            let existing = if want_reader {
                inflight.get(&reader).cloned()
            } else {
                None
            };
            let (runs, delivered) = {
                let mut cache = self.cache.lock().unwrap();
                // A piece is cached before it leaves `inflight`, so under both
                // locks a missed piece not in flight is cached now or needs a GET.
                let delivered = match (want_reader, &existing) {
                    (true, None) => cache.get(&(self.info_hash, reader)),
                    _ => None,
                };
                let pipeline = if self.read_ahead_on.load(Ordering::Relaxed) {
                    self.pipeline
                } else {
                    Pipeline {
                        window: 0,
                        per_get: 1,
                        ..self.pipeline
                    }
                };
                let runs = pipeline.plan(reader, |i| {
                    inflight.contains_key(&i) || cache.contains(&(self.info_hash, i))
                });
                (runs, delivered)
            };
            for run in runs {
                let mut senders = VecDeque::with_capacity(run.len());
                for i in run.clone() {
                    let (tx, rx) = oneshot::channel();
                    senders.push_back(tx);
                    let fut = rx
                        .map(|r| r.unwrap_or_else(|_| Err(Arc::new(anyhow::anyhow!("piece fetch cancelled")))))
                        .boxed()
                        .shared();
                    inflight.insert(i, fut);
                }
                spawn.push(Run {
                    inner: self.clone(),
                    next: run.start,
                    end: run.end,
                    senders,
                });
            }
            match (want_reader, delivered) {
                (false, _) => None,
                (true, Some(b)) => Some(futures::future::ready(Ok(b)).boxed().shared()),
                (true, None) => existing.or_else(|| inflight.get(&reader).cloned()),
            }
        };
        for run in spawn {
            self.runtime.spawn(run.fetch());
        }
        fut
    }

    /// Piece `index`; `first_block`: the read starts the piece, so a
    /// sequential reader advanced and the window moves along.
    fn piece(self: &Arc<Self>, index: u32, first_block: bool) -> anyhow::Result<Bytes> {
        // Bound first: the guard must be gone before `start` locks the cache.
        let cached = self.cache.lock().unwrap().get(&(self.info_hash, index));
        if let Some(b) = cached {
            if first_block {
                self.start(index, false);
            }
            return Ok(b);
        }
        let fut = self
            .start(index, true)
            .ok_or_else(|| anyhow::anyhow!("piece {index} of {} is past the end", self.location))?;
        let rt = self.runtime.clone();
        tokio::task::block_in_place(|| rt.block_on(fut)).map_err(|e| anyhow::anyhow!("{e:#}"))
    }
}

impl TorrentStorage for S3Storage {
    fn init(&mut self, _shared: &ManagedTorrentShared, _metadata: &TorrentMetadata) -> anyhow::Result<()> {
        Ok(())
    }

    fn pread_exact(&self, _file_id: usize, offset: u64, buf: &mut [u8]) -> anyhow::Result<()> {
        let inner = &self.inner;
        if offset + buf.len() as u64 > inner.length {
            anyhow::bail!("read past the end of {}", inner.location);
        }
        let mut done = 0usize;
        while done < buf.len() {
            let abs = offset + done as u64;
            let index = (abs / inner.piece_length) as u32;
            let in_piece = (abs % inner.piece_length) as usize;
            let piece = inner.piece(index, in_piece == 0)?;
            let n = (buf.len() - done).min(piece.len() - in_piece);
            buf[done..done + n].copy_from_slice(&piece[in_piece..in_piece + n]);
            done += n;
        }
        Ok(())
    }

    fn pwrite_all(&self, _file_id: usize, _offset: u64, _buf: &[u8]) -> anyhow::Result<()> {
        anyhow::bail!("the origin's S3 storage is read-only")
    }

    fn remove_file(&self, _file_id: usize, _filename: &Path) -> anyhow::Result<()> {
        Ok(())
    }

    fn remove_directory_if_empty(&self, _path: &Path) -> anyhow::Result<()> {
        Ok(())
    }

    fn ensure_file_length(&self, _file_id: usize, length: u64) -> anyhow::Result<()> {
        if length != self.inner.length {
            anyhow::bail!(
                "{} is {} bytes, torrent says {length}",
                self.inner.location,
                self.inner.length
            );
        }
        Ok(())
    }

    fn take(&self) -> anyhow::Result<Box<dyn TorrentStorage>> {
        Ok(Box::new(S3Storage {
            inner: self.inner.clone(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(p: &Pipeline, reader: u32, have: &[u32]) -> Vec<Range<u32>> {
        p.plan(reader, |i| have.contains(&i))
    }

    #[test]
    fn shape_comes_from_read_ahead_piece_length_and_cache() {
        const KIB: u64 = 1024;
        const MIB: u64 = 1024 * KIB;
        // 16 pieces of 256 KiB ahead, 1 MiB GETs: 4 pieces each.
        let p = Pipeline::new(16, 256 * KIB, 32 * MIB, 1024);
        assert_eq!((p.window, p.per_get, p.count), (16, 4, 1024));
        // A quarter of a 2 MiB cache is 2 pieces: the window shrinks, and a
        // GET never spans more than the window.
        assert_eq!(Pipeline::new(16, 256 * KIB, 2 * MIB, 1024).window, 2);
        assert_eq!(Pipeline::new(16, 256 * KIB, 2 * MIB, 1024).per_get, 2);
        // No read-ahead, or a one-piece cache: one piece per GET, nothing ahead.
        let p = Pipeline::new(0, 256 * KIB, 32 * MIB, 9);
        assert_eq!((p.window, p.per_get), (0, 1));
        assert_eq!(Pipeline::new(16, 256 * KIB, 256 * KIB, 9).window, 0);
        // Pieces larger than a GET: one piece per GET.
        assert_eq!(Pipeline::new(16, 4 * MIB, 256 * MIB, 64).per_get, 1);
    }

    #[test]
    fn miss_fetches_the_readers_group_then_whole_groups_inside_the_window() {
        let p = Pipeline {
            window: 16,
            per_get: 4,
            count: 100,
        };
        // Aligned miss: the reader's group and every group ending by 0 + 1 + 16.
        assert_eq!(plan(&p, 0, &[]), vec![0..4, 4..8, 8..12, 12..16]);
        // Unaligned: the rest of the reader's group, then whole groups ending by 22.
        assert_eq!(plan(&p, 5, &[]), vec![5..8, 8..12, 12..16, 16..20]);
        // Cached or in-flight pieces are skipped, splitting a group in two.
        assert_eq!(plan(&p, 0, &[0, 1, 9]), vec![2..4, 4..8, 8..9, 10..12, 12..16]);
    }

    #[test]
    fn an_advancing_reader_starts_one_whole_group_at_a_time() {
        let p = Pipeline {
            window: 16,
            per_get: 4,
            count: 100,
        };
        let mut have: Vec<u32> = Vec::new();
        let mut gets = Vec::new();
        for reader in 0..40 {
            let runs = plan(&p, reader, &have);
            for r in &runs {
                assert!(
                    r.end <= reader + 1 + p.window,
                    "{r:?} beyond the window of reader {reader}"
                );
                have.extend(r.clone());
            }
            if reader > 0 {
                gets.extend(runs);
            }
            // Always at least window - per_get + 1 pieces ahead.
            let ahead = (reader + 1..reader + 1 + p.window).filter(|i| have.contains(i)).count() as u32;
            assert!(ahead > p.window - p.per_get, "reader {reader}: {ahead} pieces ahead");
        }
        assert!(gets.iter().all(|r| r.len() == 4 && r.start % 4 == 0), "{gets:?}");
        assert_eq!(gets.len(), 10, "{gets:?}");
    }

    #[test]
    fn the_end_of_the_release_bounds_the_plan() {
        let p = Pipeline {
            window: 16,
            per_get: 4,
            count: 10,
        };
        assert_eq!(plan(&p, 7, &[]), vec![7..8, 8..10]);
        assert_eq!(plan(&p, 9, &[]), vec![9..10]);
        assert_eq!(plan(&p, 10, &[]), Vec::<Range<u32>>::new());
        assert_eq!(plan(&p, 9, &[9]), Vec::<Range<u32>>::new());
        // No window: only the reader's piece.
        let p = Pipeline {
            window: 0,
            per_get: 1,
            count: 10,
        };
        assert_eq!(plan(&p, 3, &[]), vec![3..4]);
        assert_eq!(plan(&p, 3, &[3]), Vec::<Range<u32>>::new());
    }
}
