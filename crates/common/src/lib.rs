//! `ota-common`: what every binary of the project sets up the same way.
//!
//! - [`config`]: one configuration mechanism (flags > TOML file > environment).
//! - [`logging`]: `tracing` to stderr.
//! - [`clock`]: the wall clock, read in one place (pure logic takes `now`).
//! - [`keys`]: manifest signing key files (ed25519).
//! - [`db`] (feature `db`): SQLite and PostgreSQL opening through sqlx.
//! - [`metrics`] (feature `metrics`): the Prometheus recorder.
//!
//! The device agent uses it without `db` and `metrics`, so it links neither
//! sqlx nor the Prometheus exporter.

pub mod clock;
pub mod config;
#[cfg(feature = "db")]
pub mod db;
pub mod keys;
pub mod logging;
#[cfg(feature = "metrics")]
pub mod metrics;
