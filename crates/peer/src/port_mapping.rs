//! UPnP IGD port mapping for the peer socket, with igd-next's tokio client.
//!
//! [`map_ports`] finds the home router's Internet Gateway Device (SSDP
//! `M-SEARCH`, UPnP Device Architecture 1.1 section 1.3), reads its external
//! address (`GetExternalIPAddress`), removes mappings a killed earlier run of
//! the same owner left behind (`GetGenericPortMappingEntry`,
//! `DeletePortMapping`), and maps the peer's port for TCP and UDP
//! (`AddPortMapping`, falling back to `AddAnyPortMapping` on error 718
//! `ConflictInMappingEntry`); all actions of UPnP IGD v1/v2
//! `WANIPConnection:1`/`WANIPConnection:2` (v2 section 2.4). A background
//! task renews both mappings at half the lease ([`renew_after`]) and
//! publishes a [`MappingState`]; [`PortMapping::remove`] deletes them on exit.
//!
//! The pure part (the refusal kinds, the external-address classifier, the
//! renewal schedule, the description that marks our mappings) has no I/O and
//! is unit-tested here; the I/O part is tested against a real miniupnpd in
//! `deploy/tests/lab_port_mapping.rs`.
//!
//! Every network call is bounded: the search by
//! [`PortMapConfig::search_timeout`], every SOAP action by [`REQUEST_TIMEOUT`],
//! the removal by [`REMOVE_TIMEOUT`].

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4};
use std::time::{Duration, SystemTime};

use igd_next::aio::tokio::Tokio;
use igd_next::aio::Gateway;
use igd_next::{AddAnyPortError, AddPortError, GatewayIpVersion, PortMappingProtocol, SearchError, SearchOptions};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Default lease asked for, seconds (one hour): short enough that a mapping
/// of a device that vanished goes within the hour, long enough that renewals
/// (every half hour) cost nothing.
pub const DEFAULT_LEASE_SECS: u32 = 3600;
/// Default time the SSDP gateway search may take in all, 3 s (a home
/// router answers an `M-SEARCH` within milliseconds; igd-next's own default
/// is 10 s).
pub const DEFAULT_SEARCH_TIMEOUT: Duration = Duration::from_secs(3);
/// How long one SOAP action (one HTTP request to the IGD's control URL) may
/// take, 3 s; igd-next's own bound is 10 s.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);
/// How long [`PortMapping::remove`] may take in all (both deletions), 3 s.
pub const REMOVE_TIMEOUT: Duration = Duration::from_secs(3);
/// Renewal interval for a lease of 0 seconds, which IGD:1 calls infinite
/// (`PortMappingLeaseDuration` 0, WANIPConnection:1 section 2.2.25; IGD:2
/// routers store it as their longest lease, one week): 30 minutes, so a
/// router that rebooted and lost its table gets the mapping back soon.
pub const INFINITE_LEASE_RENEWAL: Duration = Duration::from_secs(30 * 60);
/// How many `GetGenericPortMappingEntry` indexes the stale-mapping scan reads
/// at most (128; it stops earlier at the first error, normally 713
/// `SpecifiedArrayIndexInvalid` past the last entry).
pub const STALE_SCAN_LIMIT: u32 = 128;
/// How many `AddAnyPortMapping` ports are tried when the wanted port is
/// taken, each needing TCP and UDP free on the same external port.
const ANY_PORT_ATTEMPTS: usize = 3;

/// Why no port mapping could be had. Each variant means peers on the internet
/// cannot reach this device through UPnP; the caller falls back to hole
/// punching or relaying.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MappingRefusal {
    /// No UPnP IGD answered the SSDP search within the timeout: the router
    /// has no UPnP, or it is turned off.
    #[error("no UPnP gateway answered the SSDP search in time")]
    NoGateway,
    /// The IGD's external address is not a public one (RFC 1918 private,
    /// RFC 6598 shared `100.64.0.0/10`, loopback, link-local or
    /// unspecified): the router sits behind another NAT, typically a
    /// carrier-grade NAT, so a mapping on it makes nobody reachable.
    #[error("the UPnP gateway's external address {0} is not public (a router behind a carrier-grade or second NAT)")]
    PrivateExternalAddress(IpAddr),
    /// UPnP error 718 `ConflictInMappingEntry` for the wanted port, and no
    /// other external port with TCP and UDP both free could be had.
    #[error("external port {port} is mapped by another client and no other port could be had")]
    PortTaken {
        /// The external port asked for (the local port).
        port: u16,
    },
    /// Any other IGD error or an unanswered request, with the action and
    /// the gateway's or igd-next's text.
    #[error("the UPnP gateway refused: {0}")]
    Refused(String),
}

