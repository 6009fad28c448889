//! The tracker's HTTP server (axum): BitTorrent announce and scrape, the
//! release API, the push channel (server-sent events), telemetry intake and
//! Prometheus metrics.
//!
//! Routes:
//! - `GET /announce` (BEP 3, BEP 23, BEP 7), `GET /scrape` (BEP 48): always
//!   HTTP 200 with a bencoded body; errors as `failure reason`.
//! - `GET /api/releases`, `POST /api/releases` (admin), `GET /api/releases/{info_hash}`,
//!   `GET /api/releases/{info_hash}/torrent?device=ID`, `POST /api/releases/{info_hash}/push` (admin),
//!   `GET /api/releases/{info_hash}/telemetry`, `GET /api/releases/{info_hash}/peers` (admin,
//!   the live swarm as [`PeerInfo`] JSON).
//! - `GET /api/push`: server-sent events, event `release` with a [`PushEvent`] JSON body.
//! - `POST /api/telemetry`: a [`TelemetryReport`] JSON body.
//! - `GET /api/subscribers`: number of connected push subscribers.
//! - `GET /metrics`: Prometheus text format. `GET /health`: `ok`.
//!
//! Live peers and completed-download counters are mirrored to the database
//! every [`StoreConfig::persist_interval`] and at graceful shutdown (never in
//! the announce path), and read back by [`Tracker::new`] with their ages, so
//! a restarted tracker hands out the same swarm and expiry carries on.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Path, Query, RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures::Stream;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use serde::Deserialize;
use tokio_stream::StreamExt;

use crate::announce::{self, parse_info_hash, AnnounceError};
use crate::peer_store::{PeerStore, StoreConfig};
use crate::registry::{Registry, RegistryError, StoredRelease};
use crate::release::{NewRelease, PeerInfo, PushEvent, Release, TelemetryReport};

/// Shared state of the tracker server.
pub struct Tracker {
    registry: Registry,
    store: PeerStore,
    /// Serialises database writes of the peer store (periodic and final).
    persist_lock: tokio::sync::Mutex<()>,
    persist_interval: Duration,
    push: tokio::sync::broadcast::Sender<PushEvent>,
    admin_token: String,
    public_url: String,
}

/// Settings the server needs beyond the database.
#[derive(Debug, Clone)]
pub struct ServerSettings {
    /// Bearer token for the admin API and the origin's announces.
    pub admin_token: String,
    /// Base URL devices reach the tracker at, e.g. `http://127.0.0.1:7070`;
    /// used in the announce URL of served `.torrent` files.
    pub public_url: String,
    /// Peer store timing and origin policy.
    pub store: StoreConfig,
}

/// The process's Prometheus recorder (installed on first use); every
/// service renders `GET /metrics` from it.
pub fn metrics_handle() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        // A second tracker in the same process (tests) keeps the first recorder.
        let _ = metrics::set_global_recorder(recorder);
        handle
    })
}

