//! The device's direct paths: how other devices can reach it without the
//! tracker's help, found once at start and reported to the tracker
//! (`PUT /api/paths`).
//!
//! - LAN address: the address of the interface that routes to the tracker
//!   (found by connecting a UDP socket, which sends nothing), with the peer
//!   port, when it is a private, shared or unique-local address. The tracker
//!   hands it to devices behind the same public address (LAN pairing): the
//!   devices of one home reach each other whatever the router forwards.
//! - UPnP IGD mapping of the peer port, TCP and UDP
//!   ([`ota_peer::port_mapping`]): renewed at half its lease, removed on
//!   exit, stale mappings of this device removed at start. A refusal (no
//!   gateway, a router behind a carrier-grade NAT, the port taken) is
//!   logged and reported; the device then relies on its LAN address and on
//!   dialling out.
//! - STUN probe from the UDP peer socket ([`ota_peer::stun_probe`]): the
//!   server-reflexive address and the NAT's mapping and filtering
//!   behaviour, against the tracker's STUN responder and, when given, an
//!   RFC 5780 server (coturn). The socket is the one the QUIC transport
//!   will share (RFC 7983 demultiplexing).
//!
//! The report is sent again every [`REPORT_EVERY`] (the tracker keeps it in
//! memory only) and after each failed attempt every [`RETRY_AFTER`].
//! [`PathsStatus`] is what `ota-device-agent status` shows.

use std::net::{IpAddr, SocketAddr, SocketAddrV4};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ota_client::TrackerClient;
use ota_peer::port_mapping::{map_ports, MappingState, PortMapConfig, PortMapping};
use ota_peer::stun_probe::{probe, StunServers};
use ota_proto::direct_paths::{is_lan_candidate, DirectPaths};
use ota_proto::nat_kind::NatReport;
use serde::{Deserialize, Serialize};

/// How often the report is sent again while nothing changed.
pub const REPORT_EVERY: Duration = Duration::from_secs(60);
/// How soon a failed report is retried.
pub const RETRY_AFTER: Duration = Duration::from_secs(5);
/// Longest the whole STUN probe may take.
pub const STUN_TIMEOUT: Duration = Duration::from_secs(3);
/// Longest the tracker's name may take to resolve.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(3);

/// Which direct paths the agent looks for (all on by default; the
/// flash-crowd runner's `bittorrent-baseline` mode turns all off).
#[derive(Debug, Clone)]
pub struct PathSettings {
    /// Report the LAN address for LAN pairing.
    pub lan_pairing: bool,
    /// Map the peer port over UPnP IGD.
    pub upnp: bool,
    /// Lease asked for, seconds (0: as long as the router allows).
    pub upnp_lease_secs: u32,
    /// Probe the NAT over STUN; `None`: no probe.
    pub stun: Option<StunServers>,
    /// This device's id (marks its UPnP mappings).
    pub device_id: String,
}

/// What the agent found, as its status shows it (JSON on the control socket).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PathsStatus {
    /// LAN addresses reported for LAN pairing.
    pub lan: Vec<SocketAddr>,
    /// The UPnP mapping, while held.
    pub mapping: Option<MappingState>,
    /// Why there is no UPnP mapping.
    pub mapping_refusal: Option<String>,
    /// The STUN probe's result.
    pub nat: Option<NatReport>,
    /// The QUIC endpoint for hole punching, when the bridge runs.
    #[serde(default)]
    pub quic: Option<ota_proto::rendezvous::QuicPath>,
    /// Whether the tracker took the latest report.
    pub reported: bool,
    /// Why the latest report failed, if it did.
    pub report_error: Option<String>,
    /// Network changes the agent followed, latest last (at most
    /// [`crate::network_watch::MAX_SWITCHES`]).
    #[serde(default)]
    pub switches: Vec<crate::network_watch::NetworkSwitch>,
    /// The local UDP address of the QUIC endpoint now (it moves on a
    /// network change).
    #[serde(default)]
    pub quic_udp: Option<SocketAddr>,
}

impl PathsStatus {
    /// The report the tracker gets.
    pub fn report(&self) -> DirectPaths {
        DirectPaths {
            lan: self.lan.clone(),
            mapped: self.mapping.as_ref().map(|m| SocketAddr::V4(m.external)),
            mapping_refusal: self.mapping_refusal.clone(),
            nat: self.nat,
            quic: self.quic,
        }
    }

