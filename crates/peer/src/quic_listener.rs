//! The origin seeder's QUIC listener: a quinn endpoint (server only) on a
//! UDP port beside the seeder's BitTorrent TCP port, presenting the
//! seeder's self-signed certificate ([`QuicIdentity`], its fingerprint
//! published through the tracker) and asking no client certificate. Each
//! bidirectional stream a device opens is spliced to librqbit's own TCP
//! listener on loopback, so librqbit serves the peer wire (BEP 3) over
//! QUIC without knowing it.
//!
//! Devices are always the QUIC client towards the origin: in QUIC only the
//! client may move (RFC 9000 §9), so a device's connection to the origin
//! survives a change of its network (connection migration).
//!
//! The listener remembers, for each loopback address librqbit sees, the
//! device's real UDP address ([`QuicListener::remote_of`]), so the egress
//! ledger records the device, not `127.0.0.1`.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use ota_proto::rendezvous::CertFingerprint;
use tokio::task::JoinSet;

use crate::quic_bridge::{splice_incoming, Remotes};
use crate::quic_identity::{open_server_config, QuicIdentity};

/// Bound on the TCP dial of librqbit's listener for one stream.
pub const LISTENER_DIAL_TIMEOUT: Duration = Duration::from_secs(5);

/// Counters of a [`QuicListener`].
#[derive(Debug, Default, Clone, Copy, serde::Serialize)]
pub struct ListenerStats {
    /// QUIC connections accepted (finished handshakes).
    pub accepted: u64,
    /// Streams spliced to librqbit's listener.
    pub streams: u64,
}

/// See the module docs. Stops on [`QuicListener::close`].
pub struct QuicListener {
    endpoint: quinn::Endpoint,
    fingerprint: CertFingerprint,
    remotes: Arc<Mutex<Remotes>>,
    accepted: Arc<AtomicU64>,
    streams: Arc<AtomicU64>,
    tasks: Mutex<JoinSet<()>>,
}

impl std::fmt::Debug for QuicListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QuicListener")
            .field("udp", &self.endpoint.local_addr().ok())
            .field("fingerprint", &self.fingerprint)
            .finish()
    }
}

impl QuicListener {
    /// Binds UDP `listen` and serves QUIC there, splicing streams to
    /// librqbit's TCP listener `peer_listener` (an unspecified IP is
    /// dialed on loopback). Errors: the UDP port is taken, the
    /// certificate is refused.
    pub fn start(
        listen: SocketAddr,
        identity: &QuicIdentity,
        peer_listener: SocketAddr,
    ) -> anyhow::Result<Arc<QuicListener>> {
        let socket = std::net::UdpSocket::bind(listen).with_context(|| format!("cannot bind UDP {listen}"))?;
        let endpoint = quinn::Endpoint::new(
            crate::quic_identity::endpoint_config(),
            Some(open_server_config(identity)?),
            socket,
            Arc::new(quinn::TokioRuntime),
        )
        .context("cannot start the QUIC endpoint")?;
        let listener = Arc::new(QuicListener {
            endpoint: endpoint.clone(),
            fingerprint: identity.fingerprint(),
            remotes: Arc::default(),
            accepted: Arc::default(),
            streams: Arc::default(),
            tasks: Mutex::new(JoinSet::new()),
        });
        let (remotes, accepted, streams) = (
            listener.remotes.clone(),
            listener.accepted.clone(),
            listener.streams.clone(),
        );
        listener
            .tasks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .spawn(async move {
                let mut conns = JoinSet::new();
                while let Some(incoming) = endpoint.accept().await {
                    while conns.try_join_next().is_some() {}
                    let (remotes, accepted, streams) = (remotes.clone(), accepted.clone(), streams.clone());
                    conns.spawn(async move {
                        let remote = incoming.remote_address();
                        let conn = match incoming.await {
                            Ok(c) => c,
                            Err(e) => {
                                tracing::debug!(%remote, error = %e, "QUIC handshake failed");
                                return;
                            }
                        };
                        accepted.fetch_add(1, Ordering::Relaxed);
                        tracing::debug!(%remote, "QUIC connection accepted");
                        splice_incoming(conn, peer_listener, LISTENER_DIAL_TIMEOUT, None, move |seen, remote| {
                            streams.fetch_add(1, Ordering::Relaxed);
                            remotes.lock().unwrap_or_else(|e| e.into_inner()).remember(seen, remote);
                        })
                        .await;
                    });
                }
            });
        tracing::info!(udp = ?listener.local_addr().ok(), fingerprint = %listener.fingerprint, "QUIC listener up");
        Ok(listener)
    }

    /// The UDP address it listens on.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.endpoint.local_addr()
    }

    /// The certificate pin devices check (SHA-256 of the certificate).
    pub fn fingerprint(&self) -> CertFingerprint {
        self.fingerprint
    }

    /// The device's UDP address behind `seen`, the loopback address
    /// librqbit has for a peer that came over QUIC; `None` for peers that
    /// came over TCP.
    pub fn remote_of(&self, seen: SocketAddr) -> Option<SocketAddr> {
        self.remotes.lock().unwrap_or_else(|e| e.into_inner()).get(&seen)
    }

    /// Connections accepted and streams spliced so far.
    pub fn stats(&self) -> ListenerStats {
        ListenerStats {
            accepted: self.accepted.load(Ordering::Relaxed),
            streams: self.streams.load(Ordering::Relaxed),
        }
    }

    /// Closes every connection and ends the tasks.
    pub async fn close(&self) {
        self.endpoint.close(0u32.into(), b"closing");
        let mut tasks = std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|e| e.into_inner()));
        tasks.shutdown().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quic_identity::{client_config, SERVER_NAME};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A stream opened by a client that pins the listener's certificate
    /// reaches the TCP listener behind it, both ways, and the listener maps
    /// the loopback address the TCP side saw to the client's UDP address.
    #[tokio::test]
    async fn streams_reach_the_tcp_listener_and_are_told_apart() {
        let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let tcp_addr = tcp.local_addr().unwrap();
        let server_identity = QuicIdentity::generate().unwrap();
        let listener = QuicListener::start("127.0.0.1:0".parse().unwrap(), &server_identity, tcp_addr).unwrap();
        let client_identity = QuicIdentity::generate().unwrap();
        let client = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
        let config = client_config(&client_identity, listener.fingerprint()).unwrap();
        let conn = client
            .connect_with(config, listener.local_addr().unwrap(), SERVER_NAME)
            .unwrap()
            .await
            .unwrap();
        let (mut send, mut recv) = conn.open_bi().await.unwrap();
        send.write_all(b"ping").await.unwrap();
        let (mut seen_tcp, seen) = tokio::time::timeout(Duration::from_secs(5), tcp.accept())
            .await
            .unwrap()
            .unwrap();
        let mut buf = [0u8; 4];
        seen_tcp.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"ping");
        seen_tcp.write_all(b"pong").await.unwrap();
        recv.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"pong");
        assert_eq!(listener.remote_of(seen), Some(client.local_addr().unwrap()));
        assert_eq!(listener.remote_of(tcp_addr), None);
        assert_eq!(listener.stats().accepted, 1);
        assert_eq!(listener.stats().streams, 1);

        // A client pinning another certificate is refused.
        let wrong = client_config(&client_identity, client_identity.fingerprint()).unwrap();
        let refused = client
            .connect_with(wrong, listener.local_addr().unwrap(), SERVER_NAME)
            .unwrap()
            .await;
        assert!(refused.is_err(), "a wrong pin must fail the handshake");
        listener.close().await;
    }
}
