//! The tracker's HTTP server (axum): BitTorrent announce and scrape, the
//! release API, the push channel (server-sent events), telemetry intake and
//! Prometheus metrics.
//!
//! Routes:
//! - `GET /announce` (BEP 3, BEP 23, BEP 7) and `GET /scrape` (BEP 48). A
//!   device announces with its token in the query, `/announce?token=HEX&…`:
//!   BitTorrent clients keep an announce URL's query string and append their
//!   parameters, and derive the scrape URL (`/scrape?token=HEX`, BEP 48
//!   convention) from it. (A path form such as `/d/TOKEN/announce` is
//!   refused by libtorrent's SSRF mitigation for trackers on loopback, which
//!   allows only paths starting with `/announce`.) The origin seeder
//!   announces with `origin_token=` (the admin token); with `--device-auth
//!   off`, anyone may announce. Always HTTP 200 with a bencoded body; errors
//!   (no or unknown token, release outside the device's rollout wave, …) as
//!   `failure reason`.
//! - Devices call the API with `Authorization: Bearer TOKEN`; the device id
//!   comes from the token. Admin calls carry the admin token the same way.
//! - `GET /api/releases` (the releases offered to the calling device; every
//!   release for the admin), `POST /api/releases` (admin), `GET /api/releases/{info_hash}`,
//!   `GET /api/releases/{info_hash}/torrent` (announce URL `PUBLIC_URL/announce?token=HEX` for a device),
//!   `POST /api/releases/{info_hash}/push` (admin), `POST /api/releases/{info_hash}/rollout`
//!   (admin, `{"percent": N}`), `GET /api/releases/{info_hash}/telemetry` (admin),
//!   `GET /api/releases/{info_hash}/peers` (admin, the live swarm as [`PeerInfo`] JSON).
//! - `GET /api/devices`, `POST /api/devices` (a [`NewDevice`] body; answers a
//!   [`DeviceToken`], the only time the token is shown), `DELETE /api/devices/{id}`: admin.
//! - `GET /api/push`: server-sent events, event `release` with a [`PushEvent`] JSON body,
//!   only for releases offered to the calling device.
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
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Path, Query, RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures::Stream;
use ota_common::metrics::metrics_handle;
use serde::Deserialize;
use tokio_stream::StreamExt;

use std::collections::HashMap;
use std::sync::{Mutex, RwLock};

use ota_proto::announce::{self, AnnounceError};
use ota_proto::InfoHash;
use crate::device_auth::{DeviceAuth, DeviceDirectory, DeviceEntry};
use crate::peer_store::{PeerStore, StoreConfig};
use crate::registry::{token_digest, DeviceActivity, DeviceCredential, Registry, RegistryError, StoredRelease};
use ota_proto::api::{Device, DeviceToken, NewDevice, NewRelease, PeerInfo, PushEvent, Release, TelemetryReport};
use ota_proto::rollout::{Audience, Refusal};

/// One message on the internal push bus: the event and, for a wave
/// raised from `previous_percent`, only devices newly included get it.
#[derive(Debug, Clone)]
struct PushMsg {
    event: PushEvent,
    info_hash: InfoHash,
    previous_percent: Option<u8>,
}

/// A device's completed downloads are counted per (device id, info hash).
type CompletionKey = (Arc<str>, InfoHash);

/// Who is calling the API.
#[derive(Debug, Clone)]
enum Caller {
    /// The admin token.
    Admin,
    /// A registered device.
    Device(Arc<DeviceEntry>),
    /// No credential (allowed only with `--device-auth off`).
    Anonymous,
}

