//! Setup shared by the tests that call [`Tracker`] without HTTP
//! (`announce.rs`, `hardening.rs`): a tracker on a SQLite registry in a
//! temporary folder, registered devices, announce requests; and the
//! announce parameters of the tests over HTTP (`api.rs`, `replicas.rs`).

#![allow(dead_code)]

use std::net::IpAddr;
use std::sync::Arc;

use ota_proto::announce::{AnnounceEvent, AnnounceRequest};
use ota_proto::api::NewDevice;
use ota_proto::{InfoHash, PeerId};
use ota_tracker::connectability::ConnectabilityConfig;
use ota_tracker::{Caller, DeviceAuth, Registry, StoreConfig, Tracker, TrackerSettings};

/// The admin token of these trackers.
pub(crate) const ADMIN: &str = "direct-test-admin-token";
/// The origin token of these trackers.
pub(crate) const ORIGIN: &str = "direct-test-origin-token";

/// Settings with [`ADMIN`], [`ORIGIN`], no trusted proxies, the production
/// store settings and `device_auth`; connectability checks off (these
/// tests announce addresses nothing listens on and check that they are
/// handed out; `tests/direct_paths.rs` turns the checks on).
pub(crate) fn settings(device_auth: DeviceAuth) -> TrackerSettings {
    TrackerSettings {
        admin_token: ADMIN.into(),
        origin_token: Some(ORIGIN.into()),
        trusted_proxies: Vec::new(),
        public_url: "http://tracker.invalid".into(),
        store: StoreConfig::default(),
        device_auth,
        connectability: ConnectabilityConfig {
            enabled: false,
            ..Default::default()
        },
    }
}

/// A tracker with `settings` on `sqlite://DIR/t.db`.
pub(crate) async fn tracker_with(dir: &tempfile::TempDir, settings: TrackerSettings) -> Arc<Tracker> {
    let registry = Registry::open(&format!("sqlite://{}/t.db", dir.path().display()))
        .await
        .unwrap();
    Tracker::new(registry, settings).await.unwrap()
}

/// A tracker with `settings` on `sqlite://DIR/t.db` and the placeholder
/// release `a.bin` (1 MiB in 16 KiB pieces) registered; its info hash.
pub(crate) async fn tracker_with_release(
    dir: &tempfile::TempDir,
    settings: TrackerSettings,
) -> (Arc<Tracker>, InfoHash) {
    let t = tracker_with(dir, settings).await;
    let ih = t
        .register_release(&ota_testkit::release("a.bin", 1 << 20, 16384))
        .await
        .unwrap()
        .info_hash;
    (t, ih)
}

/// An announce of peer `n` (peer id `[n; 20]`, port 7000 + n).
pub(crate) fn request(ih: InfoHash, n: u8, left: u64, event: AnnounceEvent) -> AnnounceRequest {
    AnnounceRequest::new(ih, PeerId([n; 20]), 7000 + n as u16, left, event)
}

/// The address 10.0.0.`last`.
pub(crate) fn ip(last: u8) -> IpAddr {
    IpAddr::from([10, 0, 0, last])
}

/// Registers the placeholder release `name` (1 MiB in 16 KiB pieces,
/// [`ota_testkit::release`]) through `t`'s admin API; its info hash.
pub(crate) async fn register_release(t: &ota_testkit::tracker::TestTracker, name: &str) -> InfoHash {
    t.client()
        .register(&ota_testkit::release(name, 1 << 20, 16384))
        .await
        .unwrap()
        .info_hash
}

/// Registers device `id` (channel `stable`, model `m1`) and returns its
/// token and the announce caller its token makes.
pub(crate) async fn device(t: &Tracker, id: &str) -> (String, Caller) {
    let new = NewDevice {
        device_id: id.into(),
        channel: "stable".into(),
        model: "m1".into(),
    };
    let token = t.register_device(new).await.unwrap().token;
    let caller = t.announce_caller(None, Some(&token)).unwrap();
    assert!(matches!(&caller, Caller::Device(d) if &*d.device_id == id));
    (token, caller)
}

/// Announce parameters (for [`ota_client::TrackerClient::announce`]) of
/// peer `n`: peer id `[n; 20]`, port `7000 + n`, `left` of a 10-byte
/// package, `device=` as given.
pub(crate) fn client_announce(
    ih: InfoHash,
    n: u8,
    left: u64,
    event: AnnounceEvent,
    device: Option<String>,
) -> ota_client::AnnounceParams {
    ota_client::AnnounceParams {
        info_hash: ih,
        peer_id: PeerId([n; 20]),
        port: 7000 + n as u16,
        uploaded: 0,
        downloaded: 10 - left,
        left,
        event,
        device,
    }
}
