//! A real UPnP Internet Gateway Device in a lab home router: Debian's
//! miniupnpd (package miniupnpd, nftables backend miniupnpd-nftables)
//! started in the namespace of every [`RouterKind::Upnp`] router by
//! [`Lab::add_router`], killed with the lab.
//!
//! What LAN hosts get (measured against miniupnpd 2.3.1, Debian 13):
//! - SSDP (UPnP Device Architecture 1.1/2.0, section 1) on `239.255.255.250:1900`,
//!   interface `lan` only: an `M-SEARCH` from a host (default route through
//!   the router) is answered with `LOCATION:`
//!   [`Router::upnp_description_url`].
//! - UPnP IGD:2 (`InternetGatewayDevice:2`, `WANIPConnection:2`) over HTTP on
//!   the router's LAN address, port [`UPNP_HTTP_PORT`]: `AddPortMapping`,
//!   `DeletePortMapping`, `GetExternalIPAddress` ([`Router::public`]) and
//!   the rest of the service.
//! - NAT-PMP (RFC 6886) and PCP (RFC 6887) on the LAN address, UDP port
//!   [`NATPMP_PORT`].
//!
//! Limits (UPnP error codes from WANIPConnection:2, section 2.4.16):
//! - secure mode: a host may only map ports to its own address; a request
//!   for another LAN address, and a request for an external port already
//!   mapped (to any host), both fail with 718 `ConflictInMappingEntry`;
//! - only ports in [`UPNP_PORTS`], external and internal, from the router's
//!   LAN /24; anything else fails with 606 `Action not authorized`;
//! - a UPnP lease is at most [`UPNP_MAX_LEASE`] (604,800 s, WANIPConnection:2
//!   section 2.3.16); 0 (IGD:1's "permanent") and anything longer are stored
//!   as that; the mapping goes when the lease ends;
//! - [`Lab::set_upnp_permissions`] restarts it with a deny-all rule: every
//!   `AddPortMapping` is then refused (a router whose owner allows no
//!   mappings), while discovery and `GetExternalIPAddress` still answer;
//! - PCP lifetimes are clamped to [`PCP_MIN_LIFETIME`]..=[`PCP_MAX_LIFETIME`]
//!   (miniupnpd `min_lifetime`/`max_lifetime`, the RFC 6887 section 15
//!   suggestions).
//!
//! # nftables
//!
//! miniupnpd (nftables build) adds and deletes rules in chains that must
//! already exist: Debian's init scripts (`/etc/miniupnpd/nft_init.sh` and
//! its `miniupnpd_functions.sh`, which looks for `iptables`) do not work
//! here, so [`upnp_ruleset`] creates them, all in table `inet`
//! [`UPNP_NFT_TABLE`] beside the router's own `ip ota_nat` and
//! `ip ota_filter`:
//! - `upnp_forward`, jumped to from a `forward` filter chain (policy accept):
//!   one `accept` per mapping; the router's own `ota_filter` forward chain
//!   already accepts inbound `ct status dnat`, so nothing else is needed;
//! - `upnp_prerouting`, jumped to from a `prerouting` nat chain: one `dnat`
//!   per mapping, `iif "wan" ... th dport P dnat ip to HOST:PORT`;
//! - `upnp_postrouting`, jumped to from a `postrouting` nat chain: PCP PEER
//!   source NAT rules.
//!
//! The router's `masquerade` (in `ota_nat`) still does every outbound
//! mapping, so the router is a [`RouterKind::Cone`] for traffic no host has
//! mapped.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpStream};
use std::ops::RangeInclusive;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;

use super::{cmd, netns, Lab, Router, RouterKind};

/// `miniupnpd` and its Debian package (which pulls in the nftables build,
/// miniupnpd-nftables, on a default Debian).
pub(crate) const MINIUPNPD: cmd::Tool = cmd::Tool {
    program: "miniupnpd",
    package: "miniupnpd",
};

