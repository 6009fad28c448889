//! A read-only librqbit storage that serves pieces straight from S3.
//!
//! librqbit asks for 16 KiB blocks through the synchronous
//! [`TorrentStorage::pread_exact`] (on a blocking section of a multi-thread
//! tokio runtime). Each miss turns into one piece-aligned ranged GET; the
//! piece is SHA-1 checked against the info dictionary before it is cached or
//! served, so a changed or corrupt object is never served. Concurrent misses
//! of the same piece share one GET, and the next `read_ahead` pieces are
//! fetched in the background. Writes are refused: the origin never downloads.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
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
    /// Piece GETs that failed (after retries).
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
    read_ahead: u32,
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
    /// Pieces fetched ahead after a miss.
    pub read_ahead: u32,
    /// GET attempts per piece before giving up (backoff 200 ms, doubling, max 5 s).
    pub retries: u32,
    /// Shared limit on concurrent S3 GETs.
    pub permits: Arc<tokio::sync::Semaphore>,
    /// Set to the reason when a piece fails its SHA-1 (the object changed).
    pub corrupt: Arc<Mutex<Option<String>>>,
}

impl S3StorageFactory {
    /// A factory bound to the current tokio runtime.
    pub fn new(p: S3StorageParams) -> Self {
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
                read_ahead: p.read_ahead,
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

impl Inner {
    fn piece_len(&self, index: u32) -> u64 {
        let start = index as u64 * self.piece_length;
        self.piece_length.min(self.length - start)
    }

    async fn fetch_verified(self: Arc<Self>, index: u32) -> anyhow::Result<Bytes> {
        let start = index as u64 * self.piece_length;
        let len = self.piece_len(index);
        let mut delay = Duration::from_millis(200);
        let mut last = None;
        for attempt in 1..=self.retries {
            let got = {
                let _permit = self
                    .permits
                    .acquire()
                    .await
                    .map_err(|_| anyhow::anyhow!("seeder is stopping"))?;
                origin_store::get_range(&self.s3, &self.location, start, len).await
            };
            match got {
                Ok(data) => {
                    self.counters.bytes_read.fetch_add(data.len() as u64, Ordering::Relaxed);
                    metrics::counter!("ota_seeder_s3_bytes_read_total").increment(data.len() as u64);
                    let got: [u8; 20] = Sha1::digest(&data).into();
                    if got != self.pieces[index as usize] {
                        self.counters.hash_mismatches.fetch_add(1, Ordering::Relaxed);
                        metrics::counter!("ota_seeder_piece_hash_mismatches_total").increment(1);
                        let reason = format!(
                            "piece {index} of {} fails its SHA-1: the object changed since it was published; not serving it",
                            self.location
                        );
                        self.corrupt.lock().unwrap().get_or_insert(reason.clone());
                        anyhow::bail!(reason);
                    }
                    self.cache.lock().unwrap().insert((self.info_hash, index), data.clone());
                    return Ok(data);
                }
                Err(e) => {
                    tracing::warn!(location = %self.location, index, attempt, error = %e, "piece GET failed");
                    last = Some(e);
                    if attempt < self.retries {
                        tokio::time::sleep(delay).await;
                        delay = (delay * 2).min(Duration::from_secs(5));
                    }
                }
            }
        }
        self.counters.failures.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("ota_seeder_s3_failures_total").increment(1);
        Err(last.unwrap_or_else(|| anyhow::anyhow!("no attempt made")))
    }

    /// The shared in-flight fetch of a piece, started if needed.
    fn fetch_shared(self: &Arc<Self>, index: u32) -> PieceFuture {
        let mut inflight = self.inflight.lock().unwrap();
        if let Some(f) = inflight.get(&index) {
            return f.clone();
        }
        let me = self.clone();
        let fut = async move {
            let r = me.clone().fetch_verified(index).await.map_err(Arc::new);
            me.inflight.lock().unwrap().remove(&index);
            r
        }
        .boxed()
        .shared();
        inflight.insert(index, fut.clone());
        fut
    }

    fn piece(self: &Arc<Self>, index: u32) -> anyhow::Result<Bytes> {
        if let Some(b) = self.cache.lock().unwrap().get(&(self.info_hash, index)) {
            return Ok(b);
        }
        let fut = self.fetch_shared(index);
        let count = self.pieces.len() as u32;
        for ahead in (index + 1)..(index + 1 + self.read_ahead).min(count) {
            if !self.cache.lock().unwrap().contains(&(self.info_hash, ahead)) {
                let f = self.fetch_shared(ahead);
                self.runtime.spawn(async move {
                    let _ = f.await;
                });
            }
        }
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
            let piece = inner.piece(index)?;
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
