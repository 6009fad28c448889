//! Direct paths at the tracker, through [`Tracker`]'s methods with
//! connectability checks on: a device's public address is handed out only
//! after the tracker dialled it (a real TCP handshake on loopback), and
//! devices behind one public address get each other's LAN addresses from
//! their `PUT /api/paths` reports. Every dial goes to 127.0.0.0/8.

mod common;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use common::{device, request, settings, tracker_with_release};
use ota_proto::announce::AnnounceEvent;
use ota_proto::direct_paths::{DirectPaths, Reach};
use ota_tracker::connectability::ConnectabilityConfig;
use ota_tracker::service::ApiError;
use ota_tracker::{Caller, DeviceAuth, TrackerSettings};

/// The peer-wire port of test peer `n` ([`common::request`]).
fn port(n: u8) -> u16 {
    7000 + n as u16
}

/// The hand-out of one announce, as addresses.
fn peers(
    t: &ota_tracker::Tracker,
    ih: ota_proto::InfoHash,
    n: u8,
    left: u64,
    caller: &Caller,
    from: IpAddr,
) -> Vec<SocketAddr> {
    t.announce(request(ih, n, left, AnnounceEvent::None), caller, from)
        .unwrap()
        .peers
        .iter()
        .map(|p| p.addr)
        .collect()
}

#[tokio::test]
async fn unreachable_addresses_are_not_handed_out_and_lan_neighbours_are() {
    let dir = tempfile::tempdir().unwrap();
    let (t, ih) = tracker_with_release(
        &dir,
        TrackerSettings {
            connectability: ConnectabilityConfig {
                timeout: Duration::from_millis(500),
                ..Default::default()
            },
            ..settings(DeviceAuth::Required)
        },
    )
    .await;
    let home: IpAddr = "127.0.0.2".parse().unwrap();
    let other: IpAddr = "127.0.0.1".parse().unwrap();
    // Device 1 listens (reachable from outside); devices 2 and 3 sit behind
    // one router (public address `home`) that forwards nothing.
    let _listener = std::net::TcpListener::bind(SocketAddr::new(other, port(1))).unwrap();
    let (_, d1) = device(&t, "d1").await;
    let (_, d2) = device(&t, "d2").await;
    let (_, d3) = device(&t, "d3").await;
    let (_, d4) = device(&t, "d4").await;
    let lan = |n: u8| -> SocketAddr { SocketAddr::from(([192, 168, 1, n], port(n))) };
    for (caller, n) in [(&d2, 2), (&d3, 3)] {
        t.report_paths(
            caller,
            DirectPaths {
                lan: vec![lan(n)],
                ..Default::default()
            },
        )
        .unwrap();
    }
    assert_eq!(peers(&t, ih, 1, 10, &d1, other), Vec::<SocketAddr>::new());
    assert_eq!(peers(&t, ih, 2, 10, &d2, home), Vec::<SocketAddr>::new());
    t.connectability().settle(Duration::from_secs(5)).await;
    // Device 3 gets its neighbour at its LAN address and device 1, which
    // the tracker reached; device 2's public address is closed.
    let got = peers(&t, ih, 3, 10, &d3, home);
    assert_eq!(got, vec![lan(2), SocketAddr::new(other, port(1))]);
    t.connectability().settle(Duration::from_secs(5)).await;
    // Device 4 elsewhere gets device 1 only: 2 and 3 are reachable only on their LAN.
    assert_eq!(peers(&t, ih, 4, 10, &d4, other), vec![SocketAddr::new(other, port(1))]);
    let view = t.peers(&ih).unwrap();
    let reach = |n: u8| view.iter().find(|p| p.peer_id.0 == [n; 20]).unwrap().reach;
    assert_eq!(reach(1), Some(Reach::Public));
    assert_eq!(reach(2), Some(Reach::LanOnly));
    let p3 = view.iter().find(|p| p.peer_id.0 == [3; 20]).unwrap();
    assert_eq!(p3.lan.as_deref(), Some("192.168.1.3:7003"));
    // Reports are checked, and only devices make them.
    let bad = DirectPaths {
        lan: vec!["8.8.8.8:1".parse().unwrap()],
        ..Default::default()
    };
    assert!(matches!(t.report_paths(&d1, bad), Err(ApiError::BadRequest(m)) if m.contains("not a LAN address")));
    assert!(matches!(
        t.report_paths(&Caller::Admin, DirectPaths::default()),
        Err(ApiError::Unauthorized(_))
    ));
}

#[tokio::test]
async fn with_checks_off_every_address_is_handed_out() {
    let dir = tempfile::tempdir().unwrap();
    let (t, ih) = tracker_with_release(&dir, settings(DeviceAuth::Off)).await;
    let ip: IpAddr = "127.0.0.3".parse().unwrap();
    assert!(peers(&t, ih, 1, 10, &Caller::Anonymous, ip).is_empty());
    assert_eq!(
        peers(&t, ih, 2, 10, &Caller::Anonymous, ip),
        vec![SocketAddr::new(ip, port(1))]
    );
    let view = t.peers(&ih).unwrap();
    assert!(view.iter().all(|p| p.reach == Some(Reach::Public)));
}
