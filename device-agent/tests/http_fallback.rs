//! HTTP fallback: a release whose BitTorrent swarm has no seeder at all is
//! completed from the origin's HTTP path, piece by piece with SHA-1 checks,
//! and reported as `bytes_from_origin_http`; an HTTP origin that sends a
//! tampered body is refused and nothing of it is kept.

mod common;

use std::time::Duration;

use axum::http::{header, StatusCode};
use axum::response::IntoResponse;

use common::{package, Stack};

const PIECE: u64 = 65_536;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn completes_over_http_when_no_peer_delivers_and_refuses_a_tampered_body() {
    let stack = Stack::start().await;
    let http = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", http.local_addr().unwrap());
    let data = package(1_000_003, 1);
    let release = stack.publish("fw/fallback.bin", &data, PIECE, Some(base.clone())).await;
    let seeder = stack.seeder(None).await;
    let http_server = common::serve_http(seeder.clone(), http);

    // The device's tracker knows the release but has no BitTorrent seeder for
    // it (the origin seeds on another tracker): peers deliver nothing.
    let lonely = common::loopback_tracker(&stack.dir.path().join("lonely")).await;
    lonely.client().register(&release).await.unwrap();
    assert!(lonely
        .client()
        .release(&release.info_hash)
        .await
        .unwrap()
        .origin_peers
        .is_empty());

    let state = stack.dir.path().join("agent");
    let agent = common::agent(lonely.url(), "dev-http", &state, Some(Duration::from_secs(2))).await;
    let installed = agent.handle_release(&release.info_hash).await.unwrap();
    assert!(
        std::fs::read(&installed.path).unwrap() == data,
        "byte-identical package"
    );
    assert_eq!(
        ota_device_agent::verify::sha256_file(&installed.path).unwrap(),
        release.sha256
    );
    let r = &lonely.client().telemetry(&release.info_hash).await.unwrap()[0];
    assert!(r.verified, "{r:?}");
    assert_eq!(
        r.bytes_from_origin_http,
        data.len() as u64,
        "every byte came over HTTP: {r:?}"
    );
    assert_eq!(r.bytes_from_origin + r.bytes_from_peers, 0, "{r:?}");
    // The origin's ledger saw the HTTP bytes (flushed every second).
    let mut http_bytes = 0;
    for _ in 0..50 {
        seeder.flush_ledger().await.unwrap();
        let e = seeder.egress().await.unwrap();
        http_bytes = e
            .iter()
            .find(|e| e.info_hash == release.info_hash)
            .map(|e| e.http_bytes)
            .unwrap_or(0);
        if http_bytes >= data.len() as u64 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(http_bytes, data.len() as u64);

    // An HTTP origin that flips a byte of every body: the first piece fails
    // its SHA-1, the download fails with that error, nothing is kept.
    let evil = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let evil_url = format!("http://{}/packages/evil.bin", evil.local_addr().unwrap());
    let bad_data = package(300_000, 2);
    let mut bad_release = stack.publish("fw/evil.bin", &bad_data, PIECE, None).await;
    bad_release.http_url = Some(evil_url);
    lonely.client().register(&bad_release).await.unwrap();
    let served = bad_data.clone();
    let app = axum::Router::new().route(
        "/packages/evil.bin",
        axum::routing::get(move |headers: axum::http::HeaderMap| {
            let served = served.clone();
            async move {
                let r = headers[header::RANGE]
                    .to_str()
                    .unwrap()
                    .trim_start_matches("bytes=")
                    .to_string();
                let (a, b) = r.split_once('-').unwrap();
                let (a, b): (usize, usize) = (a.parse().unwrap(), b.parse().unwrap());
                let mut body = served[a..=b].to_vec();
                body[0] ^= 0x55;
                (
                    StatusCode::PARTIAL_CONTENT,
                    [(header::CONTENT_RANGE, format!("bytes {a}-{b}/{}", served.len()))],
                    body,
                )
                    .into_response()
            }
        }),
    );
    let evil_server = tokio::spawn(async move {
        let _ = axum::serve(evil, app).await;
    });
    let err = format!("{:#}", agent.handle_release(&bad_release.info_hash).await.unwrap_err());
    assert!(err.contains("failed its SHA-1 check"), "{err}");
    assert!(
        !common::download_folder(&state, &bad_release.info_hash).exists(),
        "nothing of the refused package is kept"
    );
    let r = &lonely.client().telemetry(&bad_release.info_hash).await.unwrap()[0];
    assert!(!r.verified);
    assert!(r.error.as_deref().unwrap_or("").contains("SHA-1"), "{r:?}");
    assert_eq!(agent.installed().len(), 1);

    agent.stop().await;
    seeder.stop().await;
    evil_server.abort();
    http_server.abort();
    lonely.stop().await;
    stack.tracker.stop().await;
}
