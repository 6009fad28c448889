//! `ota-peer`: the BitTorrent peer side shared by the device agent and the
//! origin seeder: one librqbit session builder ([`session::PeerSession`])
//! and one peer-id generator ([`peer_id`]). The NAT layer (UPnP, STUN probe,
//! hole punching) and the QUIC peer transport go here.

pub mod fastresume;
pub mod one_host;
pub mod peer_id;
pub mod port_mapping;
pub mod quic_bridge;
pub mod quic_identity;
pub mod quic_listener;
pub mod receive_gaps;
pub mod session;
pub mod stun_probe;
pub mod udp_demux;

pub use peer_id::random_peer_id;
pub use session::{add_torrent, from_peers, PeerSession};
