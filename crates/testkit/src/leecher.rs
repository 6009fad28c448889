//! Plain librqbit leechers for tests (feature `stack`): a session from
//! [`ota_peer::PeerSession::leecher`] (no listener, no DHT, no local service
//! discovery, no persistence, no trackers) and torrents that dial one given
//! peer.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use librqbit::{ManagedTorrent, Session, TorrentStats, TorrentStatsState};
use ota_peer::PeerSession;
use ota_proto::metainfo::torrent_bytes;

/// A leecher session storing under `dir` (created if needed).
pub async fn leecher_session(dir: &Path) -> Arc<Session> {
    std::fs::create_dir_all(dir).expect("leecher folder");
    PeerSession::leecher()
        .start(dir.to_path_buf())
        .await
        .expect("start the leecher session")
}

/// Adds the release with info dictionary `info` to `session`, talking to
/// `peer` only, downloading into `folder`.
pub async fn leech(session: &Arc<Session>, info: &[u8], peer: SocketAddr, folder: &Path) -> Arc<ManagedTorrent> {
    ota_peer::add_torrent(
        session,
        torrent_bytes("http://127.0.0.1:9/announce", info),
        folder,
        ota_peer::from_peers(vec![peer]),
    )
    .await
    .expect("add the torrent")
}

/// Verified bytes a torrent holds. librqbit's `progress_bytes` counts
/// checked bytes while a torrent is still initializing, so only a live (or
/// paused) torrent's progress means pieces held.
pub fn have_bytes(s: &TorrentStats) -> u64 {
    match s.state {
        TorrentStatsState::Live | TorrentStatsState::Paused => s.progress_bytes,
        _ => 0,
    }
}