/// Whether mapping ports on an IGD whose `GetExternalIPAddress` answered `ip`
/// makes this host reachable: `Err(PrivateExternalAddress)` for IPv4 private
/// (RFC 1918), shared (RFC 6598 `100.64.0.0/10`, the carrier-grade NAT
/// space), loopback, link-local (RFC 3927), unspecified and broadcast
/// addresses, and for IPv6 loopback, unspecified, unique-local (RFC 4193
/// `fc00::/7`) and link-local (`fe80::/10`) ones.
pub fn external_address_usable(ip: IpAddr) -> Result<(), MappingRefusal> {
    let unusable = match ip {
        IpAddr::V4(v4) => {
            v4.is_private()
                || is_shared_address_space(v4)
                || v4.is_loopback()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
        }
        IpAddr::V6(v6) => v6.is_loopback() || v6.is_unspecified() || is_unique_local(v6) || is_unicast_link_local(v6),
    };
    if unusable {
        Err(MappingRefusal::PrivateExternalAddress(ip))
    } else {
        Ok(())
    }
}

/// `100.64.0.0/10`, RFC 6598 section 7 (Shared Address Space).
fn is_shared_address_space(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    a == 100 && (b & 0xc0) == 64
}

/// `fc00::/7`, RFC 4193.
fn is_unique_local(ip: Ipv6Addr) -> bool {
    (ip.segments()[0] & 0xfe00) == 0xfc00
}

/// `fe80::/10`, RFC 4291 section 2.5.6.
fn is_unicast_link_local(ip: Ipv6Addr) -> bool {
    (ip.segments()[0] & 0xffc0) == 0xfe80
}

/// When to renew a mapping of `lease_secs` seconds: at half the lease, never
/// sooner than 1 s; for 0 (infinite on IGD:1) every
/// [`INFINITE_LEASE_RENEWAL`] (30 min).
pub fn renew_after(lease_secs: u32) -> Duration {
    if lease_secs == 0 {
        INFINITE_LEASE_RENEWAL
    } else {
        Duration::from_secs(u64::from((lease_secs / 2).max(1)))
    }
}

/// The `NewPortMappingDescription` of our mappings for `owner` (the device
/// id): `"ota-peer <owner>"`. It is how a later run finds what a killed one
/// left ([`is_ours`]).
pub fn description(owner: &str) -> String {
    format!("ota-peer {owner}")
}

/// Whether a mapping's description (`PortMappingDescription` from
/// `GetGenericPortMappingEntry`) marks it as `owner`'s: exactly
/// [`description`]`(owner)`, so `dev-1` never claims `dev-10`'s mappings.
pub fn is_ours(description: &str, owner: &str) -> bool {
    description.strip_prefix("ota-peer ") == Some(owner)
}

/// What [`map_ports`] maps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortMapConfig {
    /// Who owns the mappings, the device id; they are described as
    /// [`description`]`(owner)`.
    pub owner: String,
    /// The peer socket: the host's LAN address (the SSDP search is sent from
    /// it, so it leaves through that interface, and the router maps to it)
    /// and its port, shared by TCP and UDP.
    pub local: SocketAddrV4,
    /// The lease asked for, seconds ([`DEFAULT_LEASE_SECS`]); 0 asks for an
    /// infinite one (IGD:1), which IGD:2 routers cap at one week.
    pub lease_secs: u32,
    /// How long the SSDP search may take ([`DEFAULT_SEARCH_TIMEOUT`]).
    pub search_timeout: Duration,
}

