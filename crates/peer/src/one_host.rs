//! Two QUIC bridges on one host's loopback, introduced to each other the
//! way the tracker would (the requester gets the target's
//! [`Introduction`], the target hears the requester's): for tests and
//! benchmarks of the bridge without a tracker or a NAT. Devices never use
//! it (loopback candidates are refused outside
//! [`BridgeSettings::loopback_candidates`]).

use std::net::{Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;
use ota_proto::rendezvous::{CertFingerprint, Introduction};
use ota_proto::InfoHash;

use crate::quic_bridge::{BridgeSettings, Introducer, QuicBridge};
use crate::quic_identity::QuicIdentity;

/// Answers every introduction with `answer` (its candidate the current
/// UDP address of `target`, when set, so the answer follows a rebind),
/// first telling `requester`'s target about the requester (when set).
struct Introduce {
    requester: Mutex<Option<(Introduction, Arc<QuicBridge>)>>,
    answer: Introduction,
    target: Option<Arc<QuicBridge>>,
}

impl Introducer for Introduce {
    fn introduce(&self, _peer: Ipv6Addr) -> BoxFuture<'static, anyhow::Result<Introduction>> {
        let told = match self.requester.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
            Some((mine, target)) => target.on_introduction(mine),
            None => Ok(()),
        };
        let mut answer = self.answer.clone();
        if let Some(udp) = self.target.as_ref().and_then(|t| t.local_udp().ok()) {
            answer.candidates = vec![udp];
        }
        Box::pin(async move { told.map(|()| answer) })
    }
}

fn introduction(candidates: Vec<SocketAddr>, fingerprint: CertFingerprint) -> Introduction {
    Introduction {
        id: 1,
        info_hash: InfoHash([0; 20]),
        candidates,
        fingerprint,
        nat: None,
        origin: false,
    }
}

/// Bridge settings for one host: `listener` behind the bridge, loopback
/// candidates allowed.
pub fn settings(listener: SocketAddr) -> BridgeSettings {
    BridgeSettings {
        loopback_candidates: true,
        ..BridgeSettings::new(listener)
    }
}

/// How [`pair`] introduces the two bridges.
#[derive(Debug, Clone, Copy, Default)]
pub struct PairOptions {
    /// The pin A gets for B instead of B's real fingerprint (a wrong pin).
    pub pin: Option<CertFingerprint>,
    /// Do not tell B about A (B then refuses A's certificate).
    pub b_not_told: bool,
}

/// Bridge A (the dialer) and bridge B (in front of `listener`, the
/// accepting side), both on `127.0.0.1` UDP sockets; A's introductions
/// answer with B's candidates and pin and tell B about A (see
/// [`PairOptions`]). Errors: a bridge cannot start.
pub async fn pair(listener: SocketAddr, options: PairOptions) -> anyhow::Result<(Arc<QuicBridge>, Arc<QuicBridge>)> {
    let udp = || std::net::UdpSocket::bind("127.0.0.1:0");
    let id_b = Arc::new(QuicIdentity::generate()?);
    let nobody = Arc::new(Introduce {
        requester: Mutex::new(None),
        answer: introduction(vec![SocketAddr::from(([127, 0, 0, 1], 9))], CertFingerprint([0; 32])),
        target: None,
    });
    let b = QuicBridge::start(udp()?, id_b.clone(), settings(listener), nobody).await?;
    let id_a = Arc::new(QuicIdentity::generate()?);
    let a_udp = udp()?;
    let a_addr = a_udp.local_addr()?;
    let told = (!options.b_not_told).then(|| (introduction(vec![a_addr], id_a.fingerprint()), b.clone()));
    let introducer = Arc::new(Introduce {
        requester: Mutex::new(told),
        answer: introduction(vec![b.local_udp()?], options.pin.unwrap_or(id_b.fingerprint())),
        target: Some(b.clone()),
    });
    let a = QuicBridge::start(a_udp, id_a, settings(listener), introducer).await?;
    Ok((a, b))
}
