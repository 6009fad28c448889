//! The tracker itself, without HTTP: [`Tracker`] holds the registry, the
//! live swarms, the device directory, release audiences and the push bus,
//! and its methods are the whole behaviour of the service — announces and
//! scrapes ([`Tracker::announce`], [`Tracker::scrape`]), releases, devices,
//! telemetry, pushes and introductions for hole punching
//! ([`Tracker::introduce`]). The [`crate::http`] handlers only extract a
//! request's parts (who calls, which info hash, which body), call one of
//! these methods and encode the answer; tests call them directly.
//!
//! Who calls is a [`Caller`]: the admin (admin token, only in an
//! `Authorization` header), the origin seeder (its own origin token, in
//! announces), a registered device, or anonymous (only with
//! [`DeviceAuth::Off`]). Refused announces and scrapes are a
//! [`Refusal`] (the bencoded `failure reason`, BEP 3); refused API calls an
//! [`ApiError`] (a JSON error with an HTTP status).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::sync::{Arc, Mutex, RwLock};

use ota_common::metrics::metrics_handle;
use ota_proto::rollout::{self, Audience};
use ota_proto::InfoHash;

use crate::connectability::{Connectability, ConnectabilityConfig};
use crate::persistence::{self, Mirror};
use crate::registry::{DeviceAuth, DeviceDirectory, DeviceEntry, Registry, RegistryError, StoredRelease};
use crate::swarm::rendezvous::{Acquaintances, IntroductionLimiter};
use crate::swarm::{PeerStore, StoreConfig};

mod announce;
mod broker_push;
mod devices;
mod push;
mod releases;
mod rendezvous;
pub mod replicas;

pub use announce::Refusal;
pub use broker_push::{BrokerPush, BrokerPushTasks};
pub use push::{PushItem, PushMsg, BUS_CAPACITY, INTRODUCTIONS_CAPACITY, MAX_STREAMS_PER_DEVICE};
pub use releases::{RolloutChange, MAX_BYTES_FACTOR, MAX_ERROR_LEN};

/// Who is calling: resolved from the admin token, a device token, or no
/// credential (see [`Tracker::api_caller`], [`Tracker::announce_caller`],
/// [`Tracker::scrape_caller`]).
#[derive(Debug, Clone)]
pub enum Caller {
    /// The admin token (`Authorization: Bearer ADMIN`).
    Admin,
    /// The origin seeder: an announce with `origin_token=` equal to the
    /// origin token.
    Origin,
    /// A registered device, from its token.
    Device(Arc<DeviceEntry>),
    /// No credential (allowed only with [`DeviceAuth::Off`]).
    Anonymous,
}

/// Why an API call was refused; [`crate::http`] answers each with its HTTP
/// status and a JSON body `{"error": TEXT}` where TEXT is the `Display`.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 401: no token where one is needed, or an unknown or revoked one.
    #[error("{0}")]
    Unauthorized(&'static str),
    /// 403: the caller may not see this (a release outside the device's
    /// audience, or admin-only data).
    #[error("{0}")]
    Forbidden(String),
    /// 404: no such release or device.
    #[error("{0}")]
    NotFound(String),
    /// 400: a malformed body, path or value.
    #[error("{0}")]
    BadRequest(String),
    /// 409: the device id is already registered, or the peer to introduce
    /// cannot be introduced (no QUIC endpoint, no push subscription).
    #[error("{0}")]
    Conflict(String),
    /// 429: the device holds too many push streams already, or asked for
    /// too many introductions.
    #[error("{0}")]
    TooMany(String),
    /// 503: the database failed (the cause is logged, not shown).
    #[error("database unavailable")]
    Database(#[source] sqlx::Error),
}

impl ApiError {
    /// The refusal of an admin-only call by anyone else.
    pub const ADMIN_REQUIRED: ApiError = ApiError::Unauthorized("admin token required");
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        tracing::error!(error = %e, "database error");
        ApiError::Database(e)
    }
}

