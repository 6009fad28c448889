//! The tracker side of the hole-punching rendezvous: devices that run QUIC
//! and that the tracker could not dial are handed out at bridge addresses
//! to devices that run QUIC too, and `POST /api/introductions` answers the
//! target's introduction and pushes the caller's to it (SSE `introduce`).
//! Through [`Tracker`]'s methods (errors, rate limits with a test clock)
//! and once over HTTP with [`ota_client`]. Connectability checks are on;
//! every dial goes to 127.0.0.0/8, where nothing listens on the announced
//! ports, so every device counts as unreachable.

mod common;

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use common::{device, request, settings, tracker_with_release};
use futures::StreamExt;
use ota_proto::announce::AnnounceEvent;
use ota_proto::direct_paths::DirectPaths;
use ota_proto::nat_kind::{NatKind, NatReport};
use ota_proto::rendezvous::{
    bridge_address, bridge_slot, CertFingerprint, Introduction, IntroductionRequest, QuicPath, BRIDGE_PORT,
};
use ota_proto::InfoHash;
use ota_tracker::connectability::ConnectabilityConfig;
use ota_tracker::service::{ApiError, PushItem};
use ota_tracker::{Caller, DeviceAuth, Tracker, TrackerSettings};

/// The server-reflexive address device `n` reports: 11.0.0.`n`, port 50000 + n.
fn reflexive(n: u8) -> SocketAddr {
    SocketAddr::from(([11, 0, 0, n], 50_000 + n as u16))
}

/// A report of device `n`: its reflexive address and, with `quic`, a QUIC
/// endpoint with fingerprint `[n; 32]`.
fn paths(n: u8, quic: bool) -> DirectPaths {
    DirectPaths {
        nat: Some(NatReport {
            reflexive: Some(reflexive(n)),
            mapping: None,
            filtering: None,
            kind: NatKind::Unknown,
        }),
        quic: quic.then_some(QuicPath {
            fingerprint: CertFingerprint([n; 32]),
        }),
        ..Default::default()
    }
}

/// The loopback address device `n` announces from.
fn home(n: u8) -> IpAddr {
    IpAddr::from([127, 0, 0, 10 + n])
}

/// The hand-out of one announce of peer `n` (left 10) from [`home`]`(n)`.
fn announce(t: &Tracker, ih: InfoHash, n: u8, caller: &Caller) -> Vec<SocketAddr> {
    t.announce(request(ih, n, 10, AnnounceEvent::None), caller, home(n))
        .unwrap()
        .peers
        .iter()
        .map(|p| p.addr)
        .collect()
}

/// The bridge addresses among `peers`.
fn bridges(peers: &[SocketAddr]) -> Vec<Ipv6Addr> {
    peers
        .iter()
        .filter_map(|a| match a {
            SocketAddr::V6(v6) if bridge_slot(a.ip()).is_some() => {
                assert_eq!(v6.port(), BRIDGE_PORT);
                Some(*v6.ip())
            }
            _ => None,
        })
        .collect()
}

fn checks_on() -> TrackerSettings {
    TrackerSettings {
        connectability: ConnectabilityConfig {
            timeout: Duration::from_millis(500),
            ..Default::default()
        },
        ..settings(DeviceAuth::Required)
    }
}

