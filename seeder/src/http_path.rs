//! The origin's plain-HTTP path (axum): the client-server baseline and the
//! agents' fallback, in front of the bucket.
//!
//! - `GET /packages/{key}` streams the object from S3, honouring one
//!   `Range: bytes=a-b` header (206 with `Content-Range`), like S3 itself.
//! - `GET /packages/{key}?torrent` returns `KEY.torrent`, as S3's retired
//!   BitTorrent feature did.
//! - `GET /api/egress`: [`crate::seeding::ReleaseEgress`] per release plus S3
//!   counters, as JSON. `GET /health`: `ok`.
//!
//! Only published (seeded) keys are served; anything else is 404.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use futures::StreamExt;

use crate::origin_store::{self, S3Location};
use crate::seeding::Seeder;

/// The HTTP router over a running [`Seeder`].
pub fn router(seeder: Arc<Seeder>) -> Router {
    Router::new()
        .route("/packages/{*key}", get(get_package))
        .route("/api/egress", get(egress))
        .route("/health", get(|| async { "ok" }))
        .with_state(seeder)
}

fn error(status: StatusCode, msg: String) -> Response {
    (status, msg).into_response()
}

async fn egress(State(s): State<Arc<Seeder>>) -> Json<serde_json::Value> {
    Json(serde_json::json!({
        "releases": s.egress(),
        "s3_bytes_read": s.counters.bytes_read.load(Ordering::Relaxed),
        "s3_failures": s.counters.failures.load(Ordering::Relaxed),
        "piece_hash_mismatches": s.counters.hash_mismatches.load(Ordering::Relaxed),
    }))
}

async fn get_package(
    State(s): State<Arc<Seeder>>,
    Path(key): Path<String>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Response {
    let Some(release) = s.release_by_key(&key) else {
        return error(StatusCode::NOT_FOUND, format!("no published package {key:?}"));
    };
    let Ok(loc) = release.source.parse::<S3Location>() else {
        return error(StatusCode::INTERNAL_SERVER_ERROR, "bad release source".into());
    };
    if q.as_deref() == Some("torrent") {
        let t = S3Location { bucket: loc.bucket.clone(), key: format!("{}.torrent", loc.key) };
        let out = s.s3().get_object().bucket(&t.bucket).key(&t.key).send().await;
        return match out {
            Ok(o) => match o.body.collect().await {
                Ok(b) => ([(header::CONTENT_TYPE, "application/x-bittorrent")], b.into_bytes()).into_response(),
                Err(e) => error(StatusCode::BAD_GATEWAY, format!("reading {t}: {e}")),
            },
            Err(e) => error(StatusCode::BAD_GATEWAY, format!("{t}: {}", origin_store::describe(&e))),
        };
    }
    let range = headers.get(header::RANGE).and_then(|v| v.to_str().ok()).map(str::to_string);
    let mut req = s.s3().get_object().bucket(&loc.bucket).key(&loc.key);
    if let Some(r) = &range {
        if !r.starts_with("bytes=") || r.contains(',') {
            return error(StatusCode::RANGE_NOT_SATISFIABLE, format!("unsupported range {r:?}"));
        }
        req = req.range(r);
    }
    let out = match req.send().await {
        Ok(o) => o,
        Err(e) => {
            let status = if e.raw_response().is_some_and(|r| r.status().as_u16() == 416) {
                StatusCode::RANGE_NOT_SATISFIABLE
            } else {
                StatusCode::BAD_GATEWAY
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
        resp = resp.status(StatusCode::PARTIAL_CONTENT).header(header::CONTENT_RANGE, cr);
    }
    let info_hash = release.info_hash.clone();
    let seeder = s.clone();
    let body = tokio_util_stream(out.body).map(move |chunk| {
        if let Ok(c) = &chunk {
            seeder.add_http_bytes(&info_hash, c.len() as u64);
        }
        chunk
    });
    resp.body(Body::from_stream(body)).unwrap_or_else(|e| error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
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
