//! `ota-device-agent`: runs on the device. Receives pushes from the
//! tracker, downloads releases over BitTorrent (librqbit), verifies the
//! package SHA-256 against the release, keeps seeding, and reports bytes
//! received per source (origin vs other devices).
//!
//! Modules:
//! - [`release_flow`]: one release's life as a sans-IO state machine
//!   (phases, events in, actions out); no I/O, unit-tested.
//! - [`agent`]: the daemon — push subscription, polling, resuming, and the
//!   driver that performs a flow's actions; the control-socket handler.
//! - [`download`]: the librqbit session and torrent operations.
//! - [`http_fallback`]: missing pieces over HTTP, SHA-1 checked.
//! - [`verify`]: the package's SHA-256.
//! - [`accounting`]: bytes per source (origin, LAN and internet peers).
//! - [`policy`]: device policies (network, battery, storage, seeding).
//! - [`reconnect`]: when a stalled download's peer connections are made anew.
//! - [`download_state`]: `active.json`, `history.json`, `installed.json`.
//! - [`control_socket`]: the CLI's Unix socket protocol.
//! - [`direct_paths`]: LAN address, UPnP mapping and STUN probe, reported
//!   to the tracker for LAN pairing and shown in the status.
//! - [`hole_punching`]: the QUIC bridge under librqbit for peers that need
//!   a punched path, and its introducer.
//! - [`network_watch`]: follows address and route changes and moves the
//!   QUIC endpoint so that its connections migrate.

pub mod accounting;
pub mod agent;
pub mod control_socket;
pub mod direct_paths;
pub mod download;
pub mod download_state;
pub mod hole_punching;
pub mod http_fallback;
pub mod network_watch;
pub mod policy;
pub mod reconnect;
pub mod release_flow;
pub mod verify;