impl From<RegistryError> for ApiError {
    fn from(e: RegistryError) -> Self {
        match e {
            RegistryError::Invalid(m) => ApiError::BadRequest(m),
            RegistryError::Exists(id) => ApiError::Conflict(format!("device {id:?} is already registered")),
            RegistryError::Db(e) => ApiError::from(e),
        }
    }
}

/// Shortest admin or origin token accepted, in characters.
pub const MIN_TOKEN_LEN: usize = 16;

/// Settings of a [`Tracker`] beyond its database.
#[derive(Clone)]
pub struct TrackerSettings {
    /// Bearer token for the admin API (at least [`MIN_TOKEN_LEN`]
    /// characters); accepted only in an `Authorization: Bearer` header.
    pub admin_token: String,
    /// Token the origin seeder announces with (`origin_token=` in its
    /// announce URL: at least [`MIN_TOKEN_LEN`] characters, not the admin
    /// token); `None`: no origin may announce.
    pub origin_token: Option<String>,
    /// Connecting addresses (reverse proxies) whose announces' `ip=` is
    /// believed; empty (the default): `ip=` is ignored and a peer is listed
    /// at the address its connection comes from.
    pub trusted_proxies: Vec<IpAddr>,
    /// Base URL devices reach the tracker at, e.g. `http://127.0.0.1:7070`
    /// (a trailing `/` is dropped); used in the announce URL of served
    /// `.torrent` files.
    pub public_url: String,
    /// Peer store timing, origin policy and persistence interval.
    pub store: StoreConfig,
    /// Whether devices must announce and call the API with their token.
    pub device_auth: DeviceAuth,
    /// Dials of announced addresses before they are handed out.
    pub connectability: ConnectabilityConfig,
}

impl std::fmt::Debug for TrackerSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrackerSettings")
            .field("origin_token", &self.origin_token.as_ref().map(|_| "…"))
            .field("trusted_proxies", &self.trusted_proxies)
            .field("public_url", &self.public_url)
            .field("store", &self.store)
            .field("device_auth", &self.device_auth)
            .field("connectability", &self.connectability)
            .finish_non_exhaustive()
    }
}

impl TrackerSettings {
    /// Checks the credentials: an admin token and (if set) an origin token
    /// of at least [`MIN_TOKEN_LEN`] characters, different from each other.
    ///
    /// Errors: the message names the setting (`--admin-token` /
    /// `OTA_ADMIN_TOKEN`, `--origin-token` / `OTA_ORIGIN_TOKEN`) and what is
    /// wrong with it.
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.admin_token.is_empty() {
            anyhow::bail!(
                "no admin token: set --admin-token or OTA_ADMIN_TOKEN (at least {MIN_TOKEN_LEN} characters, \
                 e.g. from `openssl rand -hex 32`)"
            );
        }
        if self.admin_token.chars().count() < MIN_TOKEN_LEN {
            anyhow::bail!(
                "the admin token (--admin-token, OTA_ADMIN_TOKEN) is shorter than {MIN_TOKEN_LEN} characters"
            );
        }
        if let Some(o) = &self.origin_token {
            if o.chars().count() < MIN_TOKEN_LEN {
                anyhow::bail!(
                    "the origin token (--origin-token, OTA_ORIGIN_TOKEN) is shorter than {MIN_TOKEN_LEN} characters"
                );
            }
            if o == &self.admin_token {
                anyhow::bail!("the origin token (--origin-token) must differ from the admin token (--admin-token)");
            }
        }
        Ok(())
    }
}

/// Compares a presented credential with the expected one in time that
/// depends on their lengths only.
fn same_secret(presented: &str, expected: &str) -> bool {
    use subtle::ConstantTimeEq;
    presented.as_bytes().ct_eq(expected.as_bytes()).into()
}

