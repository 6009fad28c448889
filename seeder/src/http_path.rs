//! The origin's plain-HTTP path (axum): the client-server baseline and the
//! agents' fallback, in front of the bucket.
//!
//! - `GET /packages/{key}` streams the object from S3, honouring one
//!   `Range: bytes=a-b` header (206 with `Content-Range`), like S3 itself.
//! - `GET /packages/{key}?torrent` returns `KEY.torrent`, as S3's retired
//!   BitTorrent feature did.
//! - `GET /api/egress`: [`crate::seeding::ReleaseEgress`] per release plus S3
//!   counters, as JSON. `GET /api/ledger?format=csv|json`: the egress ledger.
//!   `GET /metrics`: Prometheus text (`ota_seeder_*` counters). `GET /health`: `ok`.
//!
//! A package response is written to the ledger when its body ends (or the
//! client goes away), with the bytes actually sent, the client's address and
//! the device id from `?device=` or the `X-Device-Id` header.
//!
//! Only published (seeded) keys are served; anything else is 404.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::body::Body;
use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Path, RawQuery, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use futures::StreamExt;
use ota_proto::InfoHash;

use crate::origin_store::{self, S3Location};
use crate::seeding::Seeder;

/// The HTTP router over a running [`Seeder`].
pub fn router(seeder: Arc<Seeder>) -> Router {
    Router::new()
        .route("/packages/{*key}", get(get_package))
        .route("/api/egress", get(egress))
        .route("/api/ledger", get(ledger))
        .route(
            "/metrics",
            get(|| async { ota_common::metrics::metrics_handle().render() }),
        )
        .route("/health", get(|| async { "ok" }))
        .with_state(seeder)
}

fn error(status: StatusCode, msg: String) -> Response {
    (status, msg).into_response()
}

async fn ledger(State(s): State<Arc<Seeder>>, RawQuery(q): RawQuery) -> Response {
    if let Err(e) = s.flush_ledger().await {
        return error(StatusCode::SERVICE_UNAVAILABLE, format!("ledger: {e:#}"));
    }
    let entries = match s.ledger().entries().await {
        Ok(e) => e,
        Err(e) => return error(StatusCode::SERVICE_UNAVAILABLE, format!("ledger: {e}")),
    };
    if q.as_deref() == Some("format=csv") {
        ([(header::CONTENT_TYPE, "text/csv")], crate::ledger::to_csv(&entries)).into_response()
    } else {
        Json(entries).into_response()
    }
}

async fn egress(State(s): State<Arc<Seeder>>) -> Response {
    let releases = match s.egress().await {
        Ok(r) => r,
        Err(e) => return error(StatusCode::SERVICE_UNAVAILABLE, format!("ledger: {e:#}")),
    };
    Json(serde_json::json!({
        "releases": releases,
        "s3_bytes_read": s.counters.bytes_read.load(Ordering::Relaxed),
        "s3_failures": s.counters.failures.load(Ordering::Relaxed),
        "piece_hash_mismatches": s.counters.hash_mismatches.load(Ordering::Relaxed),
    }))
    .into_response()
}

/// Counts a response's body bytes and writes them to the ledger when dropped.
struct HttpMeter {
    seeder: Arc<Seeder>,
    info_hash: InfoHash,
    peer: String,
    device: Option<String>,
    bytes: std::sync::atomic::AtomicU64,
}

impl Drop for HttpMeter {
    fn drop(&mut self) {
        let bytes = self.bytes.load(Ordering::Relaxed);
        let (seeder, ih, peer, device) = (
            self.seeder.clone(),
            self.info_hash,
            self.peer.clone(),
            self.device.take(),
        );
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move { seeder.record_http(&ih, peer, device, bytes).await });
        }
    }
}

