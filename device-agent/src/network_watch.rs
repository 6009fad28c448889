//! Following the device's network (issue 16, connection migration): the
//! agent watches its interface addresses (the `if-watch` crate, netlink
//! on Linux) and, after every change, the local address of its route to
//! the tracker. When that address changes (WiFi gone, cellular up; in the
//! lab, the link to router A cut and one to router B up), it
//!
//! 1. moves the QUIC endpoint to a new UDP socket
//!    ([`ota_peer::quic_bridge::QuicBridge::rebind`]): every connection
//!    this device dialed (the origin, the peers it called) migrates
//!    (RFC 9000 §9) and librqbit, which talks only to the local bridge,
//!    sees a pause instead of a disconnect;
//! 2. drops its connections to the tracker (TCP cannot move: calls in
//!    flight on them end, the push subscription is made again) and the
//!    TCP connections the bridge relays, updates its direct paths (the LAN
//!    address) and reports them to the tracker at once;
//! 3. records the switch ([`NetworkSwitch`], in `status`) and, a few
//!    seconds later, the longest gap in payload bytes received around it
//!    ([`GAP_BEFORE`], [`GAP_AFTER`]): from librqbit's received-bytes
//!    counter sampled every [`SAMPLE_EVERY`] (any transport, so the same
//!    figure exists for plain TCP peers with `--quic off`), and from the
//!    bridge's reads for QUIC.
//!
//! Detection: an address event starts polling the route every
//! [`SETTLE_POLL`] for up to [`SETTLE_FOR`] (a new address comes before
//! its default route, which netlink address events do not report); with
//! no netlink (another OS, a sandbox) the route is polled every
//! [`FALLBACK_POLL`]. The time from the first event to the rebind is the
//! switch's `detection_ms`.
//!
//! 4. probes the new network's NAT over STUN from the new socket
//!    ([`QuicBridge::probe_nat`]): first one Binding round trip to the
//!    primary server, whose server-reflexive address is reported to the
//!    tracker at once, then the full RFC 5780 classification. The tracker
//!    pushes the new candidates to the peers this device was introduced to
//!    (`Tracker::reintroduce_moved`): a peer behind an address-dependent
//!    filter punches towards them, so the connection this device dialed
//!    migrates through its NAT too (the punch nudges it at once), and a
//!    peer whose connection to this device was the QUIC client closes it
//!    and dials the new address.
//!
//! Not done here yet (issue 16): renewing the UPnP mapping on the new
//! gateway, a warm second path.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use ota_client::TrackerClient;
use ota_peer::quic_bridge::QuicBridge;
use ota_peer::receive_gaps::ReceiveGaps;
use serde::{Deserialize, Serialize};

use crate::direct_paths::{route_ip, Paths, STUN_TIMEOUT};
use ota_peer::stun_probe::StunServers;

/// Route polling interval after an address event.
pub const SETTLE_POLL: Duration = Duration::from_millis(10);
/// How long the route is polled after an address event.
pub const SETTLE_FOR: Duration = Duration::from_secs(3);
/// Route polling interval without netlink events.
pub const FALLBACK_POLL: Duration = Duration::from_secs(1);
/// The receive-gap window starts this long before the first event…
pub const GAP_BEFORE: Duration = Duration::from_secs(1);
/// …and ends this long after the rebind (when the gap is measured, or
/// when bytes arrive again, at most [`GAP_WAIT_MAX`] later).
pub const GAP_AFTER: Duration = Duration::from_secs(3);
/// Longest wait for bytes to arrive again before the gap is reported as it
/// stands.
pub const GAP_WAIT_MAX: Duration = Duration::from_secs(60);
/// Switches kept in the status.
pub const MAX_SWITCHES: usize = 32;
/// How often the received-bytes counter is sampled while downloading.
pub const SAMPLE_EVERY: Duration = Duration::from_millis(10);
/// How often it is looked at while nothing downloads.
pub const IDLE_SAMPLE_EVERY: Duration = Duration::from_secs(1);

/// Payload bytes received so far by the downloads in progress (`None`:
/// none in progress), sampled every [`SAMPLE_EVERY`] for receive gaps.
pub type ReceivedCounter = Arc<dyn Fn() -> Option<u64> + Send + Sync>;

