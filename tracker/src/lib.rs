//! `ota-tracker`: the control plane of peer-assisted OTA distribution.
//!
//! A BitTorrent HTTP tracker (announce BEP 3 with compact peers BEP 23,
//! scrape BEP 48) that tracks only registered releases, a release registry in
//! SQL through sqlx, a push channel (server-sent events), telemetry intake and
//! a STUN binding responder. Its protocol types live in `ota-proto` and its
//! client in `ota-client`.

pub mod config;
pub mod device_auth;
pub mod peer_handout;
pub mod peer_store;
pub mod registry;
pub mod server;
pub mod stun;
