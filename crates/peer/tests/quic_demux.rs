//! QUIC and STUN on one UDP socket (RFC 7983 §7, RFC 9443 §3): with our
//! endpoint settings ([`ota_peer::quic_identity::endpoint_config`]) a peer
//! never greases the QUIC bit (RFC 9287) towards the demultiplexed socket,
//! so not one of 1,500 QUIC packets lands in the STUN channel (with
//! quinn's defaults about 1 in 16 would, and be lost to quinn).

use std::sync::Arc;
use std::time::Duration;

use ota_peer::quic_identity::{client_config, endpoint_config, open_server_config, QuicIdentity, SERVER_NAME};
use ota_peer::udp_demux::DemuxSocket;

#[tokio::test]
async fn no_quic_packet_is_taken_for_stun() {
    let server_id = QuicIdentity::generate().unwrap();
    // The sender: a plain endpoint with quinn's default settings, which
    // greases whenever the receiver allows it.
    let server =
        quinn::Endpoint::server(open_server_config(&server_id).unwrap(), "127.0.0.1:0".parse().unwrap()).unwrap();
    let server_addr = server.local_addr().unwrap();
    // 1,500 writes of 1 KB, 1 ms apart: one packet each, so the kernel
    // does not coalesce them (GRO) and every packet's first byte is seen.
    const WRITES: usize = 1500;
    const SIZE: usize = WRITES * 1024;
    tokio::spawn(async move {
        let conn = server.accept().await.unwrap().await.unwrap();
        let mut send = conn.open_uni().await.unwrap();
        let data = [0x5au8; 1024];
        for _ in 0..WRITES {
            send.write_all(&data).await.unwrap();
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        send.finish().unwrap();
        let _ = send.stopped().await;
    });
    // The receiver: our endpoint on a demultiplexed socket.
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let (demux, mut stun) = DemuxSocket::new(udp).unwrap();
    let mut client = quinn::Endpoint::new_with_abstract_socket(
        endpoint_config(),
        None,
        demux as Arc<dyn quinn::AsyncUdpSocket>,
        Arc::new(quinn::TokioRuntime),
    )
    .unwrap();
    let client_id = QuicIdentity::generate().unwrap();
    client.set_default_client_config(client_config(&client_id, server_id.fingerprint()).unwrap());
    let conn = client.connect(server_addr, SERVER_NAME).unwrap().await.unwrap();
    let mut recv = conn.accept_uni().await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(30), recv.read_to_end(SIZE + 1))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.len(), SIZE);
    let mut misrouted = 0;
    while stun.try_recv().is_ok() {
        misrouted += 1;
    }
    assert_eq!(misrouted, 0, "QUIC packets handed to the STUN channel");
    println!("received {} datagrams", conn.stats().udp_rx.datagrams);
}
