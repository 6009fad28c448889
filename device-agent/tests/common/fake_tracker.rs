//! A fake, hostile tracker for the agent's security tests: an axum server
//! that serves whatever release records, `.torrent` files, packages (the
//! origin's `/packages/{key}` with Range support), announce answers and
//! push events a test crafts, and records what the agent sent.
//!
//! Releases are built genuine first ([`genuine`]: a real package, its real
//! torrent, and optionally a manifest signed with the device maker's key);
//! a test then changes the record, the torrent or the bodies it serves.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use sha1::{Digest, Sha1};
use sha2::Sha256;

use ota_proto::api::Release;
use ota_proto::manifest::{sign, Manifest};
use ota_proto::metainfo::{info_hash, torrent_bytes, InfoDict};
use ota_proto::InfoHash;

/// How a served body is sent.
#[derive(Clone)]
pub(crate) enum Served {
    /// These bytes, with a `Content-Length`.
    Bytes(Vec<u8>),
    /// Chunks of `chunk` repeated without end, no `Content-Length`.
    Endless(Vec<u8>),
}

/// What the fake tracker serves and what it saw.
#[derive(Default)]
pub(crate) struct FakeState {
    /// `GET /api/releases/{hex}` bodies.
    pub(crate) releases: HashMap<String, Served>,
    /// `GET /api/releases/{hex}/torrent` bodies.
    pub(crate) torrents: HashMap<String, Served>,
    /// `GET /packages/{key}` package bytes (Range requests answered 206).
    pub(crate) packages: HashMap<String, Vec<u8>>,
    /// Extra bytes appended to every package Range answer (a lying origin).
    pub(crate) package_extra: usize,
    /// Package Range answers sent chunked, without a `Content-Length`.
    pub(crate) package_chunked: bool,
    /// Required `Authorization` header value on `/packages/{key}`, if any (else 401).
    pub(crate) require_package_auth: Option<String>,
    /// `Authorization` headers seen on `/packages/{key}`.
    pub(crate) package_auth_seen: Vec<Option<String>>,
    /// `GET /api/push` body.
    pub(crate) push: Option<Served>,
    /// Paths of every request, in order.
    pub(crate) requests: Vec<String>,
    /// Telemetry reports received.
    pub(crate) telemetry: Vec<serde_json::Value>,
}

/// A running fake tracker.
pub(crate) struct FakeTracker {
    pub(crate) addr: SocketAddr,
    pub(crate) state: Arc<Mutex<FakeState>>,
    task: tokio::task::JoinHandle<()>,
}

impl FakeTracker {
    /// Starts on a free port of 127.0.0.1.
    pub(crate) async fn start() -> FakeTracker {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(FakeState::default()));
        let app = axum::Router::new()
            .route("/api/releases", get(list))
            .route("/api/releases/{ih}", get(release))
            .route("/api/releases/{ih}/torrent", get(torrent))
            .route("/api/push", get(push))
            .route("/api/telemetry", post(telemetry))
            .route("/announce", get(announce))
            .route("/packages/{key}", get(package))
            .with_state(state.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakeTracker { addr, state, task }
    }

    /// `http://127.0.0.1:PORT`.
    pub(crate) fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Serves `release` as its record (JSON), `torrent` as its torrent and
    /// `package` at `/packages/{key}`.
    pub(crate) fn serve(&self, release: &Release, torrent: &[u8], key: &str, package: &[u8]) {
        let mut s = self.state.lock().unwrap();
        let hex = release.info_hash.to_hex();
        s.releases
            .insert(hex.clone(), Served::Bytes(serde_json::to_vec(release).unwrap()));
        s.torrents.insert(hex, Served::Bytes(torrent.to_vec()));
        s.packages.insert(key.to_string(), package.to_vec());
    }

    /// How many requests had this path.
    pub(crate) fn count(&self, path: &str) -> usize {
        self.state
            .lock()
            .unwrap()
            .requests
            .iter()
            .filter(|p| *p == path)
            .count()
    }

    pub(crate) fn stop(self) {
        self.task.abort();
    }
}

fn respond(served: Option<Served>, content_type: &str) -> Response {
    let Some(served) = served else {
        return (StatusCode::NOT_FOUND, "unknown release").into_response();
    };
    match served {
        Served::Bytes(b) => ([(header::CONTENT_TYPE, content_type.to_string())], b).into_response(),
        Served::Endless(chunk) => {
            let chunk = Bytes::from(chunk);
            let stream = futures::stream::unfold(chunk, |c| async move {
                tokio::task::yield_now().await;
                Some((Ok::<_, std::io::Error>(c.clone()), c))
            });
            Response::builder()
                .header(header::CONTENT_TYPE, content_type)
                .body(Body::from_stream(stream))
                .unwrap()
        }
    }
}

type St = State<Arc<Mutex<FakeState>>>;