/// One network change the agent followed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkSwitch {
    /// When the QUIC endpoint was rebound, ms since the Unix epoch.
    pub at_ms: u64,
    /// The local address of the route to the tracker before (`None`: there
    /// was no route, e.g. the only link was down).
    pub from: Option<IpAddr>,
    /// The local address of the route to the tracker now.
    pub to: IpAddr,
    /// The QUIC endpoint's UDP address before and after the rebind (`None`
    /// without the QUIC transport).
    pub udp_from: Option<SocketAddr>,
    /// See [`NetworkSwitch::udp_from`].
    pub udp_to: Option<SocketAddr>,
    /// From the first address event (or poll) that showed the change to
    /// the rebind, ms.
    pub detection_ms: u64,
    /// The longest gap in payload bytes received (any transport: the
    /// downloads' counter sampled every [`SAMPLE_EVERY`], so ±10 ms) that
    /// overlaps [`GAP_BEFORE`] before the first event to [`GAP_AFTER`] after
    /// the rebind, ms; `None` until measured or when nothing was being
    /// received.
    pub longest_gap_ms: Option<u64>,
    /// The same over spliced QUIC streams only, timed at each read by the
    /// bridge (no sampling error); `None` without the QUIC transport.
    #[serde(default)]
    pub quic_gap_ms: Option<u64>,
    /// Why the rebind failed, if it did.
    pub error: Option<String>,
}

/// Whether the route's local address moved from `before` to `now`: the new
/// address, or `None` when there is no route now or it did not change
/// (pure).
pub fn switched(before: Option<IpAddr>, now: Option<IpAddr>) -> Option<IpAddr> {
    match now {
        Some(ip) if Some(ip) != before => Some(ip),
        _ => None,
    }
}

/// Starts following the network for a tracker at `tracker`: rebinds
/// `bridge` (when the QUIC transport runs), updates `paths` and renews
/// `client`'s connections ([`TrackerClient::network_changed`]) on each
/// change (see the module docs). Runs until the task is aborted.
pub fn spawn(
    tracker: SocketAddr,
    client: TrackerClient,
    bridge: Option<Arc<QuicBridge>>,
    paths: Arc<Paths>,
    received: ReceivedCounter,
    stun: Option<StunServers>,
) -> tokio::task::JoinHandle<()> {
    let gaps = Arc::new(Mutex::new(ReceiveGaps::default()));
    tokio::spawn(async move {
        let sampler = tokio::spawn(sample(received, gaps.clone()));
        let on = Follow {
            client,
            bridge,
            paths,
            gaps,
            stun,
        };
        watch(tracker, on).await;
        sampler.abort();
    })
}

/// What a switch acts on.
struct Follow {
    client: TrackerClient,
    bridge: Option<Arc<QuicBridge>>,
    paths: Arc<Paths>,
    gaps: Arc<Mutex<ReceiveGaps>>,
    stun: Option<StunServers>,
}

/// Records in `gaps` each time `received` grows.
async fn sample(received: ReceivedCounter, gaps: Arc<Mutex<ReceiveGaps>>) {
    let mut last = None;
    loop {
        let now = received();
        if let (Some(n), Some(l)) = (now, last) {
            if n > l {
                gaps.lock().unwrap_or_else(|e| e.into_inner()).record(Instant::now());
            }
        }
        last = now;
        tokio::time::sleep(if now.is_some() { SAMPLE_EVERY } else { IDLE_SAMPLE_EVERY }).await;
    }
}

async fn watch(tracker: SocketAddr, on: Follow) {
    let mut current = route_ip(tracker);
    let mut events = match if_watch::tokio::IfWatcher::new() {
        Ok(w) => Some(w),
        Err(e) => {
            tracing::warn!(error = %e, every_ms = FALLBACK_POLL.as_millis() as u64, "no address events (netlink); polling the route instead");
            None
        }
    };
    tracing::info!(route = ?current, %tracker, "following network changes");
    // Poll the route until this instant (set by address events).
    let mut settle_until: Option<Instant> = None;
    // The first event since the route was last seen unchanged.
    let mut since: Option<Instant> = None;
    loop {
        let polling = settle_until.is_some_and(|t| Instant::now() < t);
        let wait = if polling || events.is_none() {
            if polling {
                SETTLE_POLL
            } else {
                FALLBACK_POLL
            }
        } else {
            // Only an event wakes the watch.
            Duration::from_secs(3600)
        };
        tokio::select! {
            event = async { events.as_mut()?.next().await }, if events.is_some() => match event {
                Some(Ok(event)) => {
                    tracing::debug!(?event, "address event");
                    let now = Instant::now();
                    since.get_or_insert(now);
                    settle_until = Some(now + SETTLE_FOR);
                }
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "address watch error");
                    settle_until = Some(Instant::now() + SETTLE_FOR);
                }
                None => {
                    tracing::warn!("address events ended; polling the route instead");
                    events = None;
                }
            },
            _ = tokio::time::sleep(wait) => {}
        }
        let now = route_ip(tracker);
        if let Some(to) = switched(current, now) {
            let first = since.take().unwrap_or_else(Instant::now);
            switch(current, to, first, &on);
            current = Some(to);
        } else if now.is_none() {
            if current.is_some() {
                tracing::info!(from = ?current, "no route to the tracker");
                current = None;
            }
        } else {
            // Unchanged: the next change is timed from its own event.
            since = None;
        }
    }
}

