//! Publishing against a real S3-protocol server (s3s-fs) started by the test.

use sha1::{Digest, Sha1};

use ota_proto::metainfo::InfoDict;
use ota_seeder::publish::{hash_object, PublishRequest};
use ota_testkit::stack::{Stack, TestS3};

async fn s3() -> (tempfile::TempDir, TestS3) {
    let dir = tempfile::tempdir().unwrap();
    let s3 = TestS3::start(&dir.path().join("s3")).await;
    (dir, s3)
}

fn request(key: &str, piece_length: u64) -> PublishRequest {
    PublishRequest {
        location: Stack::location(key),
        version: "1".into(),
        piece_length: Some(piece_length),
        tracker_url: "http://127.0.0.1:1".into(),
        http_base: None,
        private: true,
        signing: None,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn info_dictionary_matches_an_independent_computation_around_piece_multiples() {
    let (_dir, s3) = s3().await;
    let pl = 262_144u64;
    for size in [3 * pl - 1, 3 * pl, 3 * pl + 1] {
        let data: Vec<u8> = (0..size).map(|i| (i * 31 % 251) as u8).collect();
        let key = format!("pkg-{size}.bin");
        s3.put(&key, &data).await;
        let (release, info) = hash_object(&s3.client, &request(&key, pl)).await.unwrap();
        // Independent: hash each piece of the in-memory copy.
        let pieces: Vec<[u8; 20]> = data.chunks(pl as usize).map(|c| Sha1::digest(c).into()).collect();
        assert_eq!(
            pieces.len() as u64,
            size.div_ceil(pl),
            "no extra piece at an exact multiple"
        );
        let expected = InfoDict {
            name: key.clone(),
            length: size,
            piece_length: pl,
            pieces,
            private: true,
        }
        .to_bytes();
        assert_eq!(info, expected, "size {size}");
        assert_eq!(release.info_hash.to_hex(), hex::encode(Sha1::digest(&expected)));
        assert_eq!(
            release.sha256,
            hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&data))
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn publishing_a_missing_key_fails_with_a_clear_message() {
    let (_dir, s3) = s3().await;
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_ota-seeder"))
        .args([
            "publish",
            "s3://ota/no/such/package.deb",
            "--tracker",
            "http://127.0.0.1:9",
            "--admin-token",
            "unused-admin-token",
        ])
        .envs(s3.client_env())
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("error: s3://ota/no/such/package.deb does not exist"),
        "{stderr}"
    );
}
