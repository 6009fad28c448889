//! The tracker's STUN binding responder (RFC 8489): it tells devices the
//! public address and port their datagrams come from. [`serve`] is the UDP
//! loop around the pure codec [`ota_proto::stun::respond`];
//! [`parse_listen`] reads the `--stun-listen` setting; [`limit`] rate
//! limits each source.

use std::net::SocketAddr;

pub mod limit;
mod socket;

pub use limit::{RateLimiter, StunLimits};
pub use socket::{serve, serve_with};

/// Default UDP port of the STUN responder (IANA port 3478, RFC 8489 §9);
/// its default address is the HTTP listener's IP with this port.
pub use ota_proto::stun::DEFAULT_STUN_PORT;

/// Parses the `--stun-listen` value: `off` or an empty string disables the
/// responder (`None`), anything else must be a socket address.
///
/// Errors: a value that is neither `off`, empty, nor `IP:PORT`.
pub fn parse_listen(value: &str) -> anyhow::Result<Option<SocketAddr>> {
    let v = value.trim();
    if v.is_empty() || v.eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    v.parse()
        .map(Some)
        .map_err(|e| anyhow::anyhow!("--stun-listen: {v:?} is not IP:PORT, off, or empty ({e})"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_values() {
        assert_eq!(parse_listen("off").unwrap(), None);
        assert_eq!(parse_listen("").unwrap(), None);
        assert_eq!(
            parse_listen("0.0.0.0:3478").unwrap(),
            Some("0.0.0.0:3478".parse().unwrap())
        );
        assert!(parse_listen("3478").is_err());
    }
}