fn switch(from: Option<IpAddr>, to: IpAddr, first: Instant, on: &Follow) {
    let (bridge, paths, gaps) = (on.bridge.as_ref(), &on.paths, &on.gaps);
    let detection_ms = first.elapsed().as_millis() as u64;
    let (udp_from, udp_to, error) = match bridge.map(|b| b.rebind(to)) {
        Some(Ok((old, new))) => (Some(old), Some(new), None),
        Some(Err(e)) => {
            tracing::warn!(error = %format!("{e:#}"), "cannot rebind the QUIC endpoint");
            (None, None, Some(format!("{e:#}")))
        }
        None => (None, None, None),
    };
    let rebound = Instant::now();
    on.client.network_changed();
    // The new network's NAT, from the new socket.
    if let (Some(b), Some(servers)) = (bridge.cloned(), on.stun) {
        let paths = paths.clone();
        tokio::spawn(async move {
            // First the reflexive address alone (one Binding round trip to
            // the primary server), reported at once: the peers this device
            // was introduced to punch towards it (the tracker tells them),
            // and the full RFC 5780 classification, which waits out its
            // unanswered tests, follows.
            if servers.rfc5780.is_some() {
                let primary = StunServers {
                    primary: servers.primary,
                    rfc5780: None,
                };
                let quick = b.probe_nat(&primary, STUN_TIMEOUT).await;
                tracing::info!(reflexive = ?quick.reflexive, "STUN reflexive address after the network change");
                if quick.reflexive.is_some() {
                    paths.set_nat(quick);
                }
            }
            let nat = b.probe_nat(&servers, STUN_TIMEOUT).await;
            tracing::info!(kind = %nat.kind, reflexive = ?nat.reflexive, "STUN probe after the network change");
            // The punch role follows the new network's NAT (a probe that
            // learnt nothing keeps the old kind).
            if nat.reflexive.is_some() {
                b.set_nat(Some(nat.kind));
            }
            paths.set_nat(nat);
        });
    }
    let at_ms = ota_common::clock::wall_ms().max(0) as u64;
    tracing::info!(?from, %to, detection_ms, ?udp_from, ?udp_to, "network changed: route to the tracker now leaves from a new address");
    paths.network_changed(
        to,
        udp_to,
        NetworkSwitch {
            at_ms,
            from,
            to,
            udp_from,
            udp_to,
            detection_ms,
            longest_gap_ms: None,
            quic_gap_ms: None,
            error,
        },
    );
    let Some(start) = first.checked_sub(GAP_BEFORE) else {
        return;
    };
    let (paths, gaps, bridge) = (paths.clone(), gaps.clone(), bridge.cloned());
    tokio::spawn(async move {
        tokio::time::sleep(GAP_AFTER).await;
        // A silence still going on is measured when it ends (bounded).
        let resumed = || {
            gaps.lock()
                .unwrap_or_else(|e| e.into_inner())
                .last_arrival()
                .is_some_and(|t| t > rebound)
        };
        let waited = Instant::now();
        while !resumed() && waited.elapsed() < GAP_WAIT_MAX {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let ms = |g: Option<Duration>| g.map(|g| g.as_millis() as u64);
        let end = rebound + GAP_AFTER;
        let longest_gap_ms =
            ms(gaps
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .longest_overlapping(start, end, Instant::now()));
        let quic_gap_ms = bridge.as_ref().and_then(|b| ms(b.longest_receive_gap(start, end)));
        tracing::info!(%to, at_ms, detection_ms, longest_gap_ms = longest_gap_ms.unwrap_or(0), quic_gap_ms = quic_gap_ms.unwrap_or(0), measured = longest_gap_ms.is_some(), "network switch: longest gap in received bytes");
        paths.set_switch_gap(at_ms, longest_gap_ms, quic_gap_ms);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_switch_is_a_new_route_address_not_a_lost_or_unchanged_one() {
        let a: IpAddr = "192.168.1.10".parse().unwrap();
        let b: IpAddr = "192.168.7.10".parse().unwrap();
        assert_eq!(switched(Some(a), Some(b)), Some(b));
        assert_eq!(switched(Some(a), Some(a)), None, "unchanged");
        assert_eq!(switched(Some(a), None), None, "no route: wait for one");
        assert_eq!(switched(None, Some(a)), Some(a), "back after an outage");
        assert_eq!(switched(None, None), None);
    }
}
