//! Links with bandwidth, latency and loss: a router's WAN ([`WanLink`],
//! [`Lab::add_router_with`]) and a device's LAN/WiFi rate
//! ([`Lab::shape_host`]).
//!
//! # Bandwidth
//!
//! A token bucket filter, `tc qdisc ... tbf` (tc-tbf(8), iproute2), on the
//! egress of the interface that sends in the shaped direction. Rates are in
//! bits per second, as tc's `rate ...bit`. Parameters ([`tbf_params`]):
//!
//! - `burst` (bucket size) = max(rate / 8 / [`HZ`], 2 × 1514 bytes): at
//!   least one timer tick of traffic at the lowest kernel timer frequency
//!   (tc-tbf(8): "at least rate/HZ"), and at least two full Ethernet frames
//!   so a maximum-size packet always fits (larger GSO packets are split by
//!   tbf into MTU-size segments);
//! - `limit` (queue, bytes) = burst + max(rate × [`QUEUE_MS`] ms, 16 ×
//!   1514 bytes): a home router's buffer of 50 ms at the link rate, never
//!   fewer than 16 frames, so TCP fills the link at low rates too.
//!
//! # Latency and loss
//!
//! This kernel has no `netem`, so a WAN with delay or loss is not a veth:
//! it is two persistent taps (`ip tuntap`), `rN` on the internet's `br0`
//! and `wan` in the router (or carrier) namespace, each plugged into its own
//! VDE switch (Debian's vde2, `vde_switch --tap`, run inside the tap's
//! namespace, so no `vde_plug2tap` is needed), and between the two switches
//! a `wirefilter` (Debian's vde-wirefilter) with `-d` (delay, ms each way)
//! and `-l` (loss, percent each way): three processes per router, started
//! in the foreground with a held-open stdin (both programs end on EOF of
//! their console) and killed by PID with the lab. Bandwidth stays with tbf
//! on the taps, not wirefilter's `-b`: one mechanism and one unit (bits/s)
//! for both kinds of link, and tbf drops from a bounded queue like a router
//! does, where wirefilter's `-b` is in bytes/s and queues in its own
//! channel buffer. The userspace path through vde tops out at a few hundred
//! Mbit/s; shape a vde link below that.

use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::Context;

use super::{cmd, in_netns, Host, Lab, INTERNET_GATEWAY};

/// The lowest kernel timer frequency (Hz) tbf's burst is sized for
/// (CONFIG_HZ is 100, 250, 300 or 1000).
pub const HZ: u64 = 100;
/// How much queue tbf keeps beyond its burst, in milliseconds at the
/// shaped rate.
pub const QUEUE_MS: u64 = 50;
/// A full Ethernet frame, bytes (1500 MTU + 14 header).
const FRAME: u64 = 1514;
/// How long [`Lab::add_router_with`] waits for a vde link to carry traffic
/// (usually well under a second; 10 s was too short twice with a 50-device
/// flash crowd loading both cores beside the test).
const VDE_READY: Duration = Duration::from_secs(30);

/// The WAN link of a home router, as [`Lab::add_router_with`] builds it.
/// [`WanLink::default`] is today's unshaped veth (no delay, no loss).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct WanLink {
    /// Upstream rate, router → internet, in bits per second (as tc's
    /// `rate ...bit`), or unshaped; tbf on the router's `wan` egress.
    pub up_bps: Option<u64>,
    /// Downstream rate, internet → router, in bits per second, or
    /// unshaped; tbf on `rN`'s egress in the internet namespace.
    pub down_bps: Option<u64>,
    /// One-way delay in milliseconds, the same each way (a round trip
    /// takes twice this); above 0 the link goes through vde's wirefilter.
    pub delay_ms: u32,
    /// Random loss in percent (0 to 100), each way independently (a round
    /// trip survives with probability (1 − loss/100)²); above 0 the link
    /// goes through vde's wirefilter.
    pub loss_pct: f32,
}

impl WanLink {
    /// Whether this link needs vde (delay or loss), not a plain veth.
    pub fn needs_vde(&self) -> bool {
        self.delay_ms > 0 || self.loss_pct > 0.0
    }
}

/// tbf's `(burst, limit)` in bytes for `rate_bps` bits per second: see the
/// module docs for the formula.
pub fn tbf_params(rate_bps: u64) -> (u64, u64) {
    let bytes_per_s = rate_bps / 8;
    let burst = (bytes_per_s / HZ).max(2 * FRAME);
    let limit = burst + (bytes_per_s * QUEUE_MS / 1000).max(16 * FRAME);
    (burst, limit)
}