async fn list(State(s): St) -> Response {
    let mut s = s.lock().unwrap();
    s.requests.push("/api/releases".into());
    let all: Vec<serde_json::Value> = s
        .releases
        .values()
        .filter_map(|r| match r {
            Served::Bytes(b) => serde_json::from_slice(b).ok(),
            _ => None,
        })
        .collect();
    axum::Json(all).into_response()
}

async fn release(State(s): St, Path(ih): Path<String>) -> Response {
    let mut s = s.lock().unwrap();
    s.requests.push(format!("/api/releases/{ih}"));
    respond(s.releases.get(&ih).cloned(), "application/json")
}

async fn torrent(State(s): St, Path(ih): Path<String>) -> Response {
    let mut s = s.lock().unwrap();
    s.requests.push(format!("/api/releases/{ih}/torrent"));
    respond(s.torrents.get(&ih).cloned(), "application/x-bittorrent")
}

async fn push(State(s): St) -> Response {
    let served = {
        let mut s = s.lock().unwrap();
        s.requests.push("/api/push".into());
        s.push.clone()
    };
    respond(served.or(Some(Served::Bytes(Vec::new()))), "text/event-stream")
}

async fn telemetry(State(s): St, axum::Json(v): axum::Json<serde_json::Value>) -> StatusCode {
    let mut s = s.lock().unwrap();
    s.requests.push("/api/telemetry".into());
    s.telemetry.push(v);
    StatusCode::OK
}

async fn announce(State(s): St) -> Vec<u8> {
    s.lock().unwrap().requests.push("/announce".into());
    b"d8:intervali60e5:peers0:e".to_vec()
}

async fn package(State(s): St, Path(key): Path<String>, headers: HeaderMap) -> Response {
    let mut s = s.lock().unwrap();
    s.requests.push(format!("/packages/{key}"));
    let auth = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(String::from);
    s.package_auth_seen.push(auth.clone());
    if let Some(want) = &s.require_package_auth {
        if auth.as_deref() != Some(want.as_str()) {
            return (StatusCode::UNAUTHORIZED, "device token required").into_response();
        }
    }
    let Some(data) = s.packages.get(&key) else {
        return (StatusCode::NOT_FOUND, "no such package").into_response();
    };
    let range = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.split_once('-'))
        .and_then(|(a, b)| Some((a.parse::<usize>().ok()?, b.parse::<usize>().ok()?)));
    let Some((a, b)) = range.filter(|(a, b)| a <= b && *b < data.len()) else {
        return (StatusCode::RANGE_NOT_SATISFIABLE, "bad range").into_response();
    };
    let mut body = data[a..=b].to_vec();
    body.extend(std::iter::repeat_n(0x41u8, s.package_extra));
    if s.package_chunked {
        let chunks: Vec<Result<Bytes, std::io::Error>> =
            body.chunks(4096).map(|c| Ok(Bytes::copy_from_slice(c))).collect();
        return Response::builder()
            .status(StatusCode::PARTIAL_CONTENT)
            .body(Body::from_stream(futures::stream::iter(chunks)))
            .unwrap();
    }
    (
        StatusCode::PARTIAL_CONTENT,
        [(header::CONTENT_RANGE, format!("bytes {a}-{b}/{}", data.len()))],
        body,
    )
        .into_response()
}

/// A genuine release of `data` named `name` at `version`: its record (HTTP
/// URL `{tracker}/packages/{name}`), its torrent (announce on `tracker`,
/// pieces of `piece_length`) and, with `key`, a manifest signed for channel
/// `stable`, every model.
pub(crate) fn genuine(
    tracker: &str,
    name: &str,
    version: &str,
    data: &[u8],
    piece_length: u64,
    key: Option<&ed25519_dalek::SigningKey>,
) -> (Release, Vec<u8>) {
    let info = InfoDict {
        name: name.into(),
        length: data.len() as u64,
        piece_length,
        pieces: data
            .chunks(piece_length as usize)
            .map(|c| Sha1::digest(c).into())
            .collect(),
        private: true,
    };
    let info_bytes = info.to_bytes();
    let ih: InfoHash = info_hash(&info_bytes);
    let torrent = torrent_bytes(&format!("{tracker}/announce"), &info_bytes);
    let sha256 = hex::encode(Sha256::digest(data));
    let manifest = key.map(|k| {
        sign(
            &Manifest {
                name: name.into(),
                version: version.into(),
                info_hash: ih,
                size: data.len() as u64,
                sha256: sha256.clone(),
                channel: "stable".into(),
                models: vec![],
                created_at: 1,
            },
            k,
        )
    });
    let release = Release {
        name: name.into(),
        version: version.into(),
        info_hash: ih,
        size: data.len() as u64,
        piece_length,
        sha256,
        http_url: Some(format!("{tracker}/packages/{name}")),
        source: format!("s3://ota/{name}"),
        created_at: 1,
        origin_peers: vec![],
        etag: None,
        manifest,
        rollout_percent: 100,
        origin_goal: None,
    };
    (release, torrent)
}
