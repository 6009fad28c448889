//! The UDP loop of the STUN responder.

use std::sync::Arc;

use ota_proto::stun::{respond, Verdict, MAX_DATAGRAM};

use super::limit::{RateLimiter, StunLimits};

/// [`serve_with`] the default limits ([`StunLimits::default`]).
pub async fn serve(socket: Arc<tokio::net::UdpSocket>) {
    serve_with(socket, StunLimits::default()).await
}

/// Answers STUN Binding requests on `socket` until the task is dropped,
/// at most as often per source IP as `limits` allow (the rest are dropped
/// unread, counted in `ota_tracker_stun_rate_limited_total`).
/// Every datagram goes through [`respond`]; counters:
/// `ota_tracker_stun_requests_total` (answered),
/// `ota_tracker_stun_malformed_total`, `ota_tracker_stun_ignored_total`.
/// A failed send or receive (e.g. ICMP port unreachable reported on a later
/// receive) is logged at debug and the loop goes on.
pub async fn serve_with(socket: Arc<tokio::net::UdpSocket>, limits: StunLimits) {
    let mut limiter = RateLimiter::new(limits);
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        let (n, source) = match socket.recv_from(&mut buf).await {
            Ok(x) => x,
            Err(e) => {
                tracing::debug!(error = %e, "stun: receive failed");
                continue;
            }
        };
        if !limiter.allow(source.ip().to_canonical(), std::time::Instant::now()) {
            metrics::counter!("ota_tracker_stun_rate_limited_total").increment(1);
            continue;
        }
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
