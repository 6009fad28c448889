//! Release registrations for tests that need a registered swarm but no
//! package bytes: a valid single-file info dictionary (BEP 3, private per
//! BEP 27) whose piece hashes are placeholders.

use ota_proto::api::NewRelease;
use ota_proto::metainfo::{info_hash, piece_count, InfoDict};

/// A `NewRelease` of a package named `name`, `size` bytes in pieces of
/// `piece_length` bytes: version `1`, info hash of its info dictionary
/// (placeholder piece hashes `[7; 20]`), SHA-256 `ab…ab`, source
/// `s3://b/NAME`, no HTTP URL, ETag, manifest or rollout. Change fields with
/// struct update syntax.
pub fn release(name: &str, size: u64, piece_length: u64) -> NewRelease {
    let info = InfoDict {
        name: name.into(),
        length: size,
        piece_length,
        pieces: vec![[7; 20]; piece_count(size, piece_length) as usize],
        private: true,
    }
    .to_bytes();
    NewRelease {
        name: name.into(),
        version: "1".into(),
        info_hash: info_hash(&info),
        size,
        piece_length,
        sha256: "ab".repeat(32),
        info_hex: hex::encode(&info),
        http_url: None,
        source: format!("s3://b/{name}"),
        etag: None,
        manifest: None,
        rollout_percent: None,
        origin_goal: None,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn info_hash_matches_the_info_dictionary() {
        let r = super::release("a.bin", 300_000, 262_144);
        let info = hex::decode(&r.info_hex).unwrap();
        assert_eq!(ota_proto::metainfo::info_hash(&info), r.info_hash);
        assert_eq!(ota_proto::metainfo::InfoDict::parse(&info).unwrap().pieces.len(), 2);
    }
}