#[tokio::test]
async fn unreachable_quic_devices_are_bridged_and_introduced() {
    let dir = tempfile::tempdir().unwrap();
    let (t, ih) = tracker_with_release(&dir, checks_on()).await;
    // 1 and 3: targets with QUIC and a push stream; 2: the caller; 4: no
    // QUIC; 5: QUIC but no push stream; 6: QUIC, not in the swarm.
    let mut callers = Vec::new();
    for n in 1..=6u8 {
        let (_, c) = device(&t, &format!("d{n}")).await;
        t.report_paths(&c, paths(n, n != 4)).unwrap();
        callers.push(c);
    }
    let c = |n: u8| &callers[n as usize - 1];
    let mut stream1 = Box::pin(t.push_events(c(1).clone()).unwrap());
    let _stream3 = t.push_events(c(3).clone()).unwrap();
    let _stream4 = t.push_events(c(4).clone()).unwrap();
    for n in [1, 3, 4, 5] {
        announce(&t, ih, n, c(n));
    }
    t.connectability().settle(Duration::from_secs(5)).await;
    // Nobody is reachable: device 2 gets devices 1 and 3 at bridge addresses
    // (slots 0 and 1), not 4 (no QUIC) nor 5 (no push stream).
    let got = announce(&t, ih, 2, c(2));
    let mut got_bridges = bridges(&got);
    got_bridges.sort();
    assert_eq!(
        got_bridges,
        vec![bridge_address(&ih, 0), bridge_address(&ih, 1)],
        "{got:?}"
    );
    assert_eq!(got.len(), 2, "nothing else: {got:?}");
    // Device 4 has no QUIC: no bridge addresses for it.
    assert!(bridges(&announce(&t, ih, 4, c(4))).is_empty());

    let req = |slot: u32| IntroductionRequest {
        info_hash: ih,
        peer: bridge_address(&ih, slot),
    };
    let t0 = Instant::now();
    let intro = t.introduce_at(c(2), &req(0), t0).unwrap();
    assert_eq!(intro.info_hash, ih);
    assert_eq!(intro.fingerprint, CertFingerprint([1; 32]));
    assert_eq!(intro.nat, Some(NatKind::Unknown));
    // The loopback address the tracker saw is no candidate (a device refuses it).
    assert_eq!(intro.candidates, vec![reflexive(1)]);
    assert_eq!(intro.check(), Ok(()));
    let pushed = tokio::time::timeout(Duration::from_secs(5), stream1.next())
        .await
        .expect("the target's stream gets the introduction")
        .unwrap();
    assert_eq!(
        pushed,
        PushItem::Introduce(Introduction {
            id: intro.id,
            info_hash: ih,
            candidates: vec![reflexive(2)],
            fingerprint: CertFingerprint([2; 32]),
            nat: Some(NatKind::Unknown),
            origin: false,
        })
    );

    // Errors.
    let status = |r: Result<Introduction, ApiError>| match r {
        Ok(i) => panic!("introduced: {i:?}"),
        Err(ApiError::BadRequest(_)) => 400,
        Err(ApiError::Unauthorized(_)) => 401,
        Err(ApiError::Forbidden(_)) => 403,
        Err(ApiError::NotFound(_)) => 404,
        Err(ApiError::Conflict(_)) => 409,
        Err(ApiError::TooMany(_)) => 429,
        Err(ApiError::Database(e)) => panic!("{e}"),
    };
    let later = t0 + Duration::from_secs(10);
    assert_eq!(status(t.introduce_at(c(2), &req(99), later)), 404, "unknown slot");
    assert_eq!(status(t.introduce_at(c(6), &req(0), later)), 403, "not in the swarm");
    assert_eq!(
        status(t.introduce_at(c(2), &req(2), later)),
        409,
        "device 4 has no QUIC"
    );
    assert_eq!(
        status(t.introduce_at(c(2), &req(3), later)),
        409,
        "device 5 has no push stream"
    );
    assert_eq!(status(t.introduce_at(c(1), &req(0), later)), 400, "itself");
    assert_eq!(status(t.introduce_at(&Caller::Admin, &req(0), later)), 401);
    let not_bridge = IntroductionRequest {
        info_hash: ih,
        peer: "2001:db8::1".parse().unwrap(),
    };
    assert_eq!(status(t.introduce_at(c(2), &not_bridge, later)), 400);
    let other_swarm = IntroductionRequest {
        info_hash: ih,
        peer: bridge_address(&InfoHash([0xee; 20]), 0),
    };
    assert_eq!(status(t.introduce_at(c(2), &other_swarm, later)), 400);
    let unknown_release = IntroductionRequest {
        info_hash: InfoHash([0xee; 20]),
        peer: bridge_address(&InfoHash([0xee; 20]), 0),
    };
    assert_eq!(status(t.introduce_at(c(2), &unknown_release, later)), 404);

    // Rate limits: the same pair again within 2 s.
    assert_eq!(
        status(t.introduce_at(c(2), &req(0), t0 + Duration::from_millis(1500))),
        429
    );
    // 30 introductions per 60 s: 1 made at t0, 29 more alternating between
    // the two targets every second; the 31st is refused, until the first
    // leaves the window.
    for i in 1..30u64 {
        let slot = (i % 2) as u32;
        let r = t.introduce_at(c(2), &req(slot), t0 + Duration::from_secs(1 + i));
        assert!(r.is_ok(), "introduction {i}: {:?}", r.err());
    }
    assert_eq!(status(t.introduce_at(c(2), &req(1), t0 + Duration::from_secs(40))), 429);
    assert!(t.introduce_at(c(2), &req(1), t0 + Duration::from_secs(60)).is_ok());
    // Ids count up across the tracker; device 1's stream got each of its own.
    let mut ids = Vec::new();
    while let Ok(Some(PushItem::Introduce(i))) = tokio::time::timeout(Duration::from_millis(200), stream1.next()).await
    {
        ids.push(i.id);
    }
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
    assert!(!ids.is_empty() && ids.iter().all(|id| *id > intro.id));
}

