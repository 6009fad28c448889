//! Free loopback addresses for tests and benches.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

/// A free TCP port on 127.0.0.1 (bound and released at once; another
/// process may take it before the caller binds it, which on loopback in a
/// test run is rare enough).
///
/// Errors: no port could be bound.
pub fn free_port() -> anyhow::Result<u16> {
    Ok(free_port_on(IpAddr::V4(Ipv4Addr::LOCALHOST))?)
}

/// A free TCP port on `ip` (bound and released at once).
///
/// Errors: `ip` is not an address of this host (or namespace).
pub fn free_port_on(ip: IpAddr) -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind((ip, 0))?.local_addr()?.port())
}

/// A free TCP address on 127.0.0.1 (bound and released at once).
///
/// Panics when no port can be bound (tests only).
pub fn free_addr() -> SocketAddr {
    SocketAddr::new(
        IpAddr::V4(Ipv4Addr::LOCALHOST),
        free_port().expect("a free loopback port"),
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn ports_are_bindable() {
        let a = super::free_addr();
        assert!(a.ip().is_loopback() && a.port() != 0);
        std::net::TcpListener::bind(a).unwrap();
    }
}
