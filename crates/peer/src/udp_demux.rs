//! One UDP peer socket for QUIC and STUN: the socket quinn reads, with
//! STUN datagrams taken out by their first byte (RFC 7983 §7, RFC 9443 §3:
//! 0–3 is STUN, 64–127 and 192–255 QUIC) and handed to a channel, and a
//! way to send raw datagrams (hole-punching packets, STUN requests) from
//! the same 5-tuple quinn uses. Keeping one socket keeps one NAT mapping:
//! the server-reflexive address STUN learnt is the address peers reach
//! the QUIC endpoint at.

use std::fmt;
use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use ota_proto::stun::{classify_datagram, DatagramKind};
use quinn::udp::{RecvMeta, Transmit};
use quinn::{AsyncUdpSocket, Runtime, TokioRuntime, UdpPoller};
use tokio::sync::mpsc;

/// STUN datagrams the channel holds before new ones are dropped (a
/// flood from the network cannot grow memory).
pub const STUN_QUEUE: usize = 64;

/// A STUN datagram received on the peer socket: its source and bytes.
pub type StunDatagram = (SocketAddr, Vec<u8>);

/// The demultiplexing socket (see the module docs). Give it to quinn with
/// `Endpoint::new_with_abstract_socket`.
pub struct DemuxSocket {
    inner: Arc<dyn AsyncUdpSocket>,
    stun: mpsc::Sender<StunDatagram>,
}

impl fmt::Debug for DemuxSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DemuxSocket")
            .field("local", &self.inner.local_addr().ok())
            .finish()
    }
}

impl DemuxSocket {
    /// Wraps `socket` (bound, any state of blocking: quinn makes it
    /// non-blocking). Returns the socket and the receiver of its STUN
    /// datagrams. Errors: the socket cannot be registered with tokio.
    pub fn new(socket: std::net::UdpSocket) -> io::Result<(Arc<DemuxSocket>, mpsc::Receiver<StunDatagram>)> {
        let inner = TokioRuntime.wrap_udp_socket(socket)?;
        let (tx, rx) = mpsc::channel(STUN_QUEUE);
        Ok((Arc::new(DemuxSocket { inner, stun: tx }), rx))
    }

    /// A demultiplexer on a new bound `socket` whose STUN datagrams go to
    /// the same channel as this one's: what the QUIC endpoint is rebound
    /// to after a network change (`quinn::Endpoint::rebind_abstract`).
    /// Errors: the socket cannot be registered with tokio.
    pub fn rebound(&self, socket: std::net::UdpSocket) -> io::Result<Arc<DemuxSocket>> {
        Ok(Arc::new(DemuxSocket {
            inner: TokioRuntime.wrap_udp_socket(socket)?,
            stun: self.stun.clone(),
        }))
    }

    /// Sends one datagram `bytes` to `to` from the peer socket, waiting
    /// while the socket is not writable. Errors: the kernel's.
    pub async fn send_raw(&self, to: SocketAddr, bytes: &[u8]) -> io::Result<()> {
        let mut poller = self.inner.clone().create_io_poller();
        let transmit = Transmit {
            destination: to,
            ecn: None,
            contents: bytes,
            segment_size: None,
            src_ip: None,
        };
        loop {
            match self.inner.try_send(&transmit) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    std::future::poll_fn(|cx| poller.as_mut().poll_writable(cx)).await?
                }
                other => return other,
            }
        }
    }
}

impl AsyncUdpSocket for DemuxSocket {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
        self.inner.clone().create_io_poller()
    }

    fn try_send(&self, transmit: &Transmit) -> io::Result<()> {
        self.inner.try_send(transmit)
    }

    fn poll_recv(
        &self,
        cx: &mut Context,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        loop {
            let n = match self.inner.poll_recv(cx, bufs, meta) {
                Poll::Ready(Ok(n)) => n,
                other => return other,
            };
            // Keep QUIC (and unknown) datagrams in place, in order; hand
            // STUN ones (never GRO-coalesced: one datagram per entry) out.
            let mut kept = 0;
            for i in 0..n {
                let m = meta[i];
                let data = &bufs[i][..m.len];
                if m.stride == m.len && classify_datagram(data.first().copied()) == DatagramKind::Stun {
                    // A full queue drops the datagram: STUN retransmits.
                    let _ = self.stun.try_send((m.addr, data.to_vec()));
                    continue;
                }
                if kept != i {
                    bufs.swap(kept, i);
                    meta[kept] = m;
                }
                kept += 1;
            }
            if kept > 0 {
                return Poll::Ready(Ok(kept));
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    fn max_transmit_segments(&self) -> usize {
        self.inner.max_transmit_segments()
    }

    fn max_receive_segments(&self) -> usize {
        self.inner.max_receive_segments()
    }

    fn may_fragment(&self) -> bool {
        self.inner.may_fragment()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn stun_goes_to_the_channel_and_quic_to_quinn() {
        let std_sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = std_sock.local_addr().unwrap();
        let (demux, mut stun) = DemuxSocket::new(std_sock).unwrap();
        let other = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        other.send_to(&[0x00, 0x01, 0, 0], addr).await.unwrap(); // STUN Binding request type
        other.send_to(&[0xc3, 9, 9], addr).await.unwrap(); // a QUIC long header
        let mut buf = [0u8; 1500];
        let mut bufs = [IoSliceMut::new(&mut buf)];
        let mut meta = [RecvMeta::default()];
        let n = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            std::future::poll_fn(|cx| demux.poll_recv(cx, &mut bufs, &mut meta)),
        )
        .await
        .unwrap()
        .unwrap();
        assert_eq!(n, 1);
        assert_eq!(&bufs[0][..meta[0].len], &[0xc3, 9, 9]);
        // Reading for quinn took the STUN datagram off to the channel.
        let (from, bytes) = stun.try_recv().expect("the STUN datagram went to the channel");
        assert_eq!((from, bytes), (other.local_addr().unwrap(), vec![0x00, 0x01, 0, 0]));
        demux
            .send_raw(other.local_addr().unwrap(), b"\x00\x11punch")
            .await
            .unwrap();
        let mut got = [0u8; 64];
        let (len, src) = other.recv_from(&mut got).await.unwrap();
        assert_eq!((&got[..len], src), (&b"\x00\x11punch"[..], addr));

        // A rebound socket hands its STUN datagrams to the same channel.
        let moved = demux
            .rebound(std::net::UdpSocket::bind("127.0.0.1:0").unwrap())
            .unwrap();
        let moved_addr = moved.local_addr().unwrap();
        assert_ne!(moved_addr, addr);
        other.send_to(&[0x01, 0x01, 0, 0], moved_addr).await.unwrap(); // a Binding success
        other.send_to(&[0x40, 1], moved_addr).await.unwrap(); // a QUIC short header
        let mut meta = [RecvMeta::default()];
        let mut buf = [0u8; 1500];
        let mut bufs = [IoSliceMut::new(&mut buf)];
        let n = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            std::future::poll_fn(|cx| moved.poll_recv(cx, &mut bufs, &mut meta)),
        )
        .await
        .unwrap()
        .unwrap();
        assert_eq!((n, &bufs[0][..meta[0].len]), (1, &[0x40, 1][..]));
        let (from, bytes) = stun.try_recv().expect("the rebound socket's STUN datagram");
        assert_eq!((from, bytes), (other.local_addr().unwrap(), vec![0x01, 0x01, 0, 0]));
    }
}
