//! A byte-capped LRU cache of verified pieces, shared by every release the
//! seeder serves. Peers read 16 KiB blocks; the S3 storage fills the cache
//! with whole verified pieces (several per coalesced GET). Pure: no I/O.

use bytes::Bytes;
use lru::LruCache;
use ota_proto::InfoHash;

/// Cache key: info hash and piece index.
pub type PieceKey = (InfoHash, u32);

/// LRU of pieces whose total size stays at or below a cap in bytes.
pub struct PieceCache {
    lru: LruCache<PieceKey, Bytes>,
    bytes: u64,
    cap_bytes: u64,
    hits: u64,
    misses: u64,
}

impl PieceCache {
    /// A cache holding at most `cap_bytes` bytes of pieces.
    pub fn new(cap_bytes: u64) -> Self {
        PieceCache {
            lru: LruCache::unbounded(),
            bytes: 0,
            cap_bytes,
            hits: 0,
            misses: 0,
        }
    }

    /// The piece if cached (and marks it recently used).
    pub fn get(&mut self, key: &PieceKey) -> Option<Bytes> {
        match self.lru.get(key) {
            Some(b) => {
                self.hits += 1;
                Some(b.clone())
            }
            None => {
                self.misses += 1;
                None
            }
        }
    }

    /// Whether the piece is cached, without touching recency or counters.
    pub fn contains(&self, key: &PieceKey) -> bool {
        self.lru.contains(key)
    }

    /// Inserts a piece, evicting least recently used pieces to stay under
    /// the cap. A piece larger than the cap is not kept.
    pub fn insert(&mut self, key: PieceKey, piece: Bytes) {
        let len = piece.len() as u64;
        if len > self.cap_bytes {
            return;
        }
        if let Some(old) = self.lru.put(key, piece) {
            self.bytes -= old.len() as u64;
        }
        self.bytes += len;
        while self.bytes > self.cap_bytes {
            match self.lru.pop_lru() {
                Some((_, old)) => self.bytes -= old.len() as u64,
                None => break,
            }
        }
    }

    /// Drops every piece of one release.
    pub fn remove_release(&mut self, info_hash: &InfoHash) {
        let keys: Vec<PieceKey> = self
            .lru
            .iter()
            .filter(|(k, _)| &k.0 == info_hash)
            .map(|(k, _)| *k)
            .collect();
        for k in keys {
            if let Some(b) = self.lru.pop(&k) {
                self.bytes -= b.len() as u64;
            }
        }
    }

    /// Bytes held now.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// The cap, bytes.
    pub fn cap_bytes(&self) -> u64 {
        self.cap_bytes
    }

    /// `(hits, misses)` since creation.
    pub fn hit_miss(&self) -> (u64, u64) {
        (self.hits, self.misses)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evicts_least_recently_used_to_stay_under_cap() {
        let (one, two, three) = (InfoHash([1; 20]), InfoHash([2; 20]), InfoHash([3; 20]));
        let mut c = PieceCache::new(300);
        c.insert((one, 0), Bytes::from(vec![0; 100]));
        c.insert((one, 1), Bytes::from(vec![0; 100]));
        c.insert((one, 2), Bytes::from(vec![0; 100]));
        assert!(c.get(&(one, 0)).is_some()); // 0 is now most recent
        c.insert((two, 0), Bytes::from(vec![0; 100]));
        assert_eq!(c.bytes(), 300);
        assert!(!c.contains(&(one, 1)), "least recently used piece evicted");
        assert!(c.contains(&(one, 0)));
        c.insert((three, 0), Bytes::from(vec![0; 301]));
        assert!(!c.contains(&(three, 0)), "oversized piece not kept");
        c.remove_release(&one);
        assert_eq!(c.bytes(), 100);
        assert_eq!(c.hit_miss(), (1, 0));
        assert_eq!(c.cap_bytes(), 300);
    }
}