/// Shared state of the tracker server.
pub struct Tracker {
    registry: Registry,
    store: PeerStore,
    /// Serialises database writes of the peer store (periodic and final).
    persist_lock: tokio::sync::Mutex<()>,
    persist_interval: Duration,
    push: tokio::sync::broadcast::Sender<PushMsg>,
    admin_token: String,
    public_url: String,
    device_auth: DeviceAuth,
    devices: RwLock<DeviceDirectory>,
    audiences: RwLock<HashMap<InfoHash, Audience>>,
    /// Completed events per (device id, info hash) not yet written.
    completions: Mutex<HashMap<CompletionKey, u32>>,
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
    /// Whether devices must announce and call the API with their token.
    pub device_auth: DeviceAuth,
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
        let mut audiences = HashMap::new();
        for r in registry.list().await? {
            let ih = r.release.info_hash;
            store.register(ih);
            audiences.insert(ih, audience_of(&r));
        }
        let devices = DeviceDirectory::new(registry.device_credentials().await?);
        metrics::gauge!("ota_tracker_devices_registered").set(devices.len() as f64);
        for (ih, a) in &audiences {
            metrics::gauge!("ota_tracker_rollout_percent", "info_hash" => ih.to_hex()).set(a.percent as f64);
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
            device_auth: settings.device_auth,
            devices: RwLock::new(devices),
            audiences: RwLock::new(audiences),
            completions: Mutex::new(HashMap::new()),
        }))
    }

    /// The axum router with every route.
    pub fn router(self: &Arc<Self>) -> Router {
        Router::new()
            .route("/announce", get(announce_handler))
            .route("/scrape", get(scrape_handler))
            .route("/api/devices", get(list_devices).post(register_device))
            .route("/api/devices/{device_id}", axum::routing::delete(revoke_device))
            .route("/api/releases/{info_hash}/rollout", post(set_rollout))
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

    /// Writes what changed since the last write to the database: devices'
    /// last-seen times and completion counts, then the peer store's changes;
    /// returns the number of rows written (devices, peers upserted or
    /// deleted, counters). Writes never overlap.
    ///
    /// Errors: a database failure; the device activity is put back and the
    /// next call rewrites every live peer, so nothing is lost.
    pub async fn persist(&self) -> anyhow::Result<usize> {
        let _guard = self.persist_lock.lock().await;
        let activity = self.take_device_activity();
        let mut rows = activity.last_seen.len() + activity.completions.len();
        if !activity.is_empty() {
            if let Err(e) = self.registry.save_device_activity(&activity).await {
                self.restore_device_activity(activity);
                metrics::counter!("ota_tracker_persist_failures_total").increment(1);
                return Err(anyhow::Error::from(e).context("cannot write device activity to the database"));
            }
        }
        let (changes, now_ms) = {
            (self.store.take_changes(Instant::now()), wall_ms())
        };
        if changes.is_empty() {
            return Ok(rows);
        }
        rows += changes.upserts.len() + changes.removals.len() + changes.downloaded.len();
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
        r.origin_peers = self.store.origin_peers(&r.info_hash).into_iter().map(|a| a.to_string()).collect();
        r
    }

    fn is_admin(&self, headers: &HeaderMap) -> bool {
        bearer(headers).is_some_and(|t| t == self.admin_token)
    }

    /// The caller of an API request: admin, a device (by its bearer
    /// token) or anonymous. Errors: 401 for an unknown token, or for no
    /// token while device authentication is required.
    fn caller(&self, headers: &HeaderMap) -> Result<Caller, ApiError> {
        match bearer(headers) {
            Some(t) if t == self.admin_token => Ok(Caller::Admin),
            Some(t) => match self.devices.read().unwrap().lookup(t) {
                Some(d) => Ok(Caller::Device(d.clone())),
                None => Err(ApiError(StatusCode::UNAUTHORIZED, "unknown or revoked device token".into())),
            },
            None if self.device_auth == DeviceAuth::Off => Ok(Caller::Anonymous),
            None => Err(ApiError(StatusCode::UNAUTHORIZED, "device token required (Authorization: Bearer TOKEN)".into())),
        }
    }

    /// Whether the release `info_hash` is offered to `device`: Ok for a
    /// release the tracker does not know (the caller then answers "no such
    /// release").
    fn offered(&self, info_hash: &InfoHash, device: &DeviceEntry) -> Result<(), Refusal> {
        match self.audiences.read().unwrap().get(info_hash) {
            Some(a) => a.admits(info_hash, &device.device_id, &device.channel, &device.model),
            None => Ok(()),
        }
    }

    fn take_device_activity(&self) -> DeviceActivity {
        let last_seen = self.devices.read().unwrap().take_seen();
        let completions = std::mem::take(&mut *self.completions.lock().unwrap())
            .into_iter()
            .map(|((id, ih), n)| (id.to_string(), ih, n))
            .collect();
        DeviceActivity { last_seen, completions }
    }

    fn restore_device_activity(&self, a: DeviceActivity) {
        self.devices.read().unwrap().restore_seen(&a.last_seen);
        let mut c = self.completions.lock().unwrap();
        for (id, ih, n) in a.completions {
            *c.entry((id.into(), ih)).or_default() += n;
        }
    }
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
}