/// The next introduction on a push stream within 300 ms, if any.
async fn next_introduction<S: futures::Stream<Item = PushItem> + Unpin>(s: &mut S) -> Option<Introduction> {
    match tokio::time::timeout(Duration::from_millis(300), s.next()).await {
        Ok(Some(PushItem::Introduce(i))) => Some(i),
        _ => None,
    }
}

/// A device that moves (its direct-paths report brings a new reflexive
/// address, issue 16): each device it was introduced to gets a new
/// introduction with the new candidates over its push stream at once; an
/// unchanged report and a device never introduced push nothing.
#[tokio::test]
async fn a_moved_device_is_introduced_again_to_its_peers() {
    let dir = tempfile::tempdir().unwrap();
    let (t, ih) = tracker_with_release(&dir, checks_on()).await;
    let mut callers = Vec::new();
    for n in 1..=3u8 {
        let (_, c) = device(&t, &format!("d{n}")).await;
        t.report_paths(&c, paths(n, true)).unwrap();
        callers.push(c);
    }
    let c = |n: u8| &callers[n as usize - 1];
    let mut stream1 = Box::pin(t.push_events(c(1).clone()).unwrap());
    let mut stream2 = Box::pin(t.push_events(c(2).clone()).unwrap());
    let mut stream3 = Box::pin(t.push_events(c(3).clone()).unwrap());
    for n in 1..=3 {
        announce(&t, ih, n, c(n));
    }
    t.connectability().settle(Duration::from_secs(5)).await;
    announce(&t, ih, 2, c(2));
    // Device 2 asks for device 1 (slot 0); device 1 hears of it.
    let req = IntroductionRequest {
        info_hash: ih,
        peer: bridge_address(&ih, 0),
    };
    let first = t.introduce_at(c(2), &req, Instant::now()).unwrap();
    assert_eq!(first.fingerprint, CertFingerprint([1; 32]));
    assert_eq!(
        next_introduction(&mut stream1).await.map(|i| i.candidates),
        Some(vec![reflexive(2)])
    );

    // The same report again moves nothing.
    t.report_paths(c(2), paths(2, true)).unwrap();
    assert_eq!(next_introduction(&mut stream1).await, None, "unchanged paths");

    // Device 2 moves: a new reflexive address (another router).
    let moved = SocketAddr::from(([12, 0, 0, 2], 50_777));
    let mut p2 = paths(2, true);
    p2.nat.as_mut().unwrap().reflexive = Some(moved);
    t.report_paths(c(2), p2).unwrap();
    let again = next_introduction(&mut stream1)
        .await
        .expect("device 1 hears where device 2 went");
    assert_eq!(again.candidates, vec![moved]);
    assert_eq!(again.fingerprint, CertFingerprint([2; 32]));
    assert_eq!(again.info_hash, ih);
    assert!(again.id > first.id, "a new introduction number");
    assert_eq!(again.check(), Ok(()));
    assert_eq!(
        next_introduction(&mut stream3).await,
        None,
        "device 3 was never introduced"
    );
    assert_eq!(next_introduction(&mut stream2).await, None, "nothing back to the mover");

    // The other direction: device 1 moves, device 2 is told.
    let mut p1 = paths(1, true);
    p1.nat.as_mut().unwrap().reflexive = Some(SocketAddr::from(([13, 0, 0, 1], 50_001)));
    t.report_paths(c(1), p1).unwrap();
    let to2 = next_introduction(&mut stream2)
        .await
        .expect("device 2 hears where device 1 went");
    assert_eq!(to2.candidates, vec![SocketAddr::from(([13, 0, 0, 1], 50_001))]);
    assert_eq!(next_introduction(&mut stream3).await, None);
}

