//! A real STUN server in the lab's internet: Debian's coturn
//! (`turnserver --stun-only`) on two internet addresses, so RFC 5780
//! behaviour discovery (`turnutils_natdiscovery`) works against it.

use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::time::{Duration, Instant};

use anyhow::Context;

use super::{cmd, netns, Lab};

/// `turnserver` and its Debian package.
pub(crate) const TURNSERVER: cmd::Tool = cmd::Tool {
    program: "turnserver",
    package: "coturn",
};

/// The primary STUN port of [`Lab::start_coturn`].
pub const STUN_PORT: u16 = 3478;
/// The alternative port (RFC 5780 OTHER-ADDRESS) of [`Lab::start_coturn`].
pub const STUN_ALT_PORT: u16 = 3479;
/// How long [`Lab::start_coturn`] waits for the first binding answer.
const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// A coturn STUN server started by [`Lab::start_coturn`]; killed with the lab.
#[derive(Debug, Clone)]
pub struct Coturn {
    /// The primary address, listening on [`STUN_PORT`] and [`STUN_ALT_PORT`].
    pub primary: Ipv4Addr,
    /// The other address (RFC 5780), on the same two ports.
    pub other: Ipv4Addr,
    /// The `ip netns exec` process running `turnserver` (its PID).
    pub pid: u32,
    /// Where its log, stdout and stderr go (inside the lab's temp dir).
    pub log_dir: std::path::PathBuf,
}

impl Coturn {
    /// The primary STUN endpoint, `primary:3478`.
    pub fn endpoint(&self) -> SocketAddrV4 {
        SocketAddrV4::new(self.primary, STUN_PORT)
    }
}

impl Lab {
    /// Starts Debian's coturn as a STUN-only server (no TURN, no CLI, no
    /// TLS/DTLS, no config file: `-c /dev/null`) in the internet namespace
    /// on two new internet addresses ([`Lab::add_internet_address`]), ports
    /// [`STUN_PORT`] and [`STUN_ALT_PORT`] on each, with RFC 5780 behaviour
    /// discovery. It runs in the foreground through [`Lab::spawn`], so the
    /// lab kills it; its log, pid file and user database are in a temp dir
    /// removed with the lab. Returns once it has answered a binding
    /// request (within 10 s).
    ///
    /// Errors: `turnserver` missing (naming the Debian package coturn), it
    /// exits early or does not answer in time (its log is in the error), or
    /// a lab command fails.
    pub fn start_coturn(&mut self) -> anyhow::Result<Coturn> {
        let program = TURNSERVER.path()?;
        let primary = self.add_internet_address()?;
        let other = self.add_internet_address()?;
        let dir = tempfile::Builder::new()
            .prefix("ota-lab-coturn-")
            .tempdir()
            .context("temp dir for coturn")?;
        let log_dir = dir.path().to_path_buf();
        let log = log_dir.join("turn.log");
        let (a1, a2) = (primary.to_string(), other.to_string());
        let (port, alt) = (STUN_PORT.to_string(), STUN_ALT_PORT.to_string());
        let pidfile = log_dir.join("turnserver.pid");
        let userdb = log_dir.join("turndb");
        let path_str = |p: &std::path::Path| p.to_string_lossy().into_owned();
        let (log_s, pid_s, db_s) = (path_str(&log), path_str(&pidfile), path_str(&userdb));
        let args = [
            "-c",
            "/dev/null",
            "--stun-only",
            "--no-cli",
            "--no-tls",
            "--no-dtls",
            "--no-auth",
            "--listening-ip",
            &a1,
            "--listening-ip",
            &a2,
            "--listening-port",
            &port,
            "--alt-listening-port",
            &alt,
            "--log-file",
            &log_s,
            "--simple-log",
            "--no-stdout-log",
            "--pidfile",
            &pid_s,
            "--userdb",
            &db_s,
        ];
        let ns = self.internet_ns.clone();
        let program = program.to_string_lossy().into_owned();
        let pid = self.spawn_logged(&ns, &program, &args, &log_dir, "coturn")?;
        self.temp_dirs.push(dir);
        let server = Coturn {
            primary,
            other,
            pid,
            log_dir,
        };
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = self.child_exit(pid) {
                anyhow::bail!("turnserver exited early ({status}): {}", server.logs());
            }
            if answers_binding(&ns, server.endpoint())? {
                return Ok(server);
            }
            if Instant::now() >= deadline {
                anyhow::bail!(
                    "turnserver did not answer a binding request within {READY_TIMEOUT:?}: {}",
                    server.logs()
                );
            }
        }
    }
}

impl Coturn {
    /// The end of its stderr and log, for error messages.
    fn logs(&self) -> String {
        let tail = |name: &str| {
            let text = std::fs::read_to_string(self.log_dir.join(name)).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(20)..].join("\n")
        };
        format!("stderr:\n{}\nlog:\n{}", tail("stderr"), tail("turn.log"))
    }
}

/// Whether a binding request from namespace `ns` to `server` gets a
/// Binding success response with the same transaction id within 200 ms.
fn answers_binding(ns: &str, server: SocketAddrV4) -> anyhow::Result<bool> {
    let sock = netns::in_netns(ns, || UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)))?.context("bind a UDP socket")?;
    sock.set_read_timeout(Some(Duration::from_millis(200)))?;
    let request = ota_proto::stun::binding_request(stun_rs::TransactionId::default());
    sock.send_to(&request, server).context("send a binding request")?;
    let mut buf = [0u8; 1500];
    match sock.recv_from(&mut buf) {
        // 0x0101: Binding success response (RFC 8489 section 5); bytes
        // 8..20 are the transaction id.
        Ok((n, _)) => Ok(n >= 20 && buf[..2] == [0x01, 0x01] && buf[8..20] == request[8..20]),
        Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => Ok(false),
        // ICMP port unreachable before the server listens.
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            std::thread::sleep(Duration::from_millis(100));
            Ok(false)
        }
        Err(e) => Err(e).context("receive a binding answer"),
    }
}