impl PortMapConfig {
    /// A configuration for `owner`'s socket `local` with the default lease
    /// and search timeout.
    pub fn new(owner: impl Into<String>, local: SocketAddrV4) -> PortMapConfig {
        PortMapConfig {
            owner: owner.into(),
            local,
            lease_secs: DEFAULT_LEASE_SECS,
            search_timeout: DEFAULT_SEARCH_TIMEOUT,
        }
    }
}

/// The mapping as the renewal task last saw it, for the agent's status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MappingState {
    /// The address peers on the internet reach us at: the IGD's external
    /// address and the mapped port (TCP and UDP).
    pub external: SocketAddrV4,
    /// How many renewals succeeded (both protocols), since the mapping was
    /// made.
    pub renewals: u32,
    /// When the last renewal succeeded, if one did.
    pub last_renewal: Option<SystemTime>,
    /// The last renewal's error, if it failed (cleared by the next success);
    /// the next renewal is tried at the next beat anyway.
    pub last_error: Option<String>,
}

/// TCP and UDP port mappings on the IGD, renewed in the background until
/// [`PortMapping::remove`] or drop.
///
/// Dropping it only stops the renewals (async removal cannot run in `Drop`):
/// the mappings stay until their lease ends. Call [`PortMapping::remove`] on
/// exit; after a kill the next [`map_ports`] of the same owner removes them.
#[derive(Debug)]
pub struct PortMapping {
    gateway: Gateway<Tokio>,
    external: SocketAddrV4,
    lease_secs: u32,
    state: watch::Receiver<MappingState>,
    renewal: JoinHandle<()>,
}

impl PortMapping {
    /// The address peers on the internet reach us at (TCP and UDP): the
    /// IGD's external address and the external port.
    pub fn external(&self) -> SocketAddrV4 {
        self.external
    }

    /// The lease granted per mapping, seconds (0 = infinite, when the router
    /// only takes permanent leases, UPnP error 725).
    pub fn lease_secs(&self) -> u32 {
        self.lease_secs
    }

    /// The renewal task's state, updated after every renewal.
    pub fn state(&self) -> watch::Receiver<MappingState> {
        self.state.clone()
    }

    /// Stops renewing and deletes both mappings (`DeletePortMapping`), within
    /// [`REMOVE_TIMEOUT`] in all.
    ///
    /// Errors: [`MappingRefusal::Refused`] if a deletion failed or the
    /// gateway did not answer in time (the mapping then goes when its lease
    /// ends); a mapping already gone (714 `NoSuchEntryInArray`) is fine.
    pub async fn remove(self) -> Result<(), MappingRefusal> {
        self.renewal.abort();
        let port = self.external.port();
        let gateway = &self.gateway;
        let both = async {
            let mut errors = Vec::new();
            for protocol in [PortMappingProtocol::TCP, PortMappingProtocol::UDP] {
                match gateway.remove_port(protocol, port).await {
                    Ok(()) | Err(igd_next::RemovePortError::NoSuchPortMapping) => {}
                    Err(e) => errors.push(format!("DeletePortMapping {protocol} {port}: {e}")),
                }
            }
            errors
        };
        match tokio::time::timeout(REMOVE_TIMEOUT, both).await {
            Ok(errors) if errors.is_empty() => {
                tracing::info!(external = %self.external, "UPnP port mappings removed");
                Ok(())
            }
            Ok(errors) => Err(MappingRefusal::Refused(errors.join("; "))),
            Err(_) => Err(MappingRefusal::Refused(format!(
                "DeletePortMapping {port}: no answer within {REMOVE_TIMEOUT:?}"
            ))),
        }
    }
}

impl Drop for PortMapping {
    /// Aborts the renewal task only; see [`PortMapping`].
    fn drop(&mut self) {
        self.renewal.abort();
    }
}

