//! `ota-client`: the tracker's own client (as Kraken's `announceclient` is
//! its tracker's), used by the seeder (register, push), the device agent
//! (releases, torrents, push subscription, telemetry), the flash-crowd runner
//! and the benches. HTTP/JSON against the tracker's `/api`, BEP 3 announces
//! and BEP 48 scrapes against `/announce` and `/scrape`, and the push channel
//! (server-sent events).

use std::time::Duration;

use anyhow::Context;
use futures::stream::BoxStream;
use futures::StreamExt;

use ota_proto::api::{Device, DeviceToken, NewDevice, NewRelease, PeerInfo, PushEvent, Release, TelemetryReport};
use ota_proto::{InfoHash, PeerId};

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

/// HTTP client for one tracker.
#[derive(Debug, Clone)]
pub struct TrackerClient {
    base: String,
    http: reqwest::Client,
    admin_token: Option<String>,
    device_token: Option<String>,
}

impl TrackerClient {
    /// A client for the tracker at `base` (e.g. `http://127.0.0.1:7070`).
    /// `admin_token` is needed only for [`Self::register`] and [`Self::push`].
    pub fn new(base: &str, admin_token: Option<String>) -> Self {
        TrackerClient {
            base: base.trim_end_matches('/').to_string(),
            http: reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(5))
                .build()
                .expect("reqwest client"),
            admin_token,
            device_token: None,
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
            .admin(self.http.post(format!("{}/api/devices", self.base)).json(&body))
            .send()
            .await
            .with_context(|| format!("cannot reach tracker at {}", self.base))?;
        let t: DeviceToken = Self::check(resp, "register device").await?.json().await?;
        Ok(t.token)
    }

    /// Every registered device (admin).
    pub async fn devices(&self) -> anyhow::Result<Vec<Device>> {
        let resp = self
            .admin(self.http.get(format!("{}/api/devices", self.base)))
            .send()
            .await?;
        Ok(Self::check(resp, "list devices").await?.json().await?)
    }

    /// Revokes a device's token (admin). Errors: 404 for an unknown device.
    pub async fn revoke_device(&self, device_id: &str) -> anyhow::Result<()> {
        let resp = self
            .admin(self.http.delete(format!("{}/api/devices/{device_id}", self.base)))
            .send()
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
            .admin(
                self.http
                    .post(format!("{}/api/releases/{info_hash}/rollout", self.base))
                    .json(&serde_json::json!({ "percent": percent })),
            )
            .send()
            .await?;
        let v: serde_json::Value = Self::check(resp, "set rollout").await?.json().await?;
        Ok(v["delivered"].as_u64().unwrap_or(0) as usize)
    }

