//! The tracker's STUN binding responder socket (RFC 8489): the UDP loop
//! around the pure codec [`ota_proto::stun::respond`].

use std::net::SocketAddr;
use std::sync::Arc;

use ota_proto::stun::{respond, Verdict, MAX_DATAGRAM};

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

/// Answers STUN Binding requests on `socket` until the task is dropped.
/// Every datagram goes through [`respond`]; counters:
/// `ota_tracker_stun_requests_total` (answered),
/// `ota_tracker_stun_malformed_total`, `ota_tracker_stun_ignored_total`.
/// A failed send or receive (e.g. ICMP port unreachable reported on a later
/// receive) is logged at debug and the loop goes on.
pub async fn serve(socket: Arc<tokio::net::UdpSocket>) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        let (n, source) = match socket.recv_from(&mut buf).await {
            Ok(x) => x,
            Err(e) => {
                tracing::debug!(error = %e, "stun: receive failed");
                continue;
            }
        };
        match respond(&buf[..n], source) {
            Verdict::Reply(bytes) => {
                metrics::counter!("ota_tracker_stun_requests_total").increment(1);
                if let Err(e) = socket.send_to(&bytes, source).await {
                    tracing::debug!(%source, error = %e, "stun: send failed");
                }
            }
            Verdict::Malformed(why) => {
                metrics::counter!("ota_tracker_stun_malformed_total").increment(1);
                tracing::debug!(%source, %why, "stun: malformed message ignored");
            }
            Verdict::NotStun | Verdict::Ignored => {
                metrics::counter!("ota_tracker_stun_ignored_total").increment(1);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_values() {
        assert_eq!(parse_listen("off").unwrap(), None);
        assert_eq!(parse_listen("").unwrap(), None);
        assert_eq!(parse_listen("0.0.0.0:3478").unwrap(), Some("0.0.0.0:3478".parse().unwrap()));
        assert!(parse_listen("3478").is_err());
    }
}
