//! Size alone never decides that an object is unchanged: an object that S3
//! serves without an ETag is refused at publish, and a release registered
//! without one is never seeded or served.

use std::time::Duration;

use axum::http::{header, HeaderMap, StatusCode};
use axum::response::IntoResponse;

use ota_seeder::origin_store::{self, S3Args};
use ota_seeder::publish::hash_object;
use ota_testkit::package;
use ota_testkit::stack::{wait_seeding, Stack};

/// An S3 endpoint that answers every HEAD and GET with `body` and no ETag.
async fn s3_without_etags(body: &'static [u8]) -> (String, tokio::task::JoinHandle<()>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", l.local_addr().unwrap());
    let app = axum::Router::new().fallback(move |_headers: HeaderMap| async move {
        (
            StatusCode::OK,
            [
                (header::CONTENT_TYPE, "application/octet-stream"),
                (header::LAST_MODIFIED, "Wed, 01 Jan 2025 00:00:00 GMT"),
            ],
            body,
        )
            .into_response()
    });
    let server = tokio::spawn(async move {
        let _ = axum::serve(l, app).await;
    });
    (endpoint, server)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_refuses_an_object_served_without_an_etag() {
    // Any keys do: the fake endpoint checks no signature.
    let stack = Stack::start().await;
    let (endpoint, server) = s3_without_etags(b"firmware bytes, but no ETag").await;
    let s3 = origin_store::client(&S3Args {
        s3_endpoint: Some(endpoint),
        s3_region: "us-east-1".into(),
        s3_path_style: true,
    })
    .await;
    let req = stack.publish_request("fw/no-etag.bin", 16384);
    let err = hash_object(&s3, &req)
        .await
        .expect_err("published an object without an ETag");
    assert!(format!("{err:#}").contains("without an ETag"), "{err:#}");
    server.abort();
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_release_registered_without_an_etag_is_never_seeded() {
    let stack = Stack::start().await;
    let data = package(100_000, 4);
    stack.put("fw/legacy.bin", &data).await;
    let req = stack.publish_request("fw/legacy.bin", 16384);
    // A release as an older publisher (or another tool) registered it.
    let (mut new, _info) = hash_object(&stack.s3.client, &req).await.unwrap();
    new.etag = None;
    let release = stack.tracker.client().register(&new).await.unwrap();

    let seeder = stack.start_seeder(stack.seed_settings()).await;
    seeder.sync_releases().await.unwrap();
    assert!(
        !wait_seeding(&seeder, &release.info_hash, Duration::from_secs(2)).await,
        "a release without an ETag was seeded"
    );
    let egress = seeder.egress().await.unwrap();
    let row = egress
        .iter()
        .find(|r| r.info_hash == release.info_hash)
        .expect("the refused release is reported");
    assert!(
        row.error.as_deref().is_some_and(|e| e.contains("without an ETag")),
        "{row:?}"
    );
    assert!(seeder.release_by_key("fw/legacy.bin").is_none(), "nor served over HTTP");
    seeder.stop().await;
    stack.shutdown().await;
}
