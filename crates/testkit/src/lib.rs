//! `ota-testkit` (tests and benches only, not published): one copy of the
//! setup that tests and benches share — the embedded S3-protocol server
//! ([`s3_server`], also the runner's embedded default), free loopback
//! addresses ([`net`]), operator HTTP calls ([`http`]), deterministic test packages ([`package`](mod@package))
//! and release registrations without package bytes ([`release`](mod@release)).
//! For interoperability tests with other BitTorrent clients: child-process
//! guards ([`child`]), fake peers that record handshakes ([`fake_peer`]) and a
//! recording pass-through in front of the tracker ([`http_tap`]).
//!
//! With the feature `stack`: a whole origin stack on loopback (`stack`:
//! S3, an in-process tracker, publishing, S3-backed seeders, waiting
//! helpers) and plain librqbit leechers (`leecher`). With `tracker`: an
//! in-process tracker on loopback (`tracker::TestTracker`). With `pg`: a
//! throwaway PostgreSQL cluster (`pg::PgCluster`). With `mqtt`: a throwaway MQTT
//! broker, Debian's mosquitto (`mqtt_broker`).

pub mod child;
pub mod fake_peer;
pub mod http;
pub mod http_tap;
#[cfg(feature = "stack")]
pub mod leecher;
#[cfg(feature = "mqtt")]
pub mod mqtt_broker;
pub mod net;
pub mod package;
#[cfg(feature = "pg")]
pub mod pg;
pub mod release;
pub mod s3_server;
#[cfg(feature = "stack")]
pub mod stack;
#[cfg(feature = "tracker")]
pub mod tracker;

pub use package::package;
pub use release::release;
