//! Extractors that turn a request's parts into the service's types, so that
//! handlers start from a checked caller and a parsed info hash:
//! [`Admin`] (the admin bearer token, else 401), [`Caller`] (admin, device
//! or anonymous, from the bearer token), [`InfoHashPath`] (the
//! `{info_hash}` path segment as an [`InfoHash`], else 400) and [`ApiJson`]
//! (a JSON body, else 400). Every rejection is an [`ApiError`], answered as
//! `{"error": TEXT}` with its status code.

use std::sync::Arc;

use axum::extract::{FromRequest, FromRequestParts, Path, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use ota_proto::InfoHash;

use crate::service::{ApiError, Caller, Tracker};

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = match &self {
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::TooMany(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Database(_) => StatusCode::SERVICE_UNAVAILABLE,
        };
        (status, Json(serde_json::json!({ "error": self.to_string() }))).into_response()
    }
}

/// The bearer token of `Authorization: Bearer TOKEN`, if any.
pub(crate) fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
}

/// Proof that the request carries the admin token
/// (`Authorization: Bearer ADMIN`). Rejection: 401 `admin token required`.
#[derive(Debug, Clone, Copy)]
pub struct Admin;

impl FromRequestParts<Arc<Tracker>> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, t: &Arc<Tracker>) -> Result<Self, ApiError> {
        match bearer(&parts.headers) {
            Some(token) if t.is_admin_token(token) => Ok(Admin),
            _ => Err(ApiError::ADMIN_REQUIRED),
        }
    }
}

/// The API caller from its bearer token (see [`Tracker::api_caller`]).
/// Rejection: 401 for an unknown or revoked token, or for no token while
/// device authentication is required.
impl FromRequestParts<Arc<Tracker>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, t: &Arc<Tracker>) -> Result<Self, ApiError> {
        t.api_caller(bearer(&parts.headers))
    }
}

/// The `{info_hash}` path segment: 40 hex characters (either case).
/// Rejection: 400 naming the malformed value.
#[derive(Debug, Clone, Copy)]
pub struct InfoHashPath(pub InfoHash);

impl<S: Send + Sync> FromRequestParts<S> for InfoHashPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Path(raw) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|e| ApiError::BadRequest(e.body_text()))?;
        raw.parse()
            .map(InfoHashPath)
            .map_err(|e: ota_proto::ids::IdError| ApiError::BadRequest(e.to_string()))
    }
}

/// A JSON request body of type `T`. Rejection: 400 with serde's or axum's
/// explanation (bad JSON, wrong shape, missing `Content-Type`).
#[derive(Debug, Clone)]
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        Json::<T>::from_request(req, state)
            .await
            .map(|Json(v)| ApiJson(v))
            .map_err(|e| ApiError::BadRequest(e.body_text()))
    }
}
