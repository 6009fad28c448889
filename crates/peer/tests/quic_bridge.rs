//! The QUIC bridge on loopback: librqbit's SOCKS5 connection to a bridge
//! address becomes one QUIC stream to the other device, pinned both ways.
//! The tracker's rendezvous is replaced by [`ota_peer::one_host`]'s
//! in-process introducer, which does what the tracker does (answers the
//! target's introduction and hands the requester's to the target); the
//! real tracker path runs in the NAT lab's tests.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ota_peer::one_host::PairOptions;
use ota_peer::quic_bridge::QuicBridge;
use ota_proto::rendezvous::{bridge_address, CertFingerprint, Introduction, BRIDGE_PORT};
use ota_proto::InfoHash;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const IH: InfoHash = InfoHash([0x42; 20]);

async fn pair(listener: SocketAddr, pin: Option<CertFingerprint>, tell_b: bool) -> (Arc<QuicBridge>, Arc<QuicBridge>) {
    let options = PairOptions {
        pin,
        b_not_told: !tell_b,
    };
    ota_peer::one_host::pair(listener, options).await.unwrap()
}

async fn socks(
    bridge: &QuicBridge,
    target: SocketAddr,
) -> Result<tokio_socks::tcp::Socks5Stream<tokio::net::TcpStream>, tokio_socks::Error> {
    let (proxy, user, pass) = bridge.socks_auth();
    tokio_socks::tcp::Socks5Stream::connect_with_password(proxy, target, user, pass).await
}

/// An echo server standing in for librqbit's listener.
async fn echo() -> SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    addr
}

fn bridge_target() -> SocketAddr {
    SocketAddr::new(bridge_address(&IH, 3).into(), BRIDGE_PORT)
}

#[tokio::test]
async fn a_stream_to_a_bridge_address_reaches_the_other_side_over_pinned_quic() {
    let listener = echo().await;
    let (a, b) = pair(listener, None, true).await;
    let mut s = socks(&a, bridge_target())
        .await
        .expect("SOCKS5 CONNECT to the bridge address");
    let payload: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    s.write_all(&payload).await.unwrap();
    let mut back = vec![0u8; payload.len()];
    tokio::time::timeout(Duration::from_secs(10), s.read_exact(&mut back))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(back, payload);
    // A second stream reuses the connection.
    let mut s2 = socks(&a, bridge_target()).await.unwrap();
    s2.write_all(b"again").await.unwrap();
    let mut five = [0u8; 5];
    s2.read_exact(&mut five).await.unwrap();
    assert_eq!(&five, b"again");
    let (sa, sb) = (a.stats(), b.stats());
    assert_eq!((sa.dialed, sa.failed, sa.streams), (1, 0, 2), "{sa:?}");
    assert_eq!((sb.accepted, sb.streams), (1, 2), "{sb:?}");
    assert_eq!(sa.paths[0].via, b.local_udp().unwrap());
    assert_eq!(a.remote_of(bridge_target()), Some(b.local_udp().unwrap()));
    // Plain addresses are relayed over TCP.
    let mut plain = socks(&a, listener).await.unwrap();
    plain.write_all(b"tcp").await.unwrap();
    let mut three = [0u8; 3];
    plain.read_exact(&mut three).await.unwrap();
    assert_eq!(&three, b"tcp");
    assert_eq!(a.stats().tcp_relayed, 1);
    a.close().await;
    b.close().await;
}

