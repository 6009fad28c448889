//! `ota-proto`: the sans-IO protocol and domain types of peer-assisted OTA
//! distribution, shared by the tracker, the seeder, the device agent and the
//! benches. No tokio, no sockets, no files: every function is a function of
//! its inputs (as `quinn-proto` is to `quinn`, or aquatic's
//! `http_protocol` to its server).
//!
//! - [`ids`]: [`InfoHash`] and [`PeerId`] newtypes (BEP 3), parsed once.
//! - [`announce`]: announce and scrape query parsing and bencoded responses
//!   (BEP 3, BEP 7, BEP 23, BEP 48).
//! - [`metainfo`]: info dictionaries and `.torrent` files (BEP 3, BEP 27).
//! - [`manifest`]: signed release manifests (ed25519, RFC 8032).
//! - [`api`]: the tracker API's JSON types.
//! - [`direct_paths`]: a device's LAN and UPnP-mapped addresses as it
//!   reports them, and how the tracker reaches it ([`direct_paths::Reach`]).
//! - [`names`]: validation of package names used as file names.
//! - [`nat_kind`]: a device's NAT in RFC 4787 terms from STUN answers
//!   (RFC 5780 §4.3, §4.4).
//! - [`rendezvous`]: bridge addresses for peers that need a punched QUIC
//!   path, certificate pins and introductions (hole punching).
//! - [`rollout`]: rollout-wave bucketing and release audiences.
//! - [`stun`]: the STUN binding responder's codec (RFC 8489, stun-rs).

pub mod announce;
pub mod api;
pub mod direct_paths;
pub mod ids;
pub mod manifest;
pub mod metainfo;
pub mod names;
pub mod nat_kind;
pub mod origin_goal;
pub mod release_notice;
pub mod rendezvous;
pub mod rollout;
pub mod stun;

pub use ids::{InfoHash, PeerId};