/// The origin announces its QUIC listener (`quic_port`, `quic_pin`): a QUIC
/// device gets the origin at its bridge address and an introduction to the
/// listener (no push: the origin accepts any device), a device without
/// QUIC keeps its TCP address, the release lists both addresses, and the
/// same parameters from a device, an origin on loopback or a stopped origin
/// change nothing.
#[tokio::test]
async fn a_quic_origin_is_handed_out_at_its_bridge_address_and_introduced() {
    let dir = tempfile::tempdir().unwrap();
    let (t, ih) = tracker_with_release(&dir, checks_on()).await;
    let pin = CertFingerprint([9; 32]);
    let origin_ip = IpAddr::from([11, 0, 0, 100]);
    let mut origin = request(ih, 100, 0, AnnounceEvent::Started);
    origin.origin_quic = Some((6900, pin));
    t.announce(origin.clone(), &Caller::Origin, origin_ip).unwrap();
    let origin_tcp = SocketAddr::new(origin_ip, 7100);
    let origin_udp = SocketAddr::new(origin_ip, 6900);
    assert_eq!(t.origin_quic(origin_tcp), Some((origin_udp, pin)));

    let (_, quic_dev) = device(&t, "d2").await;
    t.report_paths(&quic_dev, paths(2, true)).unwrap();
    let (_, tcp_dev) = device(&t, "d4").await;
    t.report_paths(&tcp_dev, paths(4, false)).unwrap();
    let got = announce(&t, ih, 2, &quic_dev);
    assert_eq!(bridges(&got), vec![bridge_address(&ih, 0)], "{got:?}");
    assert!(!got.contains(&origin_tcp), "not both addresses: {got:?}");

    let intro = t
        .introduce(
            &quic_dev,
            &IntroductionRequest {
                info_hash: ih,
                peer: bridge_address(&ih, 0),
            },
        )
        .unwrap();
    assert_eq!(intro.candidates, vec![origin_udp]);
    assert_eq!(intro.fingerprint, pin);
    assert_eq!(intro.nat, Some(NatKind::Open));
    assert!(intro.origin);
    assert_eq!(intro.check(), Ok(()));

    let listed = t.release(&Caller::Admin, &ih).await.unwrap().origin_peers;
    let bridge = SocketAddr::new(IpAddr::V6(bridge_address(&ih, 0)), BRIDGE_PORT);
    assert_eq!(listed, vec![origin_tcp.to_string(), bridge.to_string()]);

    // A device without QUIC that gets the origin gets it over TCP.
    let mut leecher = request(ih, 4, 10, AnnounceEvent::Started);
    leecher.numwant = 50;
    let got = t.announce(leecher, &tcp_dev, home(4)).unwrap().peers;
    assert!(
        bridges(&got.iter().map(|p| p.addr).collect::<Vec<_>>()).is_empty(),
        "{got:?}"
    );

    // The parameters from a device change nothing.
    let mut forged = request(ih, 2, 10, AnnounceEvent::None);
    forged.origin_quic = Some((6901, CertFingerprint([7; 32])));
    let public = IpAddr::from([11, 0, 0, 2]);
    t.announce(forged, &quic_dev, public).unwrap();
    assert_eq!(t.origin_quic(SocketAddr::new(public, 7002)), None);
    assert_eq!(t.origin_quic(origin_tcp), Some((origin_udp, pin)));

    // An origin on loopback is no QUIC candidate; a stopped one is forgotten.
    let mut local = request(ih, 101, 0, AnnounceEvent::Started);
    local.origin_quic = Some((6902, pin));
    t.announce(local, &Caller::Origin, IpAddr::from([127, 0, 0, 1]))
        .unwrap();
    assert_eq!(t.origin_quic(SocketAddr::from(([127, 0, 0, 1], 7101))), None);
    origin.event = AnnounceEvent::Stopped;
    t.announce(origin, &Caller::Origin, origin_ip).unwrap();
    assert_eq!(t.origin_quic(origin_tcp), None);
}

