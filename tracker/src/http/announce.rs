//! `GET /announce` (BEP 3, BEP 7, BEP 23) and `GET /scrape` (BEP 48). The
//! query is read raw (`info_hash` and `peer_id` are percent-encoded binary,
//! not UTF-8), parsed by [`ota_proto::announce`], and the answer is always
//! HTTP 200 with a bencoded body: the response, or a `failure reason`.
//! Counters: `ota_tracker_announces_total`,
//! `ota_tracker_announce_failures_total`, `ota_tracker_scrapes_total`.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, RawQuery, State};
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use ota_proto::announce;

use super::extract::bearer;
use crate::service::{Refusal, Tracker};

/// A bencoded body (`text/plain`, as BitTorrent trackers answer).
fn bencoded(body: Vec<u8>) -> Response {
    ([(header::CONTENT_TYPE, "text/plain")], body).into_response()
}

/// The value of parameter `name` in a raw query string, as sent (device
/// tokens are plain lowercase hex, so they need no percent-decoding).
fn query_param<'a>(q: &'a str, name: &str) -> Option<&'a str> {
    q.split('&').find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
}

/// One announce: parse, resolve the caller (`origin_token=`, `token=`),
/// then [`Tracker::announce`].
pub(super) async fn announce(
    State(t): State<Arc<Tracker>>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    RawQuery(q): RawQuery,
) -> Response {
    let q = q.unwrap_or_default();
    let result = announce::parse_announce(&q).map_err(Refusal::from).and_then(|req| {
        let caller = t.announce_caller(req.origin_token.as_deref(), query_param(&q, "token"))?;
        let (compact, no_peer_id) = (req.compact, req.no_peer_id);
        let resp = t.announce(req, &caller, remote.ip())?;
        Ok(announce::encode_announce(&resp, compact, no_peer_id))
    });
    match result {
        Ok(body) => {
            metrics::counter!("ota_tracker_announces_total").increment(1);
            bencoded(body)
        }
        Err(e) => {
            metrics::counter!("ota_tracker_announce_failures_total").increment(1);
            tracing::debug!(%remote, error = %e, "announce refused");
            bencoded(announce::encode_failure(&e.to_string()))
        }
    }
}

/// A scrape: with a valid `token=` or `origin_token=` (or the admin bearer
/// token), or by anyone with device authentication off; then the counters
/// of the asked info hashes (every release when none is named) that the
/// caller may see ([`Tracker::scrape_for`]).
pub(super) async fn scrape(State(t): State<Arc<Tracker>>, headers: HeaderMap, RawQuery(q): RawQuery) -> Response {
    let q = q.unwrap_or_default();
    let origin = query_param(&q, "origin_token")
        .map(|o| percent_encoding::percent_decode_str(o).decode_utf8_lossy().into_owned());
    let caller = match t.scrape_caller(query_param(&q, "token"), origin.as_deref(), bearer(&headers)) {
        Ok(c) => c,
        Err(e) => return bencoded(announce::encode_failure(&e.to_string())),
    };
    metrics::counter!("ota_tracker_scrapes_total").increment(1);
    match announce::parse_scrape(&q) {
        Ok(hashes) => bencoded(announce::encode_scrape(&t.scrape_for(&caller, &hashes))),
        Err(e) => bencoded(announce::encode_failure(&e.to_string())),
    }
}
