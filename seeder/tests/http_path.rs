//! The origin's plain-HTTP path (`http_path::router`) in front of a real
//! S3-protocol server: whole objects, single ranges, the `.torrent`, 404 for
//! unpublished keys, and the HTTP egress counter (read with the API token).

use std::time::{Duration, Instant};

use reqwest::header;
use reqwest::StatusCode;
use sha1::{Digest, Sha1};

use ota_proto::metainfo::info_from_torrent;
use ota_seeder::publish::PublishRequest;
use ota_seeder::seeding::SeedSettings;
use ota_testkit::package;
use ota_testkit::stack::{serve_http, Stack, ADMIN};

const PIECE: u64 = 256 * 1024;
const SIZE: usize = 700_001;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn serves_objects_ranges_torrents_and_counts_egress() {
    let stack = Stack::start().await;
    let data = package(SIZE, 7);
    let key = "fw/v2/update.bin";
    // An object in the bucket that was never published must not be served.
    stack.put("fw/v2/secret.bin", b"not published").await;

    let http = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", http.local_addr().unwrap());
    let req = PublishRequest {
        http_base: Some(base.clone()),
        ..stack.publish_request(key, PIECE)
    };
    let published = stack.publish_with(&data, &req).await;
    let release = &published.release;
    assert_eq!(
        release.http_url.as_deref(),
        Some(format!("{base}/packages/{key}").as_str())
    );

    let settings = SeedSettings {
        cache_bytes: 8 << 20,
        read_ahead: 1,
        ..stack.seed_settings()
    };
    let seeder = stack.start_seeding(settings, &release.info_hash).await;
    let server = serve_http(seeder.clone(), http);

    let c = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    let url = release.http_url.clone().unwrap();

    // Whole object.
    let r = c.get(&url).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()[header::ACCEPT_RANGES], "bytes");
    assert_eq!(r.headers()[header::CONTENT_LENGTH], SIZE.to_string().as_str());
    assert!(r.headers().get(header::CONTENT_RANGE).is_none());
    let body = r.bytes().await.unwrap();
    assert!(
        body == data.as_slice(),
        "whole body is the object ({} bytes)",
        body.len()
    );
    let mut expected_http = SIZE as u64;

    // HEAD: headers only, no body bytes counted.
    let r = c.head(&url).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()[header::CONTENT_LENGTH], SIZE.to_string().as_str());
    assert_eq!(r.headers()[header::ACCEPT_RANGES], "bytes");
    assert!(r.bytes().await.unwrap().is_empty());

    // Closed range.
    let r = c.get(&url).header(header::RANGE, "bytes=100-199").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(
        r.headers()[header::CONTENT_RANGE],
        format!("bytes 100-199/{SIZE}").as_str()
    );
    assert_eq!(r.headers()[header::CONTENT_LENGTH], "100");
    assert_eq!(r.headers()[header::ACCEPT_RANGES], "bytes");
    let body = r.bytes().await.unwrap();
    assert_eq!(&body[..], &data[100..200]);
    expected_http += 100;

    // Open range.
    let r = c.get(&url).header(header::RANGE, "bytes=1000-").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(
        r.headers()[header::CONTENT_RANGE],
        format!("bytes 1000-{}/{SIZE}", SIZE - 1).as_str()
    );
    assert_eq!(r.headers()[header::CONTENT_LENGTH], (SIZE - 1000).to_string().as_str());
    let body = r.bytes().await.unwrap();
    assert!(body == data[1000..], "open range body ({} bytes)", body.len());
    expected_http += (SIZE - 1000) as u64;

    // Suffix range: the last 10 bytes.
    let r = c.get(&url).header(header::RANGE, "bytes=-10").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(
        r.headers()[header::CONTENT_RANGE],
        format!("bytes {}-{}/{SIZE}", SIZE - 10, SIZE - 1).as_str()
    );
    assert_eq!(&r.bytes().await.unwrap()[..], &data[SIZE - 10..]);
    expected_http += 10;

    // Multi-range requests are refused, not answered with the whole object.
    let r = c.get(&url).header(header::RANGE, "bytes=0-1,5-6").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    let _ = r.bytes().await.unwrap();

    // The .torrent, as S3's retired ?torrent did.
    let r = c.get(format!("{url}?torrent")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()[header::CONTENT_TYPE], "application/x-bittorrent");
    let torrent = r.bytes().await.unwrap();
    let info = info_from_torrent(&torrent).unwrap();
    assert_eq!(
        hex::encode(Sha1::digest(&info)),
        release.info_hash.to_hex(),
        "?torrent info hash is the release's"
    );
    assert_eq!(info, published.info);

    // Unknown and unpublished keys.
    for missing in ["fw/v2/nope.bin", "fw/v2/secret.bin", "fw/v2/update.bin.torrent"] {
        let r = c.get(format!("{base}/packages/{missing}")).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "{missing}");
        let _ = r.bytes().await.unwrap();
    }
    assert_eq!(
        c.get(format!("{base}/health"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
        "ok"
    );

    // Egress: body bytes of the package only (not the .torrent, not errors).
    // Each response is written to the ledger once its body has ended, by a
    // task of its own: give the last writes a moment.
    let deadline = Instant::now() + Duration::from_secs(5);
    let e: serde_json::Value = loop {
        let e: serde_json::Value = c
            .get(format!("{base}/api/egress"))
            .bearer_auth(ADMIN)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if e["releases"][0]["http_bytes"].as_u64() >= Some(expected_http) || Instant::now() > deadline {
            break e;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let releases = e["releases"].as_array().expect("releases array");
    assert_eq!(releases.len(), 1, "{e}");
    assert_eq!(releases[0]["info_hash"], release.info_hash.to_hex());
    assert_eq!(releases[0]["http_bytes"], expected_http, "{e}");
    assert_eq!(releases[0]["bittorrent_bytes"], 0, "{e}");
    assert_eq!(releases[0]["size"], SIZE as u64);
    assert_eq!(e["piece_hash_mismatches"], 0);
    assert!(e["s3_bytes_read"].as_u64().unwrap() >= SIZE as u64, "{e}");

    // Prometheus counters (process-wide, so at least what this test served).
    let metrics = ota_testkit::http::get_text(&format!("{base}/metrics"), ADMIN).await;
    let http_line = metrics
        .lines()
        .find(|l| l.starts_with("ota_seeder_egress_bytes_total{path=\"http\"}"))
        .unwrap_or_else(|| panic!("no HTTP egress counter in:\n{metrics}"));
    let counted: f64 = http_line.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(counted >= expected_http as f64, "{http_line}");
    assert!(metrics.contains("ota_seeder_s3_bytes_read_total"), "{metrics}");

    server.abort();
    seeder.stop().await;
    stack.shutdown().await;
}

/// Unsatisfiable and non-byte ranges are refused with 416 and count no egress.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn range_beyond_the_end_is_416() {
    let stack = Stack::start().await;
    let data = package(1000, 3);
    let http = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", http.local_addr().unwrap());
    let req = PublishRequest {
        http_base: Some(base.clone()),
        ..stack.publish_request("small.bin", PIECE)
    };
    let published = stack.publish_with(&data, &req).await;
    let settings = SeedSettings {
        cache_bytes: 8 << 20,
        read_ahead: 0,
        ..stack.seed_settings()
    };
    let seeder = stack.start_seeding(settings, &published.release.info_hash).await;
    let server = serve_http(seeder.clone(), http);

    let c = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    let r = c
        .get(format!("{base}/packages/small.bin"))
        .header(header::RANGE, "bytes=5000-")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    let _ = r.bytes().await.unwrap();
    let r = c
        .get(format!("{base}/packages/small.bin"))
        .header(header::RANGE, "items=0-1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    let _ = r.bytes().await.unwrap();
    assert_eq!(seeder.egress().await.unwrap()[0].http_bytes, 0);

    server.abort();
    seeder.stop().await;
    stack.shutdown().await;
}
