//! The UDP loop of the STUN responder.

use std::sync::Arc;

use ota_proto::stun::{respond, Verdict, MAX_DATAGRAM};

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
