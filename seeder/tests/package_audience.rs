//! `/packages/{key}` serves exactly the tracker's audience: with device
//! auth on, a device token the tracker knows and a device inside the
//! release's rollout wave, channel and model. The ledger's device comes from
//! the token, never from `X-Device-Id`.

use std::time::{Duration, Instant};

use reqwest::StatusCode;

use ota_proto::api::Release;
use ota_seeder::http_path::{HttpSettings, PackageAuth};
use ota_seeder::ledger::EgressPath;
use ota_seeder::publish::{ManifestSigning, PublishRequest};
use ota_seeder::seeding::Seeder;
use ota_testkit::package;
use ota_testkit::stack::{serve_http_with, Stack, TestS3, ADMIN};
use ota_testkit::tracker::TestTracker;
use ota_tracker::DeviceAuth;

const PIECE: u64 = 256 * 1024;
const SIZE: usize = 300_000;

/// A stack whose tracker requires device tokens, a release for channel
/// `stable` (signed manifest), seeded; the HTTP path with `settings`.
async fn setup(
    settings: HttpSettings,
) -> (
    Stack,
    std::sync::Arc<Seeder>,
    Release,
    Vec<u8>,
    tokio::task::JoinHandle<()>,
) {
    let dir = tempfile::tempdir().unwrap();
    let s3 = TestS3::start(&dir.path().join("s3")).await;
    let tracker = TestTracker::builder()
        .db_dir(dir.path().join("tracker"))
        .admin_token(ADMIN)
        .device_auth(DeviceAuth::Required)
        .announce_interval(Duration::from_secs(1))
        .start()
        .await;
    let stack = Stack { dir, s3, tracker };
    let http = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", http.local_addr().unwrap());
    let data = package(SIZE, 9);
    let req = PublishRequest {
        http_base: Some(base.clone()),
        signing: Some(ManifestSigning {
            key: ota_proto::manifest::generate_signing_key(),
            channel: "stable".into(),
            models: vec!["gateway".into()],
        }),
        ..stack.publish_request("fw/gw.bin", PIECE)
    };
    let published = stack.publish_with(&data, &req).await;
    let seeder = stack
        .start_seeding(stack.seed_settings(), &published.release.info_hash)
        .await;
    let server = serve_http_with(seeder.clone(), http, settings);
    (stack, seeder, published.release, data, server)
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

async fn get(url: &str, token: Option<&str>, spoofed_device: Option<&str>) -> (StatusCode, Vec<u8>) {
    let mut r = client().get(url);
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    if let Some(d) = spoofed_device {
        r = r.header("x-device-id", d);
    }
    let resp = r.send().await.unwrap();
    (resp.status(), resp.bytes().await.unwrap().to_vec())
}

/// The HTTP rows of the ledger (written with the next flush).
async fn http_devices(seeder: &Seeder) -> Vec<(Option<String>, u64)> {
    seeder.flush_ledger().await.unwrap();
    seeder
        .ledger()
        .page(0, i64::MAX)
        .await
        .unwrap()
        .into_iter()
        .filter(|(_, e)| e.path == EgressPath::Http)
        .map(|(_, e)| (e.device, e.bytes))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn packages_are_served_only_to_devices_the_tracker_offers_them_to() {
    // No caching, so that a rollout change shows at once.
    let settings = HttpSettings {
        verdict_ttl: Duration::ZERO,
        ..HttpSettings::new(Some(ADMIN.into()))
    };
    let (stack, seeder, release, data, server) = setup(settings).await;
    let admin = stack.tracker.client();
    let gw = admin.register_device("gw-1", "stable", "gateway").await.unwrap();
    let beta = admin.register_device("gw-2", "beta", "gateway").await.unwrap();
    let cam = admin.register_device("cam-1", "stable", "camera").await.unwrap();
    let url = release.http_url.clone().unwrap();
    let torrent = format!("{url}?torrent");

    for u in [&url, &torrent] {
        assert_eq!(
            get(u, None, Some("gw-1")).await.0,
            StatusCode::UNAUTHORIZED,
            "no token: {u}"
        );
        assert_eq!(
            get(u, Some(&"ab".repeat(32)), None).await.0,
            StatusCode::UNAUTHORIZED,
            "unknown token: {u}"
        );
        assert_eq!(
            get(u, Some(&beta), None).await.0,
            StatusCode::FORBIDDEN,
            "other channel: {u}"
        );
        assert_eq!(
            get(u, Some(&cam), None).await.0,
            StatusCode::FORBIDDEN,
            "other model: {u}"
        );
    }
    let (status, body) = get(&url, Some(&gw), None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body == data, "the device in the audience gets the package");
    assert_eq!(get(&torrent, Some(&gw), None).await.0, StatusCode::OK);

    // Outside the rollout wave: refused.
    admin.set_rollout(&release.info_hash, 0).await.unwrap();
    assert_eq!(
        get(&url, Some(&gw), None).await.0,
        StatusCode::FORBIDDEN,
        "outside the wave"
    );
    admin.set_rollout(&release.info_hash, 100).await.unwrap();
    assert_eq!(get(&url, Some(&gw), None).await.0, StatusCode::OK);
    // A revoked token: refused.
    admin.revoke_device("gw-1").await.unwrap();
    assert_eq!(get(&url, Some(&gw), None).await.0, StatusCode::UNAUTHORIZED, "revoked");

    // Only the two served bodies were counted.
    let rows = http_devices(&seeder).await;
    assert_eq!(rows.iter().map(|(_, b)| b).sum::<u64>(), 2 * SIZE as u64, "{rows:?}");
    server.abort();
    seeder.stop().await;
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_ledger_device_comes_from_the_token_not_from_x_device_id() {
    let (stack, seeder, release, _data, server) = setup(HttpSettings::new(Some(ADMIN.into()))).await;
    let admin = stack.tracker.client();
    let token = admin.register_device("gw-7", "stable", "gateway").await.unwrap();
    let url = release.http_url.clone().unwrap();
    assert_eq!(get(&url, Some(&token), Some("someone-else")).await.0, StatusCode::OK);
    let rows = http_devices(&seeder).await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    let device = rows[0].0.clone().expect("a device from the token");
    assert_ne!(device, "someone-else", "X-Device-Id is not trusted");
    assert!(
        device == "gw-7" || device.starts_with("token:"),
        "the tracker's id, or a pseudonym of the token: {device}"
    );
    server.abort();
    seeder.stop().await;
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn package_verdicts_are_cached_for_their_ttl() {
    let settings = HttpSettings {
        verdict_ttl: Duration::from_secs(2),
        ..HttpSettings::new(Some(ADMIN.into()))
    };
    let (stack, seeder, release, _data, server) = setup(settings).await;
    let admin = stack.tracker.client();
    let token = admin.register_device("gw-8", "stable", "gateway").await.unwrap();
    let url = release.http_url.clone().unwrap();
    assert_eq!(get(&url, Some(&token), None).await.0, StatusCode::OK);
    let allowed_at = Instant::now();
    admin.revoke_device("gw-8").await.unwrap();
    // Within the TTL the cached verdict holds; after it the tracker decides.
    if allowed_at.elapsed() < Duration::from_millis(1500) {
        assert_eq!(get(&url, Some(&token), None).await.0, StatusCode::OK, "cached verdict");
    }
    tokio::time::sleep(Duration::from_millis(2100).saturating_sub(allowed_at.elapsed())).await;
    assert_eq!(
        get(&url, Some(&token), None).await.0,
        StatusCode::UNAUTHORIZED,
        "after the TTL"
    );
    server.abort();
    seeder.stop().await;
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn package_auth_off_serves_anyone_and_records_no_device() {
    let settings = HttpSettings {
        package_auth: PackageAuth::Off,
        ..HttpSettings::new(Some(ADMIN.into()))
    };
    let (stack, seeder, release, data, server) = setup(settings).await;
    let (status, body) = get(release.http_url.as_deref().unwrap(), None, Some("spoofed")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body == data);
    assert_eq!(http_devices(&seeder).await, vec![(None, SIZE as u64)]);
    server.abort();
    seeder.stop().await;
    stack.shutdown().await;
}
