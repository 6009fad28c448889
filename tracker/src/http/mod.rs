//! The tracker's HTTP server (axum, Kraken's `trackerserver`): thin handlers
//! over [`Tracker`]'s methods.
//!
//! Routes:
//! - `GET /announce` (BEP 3, BEP 23, BEP 7) and `GET /scrape` (BEP 48). A
//!   device announces with its token in the query, `/announce?token=HEX&…`:
//!   BitTorrent clients keep an announce URL's query string and append their
//!   parameters, and derive the scrape URL (`/scrape?token=HEX`, BEP 48
//!   convention) from it. (A path form such as `/d/TOKEN/announce` is
//!   refused by libtorrent's SSRF mitigation for trackers on loopback, which
//!   allows only paths starting with `/announce`.) The origin seeder
//!   announces with `origin_token=ORIGIN` (its own token, `--origin-token`;
//!   the admin token is never accepted in a query string); with
//!   `--device-auth off`, anyone may announce. A device scrapes only the
//!   releases offered to it. Always HTTP 200 with a bencoded body; errors
//!   (no or unknown token, release outside the device's rollout wave, …) as
//!   `failure reason` ([`crate::service::Refusal`]).
//! - Devices call the API with `Authorization: Bearer TOKEN`; the device id
//!   comes from the token. Admin calls carry the admin token the same way.
//! - `GET /api/releases` (the releases offered to the calling device; every
//!   release for the admin), `POST /api/releases` (admin, a
//!   [`NewRelease`](ota_proto::api::NewRelease) body), `GET /api/releases/{info_hash}`,
//!   `GET /api/releases/{info_hash}/torrent` (announce URL `PUBLIC_URL/announce?token=HEX` for a device),
//!   `POST /api/releases/{info_hash}/push` (admin), `POST /api/releases/{info_hash}/rollout`
//!   (admin, `{"percent": N}`), `GET /api/releases/{info_hash}/telemetry` (admin only, also
//!   with device authentication off),
//!   `GET /api/releases/{info_hash}/peers` (admin, the live swarm as
//!   [`PeerInfo`](ota_proto::api::PeerInfo) JSON).
//! - `GET /api/devices`, `POST /api/devices` (a
//!   [`NewDevice`](ota_proto::api::NewDevice) body; answers a
//!   [`DeviceToken`](ota_proto::api::DeviceToken), the only time the token
//!   is shown), `DELETE /api/devices/{id}`: admin.
//! - `GET /api/push`: server-sent events, event `release` with a
//!   [`PushEvent`](ota_proto::api::PushEvent) JSON body, only for releases
//!   offered to the calling device, `resync` (`{"missed": N}`) when the
//!   subscriber fell behind, and `introduce` with an
//!   [`Introduction`](ota_proto::rendezvous::Introduction) JSON body, only
//!   to the device another one asked to be introduced to; at most
//!   [`MAX_STREAMS_PER_DEVICE`](crate::service::MAX_STREAMS_PER_DEVICE) per
//!   device (then 429); a revoked device's streams end.
//! - `POST /api/telemetry`: a [`TelemetryReport`](ota_proto::api::TelemetryReport) JSON body,
//!   from a device only for a release offered to it, with byte counts no
//!   larger than [`MAX_BYTES_FACTOR`](crate::service::MAX_BYTES_FACTOR) × the release size.
//! - `PUT /api/paths`: a [`DirectPaths`](ota_proto::direct_paths::DirectPaths)
//!   JSON body, from a device only: its LAN addresses and UPnP mapping
//!   (LAN pairing, the swarm view); 204.
//! - `POST /api/introductions`: an
//!   [`IntroductionRequest`](ota_proto::rendezvous::IntroductionRequest)
//!   JSON body, from a device only: introduces it to the peer its announce
//!   got as a bridge address (hole punching); answers the target's
//!   [`Introduction`](ota_proto::rendezvous::Introduction) JSON and pushes
//!   the caller's to the target (`introduce` above). 400 for a peer that is
//!   not a bridge address of the swarm, 403 when the caller is not a live
//!   peer of the swarm (or the release is not offered to it), 404 for an
//!   unknown release or slot, 409 when the target has no QUIC endpoint or
//!   no push subscription, 429 past 30 introductions per 60 s or a second
//!   one of the same pair within 2 s ([`crate::service::Tracker::introduce`]).
//! - `GET /api/subscribers`: number of connected push subscribers (admin).
//! - `GET /metrics`: Prometheus text format (admin). `GET /health`: `ok` (anyone).
//!
//! API errors are JSON `{"error": TEXT}` with the status of their
//! [`ApiError`](crate::service::ApiError) (400, 401, 403, 404, 409, 429, 503); a
//! malformed `{info_hash}` is a 400.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::routing::{delete, get, post, put};
use axum::Router;
use ota_common::metrics::metrics_handle;