/// Maps `config.local`'s port for TCP and UDP on the LAN's UPnP IGD and
/// starts renewing it; must be called inside a tokio runtime (the renewal
/// task is spawned on it).
///
/// Steps: SSDP search from `config.local`'s address within
/// `config.search_timeout`; `GetExternalIPAddress`, refused unless public
/// ([`external_address_usable`]); removal of `config.owner`'s stale mappings
/// (the first [`STALE_SCAN_LIMIT`] `GetGenericPortMappingEntry` indexes);
/// `AddPortMapping` TCP and UDP with external port = local port, and on 718
/// `AddAnyPortMapping` TCP then UDP on the port it gave. A router that only
/// takes permanent leases (725 `OnlyPermanentLeasesSupported`) gets lease 0.
///
/// Errors: [`MappingRefusal::NoGateway`], [`MappingRefusal::PrivateExternalAddress`],
/// [`MappingRefusal::PortTaken`], or [`MappingRefusal::Refused`] for any
/// other IGD error or unanswered request.
pub async fn map_ports(config: PortMapConfig) -> Result<PortMapping, MappingRefusal> {
    let gateway = search(&config).await?;
    tracing::debug!(gateway = %gateway.addr, service = %gateway.service_type, "UPnP gateway found");

    let external_ip = bounded("GetExternalIPAddress", gateway.get_external_ip()).await?;
    external_address_usable(external_ip)?;
    let IpAddr::V4(external_ip) = external_ip else {
        return Err(MappingRefusal::Refused(format!(
            "GetExternalIPAddress: {external_ip} is IPv6, the peer socket is IPv4"
        )));
    };

    remove_stale(&gateway, &config.owner).await;

    let desc = description(&config.owner);
    let local = SocketAddr::V4(config.local);
    let wanted = config.local.port();
    let (port, lease_secs) = match add_both(&gateway, wanted, local, config.lease_secs, &desc).await {
        Ok(lease) => (wanted, lease),
        Err(AddFailure::Conflict) => {
            tracing::info!(
                port = wanted,
                "UPnP: external port taken (718), asking the gateway for any port"
            );
            add_any(&gateway, local, config.lease_secs, &desc)
                .await?
                .ok_or(MappingRefusal::PortTaken { port: wanted })?
        }
        Err(AddFailure::Other(e)) => return Err(MappingRefusal::Refused(e)),
    };

    let external = SocketAddrV4::new(external_ip, port);
    tracing::info!(%external, local = %config.local, lease_secs, "UPnP port mappings added (TCP and UDP)");
    let (tx, rx) = watch::channel(MappingState {
        external,
        renewals: 0,
        last_renewal: None,
        last_error: None,
    });
    let renewal = tokio::spawn(renew(gateway.clone(), port, local, lease_secs, desc, tx));
    Ok(PortMapping {
        gateway,
        external,
        lease_secs,
        state: rx,
        renewal,
    })
}

/// The SSDP search, sent from `config.local`'s address, IPv4 gateways only.
async fn search(config: &PortMapConfig) -> Result<Gateway<Tokio>, MappingRefusal> {
    let mut options = SearchOptions::default();
    options.bind_addr = SocketAddr::V4(SocketAddrV4::new(*config.local.ip(), 0));
    options.timeout = Some(config.search_timeout);
    options.single_search_timeout = Some(config.search_timeout);
    options.gateway_ip_version = GatewayIpVersion::V4;
    // igd-next bounds the search by `timeout` itself; the outer bound (a
    // little longer) only guards against a hang outside its timer.
    let outer = config.search_timeout + Duration::from_millis(500);
    match tokio::time::timeout(outer, igd_next::aio::tokio::search_gateway(options)).await {
        Ok(Ok(gateway)) => Ok(gateway),
        Ok(Err(SearchError::NoResponseWithinTimeout)) | Err(_) => Err(MappingRefusal::NoGateway),
        Ok(Err(e)) => Err(MappingRefusal::Refused(format!("SSDP search: {e}"))),
    }
}

/// Runs one SOAP action within [`REQUEST_TIMEOUT`], its error as
/// [`MappingRefusal::Refused`] naming `action`.
async fn bounded<T, E: std::fmt::Display>(
    action: &str,
    call: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, MappingRefusal> {
    match tokio::time::timeout(REQUEST_TIMEOUT, call).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(MappingRefusal::Refused(format!("{action}: {e}"))),
        Err(_) => Err(MappingRefusal::Refused(format!(
            "{action}: no answer within {REQUEST_TIMEOUT:?}"
        ))),
    }
}

