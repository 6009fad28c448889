//! The STUN probe: from the device's own UDP peer socket (the 5-tuple QUIC
//! will use later), learn its server-reflexive address (RFC 8489 Binding)
//! and its NAT's mapping and filtering behaviour (RFC 5780 behaviour
//! discovery, named in RFC 4787 terms by [`ota_proto::nat_kind`]).
//!
//! [`probe`] sends Binding requests encoded by `stun-rs` (never by hand)
//! and classifies the answers with [`ota_proto::nat_kind::classify`]:
//!
//! 1. concurrently: a Binding request to the primary server (the tracker's
//!    responder: server A) and to the RFC 5780 server (coturn: server B,
//!    RFC 5780 §4.3 test I, which also gives OTHER-ADDRESS), and B's two
//!    filtering tests (RFC 5780 §4.4 tests II and III: CHANGE-REQUEST with
//!    "change IP" and "change port", then with "change port" only). These
//!    run before the device has sent anything to B's other IP address, so
//!    no pinhole of its own lets the changed answers through;
//! 2. then, if B gave OTHER-ADDRESS: RFC 5780 §4.3 tests II (B's other IP
//!    address, primary port) and III (OTHER-ADDRESS itself).
//!
//! Each request is retransmitted per RFC 8489 §6.2.1 but bounded: sent at
//! 0, 200 and 600 ms and given up 1.4 s after the first send (RTO 200 ms,
//! doubled, 3 tries), and everything stops at the caller's timeout.
//! Answers are matched by transaction id; every datagram that is not STUN
//! by its first byte (RFC 7983 §7, [`ota_proto::stun::classify_datagram`])
//! or does not match an outstanding transaction is ignored. The caller
//! must not read the socket while the probe runs (the probe would take
//! other readers' datagrams, and they its answers).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use ota_proto::nat_kind::{classify, NatReport, Observations};
use ota_proto::stun::{classify_datagram, DatagramKind, MAX_DATAGRAM};
use serde::{Deserialize, Serialize};
use stun_rs::attributes::discovery::{ChangeRequest, ChangeRequestFlags, OtherAddress, ResponseOrigin};
use stun_rs::attributes::stun::XorMappedAddress;
use stun_rs::methods::BINDING;
use stun_rs::{MessageClass, MessageDecoderBuilder, MessageEncoderBuilder, StunMessageBuilder, TransactionId};
use tokio::net::UdpSocket;
use tokio::time::Instant;

/// The STUN servers a device probes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StunServers {
    /// A plain RFC 8489 Binding responder: the tracker's (server A).
    pub primary: SocketAddr,
    /// An RFC 5780 server on another IP address (coturn: server B): it
    /// answers CHANGE-REQUEST and reports OTHER-ADDRESS. Without it the
    /// probe reports the reflexive address only (`mapping: None`).
    pub rfc5780: Option<SocketAddr>,
}

/// First retransmission timeout (RFC 8489 §6.2.1 RTO, lowered from 500 ms:
/// these servers are one round trip away), doubled after each try.
const RTO: Duration = Duration::from_millis(200);
/// Sends per request (RFC 8489's Rc is 7; bounded here).
const TRIES: u32 = 3;

/// Probes the NAT in front of `socket` with `servers` (see the module docs)
/// and returns what it learnt; never fails and never takes longer than
/// `timeout` in total (1.5 s to 3 s is plenty inside one region). Lost
/// answers and send errors become `None` observations. Logs each answer at
/// debug and the result at info (`tracing`).
pub async fn probe(socket: &UdpSocket, servers: &StunServers, timeout: Duration) -> NatReport {
    let local = socket.local_addr().ok().and_then(|b| local_address(b, servers.primary));
    probe_with(socket, local, servers, timeout).await
}

/// Where a probe sends its requests and reads the answers: the bare UDP
/// peer socket before the QUIC transport takes it, or the QUIC bridge's
/// demultiplexed socket after a network change
/// ([`crate::quic_bridge::QuicBridge::probe_nat`]).
pub trait StunTransport {
    /// Sends `datagram` to `to`.
    fn send_to(&self, datagram: &[u8], to: SocketAddr)
        -> impl std::future::Future<Output = std::io::Result<()>> + Send;
    /// The next datagram that may be STUN: its length in `buf` and source.
    fn recv_from(
        &self,
        buf: &mut [u8],
    ) -> impl std::future::Future<Output = std::io::Result<(usize, SocketAddr)>> + Send;
}