/// The tracker's shared state; every method takes `&self` (share it as an
/// `Arc<Tracker>`).
pub struct Tracker {
    pub(crate) registry: Registry,
    pub(crate) store: PeerStore,
    /// The persistence round's state (unwritten completions, write lock).
    pub(crate) mirror: Mirror,
    pub(crate) push: tokio::sync::broadcast::Sender<PushMsg>,
    /// Bus receivers held by broker publishers ([`BrokerPush`]), not
    /// counted as push subscribers.
    pub(crate) broker_taps: AtomicUsize,
    pub(crate) admin_token: String,
    pub(crate) origin_token: Option<String>,
    pub(crate) trusted_proxies: Vec<IpAddr>,
    /// Open push streams per device id, with their introduction channel.
    pub(crate) streams: Mutex<HashMap<Arc<str>, push::DeviceStreams>>,
    /// Bumped on every revocation: open push streams re-check their token.
    pub(crate) revocations: tokio::sync::watch::Sender<u64>,
    pub(crate) public_url: String,
    pub(crate) device_auth: DeviceAuth,
    pub(crate) devices: RwLock<DeviceDirectory>,
    pub(crate) audiences: RwLock<HashMap<InfoHash, Audience>>,
    pub(crate) connectability: Arc<Connectability>,
    /// Rate limits of `POST /api/introductions`.
    pub(crate) introductions: Mutex<IntroductionLimiter>,
    /// The number of the next introduction.
    pub(crate) next_introduction: AtomicU64,
    /// Which devices were introduced to each other lately: told where a
    /// device went when it moves.
    pub(crate) acquaintances: Mutex<Acquaintances>,
    /// The origins' QUIC listeners by the IP their announces came from:
    /// UDP port and certificate pin (at most 64, `MAX_ORIGIN_QUIC`).
    pub(crate) origin_quic: RwLock<HashMap<IpAddr, (u16, ota_proto::rendezvous::CertFingerprint)>>,
    /// The replica round's state (unused by a single tracker).
    pub(crate) replica: replicas::ReplicaState,
    /// The peer store's peer timeout (how old another replica's rows may be).
    pub(crate) peer_timeout: std::time::Duration,
}

impl std::fmt::Debug for Tracker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tracker")
            .field("public_url", &self.public_url)
            .field("device_auth", &self.device_auth)
            .field("peers", &self.store.peer_count())
            .finish_non_exhaustive()
    }
}

/// The audience of a stored release (rollout percentage, manifest channel
/// and models, pushed or not).
pub(crate) fn audience_of(r: &StoredRelease) -> Audience {
    Audience::new(
        r.release.rollout_percent,
        r.release.manifest.as_ref().map(|m| m.manifest.as_str()),
        r.pushed,
    )
}

impl Tracker {
    /// Builds the state: registers every stored release in the peer store and
    /// restores the stored live peers (with the age they have now, so that
    /// peers silent for longer than the peer timeout, downtime included, are
    /// dropped) and completed-download counters (see [`persistence::restore`]).
    ///
    /// Errors: invalid credentials ([`TrackerSettings::validate`]), or a
    /// database failure.
    pub async fn new(registry: Registry, settings: TrackerSettings) -> anyhow::Result<Arc<Self>> {
        settings.validate()?;
        let store = PeerStore::new(StoreConfig {
            device_bound: settings.device_auth == DeviceAuth::Required,
            shared_grants: !registry.replica().is_empty(),
            ..settings.store
        });
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
        persistence::restore(&registry, &store).await?;
        let (push, _) = tokio::sync::broadcast::channel(push::BUS_CAPACITY);
        metrics_handle();
        Ok(Arc::new(Tracker {
            registry,
            store,
            mirror: Mirror::new(settings.store.persist_interval),
            push,
            broker_taps: AtomicUsize::new(0),
            admin_token: settings.admin_token,
            origin_token: settings.origin_token,
            trusted_proxies: settings.trusted_proxies,
            streams: Mutex::new(HashMap::new()),
            revocations: tokio::sync::watch::Sender::new(0),
            public_url: settings.public_url.trim_end_matches('/').to_string(),
            device_auth: settings.device_auth,
            devices: RwLock::new(devices),
            audiences: RwLock::new(audiences),
            connectability: Connectability::new(settings.connectability),
            introductions: Mutex::new(IntroductionLimiter::new()),
            next_introduction: AtomicU64::new(1),
            acquaintances: Mutex::new(Acquaintances::new()),
            origin_quic: RwLock::default(),
            replica: replicas::ReplicaState::default(),
            peer_timeout: settings.store.peer_timeout,
        }))
    }

