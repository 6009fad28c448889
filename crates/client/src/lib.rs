//! `ota-client`: the tracker's own client (as Kraken's `announceclient` is
//! its tracker's), used by the seeder (register, push), the device agent
//! (releases, torrents, push subscription, telemetry), the flash-crowd runner
//! and the benches. HTTP/JSON against the tracker's `/api`, BEP 3 announces
//! and BEP 48 scrapes against `/announce` and `/scrape`, and the push channel
//! (server-sent events), or release notices through an MQTT broker ([`broker`]).
//!
//! Every response is read with a size limit ([`limits`], checked against
//! `Content-Length` before reading and while reading, so nothing past the
//! limit is buffered) and a timeout ([`REQUEST_TIMEOUT`] for a whole call,
//! [`READ_TIMEOUT`] between two reads of the push stream): a tracker, or
//! anyone on the path of a plain-http URL, cannot make a client buffer
//! without end or wait forever.

pub mod broker;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use futures::stream::BoxStream;
use futures::StreamExt;

use ota_proto::api::{Device, DeviceToken, NewDevice, NewRelease, PeerInfo, PushEvent, Release, TelemetryReport};
use ota_proto::rendezvous::{Introduction, IntroductionRequest};
use ota_proto::{InfoHash, PeerId};

/// Size limits of the responses the client reads, bytes.
pub mod limits {
    /// One release record (`GET /api/releases/{ih}`), signed manifest included.
    pub const RELEASE_JSON: u64 = 1 << 20;
    /// The release list (`GET /api/releases`).
    pub const RELEASE_LIST: u64 = 16 << 20;
    /// A `.torrent` file: 20 bytes of SHA-1 per piece, so 16 MiB covers
    /// 800 000 pieces (50 GiB in 64 KiB pieces).
    pub const TORRENT: u64 = 16 << 20;
    /// An announce or scrape response, a telemetry list, a small JSON answer.
    pub const SMALL: u64 = 1 << 20;
    /// Admin listings (devices, peers, telemetry of a whole fleet).
    pub const ADMIN_LIST: u64 = 64 << 20;
    /// The part of an error body kept for the error message.
    pub const ERROR_BODY: u64 = 4 << 10;
    /// One server-sent event of the push channel (its lines up to the blank
    /// line that ends it; keep-alive comments count too).
    pub const PUSH_EVENT: u64 = 64 << 10;
}

/// Longest a call may take, connection to last body byte (not the push
/// subscription, which lasts; see [`READ_TIMEOUT`]).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// Longest wait between two reads of a response, the push stream
/// included (the tracker sends a keep-alive every 15 s): past it the
/// connection is dropped, and the agent reconnects.
pub const READ_TIMEOUT: Duration = Duration::from_secs(60);

/// A response body larger than its limit (declared in `Content-Length` or
/// found while reading; the rest is not read).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TooLarge {
    /// What was being read.
    pub what: String,
    /// The limit, bytes.
    pub limit: u64,
    /// The `Content-Length` the server declared, if it did.
    pub declared: Option<u64>,
}

impl std::fmt::Display for TooLarge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.declared {
            Some(n) => write!(
                f,
                "{}: response of {n} bytes is over the limit of {} bytes",
                self.what, self.limit
            ),
            None => write!(
                f,
                "{}: response is over the limit of {} bytes; not read further",
                self.what, self.limit
            ),
        }
    }
}

impl std::error::Error for TooLarge {}

/// Why [`read_limited`] failed.
#[derive(Debug)]
pub enum ReadError {
    /// The body is over the limit.
    TooLarge(TooLarge),
    /// The connection failed or timed out while reading.
    Http(reqwest::Error),
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadError::TooLarge(t) => t.fmt(f),
            ReadError::Http(e) => write!(f, "reading the response failed: {e}"),
        }
    }
}

