//! Security hardening of the tracker (issue 11), one test per defect: who
//! may touch a peer entry, which addresses are handed out, when `left=0` is
//! believed, the admin and origin credentials, each endpoint's audience, the
//! push channel's limits, and the STUN responder's bind address and rate
//! limit. Most call [`Tracker`] directly; the endpoint tests go over HTTP on
//! loopback.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use ota_proto::announce::{AnnounceError, AnnounceEvent};
use ota_proto::api::TelemetryReport;
use ota_proto::{InfoHash, PeerId};
use ota_testkit::tracker::TestTracker;
use ota_tracker::service::{ApiError, PushItem, Refusal, BUS_CAPACITY, MAX_STREAMS_PER_DEVICE};
use ota_tracker::{Caller, DeviceAuth, OriginPolicy, Registry, Tracker, TrackerSettings};

mod common;

use common::{device, ip, register_release, request, settings, tracker_with_release, ADMIN, ORIGIN};

/// A tracker requiring device tokens, with one registered release.
async fn tracker(dir: &tempfile::TempDir) -> (Arc<Tracker>, InfoHash) {
    tracker_with_release(dir, settings(DeviceAuth::Required)).await
}

fn peer_ids(t: &Tracker, ih: &InfoHash) -> Vec<u8> {
    let mut ids: Vec<u8> = t.peers(ih).unwrap().iter().map(|p| p.peer_id.0[0]).collect();
    ids.sort();
    ids
}

// ---- 1. Peers are bound to the device that announced them.

#[tokio::test]
async fn another_devices_token_cannot_stop_or_update_a_peer() {
    let dir = tempfile::tempdir().unwrap();
    let (t, ih) = tracker(&dir).await;
    let (_, alice) = device(&t, "alice").await;
    let (_, mallory) = device(&t, "mallory").await;
    t.announce(request(ih, 1, 100, AnnounceEvent::Started), &alice, ip(1))
        .unwrap();

    // Mallory replays Alice's peer id: stopping it, or moving it to her address.
    let e = t
        .announce(request(ih, 1, 100, AnnounceEvent::Stopped), &mallory, ip(66))
        .unwrap_err();
    assert!(
        matches!(e, Refusal::Protocol(AnnounceError::Invalid("peer_id", _))),
        "{e:?}"
    );
    let e = t
        .announce(request(ih, 1, 0, AnnounceEvent::None), &mallory, ip(66))
        .unwrap_err();
    assert!(e.to_string().contains("another device"), "{e}");
    let origin = t.announce_caller(Some(ORIGIN), None).unwrap();
    assert!(t
        .announce(request(ih, 1, 0, AnnounceEvent::Stopped), &origin, ip(66))
        .is_err());

    let peers = t.peers(&ih).unwrap();
    assert_eq!(peers.len(), 1, "Alice's entry is still there");
    assert_eq!(peers[0].addr, "10.0.0.1:7001");
    assert_eq!((peers[0].left, peers[0].device.as_deref()), (100, Some("alice")));
    // Alice herself may stop it.
    t.announce(request(ih, 1, 100, AnnounceEvent::Stopped), &alice, ip(1))
        .unwrap();
    assert!(t.peers(&ih).unwrap().is_empty());
}

#[tokio::test]
async fn a_device_keeps_one_peer_entry_per_address_family() {
    let dir = tempfile::tempdir().unwrap();
    let (t, ih) = tracker(&dir).await;
    let (_, alice) = device(&t, "alice").await;
    // Fifty peer ids from one device token: each replaces the last (IPv4).
    for n in 1..=50 {
        t.announce(request(ih, n, 100, AnnounceEvent::Started), &alice, ip(1))
            .unwrap();
    }
    assert_eq!(peer_ids(&t, &ih), vec![50]);
    // An IPv6 entry next to it is fine; another IPv6 one replaces that.
    let v6: IpAddr = "2001:db8::1".parse().unwrap();
    t.announce(request(ih, 60, 100, AnnounceEvent::Started), &alice, v6)
        .unwrap();
    t.announce(request(ih, 61, 100, AnnounceEvent::Started), &alice, v6)
        .unwrap();
    assert_eq!(peer_ids(&t, &ih), vec![50, 61]);
    let stats = t.scrape(&[ih]);
    assert_eq!(stats[0].1.incomplete, 2);
    // Another device is not affected.
    let (_, bob) = device(&t, "bob").await;
    t.announce(request(ih, 70, 100, AnnounceEvent::Started), &bob, ip(2))
        .unwrap();
    assert_eq!(peer_ids(&t, &ih), vec![50, 61, 70]);
}