/// Deletes every mapping described as `owner`'s among the first
/// [`STALE_SCAN_LIMIT`] entries (read all first: deleting shifts the
/// indexes). Failures are logged, never fatal: a stale mapping only blocks
/// its port until its lease ends.
async fn remove_stale(gateway: &Gateway<Tokio>, owner: &str) {
    let mut stale = Vec::new();
    for index in 0..STALE_SCAN_LIMIT {
        match tokio::time::timeout(REQUEST_TIMEOUT, gateway.get_generic_port_mapping_entry(index)).await {
            Ok(Ok(entry)) => {
                if is_ours(&entry.port_mapping_description, owner) {
                    stale.push((entry.protocol, entry.external_port));
                }
            }
            Ok(Err(e)) => {
                tracing::debug!(index, "GetGenericPortMappingEntry: {e} (end of the table)");
                break;
            }
            Err(_) => {
                tracing::warn!(
                    index,
                    "GetGenericPortMappingEntry: no answer within {REQUEST_TIMEOUT:?}"
                );
                break;
            }
        }
    }
    for (protocol, port) in stale {
        match bounded("DeletePortMapping", gateway.remove_port(protocol, port)).await {
            Ok(()) => tracing::info!(%protocol, port, owner, "UPnP: removed a stale mapping of an earlier run"),
            Err(e) => tracing::warn!(%protocol, port, owner, "UPnP: stale mapping not removed: {e}"),
        }
    }
}

/// Why [`add_both`] failed.
enum AddFailure {
    /// 718 `ConflictInMappingEntry` on either protocol.
    Conflict,
    /// Anything else, as text.
    Other(String),
}

/// `AddPortMapping` of `port` for TCP, then UDP; the lease granted (`lease`,
/// or 0 after a 725 `OnlyPermanentLeasesSupported`). On failure nothing of
/// this call stays mapped.
async fn add_both(
    gateway: &Gateway<Tokio>,
    port: u16,
    local: SocketAddr,
    lease: u32,
    desc: &str,
) -> Result<u32, AddFailure> {
    let lease = add_one(gateway, PortMappingProtocol::TCP, port, local, lease, desc).await?;
    if let Err(e) = add_one(gateway, PortMappingProtocol::UDP, port, local, lease, desc).await {
        let _ = tokio::time::timeout(REQUEST_TIMEOUT, gateway.remove_port(PortMappingProtocol::TCP, port)).await;
        return Err(e);
    }
    Ok(lease)
}

/// One `AddPortMapping` (also a renewal: the same mapping again refreshes
/// its lease), retried once with lease 0 on 725.
async fn add_one(
    gateway: &Gateway<Tokio>,
    protocol: PortMappingProtocol,
    port: u16,
    local: SocketAddr,
    lease: u32,
    desc: &str,
) -> Result<u32, AddFailure> {
    let call = |lease| async move {
        tokio::time::timeout(REQUEST_TIMEOUT, gateway.add_port(protocol, port, local, lease, desc)).await
    };
    let mut granted = lease;
    let mut result = call(lease).await;
    if matches!(result, Ok(Err(AddPortError::OnlyPermanentLeasesSupported))) && lease != 0 {
        tracing::info!(%protocol, port, "UPnP: the gateway only takes permanent leases (725), asking for lease 0");
        granted = 0;
        result = call(0).await;
    }
    match result {
        Ok(Ok(())) => Ok(granted),
        Ok(Err(AddPortError::PortInUse)) => Err(AddFailure::Conflict),
        Ok(Err(e)) => Err(AddFailure::Other(format!("AddPortMapping {protocol} {port}: {e}"))),
        Err(_) => Err(AddFailure::Other(format!(
            "AddPortMapping {protocol} {port}: no answer within {REQUEST_TIMEOUT:?}"
        ))),
    }
}

