//! Publishing: stream an S3 object once, hash its pieces (SHA-1, BEP 3) and
//! the whole package (SHA-256), build the info dictionary ourselves, store
//! `KEY.torrent` beside the object and register the release with the tracker.
//!
//! The piece arithmetic ([`piece_length_for`], [`PieceHasher`]) is pure.

use anyhow::Context;
use aws_sdk_s3::primitives::ByteStream;
use sha1::{Digest, Sha1};
use sha2::Sha256;

use ota_proto::api::{NewRelease, Release};
use ota_proto::metainfo::{info_hash, torrent_bytes, InfoDict};

use crate::origin_store::{self, S3Location};

/// Smallest piece length chosen, bytes (256 KiB).
pub const MIN_PIECE_LENGTH: u64 = 256 * 1024;
/// Largest piece length chosen, bytes (4 MiB).
pub const MAX_PIECE_LENGTH: u64 = 4 * 1024 * 1024;
/// Piece count the rule aims at or below.
pub const TARGET_PIECES: u64 = 1500;

/// Piece length for a package of `size` bytes: the smallest power of two that
/// keeps the piece count at or below [`TARGET_PIECES`], clamped to
/// [[`MIN_PIECE_LENGTH`], [`MAX_PIECE_LENGTH`]]. So up to 375 MiB get 256 KiB
/// pieces, 1 GiB gets 1 MiB, and above 5.9 GiB pieces stay at 4 MiB.
pub fn piece_length_for(size: u64) -> u64 {
    size.div_ceil(TARGET_PIECES)
        .next_power_of_two()
        .clamp(MIN_PIECE_LENGTH, MAX_PIECE_LENGTH)
}

/// Streaming hasher: feed the object in chunks of any size; get the piece
/// SHA-1s and the whole-object SHA-256.
#[derive(Clone)]
pub struct PieceHasher {
    piece_length: u64,
    in_piece: u64,
    piece: Sha1,
    whole: Sha256,
    pieces: Vec<[u8; 20]>,
    total: u64,
}

impl PieceHasher {
    /// A hasher for pieces of `piece_length` bytes (> 0).
    pub fn new(piece_length: u64) -> Self {
        assert!(piece_length > 0, "piece length must be positive");
        PieceHasher {
            piece_length,
            in_piece: 0,
            piece: Sha1::new(),
            whole: Sha256::new(),
            pieces: Vec::new(),
            total: 0,
        }
    }

    /// Feeds the next bytes of the object.
    pub fn update(&mut self, mut data: &[u8]) {
        self.whole.update(data);
        self.total += data.len() as u64;
        while !data.is_empty() {
            let take = ((self.piece_length - self.in_piece) as usize).min(data.len());
            self.piece.update(&data[..take]);
            self.in_piece += take as u64;
            data = &data[take..];
            if self.in_piece == self.piece_length {
                self.pieces.push(std::mem::take(&mut self.piece).finalize().into());
                self.in_piece = 0;
            }
        }
    }

    /// Finishes: `(piece hashes, SHA-256, total bytes)`. A last partial piece
    /// gets its own hash; an object whose size is a multiple of the piece
    /// length gets no extra empty piece.
    pub fn finish(mut self) -> (Vec<[u8; 20]>, [u8; 32], u64) {
        if self.in_piece > 0 {
            self.pieces.push(self.piece.finalize().into());
        }
        (self.pieces, self.whole.finalize().into(), self.total)
    }
}

/// What a publish produced.
#[derive(Debug, Clone)]
pub struct Published {
    /// The registered release.
    pub release: Release,
    /// The bencoded info dictionary.
    pub info: Vec<u8>,
    /// Where the `.torrent` was stored.
    pub torrent_location: S3Location,
}

/// Parameters of one publish.
#[derive(Debug, Clone)]
pub struct PublishRequest {
    /// Object to publish.
    pub location: S3Location,
    /// Release version.
    pub version: String,
    /// Piece length override in bytes; `None` uses [`piece_length_for`].
    pub piece_length: Option<u64>,
    /// Tracker base URL, written as the `.torrent`'s announce URL.
    pub tracker_url: String,
    /// Plain-HTTP base URL of the seeder (`http://host:port`), if it serves one.
    pub http_base: Option<String>,
    /// Mark the torrent private (BEP 27): clients then take peers from the
    /// tracker only (no DHT, no peer exchange), so the tracker's hand-out
    /// policy holds and the origin's address is not gossiped.
    pub private: bool,
    /// Sign a release manifest with this key, if given.
    pub signing: Option<ManifestSigning>,
}

/// How to sign the release manifest.
#[derive(Debug, Clone)]
pub struct ManifestSigning {
    /// The device maker's ed25519 key.
    pub key: ed25519_dalek::SigningKey,
    /// Update channel, e.g. `stable`.
    pub channel: String,
    /// Device models the release is for; empty for all.
    pub models: Vec<String>,
}

