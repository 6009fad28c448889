//! `ota-tracker`: the control plane of peer-assisted OTA distribution.
//!
//! A BitTorrent HTTP tracker (announce BEP 3 with compact peers BEP 23,
//! scrape BEP 48) that tracks only registered releases, a release registry in
//! SQL through sqlx, a push channel (server-sent events), telemetry intake and
//! a STUN binding responder (RFC 8489). Its protocol types live in
//! `ota-proto` and its client in `ota-client`.
//!
//! Modules, by responsibility (dependencies point down the list only):
//! - [`config`]: the `ota-tracker serve` settings (flags > TOML file >
//!   environment > defaults).
//! - [`http`]: the axum server — routes, extractors, serving and shutdown.
//! - [`service`]: [`Tracker`], the behaviour without HTTP: announces,
//!   scrapes, releases, devices, pushes, telemetry.
//! - [`persistence`]: the periodic mirror of the live swarms and device
//!   activity to the database, and its restore at start.
//! - [`registry`]: the SQL registry and the in-memory device directory.
//! - [`swarm`]: the in-memory peer store and the peer hand-out policy (pure).
//! - [`connectability`]: the tracker's dials of announced addresses before
//!   it hands them out.
//! - [`stun`]: the STUN binding responder's socket loop.

pub mod config;
pub mod connectability;
pub mod http;
pub mod persistence;
pub mod registry;
pub mod service;
pub mod stun;
pub mod swarm;

pub use registry::{DeviceAuth, Registry};
pub use service::{BrokerPush, Caller, Tracker, TrackerSettings};
pub use swarm::{OriginPolicy, StoreConfig};