/// `AddAnyPortMapping` for TCP, then UDP on the external port it gave, up to
/// [`ANY_PORT_ATTEMPTS`] times; `Ok(None)` if no port had both free.
async fn add_any(
    gateway: &Gateway<Tokio>,
    local: SocketAddr,
    lease: u32,
    desc: &str,
) -> Result<Option<(u16, u32)>, MappingRefusal> {
    for _ in 0..ANY_PORT_ATTEMPTS {
        let any = tokio::time::timeout(
            REQUEST_TIMEOUT,
            gateway.add_any_port(PortMappingProtocol::TCP, local, lease, desc),
        )
        .await;
        let (port, lease) = match any {
            Ok(Ok(port)) => (port, lease),
            Ok(Err(AddAnyPortError::OnlyPermanentLeasesSupported)) if lease != 0 => {
                match tokio::time::timeout(
                    REQUEST_TIMEOUT,
                    gateway.add_any_port(PortMappingProtocol::TCP, local, 0, desc),
                )
                .await
                {
                    Ok(Ok(port)) => (port, 0),
                    Ok(Err(e)) => return any_port_error(e).map_or(Ok(None), Err),
                    Err(_) => return Err(any_port_timeout()),
                }
            }
            Ok(Err(e)) => return any_port_error(e).map_or(Ok(None), Err),
            Err(_) => return Err(any_port_timeout()),
        };
        match add_one(gateway, PortMappingProtocol::UDP, port, local, lease, desc).await {
            Ok(lease) => return Ok(Some((port, lease))),
            Err(failure) => {
                let _ =
                    tokio::time::timeout(REQUEST_TIMEOUT, gateway.remove_port(PortMappingProtocol::TCP, port)).await;
                match failure {
                    AddFailure::Conflict => tracing::debug!(port, "UPnP: UDP taken on the port AddAnyPortMapping gave"),
                    AddFailure::Other(e) => return Err(MappingRefusal::Refused(e)),
                }
            }
        }
    }
    Ok(None)
}

/// An `AddAnyPortMapping` error as a refusal; the caller turns "no port
/// left" (728 `NoPortMapsAvailable`) into [`MappingRefusal::PortTaken`].
fn any_port_error(e: AddAnyPortError) -> Option<MappingRefusal> {
    match e {
        AddAnyPortError::NoPortsAvailable | AddAnyPortError::ExternalPortInUse => None,
        e => Some(MappingRefusal::Refused(format!("AddAnyPortMapping TCP: {e}"))),
    }
}

/// An unanswered `AddAnyPortMapping`.
fn any_port_timeout() -> MappingRefusal {
    MappingRefusal::Refused(format!("AddAnyPortMapping TCP: no answer within {REQUEST_TIMEOUT:?}"))
}

