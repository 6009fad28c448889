//! The origin's plain-HTTP path (axum): the client-server baseline and the
//! agents' fallback, in front of the bucket.
//!
//! | route | who may call it |
//! |---|---|
//! | `GET /packages/{key}`, `GET /packages/{key}?torrent` | with [`PackageAuth::Required`] (the default): whoever the tracker offers the release to (checked per token and release, see below); with [`PackageAuth::Off`]: anyone |
//! | `GET /api/egress`, `GET /api/ledger`, `GET /metrics` | the operator: `Authorization: Bearer API_TOKEN` ([`HttpSettings::api_token`]); 503 when no token is configured, 401 otherwise |
//! | `GET /health` | anyone |
//!
//! - `GET /packages/{key}` streams the object from S3, honouring one
//!   `Range: bytes=a-b` header (206 with `Content-Range`), like S3 itself,
//!   and only while the object still has its published ETag (`If-Match`).
//! - `GET /packages/{key}?torrent` returns `KEY.torrent`, as S3's retired
//!   BitTorrent feature did.
//! - `GET /api/egress`: [`crate::seeding::ReleaseEgress`] per release plus S3
//!   counters, as JSON. `GET /api/ledger?format=csv|json` (default JSON):
//!   the egress ledger, streamed page by page
//!   ([`crate::ledger::Ledger::export`]). `GET /metrics`: Prometheus text
//!   (`ota_seeder_*` counters). `GET /health`: `ok`.
//!
//! Package audience: the device sends `Authorization: Bearer DEVICE_TOKEN`
//! (or nothing). The seeder forwards exactly that credential to the
//! tracker's `GET /api/releases/{info_hash}`: 2xx serves the package, the
//! tracker's 401, 403 or 404 is answered as is (unknown or revoked token,
//! device outside the rollout wave, channel or model); a tracker that
//! cannot be asked gives 503. So the audience is the tracker's: with the
//! tracker's device auth off, a request without a token is served. The
//! verdict is cached per (token, release) for [`HttpSettings::verdict_ttl`]
//! (default 60 s, so a revoked token or a shrunk wave takes up to that long
//! to be refused here) in a bounded LRU map. The API token itself passes
//! without asking.
//!
//! A package response is counted in the ledger when its body ends (or the
//! client goes away), with the bytes actually sent, the client's address
//! and the device the tracker vouched for: the tracker's `X-Ota-Device-Id`
//! answer header when it sends one, else `token:` and the first 16 hex
//! digits of the token's SHA-256 (a stable pseudonym). A client-chosen
//! `X-Device-Id` header or `?device=` is ignored.
//!
//! Only published (seeded) keys are served; anything else is 404.

use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{ConnectInfo, Path, RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use futures::StreamExt;
use ota_proto::InfoHash;
use sha2::{Digest, Sha256};

use crate::ledger::ExportFormat;
use crate::origin_store::{self, S3Location};
use crate::seeding::Seeder;

/// Who may download packages (`--package-auth`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PackageAuth {
    /// Every package request is checked with the tracker, with the
    /// request's own bearer token (the module documentation).
    Required,
    /// Anyone may download every published package (the plain
    /// client-server baseline, local experiments). No device is recorded.
    Off,
}

/// Default lifetime of a cached package verdict (60 s).
pub const DEFAULT_VERDICT_TTL: Duration = Duration::from_secs(60);
/// Default bound of the package verdict cache, entries.
pub const DEFAULT_VERDICT_CACHE_ENTRIES: usize = 4096;
/// How long the seeder waits for the tracker's verdict on a package
/// request before answering 503.
pub const TRACKER_CHECK_TIMEOUT: Duration = Duration::from_secs(5);

/// Settings of the HTTP path.
#[derive(Debug, Clone)]
pub struct HttpSettings {
    /// Bearer token of `/api/egress`, `/api/ledger` and `/metrics`
    /// (`--api-token`, default the admin token); `None` or empty refuses
    /// those routes (503).
    pub api_token: Option<String>,
    /// Who may download packages.
    pub package_auth: PackageAuth,
    /// How long a package verdict from the tracker is reused.
    pub verdict_ttl: Duration,
    /// Most cached package verdicts (least recently used ones go first).
    pub verdict_cache_entries: usize,
}

impl HttpSettings {
    /// [`PackageAuth::Required`] with the default cache, API token `api_token`.
    pub fn new(api_token: Option<String>) -> Self {
        HttpSettings {
            api_token,
            package_auth: PackageAuth::Required,
            verdict_ttl: DEFAULT_VERDICT_TTL,
            verdict_cache_entries: DEFAULT_VERDICT_CACHE_ENTRIES,
        }
    }
}

