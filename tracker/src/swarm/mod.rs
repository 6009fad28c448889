//! The live swarms, in memory (Kraken's `peerstore` and
//! `peerhandoutpolicy`): [`store`] keeps every registered release's peers
//! and answers announces; [`handout`] decides which peers, and when the
//! origin, an announcing device gets. Pure: no I/O, the caller passes the
//! clock.

pub mod handout;
pub mod store;

pub use handout::OriginPolicy;
pub use store::{AnnouncePaths, PeerRecord, PeerStore, StoreChanges, StoreConfig};