    /// One line for `ota-device-agent status`: how others reach this device.
    pub fn summary(&self) -> String {
        let mut parts = Vec::new();
        parts.push(match self.lan.first() {
            Some(l) => format!("LAN {l}"),
            None => "no LAN address".to_string(),
        });
        parts.push(match (&self.mapping, &self.mapping_refusal) {
            (Some(m), _) => format!("UPnP {} ({} renewals)", m.external, m.renewals),
            (None, Some(why)) => format!("no UPnP mapping: {why}"),
            (None, None) => "UPnP off".to_string(),
        });
        parts.push(match &self.nat {
            Some(n) => match n.reflexive {
                Some(r) => format!("NAT {} (reflexive {r})", n.kind),
                None => format!("NAT {}", n.kind),
            },
            None => "no STUN probe".to_string(),
        });
        if let Some(last) = self.switches.last() {
            let gap = last
                .longest_gap_ms
                .map(|g| format!(", longest gap {g} ms"))
                .unwrap_or_default();
            parts.push(format!(
                "{} network switch(es), last to {}{gap}",
                self.switches.len(),
                last.to
            ));
        }
        if let Some(e) = &self.report_error {
            parts.push(format!("not reported: {e}"));
        }
        parts.join(" · ")
    }
}

/// The LAN address to report for a peer listener on `listen`, given the
/// local address the route to the tracker uses: the listener's own IP when
/// it is bound to one, else `route_ip`; `None` unless it is a LAN
/// candidate (private, shared or unique-local; not loopback).
pub fn lan_address(listen: SocketAddr, route_ip: Option<IpAddr>) -> Option<SocketAddr> {
    let ip = if listen.ip().is_unspecified() {
        route_ip?
    } else {
        listen.ip()
    };
    Some(SocketAddr::new(ip, listen.port())).filter(|a| is_lan_candidate(*a))
}

/// The local IP of the route to `to`: a UDP socket connected there (no
/// datagram is sent); `None` when there is no route.
pub fn route_ip(to: SocketAddr) -> Option<IpAddr> {
    let bind: SocketAddr = if to.is_ipv4() {
        "0.0.0.0:0".parse().ok()?
    } else {
        "[::]:0".parse().ok()?
    };
    let s = std::net::UdpSocket::bind(bind).ok()?;
    s.connect(to).ok()?;
    s.local_addr().ok().map(|a| a.ip())
}

/// The tracker's address from its base URL, resolved (bounded).
pub async fn tracker_addr(tracker_url: &str) -> Option<SocketAddr> {
    let url = url::Url::parse(tracker_url).ok()?;
    let host = url
        .host_str()?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = url.port_or_known_default()?;
    let found: Vec<SocketAddr> = tokio::time::timeout(RESOLVE_TIMEOUT, tokio::net::lookup_host((host.as_str(), port)))
        .await
        .ok()?
        .ok()?
        .collect();
    found.into_iter().next()
}

/// The direct paths of a running agent: the status, the UPnP mapping and
/// the UDP peer socket, and the task that reports them.
pub struct Paths {
    status: Arc<Mutex<PathsStatus>>,
    mapping: tokio::sync::Mutex<Option<PortMapping>>,
    /// The UDP peer socket the probe used (kept bound for the QUIC
    /// transport, which takes it with [`Paths::take_udp`]).
    udp: Mutex<Option<Arc<tokio::net::UdpSocket>>>,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    /// The peer listener and whether its LAN address is reported.
    listen: SocketAddr,
    lan_pairing: bool,
    /// Wakes the reporting task for a report now (after a network change).
    report_now: Arc<tokio::sync::Notify>,
}

