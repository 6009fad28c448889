//! `ota-seeder`: the origin. Publishes S3 objects as torrents (streaming
//! each object once), seeds them straight from S3 through librqbit with a
//! read-only, piece-cached storage, serves the plain-HTTP path and counts its
//! egress.

pub mod http_path;
pub mod ledger;
pub mod lifecycle;
pub mod origin_dial;
pub mod origin_store;
pub mod piece_cache;
pub mod publish;
pub mod s3_storage;
pub mod seeding;