impl StunTransport for UdpSocket {
    async fn send_to(&self, datagram: &[u8], to: SocketAddr) -> std::io::Result<()> {
        UdpSocket::send_to(self, datagram, to).await.map(|_| ())
    }

    async fn recv_from(&self, buf: &mut [u8]) -> std::io::Result<(usize, SocketAddr)> {
        UdpSocket::recv_from(self, buf).await
    }
}

/// [`probe`] over any [`StunTransport`] whose local address (with a
/// concrete IP) is `local`, if known.
pub async fn probe_with(
    socket: &impl StunTransport,
    local: Option<SocketAddr>,
    servers: &StunServers,
    timeout: Duration,
) -> NatReport {
    let deadline = Instant::now() + timeout;
    let mut obs = Observations::default();

    let mut round = vec![Transaction::new(servers.primary, Change::None)];
    if let Some(b) = servers.rfc5780 {
        round.push(Transaction::new(b, Change::None));
        round.push(Transaction::new(b, Change::IpAndPort));
        round.push(Transaction::new(b, Change::Port));
    }
    run(socket, &mut round, deadline).await;
    obs.server_a = round[0].mapped();
    let mut other = None;
    if let Some(b) = servers.rfc5780 {
        let test1 = round[1].answer.as_ref().filter(|a| a.success);
        obs.server_b = test1.and_then(|a| a.mapped);
        // Without OTHER-ADDRESS, B is no RFC 5780 server (RFC 5780 §4.4):
        // its silence to CHANGE-REQUEST proves nothing.
        other = test1
            .and_then(|a| a.other)
            .filter(|o| o.ip() != b.ip() && o.port() != b.port());
        if let Some(other) = other {
            obs.change_ip_and_port = round[2].changed_answer(other);
            obs.change_port = round[3].changed_answer(SocketAddr::new(b.ip(), other.port()));
        }
    }
    if let (Some(b), Some(other)) = (servers.rfc5780, other) {
        let mut round = vec![
            Transaction::new(SocketAddr::new(other.ip(), b.port()), Change::None),
            Transaction::new(other, Change::None),
        ];
        run(socket, &mut round, deadline).await;
        obs.b_alternate_address = round[0].mapped();
        obs.b_alternate_address_and_port = round[1].mapped();
    }
    let report = match local {
        Some(local) => classify(local, &obs),
        // No local address to compare with: classify against an address no
        // server can report, so a NAT-free host shows up as a cone.
        None => classify(SocketAddr::new(IpAddr::from([0, 0, 0, 0]), 0), &obs),
    };
    tracing::info!(
        local = ?local,
        reflexive = ?report.reflexive,
        mapping = ?report.mapping,
        filtering = ?report.filtering,
        kind = %report.kind,
        observations = ?obs,
        "STUN probe"
    );
    report
}

/// A socket's local address `bound` with a concrete IP: when it is bound
/// to the unspecified address, the source address the kernel picks towards
/// `towards` (a connected throwaway socket; nothing is sent).
pub fn local_address(bound: SocketAddr, towards: SocketAddr) -> Option<SocketAddr> {
    if !bound.ip().is_unspecified() {
        return Some(bound);
    }
    let any = SocketAddr::new(bound.ip(), 0);
    let probe = std::net::UdpSocket::bind(any).ok()?;
    probe.connect(towards).ok()?;
    Some(SocketAddr::new(probe.local_addr().ok()?.ip(), bound.port()))
}

/// The RFC 5780 §7.2 CHANGE-REQUEST flags of one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Change {
    /// No CHANGE-REQUEST attribute: a plain RFC 8489 Binding request.
    None,
    /// "change port": answer from the same IP address, the other port.
    Port,
    /// "change IP" and "change port": answer from OTHER-ADDRESS.
    IpAndPort,
}

/// A decoded Binding response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Answer {
    /// Where it came from.
    from: SocketAddr,
    /// A success response (else an error response, e.g. 420 to CHANGE-REQUEST).
    success: bool,
    /// XOR-MAPPED-ADDRESS (RFC 8489 §14.2): the reflexive address.
    mapped: Option<SocketAddr>,
    /// OTHER-ADDRESS (RFC 5780 §7.4).
    other: Option<SocketAddr>,
    /// RESPONSE-ORIGIN (RFC 5780 §7.3).
    origin: Option<SocketAddr>,
}

