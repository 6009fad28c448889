//! Release registry types shared by the tracker, the seeder and the device
//! agent (JSON over the tracker's `/api`).

use serde::{Deserialize, Serialize};

use crate::ids::{InfoHash, PeerId};
use crate::manifest::SignedManifest;
use crate::origin_goal::OriginGoal;

/// What the seeder registers after publishing a package.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewRelease {
    /// Package name, e.g. `chromium_120.0.deb`.
    pub name: String,
    /// Release version string, e.g. `2026.11.1`.
    pub version: String,
    /// Info hash, 40 lowercase hex characters (SHA-1 of the bencoded info dictionary, BEP 3).
    pub info_hash: InfoHash,
    /// Package size in bytes.
    pub size: u64,
    /// Piece length in bytes.
    pub piece_length: u64,
    /// SHA-256 of the whole package, 64 lowercase hex characters.
    pub sha256: String,
    /// The bencoded info dictionary, hex encoded. The tracker builds
    /// `.torrent` files from it with each device's announce URL.
    pub info_hex: String,
    /// Plain-HTTP URL of the package at the origin (client-server path and fallback).
    pub http_url: Option<String>,
    /// `s3://bucket/key` the package was published from.
    pub source: String,
    /// S3 ETag of the object when it was hashed; the seeder refuses to serve
    /// an object whose ETag changed since.
    #[serde(default)]
    pub etag: Option<String>,
    /// The device maker's signed manifest (ed25519), which devices verify
    /// against their pinned public key.
    #[serde(default)]
    pub manifest: Option<SignedManifest>,
    /// Share of devices (0..=100) in the release's rollout wave; absent
    /// means 100 for a new release and "unchanged" when re-registering.
    #[serde(default)]
    pub rollout_percent: Option<u8>,
    /// The origin's cost/speed dial for this release (`fastest`,
    /// `cheapest`, `within:SECS`); absent means the seeder's default for a
    /// new release and "unchanged" when re-registering.
    #[serde(default)]
    pub origin_goal: Option<OriginGoal>,
}

/// A registered release as the API returns it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Release {
    /// Package name.
    pub name: String,
    /// Release version.
    pub version: String,
    /// Info hash, hex.
    pub info_hash: InfoHash,
    /// Package size in bytes.
    pub size: u64,
    /// Piece length in bytes.
    pub piece_length: u64,
    /// SHA-256 of the package, hex.
    pub sha256: String,
    /// Plain-HTTP URL of the package at the origin.
    pub http_url: Option<String>,
    /// `s3://bucket/key` source.
    pub source: String,
    /// Registration time, seconds since the Unix epoch.
    pub created_at: i64,
    /// Peer-wire addresses (`ip:port`) of the origin seeders live in the swarm.
    pub origin_peers: Vec<String>,
    /// S3 ETag at publish time.
    #[serde(default)]
    pub etag: Option<String>,
    /// The signed manifest, if the release was signed.
    #[serde(default)]
    pub manifest: Option<SignedManifest>,
    /// Share of devices (0..=100) in the rollout wave (see `rollout`).
    #[serde(default = "full_rollout")]
    pub rollout_percent: u8,
    /// The origin's cost/speed dial for this release; `None`: the
    /// seeder's `--origin-goal`.
    #[serde(default)]
    pub origin_goal: Option<OriginGoal>,
}

fn full_rollout() -> u8 {
    100
}

/// A registered device as the admin API lists it (`GET /api/devices`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Device {
    /// Device id.
    pub device_id: String,
    /// Update channel, e.g. `stable`.
    pub channel: String,
    /// Device model.
    pub model: String,
    /// Registration time, seconds since the Unix epoch.
    pub created_at: i64,
    /// Latest announce, seconds since the Unix epoch (written every
    /// persistence round), if any.
    pub last_seen: Option<i64>,
    /// Completed downloads (announce event `completed`) over all releases.
    pub completed: u64,
}

