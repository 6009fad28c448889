//! The local stack and the flash-crowd experiment: an embedded S3-protocol
//! server (s3s-fs), and a runner that starts the tracker, the seeder and N
//! device agents as processes on loopback and measures a release's spread.

pub mod flash_crowd;
pub mod package;
pub mod peer_session;
pub mod processes;
pub mod s3_server;