/// Wall-clock milliseconds since the Unix epoch (0 before 1970).
fn wall_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl Tracker {
    /// Builds the state: registers every stored release in the peer store and
    /// restores the stored live peers (with the age they have now, so that
    /// peers silent for longer than the peer timeout, downtime included, are
    /// dropped) and completed-download counters.
    ///
    /// Errors: a database failure, or a stored release with a malformed info hash.
    pub async fn new(registry: Registry, settings: ServerSettings) -> anyhow::Result<Arc<Self>> {
        let store = PeerStore::new(settings.store);
        for r in registry.list().await? {
            store.register(parse_info_hash(&r.release.info_hash)?);
        }
        let stored = registry.load_swarms(wall_ms()).await?;
        let now = Instant::now();
        let restored = stored.peers.iter().filter(|p| store.restore(p, now)).count();
        for (ih, n) in &stored.downloaded {
            store.restore_downloaded(ih, *n);
        }
        // The first write replaces the table, dropping rows that were not restored.
        store.mark_full_resync();
        if !stored.peers.is_empty() {
            tracing::info!(restored, stored = stored.peers.len(), "live peers restored from the database");
        }
        let (push, _) = tokio::sync::broadcast::channel(64);
        metrics_handle();
        Ok(Arc::new(Tracker {
            registry,
            store,
            persist_lock: tokio::sync::Mutex::new(()),
            persist_interval: settings.store.persist_interval.max(Duration::from_millis(100)),
            push,
            admin_token: settings.admin_token,
            public_url: settings.public_url.trim_end_matches('/').to_string(),
        }))
    }

    /// The axum router with every route.
    pub fn router(self: &Arc<Self>) -> Router {
        Router::new()
            .route("/announce", get(announce_handler))
            .route("/scrape", get(scrape_handler))
            .route("/api/releases", get(list_releases).post(register_release))
            .route("/api/releases/{info_hash}", get(get_release))
            .route("/api/releases/{info_hash}/torrent", get(get_torrent))
            .route("/api/releases/{info_hash}/push", post(push_release))
            .route("/api/releases/{info_hash}/telemetry", get(get_telemetry))
            .route("/api/releases/{info_hash}/peers", get(get_peers))
            .route("/api/push", get(push_stream))
            .route("/api/subscribers", get(subscribers))
            .route("/api/telemetry", post(post_telemetry))
            .route("/metrics", get(|| async { metrics_handle().render() }))
            .route("/health", get(|| async { "ok" }))
            .with_state(self.clone())
    }

    /// Writes what changed in the peer store since the last write to the
    /// database; returns the number of rows written (peers upserted or
    /// deleted, counters). Writes never overlap.
    ///
    /// Errors: a database failure; the next call then rewrites every live
    /// peer, so nothing is lost.
    pub async fn persist(&self) -> anyhow::Result<usize> {
        let _guard = self.persist_lock.lock().await;
        let (changes, now_ms) = {
            (self.store.take_changes(Instant::now()), wall_ms())
        };
        if changes.is_empty() {
            return Ok(0);
        }
        let rows = changes.upserts.len() + changes.removals.len() + changes.downloaded.len();
        if let Err(e) = self.registry.save_swarms(&changes, now_ms).await {
            self.store.mark_full_resync();
            metrics::counter!("ota_tracker_persist_failures_total").increment(1);
            return Err(anyhow::Error::from(e).context("cannot write live peers to the database"));
        }
        metrics::counter!("ota_tracker_persisted_rows_total").increment(rows as u64);
        Ok(rows)
    }

    /// Serves on `listener` until `shutdown` resolves, expiring silent peers
    /// every 10 s and writing the live peers to the database every
    /// [`StoreConfig::persist_interval`]. After `shutdown`, open requests
    /// (push subscriptions included) get 2 s to finish; then the live peers
    /// are written one last time and the server returns.
    ///
    /// Errors: the listener fails, or the final write of the live peers fails.
    pub async fn serve(
        self: Arc<Self>,
        listener: tokio::net::TcpListener,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let me = self.clone();
        let expiry = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(10));
            loop {
                tick.tick().await;
                me.store.expire(Instant::now());
            }
        });
        let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            shutdown.await;
            let _ = stop_tx.send(true);
        });
        let me = self.clone();
        let (persist_tx, mut persist_stop) = tokio::sync::watch::channel(false);
        let persister = tokio::spawn(async move {
            let mut tick = tokio::time::interval(me.persist_interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => {
                        if let Err(e) = me.persist().await {
                            tracing::warn!(error = %format!("{e:#}"), "persisting live peers failed");
                        }
                    }
                    _ = async { let _ = persist_stop.wait_for(|s| *s).await; } => break,
                }
            }
        });
        let mut graceful_rx = stop_rx.clone();
        let app = self.router().into_make_service_with_connect_info::<SocketAddr>();
        let server = axum::serve(listener, app).with_graceful_shutdown(async move {
            let _ = graceful_rx.wait_for(|s| *s).await;
        });
        let r = tokio::select! {
            r = server => r.map_err(anyhow::Error::from),
            _ = async {
                let _ = stop_rx.wait_for(|s| *s).await;
                tokio::time::sleep(Duration::from_secs(2)).await;
            } => Ok(()),
        };
        expiry.abort();
        // The persister stops between writes (never inside one); then the last write.
        let _ = persist_tx.send(true);
        let _ = persister.await;
        let last = self.persist().await;
        if let Ok(rows) = &last {
            tracing::info!(rows, "live peers written at shutdown");
        }
        r.and(last.map(|_| ()))
    }

    fn with_origins(&self, s: StoredRelease) -> Release {
        let mut r = s.release;
        if let Ok(ih) = parse_info_hash(&r.info_hash) {
            r.origin_peers = self
                .store
                .origin_peers(&ih)
                .into_iter()
                .map(|a| a.to_string())
                .collect();
        }
        r
    }

    fn is_admin(&self, headers: &HeaderMap) -> bool {
        headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .is_some_and(|t| t == self.admin_token)
    }
}


