//! The live swarms, in memory (Kraken's `peerstore` and
//! `peerhandoutpolicy`): [`store`] keeps every registered release's peers
//! and answers announces; [`handout`] decides which peers, and when the
//! origin, an announcing device gets; [`rendezvous`] what two devices
//! introduced for hole punching are told about each other, and how often.
//! Pure: no I/O, the caller passes the clock.

pub mod handout;
pub mod rendezvous;
pub mod store;

pub use handout::OriginPolicy;
pub use store::{AnnouncePaths, PeerRecord, PeerStore, RendezvousPeer, StoreChanges, StoreConfig};