/// Puts a tbf of `rate_bps` bits/s on the egress of `dev` in namespace
/// `ns` (replacing its root qdisc).
pub(super) fn tbf(ns: &str, dev: &str, rate_bps: u64) -> anyhow::Result<()> {
    anyhow::ensure!(
        rate_bps >= 8_000,
        "a shaped rate must be at least 8000 bit/s, not {rate_bps}"
    );
    let (burst, limit) = tbf_params(rate_bps);
    let (rate, burst, limit) = (format!("{rate_bps}bit"), burst.to_string(), limit.to_string());
    cmd::run(
        cmd::TC,
        &[
            "-n", ns, "qdisc", "replace", "dev", dev, "root", "tbf", "rate", &rate, "burst", &burst, "limit", &limit,
        ],
        None,
    )
    .with_context(|| format!("cannot shape {dev} in {ns} to {rate_bps} bit/s"))?;
    Ok(())
}

impl Lab {
    /// Joins namespace `ns` (a router, or a CGNAT router's carrier) to the
    /// internet bridge through `link`: a veth (unshaped, or tbf only) or
    /// the vde path (delay or loss), interfaces `wan` in `ns` and
    /// `r<index>` on `br0` either way, so the nftables rules stay the same;
    /// then tbf for `link`'s rates.
    pub(super) fn attach_link(&mut self, ns: &str, index: u32, addr: Ipv4Addr, link: &WanLink) -> anyhow::Result<()> {
        anyhow::ensure!(
            (0.0..=100.0).contains(&link.loss_pct),
            "loss is a percentage from 0 to 100, not {}",
            link.loss_pct
        );
        if link.needs_vde() {
            self.attach_vde(ns, index, addr, link)?;
        } else {
            self.attach_to_internet(ns, index, addr)?;
        }
        if let Some(up) = link.up_bps {
            tbf(ns, "wan", up)?;
        }
        if let Some(down) = link.down_bps {
            let inet = self.internet_ns.clone();
            tbf(&inet, &format!("r{index}"), down)?;
        }
        Ok(())
    }