/// A JSON error body `{"error": "..."}` with a status code.
struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(serde_json::json!({ "error": self.1 }))).into_response()
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        tracing::error!(error = %e, "database error");
        ApiError(StatusCode::SERVICE_UNAVAILABLE, "database unavailable".into())
    }
}

fn bencoded(body: Vec<u8>) -> Response {
    ([(header::CONTENT_TYPE, "text/plain")], body).into_response()
}

async fn announce_handler(
    State(t): State<Arc<Tracker>>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    RawQuery(q): RawQuery,
) -> Response {
    let q = q.unwrap_or_default();
    let result = announce::parse_announce(&q).and_then(|req| {
        let ip = req.ip.unwrap_or(remote.ip());
        let is_origin = req.origin_token.as_deref() == Some(t.admin_token.as_str());
        let resp = t
            .store
            .announce(&req, SocketAddr::new(ip, req.port), is_origin, Instant::now())?;
        Ok(announce::encode_announce(&resp, req.compact, req.no_peer_id))
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

async fn scrape_handler(State(t): State<Arc<Tracker>>, RawQuery(q): RawQuery) -> Response {
    let q = q.unwrap_or_default();
    metrics::counter!("ota_tracker_scrapes_total").increment(1);
    match announce::parse_scrape(&q) {
        Ok(hashes) => {
            let store = &t.store;
            let files = if hashes.is_empty() {
                store.scrape_all()
            } else {
                hashes.iter().filter_map(|h| store.scrape(h).map(|s| (*h, s))).collect()
            };
            bencoded(announce::encode_scrape(&files))
        }
        Err(e) => bencoded(announce::encode_failure(&e.to_string())),
    }
}

async fn list_releases(State(t): State<Arc<Tracker>>) -> Result<Json<Vec<Release>>, ApiError> {
    let all = t.registry.list().await?;
    Ok(Json(all.into_iter().map(|r| t.with_origins(r)).collect()))
}

async fn register_release(
    State(t): State<Arc<Tracker>>,
    headers: HeaderMap,
    body: Result<Json<NewRelease>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<Release>, ApiError> {
    if !t.is_admin(&headers) {
        return Err(ApiError(StatusCode::UNAUTHORIZED, "admin token required".into()));
    }
    let Json(new) = body.map_err(|e| ApiError(StatusCode::BAD_REQUEST, e.body_text()))?;
    let release = t.registry.register(&new).await.map_err(|e| match e {
        RegistryError::Invalid(m) => ApiError(StatusCode::BAD_REQUEST, m),
        RegistryError::Db(e) => ApiError::from(e),
    })?;
    let ih = parse_info_hash(&release.info_hash)
        .map_err(|e| ApiError(StatusCode::BAD_REQUEST, e.to_string()))?;
    t.store.register(ih);
    tracing::info!(info_hash = %release.info_hash, name = %release.name, "release registered");
    Ok(Json(release))
}

async fn find(t: &Tracker, info_hash: &str) -> Result<StoredRelease, ApiError> {
    t.registry
        .get(info_hash)
        .await?
        .ok_or_else(|| ApiError(StatusCode::NOT_FOUND, format!("no release {info_hash}")))
}

async fn get_release(
    State(t): State<Arc<Tracker>>,
    Path(info_hash): Path<String>,
) -> Result<Json<Release>, ApiError> {
    let r = find(&t, &info_hash).await?;
    Ok(Json(t.with_origins(r)))
}

#[derive(Deserialize)]
struct TorrentQuery {
    device: Option<String>,
}

async fn get_torrent(
    State(t): State<Arc<Tracker>>,
    Path(info_hash): Path<String>,
    Query(q): Query<TorrentQuery>,
) -> Result<Response, ApiError> {
    let r = find(&t, &info_hash).await?;
    let mut announce = format!("{}/announce", t.public_url);
    if let Some(d) = q.device {
        announce.push_str("?device=");
        announce.push_str(&announce::encode_binary(d.as_bytes()));
    }
    let body = crate::metainfo::torrent_bytes(&announce, &r.info);
    Ok(([(header::CONTENT_TYPE, "application/x-bittorrent")], body).into_response())
}

async fn push_release(
    State(t): State<Arc<Tracker>>,
    headers: HeaderMap,
    Path(info_hash): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    if !t.is_admin(&headers) {
        return Err(ApiError(StatusCode::UNAUTHORIZED, "admin token required".into()));
    }
    let r = find(&t, &info_hash).await?.release;
    let ev = PushEvent { info_hash: r.info_hash, name: r.name, version: r.version };
    let delivered = t.push.send(ev).unwrap_or(0);
    metrics::counter!("ota_tracker_pushes_total").increment(1);
    tracing::info!(%info_hash, delivered, "release pushed");
    Ok(Json(serde_json::json!({ "delivered": delivered })))
}

async fn push_stream(
    State(t): State<Arc<Tracker>>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let rx = tokio_stream::wrappers::BroadcastStream::new(t.push.subscribe());
    let stream = rx.filter_map(|ev| {
        let ev = ev.ok()?;
        Some(Ok(Event::default()
            .event("release")
            .data(serde_json::to_string(&ev).ok()?)))
    });
    Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

async fn subscribers(State(t): State<Arc<Tracker>>) -> Json<serde_json::Value> {
    Json(serde_json::json!({ "subscribers": t.push.receiver_count() }))
}

async fn post_telemetry(
    State(t): State<Arc<Tracker>>,
    body: Result<Json<TelemetryReport>, axum::extract::rejection::JsonRejection>,
) -> Result<StatusCode, ApiError> {
    let Json(report) = body.map_err(|e| ApiError(StatusCode::BAD_REQUEST, e.body_text()))?;
    find(&t, &report.info_hash).await?;
    t.registry.add_telemetry(&report).await?;
    metrics::counter!("ota_tracker_telemetry_reports_total").increment(1);
    Ok(StatusCode::NO_CONTENT)
}

async fn get_telemetry(
    State(t): State<Arc<Tracker>>,
    Path(info_hash): Path<String>,
) -> Result<Json<Vec<TelemetryReport>>, ApiError> {
    Ok(Json(t.registry.telemetry(&info_hash).await?))
}

async fn get_peers(
    State(t): State<Arc<Tracker>>,
    headers: HeaderMap,
    Path(info_hash): Path<String>,
) -> Result<Json<Vec<PeerInfo>>, ApiError> {
    if !t.is_admin(&headers) {
        return Err(ApiError(StatusCode::UNAUTHORIZED, "admin token required".into()));
    }
    let ih = parse_info_hash(&info_hash).map_err(|e| ApiError(StatusCode::BAD_REQUEST, e.to_string()))?;
    let peers = t
        .store
        .peers(&ih, Instant::now())
        .ok_or_else(|| ApiError(StatusCode::NOT_FOUND, format!("no release {info_hash}")))?;
    Ok(Json(
        peers
            .into_iter()
            .map(|p| {
                let tag = &p.peer_id[..8];
                PeerInfo {
                    peer_id: hex::encode(p.peer_id),
                    client: if tag.iter().all(|b| b.is_ascii_graphic()) {
                        String::from_utf8_lossy(tag).into_owned()
                    } else {
                        String::new()
                    },
                    addr: p.addr.to_string(),
                    left: p.left,
                    is_origin: p.is_origin,
                    granted: p.granted,
                    device: p.device,
                    age_ms: p.age.as_millis() as u64,
                }
            })
            .collect(),
    ))
}

/// Maps an announce error to its `failure reason` text; exposed for tests.
pub fn failure_reason(e: &AnnounceError) -> String {
    e.to_string()
}
