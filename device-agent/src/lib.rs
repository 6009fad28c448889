//! `ota-device-agent`: runs on the device. Receives pushes from the
//! tracker, downloads releases over BitTorrent (librqbit), verifies the
//! package SHA-256 against the release, keeps seeding, and reports bytes
//! received per source (origin vs other devices).

pub mod accounting;
pub mod agent;
pub mod control_socket;
pub mod download;
pub mod http_fallback;
pub mod download_state;
pub mod policy;
pub mod release_flow;
pub mod verify;