/// TCP port of the IGD's HTTP server (device description and SOAP control,
/// UPnP Device Architecture sections 2 and 3) on the router's LAN address.
pub const UPNP_HTTP_PORT: u16 = 5000;
/// UDP port of NAT-PMP (RFC 6886 section 3) and PCP (RFC 6887 section
/// 19.1) on the router's LAN address.
pub const NATPMP_PORT: u16 = 5351;
/// External and internal ports a LAN host may map (miniupnpd permission
/// rule `allow 1024-65535 <LAN>/24 1024-65535`, then `deny` for the rest).
pub const UPNP_PORTS: RangeInclusive<u16> = 1024..=65535;
/// The longest UPnP port-mapping lease, 604,800 s (one week): IGD:2
/// WANIPConnection:2 section 2.3.16 `PortMappingLeaseDuration`; a request
/// for 0 or longer is stored with this lease.
pub const UPNP_MAX_LEASE: Duration = Duration::from_secs(604_800);
/// The shortest PCP mapping lifetime granted, 120 s (RFC 6887 section 15,
/// miniupnpd `min_lifetime`).
pub const PCP_MIN_LIFETIME: Duration = Duration::from_secs(120);
/// The longest PCP mapping lifetime granted, 86,400 s (RFC 6887 section 15,
/// miniupnpd `max_lifetime`).
pub const PCP_MAX_LIFETIME: Duration = Duration::from_secs(86_400);
/// The nftables table (family `inet`) that holds miniupnpd's chains in a
/// [`RouterKind::Upnp`] router; see the module docs.
pub const UPNP_NFT_TABLE: &str = "ota_upnp";
/// Interval of SSDP `NOTIFY` announcements on the LAN, seconds (miniupnpd
/// `notify_interval`).
const NOTIFY_INTERVAL_SECS: u32 = 30;
/// How long [`Lab::start_miniupnpd`] waits for the HTTP server to answer.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one readiness probe (connect, request, answer) may take.
const PROBE_TIMEOUT: Duration = Duration::from_millis(500);
/// How long [`Lab::set_upnp_permissions`] lets the old miniupnpd end after
/// SIGTERM before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(3);
/// The file in miniupnpd's temp dir that holds the PID [`Lab::spawn`] gave
/// it (`ip netns exec` execs it, so it is miniupnpd's own).
const SPAWNED_PID_FILE: &str = "lab.pid";

impl Router {
    /// The IGD's root device description, `http://<lan gateway>:5000/rootDesc.xml`
    /// (what its SSDP answers give as `LOCATION`), for a
    /// [`RouterKind::Upnp`] router; `None` for other kinds.
    pub fn upnp_description_url(&self) -> Option<String> {
        (self.kind == RouterKind::Upnp).then(|| format!("http://{}:{UPNP_HTTP_PORT}/rootDesc.xml", self.lan_gateway))
    }
}

impl Lab {
    /// Starts miniupnpd in `router`'s namespace: loads [`upnp_ruleset`],
    /// writes its configuration ([`miniupnpd_conf`]) into a temp dir that
    /// also holds its lease file, pid file and stdout/stderr (its log, with
    /// `-d`), runs it in the foreground through the lab's spawn (killed by
    /// PID with the lab) and returns once its HTTP server answers a `GET`
    /// of the root description (within 10 s).
    ///
    /// Errors: `miniupnpd` missing (naming the Debian package), it exits
    /// early or does not answer in time (its log is in the error), or a lab
    /// command fails.
    pub(super) fn start_miniupnpd(&mut self, router: &Router) -> anyhow::Result<()> {
        self.launch_miniupnpd(router, false)
    }