#[tokio::test]
async fn introductions_over_http() {
    let tracker = ota_testkit::tracker::TestTracker::builder()
        .device_auth(DeviceAuth::Required)
        .connectability(ConnectabilityConfig {
            timeout: Duration::from_millis(500),
            ..Default::default()
        })
        .start()
        .await;
    let ih = common::register_release(&tracker, "r.bin").await;
    let target = tracker.device_client("target", "stable", "m1").await;
    let caller = tracker.device_client("caller", "stable", "m1").await;
    target.report_paths(&paths(1, true)).await.unwrap();
    caller.report_paths(&paths(2, true)).await.unwrap();
    let mut pushes = target.subscribe().await.unwrap();
    for _ in 0..100 {
        if tracker.client().subscribers().await.unwrap() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let params = |n: u8| ota_client::AnnounceParams {
        info_hash: ih,
        peer_id: ota_proto::PeerId([n; 20]),
        port: 7300 + n as u16,
        uploaded: 0,
        downloaded: 0,
        left: 10,
        event: AnnounceEvent::Started,
        device: None,
    };
    target.announce(&params(1)).await.unwrap();
    let (_, peers) = caller.announce(&params(2)).await.unwrap();
    // In `peers6` (BEP 7), decoded with the rest.
    assert_eq!(bridges(&peers), vec![bridge_address(&ih, 0)], "{peers:?}");
    let req = IntroductionRequest {
        info_hash: ih,
        peer: bridge_address(&ih, 0),
    };
    let intro = caller.introduce(&req).await.unwrap();
    assert_eq!(intro.fingerprint, CertFingerprint([1; 32]));
    assert_eq!(intro.candidates, vec![reflexive(1)]);
    let pushed = tokio::time::timeout(Duration::from_secs(5), pushes.next())
        .await
        .expect("the introduction is pushed")
        .unwrap()
        .unwrap();
    match pushed {
        ota_client::PushMessage::Introduce(i) => {
            assert_eq!(i.id, intro.id);
            assert_eq!(i.fingerprint, CertFingerprint([2; 32]));
            assert_eq!(i.candidates, vec![reflexive(2)]);
        }
        other => panic!("{other:?}"),
    }
    let e = format!("{:#}", caller.introduce(&req).await.unwrap_err());
    assert!(e.contains("429"), "{e}");
    let not_bridge = IntroductionRequest {
        peer: "2001:db8::1".parse().unwrap(),
        ..req
    };
    let e = format!("{:#}", caller.introduce(&not_bridge).await.unwrap_err());
    assert!(e.contains("400"), "{e}");
    let e = format!("{:#}", tracker.anonymous_client().introduce(&req).await.unwrap_err());
    assert!(e.contains("401"), "{e}");
    tracker.stop().await;
}