impl Paths {
    /// Finds the paths for a peer listener on `listen` (tracker at
    /// `tracker`): the LAN address, the UPnP mapping and the STUN probe,
    /// the last two at the same time (at most about
    /// [`ota_peer::port_mapping::DEFAULT_SEARCH_TIMEOUT`] or
    /// [`STUN_TIMEOUT`], whichever is longer). Never fails: what could not
    /// be found is logged and left out.
    pub async fn discover(settings: &PathSettings, listen: SocketAddr, tracker: Option<SocketAddr>) -> Paths {
        let route = tracker.and_then(route_ip);
        let lan = lan_address(listen, route);
        let mut status = PathsStatus {
            lan: if settings.lan_pairing {
                lan.into_iter().collect()
            } else {
                Vec::new()
            },
            ..Default::default()
        };
        let udp = match &settings.stun {
            Some(_) => match tokio::net::UdpSocket::bind(listen).await {
                Ok(s) => Some(Arc::new(s)),
                Err(e) => {
                    tracing::warn!(%listen, error = %e, "cannot bind the UDP peer socket; no STUN probe");
                    None
                }
            },
            None => None,
        };
        let stun = async {
            match (&settings.stun, &udp) {
                (Some(servers), Some(socket)) => Some(probe(socket, servers, STUN_TIMEOUT).await),
                _ => None,
            }
        };
        let upnp = async {
            if !settings.upnp {
                return None;
            }
            let local = match lan.or(route.map(|ip| SocketAddr::new(ip, listen.port()))) {
                Some(SocketAddr::V4(v4)) => v4,
                _ => {
                    return Some(Err("no IPv4 LAN address to map".to_string()));
                }
            };
            let config = PortMapConfig {
                lease_secs: settings.upnp_lease_secs,
                ..PortMapConfig::new(settings.device_id.clone(), SocketAddrV4::new(*local.ip(), local.port()))
            };
            Some(map_ports(config).await.map_err(|e| e.to_string()))
        };
        let (nat, mapped) = tokio::join!(stun, upnp);
        if let Some(n) = &nat {
            tracing::info!(kind = %n.kind, reflexive = ?n.reflexive, mapping = ?n.mapping, filtering = ?n.filtering, "STUN probe");
        }
        status.nat = nat;
        let mut mapping = None;
        match mapped {
            Some(Ok(m)) => {
                tracing::info!(external = %m.external(), lease_secs = m.lease_secs(), "UPnP mapping of the peer port (TCP and UDP)");
                status.mapping = Some(m.state().borrow().clone());
                mapping = Some(m);
            }
            Some(Err(why)) => {
                tracing::warn!(reason = %why, "no UPnP mapping; peers reach this device on its LAN or not at all, it dials out");
                status.mapping_refusal = Some(why);
            }
            None => {}
        }
        if let Some(l) = status.lan.first() {
            tracing::info!(lan = %l, "LAN address for LAN pairing");
        }
        Paths {
            status: Arc::new(Mutex::new(status)),
            mapping: tokio::sync::Mutex::new(mapping),
            udp: Mutex::new(udp),
            tasks: Mutex::new(Vec::new()),
            listen,
            lan_pairing: settings.lan_pairing,
            report_now: Arc::default(),
        }
    }

    /// After a network change: the route to the tracker now leaves from
    /// `route_ip`. Updates the LAN address (when LAN pairing is on) and the
    /// QUIC endpoint's address, records `switch` (at most
    /// [`crate::network_watch::MAX_SWITCHES`] kept) and has the report
    /// sent now.
    pub fn network_changed(
        &self,
        route_ip: IpAddr,
        quic_udp: Option<SocketAddr>,
        switch: crate::network_watch::NetworkSwitch,
    ) {
        {
            let mut s = self.status.lock().unwrap_or_else(|e| e.into_inner());
            if self.lan_pairing {
                s.lan = lan_address(self.listen, Some(route_ip)).into_iter().collect();
            }
            if quic_udp.is_some() {
                s.quic_udp = quic_udp;
            }
            s.switches.push(switch);
            let excess = s.switches.len().saturating_sub(crate::network_watch::MAX_SWITCHES);
            s.switches.drain(..excess);
        }
        self.report_now.notify_one();
    }

    /// Sets the longest receive gaps (any transport, QUIC only) of the
    /// switch made at `at_ms`.
    pub fn set_switch_gap(&self, at_ms: u64, longest_gap_ms: Option<u64>, quic_gap_ms: Option<u64>) {
        let mut s = self.status.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(sw) = s.switches.iter_mut().rev().find(|sw| sw.at_ms == at_ms) {
            sw.longest_gap_ms = longest_gap_ms;
            sw.quic_gap_ms = quic_gap_ms;
        }
    }

    /// Sets the STUN probe's result after a network change and has the
    /// report sent now (the tracker's candidates for this device change
    /// with it).
    pub fn set_nat(&self, nat: NatReport) {
        self.status.lock().unwrap_or_else(|e| e.into_inner()).nat = Some(nat);
        self.report_now.notify_one();
    }

    /// Sets the QUIC endpoint's local UDP address (at start).
    pub fn set_quic_udp(&self, udp: Option<SocketAddr>) {
        self.status.lock().unwrap_or_else(|e| e.into_inner()).quic_udp = udp;
    }

    /// Takes the UDP peer socket (the one the STUN probe used, so its
    /// server-reflexive address is the QUIC endpoint's), once; `None`
    /// without STUN or when the probe still holds it.
    pub fn take_udp(&self) -> Option<std::net::UdpSocket> {
        let udp = self.udp.lock().unwrap_or_else(|e| e.into_inner()).take()?;
        Arc::try_unwrap(udp).ok()?.into_std().ok()
    }