fn audience_of(r: &StoredRelease) -> Audience {
    Audience::new(r.release.rollout_percent, r.release.manifest.as_ref().map(|m| m.manifest.as_str()), r.pushed)
}

fn wall_secs() -> i64 {
    wall_ms() / 1000
}


/// A JSON error body `{"error": "..."}` with a status code.
struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(serde_json::json!({ "error": self.1 }))).into_response()
    }
}

impl ApiError {
    fn from_registry(e: RegistryError) -> Self {
        match e {
            RegistryError::Invalid(m) => ApiError(StatusCode::BAD_REQUEST, m),
            RegistryError::Exists(id) => ApiError(StatusCode::CONFLICT, format!("device {id:?} is already registered")),
            RegistryError::Db(e) => ApiError::from(e),
        }
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
    announce_with(&t, remote, q)
}

/// The value of parameter `name` in a raw query string, as sent (device
/// tokens are plain lowercase hex, so they need no percent-decoding).
fn query_param<'a>(q: &'a str, name: &str) -> Option<&'a str> {
    q.split('&').find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
}

/// One announce: the origin (`origin_token=`), a device (`token=`: the
/// device id comes from it and the release must be offered to the device)
/// or, with `--device-auth off`, anyone.
fn announce_with(t: &Tracker, remote: SocketAddr, q: Option<String>) -> Response {
    let q = q.unwrap_or_default();
    let token = query_param(&q, "token");
    let result = announce::parse_announce(&q).map_err(|e| e.to_string()).and_then(|mut req| {
        let is_origin = req.origin_token.as_deref() == Some(t.admin_token.as_str());
        let mut completed_by = None;
        if !is_origin {
            match token {
                Some(tok) => {
                    let dev = t
                        .devices
                        .read()
                        .unwrap()
                        .lookup(tok)
                        .cloned()
                        .ok_or_else(|| "unknown or revoked device token".to_string())?;
                    t.offered(&req.info_hash, &dev).map_err(|e| e.to_string())?;
                    dev.seen(wall_secs());
                    req.device = Some(dev.device_id.to_string());
                    if req.event == announce::AnnounceEvent::Completed {
                        completed_by = Some(dev.device_id.clone());
                    }
                }
                None if t.device_auth == DeviceAuth::Required => {
                    return Err("device token required: announce with token=HEX in the URL".to_string());
                }
                None => {}
            }
        }
        let ip = req.ip.unwrap_or(remote.ip());
        let resp = t
            .store
            .announce(&req, SocketAddr::new(ip, req.port), is_origin, Instant::now())
            .map_err(|e| e.to_string())?;
        if let Some(id) = completed_by {
            *t.completions.lock().unwrap().entry((id, req.info_hash)).or_default() += 1;
        }
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
            bencoded(announce::encode_failure(&e))
        }
    }
}

/// A scrape (BEP 48): with a valid `token=` (or the admin bearer token),
/// or by anyone with `--device-auth off`.
async fn scrape_handler(State(t): State<Arc<Tracker>>, headers: HeaderMap, RawQuery(q): RawQuery) -> Response {
    let q = q.unwrap_or_default();
    match query_param(&q, "token") {
        Some(tok) if t.devices.read().unwrap().lookup(tok).is_none() => {
            return bencoded(announce::encode_failure("unknown or revoked device token"));
        }
        Some(_) => {}
        None if t.device_auth == DeviceAuth::Required && !t.is_admin(&headers) => {
            return bencoded(announce::encode_failure("device token required: scrape with token=HEX in the URL"));
        }
        None => {}
    }
    scrape_with(&t, &q)
}

