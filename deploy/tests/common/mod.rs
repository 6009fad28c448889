//! Setup shared by the lab tests (`mod common;` in each): reading a UPnP
//! router's mapping table from a host behind it, independently of the code
//! under test.

#![allow(dead_code)]

use std::net::{SocketAddr, SocketAddrV4};
use std::time::Duration;

use igd_next::{PortMappingProtocol, SearchOptions};
use ota_deploy::lab::{in_netns, Host};

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

/// The router's whole mapping table, read from `host`'s namespace with
/// igd-next's blocking client after an SSDP search of at most `search` (at
/// most 128 entries; the first error, 713 past the end, stops it).
pub(crate) fn upnp_table(host: &Host, search: Duration) -> Vec<Entry> {
    in_netns(&host.ns, || {
        let mut options = SearchOptions::default();
        options.bind_addr = SocketAddr::V4(SocketAddrV4::new(host.addr, 0));
        options.timeout = Some(search);
        options.single_search_timeout = Some(search);
        let gateway = igd_next::search_gateway(options).expect("SSDP answer from the UPnP router");
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
    .expect("enter namespace")
}
