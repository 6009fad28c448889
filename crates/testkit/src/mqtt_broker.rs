//! A throwaway MQTT broker for tests: Debian's `mosquitto` on 127.0.0.1 at a
//! free port, with a configuration written into a temporary folder,
//! killed by PID and removed on drop. Either open to anonymous clients, or
//! with users (`mosquitto_passwd`) and an access-control file such as
//! `deploy/mosquitto/acl`. Missing binaries fail the test with a message
//! naming the package (these tests never skip).

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::child::{require, ChildGuard};

/// The broker's program.
pub const MOSQUITTO: &str = "/usr/sbin/mosquitto";
/// Its password-file tool.
pub const MOSQUITTO_PASSWD: &str = "/usr/bin/mosquitto_passwd";

/// A running broker; killed and its folder removed on drop.
pub struct MqttBroker {
    addr: SocketAddr,
    child: ChildGuard,
    _dir: tempfile::TempDir,
}

impl std::fmt::Debug for MqttBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MqttBroker")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl MqttBroker {
    /// A broker that lets anonymous clients read and write every topic.
    pub async fn start() -> MqttBroker {
        Self::start_with("allow_anonymous true\n", &[], None).await
    }

    /// A broker that admits only `users` (name, password), with the
    /// access-control file `acl` (mosquitto's `acl_file` format).
    pub async fn start_with_users(users: &[(&str, &str)], acl: &Path) -> MqttBroker {
        Self::start_with("allow_anonymous false\n", users, Some(acl)).await
    }

    async fn start_with(auth: &str, users: &[(&str, &str)], acl: Option<&Path>) -> MqttBroker {
        require(MOSQUITTO, "mosquitto");
        let dir = tempfile::Builder::new()
            .prefix("ota-test-mqtt-")
            .tempdir()
            .expect("temporary folder");
        let port = crate::net::free_port().expect("free port");
        // `user root`: when the test runs as root, mosquitto would otherwise
        // switch to the `mosquitto` user, which cannot read this folder.
        let mut conf = format!(
            "listener {port} 127.0.0.1\nuser root\npersistence false\nlog_dest stderr\nlog_type error\nlog_type warning\nlog_type notice\n{auth}"
        );
        if !users.is_empty() {
            require(MOSQUITTO_PASSWD, "mosquitto");
            let pw = dir.path().join("passwd");
            for (i, (u, p)) in users.iter().enumerate() {
                let mut cmd = std::process::Command::new(MOSQUITTO_PASSWD);
                if i == 0 {
                    cmd.arg("-c");
                }
                let out = cmd.arg("-b").arg(&pw).arg(u).arg(p).output().expect("mosquitto_passwd");
                assert!(
                    out.status.success(),
                    "mosquitto_passwd: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            conf.push_str(&format!("password_file {}\n", pw.display()));
        }
        if let Some(acl) = acl {
            let copy = dir.path().join("acl");
            std::fs::copy(acl, &copy).unwrap_or_else(|e| panic!("cannot copy {}: {e}", acl.display()));
            conf.push_str(&format!("acl_file {}\n", copy.display()));
        }
        let conf_path = dir.path().join("mosquitto.conf");
        std::fs::write(&conf_path, conf).expect("write mosquitto.conf");
        // mosquitto refuses world-readable password and ACL files in later
        // versions; keep them private.
        for f in ["passwd", "acl"] {
            let p = dir.path().join(f);
            if p.exists() {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).expect("chmod");
            }
        }
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let child = run(&conf_path, addr, dir.path().join("stderr")).await;
        MqttBroker { addr, child, _dir: dir }
    }

    /// Its TCP address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `mqtt://[USER:PASSWORD@]127.0.0.1:PORT`.
    pub fn url(&self, user: Option<(&str, &str)>) -> String {
        match user {
            Some((u, p)) => format!("mqtt://{u}:{p}@{}", self.addr),
            None => format!("mqtt://{}", self.addr),
        }
    }

    /// The last lines of its log.
    pub fn log(&self) -> String {
        self.child.stderr_text()
    }

    /// Kills the broker (SIGKILL) and waits for it, for outage tests; the
    /// port stays reserved to [`Self::restart`].
    pub async fn kill(&mut self) {
        let _ = self.child.child.kill().await;
    }

    /// Starts the broker again on the same port and configuration.
    pub async fn restart(&mut self) {
        let conf_path = self._dir.path().join("mosquitto.conf");
        self.child = run(&conf_path, self.addr, self._dir.path().join("stderr-restarted")).await;
    }
}

/// Starts mosquitto with `conf` and waits (10 s at most) until it accepts
/// connections at `addr`; panics with its log otherwise.
async fn run(conf: &Path, addr: SocketAddr, log: std::path::PathBuf) -> ChildGuard {
    let mut cmd = tokio::process::Command::new(MOSQUITTO);
    cmd.arg("-c").arg(conf).stdout(std::process::Stdio::null());
    let mut child = ChildGuard::spawn(&mut cmd, "mosquitto", log);
    let deadline = Instant::now() + Duration::from_secs(10);
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        if let Some(status) = child.exited() {
            panic!("mosquitto exited ({status}): {}", child.stderr_text());
        }
        assert!(
            Instant::now() < deadline,
            "mosquitto not listening on {addr} after 10 s: {}",
            child.stderr_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    child
}
