//! Server hosts on the lab's internet: a namespace of their own (the
//! origin's tracker, seeder and S3 endpoint in a flash crowd), joined to
//! the internet bridge by a veth whose egress can be shaped, so the
//! origin's uplink is a setting of the experiment.

use std::net::Ipv4Addr;

use super::Lab;

/// At most this many server hosts per lab (addresses 11.0.14.1 and up).
const MAX_SERVER_HOSTS: usize = 200;

/// One server host: a namespace `<prefix>srvN` with interface `eth0` on
/// the internet bridge.
#[derive(Debug, Clone)]
pub struct ServerHost {
    /// Its namespace's name; enter it with [`super::netns::enter`] to bind
    /// servers there.
    pub ns: String,
    /// Its internet address, 11.0.14.N.
    pub addr: Ipv4Addr,
}

impl Lab {
    /// Adds a server host on the internet bridge (namespace `<prefix>srvN`,
    /// address 11.0.14.N/20, default route to [`super::INTERNET_GATEWAY`]), its
    /// uplink (egress of its `eth0`) shaped to `uplink_bps` bits/s with a
    /// token bucket (tbf, see [`super::tbf_params`]) when given.
    ///
    /// Errors: a command fails or times out; more than 200 server hosts.
    pub fn add_server_host(&mut self, uplink_bps: Option<u64>) -> anyhow::Result<ServerHost> {
        let root = format!("{}srv", self.prefix);
        let n = self.namespaces.iter().filter(|ns| ns.starts_with(&root)).count() + 1;
        anyhow::ensure!(n <= MAX_SERVER_HOSTS, "at most {MAX_SERVER_HOSTS} server hosts");
        let ns = format!("{root}{n}");
        let addr = Ipv4Addr::new(11, 0, 14, n as u8);
        self.add_namespace(&ns)?;
        self.attach_veth(&ns, &format!("s{n}"), "eth0", addr)?;
        if let Some(bps) = uplink_bps {
            super::link::tbf(&ns, "eth0", bps)?;
        }
        Ok(ServerHost { ns, addr })
    }
}
