//! The local stack and the flash-crowd experiment: a runner that starts the
//! embedded S3-protocol server (`ota_testkit::s3_server`), the tracker, the
//! seeder and N device agents as processes, on loopback or in the NAT lab
//! ([`lab`], [`topology`], [`lab_run`]), and measures a release's spread.

pub mod device_moves;
pub mod flash_crowd;
pub mod lab;
pub mod lab_run;
pub mod package;
pub mod processes;
pub mod results;
pub mod topology;