    /// The tracker base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    async fn check(resp: reqwest::Response, what: &str) -> anyhow::Result<reqwest::Response> {
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let body = resp.text().await.unwrap_or_default();
        anyhow::bail!("{what}: tracker answered {status}: {body}")
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
            .admin(self.http.post(format!("{}/api/releases", self.base)).json(r))
            .send()
            .await
            .with_context(|| format!("cannot reach tracker at {}", self.base))?;
        Ok(Self::check(resp, "register release").await?.json().await?)
    }

    /// Pushes a release to subscribed devices (admin); returns how many
    /// subscribers it was delivered to.
    pub async fn push(&self, info_hash: &InfoHash) -> anyhow::Result<usize> {
        let resp = self
            .admin(self.http.post(format!("{}/api/releases/{info_hash}/push", self.base)))
            .send()
            .await
            .with_context(|| format!("cannot reach tracker at {}", self.base))?;
        let v: serde_json::Value = Self::check(resp, "push").await?.json().await?;
        Ok(v["delivered"].as_u64().unwrap_or(0) as usize)
    }

    /// All releases, newest first.
    pub async fn releases(&self) -> anyhow::Result<Vec<Release>> {
        let resp = self
            .auth(self.http.get(format!("{}/api/releases", self.base)))
            .send()
            .await?;
        Ok(Self::check(resp, "list releases").await?.json().await?)
    }

    /// One release by hex info hash.
    pub async fn release(&self, info_hash: &InfoHash) -> anyhow::Result<Release> {
        let resp = self
            .auth(self.http.get(format!("{}/api/releases/{info_hash}", self.base)))
            .send()
            .await?;
        Ok(Self::check(resp, "get release").await?.json().await?)
    }

    /// The `.torrent` file of a release. With a device token its announce
    /// URL carries the token (`/announce?token=TOKEN`); otherwise `device=`.
    pub async fn torrent(&self, info_hash: &InfoHash, device: &str) -> anyhow::Result<Vec<u8>> {
        let resp = self
            .auth(self.http.get(format!("{}/api/releases/{info_hash}/torrent", self.base)))
            .query(&[("device", device)])
            .send()
            .await?;
        Ok(Self::check(resp, "get torrent").await?.bytes().await?.to_vec())
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
        let body = Self::check(self.http.get(url).send().await?, "announce")
            .await?
            .bytes()
            .await?;
        ota_proto::announce::decode_announce(&body)
    }

    /// The live peers of a release's swarm (admin), seeders first.
    ///
    /// Errors: tracker unreachable, 401 for a wrong token, 404 for an unknown release.
    pub async fn peers(&self, info_hash: &InfoHash) -> anyhow::Result<Vec<PeerInfo>> {
        let resp = self
            .admin(self.http.get(format!("{}/api/releases/{info_hash}/peers", self.base)))
            .send()
            .await
            .with_context(|| format!("cannot reach tracker at {}", self.base))?;
        Ok(Self::check(resp, "list peers").await?.json().await?)
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
        let body = Self::check(self.admin(self.http.get(url)).send().await?, "scrape")
            .await?
            .bytes()
            .await?;
        ota_proto::announce::decode_scrape(&body, info_hash)
    }

    /// Number of devices subscribed to the push channel.
    pub async fn subscribers(&self) -> anyhow::Result<usize> {
        let resp = self.http.get(format!("{}/api/subscribers", self.base)).send().await?;
        let v: serde_json::Value = Self::check(resp, "subscribers").await?.json().await?;
        Ok(v["subscribers"].as_u64().unwrap_or(0) as usize)
    }

    /// Sends a telemetry report.
    pub async fn report(&self, t: &TelemetryReport) -> anyhow::Result<()> {
        let resp = self
            .auth(self.http.post(format!("{}/api/telemetry", self.base)).json(t))
            .send()
            .await?;
        Self::check(resp, "telemetry").await?;
        Ok(())
    }

    /// The latest report of each device for a release.
    pub async fn telemetry(&self, info_hash: &InfoHash) -> anyhow::Result<Vec<TelemetryReport>> {
        let resp = self
            .auth(
                self.http
                    .get(format!("{}/api/releases/{info_hash}/telemetry", self.base)),
            )
            .send()
            .await?;
        Ok(Self::check(resp, "telemetry").await?.json().await?)
    }

    /// Subscribes to the push channel (server-sent events). The stream ends
    /// when the connection drops; callers reconnect with backoff.
    pub async fn subscribe(&self) -> anyhow::Result<BoxStream<'static, anyhow::Result<PushEvent>>> {
        use eventsource_stream::Eventsource;
        let resp = self
            .auth(self.http.get(format!("{}/api/push", self.base)))
            .header("accept", "text/event-stream")
            .send()
            .await
            .with_context(|| format!("cannot reach tracker at {}", self.base))?;
        let resp = Self::check(resp, "subscribe").await?;
        Ok(resp
            .bytes_stream()
            .eventsource()
            .filter_map(|ev| async move {
                match ev {
                    Ok(ev) if ev.event == "release" => Some(serde_json::from_str(&ev.data).context("bad push event")),
                    Ok(_) => None,
                    Err(e) => Some(Err(anyhow::anyhow!("push channel: {e}"))),
                }
            })
            .boxed())
    }
}