/// Connection migration (issue 16) on loopback: the dialer moves its QUIC
/// endpoint to a new UDP socket in the middle of a stream; the stream goes
/// on over the same connection (no new dial, no new path), byte-exact, and
/// a STUN probe from the new socket learns its address.
#[tokio::test]
async fn a_stream_survives_the_dialers_rebind_on_the_same_connection() {
    let listener = echo().await;
    let (a, b) = pair(listener, None, true).await;
    let mut s = socks(&a, bridge_target()).await.unwrap();
    let chunk: Vec<u8> = (0..300_000u32).map(|i| (i % 253) as u8).collect();
    let mut back = vec![0u8; chunk.len()];
    s.write_all(&chunk).await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), s.read_exact(&mut back))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(back, chunk);
    let before = a.local_udp().unwrap();
    let switched = std::time::Instant::now();
    let (old, new) = a.rebind(before.ip()).expect("rebind to a new socket");
    assert_eq!(old, before);
    assert_ne!(new, old, "a new port");
    assert_eq!(a.local_udp().unwrap(), new);
    for round in 0..3u8 {
        let data: Vec<u8> = chunk.iter().map(|b| b.wrapping_add(round)).collect();
        s.write_all(&data).await.unwrap();
        tokio::time::timeout(Duration::from_secs(10), s.read_exact(&mut back))
            .await
            .expect("the stream goes on after the rebind")
            .unwrap();
        assert_eq!(back, data, "round {round}");
    }
    // The new network's reflexive address, learnt over STUN from the new
    // socket while the bridge goes on (a Binding responder on loopback).
    let stun = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let stun_addr = stun.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = [0u8; 1500];
        while let Ok((n, from)) = stun.recv_from(&mut buf).await {
            if let Some(reply) = ota_proto::stun::respond(&buf[..n], from).reply() {
                let _ = stun.send_to(&reply, from).await;
            }
        }
    });
    let servers = ota_peer::stun_probe::StunServers {
        primary: stun_addr,
        rfc5780: None,
    };
    let report = a.probe_nat(&servers, Duration::from_secs(2)).await;
    assert_eq!(report.reflexive, Some(new), "the probe went out of the new socket");
    s.write_all(&chunk).await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), s.read_exact(&mut back))
        .await
        .expect("the stream goes on after the probe")
        .unwrap();
    let (sa, sb) = (a.stats(), b.stats());
    assert_eq!((sa.dialed, sa.failed, sa.streams, sa.rebinds), (1, 0, 1, 1), "{sa:?}");
    assert_eq!(sb.accepted, 1, "no second connection: {sb:?}");
    assert_eq!(sa.paths.len(), 1);
    // The dialer's arrivals were recorded; a gap around the switch on
    // loopback, if any, is short.
    let gap = a.longest_receive_gap(switched, switched).unwrap_or_default();
    assert!(gap < Duration::from_secs(2), "{gap:?}");
    a.close().await;
    b.close().await;
}

/// The accepting side moves (issue 16): a QUIC client cannot follow its
/// server to a new address, so when the dialer hears the moved peer's new
/// introduction it closes that connection at once (librqbit's stream over
/// it ends), and the next CONNECT dials the new address. A punch from the
/// moved side towards a dialer that moved itself nudges the dialed
/// connection instead.
#[tokio::test]
async fn a_dialer_closes_and_dials_again_when_its_server_moves() {
    let listener = echo().await;
    let (a, b) = pair(listener, None, true).await;
    let mut s = socks(&a, bridge_target()).await.unwrap();
    s.write_all(b"before").await.unwrap();
    let mut six = [0u8; 6];
    s.read_exact(&mut six).await.unwrap();
    // B moves to another loopback address.
    let (_, new) = b.rebind("127.0.0.2".parse().unwrap()).unwrap();
    let moved = Introduction {
        id: 7,
        info_hash: IH,
        candidates: vec![new],
        fingerprint: b.fingerprint(),
        nat: None,
        origin: false,
    };
    // An introduction of another peer, or of B at the same IP, closes nothing.
    a.on_introduction(&Introduction {
        fingerprint: CertFingerprint([5; 32]),
        ..moved.clone()
    })
    .unwrap();
    assert_eq!(a.stats().closed_moved, 0);
    a.on_introduction(&moved).unwrap();
    assert_eq!(a.stats().closed_moved, 1, "{:?}", a.stats());
    let mut one = [0u8; 1];
    let ended = tokio::time::timeout(Duration::from_secs(5), s.read(&mut one))
        .await
        .expect("the old stream ends at once");
    assert!(matches!(ended, Ok(0) | Err(_)), "{ended:?}");
    let mut s2 = socks(&a, bridge_target()).await.expect("a new dial to the new address");
    s2.write_all(b"after").await.unwrap();
    let mut five = [0u8; 5];
    tokio::time::timeout(Duration::from_secs(10), s2.read_exact(&mut five))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&five, b"after");
    assert_eq!(a.stats().dialed, 2);
    assert_eq!(a.remote_of(bridge_target()), Some(new));

    // Now A moves; B punches towards A's new socket: A nudges its
    // connection to B, and the stream goes on.
    let (_, a_new) = a.rebind("127.0.0.3".parse().unwrap()).unwrap();
    b.on_introduction(&Introduction {
        id: 8,
        info_hash: IH,
        candidates: vec![a_new],
        fingerprint: a.fingerprint(),
        nat: None,
        origin: false,
    })
    .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while a.stats().nudges == 0 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(a.stats().nudges >= 1, "{:?}", a.stats());
    assert_eq!(b.stats().closed_moved, 0, "B accepted A's connection: nothing to close");
    s2.write_all(b"again").await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), s2.read_exact(&mut five))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&five, b"again");
    a.close().await;
    b.close().await;
}