// ---- 2. `ip=` and non-routable addresses.

#[tokio::test]
async fn ip_param_is_ignored_unless_sent_by_a_trusted_proxy() {
    let dir = tempfile::tempdir().unwrap();
    let proxy = ip(250);
    let (t, ih) = tracker_with_release(
        &dir,
        TrackerSettings {
            trusted_proxies: vec![proxy],
            ..settings(DeviceAuth::Off)
        },
    )
    .await;
    let anon = Caller::Anonymous;
    let mut direct = request(ih, 1, 100, AnnounceEvent::Started);
    direct.ip = Some(ip(99));
    t.announce(direct, &anon, ip(1)).unwrap();
    let mut proxied = request(ih, 2, 100, AnnounceEvent::Started);
    proxied.ip = Some(ip(42));
    t.announce(proxied, &anon, proxy).unwrap();
    let mut multicast = request(ih, 3, 100, AnnounceEvent::Started);
    multicast.ip = Some("224.0.0.1".parse().unwrap());
    t.announce(multicast, &anon, proxy).unwrap();
    let addrs: Vec<String> = t.peers(&ih).unwrap().into_iter().map(|p| p.addr).collect();
    assert!(
        addrs.contains(&"10.0.0.1:7001".to_string()),
        "ip= of a device ignored: {addrs:?}"
    );
    assert!(
        addrs.contains(&"10.0.0.42:7002".to_string()),
        "ip= of the proxy believed: {addrs:?}"
    );
    assert!(
        addrs.contains(&"10.0.0.250:7003".to_string()),
        "multicast ip= ignored: {addrs:?}"
    );
}

#[tokio::test]
async fn loopback_and_link_local_peers_are_not_handed_to_remote_devices() {
    let dir = tempfile::tempdir().unwrap();
    let (t, ih) = tracker_with_release(&dir, settings(DeviceAuth::Off)).await;
    let anon = Caller::Anonymous;
    let loopback: IpAddr = "127.0.0.1".parse().unwrap();
    let link_local: IpAddr = "169.254.1.1".parse().unwrap();
    let link_local6: IpAddr = "fe80::1".parse().unwrap();
    for (n, from) in [(1, loopback), (2, link_local), (3, link_local6), (4, ip(4))] {
        t.announce(request(ih, n, 0, AnnounceEvent::Started), &anon, from)
            .unwrap();
    }
    let remote = t
        .announce(request(ih, 9, 100, AnnounceEvent::Started), &anon, ip(9))
        .unwrap();
    let got: Vec<SocketAddr> = remote.peers.iter().map(|p| p.addr).collect();
    assert_eq!(got, vec![SocketAddr::new(ip(4), 7004)], "only the routable peer");
    // A swarm on one host (tests) still sees its loopback peers.
    let local = t
        .announce(request(ih, 10, 100, AnnounceEvent::Started), &anon, loopback)
        .unwrap();
    let got: Vec<SocketAddr> = local.peers.iter().map(|p| p.addr).collect();
    assert!(got.contains(&SocketAddr::new(loopback, 7001)), "{got:?}");
    assert!(
        !got.iter().any(|a| a.ip() == link_local || a.ip() == link_local6),
        "{got:?}"
    );
}

// ---- 3. `left=0` is believed only after the device completed.