/// What the tracker said about one (token, release).
#[derive(Debug, Clone)]
enum Verdict {
    /// Serve it; the device to write in the ledger, if known.
    Allowed { device: Option<String> },
    /// Refuse with this status and reason.
    Refused { status: StatusCode, reason: String },
}

/// Key of the verdict cache: SHA-256 of the bearer token (all zeros for no
/// token) and the release.
type VerdictKey = ([u8; 32], InfoHash);

struct HttpState {
    seeder: Arc<Seeder>,
    settings: HttpSettings,
    /// SHA-256 of the API token, compared in constant time.
    api_token: Option<[u8; 32]>,
    verdicts: Mutex<lru::LruCache<VerdictKey, (Instant, Verdict)>>,
    http: reqwest::Client,
}

type Shared = State<Arc<HttpState>>;

/// The HTTP router over a running [`Seeder`].
pub fn router(seeder: Arc<Seeder>, settings: HttpSettings) -> Router {
    let api_token = settings
        .api_token
        .as_deref()
        .filter(|t| !t.is_empty())
        .map(|t| Sha256::digest(t.as_bytes()).into());
    let cap = NonZeroUsize::new(settings.verdict_cache_entries.max(1)).unwrap_or(NonZeroUsize::MIN);
    let state = Arc::new(HttpState {
        seeder,
        api_token,
        verdicts: Mutex::new(lru::LruCache::new(cap)),
        http: reqwest::Client::builder()
            .connect_timeout(TRACKER_CHECK_TIMEOUT)
            .timeout(TRACKER_CHECK_TIMEOUT)
            .build()
            .unwrap_or_default(),
        settings,
    });
    Router::new()
        .route("/packages/{*key}", get(get_package))
        .route("/api/egress", get(egress))
        .route("/api/ledger", get(ledger))
        .route("/metrics", get(metrics))
        .route("/health", get(|| async { "ok" }))
        .with_state(state)
}

fn error(status: StatusCode, msg: String) -> Response {
    let mut r = (status, msg).into_response();
    if status == StatusCode::UNAUTHORIZED {
        r.headers_mut()
            .insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"));
    }
    r
}

/// The bearer token of `Authorization: Bearer TOKEN`, if any.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Equality of two digests without an early exit.
fn digests_equal(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl HttpState {
    /// Whether `token` is the API token (compared as SHA-256 digests, in
    /// constant time).
    fn is_api_token(&self, token: &str) -> bool {
        self.api_token
            .as_ref()
            .is_some_and(|want| digests_equal(want, &Sha256::digest(token.as_bytes()).into()))
    }

    /// The refusal of an operator route, or `None` when the request carries
    /// the API token: 503 when no API token is configured, 401 for a
    /// missing or wrong one.
    fn refuse_api(&self, headers: &HeaderMap) -> Option<Response> {
        if self.api_token.is_none() {
            return Some(error(
                StatusCode::SERVICE_UNAVAILABLE,
                "no API token configured (--api-token or OTA_SEEDER_API_TOKEN); this route is off".into(),
            ));
        }
        match bearer(headers) {
            Some(t) if self.is_api_token(t) => None,
            _ => Some(error(
                StatusCode::UNAUTHORIZED,
                "API token required (Authorization: Bearer API_TOKEN)".into(),
            )),
        }
    }

    /// The tracker's verdict on `token` (or no token) downloading
    /// `info_hash`, from the cache when fresh.
    async fn authorize(&self, token: Option<&str>, info_hash: &InfoHash) -> Verdict {
        if self.settings.package_auth == PackageAuth::Off {
            return Verdict::Allowed { device: None };
        }
        if token.is_some_and(|t| self.is_api_token(t)) {
            return Verdict::Allowed { device: None };
        }
        let key: VerdictKey = (
            token.map_or([0; 32], |t| Sha256::digest(t.as_bytes()).into()),
            *info_hash,
        );
        let now = Instant::now();
        {
            let mut cache = self.verdicts.lock().unwrap_or_else(|e| e.into_inner());
            match cache.get(&key) {
                Some((until, v)) if *until > now => return v.clone(),
                Some(_) => {
                    cache.pop(&key);
                }
                None => {}
            }
        }
        let (verdict, cacheable) = self.ask_tracker(token, info_hash).await;
        if cacheable {
            self.verdicts
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .put(key, (now + self.settings.verdict_ttl, verdict.clone()));
        }
        verdict
    }

    /// Asks the tracker (`GET /api/releases/{info_hash}` with `token`);
    /// returns the verdict and whether it may be cached (not when the
    /// tracker could not answer).
    async fn ask_tracker(&self, token: Option<&str>, info_hash: &InfoHash) -> (Verdict, bool) {
        let url = format!("{}/api/releases/{info_hash}", self.seeder.tracker().base());
        let mut req = self.http.get(&url);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(%info_hash, error = %e, "cannot ask the tracker whether a package may be served");
                return (
                    Verdict::Refused {
                        status: StatusCode::SERVICE_UNAVAILABLE,
                        reason: "cannot check this request with the tracker; try again".into(),
                    },
                    false,
                );
            }
        };
        let status = resp.status();
        if status.is_success() {
            let device = resp
                .headers()
                .get("x-ota-device-id")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
                .or_else(|| token.map(|t| format!("token:{}", &hex::encode(Sha256::digest(t.as_bytes()))[..16])));
            return (Verdict::Allowed { device }, true);
        }
        let code = status.as_u16();
        if matches!(code, 401 | 403 | 404) {
            let text = resp.text().await.unwrap_or_default();
            let reason = serde_json::from_str::<serde_json::Value>(&text)
                .ok()
                .and_then(|v| v["error"].as_str().map(str::to_string))
                .unwrap_or(text);
            let status = StatusCode::from_u16(code).unwrap_or(StatusCode::FORBIDDEN);
            return (
                Verdict::Refused {
                    status,
                    reason: format!("the tracker refuses this package to this caller: {reason}"),
                },
                true,
            );
        }
        tracing::warn!(%info_hash, %status, "tracker answered a package check with an unexpected status");
        (
            Verdict::Refused {
                status: StatusCode::SERVICE_UNAVAILABLE,
                reason: format!("the tracker answered {status}; try again"),
            },
            false,
        )
    }
}

