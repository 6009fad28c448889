//! `ota-testkit` (tests and benches only, not published): one copy of the
//! setup that tests and benches share — the embedded S3-protocol server
//! ([`s3_server`], also the runner's embedded default) and free loopback
//! addresses ([`net`]).

pub mod net;
pub mod s3_server;