#[tokio::test]
async fn a_device_lying_about_left_zero_does_not_starve_others_of_the_origin() {
    let dir = tempfile::tempdir().unwrap();
    // A 200 ms announce interval: starvation is time without progress.
    let interval = std::time::Duration::from_millis(200);
    let (t, ih) = tracker_with_release(
        &dir,
        TrackerSettings {
            store: ota_tracker::StoreConfig {
                interval,
                min_interval: interval,
                ..Default::default()
            },
            ..settings(DeviceAuth::Required)
        },
    )
    .await;
    let origin = t.announce_caller(Some(ORIGIN), None).unwrap();
    let origin_addr = SocketAddr::new(ip(200), 7000);
    t.announce(request(ih, 0, 0, AnnounceEvent::Started), &origin, ip(200))
        .unwrap();
    // The liar claims to seed from its first announce (even sending `completed`).
    let (_, liar) = device(&t, "liar").await;
    t.announce(request(ih, 1, 0, AnnounceEvent::Started), &liar, ip(1))
        .unwrap();
    t.announce(request(ih, 1, 0, AnnounceEvent::Completed), &liar, ip(1))
        .unwrap();
    let stats = t.scrape(&[ih])[0].1;
    assert_eq!(
        (stats.complete, stats.downloaded),
        (1, 0),
        "only the origin counts as complete; no download counted"
    );
    // An honest leecher still gets the origin grant at once.
    let (_, honest) = device(&t, "honest").await;
    let r = t
        .announce(request(ih, 2, 100, AnnounceEvent::Started), &honest, ip(2))
        .unwrap();
    assert!(r.peers.iter().any(|p| p.addr == origin_addr), "{:?}", r.peers);
    let info = t.peers(&ih).unwrap();
    assert!(info.iter().find(|p| p.peer_id == PeerId([2; 20])).unwrap().granted);

    // A cleverer liar that first shows progress is believed, but cannot
    // starve a stalled leecher: after a few announces without progress it
    // gets the origin anyway.
    let (_, liar2) = device(&t, "liar2").await;
    t.announce(request(ih, 3, 100, AnnounceEvent::Started), &liar2, ip(3))
        .unwrap();
    t.announce(request(ih, 3, 0, AnnounceEvent::None), &liar2, ip(3))
        .unwrap();
    let (_, victim) = device(&t, "victim").await;
    let mut got_origin = false;
    for _ in 0..6 {
        let r = t
            .announce(request(ih, 4, 100, AnnounceEvent::None), &victim, ip(4))
            .unwrap();
        got_origin |= r.peers.iter().any(|p| p.addr == origin_addr);
        tokio::time::sleep(interval).await;
    }
    assert!(
        got_origin,
        "a stalled leecher is handed the origin despite a (claimed) seeder"
    );
}

#[tokio::test]
async fn a_device_that_finished_downloading_is_believed() {
    let dir = tempfile::tempdir().unwrap();
    let (t, ih) = tracker(&dir).await;
    let (_, dev) = device(&t, "dev").await;
    t.announce(request(ih, 1, 100, AnnounceEvent::Started), &dev, ip(1))
        .unwrap();
    t.announce(request(ih, 1, 0, AnnounceEvent::Completed), &dev, ip(1))
        .unwrap();
    let stats = t.scrape(&[ih])[0].1;
    assert_eq!((stats.complete, stats.downloaded), (1, 1));
    // Its next session (a new peer id) is believed too.
    t.announce(request(ih, 2, 0, AnnounceEvent::Started), &dev, ip(1))
        .unwrap();
    assert_eq!(t.scrape(&[ih])[0].1.complete, 1);
    assert_eq!(peer_ids(&t, &ih), vec![2]);
}

// ---- 4. Admin and origin credentials.