async fn get_package(
    State(s): State<Arc<Seeder>>,
    Path(key): Path<String>,
    RawQuery(q): RawQuery,
    parts: axum::http::request::Parts,
) -> Response {
    let headers = &parts.headers;
    // Present when served with `into_make_service_with_connect_info`.
    let remote = parts.extensions.get::<ConnectInfo<SocketAddr>>().cloned();
    let device = headers
        .get("x-device-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or_else(|| {
            q.as_deref()?
                .split('&')
                .find_map(|p| p.strip_prefix("device="))
                .map(percent_decode)
        });
    let Some(release) = s.release_by_key(&key) else {
        return error(StatusCode::NOT_FOUND, format!("no published package {key:?}"));
    };
    let Ok(loc) = release.source.parse::<S3Location>() else {
        return error(StatusCode::INTERNAL_SERVER_ERROR, "bad release source".into());
    };
    if q.as_deref().is_some_and(|q| q.split('&').any(|p| p == "torrent")) {
        let t = S3Location {
            bucket: loc.bucket.clone(),
            key: format!("{}.torrent", loc.key),
        };
        let out = s.s3().get_object().bucket(&t.bucket).key(&t.key).send().await;
        return match out {
            Ok(o) => match o.body.collect().await {
                Ok(b) => ([(header::CONTENT_TYPE, "application/x-bittorrent")], b.into_bytes()).into_response(),
                Err(e) => error(StatusCode::BAD_GATEWAY, format!("reading {t}: {e}")),
            },
            Err(e) => error(StatusCode::BAD_GATEWAY, format!("{t}: {}", origin_store::describe(&e))),
        };
    }
    let range = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let mut req = s.s3().get_object().bucket(&loc.bucket).key(&loc.key);
    if let Some(etag) = &release.etag {
        // Never serve bytes of an object that changed since it was published.
        req = req.if_match(etag);
    }
    if let Some(r) = &range {
        if !r.starts_with("bytes=") || r.contains(',') {
            return error(StatusCode::RANGE_NOT_SATISFIABLE, format!("unsupported range {r:?}"));
        }
        req = req.range(r);
    }
    let out = match req.send().await {
        Ok(o) => o,
        Err(e) => {
            let upstream = e.raw_response().map(|r| r.status().as_u16());
            let status = match upstream {
                Some(416) => StatusCode::RANGE_NOT_SATISFIABLE,
                Some(412) => {
                    return error(
                        StatusCode::SERVICE_UNAVAILABLE,
                        format!("{loc} changed since it was published; not serving it"),
                    )
                }
                _ => StatusCode::BAD_GATEWAY,
            };
            return error(status, format!("{loc}: {}", origin_store::describe(&e)));
        }
    };
    let mut resp = Response::builder()
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .header(header::ACCEPT_RANGES, "bytes");
    if let Some(len) = out.content_length {
        resp = resp.header(header::CONTENT_LENGTH, len);
    }
    if let Some(cr) = &out.content_range {
        resp = resp
            .status(StatusCode::PARTIAL_CONTENT)
            .header(header::CONTENT_RANGE, cr);
    }
    let meter = Arc::new(HttpMeter {
        seeder: s.clone(),
        info_hash: release.info_hash,
        peer: remote.map(|c| c.0.to_string()).unwrap_or_else(|| "unknown".into()),
        device,
        bytes: Default::default(),
    });
    let body = tokio_util_stream(out.body).map(move |chunk| {
        if let Ok(c) = &chunk {
            meter.bytes.fetch_add(c.len() as u64, Ordering::Relaxed);
        }
        chunk
    });
    resp.body(Body::from_stream(body))
        .unwrap_or_else(|e| error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
}

fn percent_decode(s: &str) -> String {
    url::form_urlencoded::parse(format!("d={s}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

/// Adapts an S3 body to a stream of byte chunks.
fn tokio_util_stream(
    body: aws_sdk_s3::primitives::ByteStream,
) -> impl futures::Stream<Item = Result<bytes::Bytes, std::io::Error>> {
    futures::stream::unfold(body, |mut body| async move {
        match body.try_next().await {
            Ok(Some(b)) => Some((Ok(b), body)),
            Ok(None) => None,
            Err(e) => Some((Err(std::io::Error::other(e)), body)),
        }
    })
}
