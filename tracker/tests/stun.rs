//! The STUN binding responder on loopback: a stun-rs client gets its own
//! address back, garbage is never answered, and Debian's coturn client
//! (`turnutils_stunclient`, package coturn) reads the mapped address.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ota_proto::stun::binding_request;
use stun_rs::attributes::stun::XorMappedAddress;
use stun_rs::{MessageClass, MessageDecoderBuilder, TransactionId};
use tokio::net::UdpSocket;

/// Starts the responder on an ephemeral loopback port; the task ends with the test's runtime.
async fn responder() -> SocketAddr {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    tokio::spawn(ota_tracker::stun::serve(Arc::new(socket)));
    addr
}

/// Waits at most `wait` for one datagram.
async fn recv(socket: &UdpSocket, wait: Duration) -> Option<Vec<u8>> {
    let mut buf = [0u8; 1500];
    match tokio::time::timeout(wait, socket.recv(&mut buf)).await {
        Ok(Ok(n)) => Some(buf[..n].to_vec()),
        _ => None,
    }
}

#[tokio::test]
async fn a_stun_rs_client_gets_its_own_address_back() {
    let server = responder().await;
    let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    client.connect(server).await.unwrap();
    let id = TransactionId::default();
    client.send(&binding_request(id)).await.unwrap();
    let reply = recv(&client, Duration::from_secs(5)).await.expect("a binding response");
    let (msg, _) = MessageDecoderBuilder::default().build().decode(&reply).unwrap();
    assert_eq!(msg.class(), MessageClass::SuccessResponse);
    assert_eq!(msg.transaction_id(), &id);
    let mapped = msg.get::<XorMappedAddress>().unwrap().as_xor_mapped_address().unwrap();
    assert_eq!(*mapped.socket_address(), client.local_addr().unwrap());
}

#[tokio::test]
async fn garbage_is_never_answered_and_the_responder_keeps_going() {
    let server = responder().await;
    let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    client.connect(server).await.unwrap();
    let mut x: u64 = 99;
    for i in 0..300u32 {
        let len = (i as usize * 7) % 200;
        let mut d: Vec<u8> = (0..len)
            .map(|_| {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                (x >> 33) as u8
            })
            .collect();
        if i % 3 == 0 && d.len() >= 20 {
            // A STUN header with a length past the datagram: malformed.
            d[..8].copy_from_slice(&[0x00, 0x01, 0xff, 0xfc, 0x21, 0x12, 0xa4, 0x42]);
        }
        client.send(&d).await.unwrap();
    }
    assert_eq!(
        recv(&client, Duration::from_millis(300)).await,
        None,
        "garbage answered"
    );
    let id = TransactionId::default();
    client.send(&binding_request(id)).await.unwrap();
    let reply = recv(&client, Duration::from_secs(5)).await.expect("still answering");
    assert_eq!(&reply[8..20], id.as_bytes());
}

/// Debian's coturn client against our responder logic on 127.0.0.1: the
/// address it prints is the source the server saw. CI installs coturn
/// (`.ci/run`); the test fails with a clear message when it is missing.
#[tokio::test]
async fn coturn_stunclient_reads_the_mapped_address() {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let port = socket.local_addr().unwrap().port();
    // The server side records each request's source, then answers it with
    // the same pure function `serve` uses.
    let server = tokio::spawn(async move {
        let mut sources = Vec::new();
        let mut buf = [0u8; 2048];
        for _ in 0..16 {
            let Ok(Ok((n, from))) = tokio::time::timeout(Duration::from_secs(20), socket.recv_from(&mut buf)).await
            else {
                break;
            };
            if let Some(reply) = ota_proto::stun::respond(&buf[..n], from).reply() {
                sources.push(from);
                socket.send_to(&reply, from).await.unwrap();
            }
            if !sources.is_empty() {
                break;
            }
        }
        sources
    });
    let out = tokio::time::timeout(
        Duration::from_secs(20),
        tokio::process::Command::new("turnutils_stunclient")
            .args(["-p", &port.to_string(), "127.0.0.1"])
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("turnutils_stunclient finished within 20 s")
    .expect("turnutils_stunclient runs (apt-get install coturn)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "turnutils_stunclient failed: {text}");
    let sources = server.await.unwrap();
    assert_eq!(sources.len(), 1, "one binding request answered; client said: {text}");
    // It prints "UDP reflexive addr: 127.0.0.1:40123".
    let line = text
        .lines()
        .find(|l| l.contains("UDP reflexive addr:"))
        .unwrap_or_else(|| panic!("no reflexive address in: {text}"));
    let mapped: SocketAddr = line.rsplit("addr:").next().unwrap().trim().parse().unwrap();
    assert_eq!(mapped, sources[0], "client output: {text}");
}

#[tokio::test]
async fn a_flooding_source_is_rate_limited() {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let server = socket.local_addr().unwrap();
    let limits = ota_tracker::stun::StunLimits {
        per_second: 1,
        burst: 3,
        max_sources: 100,
    };
    tokio::spawn(ota_tracker::stun::serve_with(Arc::new(socket), limits));
    let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    client.connect(server).await.unwrap();
    for _ in 0..50 {
        client.send(&binding_request(TransactionId::default())).await.unwrap();
    }
    let mut replies = 0;
    while recv(&client, Duration::from_millis(300)).await.is_some() {
        replies += 1;
    }
    assert!(
        (3..=4).contains(&replies),
        "{replies} replies to 50 requests in a burst"
    );
}