/// One outstanding Binding request and its retransmission state.
#[derive(Debug)]
struct Transaction {
    id: TransactionId,
    to: SocketAddr,
    change: Change,
    request: Vec<u8>,
    sent: u32,
    /// When to send next, or, after the last try, when to give up.
    next: Option<Instant>,
    answer: Option<Answer>,
}

impl Transaction {
    fn new(to: SocketAddr, change: Change) -> Transaction {
        let id = TransactionId::default();
        Transaction {
            id,
            to,
            change,
            request: encode_request(id, change),
            sent: 0,
            next: None,
            answer: None,
        }
    }

    /// Still waiting: no answer and not given up.
    fn pending(&self) -> bool {
        self.answer.is_none() && (self.sent == 0 || self.next.is_some())
    }

    /// The reflexive address of a success answer.
    fn mapped(&self) -> Option<SocketAddr> {
        self.answer.filter(|a| a.success).and_then(|a| a.mapped)
    }

    /// The filtering verdict of a CHANGE-REQUEST: `Some(true)` if answered
    /// from `expected` (the changed address), `Some(false)` if never
    /// answered, `None` if answered otherwise (an error response, or from
    /// an address that shows the server did not change it).
    fn changed_answer(&self, expected: SocketAddr) -> Option<bool> {
        match self.answer {
            None => Some(false),
            Some(a) if a.success && a.from == expected && a.origin.is_none_or(|o| o == expected) => Some(true),
            Some(a) => {
                tracing::debug!(?a, %expected, change = ?self.change, "CHANGE-REQUEST answered from an unexpected address");
                None
            }
        }
    }
}

/// Runs `transactions` on `socket` until each is answered or given up, or
/// until `deadline`.
async fn run(socket: &impl StunTransport, transactions: &mut [Transaction], deadline: Instant) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        let now = Instant::now();
        if now >= deadline {
            return;
        }
        for t in transactions.iter_mut().filter(|t| t.pending()) {
            if t.next.is_some_and(|n| n > now) {
                continue;
            }
            if t.sent == TRIES {
                tracing::debug!(to = %t.to, change = ?t.change, "STUN: no answer");
                t.next = None;
                continue;
            }
            if let Err(e) = socket.send_to(&t.request, t.to).await {
                tracing::debug!(to = %t.to, error = %e, "STUN: send failed");
            }
            t.sent += 1;
            // 200, 400, 800 ms after the 1st, 2nd, 3rd send.
            t.next = Some(now + RTO * 2u32.pow(t.sent - 1));
        }
        let Some(wake) = transactions.iter().filter(|t| t.pending()).filter_map(|t| t.next).min() else {
            return;
        };
        let (n, from) = match tokio::time::timeout_at(wake.min(deadline), socket.recv_from(&mut buf)).await {
            Err(_) => continue,
            Ok(Ok(got)) => got,
            Ok(Err(e)) => {
                // E.g. an ICMP error reported on the socket: keep waiting,
                // without spinning.
                tracing::debug!(error = %e, "STUN: receive failed");
                tokio::time::sleep_until((Instant::now() + Duration::from_millis(10)).min(deadline)).await;
                continue;
            }
        };
        let datagram = &buf[..n];
        if classify_datagram(datagram.first().copied()) != DatagramKind::Stun {
            tracing::trace!(%from, len = n, "STUN probe: ignored a non-STUN datagram");
            continue;
        }
        let Some((id, answer)) = decode_response(datagram, from) else {
            tracing::trace!(%from, len = n, "STUN probe: ignored an undecodable or non-Binding-response datagram");
            continue;
        };
        match transactions.iter_mut().find(|t| t.id == id && t.answer.is_none()) {
            Some(t) => {
                tracing::debug!(to = %t.to, change = ?t.change, ?answer, "STUN answer");
                t.answer = Some(answer);
            }
            None => tracing::trace!(%from, "STUN probe: ignored an answer to no outstanding transaction"),
        }
    }
}