#[tokio::test]
async fn a_wrong_pin_or_an_unintroduced_client_gets_no_stream() {
    let listener = echo().await;
    // A pins a certificate that B does not have.
    let (a, b) = pair(listener, Some(CertFingerprint([9; 32])), true).await;
    assert!(
        socks(&a, bridge_target()).await.is_err(),
        "the server's certificate is not the pinned one"
    );
    assert_eq!(a.stats().failed, 1);
    assert_eq!(b.stats().accepted, 0);
    // B was never told about A: it refuses A's client certificate.
    let (a2, b2) = pair(listener, None, false).await;
    let refused = match socks(&a2, bridge_target()).await {
        Err(_) => true,
        // With TLS 1.3 the client may finish before the server refuses its
        // certificate: then the stream dies at once.
        Ok(mut s) => {
            let _ = s.write_all(b"x").await;
            let mut one = [0u8; 1];
            !matches!(
                tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut one)).await,
                Ok(Ok(_))
            )
        }
    };
    assert!(refused);
    assert_eq!(b2.stats().accepted, 0);
    assert_eq!(b2.stats().streams, 0);
    for x in [a, b, a2, b2] {
        x.close().await;
    }
}

#[tokio::test]
async fn librqbit_downloads_a_package_through_the_bridge() {
    use ota_peer::session::{add_torrent, from_peers, PeerSession};
    let dir = tempfile::tempdir().unwrap();
    let seed_dir = dir.path().join("seed");
    std::fs::create_dir_all(&seed_dir).unwrap();
    let data: Vec<u8> = (0..(3 << 20) + 12_345u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let file = seed_dir.join("package.bin");
    std::fs::write(&file, &data).unwrap();
    let torrent = librqbit::create_torrent(
        &file,
        Default::default(),
        &librqbit::spawn_utils::BlockingSpawner::new(1),
    )
    .await
    .unwrap();
    let info_hash = InfoHash(torrent.info_hash().0);
    let bytes = torrent.as_bytes().unwrap().to_vec();

    let seeder_listen: SocketAddr = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap()
    };
    let mut seeder = PeerSession::listening(seeder_listen);
    seeder.trackers = false;
    let seeder = seeder.start(dir.path().join("s")).await.unwrap();
    add_torrent(&seeder, bytes.clone(), &seed_dir, Default::default())
        .await
        .unwrap();

    let (a, b) = pair(seeder_listen, None, true).await;
    let mut leecher = PeerSession::leecher();
    leecher.proxy_url = Some(a.proxy_url());
    let leecher = leecher.start(dir.path().join("l")).await.unwrap();
    let target = SocketAddr::new(bridge_address(&info_hash, 5).into(), BRIDGE_PORT);
    let out = dir.path().join("out");
    let handle = add_torrent(&leecher, bytes, &out, from_peers(vec![target]))
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(60), handle.wait_until_completed())
        .await
        .expect("completes within 60 s")
        .unwrap();
    assert_eq!(std::fs::read(out.join("package.bin")).unwrap(), data);
    assert_eq!(a.stats().dialed, 1);
    assert!(b.stats().streams >= 1);
    a.close().await;
    b.close().await;
}
