//! The JSON API under `/api` (types in [`ota_proto::api`]): one thin
//! handler per route, each an extractor list and one [`Tracker`] call.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures::Stream;
use ota_proto::api::{Device, DeviceToken, NewDevice, NewRelease, PeerInfo, Release, TelemetryReport};
use ota_proto::direct_paths::DirectPaths;
use ota_proto::rendezvous::{Introduction, IntroductionRequest};
use serde::Deserialize;
use tokio_stream::StreamExt;

use super::extract::{bearer, Admin, ApiJson, InfoHashPath};
use crate::service::{ApiError, Caller, PushItem, RolloutChange, Tracker};

type Shared = State<Arc<Tracker>>;

pub(super) async fn list_releases(State(t): Shared, caller: Caller) -> Result<Json<Vec<Release>>, ApiError> {
    Ok(Json(t.releases(&caller).await?))
}

pub(super) async fn register_release(
    State(t): Shared,
    _: Admin,
    ApiJson(new): ApiJson<NewRelease>,
) -> Result<Json<Release>, ApiError> {
    Ok(Json(t.register_release(&new).await?))
}

pub(super) async fn get_release(
    State(t): Shared,
    caller: Caller,
    InfoHashPath(ih): InfoHashPath,
) -> Result<Json<Release>, ApiError> {
    Ok(Json(t.release(&caller, &ih).await?))
}

#[derive(Deserialize)]
pub(super) struct TorrentQuery {
    device: Option<String>,
}

/// The `.torrent` of a release (see [`Tracker::announce_url`] for its
/// announce URL).
pub(super) async fn get_torrent(
    State(t): Shared,
    caller: Caller,
    headers: HeaderMap,
    InfoHashPath(ih): InfoHashPath,
    Query(q): Query<TorrentQuery>,
) -> Result<Response, ApiError> {
    let body = t.torrent(&caller, &ih, bearer(&headers), q.device.as_deref()).await?;
    Ok(([(header::CONTENT_TYPE, "application/x-bittorrent")], body).into_response())
}

/// Answers `{"delivered": N}`.
pub(super) async fn push_release(
    State(t): Shared,
    _: Admin,
    InfoHashPath(ih): InfoHashPath,
) -> Result<Json<serde_json::Value>, ApiError> {
    let delivered = t.push_release(&ih).await?;
    Ok(Json(serde_json::json!({ "delivered": delivered })))
}

/// Body of `POST /api/releases/{info_hash}/rollout`.
#[derive(Deserialize)]
pub(super) struct RolloutBody {
    /// New rollout percentage, 0..=100.
    percent: u8,
}

pub(super) async fn set_rollout(
    State(t): Shared,
    _: Admin,
    InfoHashPath(ih): InfoHashPath,
    ApiJson(RolloutBody { percent }): ApiJson<RolloutBody>,
) -> Result<Json<RolloutChange>, ApiError> {
    Ok(Json(t.set_rollout(&ih, percent).await?))
}

/// Body of `POST /api/releases/{info_hash}/origin-goal`.
#[derive(Deserialize)]
pub(super) struct OriginGoalBody {
    /// `fastest`, `cheapest`, `within:SECS`, or `null` for the seeder's default.
    origin_goal: Option<ota_proto::origin_goal::OriginGoal>,
}

/// Sets a release's origin cost/speed dial (admin); answers the release.
pub(super) async fn set_origin_goal(
    State(t): Shared,
    _: Admin,
    InfoHashPath(ih): InfoHashPath,
    ApiJson(OriginGoalBody { origin_goal }): ApiJson<OriginGoalBody>,
) -> Result<Json<Release>, ApiError> {
    Ok(Json(t.set_origin_goal(&ih, origin_goal).await?))
}

/// Server-sent events `release` with a [`ota_proto::api::PushEvent`] JSON
/// body, `resync` (`{"missed": N}`) when the subscriber fell behind, and
/// `introduce` with an [`ota_proto::rendezvous::Introduction`] JSON body;
/// keep-alive every 15 s. 429 when the device holds too many streams.
pub(super) async fn push_stream(
    State(t): Shared,
    caller: Caller,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let events = t.push_events(caller)?.filter_map(|item| {
        let ev = match item {
            PushItem::Release(ev) => Event::default().event("release").data(serde_json::to_string(&ev).ok()?),
            PushItem::Resync { missed } => Event::default()
                .event("resync")
                .data(serde_json::json!({ "missed": missed }).to_string()),
            PushItem::Introduce(i) => Event::default()
                .event("introduce")
                .data(serde_json::to_string(&i).ok()?),
        };
        Some(Ok(ev))
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

/// `GET /ready`: 200 `ready` while the database answers `SELECT 1` within
/// 2 s, else 503 `database unavailable` (a load balancer's or Kubernetes'
/// readiness probe; `/health` answers while the process runs).
pub(super) async fn ready(State(t): Shared) -> (StatusCode, &'static str) {
    if t.registry().ping(Duration::from_secs(2)).await {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "database unavailable")
    }
}

pub(super) async fn subscribers(State(t): Shared, _: Admin) -> Json<serde_json::Value> {
    Json(serde_json::json!({ "subscribers": t.subscribers() }))
}

pub(super) async fn post_telemetry(
    State(t): Shared,
    caller: Caller,
    ApiJson(report): ApiJson<TelemetryReport>,
) -> Result<StatusCode, ApiError> {
    t.add_telemetry(&caller, report).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub(super) async fn put_paths(
    State(t): Shared,
    caller: Caller,
    ApiJson(paths): ApiJson<DirectPaths>,
) -> Result<StatusCode, ApiError> {
    t.report_paths(&caller, paths)?;
    Ok(StatusCode::NO_CONTENT)
}

/// Answers the target's [`Introduction`] (see [`Tracker::introduce`]).
pub(super) async fn post_introduction(
    State(t): Shared,
    caller: Caller,
    ApiJson(request): ApiJson<IntroductionRequest>,
) -> Result<Json<Introduction>, ApiError> {
    Ok(Json(t.introduce(&caller, &request)?))
}

pub(super) async fn get_telemetry(
    State(t): Shared,
    _: Admin,
    InfoHashPath(ih): InfoHashPath,
) -> Result<Json<Vec<TelemetryReport>>, ApiError> {
    Ok(Json(t.telemetry(&Caller::Admin, &ih).await?))
}

pub(super) async fn list_devices(State(t): Shared, _: Admin) -> Result<Json<Vec<Device>>, ApiError> {
    Ok(Json(t.devices().await?))
}

pub(super) async fn register_device(
    State(t): Shared,
    _: Admin,
    ApiJson(new): ApiJson<NewDevice>,
) -> Result<(StatusCode, Json<DeviceToken>), ApiError> {
    Ok((StatusCode::CREATED, Json(t.register_device(new).await?)))
}

pub(super) async fn revoke_device(
    State(t): Shared,
    _: Admin,
    Path(device_id): Path<String>,
) -> Result<StatusCode, ApiError> {
    t.revoke_device(&device_id).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub(super) async fn get_peers(
    State(t): Shared,
    _: Admin,
    InfoHashPath(ih): InfoHashPath,
) -> Result<Json<Vec<PeerInfo>>, ApiError> {
    Ok(Json(t.peers(&ih)?))
}