    /// Restarts the miniupnpd of [`RouterKind::Upnp`] router `router` with
    /// new permission rules: `deny_all` makes it refuse every port mapping
    /// (the only rule is `deny 0-65535 0.0.0.0/0 0-65535`, so
    /// `AddPortMapping` and `AddAnyPortMapping` fail, miniupnpd 2.3 answers
    /// 606 `Action not authorized`) while SSDP, the device description and
    /// `GetExternalIPAddress` still answer: a router whose owner turned
    /// mappings off, or one that refuses them for this LAN; `false` brings
    /// back the default rules ([`UPNP_PORTS`] for the LAN /24). The running
    /// miniupnpd gets SIGTERM (SIGKILL after 3 s) and is reaped, its
    /// nftables table is loaded afresh (existing mappings are gone) and the
    /// new one is started as [`Lab::add_router`] starts it (ready within 10 s).
    ///
    /// Errors: `router` is not a [`RouterKind::Upnp`] router of this lab,
    /// or as at [`Lab::add_router`].
    pub fn set_upnp_permissions(&mut self, router: &Router, deny_all: bool) -> anyhow::Result<()> {
        anyhow::ensure!(
            router.kind == RouterKind::Upnp && self.routers.iter().any(|r| r.ns == router.ns),
            "{} is not a UPnP router of this lab",
            router.ns
        );
        let prefix = miniupnpd_dir_prefix(router);
        let pid_file = self
            .temp_dirs
            .iter()
            .rev()
            .find(|d| {
                d.path()
                    .file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with(&prefix))
            })
            .map(|d| d.path().join(SPAWNED_PID_FILE))
            .with_context(|| format!("no miniupnpd was started in {}", router.ns))?;
        let pid: u32 = std::fs::read_to_string(&pid_file)
            .with_context(|| format!("read {}", pid_file.display()))?
            .trim()
            .parse()
            .with_context(|| format!("parse {}", pid_file.display()))?;
        self.stop_child(pid);
        cmd::nft_in(&router.ns, &format!("delete table inet {UPNP_NFT_TABLE}\n"))?;
        self.launch_miniupnpd(router, deny_all)
    }

    /// Ends the child [`Lab::spawn`] started as `pid`: SIGTERM, SIGKILL
    /// after [`STOP_GRACE`], reaped and forgotten (so the lab never signals
    /// the PID again).
    fn stop_child(&mut self, pid: u32) {
        let Some(i) = self.children.iter().position(|c| c.id() == pid) else {
            return;
        };
        let mut child = self.children.remove(i);
        if matches!(child.try_wait(), Ok(Some(_))) {
            return;
        }
        // SAFETY: kill(2) of a child of ours that has not been reaped.
        unsafe {
            libc::kill(pid as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + STOP_GRACE;
        while Instant::now() < deadline {
            if matches!(child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    /// [`Lab::start_miniupnpd`] with the permission rules of
    /// [`miniupnpd_conf`]`(.., deny_all)`.
    fn launch_miniupnpd(&mut self, router: &Router, deny_all: bool) -> anyhow::Result<()> {
        let program = MINIUPNPD.path()?;
        cmd::nft_in(&router.ns, &upnp_ruleset())?;
        let dir = tempfile::Builder::new()
            .prefix(&miniupnpd_dir_prefix(router))
            .tempdir()
            .context("temp dir for miniupnpd")?;
        let log_dir = dir.path().to_path_buf();
        let conf = log_dir.join("miniupnpd.conf");
        std::fs::write(&conf, miniupnpd_conf(router, &log_dir, deny_all)).context("write miniupnpd.conf")?;
        let path_str = |p: &Path| p.to_string_lossy().into_owned();
        let (conf_s, pid_s) = (path_str(&conf), path_str(&log_dir.join("miniupnpd.pid")));
        let program = path_str(&program);
        // -d: foreground, log to stderr; -P: our own pid file, so two
        // routers (or two labs) never see each other's.
        let args = ["-d", "-f", &conf_s, "-P", &pid_s];
        let ns = router.ns.clone();
        let pid = self.spawn_logged(&ns, &program, &args, &log_dir, "miniupnpd")?;
        std::fs::write(log_dir.join(SPAWNED_PID_FILE), pid.to_string()).context("write the miniupnpd PID")?;
        self.temp_dirs.push(dir);
        let http = SocketAddrV4::new(router.lan_gateway, UPNP_HTTP_PORT);
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = self.child_exit(pid) {
                anyhow::bail!("miniupnpd in {ns} exited early ({status}): {}", logs(&log_dir));
            }
            if serves_root_description(&ns, http)? {
                return Ok(());
            }
            if Instant::now() >= deadline {
                anyhow::bail!(
                    "miniupnpd in {ns} did not answer on http://{http}/rootDesc.xml within {READY_TIMEOUT:?}: {}",
                    logs(&log_dir)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// The name prefix of the temp dir of `router`'s miniupnpd (its namespace
/// is unique in the lab).
fn miniupnpd_dir_prefix(router: &Router) -> String {
    format!("ota-lab-miniupnpd-{}-", router.ns)
}

/// The nftables table miniupnpd needs (see the module docs): table `inet`
/// [`UPNP_NFT_TABLE`] with the base chains `forward` (filter, policy accept),
/// `prerouting` (dstnat) and `postrouting` (srcnat), each jumping to
/// miniupnpd's empty chain `upnp_forward`, `upnp_prerouting`,
/// `upnp_postrouting`.
pub(crate) fn upnp_ruleset() -> String {
    format!(
        "table inet {UPNP_NFT_TABLE} {{
  chain forward {{
    type filter hook forward priority filter; policy accept;
    jump upnp_forward
  }}
  chain upnp_forward {{
  }}
  chain prerouting {{
    type nat hook prerouting priority dstnat; policy accept;
    jump upnp_prerouting
  }}
  chain upnp_prerouting {{
  }}
  chain postrouting {{
    type nat hook postrouting priority srcnat; policy accept;
    jump upnp_postrouting
  }}
  chain upnp_postrouting {{
  }}
}}
"
    )
}

/// miniupnpd.conf for `router`, its files in `dir`: WAN `wan`, SSDP and
/// NAT-PMP/PCP on `lan` only, HTTP on [`UPNP_HTTP_PORT`], IPv4 only, secure
/// mode, NAT-PMP/PCP on, the chains of [`upnp_ruleset`], PCP lifetimes
/// [`PCP_MIN_LIFETIME`]..=[`PCP_MAX_LIFETIME`], a uuid from the router's
/// index, and the permission rules: [`UPNP_PORTS`] for the LAN /24, then
/// `deny` for the rest; with `deny_all` only the `deny` rule, so every
/// mapping is refused (see [`Lab::set_upnp_permissions`]).
pub(crate) fn miniupnpd_conf(router: &Router, dir: &Path, deny_all: bool) -> String {
    let [a, b, c, _] = router.lan_gateway.octets();
    let lan = Ipv4Addr::new(a, b, c, 0);
    let (lo, hi) = (UPNP_PORTS.start(), UPNP_PORTS.end());
    let file = |name: &str| dir.join(name).to_string_lossy().into_owned();
    // miniupnpd takes the first matching rule; the deny rule ends both sets.
    let allow = if deny_all {
        String::new()
    } else {
        format!("allow {lo}-{hi} {lan}/24 {lo}-{hi}\n")
    };
    format!(
        "ext_ifname=wan
listening_ip=lan
http_port={UPNP_HTTP_PORT}
ipv6_disable=yes
enable_upnp=yes
enable_natpmp=yes
secure_mode=yes
system_uptime=no
notify_interval={NOTIFY_INTERVAL_SECS}
min_lifetime={min}
max_lifetime={max}
lease_file={leases}
minissdpdsocket={minissdpd}
uuid=6f7a1d2c-0b5e-4c3a-9d8e-{index:012x}
friendly_name=ota lab router {index}
upnp_table_name={UPNP_NFT_TABLE}
upnp_nat_table_name={UPNP_NFT_TABLE}
upnp_forward_chain=upnp_forward
upnp_nat_chain=upnp_prerouting
upnp_nat_postrouting_chain=upnp_postrouting
{allow}deny 0-65535 0.0.0.0/0 0-65535
",
        min = PCP_MIN_LIFETIME.as_secs(),
        max = PCP_MAX_LIFETIME.as_secs(),
        leases = file("upnp.leases"),
        // Never a system minissdpd: SSDP is answered by this miniupnpd.
        minissdpd = file("minissdpd.sock"),
        index = router.index,
    )
}

/// Whether an HTTP `GET /rootDesc.xml` from inside namespace `ns` to `http`
/// gets a `200` within [`PROBE_TIMEOUT`] (a refused connection, before the
/// server listens, is `false`).
fn serves_root_description(ns: &str, http: SocketAddrV4) -> anyhow::Result<bool> {
    let stream = netns::in_netns(ns, || TcpStream::connect_timeout(&http.into(), PROBE_TIMEOUT))?;
    let mut stream = match stream {
        Ok(s) => s,
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
            ) =>
        {
            return Ok(false)
        }
        Err(e) => return Err(e).with_context(|| format!("connect to {http} in {ns}")),
    };
    stream.set_read_timeout(Some(PROBE_TIMEOUT))?;
    stream.set_write_timeout(Some(PROBE_TIMEOUT))?;
    let request = format!("GET /rootDesc.xml HTTP/1.1\r\nHost: {http}\r\nConnection: close\r\n\r\n");
    if stream.write_all(request.as_bytes()).is_err() {
        return Ok(false);
    }
    let mut head = [0u8; 12];
    Ok(stream.read_exact(&mut head).is_ok() && head.starts_with(b"HTTP/1.") && &head[9..12] == b"200")
}

/// The end of miniupnpd's stderr (its log), for error messages.
fn logs(dir: &Path) -> String {
    let text = std::fs::read_to_string(dir.join("stderr")).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    format!("stderr:\n{}", lines[lines.len().saturating_sub(30)..].join("\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn router() -> Router {
        Router {
            index: 7,
            kind: RouterKind::Upnp,
            ns: "ota-1-0-r7".into(),
            wan: Ipv4Addr::new(11, 0, 1, 7),
            public: Ipv4Addr::new(11, 0, 1, 7),
            carrier_ns: None,
            lan_gateway: Ipv4Addr::new(192, 168, 7, 1),
            hosts: 0,
        }
    }

    #[test]
    fn the_config_allows_only_the_lan_and_uses_our_chains() {
        let conf = miniupnpd_conf(&router(), Path::new("/tmp/x"), false);
        for line in [
            "ext_ifname=wan",
            "listening_ip=lan",
            "http_port=5000",
            "secure_mode=yes",
            "lease_file=/tmp/x/upnp.leases",
            "upnp_table_name=ota_upnp",
            "upnp_nat_chain=upnp_prerouting",
            "allow 1024-65535 192.168.7.0/24 1024-65535",
            "deny 0-65535 0.0.0.0/0 0-65535",
            "uuid=6f7a1d2c-0b5e-4c3a-9d8e-000000000007",
        ] {
            assert!(conf.lines().any(|l| l == line), "{line:?} missing from:\n{conf}");
        }
        // The deny rule comes last: miniupnpd takes the first match.
        assert!(conf.trim_end().ends_with("deny 0-65535 0.0.0.0/0 0-65535"));
    }

    #[test]
    fn deny_all_keeps_only_the_deny_rule() {
        let conf = miniupnpd_conf(&router(), Path::new("/tmp/x"), true);
        assert!(!conf.lines().any(|l| l.starts_with("allow ")), "{conf}");
        assert!(conf
            .trim_end()
            .ends_with("\nupnp_nat_postrouting_chain=upnp_postrouting\ndeny 0-65535 0.0.0.0/0 0-65535"));
    }

    #[test]
    fn every_chain_the_config_names_is_in_the_ruleset() {
        let rules = upnp_ruleset();
        assert!(rules.starts_with("table inet ota_upnp {"));
        let conf = miniupnpd_conf(&router(), Path::new("/tmp/x"), false);
        for key in ["upnp_forward_chain=", "upnp_nat_chain=", "upnp_nat_postrouting_chain="] {
            let chain = conf
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .unwrap_or_else(|| panic!("{key} missing"));
            assert!(rules.contains(&format!("chain {chain} {{")), "{chain}");
            assert!(rules.contains(&format!("jump {chain}")), "{chain}");
        }
    }

    #[test]
    fn only_upnp_routers_have_a_description_url() {
        let mut r = router();
        assert_eq!(
            r.upnp_description_url().as_deref(),
            Some("http://192.168.7.1:5000/rootDesc.xml")
        );
        r.kind = RouterKind::Cone;
        assert_eq!(r.upnp_description_url(), None);
    }
}