    /// The registry this tracker writes to.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The live swarms.
    pub fn store(&self) -> &PeerStore {
        &self.store
    }

    /// The connectability checks.
    pub fn connectability(&self) -> &Arc<Connectability> {
        &self.connectability
    }

    /// One persistence round (see [`Mirror::persist`]): writes the device
    /// activity and the live swarms' changes since the last round; with a
    /// replica id ([`Registry::with_replica`]), then runs the replica round
    /// ([`replicas`]: the other replicas' peers, origin-grant leases,
    /// releases, devices). Returns the number of rows written and read.
    ///
    /// Errors: a database failure (nothing is lost: the next round rewrites).
    pub async fn persist(&self) -> anyhow::Result<usize> {
        let written = self.mirror.persist(&self.registry, &self.store, &self.devices).await;
        let read = self.replica_round().await;
        Ok(written? + read?)
    }

    /// Tells open push streams that devices were revoked: each re-checks
    /// its token and the revoked ones end.
    pub(crate) fn note_revocation(&self) {
        self.revocations.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Whether `token` is the admin token (constant-time comparison).
    pub fn is_admin_token(&self, token: &str) -> bool {
        same_secret(token, &self.admin_token)
    }

    /// Whether `token` is the origin token (constant-time comparison);
    /// always false without one.
    pub fn is_origin_token(&self, token: &str) -> bool {
        self.origin_token.as_deref().is_some_and(|o| same_secret(token, o))
    }

    /// The caller of an API request from its bearer token
    /// (`Authorization: Bearer TOKEN`, `None` without one): the admin, a
    /// device, or anonymous.
    ///
    /// Errors: [`ApiError::Unauthorized`] for an unknown or revoked token, or
    /// for no token while device authentication is required.
    pub fn api_caller(&self, bearer: Option<&str>) -> Result<Caller, ApiError> {
        match bearer {
            Some(t) if self.is_admin_token(t) => Ok(Caller::Admin),
            Some(t) => self
                .device(t)
                .map(Caller::Device)
                .ok_or(ApiError::Unauthorized("unknown or revoked device token")),
            None if self.device_auth == DeviceAuth::Off => Ok(Caller::Anonymous),
            None => Err(ApiError::Unauthorized(
                "device token required (Authorization: Bearer TOKEN)",
            )),
        }
    }

    /// The registered device holding `token`, if any.
    pub(crate) fn device(&self, token: &str) -> Option<Arc<DeviceEntry>> {
        self.devices
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .lookup(token)
            .cloned()
    }

    /// Whether the release `info_hash` is offered to `device`: Ok for a
    /// release the tracker does not know (the caller then answers "no such
    /// release").
    ///
    /// Errors: the [`rollout::Refusal`] (outside the wave, another channel
    /// or model).
    pub fn offered(&self, info_hash: &InfoHash, device: &DeviceEntry) -> Result<(), rollout::Refusal> {
        match self.audiences.read().unwrap_or_else(|e| e.into_inner()).get(info_hash) {
            Some(a) => a.admits(info_hash, &device.device_id, &device.channel, &device.model),
            None => Ok(()),
        }
    }
}