/// Body of `POST /api/devices` (admin).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewDevice {
    /// Device id: 1 to 128 printable ASCII characters, no spaces.
    pub device_id: String,
    /// Update channel.
    pub channel: String,
    /// Device model.
    pub model: String,
}

/// Answer of `POST /api/devices`: the device's token, shown once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceToken {
    /// Device id.
    pub device_id: String,
    /// Bearer token: 32 random bytes, 64 lowercase hex characters.
    pub token: String,
}

/// One message on the push channel (server-sent event `release`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushEvent {
    /// The release to fetch.
    pub info_hash: InfoHash,
    /// Its name.
    pub name: String,
    /// Its version.
    pub version: String,
}

/// What a device reports about one release download.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TelemetryReport {
    /// Device id.
    pub device: String,
    /// Release info hash, hex.
    pub info_hash: InfoHash,
    /// Payload bytes received from other devices over BitTorrent.
    pub bytes_from_peers: u64,
    /// Of `bytes_from_peers`, bytes from devices at a LAN address (RFC 1918,
    /// RFC 6598 shared, loopback, link-local, IPv6 ULA): the same home or
    /// carrier network.
    #[serde(default)]
    pub bytes_from_lan_peers: u64,
    /// Of `bytes_from_peers`, bytes from devices at a public (internet)
    /// address.
    #[serde(default)]
    pub bytes_from_internet_peers: u64,
    /// Payload bytes received from the origin over BitTorrent.
    pub bytes_from_origin: u64,
    /// Payload bytes received from the origin over plain HTTP.
    pub bytes_from_origin_http: u64,
    /// Payload bytes sent to other peers.
    pub bytes_uploaded: u64,
    /// From the push (or start) to a verified package, in milliseconds.
    pub duration_ms: u64,
    /// Whether the package passed its SHA-256 check.
    pub verified: bool,
    /// Error text when the download or the check failed.
    pub error: Option<String>,
    /// The device's NAT as its STUN probe found it (the text of
    /// [`crate::nat_kind::NatKind`], e.g. `symmetric`), at most
    /// [`MAX_NAT_LEN`] bytes; absent when it did not probe.
    #[serde(default)]
    pub nat: Option<String>,
}

/// Longest [`TelemetryReport::nat`] accepted, bytes.
pub const MAX_NAT_LEN: usize = 80;

/// One live peer of a swarm as the admin API shows it
/// (`GET /api/releases/{info_hash}/peers`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerInfo {
    /// The 20-byte peer id (BEP 3), hex in JSON.
    pub peer_id: PeerId,
    /// The client tag of an Azureus-style peer id (BEP 20), e.g. `-TR3000-`
    /// for Transmission 3.00 or `-LT2080-` for libtorrent 2.0.8: the first
    /// 8 bytes when they are printable ASCII, else empty.
    pub client: String,
    /// Where other peers dial it, `ip:port`.
    pub addr: String,
    /// Bytes it still misses; 0 for a seeder.
    pub left: u64,
    /// Whether it is the origin seeder.
    pub is_origin: bool,
    /// Whether it holds an origin grant.
    pub granted: bool,
    /// Device id from its announce URL.
    pub device: Option<String>,
    /// Milliseconds since its last announce.
    pub age_ms: u64,
    /// Its LAN address (`ip:port`), if its device reported one: devices
    /// behind the same public address are handed this one.
    #[serde(default)]
    pub lan: Option<String>,
    /// How other devices reach it (the tracker's connectability verdict on
    /// `addr`); absent for the origin.
    #[serde(default)]
    pub reach: Option<crate::direct_paths::Reach>,
    /// The external address its router maps for it over UPnP, if its
    /// device reported one.
    #[serde(default)]
    pub mapped: Option<String>,
    /// Why its device holds no UPnP mapping, as it reported.
    #[serde(default)]
    pub mapping_refusal: Option<String>,
    /// Its NAT as its device's STUN probe found it (`open`, `symmetric`,
    /// `endpoint-independent-...`), if reported.
    #[serde(default)]
    pub nat: Option<crate::nat_kind::NatReport>,
}
