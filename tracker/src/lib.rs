//! `ota-tracker`: the control plane of peer-assisted OTA distribution.
//!
//! A BitTorrent HTTP tracker (announce BEP 3 with compact peers BEP 23,
//! scrape BEP 48) that tracks only registered releases, a release registry in
//! SQL through sqlx, a push channel (server-sent events) and telemetry intake.
//! The crate also ships the client the seeder and the device agent use.
//!
//! Pure protocol and policy modules (`announce`, `peer_handout`, `peer_store`,
//! `metainfo`, and `stun` apart from its socket loop) do no I/O; `registry`, `server` and `client` do.

pub mod announce;
pub mod client;
pub mod config;
pub mod device_auth;
pub mod manifest;
pub mod metainfo;
pub mod peer_handout;
pub mod peer_store;
pub mod registry;
pub mod release;
pub mod rollout;
pub mod server;
pub mod stun;