/// Streams the object once, writes `KEY.torrent` and builds the release.
///
/// The release records the object's ETag: the seeder serves the object
/// only while S3 still answers with that ETag (`If-Match` on the HTTP
/// path, a check every verify interval while seeding), so size alone never
/// decides whether the object changed.
///
/// Errors: the object is missing ("s3://b/k does not exist"), S3 is
/// unreachable, S3 answers without an ETag (refused: a change could not be
/// seen later), or the object changed (ETag or size) while being read.
pub async fn hash_object(s3: &aws_sdk_s3::Client, req: &PublishRequest) -> anyhow::Result<(NewRelease, Vec<u8>)> {
    let loc = &req.location;
    let (size, etag) = origin_store::head(s3, loc).await?;
    let Some(etag) = etag else {
        anyhow::bail!(
            "S3 answered without an ETag for {loc}; refusing to publish it, since the seeder \
             could not tell later whether the object changed"
        );
    };
    if size == 0 {
        anyhow::bail!("{loc} is empty; nothing to publish");
    }
    let piece_length = req.piece_length.unwrap_or_else(|| piece_length_for(size));
    let out = s3
        .get_object()
        .bucket(&loc.bucket)
        .key(&loc.key)
        .if_match(&etag)
        .send()
        .await
        .map_err(|e| anyhow::anyhow!("cannot read {loc}: {}", origin_store::describe(&e)))?;
    if out.e_tag.as_deref() != Some(etag.as_str()) {
        anyhow::bail!(
            "{loc} changed while it was being published (ETag {etag:?} then {:?})",
            out.e_tag
        );
    }
    let mut body = out.body;
    let mut hasher = PieceHasher::new(piece_length);
    while let Some(chunk) = body.try_next().await.with_context(|| format!("reading {loc}"))? {
        hasher.update(&chunk);
    }
    let (pieces, sha256, total) = hasher.finish();
    if total != size {
        anyhow::bail!("{loc} changed while it was read ({size} bytes announced, {total} read)");
    }
    let name = loc.key.rsplit('/').next().unwrap_or(&loc.key).to_string();
    let info = InfoDict {
        name: name.clone(),
        length: size,
        piece_length,
        pieces,
        private: req.private,
    }
    .to_bytes();
    let info_hash = info_hash(&info);
    let manifest = req.signing.as_ref().map(|s| {
        ota_proto::manifest::sign(
            &ota_proto::manifest::Manifest {
                name: name.clone(),
                version: req.version.clone(),
                info_hash,
                size,
                sha256: hex::encode(sha256),
                channel: s.channel.clone(),
                models: s.models.clone(),
                created_at: ota_common::clock::wall_secs(),
            },
            &s.key,
        )
    });
    let new = NewRelease {
        name,
        version: req.version.clone(),
        info_hash,
        size,
        piece_length,
        sha256: hex::encode(sha256),
        info_hex: hex::encode(&info),
        http_url: req
            .http_base
            .as_ref()
            .map(|b| format!("{}/packages/{}", b.trim_end_matches('/'), loc.key)),
        source: loc.to_string(),
        etag: Some(etag),
        manifest,
        rollout_percent: None,
        origin_goal: None,
    };
    Ok((new, info))
}

/// Full publish: [`hash_object`], store `KEY.torrent` beside the object and
/// register the release with the tracker.
pub async fn publish(
    s3: &aws_sdk_s3::Client,
    tracker: &ota_client::TrackerClient,
    req: &PublishRequest,
) -> anyhow::Result<Published> {
    let (new, info) = hash_object(s3, req).await?;
    let torrent = torrent_bytes(&format!("{}/announce", req.tracker_url.trim_end_matches('/')), &info);
    let torrent_location = S3Location {
        bucket: req.location.bucket.clone(),
        key: format!("{}.torrent", req.location.key),
    };
    origin_store::put(s3, &torrent_location, ByteStream::from(torrent)).await?;
    let release = tracker.register(&new).await.context("registering the release")?;
    Ok(Published {
        release,
        info,
        torrent_location,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn piece_length_rule() {
        assert_eq!(piece_length_for(1), MIN_PIECE_LENGTH);
        assert_eq!(piece_length_for(81_000_000), MIN_PIECE_LENGTH);
        assert_eq!(piece_length_for(1 << 30), 1 << 20);
        assert_eq!(piece_length_for(100 << 30), MAX_PIECE_LENGTH);
    }

    #[test]
    fn piece_count_is_right_at_and_around_multiples() {
        for (size, pieces) in [(32767u64, 2usize), (32768, 2), (32769, 3)] {
            let data = vec![7u8; size as usize];
            let mut h = PieceHasher::new(16384);
            // Odd chunk sizes must not change the result.
            for c in data.chunks(1000) {
                h.update(c);
            }
            let (p, sha, total) = h.finish();
            assert_eq!(p.len(), pieces, "size {size}");
            assert_eq!(total, size);
            assert_eq!(sha, <[u8; 32]>::from(Sha256::digest(&data)));
            assert_eq!(p[0], <[u8; 20]>::from(Sha1::digest(&data[..16384])));
            let last = &data[(pieces - 1) * 16384..];
            assert_eq!(p[pieces - 1], <[u8; 20]>::from(Sha1::digest(last)));
        }
    }
}
