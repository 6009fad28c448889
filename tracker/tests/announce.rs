//! [`Tracker::announce`] and [`Tracker::scrape`] called directly, without
//! HTTP: who may announce, the device's audience, the origin hand-out, the
//! device id taken from the token and the completed-download count, on a
//! tracker with a SQLite registry in a temporary folder.

use std::net::SocketAddr;
use std::sync::Arc;

use ota_proto::announce::{AnnounceError, AnnounceEvent};
use ota_proto::api::NewRelease;
use ota_proto::rollout;
use ota_proto::{InfoHash, PeerId};
use ota_tracker::service::Refusal;
use ota_tracker::{Caller, DeviceAuth, Tracker};

mod common;

use common::{device, ip, request, settings, tracker_with, ADMIN, ORIGIN};

async fn tracker(dir: &tempfile::TempDir, device_auth: DeviceAuth) -> Arc<Tracker> {
    tracker_with(dir, settings(device_auth)).await
}

fn release() -> NewRelease {
    ota_testkit::release("a.bin", 10, 16384)
}

#[tokio::test]
async fn devices_and_the_origin_announce_without_http() {
    let dir = tempfile::tempdir().unwrap();
    let t = tracker(&dir, DeviceAuth::Required).await;
    let ih = t.register_release(&release()).await.unwrap().info_hash;

    // Who may announce: the failure reasons clients see.
    let e = t.announce_caller(None, None).unwrap_err();
    assert_eq!(e, Refusal::TokenRequired("announce"));
    assert_eq!(
        e.to_string(),
        "device token required: announce with token=HEX in the URL"
    );
    let e = t.announce_caller(None, Some(&"ab".repeat(32))).unwrap_err();
    assert_eq!(e.to_string(), "unknown or revoked device token");
    assert_eq!(
        t.announce_caller(Some("wrong"), None).unwrap_err(),
        Refusal::UnknownToken
    );
    assert_eq!(
        t.announce_caller(Some(ADMIN), None).unwrap_err(),
        Refusal::UnknownToken,
        "the admin token is no origin token"
    );
    let origin = t.announce_caller(Some(ORIGIN), None).unwrap();
    assert!(matches!(origin, Caller::Origin));
    assert_eq!(
        t.scrape_caller(None, None, None).unwrap_err().to_string(),
        "device token required: scrape with token=HEX in the URL"
    );
    assert!(matches!(t.scrape_caller(None, None, Some(ADMIN)), Ok(Caller::Admin)));

    // The origin gets no peers; the first device leecher gets the origin.
    let r = t
        .announce(request(ih, 0, 0, AnnounceEvent::Started), &origin, ip(1))
        .unwrap();
    assert!(r.peers.is_empty());
    let (token1, dev1) = device(&t, "dev-1").await;
    let mut spoofed = request(ih, 1, 10, AnnounceEvent::Started);
    spoofed.device = Some("spoofed".into());
    let r = t.announce(spoofed, &dev1, ip(2)).unwrap();
    assert_eq!(
        r.peers.iter().map(|p| p.addr).collect::<Vec<_>>(),
        vec![SocketAddr::new(ip(1), 7000)]
    );
    assert_eq!((r.complete, r.incomplete), (1, 1));
    // The second gets the first device, not the origin; `ip=` is ignored (no trusted proxy).
    let (_, dev2) = device(&t, "dev-2").await;
    let mut own_ip = request(ih, 2, 10, AnnounceEvent::Started);
    own_ip.ip = Some(ip(99));
    let r = t.announce(own_ip, &dev2, ip(3)).unwrap();
    assert_eq!(
        r.peers.iter().map(|p| p.addr).collect::<Vec<_>>(),
        vec![SocketAddr::new(ip(2), 7001)]
    );
    let peers = t.peers(&ih).unwrap();
    let find = |n: u8| peers.iter().find(|p| p.peer_id == PeerId([n; 20])).unwrap();
    assert_eq!(
        find(1).device.as_deref(),
        Some("dev-1"),
        "the device id comes from the token"
    );
    assert!(find(1).granted && find(0).is_origin);
    assert_eq!(find(2).addr, "10.0.0.3:7002");

    // Refusals from the swarm and the audience.
    let unknown = request(InfoHash([0xEE; 20]), 1, 10, AnnounceEvent::None);
    let e = t.announce(unknown, &dev1, ip(2)).unwrap_err();
    assert!(matches!(e, Refusal::Protocol(AnnounceError::Unregistered(_))), "{e:?}");
    assert_eq!(e.to_string(), format!("unregistered info hash {}", "ee".repeat(20)));
    t.set_rollout(&ih, 0).await.unwrap();
    let e = t
        .announce(request(ih, 2, 10, AnnounceEvent::None), &dev2, ip(3))
        .unwrap_err();
    assert_eq!(e, Refusal::NotOffered(rollout::Refusal::OutsideWave { percent: 0 }));
    assert!(e.to_string().contains("rollout wave"), "{e}");
    t.set_rollout(&ih, 100).await.unwrap();

    // A completed download counts in the scrape at once and for the device
    // after the next persistence round.
    t.announce(request(ih, 1, 0, AnnounceEvent::Completed), &dev1, ip(2))
        .unwrap();
    let files = t.scrape(&[ih, InfoHash([0xEE; 20])]);
    assert_eq!(files.len(), 1, "unknown info hashes are left out");
    assert_eq!(
        (files[0].1.complete, files[0].1.downloaded, files[0].1.incomplete),
        (2, 1, 1)
    );
    assert_eq!(t.scrape(&[]).len(), 1, "an empty scrape lists every release");
    assert!(t.persist().await.unwrap() > 0);
    assert_eq!(t.registry().device_completions("dev-1").await.unwrap(), vec![(ih, 1)]);
    let seen = t.devices().await.unwrap();
    assert!(seen
        .iter()
        .find(|d| d.device_id == "dev-1")
        .unwrap()
        .last_seen
        .is_some());

    // A revoked token stops working at once.
    t.revoke_device("dev-1").await.unwrap();
    assert_eq!(
        t.announce_caller(None, Some(&token1)).unwrap_err(),
        Refusal::UnknownToken
    );
}

#[tokio::test]
async fn anyone_announces_with_device_auth_off() {
    let dir = tempfile::tempdir().unwrap();
    let t = tracker(&dir, DeviceAuth::Off).await;
    let ih = t.register_release(&release()).await.unwrap().info_hash;
    let anon = t.announce_caller(None, None).unwrap();
    assert!(matches!(anon, Caller::Anonymous));
    assert!(matches!(t.scrape_caller(None, None, None), Ok(Caller::Anonymous)));
    // A token given must still be valid.
    assert_eq!(
        t.announce_caller(None, Some("nope")).unwrap_err(),
        Refusal::UnknownToken
    );
    let mut named = request(ih, 5, 10, AnnounceEvent::Started);
    named.device = Some("dev-5".into());
    t.announce(named, &anon, ip(5)).unwrap();
    assert_eq!(
        t.peers(&ih).unwrap()[0].device.as_deref(),
        Some("dev-5"),
        "device= is kept"
    );
    let r = t
        .announce(request(ih, 5, 10, AnnounceEvent::Stopped), &anon, ip(5))
        .unwrap();
    assert!(r.peers.is_empty());
    assert!(t.peers(&ih).unwrap().is_empty());
}
