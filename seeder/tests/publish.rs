//! Publishing against a real S3-protocol server (s3s-fs) started by the test.

use sha1::{Digest, Sha1};

use ota_testkit::s3_server::S3Server;
use ota_seeder::origin_store::{self, S3Args, S3Location};
use ota_seeder::publish::{hash_object, PublishRequest};
use ota_proto::metainfo::InfoDict;

async fn s3() -> (tempfile::TempDir, S3Server, aws_sdk_s3::Client) {
    let dir = tempfile::tempdir().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = S3Server::start(&dir.path().join("s3"), listener, "test-access", "test-secret-key").unwrap();
    for (k, v) in server.client_env() {
        std::env::set_var(k, v);
    }
    let client = origin_store::client(&S3Args {
        s3_endpoint: Some(server.endpoint()),
        s3_region: "us-east-1".into(),
        s3_path_style: true,
    })
    .await;
    client.create_bucket().bucket("ota").send().await.unwrap();
    (dir, server, client)
}

fn request(key: &str, piece_length: u64) -> PublishRequest {
    PublishRequest {
        location: S3Location { bucket: "ota".into(), key: key.into() },
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
    let (_dir, _server, client) = s3().await;
    let pl = 262_144u64;
    for size in [3 * pl - 1, 3 * pl, 3 * pl + 1] {
        let data: Vec<u8> = (0..size).map(|i| (i * 31 % 251) as u8).collect();
        let key = format!("pkg-{size}.bin");
        client.put_object().bucket("ota").key(&key).body(data.clone().into()).send().await.unwrap();
        let (release, info) = hash_object(&client, &request(&key, pl)).await.unwrap();
        // Independent: hash each piece of the in-memory copy.
        let pieces: Vec<[u8; 20]> = data.chunks(pl as usize).map(|c| Sha1::digest(c).into()).collect();
        assert_eq!(pieces.len() as u64, size.div_ceil(pl), "no extra piece at an exact multiple");
        let expected = InfoDict { name: key.clone(), length: size, piece_length: pl, pieces, private: true }.to_bytes();
        assert_eq!(info, expected, "size {size}");
        assert_eq!(release.info_hash.to_hex(), hex::encode(Sha1::digest(&expected)));
        assert_eq!(release.sha256, hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&data)));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn publishing_a_missing_key_fails_with_a_clear_message() {
    let (_dir, server, _client) = s3().await;
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_ota-seeder"))
        .args(["publish", "s3://ota/no/such/package.deb", "--tracker", "http://127.0.0.1:9"])
        .envs(server.client_env())
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("error: s3://ota/no/such/package.deb does not exist"), "{stderr}");
}
