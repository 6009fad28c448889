//! Setup shared by the lab tests (`mod common;` in each): talking to a
//! UPnP router from a host behind it (its mapping table, hand-made
//! mappings) independently of the code under test, and reaching a host from
//! the lab's internet.

#![allow(dead_code)]

use std::io::Write;
use std::net::{SocketAddr, SocketAddrV4, TcpStream};
use std::time::Duration;

use igd_next::{Gateway, PortMappingProtocol, SearchOptions};
use ota_deploy::lab::{in_netns, Host, Lab};

/// One row of a UPnP router's mapping table (`GetGenericPortMappingEntry`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Entry {
    pub(crate) protocol: PortMappingProtocol,
    pub(crate) external_port: u16,
    pub(crate) internal_client: String,
    pub(crate) internal_port: u16,
    pub(crate) description: String,
    pub(crate) lease_secs: u32,
}

/// Runs `f` with the UPnP gateway found from `host`'s namespace (an SSDP
/// search from the host's address, at most `search`), inside that namespace,
/// so the SOAP connections `f` makes start there too.
pub(crate) fn with_gateway<T: Send>(host: &Host, search: Duration, f: impl FnOnce(&Gateway) -> T + Send) -> T {
    in_netns(&host.ns, || {
        let mut options = SearchOptions::default();
        options.bind_addr = SocketAddr::V4(SocketAddrV4::new(host.addr, 0));
        options.timeout = Some(search);
        options.single_search_timeout = Some(search);
        let gateway = igd_next::search_gateway(options).expect("SSDP answer from the UPnP router");
        f(&gateway)
    })
    .expect("enter namespace")
}

/// The router's whole mapping table, read from `host`'s namespace with
/// igd-next's blocking client after an SSDP search of at most `search` (at
/// most 128 entries; the first error, 713 past the end, stops it).
pub(crate) fn upnp_table(host: &Host, search: Duration) -> Vec<Entry> {
    with_gateway(host, search, |gateway| {
        (0..128)
            .map_while(|i| gateway.get_generic_port_mapping_entry(i).ok())
            .map(|e| Entry {
                protocol: e.protocol,
                external_port: e.external_port,
                internal_client: e.internal_client,
                internal_port: e.internal_port,
                description: e.port_mapping_description,
                lease_secs: e.lease_duration,
            })
            .collect()
    })
}

/// From the internet namespace: a TCP connect to `target` within `wait`,
/// sending `hello` if it connects; whether it connected.
///
/// Panics on any error but a timeout (a router drops what it does not
/// forward, so a refusal is a lab fault).
pub(crate) fn tcp_connect(lab: &Lab, target: SocketAddrV4, wait: Duration) -> bool {
    let stream =
        in_netns(lab.internet_ns(), || TcpStream::connect_timeout(&target.into(), wait)).expect("enter namespace");
    match stream {
        Ok(mut s) => {
            s.write_all(b"hello").expect("send greeting");
            true
        }
        Err(e) if e.kind() == std::io::ErrorKind::TimedOut => false,
        Err(e) => panic!("connect to {target}: unexpected {e} (a drop should time out)"),
    }
}

/// `line` without ANSI colour escapes (`ESC [ ... m`), as the agents' logs
/// write them.
pub(crate) fn plain(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for d in chars.by_ref() {
                if d == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The value of ` key=value` in a tracing log line (up to the next space,
/// quotes removed; colour escapes ignored).
pub(crate) fn log_field(line: &str, key: &str) -> Option<String> {
    let line = plain(line);
    let at = line.find(&format!(" {key}="))? + key.len() + 2;
    Some(line[at..].split(' ').next()?.trim_matches('"').to_string())
}

/// One `flash-crowd --topology internet --mode p2p` run of a lab test: the
/// settings the tests share (20 ms one way on every home WAN link, records
/// appended to `records`, the work folder `work` kept for the test to read)
/// and what differs.
pub(crate) struct InternetCrowd<'a> {
    /// Number of devices.
    pub(crate) devices: u32,
    /// Router kinds, `--mix` (`cone=1`, `cone=1,symmetric=1`).
    pub(crate) mix: &'a str,
    /// The package file.
    pub(crate) package: &'a std::path::Path,
    /// The records file (`--record`).
    pub(crate) records: &'a std::path::Path,
    /// The work folder (`--work-dir`).
    pub(crate) work: &'a std::path::Path,
    /// `--timeout-secs`.
    pub(crate) timeout_secs: u32,
    /// More flags.
    pub(crate) extra: &'a [&'a str],
    /// Environment variables for the run (the agents inherit them).
    pub(crate) envs: &'a [(&'a str, &'a str)],
}

impl InternetCrowd<'_> {
    /// Runs it to the end and returns its output (status, stdout, stderr).
    pub(crate) fn run(&self) -> std::process::Output {
        let (devices, timeout) = (self.devices.to_string(), self.timeout_secs.to_string());
        let mut args = vec![
            "--topology",
            "internet",
            "--mode",
            "p2p",
            "--devices",
            &devices,
            "--mix",
            self.mix,
            "--wan-delay-ms",
            "20",
            "--package",
            self.package.to_str().unwrap(),
            "--record",
            self.records.to_str().unwrap(),
            "--work-dir",
            self.work.to_str().unwrap(),
            "--timeout-secs",
            &timeout,
        ];
        args.extend_from_slice(self.extra);
        std::process::Command::new(env!("CARGO_BIN_EXE_flash-crowd"))
            .args(&args)
            .envs(self.envs.iter().copied())
            .output()
            .expect("flash-crowd runs")
    }
}