/// The renewal task: every [`renew_after`]`(lease)` maps both protocols
/// again (`AddPortMapping` of the same mapping refreshes its lease) and
/// publishes the outcome; a failure is logged and retried at the next beat.
async fn renew(
    gateway: Gateway<Tokio>,
    port: u16,
    local: SocketAddr,
    lease: u32,
    desc: String,
    state: watch::Sender<MappingState>,
) {
    let every = renew_after(lease);
    loop {
        tokio::time::sleep(every).await;
        let mut error = None;
        for protocol in [PortMappingProtocol::TCP, PortMappingProtocol::UDP] {
            if let Err(failure) = add_one(&gateway, protocol, port, local, lease, &desc).await {
                error = Some(match failure {
                    AddFailure::Conflict => format!("AddPortMapping {protocol} {port}: taken by another client (718)"),
                    AddFailure::Other(e) => e,
                });
                break;
            }
        }
        state.send_modify(|s| match error {
            None => {
                s.renewals += 1;
                s.last_renewal = Some(SystemTime::now());
                s.last_error = None;
                tracing::info!(external = %s.external, renewals = s.renewals, "UPnP port mappings renewed");
            }
            Some(e) => {
                tracing::warn!(external = %s.external, "UPnP renewal failed, retrying in {every:?}: {e}");
                s.last_error = Some(e);
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(s: &str) -> IpAddr {
        IpAddr::V4(s.parse().unwrap())
    }

    #[test]
    fn public_external_addresses_are_usable() {
        for ip in [
            "11.0.1.7",
            "8.8.8.8",
            "100.63.255.255",
            "100.128.0.1",
            "172.32.0.1",
            "192.169.0.1",
        ] {
            assert_eq!(external_address_usable(v4(ip)), Ok(()), "{ip}");
        }
        assert_eq!(external_address_usable("2001:db8::1".parse().unwrap()), Ok(()));
    }

    #[test]
    fn private_shared_and_special_external_addresses_are_refused() {
        for ip in [
            "10.0.0.1",
            "172.16.0.1",
            "172.31.255.254",
            "192.168.1.1",
            "100.64.0.1",
            "100.127.255.254",
            "127.0.0.1",
            "169.254.1.1",
            "0.0.0.0",
            "255.255.255.255",
        ] {
            assert_eq!(
                external_address_usable(v4(ip)),
                Err(MappingRefusal::PrivateExternalAddress(v4(ip))),
                "{ip}"
            );
        }
        for ip in ["::1", "::", "fd00::1", "fe80::1"] {
            let ip: IpAddr = ip.parse().unwrap();
            assert!(external_address_usable(ip).is_err(), "{ip}");
        }
    }

    #[test]
    fn the_cgnat_refusal_says_why() {
        let text = external_address_usable(v4("100.64.3.2")).unwrap_err().to_string();
        assert!(text.contains("100.64.3.2") && text.contains("carrier-grade"), "{text}");
    }

    #[test]
    fn renewal_is_at_half_the_lease_and_never_below_a_second() {
        assert_eq!(renew_after(3600), Duration::from_secs(1800));
        assert_eq!(renew_after(2), Duration::from_secs(1));
        assert_eq!(renew_after(3), Duration::from_secs(1));
        assert_eq!(renew_after(1), Duration::from_secs(1));
        assert_eq!(renew_after(u32::MAX), Duration::from_secs(u64::from(u32::MAX / 2)));
    }

    #[test]
    fn an_infinite_lease_is_renewed_every_half_hour() {
        assert_eq!(renew_after(0), Duration::from_secs(1800));
    }

    #[test]
    fn descriptions_mark_the_owner_exactly() {
        assert_eq!(description("dev-1"), "ota-peer dev-1");
        assert!(is_ours(&description("dev-1"), "dev-1"));
        assert!(!is_ours(&description("dev-10"), "dev-1"));
        assert!(!is_ours(&description("dev-1"), "dev-10"));
        assert!(!is_ours("dev-1", "dev-1"));
        assert!(!is_ours("other ota-peer dev-1", "dev-1"));
        assert!(!is_ours("ota lab test", "dev-1"));
    }

    #[test]
    fn refusals_read_well() {
        assert_eq!(
            MappingRefusal::NoGateway.to_string(),
            "no UPnP gateway answered the SSDP search in time"
        );
        assert_eq!(
            MappingRefusal::PortTaken { port: 40000 }.to_string(),
            "external port 40000 is mapped by another client and no other port could be had"
        );
        assert!(MappingRefusal::Refused("AddPortMapping TCP 1: x".into())
            .to_string()
            .ends_with("AddPortMapping TCP 1: x"));
    }

    #[test]
    fn the_default_config_leases_an_hour_and_searches_three_seconds() {
        let c = PortMapConfig::new("dev-1", "192.168.1.10:40000".parse().unwrap());
        assert_eq!((c.lease_secs, c.search_timeout), (3600, Duration::from_secs(3)));
        assert_eq!(c.owner, "dev-1");
    }

    #[test]
    fn the_state_serializes_for_the_status_page() {
        let s = MappingState {
            external: "11.0.1.7:40000".parse().unwrap(),
            renewals: 2,
            last_renewal: None,
            last_error: Some("x".into()),
        };
        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(json["external"], "11.0.1.7:40000");
        assert_eq!(json["renewals"], 2);
        assert_eq!(json["last_error"], "x");
    }
}