#[tokio::test]
async fn tracker_refuses_to_start_without_a_strong_admin_token() {
    let cases = [
        ("", Some(ORIGIN), "no admin token"),
        ("short", Some(ORIGIN), "shorter than 16"),
        (ADMIN, Some("short"), "shorter than 16"),
        (ADMIN, Some(ADMIN), "must differ"),
    ];
    for (admin, origin, why) in cases {
        let s = TrackerSettings {
            admin_token: admin.into(),
            origin_token: origin.map(String::from),
            ..settings(DeviceAuth::Required)
        };
        let e = s.validate().unwrap_err().to_string();
        assert!(e.contains(why), "{admin:?}/{origin:?}: {e}");
        let dir = tempfile::tempdir().unwrap();
        let registry = Registry::open(&format!("sqlite://{}/t.db", dir.path().display()))
            .await
            .unwrap();
        assert!(Tracker::new(registry, s).await.is_err());
    }
    assert!(settings(DeviceAuth::Required).validate().is_ok());
    // The binary: no default token.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ota-tracker"))
        .args(["serve", "--database-url", "sqlite::memory:", "--stun-listen", "off"])
        .env_remove("OTA_ADMIN_TOKEN")
        .env_remove("OTA_TRACKER_CONFIG")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("no admin token") && stderr.contains("OTA_ADMIN_TOKEN"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_admin_token_is_no_announce_credential_and_the_origin_token_no_admin_one() {
    let t = TestTracker::builder()
        .admin_token(ADMIN)
        .origin_token(ORIGIN)
        .device_auth(DeviceAuth::Required)
        .start()
        .await;
    let ih = register_release(&t, "a.bin").await;
    let announce = |token: &str| {
        format!(
            "{}/announce?info_hash={}&peer_id={}&port=7000&uploaded=0&downloaded=0&left=0&origin_token={token}",
            t.url(),
            ota_proto::announce::encode_binary(ih.as_ref()),
            ota_proto::announce::encode_binary(&[0; 20]),
        )
    };
    let body = reqwest::get(announce(ADMIN)).await.unwrap().bytes().await.unwrap();
    assert!(
        String::from_utf8_lossy(&body).contains("unknown or revoked"),
        "{body:?}"
    );
    let body = reqwest::get(announce(ORIGIN)).await.unwrap().bytes().await.unwrap();
    assert!(ota_proto::announce::decode_announce(&body).is_ok(), "{body:?}");
    assert!(t.tracker().peers(&ih).unwrap()[0].is_origin);
    // The origin token opens no admin call.
    let r = reqwest::Client::new()
        .get(format!("{}/api/devices", t.url()))
        .bearer_auth(ORIGIN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    t.stop().await;
}

// ---- 5. Every endpoint has a decided audience.

#[tokio::test(flavor = "multi_thread")]
async fn admin_only_endpoints_refuse_devices_and_anonymous_callers() {
    for auth in [DeviceAuth::Off, DeviceAuth::Required] {
        let t = TestTracker::builder()
            .admin_token(ADMIN)
            .device_auth(auth)
            .start()
            .await;
        let ih = register_release(&t, "a.bin").await;
        let dev = t.client().register_device("d1", "stable", "m1").await.unwrap();
        let http = reqwest::Client::new();
        for path in [
            "/metrics".to_string(),
            "/api/subscribers".to_string(),
            format!("/api/releases/{ih}/telemetry"),
            format!("/api/releases/{ih}/peers"),
            "/api/devices".to_string(),
        ] {
            let url = format!("{}{path}", t.url());
            let anon = http.get(&url).send().await.unwrap().status().as_u16();
            let device = http.get(&url).bearer_auth(&dev).send().await.unwrap().status().as_u16();
            let admin = http
                .get(&url)
                .bearer_auth(ADMIN)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16();
            assert_eq!((anon, device, admin), (401, 401, 200), "{path} with {auth:?}");
        }
        assert_eq!(
            http.get(format!("{}/health", t.url())).send().await.unwrap().status(),
            200
        );
        t.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_device_scrapes_only_the_releases_offered_to_it() {
    let t = TestTracker::builder()
        .admin_token(ADMIN)
        .device_auth(DeviceAuth::Required)
        .start()
        .await;
    let open = register_release(&t, "open.bin").await;
    let hidden = register_release(&t, "hidden.bin").await;
    t.client().set_rollout(&hidden, 0).await.unwrap();
    let token = t.client().register_device("d1", "stable", "m1").await.unwrap();
    let all = reqwest::get(format!("{}/scrape?token={token}", t.url()))
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert!(ota_proto::announce::decode_scrape(&all, &open).is_ok());
    assert!(ota_proto::announce::decode_scrape(&all, &hidden).is_err(), "not listed");
    let dev = t.anonymous_client().with_device_token(Some(token));
    assert!(dev.scrape(&open).await.is_ok());
    assert!(dev.scrape(&hidden).await.is_err(), "not even when asked by name");
    // The admin sees both.
    let stats = t.tracker().scrape_for(&Caller::Admin, &[]);
    assert_eq!(stats.len(), 2);
    t.stop().await;
}

#[tokio::test]
async fn telemetry_is_taken_only_for_offered_releases_with_plausible_counts() {
    let dir = tempfile::tempdir().unwrap();
    let (t, ih) = tracker(&dir).await;
    let (token, _) = device(&t, "dev").await;
    let dev = t.api_caller(Some(&token)).unwrap();
    let report = |bytes_from_peers: u64| TelemetryReport {
        device: "someone-else".into(),
        info_hash: ih,
        bytes_from_peers,
        verified: true,
        ..Default::default()
    };
    t.add_telemetry(&dev, report(1 << 20)).await.unwrap();
    let e = t.add_telemetry(&dev, report(u64::MAX / 2)).await.unwrap_err();
    assert!(matches!(e, ApiError::BadRequest(_)), "{e:?}");
    let e = t
        .add_telemetry(
            &dev,
            TelemetryReport {
                bytes_from_lan_peers: 10,
                ..report(5)
            },
        )
        .await
        .unwrap_err();
    assert!(matches!(e, ApiError::BadRequest(_)), "{e:?}");
    t.set_rollout(&ih, 0).await.unwrap();
    let e = t.add_telemetry(&dev, report(1)).await.unwrap_err();
    assert!(matches!(e, ApiError::Forbidden(_)), "not offered: {e:?}");
    let stored = t.telemetry(&Caller::Admin, &ih).await.unwrap();
    assert_eq!(stored.len(), 1);
    assert_eq!(
        (stored[0].device.as_str(), stored[0].bytes_from_peers),
        ("dev", 1 << 20)
    );
    assert!(t.telemetry(&dev, &ih).await.is_err());
    assert!(t.telemetry(&Caller::Anonymous, &ih).await.is_err());
}

// ---- 6. The push channel.

#[tokio::test]
async fn a_revoked_devices_push_stream_is_closed() {
    let dir = tempfile::tempdir().unwrap();
    let (t, _) = tracker(&dir).await;
    let (token, _) = device(&t, "dev").await;
    let caller = t.api_caller(Some(&token)).unwrap();
    let mut stream = Box::pin(t.push_events(caller).unwrap());
    let (other, _) = device(&t, "other").await;
    let mut other_stream = Box::pin(t.push_events(t.api_caller(Some(&other)).unwrap()).unwrap());
    t.revoke_device("dev").await.unwrap();
    let end = tokio::time::timeout(Duration::from_secs(5), stream.next()).await;
    assert_eq!(end.expect("the stream ends at once"), None);
    assert_eq!(t.device_streams("dev"), 0, "its slot is freed");
    // Other devices' streams stay open.
    assert!(tokio::time::timeout(Duration::from_millis(200), other_stream.next())
        .await
        .is_err());
}

#[tokio::test]
async fn a_device_holds_at_most_a_few_push_streams() {
    let dir = tempfile::tempdir().unwrap();
    let (t, _) = tracker(&dir).await;
    let (token, _) = device(&t, "dev").await;
    let caller = t.api_caller(Some(&token)).unwrap();
    let streams: Vec<_> = (0..MAX_STREAMS_PER_DEVICE)
        .map(|_| Box::pin(t.push_events(caller.clone()).unwrap()))
        .collect();
    assert!(matches!(t.push_events(caller.clone()), Err(ApiError::TooMany(_))));
    drop(streams);
    assert!(t.push_events(caller).is_ok(), "closed streams free their slots");
}

#[tokio::test]
async fn a_lagging_subscriber_gets_a_resync_event() {
    let dir = tempfile::tempdir().unwrap();
    let (t, ih) = tracker(&dir).await;
    let (token, _) = device(&t, "dev").await;
    let mut stream = Box::pin(t.push_events(t.api_caller(Some(&token)).unwrap()).unwrap());
    for _ in 0..BUS_CAPACITY + 10 {
        t.push_release(&ih).await.unwrap();
    }
    let first = tokio::time::timeout(Duration::from_secs(5), stream.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first, PushItem::Resync { missed: 10 });
    let next = tokio::time::timeout(Duration::from_secs(5), stream.next())
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(next, PushItem::Release(ev) if ev.info_hash == ih));
}

#[tokio::test(flavor = "multi_thread")]
async fn push_over_http_refuses_a_fifth_stream_of_one_device() {
    let t = TestTracker::builder()
        .admin_token(ADMIN)
        .device_auth(DeviceAuth::Required)
        .origin_policy(OriginPolicy::default())
        .start()
        .await;
    let token = t.client().register_device("d1", "stable", "m1").await.unwrap();
    let http = reqwest::Client::new();
    let open = || {
        http.get(format!("{}/api/push", t.url()))
            .bearer_auth(&token)
            .header("accept", "text/event-stream")
            .send()
    };
    let mut held = Vec::new();
    for _ in 0..MAX_STREAMS_PER_DEVICE {
        let r = open().await.unwrap();
        assert_eq!(r.status(), 200);
        held.push(r);
    }
    assert_eq!(open().await.unwrap().status(), 429);
    drop(held);
    t.stop().await;
}