async fn metrics(State(st): Shared, headers: HeaderMap) -> Response {
    if let Some(r) = st.refuse_api(&headers) {
        return r;
    }
    ota_common::metrics::metrics_handle().render().into_response()
}

async fn ledger(State(st): Shared, headers: HeaderMap, RawQuery(q): RawQuery) -> Response {
    if let Some(r) = st.refuse_api(&headers) {
        return r;
    }
    let csv = q.as_deref().is_some_and(|q| q.split('&').any(|p| p == "format=csv"));
    if let Err(e) = st.seeder.flush_ledger().await {
        return error(StatusCode::SERVICE_UNAVAILABLE, format!("ledger: {e:#}"));
    }
    let (format, content_type) = if csv {
        (ExportFormat::Csv, "text/csv; charset=utf-8")
    } else {
        (ExportFormat::Json, "application/json")
    };
    (
        [(header::CONTENT_TYPE, content_type)],
        Body::from_stream(st.seeder.ledger().export(format)),
    )
        .into_response()
}

async fn egress(State(st): Shared, headers: HeaderMap) -> Response {
    if let Some(r) = st.refuse_api(&headers) {
        return r;
    }
    let s = &st.seeder;
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

/// Counts a response's body bytes and hands them to the ledger when dropped.
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
        self.seeder.record_http(
            &self.info_hash,
            std::mem::take(&mut self.peer),
            self.device.take(),
            bytes,
        );
    }
}

async fn get_package(
    State(st): Shared,
    Path(key): Path<String>,
    RawQuery(q): RawQuery,
    parts: axum::http::request::Parts,
) -> Response {
    let s = &st.seeder;
    let headers = &parts.headers;
    // Present when served with `into_make_service_with_connect_info`.
    let remote = parts.extensions.get::<ConnectInfo<SocketAddr>>().cloned();
    let Some(release) = s.release_by_key(&key) else {
        return error(StatusCode::NOT_FOUND, format!("no published package {key:?}"));
    };
    let device = match st.authorize(bearer(headers), &release.info_hash).await {
        Verdict::Allowed { device } => device,
        Verdict::Refused { status, reason } => return error(status, reason),
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
    // Never serve bytes of an object that changed since it was published
    // (a release without an ETag is never seeded, see `crate::seeding`).
    let Some(etag) = &release.etag else {
        return error(StatusCode::SERVICE_UNAVAILABLE, "release has no ETag".into());
    };
    let mut req = s.s3().get_object().bucket(&loc.bucket).key(&loc.key).if_match(etag);
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