use crate::persistence;
use crate::service::Tracker;
use extract::Admin;

mod announce;
mod api;
pub mod extract;

/// How long open requests (push subscriptions included) may run on after
/// shutdown is asked for.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// How often silent peers are swept out of the swarms.
pub const EXPIRY_INTERVAL: Duration = Duration::from_secs(10);

impl Tracker {
    /// The axum router with every route (see the [module docs](self)).
    /// Serve it with `into_make_service_with_connect_info::<SocketAddr>()`:
    /// announces read the client's address.
    pub fn router(self: &Arc<Self>) -> Router {
        Router::new()
            .route("/announce", get(announce::announce))
            .route("/scrape", get(announce::scrape))
            .route("/api/devices", get(api::list_devices).post(api::register_device))
            .route("/api/devices/{device_id}", delete(api::revoke_device))
            .route("/api/releases/{info_hash}/rollout", post(api::set_rollout))
            .route("/api/releases/{info_hash}/origin-goal", post(api::set_origin_goal))
            .route("/api/releases", get(api::list_releases).post(api::register_release))
            .route("/api/releases/{info_hash}", get(api::get_release))
            .route("/api/releases/{info_hash}/torrent", get(api::get_torrent))
            .route("/api/releases/{info_hash}/push", post(api::push_release))
            .route("/api/releases/{info_hash}/telemetry", get(api::get_telemetry))
            .route("/api/releases/{info_hash}/peers", get(api::get_peers))
            .route("/api/push", get(api::push_stream))
            .route("/api/subscribers", get(api::subscribers))
            .route("/api/telemetry", post(api::post_telemetry))
            .route("/api/paths", put(api::put_paths))
            .route("/api/introductions", post(api::post_introduction))
            .route("/metrics", get(|_: Admin| async { metrics_handle().render() }))
            .route("/health", get(|| async { "ok" }))
            .route("/ready", get(api::ready))
            .with_state(self.clone())
    }

    /// Serves on `listener` until `shutdown` resolves, expiring silent peers
    /// every [`EXPIRY_INTERVAL`] and writing the live peers to the database
    /// every persist interval ([`persistence::spawn_rounds`]). After `shutdown`, open
    /// requests (push subscriptions included) get [`SHUTDOWN_GRACE`] to
    /// finish; then the live peers are written one last time and the server
    /// returns.
    ///
    /// Errors: the listener fails, or the final write of the live peers fails.
    pub async fn serve(
        self: Arc<Self>,
        listener: tokio::net::TcpListener,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let me = self.clone();
        let expiry = tokio::spawn(async move {
            let mut tick = tokio::time::interval(EXPIRY_INTERVAL);
            loop {
                tick.tick().await;
                me.store.expire(std::time::Instant::now());
            }
        });
        let (persist_stop, persist_stopped) = tokio::sync::watch::channel(false);
        let me = self.clone();
        let persister = persistence::spawn_rounds(self.mirror.interval(), persist_stopped, move || {
            let me = me.clone();
            async move { me.persist().await }
        });
        let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            shutdown.await;
            let _ = stop_tx.send(true);
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
                tokio::time::sleep(SHUTDOWN_GRACE).await;
            } => Ok(()),
        };
        expiry.abort();
        // The persister stops between writes (never inside one); then the last write.
        let _ = persist_stop.send(true);
        let _ = persister.await;
        let last = self.persist().await;
        if let Ok(rows) = &last {
            tracing::info!(rows, "live peers written at shutdown");
        }
        if let Err(e) = self.release_grant_leases().await {
            tracing::warn!(error = %format!("{e:#}"), "cannot release the origin-grant leases (they run out by themselves)");
        }
        r.and(last.map(|_| ()))
    }
}