    /// The vde version of `attach_to_internet`: taps `r<index>` (on `br0`)
    /// and `wan` (in `ns`), a `vde_switch --tap` for each, a wirefilter
    /// between; returns once a packet crossed the link.
    fn attach_vde(&mut self, ns: &str, index: u32, addr: Ipv4Addr, link: &WanLink) -> anyhow::Result<()> {
        let switch = cmd::VDE_SWITCH.path()?;
        let switch = switch.to_str().context("vde_switch path is not UTF-8")?.to_string();
        let wirefilter = cmd::WIREFILTER.path()?;
        let wirefilter = wirefilter.to_str().context("wirefilter path is not UTF-8")?.to_string();
        let inet = self.internet_ns.clone();
        let port = format!("r{index}");
        let dir = tempfile::Builder::new()
            .prefix(&format!("{}vde-r{index}-", self.prefix))
            .tempdir()
            .context("temp dir for the vde sockets")?;
        let path = dir.path().to_path_buf();
        self.temp_dirs.push(dir);
        let inet_sock = path.join("inet");
        let wan_sock = path.join("wan");
        let s = |p: &Path| p.to_str().map(str::to_string).context("temp path is not UTF-8");
        let (inet_s, wan_s) = (s(&inet_sock)?, s(&wan_sock)?);

        cmd::ip(&["-n", &inet, "tuntap", "add", "dev", &port, "mode", "tap"])?;
        cmd::ip(&["-n", &inet, "link", "set", &port, "master", "br0"])?;
        cmd::ip(&["-n", &inet, "link", "set", &port, "up"])?;
        cmd::ip(&["-n", ns, "tuntap", "add", "dev", "wan", "mode", "tap"])?;
        super::configure_internet_interface(ns, "wan", addr)?;

        let inet_pid = self.spawn_held(
            &inet,
            &switch,
            &["--sock", &inet_s, "--tap", &port],
            &path.join("switch-inet.log"),
        )?;
        let wan_pid = self.spawn_held(
            ns,
            &switch,
            &["--sock", &wan_s, "--tap", "wan"],
            &path.join("switch-wan.log"),
        )?;
        let deadline = Instant::now() + VDE_READY;
        while !(inet_sock.join("ctl").exists() && wan_sock.join("ctl").exists()) {
            for pid in [inet_pid, wan_pid] {
                if let Some(status) = self.child_exit(pid) {
                    anyhow::bail!("vde_switch for {ns} exited ({status}): {}", vde_logs(&path));
                }
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "vde_switch for {ns} did not start within {VDE_READY:?}: {}",
                vde_logs(&path)
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let plugs = format!("{inet_s}:{wan_s}");
        let delay = link.delay_ms.to_string();
        let loss = link.loss_pct.to_string();
        let filter_pid = self.spawn_held(
            &inet,
            &wirefilter,
            &["--vde-plug", &plugs, "--delay", &delay, "--loss", &loss],
            &path.join("wirefilter.log"),
        )?;
        // Ready once a datagram to the gateway's discard port comes back as
        // ICMP port unreachable (ECONNREFUSED): the path works both ways.
        let probe = in_netns(ns, || -> std::io::Result<UdpSocket> {
            let sock = UdpSocket::bind(SocketAddrV4::new(addr, 0))?;
            sock.connect(SocketAddrV4::new(INTERNET_GATEWAY, 9))?;
            sock.set_read_timeout(Some(Duration::from_millis(200 + 2 * u64::from(link.delay_ms))))?;
            Ok(sock)
        })?
        .context("probe socket on the vde link")?;
        loop {
            if let Some(status) = self.child_exit(filter_pid) {
                anyhow::bail!("wirefilter for {ns} exited ({status}): {}", vde_logs(&path));
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "the vde link of {ns} carried nothing within {VDE_READY:?}: {}",
                vde_logs(&path)
            );
            let _ = probe.send(b"ota-lab vde probe");
            let mut buf = [0u8; 64];
            if let Err(e) = probe.recv(&mut buf) {
                if e.kind() == std::io::ErrorKind::ConnectionRefused {
                    return Ok(());
                }
            }
        }
    }

    /// Starts `program args...` in namespace `ns` like [`Lab::spawn`], but
    /// with stdin a pipe the lab holds open (vde_switch and wirefilter end
    /// on EOF of their console) and stdout and stderr appended to `log`.
    fn spawn_held(&mut self, ns: &str, program: &str, args: &[&str], log: &Path) -> anyhow::Result<u32> {
        let out = std::fs::File::create(log).with_context(|| format!("cannot create {}", log.display()))?;
        let err = out.try_clone().context("log file")?;
        // The child keeps its stdin pipe (not taken), open until the lab
        // drops it after killing the process.
        self.spawn_with_output(ns, program, args, Stdio::piped(), out.into(), err.into())
    }

    /// Shapes one device's own link, the LAN or WiFi rate of that device:
    /// `up_bps` (bits/s, host → router) with tbf on the host's `eth0`,
    /// `down_bps` (bits/s, router → host) with tbf on the router's `hM`;
    /// `None` leaves that direction unshaped. Each host gets its own
    /// rate, which only approximates a shared WiFi medium (where every
    /// station's airtime comes out of one channel): to model a crowded
    /// WiFi, give each host its share of the channel.
    ///
    /// Errors: `host` is not of this lab, a rate is below 8000 bit/s, or
    /// `tc` fails (missing: Debian package iproute2) or times out.
    pub fn shape_host(&mut self, host: &Host, up_bps: Option<u64>, down_bps: Option<u64>) -> anyhow::Result<()> {
        let router = self
            .routers
            .iter()
            .find(|r| r.index == host.router)
            .context("host is not part of this lab")?;
        let port = host
            .ns
            .strip_prefix(&format!("{}h", router.ns))
            .filter(|m| !m.is_empty() && m.bytes().all(|b| b.is_ascii_digit()))
            .map(|m| format!("h{m}"))
            .context("host is not part of this lab")?;
        let router_ns = router.ns.clone();
        if let Some(up) = up_bps {
            tbf(&host.ns, "eth0", up)?;
        }
        if let Some(down) = down_bps {
            tbf(&router_ns, &port, down)?;
        }
        Ok(())
    }
}

/// The vde processes' logs in `dir`, for an error message.
fn vde_logs(dir: &Path) -> String {
    ["switch-inet.log", "switch-wan.log", "wirefilter.log"]
        .iter()
        .map(|f| {
            let text = std::fs::read_to_string(dir.join(f)).unwrap_or_default();
            format!("{f}: {}", text.trim())
        })
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tbf_burst_covers_a_tick_and_two_frames() {
        // 1 Mbit/s: 1250 bytes a tick, so two frames.
        assert_eq!(tbf_params(1_000_000), (3028, 3028 + 16 * 1514));
        // 1 Gbit/s: 1.25 MB a tick at 100 Hz, 6.25 MB of queue.
        assert_eq!(tbf_params(1_000_000_000), (1_250_000, 1_250_000 + 6_250_000));
    }
}