/// Encodes a Binding request (RFC 8489 §5) with transaction id `id` and,
/// unless `change` is [`Change::None`], CHANGE-REQUEST (RFC 5780 §7.2).
fn encode_request(id: TransactionId, change: Change) -> Vec<u8> {
    let builder = StunMessageBuilder::new(BINDING, MessageClass::Request).with_transaction_id(id);
    let msg = match change {
        Change::None => builder.build(),
        Change::Port => builder
            .with_attribute(ChangeRequest::new(Some(ChangeRequestFlags::ChangePort.into())))
            .build(),
        Change::IpAndPort => builder
            .with_attribute(ChangeRequest::new(Some(
                ChangeRequestFlags::ChangeIp | ChangeRequestFlags::ChangePort,
            )))
            .build(),
    };
    let mut buf = [0u8; 64];
    let n = MessageEncoderBuilder::default()
        .build()
        .encode(&mut buf, &msg)
        .expect("a Binding request with at most CHANGE-REQUEST fits in 64 bytes");
    buf[..n].to_vec()
}

/// Decodes a Binding success or error response received from `from`; its
/// transaction id and contents. `None` for anything else (requests,
/// indications, other methods, bytes that do not decode).
fn decode_response(datagram: &[u8], from: SocketAddr) -> Option<(TransactionId, Answer)> {
    let (msg, _) = MessageDecoderBuilder::default().build().decode(datagram).ok()?;
    let success = match msg.class() {
        MessageClass::SuccessResponse => true,
        MessageClass::ErrorResponse => false,
        _ => return None,
    };
    if msg.method() != BINDING {
        return None;
    }
    let mapped = msg
        .get::<XorMappedAddress>()
        .and_then(|a| a.as_xor_mapped_address().ok())
        .map(|a| *a.socket_address());
    let other = msg
        .get::<OtherAddress>()
        .and_then(|a| a.as_other_address().ok())
        .map(|a| *a.socket_address());
    let origin = msg
        .get::<ResponseOrigin>()
        .and_then(|a| a.as_response_origin().ok())
        .map(|a| *a.socket_address());
    let answer = Answer {
        from,
        success,
        mapped,
        other,
        origin,
    };
    Some((*msg.transaction_id(), answer))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    /// A Binding responder on loopback built on the tracker's codec
    /// (`ota_proto::stun::respond`). Before each answer it sends `noise`
    /// datagrams to the client; it ignores the first `drop_first` requests.
    async fn responder(noise: Vec<Vec<u8>>, drop_first: usize) -> (SocketAddr, Arc<AtomicUsize>) {
        let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = sock.local_addr().unwrap();
        let seen = Arc::new(AtomicUsize::new(0));
        let count = seen.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 1500];
            while let Ok((n, from)) = sock.recv_from(&mut buf).await {
                if count.fetch_add(1, Ordering::SeqCst) < drop_first {
                    continue;
                }
                for d in &noise {
                    sock.send_to(d, from).await.unwrap();
                }
                if let Some(reply) = ota_proto::stun::respond(&buf[..n], from).reply() {
                    sock.send_to(&reply, from).await.unwrap();
                }
            }
        });
        (addr, seen)
    }

    fn servers(primary: SocketAddr) -> StunServers {
        StunServers { primary, rfc5780: None }
    }

    #[tokio::test]
    async fn primary_only_gives_the_reflexive_address_through_noise() {
        // A STUN success response to another transaction, a QUIC short
        // header, a QUIC Initial, an RTP-looking byte, a truncated STUN
        // header, an empty datagram: all ignored.
        let stray = {
            let other = ota_proto::stun::binding_request(TransactionId::default());
            ota_proto::stun::respond(&other, "192.0.2.1:1".parse().unwrap())
                .reply()
                .unwrap()
        };
        let noise = vec![
            stray,
            vec![0x40; 30],
            vec![0xc3; 1200],
            vec![0x80; 40],
            vec![0x01, 0x01, 0x00],
            vec![],
        ];
        let (server, _) = responder(noise, 0).await;
        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let started = std::time::Instant::now();
        let report = probe(&client, &servers(server), Duration::from_secs(2)).await;
        assert!(started.elapsed() < Duration::from_secs(1), "{:?}", started.elapsed());
        assert_eq!(report.reflexive, Some(client.local_addr().unwrap()));
        assert_eq!(report.mapping, None, "one server cannot tell the mapping");
        assert_eq!(report.kind, ota_proto::nat_kind::NatKind::Open);
    }

    #[tokio::test]
    async fn a_lost_request_is_retransmitted() {
        let (server, seen) = responder(vec![], 1).await;
        let client = UdpSocket::bind("0.0.0.0:0").await.unwrap();
        let report = probe(&client, &servers(server), Duration::from_secs(2)).await;
        let port = client.local_addr().unwrap().port();
        assert_eq!(report.reflexive, Some(SocketAddr::from(([127, 0, 0, 1], port))));
        assert_eq!(
            report.kind,
            ota_proto::nat_kind::NatKind::Open,
            "0.0.0.0 resolved to 127.0.0.1"
        );
        assert_eq!(seen.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn silence_ends_at_the_timeout() {
        // A bound socket that never answers, as primary and as RFC 5780 server.
        let silent = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = silent.local_addr().unwrap();
        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let started = std::time::Instant::now();
        let s = StunServers {
            primary: addr,
            rfc5780: Some(addr),
        };
        let report = probe(&client, &s, Duration::from_millis(500)).await;
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(450) && took < Duration::from_millis(800),
            "{took:?}"
        );
        assert_eq!(report.reflexive, None);
        assert_eq!(report.kind, ota_proto::nat_kind::NatKind::Unknown);
        // Without a timeout cap: three tries, then given up after 1.4 s.
        let started = std::time::Instant::now();
        let report = probe(&client, &servers(addr), Duration::from_secs(10)).await;
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(1350) && took < Duration::from_millis(2000),
            "{took:?}"
        );
        assert_eq!(report.reflexive, None);
    }

    #[test]
    fn requests_round_trip_through_stun_rs() {
        let id = TransactionId::default();
        for change in [Change::None, Change::Port, Change::IpAndPort] {
            let bytes = encode_request(id, change);
            let (msg, _) = MessageDecoderBuilder::default().build().decode(&bytes).unwrap();
            assert_eq!(
                (msg.class(), msg.method(), msg.transaction_id()),
                (MessageClass::Request, BINDING, &id)
            );
            let flags = msg
                .get::<ChangeRequest>()
                .map(|a| a.as_change_request().unwrap().flags());
            match change {
                Change::None => assert!(flags.is_none()),
                Change::Port => assert_eq!(flags.unwrap(), ChangeRequestFlags::ChangePort),
                Change::IpAndPort => {
                    assert_eq!(
                        flags.unwrap(),
                        ChangeRequestFlags::ChangeIp | ChangeRequestFlags::ChangePort
                    )
                }
            }
        }
        // The tracker's responder answers the plain request; decode_response reads it.
        let from: SocketAddr = "198.51.100.2:3478".parse().unwrap();
        let source: SocketAddr = "203.0.113.9:40000".parse().unwrap();
        let reply = ota_proto::stun::respond(&encode_request(id, Change::None), source)
            .reply()
            .unwrap();
        let (got, answer) = decode_response(&reply, from).unwrap();
        assert_eq!(got, id);
        assert_eq!(
            answer,
            Answer {
                from,
                success: true,
                mapped: Some(source),
                other: None,
                origin: None
            }
        );
        // A request is no answer.
        assert!(decode_response(&encode_request(id, Change::Port), from).is_none());
    }

    #[test]
    fn rfc5780_attributes_are_decoded() {
        let id = TransactionId::default();
        let (mapped, other, origin): (SocketAddr, SocketAddr, SocketAddr) = (
            "203.0.113.9:40000".parse().unwrap(),
            "198.51.100.3:3479".parse().unwrap(),
            "198.51.100.2:3478".parse().unwrap(),
        );
        let msg = StunMessageBuilder::new(BINDING, MessageClass::SuccessResponse)
            .with_transaction_id(id)
            .with_attribute(XorMappedAddress::from(mapped))
            .with_attribute(OtherAddress::from(other))
            .with_attribute(ResponseOrigin::from(origin))
            .build();
        let mut buf = [0u8; 128];
        let n = MessageEncoderBuilder::default().build().encode(&mut buf, &msg).unwrap();
        let (got, answer) = decode_response(&buf[..n], origin).unwrap();
        assert_eq!(got, id);
        assert_eq!(
            (answer.mapped, answer.other, answer.origin),
            (Some(mapped), Some(other), Some(origin))
        );
    }
}