impl std::error::Error for ReadError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ReadError::TooLarge(t) => Some(t),
            ReadError::Http(e) => Some(e),
        }
    }
}

/// Reads a response body of at most `limit` bytes: refused at once when
/// its `Content-Length` is larger, and reading stops at the first chunk
/// that goes past the limit (at most `limit` bytes plus one chunk are ever
/// held). `what` names the response in the error.
///
/// Errors: [`ReadError::TooLarge`], or [`ReadError::Http`] when the
/// connection fails or a timeout of the request or client passes.
pub async fn read_limited(mut resp: reqwest::Response, limit: u64, what: &str) -> Result<Vec<u8>, ReadError> {
    let too_large = |declared| {
        ReadError::TooLarge(TooLarge {
            what: what.to_string(),
            limit,
            declared,
        })
    };
    let declared = resp.content_length();
    if declared.is_some_and(|n| n > limit) {
        return Err(too_large(declared));
    }
    let mut out = Vec::with_capacity(declared.unwrap_or(0).min(limit).min(1 << 20) as usize);
    while let Some(chunk) = resp.chunk().await.map_err(ReadError::Http)? {
        if out.len() as u64 + chunk.len() as u64 > limit {
            return Err(too_large(None));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// Counts the bytes of the server-sent event being received and refuses
/// one longer than `limit` (an event ends at a blank line; `\r` is
/// ignored). Pure: fed the stream's chunks in order.
#[derive(Debug, Clone)]
pub struct EventSizeGuard {
    limit: u64,
    line: u64,
    event: u64,
}

impl EventSizeGuard {
    /// A guard for events of at most `limit` bytes.
    pub fn new(limit: u64) -> Self {
        EventSizeGuard {
            limit,
            line: 0,
            event: 0,
        }
    }

    /// Accounts for the next chunk of the stream.
    ///
    /// Errors: the current event is now longer than the limit.
    pub fn feed(&mut self, chunk: &[u8]) -> Result<(), TooLarge> {
        for &b in chunk {
            match b {
                b'\n' => {
                    if self.line == 0 {
                        self.event = 0;
                    }
                    self.line = 0;
                }
                b'\r' => {}
                _ => {
                    self.line += 1;
                    self.event += 1;
                    if self.event > self.limit {
                        return Err(TooLarge {
                            what: "push event".into(),
                            limit: self.limit,
                            declared: None,
                        });
                    }
                }
            }
        }
        Ok(())
    }
}

/// Why the push stream failed.
#[derive(Debug)]
enum PushError {
    TooLarge(TooLarge),
    Http(reqwest::Error),
}

impl std::fmt::Display for PushError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PushError::TooLarge(t) => t.fmt(f),
            PushError::Http(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for PushError {}

/// One message of the push channel ([`TrackerClient::subscribe`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PushMessage {
    /// A release offered to this device (SSE event `release`).
    Release(PushEvent),
    /// Another device asks to punch a QUIC path to this one (SSE event
    /// `introduce`): send towards its candidates at once. Already passed
    /// [`Introduction::check`].
    Introduce(Introduction),
}

/// Parses the `data` of an SSE event `introduce`: `None` (after a warning)
/// for one that is not an [`Introduction`] or fails
/// [`Introduction::check`], so that a hostile event is dropped without
/// ending the stream.
fn parse_introduction(data: &str) -> Option<Introduction> {
    let intro: Introduction = match serde_json::from_str(data) {
        Ok(i) => i,
        Err(e) => {
            tracing::warn!(error = %e, "push channel: malformed introduction dropped");
            return None;
        }
    };
    match intro.check() {
        Ok(()) => Some(intro),
        Err(e) => {
            tracing::warn!(error = %e, id = intro.id, "push channel: introduction refused");
            None
        }
    }
}

/// Parameters of [`TrackerClient::announce`] (BEP 3).
#[derive(Debug, Clone)]
pub struct AnnounceParams {
    /// Swarm.
    pub info_hash: InfoHash,
    /// The client's peer id.
    pub peer_id: PeerId,
    /// Its peer-wire port.
    pub port: u16,
    /// Bytes uploaded.
    pub uploaded: u64,
    /// Bytes downloaded.
    pub downloaded: u64,
    /// Bytes left.
    pub left: u64,
    /// Event.
    pub event: ota_proto::announce::AnnounceEvent,
    /// Device id, sent as `device=` (for `--device-auth off`); a client
    /// with a device token sends `token=` instead and the tracker takes the
    /// id from the token.
    pub device: Option<String>,
}

/// HTTP client for one tracker. Clones share one connection pool, which
/// [`TrackerClient::network_changed`] replaces.
#[derive(Debug, Clone)]
pub struct TrackerClient {
    base: String,
    net: Arc<Network>,
    admin_token: Option<String>,
    device_token: Option<String>,
}

/// The connections of the network the device is on now.
#[derive(Debug)]
struct Network {
    http: std::sync::RwLock<reqwest::Client>,
    /// Bumped on each network change: calls in flight on the old
    /// connections end at once.
    changes: tokio::sync::watch::Sender<u64>,
}

/// A reqwest client with the tracker client's timeouts (see
/// [`TrackerClient::new`]).
fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .read_timeout(READ_TIMEOUT)
        .build()
        .expect("reqwest client")
}

impl TrackerClient {
    /// A client for the tracker at `base` (e.g. `http://127.0.0.1:7070`).
    /// `admin_token` is needed only for [`Self::register`] and [`Self::push`].
    /// Connections time out after 5 s, reads after [`READ_TIMEOUT`], calls
    /// (but the push subscription) after [`REQUEST_TIMEOUT`].
    pub fn new(base: &str, admin_token: Option<String>) -> Self {
        TrackerClient {
            base: base.trim_end_matches('/').to_string(),
            net: Arc::new(Network {
                http: std::sync::RwLock::new(http_client()),
                changes: tokio::sync::watch::Sender::new(0),
            }),
            admin_token,
            device_token: None,
        }
    }

    /// The device moved to another network (connection migration, issue
    /// 16): pooled connections to the tracker are bound to an address that
    /// may be gone, and a request on one would wait for TCP to give up. All
    /// clones of this client drop the pool and open new connections; calls
    /// in flight and push subscriptions end at once with an error (callers
    /// retry or resubscribe as after any failure).
    pub fn network_changed(&self) {
        *self.net.http.write().unwrap_or_else(|e| e.into_inner()) = http_client();
        self.net.changes.send_modify(|n| *n += 1);
    }

    fn http(&self) -> reqwest::Client {
        self.net.http.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Sends `req`, unless the network changes first ([`Self::network_changed`]).
    async fn send(&self, req: reqwest::RequestBuilder) -> anyhow::Result<reqwest::Response> {
        let mut changes = self.net.changes.subscribe();
        tokio::select! {
            r = req.send() => Ok(r?),
            _ = changes.changed() => anyhow::bail!("the network changed during the request"),
        }
    }

    /// The same client acting as a device: it announces and scrapes with
    /// `token=TOKEN` in the query string, and sends
    /// `Authorization: Bearer TOKEN` on device API calls (releases, torrent,
    /// push subscription, telemetry). `token` is what
    /// [`Self::register_device`] returned (64 hex characters).
    pub fn with_device_token(mut self, token: Option<String>) -> Self {
        self.device_token = token;
        self
    }

    /// The device token this client acts with, if any.
    pub fn device_token(&self) -> Option<&str> {
        self.device_token.as_deref()
    }

    /// Credentials of device API calls: the device token, else the admin
    /// token, else none.
    fn auth(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match self.device_token.as_ref().or(self.admin_token.as_ref()) {
            Some(t) => req.bearer_auth(t),
            None => req,
        }
    }

    /// `{base}/{what}?token=TOKEN&` with a device token, else `{base}/{what}?`.
    fn tracker_url(&self, what: &str) -> String {
        match &self.device_token {
            Some(t) => format!("{}/{what}?token={t}&", self.base),
            None => format!("{}/{what}?", self.base),
        }
    }

    /// Registers a device (admin) and returns its token, shown only this once.
    ///
    /// Errors: tracker unreachable, 400 for an invalid id, channel or model,
    /// 401 for a wrong admin token, 409 when the id is taken.
    pub async fn register_device(&self, device_id: &str, channel: &str, model: &str) -> anyhow::Result<String> {
        let body = NewDevice {
            device_id: device_id.into(),
            channel: channel.into(),
            model: model.into(),
        };
        let resp = self
            .send(
                self.admin(self.http().post(format!("{}/api/devices", self.base)).json(&body))
                    .timeout(REQUEST_TIMEOUT),
            )
            .await
            .with_context(|| format!("cannot reach tracker at {}", self.base))?;
        let t: DeviceToken = serde_json::from_slice(&Self::body(resp, "register device", limits::SMALL).await?)
            .context("register device")?;
        Ok(t.token)
    }

    /// Every registered device (admin).
    pub async fn devices(&self) -> anyhow::Result<Vec<Device>> {
        let resp = self
            .send(
                self.admin(self.http().get(format!("{}/api/devices", self.base)))
                    .timeout(REQUEST_TIMEOUT),
            )
            .await?;
        serde_json::from_slice(&Self::body(resp, "list devices", limits::ADMIN_LIST).await?).context("list devices")
    }

    /// Revokes a device's token (admin). Errors: 404 for an unknown device.
    pub async fn revoke_device(&self, device_id: &str) -> anyhow::Result<()> {
        let resp = self
            .send(
                self.admin(self.http().delete(format!("{}/api/devices/{device_id}", self.base)))
                    .timeout(REQUEST_TIMEOUT),
            )
            .await?;
        Self::check(resp, "revoke device").await?;
        Ok(())
    }

    /// Sets a release's rollout percentage (admin); returns how many push
    /// subscribers the newly included devices' push reached.
    ///
    /// Errors: 400 for a percentage above 100, 404 for an unknown release.
    pub async fn set_rollout(&self, info_hash: &InfoHash, percent: u8) -> anyhow::Result<usize> {
        let resp = self
            .send(
                self.admin(
                    self.http()
                        .post(format!("{}/api/releases/{info_hash}/rollout", self.base))
                        .json(&serde_json::json!({ "percent": percent })),
                )
                .timeout(REQUEST_TIMEOUT),
            )
            .await?;
        let v: serde_json::Value =
            serde_json::from_slice(&Self::body(resp, "set rollout", limits::SMALL).await?).context("set rollout")?;
        Ok(v["delivered"].as_u64().unwrap_or(0) as usize)
    }

    /// Sets (or with `None` clears) a release's origin cost/speed dial
    /// (admin, issue 17); returns the release as the tracker now lists it.
    ///
    /// Errors: 404 for an unknown release, 401/403 without the admin token.
    pub async fn set_origin_goal(
        &self,
        info_hash: &InfoHash,
        goal: Option<ota_proto::origin_goal::OriginGoal>,
    ) -> anyhow::Result<Release> {
        let resp = self
            .send(
                self.admin(
                    self.http()
                        .post(format!("{}/api/releases/{info_hash}/origin-goal", self.base))
                        .json(&serde_json::json!({ "origin_goal": goal })),
                )
                .timeout(REQUEST_TIMEOUT),
            )
            .await?;
        serde_json::from_slice(&Self::body(resp, "set origin goal", limits::SMALL).await?).context("set origin goal")
    }

    /// The tracker base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// `resp` if its status is a success; else an error with the status
    /// and the first [`limits::ERROR_BODY`] bytes of the body.
    async fn check(resp: reqwest::Response, what: &str) -> anyhow::Result<reqwest::Response> {
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let mut body = Vec::new();
        let mut resp = resp;
        while let Ok(Some(chunk)) = resp.chunk().await {
            body.extend_from_slice(&chunk);
            if body.len() as u64 >= limits::ERROR_BODY {
                body.truncate(limits::ERROR_BODY as usize);
                break;
            }
        }
        anyhow::bail!("{what}: tracker answered {status}: {}", String::from_utf8_lossy(&body))
    }

    /// The body of a successful response, at most `limit` bytes.
    async fn body(resp: reqwest::Response, what: &str, limit: u64) -> anyhow::Result<Vec<u8>> {
        let resp = Self::check(resp, what).await?;
        Ok(read_limited(resp, limit, what).await?)
    }

    fn admin(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.admin_token {
            Some(t) => req.bearer_auth(t),
            None => req,
        }
    }

    /// Registers a release (admin). Errors: tracker unreachable, 400 for an
    /// invalid release, 401 for a wrong token.
    pub async fn register(&self, r: &NewRelease) -> anyhow::Result<Release> {
        let resp = self
            .send(
                self.admin(self.http().post(format!("{}/api/releases", self.base)).json(r))
                    .timeout(REQUEST_TIMEOUT),
            )
            .await
            .with_context(|| format!("cannot reach tracker at {}", self.base))?;
        serde_json::from_slice(&Self::body(resp, "register release", limits::RELEASE_JSON).await?)
            .context("register release")
    }

    /// Pushes a release to subscribed devices (admin); returns how many
    /// subscribers it was delivered to.
    pub async fn push(&self, info_hash: &InfoHash) -> anyhow::Result<usize> {
        let resp = self
            .send(
                self.admin(self.http().post(format!("{}/api/releases/{info_hash}/push", self.base)))
                    .timeout(REQUEST_TIMEOUT),
            )
            .await
            .with_context(|| format!("cannot reach tracker at {}", self.base))?;
        let v: serde_json::Value =
            serde_json::from_slice(&Self::body(resp, "push", limits::SMALL).await?).context("push")?;
        Ok(v["delivered"].as_u64().unwrap_or(0) as usize)
    }

    /// All releases, newest first.
    pub async fn releases(&self) -> anyhow::Result<Vec<Release>> {
        let resp = self
            .send(
                self.auth(self.http().get(format!("{}/api/releases", self.base)))
                    .timeout(REQUEST_TIMEOUT),
            )
            .await?;
        serde_json::from_slice(&Self::body(resp, "list releases", limits::RELEASE_LIST).await?).context("list releases")
    }

    /// One release by hex info hash.
    pub async fn release(&self, info_hash: &InfoHash) -> anyhow::Result<Release> {
        let resp = self
            .send(
                self.auth(self.http().get(format!("{}/api/releases/{info_hash}", self.base)))
                    .timeout(REQUEST_TIMEOUT),
            )
            .await?;
        serde_json::from_slice(&Self::body(resp, "get release", limits::RELEASE_JSON).await?).context("get release")
    }

    /// The `.torrent` file of a release. With a device token its announce
    /// URL carries the token (`/announce?token=TOKEN`); otherwise `device=`.
    pub async fn torrent(&self, info_hash: &InfoHash, device: &str) -> anyhow::Result<Vec<u8>> {
        let resp = self
            .send(
                self.auth(
                    self.http()
                        .get(format!("{}/api/releases/{info_hash}/torrent", self.base)),
                )
                .query(&[("device", device)])
                .timeout(REQUEST_TIMEOUT),
            )
            .await?;
        Self::body(resp, "get torrent", limits::TORRENT).await
    }

    /// Sends one BEP 3 announce to `{base}/announce` (with `device` when
    /// given) and returns the interval and the peers handed out. Used to send
    /// the `completed` and `stopped` events librqbit never sends.
    ///
    /// Errors: the tracker is unreachable or answers with a `failure reason`.
    pub async fn announce(&self, a: &AnnounceParams) -> anyhow::Result<(u32, Vec<std::net::SocketAddr>)> {
        use ota_proto::announce::encode_binary;
        let event = match a.event {
            ota_proto::announce::AnnounceEvent::Started => "&event=started",
            ota_proto::announce::AnnounceEvent::Completed => "&event=completed",
            ota_proto::announce::AnnounceEvent::Stopped => "&event=stopped",
            ota_proto::announce::AnnounceEvent::None => "",
        };
        let device = match (&self.device_token, a.device.as_deref()) {
            (None, Some(d)) => format!("&device={}", encode_binary(d.as_bytes())),
            _ => String::new(),
        };
        let url = format!(
            "{}info_hash={}&peer_id={}&port={}&uploaded={}&downloaded={}&left={}&compact=1{event}{device}",
            self.tracker_url("announce"),
            encode_binary(&a.info_hash.0),
            encode_binary(&a.peer_id.0),
            a.port,
            a.uploaded,
            a.downloaded,
            a.left
        );
        let resp = self.send(self.http().get(url).timeout(REQUEST_TIMEOUT)).await?;
        let body = Self::body(resp, "announce", limits::SMALL).await?;
        ota_proto::announce::decode_announce(&body)
    }

    /// The live peers of a release's swarm (admin), seeders first.
    ///
    /// Errors: tracker unreachable, 401 for a wrong token, 404 for an unknown release.
    pub async fn peers(&self, info_hash: &InfoHash) -> anyhow::Result<Vec<PeerInfo>> {
        let resp = self
            .send(
                self.admin(self.http().get(format!("{}/api/releases/{info_hash}/peers", self.base)))
                    .timeout(REQUEST_TIMEOUT),
            )
            .await
            .with_context(|| format!("cannot reach tracker at {}", self.base))?;
        serde_json::from_slice(&Self::body(resp, "list peers", limits::ADMIN_LIST).await?).context("list peers")
    }

    /// BEP 48 scrape of one swarm.
    ///
    /// Errors: tracker unreachable, a `failure reason`, a malformed response,
    /// or a response without this info hash (unregistered).
    pub async fn scrape(&self, info_hash: &InfoHash) -> anyhow::Result<ota_proto::announce::ScrapeStats> {
        let url = format!(
            "{}info_hash={}",
            self.tracker_url("scrape"),
            ota_proto::announce::encode_binary(&info_hash.0)
        );
        let resp = self
            .send(self.admin(self.http().get(url)).timeout(REQUEST_TIMEOUT))
            .await?;
        let body = Self::body(resp, "scrape", limits::SMALL).await?;
        ota_proto::announce::decode_scrape(&body, info_hash)
    }

    /// Number of devices subscribed to the push channel (admin).
    pub async fn subscribers(&self) -> anyhow::Result<usize> {
        let resp = self
            .send(
                self.admin(self.http().get(format!("{}/api/subscribers", self.base)))
                    .timeout(REQUEST_TIMEOUT),
            )
            .await?;
        let v: serde_json::Value =
            serde_json::from_slice(&Self::body(resp, "subscribers", limits::SMALL).await?).context("subscribers")?;
        Ok(v["subscribers"].as_u64().unwrap_or(0) as usize)
    }

    /// Sends a telemetry report.
    pub async fn report(&self, t: &TelemetryReport) -> anyhow::Result<()> {
        let resp = self
            .send(self.auth(self.http().post(format!("{}/api/telemetry", self.base)).json(t)))
            .await?;
        Self::check(resp, "telemetry").await?;
        Ok(())
    }

    /// Reports this device's direct paths (`PUT /api/paths`): its LAN
    /// addresses and UPnP mapping, for LAN pairing.
    ///
    /// Errors: the tracker is unreachable or refuses the report (no device
    /// token, a non-LAN address).
    pub async fn report_paths(&self, paths: &ota_proto::direct_paths::DirectPaths) -> anyhow::Result<()> {
        let resp = self
            .send(self.auth(self.http().put(format!("{}/api/paths", self.base)).json(paths)))
            .await?;
        Self::check(resp, "paths").await?;
        Ok(())
    }

    /// Asks the tracker to introduce this device to the peer handed out as
    /// bridge address `request.peer` (`POST /api/introductions`, device
    /// token) and returns the peer's [`Introduction`], checked with
    /// [`Introduction::check`]; the tracker pushes this device's to the
    /// peer.
    ///
    /// Errors: the tracker is unreachable; it refuses (400 not a bridge
    /// address, 401 no device token, 403 not in the swarm, 404 unknown
    /// slot, 409 the peer has no QUIC endpoint or push subscription, 429
    /// rate limited); the answer is larger than [`limits::SMALL`],
    /// malformed, or fails the check.
    pub async fn introduce(&self, request: &IntroductionRequest) -> anyhow::Result<Introduction> {
        let resp = self
            .send(
                self.auth(
                    self.http()
                        .post(format!("{}/api/introductions", self.base))
                        .json(request),
                )
                .timeout(REQUEST_TIMEOUT),
            )
            .await
            .with_context(|| format!("cannot reach tracker at {}", self.base))?;
        let intro: Introduction = serde_json::from_slice(&Self::body(resp, "introduce", limits::SMALL).await?)
            .context("introduce: malformed answer")?;
        intro
            .check()
            .context("introduce: the tracker's introduction is refused")?;
        Ok(intro)
    }

    /// The latest report of each device for a release.
    pub async fn telemetry(&self, info_hash: &InfoHash) -> anyhow::Result<Vec<TelemetryReport>> {
        let resp = self
            .send(
                self.auth(
                    self.http()
                        .get(format!("{}/api/releases/{info_hash}/telemetry", self.base)),
                ),
            )
            .await?;
        serde_json::from_slice(&Self::body(resp, "telemetry", limits::ADMIN_LIST).await?).context("telemetry")
    }

    /// Subscribes to the push channel (server-sent events). The stream ends
    /// when the connection drops, when nothing (not even a keep-alive) is
    /// read for [`READ_TIMEOUT`], or with an error when one event is longer
    /// than [`limits::PUSH_EVENT`] bytes or when the tracker sends `resync`
    /// (it dropped pushes for this subscriber); callers reconnect with
    /// backoff and list their releases again. Items are releases and
    /// introductions ([`PushMessage`]); an `introduce` event that is
    /// malformed or fails [`Introduction::check`] is dropped with a
    /// warning (the stream goes on).
    pub async fn subscribe(&self) -> anyhow::Result<BoxStream<'static, anyhow::Result<PushMessage>>> {
        use eventsource_stream::Eventsource;
        let resp = self
            .send(
                self.auth(self.http().get(format!("{}/api/push", self.base)))
                    .header("accept", "text/event-stream"),
            )
            .await
            .with_context(|| format!("cannot reach tracker at {}", self.base))?;
        let resp = Self::check(resp, "subscribe").await?;
        let mut guard = EventSizeGuard::new(limits::PUSH_EVENT);
        let mut changes = self.net.changes.subscribe();
        let moved = async move {
            let _ = changes.changed().await;
        };
        Ok(resp
            .bytes_stream()
            // A network change ends the stream (the caller resubscribes).
            .take_until(moved)
            .map(move |chunk| match chunk {
                Ok(c) => match guard.feed(&c) {
                    Ok(()) => Ok(c),
                    Err(e) => Err(PushError::TooLarge(e)),
                },
                Err(e) => Err(PushError::Http(e)),
            })
            // The first error ends the stream (the caller reconnects).
            .scan(false, |failed, item| {
                let out = if *failed { None } else { Some(item) };
                if matches!(out, Some(Err(_))) {
                    *failed = true;
                }
                futures::future::ready(out)
            })
            .eventsource()
            .filter_map(|ev| async move {
                match ev {
                    Ok(ev) if ev.event == "release" => Some(
                        serde_json::from_str(&ev.data)
                            .map(PushMessage::Release)
                            .context("bad push event"),
                    ),
                    Ok(ev) if ev.event == "introduce" => {
                        parse_introduction(&ev.data).map(|i| Ok(PushMessage::Introduce(i)))
                    }
                    // The tracker dropped pushes for this subscriber: end the
                    // stream with an error so that the caller reconnects and
                    // lists its releases again instead of missing some.
                    Ok(ev) if ev.event == "resync" => Some(Err(anyhow::anyhow!(
                        "push channel: the tracker asks for a resync (pushes were missed: {})",
                        ev.data.chars().take(64).collect::<String>()
                    ))),
                    Ok(_) => None,
                    Err(e) => Some(Err(anyhow::anyhow!("push channel: {e}"))),
                }
            })
            .boxed())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tracker that accepts connections and never answers stands for a
    /// pooled connection whose source address went away: a call waiting on
    /// it ends as soon as the device reports a network change, in every
    /// clone.
    #[tokio::test]
    async fn a_network_change_ends_calls_in_flight_at_once() {
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", silent.local_addr().unwrap());
        let held = tokio::spawn(async move {
            let mut conns = Vec::new();
            while let Ok((c, _)) = silent.accept().await {
                conns.push(c);
            }
        });
        let client = TrackerClient::new(&base, None);
        let clone = client.clone();
        let call = tokio::spawn(async move { clone.releases().await });
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(!call.is_finished(), "the silent tracker holds the call");
        let changed = std::time::Instant::now();
        client.network_changed();
        let err = tokio::time::timeout(Duration::from_secs(2), call)
            .await
            .expect("the call ends at once")
            .unwrap()
            .unwrap_err();
        assert!(format!("{err:#}").contains("network changed"), "{err:#}");
        assert!(changed.elapsed() < Duration::from_secs(1));
        // A later call uses a new pool (and waits again on the silent tracker).
        let again = tokio::spawn({
            let c = client.clone();
            async move { c.releases().await }
        });
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(!again.is_finished());
        again.abort();
        held.abort();
    }

    #[test]
    fn introductions_from_the_push_channel_are_checked() {
        let good = r#"{"id":3,"info_hash":"0707070707070707070707070707070707070707","candidates":["11.0.0.5:40001"],"fingerprint":"0101010101010101010101010101010101010101010101010101010101010101"}"#;
        let i = parse_introduction(good).unwrap();
        assert_eq!(i.id, 3);
        assert_eq!(i.candidates, vec!["11.0.0.5:40001".parse().unwrap()]);
        assert_eq!(i.nat, None);
        let loopback = good.replace("11.0.0.5", "127.0.0.1");
        assert!(parse_introduction(&loopback).is_none(), "fails the check");
        assert!(parse_introduction("{\"id\":1}").is_none(), "malformed");
    }

    #[test]
    fn an_event_longer_than_the_limit_is_refused_and_blank_lines_reset_the_count() {
        let mut g = EventSizeGuard::new(10);
        g.feed(b"data: 12345\n\n").unwrap_err();
        let mut g = EventSizeGuard::new(10);
        g.feed(b"data: 12\n\n:\n\ndata: 34\r\n\r\n").unwrap();
        // Many short lines without the blank line that ends an event.
        let mut g = EventSizeGuard::new(10);
        g.feed(b"data: 1\ndata: 2\n").unwrap_err();
        // One endless line, fed in chunks.
        let mut g = EventSizeGuard::new(10);
        g.feed(b"data:").unwrap();
        g.feed(b"xxxxxx").unwrap_err();
    }
}
