//! A fake BitTorrent peer for interoperability tests: a peer-wire listener on
//! 127.0.0.1 that the test announces to the tracker, so that a real client is
//! handed it, and that records the opening bytes of every connection (a BEP 3
//! handshake: 19, "BitTorrent protocol", 8 reserved bytes, info hash, peer
//! id). It answers nothing: each connection is read once and closed.
//!
//! ```no_run
//! # async fn example(ih: ota_proto::InfoHash) {
//! use std::time::Duration;
//! use ota_testkit::fake_peer::{check_handshake, FakePeer};
//!
//! let mut fake = FakePeer::start(1).await;
//! // ... announce fake.addr / fake.peer_id to the tracker, start a client ...
//! let h = fake.plaintext_handshake(Duration::from_secs(20)).await.unwrap();
//! check_handshake(&h, &ih, "-qB");
//! # }
//! ```

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use ota_proto::{InfoHash, PeerId};
use tokio::io::AsyncReadExt;

/// Length of a BEP 3 handshake, the bytes recorded per connection.
pub const HANDSHAKE_LEN: usize = 68;

/// Connections accepted before the listener stops (bounded, as every test
/// helper): the tracker's connectability dial, a client's encrypted first
/// try and its plaintext retry fit many times over.
const MAX_CONNECTIONS: usize = 16;

/// How long one connection may take to send its first [`HANDSHAKE_LEN`] bytes.
const READ_LIMIT: Duration = Duration::from_secs(5);

/// A listening fake peer; the listener stops when it is dropped.
pub struct FakePeer {
    /// Where it listens (127.0.0.1, a free port): the address to announce.
    pub addr: SocketAddr,
    /// The peer id to announce it with: `-FK0001-00000000000N`.
    pub peer_id: PeerId,
    handshakes: tokio::sync::mpsc::UnboundedReceiver<Vec<u8>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakePeer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakePeer {
    /// Listens on a free loopback port; `n` (0–9) tells fake peers apart in
    /// their peer ids.
    ///
    /// Panics when no port can be bound (tests only).
    pub async fn start(n: u8) -> FakePeer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a fake peer");
        let addr = listener.local_addr().expect("fake peer address");
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            for _ in 0..MAX_CONNECTIONS {
                let Ok((mut s, _)) = listener.accept().await else {
                    return;
                };
                let tx = tx.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; HANDSHAKE_LEN];
                    if let Ok(Ok(_)) = tokio::time::timeout(READ_LIMIT, s.read_exact(&mut buf)).await {
                        let _ = tx.send(buf);
                    }
                });
            }
        });
        let mut peer_id = *b"-FK0001-000000000000";
        peer_id[19] = b'0' + n % 10;
        FakePeer {
            addr,
            peer_id: PeerId(peer_id),
            handshakes: rx,
            task,
        }
    }

    /// The opening [`HANDSHAKE_LEN`] bytes of the next connection that sent
    /// that many, waiting at most `limit`; or a message naming the address.
    pub async fn handshake(&mut self, limit: Duration) -> Result<Vec<u8>, String> {
        match tokio::time::timeout(limit, self.handshakes.recv()).await {
            Ok(Some(h)) => Ok(h),
            _ => Err(format!(
                "no connection to the handed-out peer {} within {limit:?}",
                self.addr
            )),
        }
    }

    /// Like [`Self::handshake`], but skips openings that are not a
    /// plaintext BEP 3 handshake (a client trying message stream encryption
    /// first, as aria2 does, sends 96 bytes of a Diffie-Hellman key instead
    /// and retries in plaintext once this peer hangs up). Returns the first
    /// plaintext one within `limit`, or a message with how many others came.
    pub async fn plaintext_handshake(&mut self, limit: Duration) -> Result<Vec<u8>, String> {
        let end = Instant::now() + limit;
        let mut others = 0;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            match self.handshake(left).await {
                Ok(h) if is_plaintext_handshake(&h) => return Ok(h),
                Ok(_) => others += 1,
                Err(e) => return Err(format!("{e} ({others} connections without a plaintext handshake)")),
            }
        }
    }
}

/// Whether `h` starts like a plaintext BEP 3 handshake (19, "BitTorrent
/// protocol").
pub fn is_plaintext_handshake(h: &[u8]) -> bool {
    h.len() >= 20 && h[0] == 19 && &h[1..20] == b"BitTorrent protocol"
}

/// Asserts that `h` is a plaintext BEP 3 handshake for `ih` from a peer id
/// starting with `tag` (e.g. `-qB` for qBittorrent, `-LT` for libtorrent).
///
/// Panics with what differs.
pub fn check_handshake(h: &[u8], ih: &InfoHash, tag: &str) {
    assert!(h.len() >= HANDSHAKE_LEN, "short handshake: {h:02x?}");
    assert_eq!(
        h[0],
        19,
        "plaintext BitTorrent handshake expected, got {:02x?}",
        &h[..20]
    );
    assert_eq!(&h[1..20], b"BitTorrent protocol");
    assert_eq!(&h[28..48], ih.as_ref(), "handshake for another info hash");
    assert!(
        h[48..].starts_with(tag.as_bytes()),
        "peer id {:?} is not {tag}",
        String::from_utf8_lossy(&h[48..])
    );
}