    /// Sets the QUIC endpoint the device reports (before
    /// [`Paths::start_reporting`]).
    pub fn set_quic(&self, quic: ota_proto::rendezvous::QuicPath) {
        self.status.lock().unwrap_or_else(|e| e.into_inner()).quic = Some(quic);
    }

    /// The port to announce: the UPnP mapping's external port, if held.
    pub async fn announce_port(&self) -> Option<u16> {
        self.mapping.lock().await.as_ref().map(|m| m.external().port())
    }

    /// The status now.
    pub fn status(&self) -> PathsStatus {
        self.status.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Starts reporting to `tracker`: now, then every [`REPORT_EVERY`]
    /// ([`RETRY_AFTER`] after a failure), and follows the mapping's
    /// renewals into the status.
    pub async fn start_reporting(&self, tracker: TrackerClient) {
        let status = self.status.clone();
        let mut tasks = Vec::new();
        if let Some(m) = self.mapping.lock().await.as_ref() {
            let mut rx = m.state();
            let status = status.clone();
            tasks.push(tokio::spawn(async move {
                while rx.changed().await.is_ok() {
                    let state = rx.borrow_and_update().clone();
                    status.lock().unwrap_or_else(|e| e.into_inner()).mapping = Some(state);
                }
            }));
        }
        let report_now = self.report_now.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                let report = status.lock().unwrap_or_else(|e| e.into_inner()).report();
                let result = tracker.report_paths(&report).await;
                let wait = {
                    let mut s = status.lock().unwrap_or_else(|e| e.into_inner());
                    s.reported = result.is_ok();
                    s.report_error = result.as_ref().err().map(|e| format!("{e:#}"));
                    if let Err(e) = &result {
                        tracing::warn!(error = %format!("{e:#}"), "cannot report the direct paths to the tracker");
                        RETRY_AFTER
                    } else {
                        REPORT_EVERY
                    }
                };
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = report_now.notified() => {}
                }
            }
        }));
        self.tasks.lock().unwrap_or_else(|e| e.into_inner()).extend(tasks);
    }

    /// Stops reporting and removes the UPnP mapping (bounded by
    /// [`ota_peer::port_mapping::REMOVE_TIMEOUT`]).
    pub async fn stop(&self) {
        for t in self.tasks.lock().unwrap_or_else(|e| e.into_inner()).drain(..) {
            t.abort();
        }
        if let Some(m) = self.mapping.lock().await.take() {
            let external = m.external();
            match m.remove().await {
                Ok(()) => tracing::info!(%external, "UPnP mapping removed"),
                Err(e) => {
                    tracing::warn!(%external, error = %e, "cannot remove the UPnP mapping; the next start removes it")
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lan_address_is_the_listener_or_the_route_and_only_a_private_one() {
        let any: SocketAddr = "0.0.0.0:40001".parse().unwrap();
        let lan: IpAddr = "192.168.1.2".parse().unwrap();
        assert_eq!(lan_address(any, Some(lan)), Some("192.168.1.2:40001".parse().unwrap()));
        assert_eq!(lan_address(any, None), None);
        assert_eq!(
            lan_address(any, Some("11.0.16.2".parse().unwrap())),
            None,
            "a public address"
        );
        assert_eq!(
            lan_address("127.0.0.1:7000".parse().unwrap(), Some(lan)),
            None,
            "loopback"
        );
        assert_eq!(
            lan_address("10.0.0.5:7000".parse().unwrap(), Some(lan)),
            Some("10.0.0.5:7000".parse().unwrap()),
            "a listener bound to an address reports that one"
        );
    }

    #[test]
    fn the_summary_says_how_the_device_is_reached() {
        let mut s = PathsStatus {
            lan: vec!["192.168.1.2:40001".parse().unwrap()],
            mapping_refusal: Some("no UPnP gateway answered".into()),
            ..Default::default()
        };
        let line = s.summary();
        assert!(line.contains("LAN 192.168.1.2:40001") && line.contains("no UPnP mapping: no UPnP gateway"));
        s.mapping = Some(MappingState {
            external: "11.0.1.1:40001".parse().unwrap(),
            renewals: 2,
            last_renewal: None,
            last_error: None,
        });
        assert!(
            s.summary().contains("UPnP 11.0.1.1:40001 (2 renewals)"),
            "{}",
            s.summary()
        );
        assert_eq!(s.report().mapped, Some("11.0.1.1:40001".parse().unwrap()));
    }
}