fn scrape_with(t: &Tracker, q: &str) -> Response {
    metrics::counter!("ota_tracker_scrapes_total").increment(1);
    match announce::parse_scrape(q) {
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

async fn list_releases(
    State(t): State<Arc<Tracker>>,
    headers: HeaderMap,
) -> Result<Json<Vec<Release>>, ApiError> {
    let caller = t.caller(&headers)?;
    let all = t.registry.list().await?;
    Ok(Json(
        all.into_iter()
            .filter(|r| match &caller {
                Caller::Device(d) => {
                    t.offered(&r.release.info_hash, d).is_ok()
                }
                _ => true,
            })
            .map(|r| t.with_origins(r))
            .collect(),
    ))
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
    let release = t.registry.register(&new).await.map_err(ApiError::from_registry)?;
    let ih = release.info_hash;
    t.store.register(ih);
    let stored = find(&t, &release.info_hash).await?;
    t.audiences.write().unwrap().insert(ih, audience_of(&stored));
    metrics::gauge!("ota_tracker_rollout_percent", "info_hash" => release.info_hash.to_hex())
        .set(release.rollout_percent as f64);
    tracing::info!(info_hash = %release.info_hash, name = %release.name, rollout = release.rollout_percent, "release registered");
    Ok(Json(release))
}

async fn find(t: &Tracker, info_hash: &InfoHash) -> Result<StoredRelease, ApiError> {
    t.registry
        .get(info_hash)
        .await?
        .ok_or_else(|| ApiError(StatusCode::NOT_FOUND, format!("no release {info_hash}")))
}

/// The release, if the caller may see it: 403 with the reason for a device
/// it is not offered to.
async fn find_for(t: &Tracker, caller: &Caller, info_hash: &InfoHash) -> Result<StoredRelease, ApiError> {
    let r = find(t, info_hash).await?;
    if let Caller::Device(d) = caller {
        t.offered(&r.release.info_hash, d).map_err(|e| ApiError(StatusCode::FORBIDDEN, e.to_string()))?;
    }
    Ok(r)
}

async fn get_release(
    State(t): State<Arc<Tracker>>,
    headers: HeaderMap,
    Path(info_hash): Path<InfoHash>,
) -> Result<Json<Release>, ApiError> {
    let caller = t.caller(&headers)?;
    let r = find_for(&t, &caller, &info_hash).await?;
    Ok(Json(t.with_origins(r)))
}

#[derive(Deserialize)]
struct TorrentQuery {
    device: Option<String>,
}

/// The `.torrent` of a release. For a device, the announce URL is
/// `PUBLIC_URL/announce?token=TOKEN` with the caller's token; for the admin or
/// an anonymous caller (`--device-auth off`), `PUBLIC_URL/announce` with
/// `?device=ID` when `device` is given.
async fn get_torrent(
    State(t): State<Arc<Tracker>>,
    headers: HeaderMap,
    Path(info_hash): Path<InfoHash>,
    Query(q): Query<TorrentQuery>,
) -> Result<Response, ApiError> {
    let caller = t.caller(&headers)?;
    let r = find_for(&t, &caller, &info_hash).await?;
    let announce = match (&caller, bearer(&headers)) {
        (Caller::Device(_), Some(token)) => format!("{}/announce?token={token}", t.public_url),
        _ => {
            let mut a = format!("{}/announce", t.public_url);
            if let Some(d) = q.device {
                a.push_str("?device=");
                a.push_str(&announce::encode_binary(d.as_bytes()));
            }
            a
        }
    };
    let body = ota_proto::metainfo::torrent_bytes(&announce, &r.info);
    Ok(([(header::CONTENT_TYPE, "application/x-bittorrent")], body).into_response())
}

async fn push_release(
    State(t): State<Arc<Tracker>>,
    headers: HeaderMap,
    Path(info_hash): Path<InfoHash>,
) -> Result<Json<serde_json::Value>, ApiError> {
    if !t.is_admin(&headers) {
        return Err(ApiError(StatusCode::UNAUTHORIZED, "admin token required".into()));
    }
    let r = find(&t, &info_hash).await?.release;
    let ih = r.info_hash;
    t.registry.mark_pushed(&r.info_hash).await?;
    if let Some(a) = t.audiences.write().unwrap().get_mut(&ih) {
        a.pushed = true;
    }
    let ev = PushEvent { info_hash: r.info_hash, name: r.name, version: r.version };
    let delivered = t.push.send(PushMsg { event: ev, info_hash: ih, previous_percent: None }).unwrap_or(0);
    metrics::counter!("ota_tracker_pushes_total").increment(1);
    tracing::info!(%info_hash, delivered, "release pushed");
    Ok(Json(serde_json::json!({ "delivered": delivered })))
}

/// Body of `POST /api/releases/{info_hash}/rollout`.
#[derive(Deserialize)]
struct RolloutBody {
    /// New rollout percentage, 0..=100.
    percent: u8,
}

/// Sets a release's rollout percentage (admin). Raising it pushes a pushed
/// release to the devices it newly includes. Answers
/// `{"info_hash", "percent", "previous_percent", "delivered"}`.
async fn set_rollout(
    State(t): State<Arc<Tracker>>,
    headers: HeaderMap,
    Path(info_hash): Path<InfoHash>,
    body: Result<Json<RolloutBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    if !t.is_admin(&headers) {
        return Err(ApiError(StatusCode::UNAUTHORIZED, "admin token required".into()));
    }
    let Json(RolloutBody { percent }) = body.map_err(|e| ApiError(StatusCode::BAD_REQUEST, e.body_text()))?;
    if percent > 100 {
        return Err(ApiError(StatusCode::BAD_REQUEST, format!("percent must be 0..=100, got {percent}")));
    }
    let r = find(&t, &info_hash).await?;
    let ih = r.release.info_hash;
    if !t.registry.set_rollout(&r.release.info_hash, percent).await? {
        return Err(ApiError(StatusCode::NOT_FOUND, format!("no release {info_hash}")));
    }
    let (previous, pushed) = {
        let mut audiences = t.audiences.write().unwrap();
        let a = audiences.entry(ih).or_insert_with(|| audience_of(&r));
        let previous = a.percent;
        a.percent = percent;
        (previous, a.pushed)
    };
    metrics::gauge!("ota_tracker_rollout_percent", "info_hash" => r.release.info_hash.to_hex()).set(percent as f64);
    let mut delivered = 0;
    if pushed && percent > previous {
        let ev = PushEvent { info_hash: r.release.info_hash, name: r.release.name, version: r.release.version };
        delivered = t.push.send(PushMsg { event: ev, info_hash: ih, previous_percent: Some(previous) }).unwrap_or(0);
    }
    tracing::info!(%info_hash, percent, previous, "rollout changed");
    Ok(Json(serde_json::json!({
        "info_hash": r.release.info_hash, "percent": percent, "previous_percent": previous, "delivered": delivered
    })))
}

async fn push_stream(
    State(t): State<Arc<Tracker>>,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let caller = t.caller(&headers)?;
    let rx = tokio_stream::wrappers::BroadcastStream::new(t.push.subscribe());
    let me = t.clone();
    let stream = rx.filter_map(move |msg| {
        let msg = msg.ok()?;
        if let Caller::Device(d) = &caller {
            me.offered(&msg.info_hash, d).ok()?;
            // A raised wave goes only to the devices it newly includes.
            if msg.previous_percent.is_some_and(|p| ota_proto::rollout::in_wave(&msg.info_hash, &d.device_id, p)) {
                return None;
            }
        }
        Some(Ok(Event::default().event("release").data(serde_json::to_string(&msg.event).ok()?)))
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

async fn subscribers(State(t): State<Arc<Tracker>>) -> Json<serde_json::Value> {
    Json(serde_json::json!({ "subscribers": t.push.receiver_count() }))
}

async fn post_telemetry(
    State(t): State<Arc<Tracker>>,
    headers: HeaderMap,
    body: Result<Json<TelemetryReport>, axum::extract::rejection::JsonRejection>,
) -> Result<StatusCode, ApiError> {
    let caller = t.caller(&headers)?;
    let Json(mut report) = body.map_err(|e| ApiError(StatusCode::BAD_REQUEST, e.body_text()))?;
    if let Caller::Device(d) = &caller {
        report.device = d.device_id.to_string();
    }
    find(&t, &report.info_hash).await?;
    t.registry.add_telemetry(&report).await?;
    metrics::counter!("ota_tracker_telemetry_reports_total").increment(1);
    Ok(StatusCode::NO_CONTENT)
}

async fn get_telemetry(
    State(t): State<Arc<Tracker>>,
    headers: HeaderMap,
    Path(info_hash): Path<InfoHash>,
) -> Result<Json<Vec<TelemetryReport>>, ApiError> {
    // Reports name devices: the admin reads them (anyone with --device-auth off).
    if let Caller::Device(_) = t.caller(&headers)? {
        return Err(ApiError(StatusCode::FORBIDDEN, "admin token required".into()));
    }
    Ok(Json(t.registry.telemetry(&info_hash).await?))
}

async fn list_devices(State(t): State<Arc<Tracker>>, headers: HeaderMap) -> Result<Json<Vec<Device>>, ApiError> {
    if !t.is_admin(&headers) {
        return Err(ApiError(StatusCode::UNAUTHORIZED, "admin token required".into()));
    }
    Ok(Json(t.registry.devices().await?))
}

async fn register_device(
    State(t): State<Arc<Tracker>>,
    headers: HeaderMap,
    body: Result<Json<NewDevice>, axum::extract::rejection::JsonRejection>,
) -> Result<(StatusCode, Json<DeviceToken>), ApiError> {
    if !t.is_admin(&headers) {
        return Err(ApiError(StatusCode::UNAUTHORIZED, "admin token required".into()));
    }
    let Json(new) = body.map_err(|e| ApiError(StatusCode::BAD_REQUEST, e.body_text()))?;
    let token = t
        .registry
        .register_device(&new.device_id, &new.channel, &new.model)
        .await
        .map_err(ApiError::from_registry)?;
    let n = {
        let mut devices = t.devices.write().unwrap();
        devices.insert(DeviceCredential {
            token_sha256: token_digest(&token),
            device_id: new.device_id.clone(),
            channel: new.channel,
            model: new.model,
        });
        devices.len()
    };
    metrics::gauge!("ota_tracker_devices_registered").set(n as f64);
    tracing::info!(device = %new.device_id, "device registered");
    Ok((StatusCode::CREATED, Json(DeviceToken { device_id: new.device_id, token })))
}

async fn revoke_device(
    State(t): State<Arc<Tracker>>,
    headers: HeaderMap,
    Path(device_id): Path<String>,
) -> Result<StatusCode, ApiError> {
    if !t.is_admin(&headers) {
        return Err(ApiError(StatusCode::UNAUTHORIZED, "admin token required".into()));
    }
    let found = t.registry.revoke_device(&device_id).await?;
    let n = {
        let mut devices = t.devices.write().unwrap();
        devices.remove(&device_id);
        devices.len()
    };
    metrics::gauge!("ota_tracker_devices_registered").set(n as f64);
    if !found {
        return Err(ApiError(StatusCode::NOT_FOUND, format!("no device {device_id}")));
    }
    tracing::info!(device = %device_id, "device revoked");
    Ok(StatusCode::NO_CONTENT)
}

async fn get_peers(
    State(t): State<Arc<Tracker>>,
    headers: HeaderMap,
    Path(info_hash): Path<InfoHash>,
) -> Result<Json<Vec<PeerInfo>>, ApiError> {
    if !t.is_admin(&headers) {
        return Err(ApiError(StatusCode::UNAUTHORIZED, "admin token required".into()));
    }
    let peers = t
        .store
        .peers(&info_hash, Instant::now())
        .ok_or_else(|| ApiError(StatusCode::NOT_FOUND, format!("no release {info_hash}")))?;
    Ok(Json(
        peers
            .into_iter()
            .map(|p| {
                let tag = &p.peer_id.0[..8];
                PeerInfo {
                    peer_id: p.peer_id,
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
