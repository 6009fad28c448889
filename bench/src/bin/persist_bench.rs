//! `ota-tracker-persist-bench`: how long one persistence round of the live
//! peer store takes (`Registry::save_swarms`, one transaction with
//! multi-row statements) for N changed peers, on the database given.
//!
//! Rounds measured, in order, on a fresh schema: N new peers (inserts), the
//! same N peers changed (upserts over existing rows), then a second replica
//! reading those N rows (`remote-read`) and claiming the origin-grant lease
//! of every swarm (`lease-claim`, N / peers-per-swarm swarms), then N
//! removals. Prints one
//! line per round: `backend round peers ms`. Run by `deploy/bench-persist.sh`
//! against SQLite and a throwaway PostgreSQL cluster.

use std::time::{Duration, Instant};

use clap::Parser;
use ota_tracker::registry::Registry;
use ota_tracker::swarm::store::{PeerRecord, StoreChanges};

/// Times persistence rounds of N changed live peers.
#[derive(Parser)]
#[command(version, about)]
struct Args {
    /// Database URL (sqlite://PATH or postgres://…); its schema is migrated.
    #[arg(long)]
    database_url: String,
    /// Changed peers per round.
    #[arg(long, default_value_t = 100_000)]
    peers: u32,
    /// Peers per swarm (info hash).
    #[arg(long, default_value_t = 1_000)]
    peers_per_swarm: u32,
}

fn peer(n: u32, per_swarm: u32, left: u64) -> PeerRecord {
    let mut ih = [0u8; 20];
    ih[..4].copy_from_slice(&(n / per_swarm.max(1)).to_be_bytes());
    let mut id = *b"-BENCH0-000000000000";
    id[16..].copy_from_slice(&n.to_be_bytes());
    PeerRecord {
        info_hash: ota_proto::InfoHash(ih),
        peer_id: ota_proto::PeerId(id),
        addr: std::net::SocketAddr::new(std::net::Ipv4Addr::from(0x0a00_0000 | n).into(), 6881),
        left,
        stalled: 0,
        is_origin: false,
        granted: false,
        verified: false,
        device: Some(format!("dev-{n}")),
        lan: None,
        age: Duration::from_millis(u64::from(n % 1000)),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    // Written as replica `bench-a`; `bench-b` reads its rows as another
    // tracker replica would (issue 18).
    let reg = Registry::open(&a.database_url).await?.with_replica("bench-a");
    let other = Registry::open(&a.database_url).await?.with_replica("bench-b");
    let backend = format!("{:?}", reg.backend()).to_lowercase();
    let now_ms = 1_800_000_000_000;
    let rounds = [
        (
            "insert",
            StoreChanges {
                full: true,
                upserts: (0..a.peers).map(|n| peer(n, a.peers_per_swarm, 1000)).collect(),
                ..Default::default()
            },
        ),
        (
            "update",
            StoreChanges {
                upserts: (0..a.peers).map(|n| peer(n, a.peers_per_swarm, 0)).collect(),
                ..Default::default()
            },
        ),
        (
            "remove",
            StoreChanges {
                removals: (0..a.peers)
                    .map(|n| {
                        let p = peer(n, a.peers_per_swarm, 0);
                        (p.info_hash, p.peer_id)
                    })
                    .collect(),
                ..Default::default()
            },
        ),
    ];
    for (name, changes) in &rounds {
        let t = Instant::now();
        reg.save_swarms(changes, now_ms).await?;
        println!("{backend} {name} {} {:.0}", a.peers, t.elapsed().as_secs_f64() * 1000.0);
        if *name == "update" {
            // The other replica's round: read every live peer of this one,
            // then claim the origin-grant lease of every swarm.
            let t = Instant::now();
            let read = other.load_remote_peers(now_ms, 180_000).await?.len();
            anyhow::ensure!(read == a.peers as usize, "the other replica read {read} peers");
            println!(
                "{backend} remote-read {} {:.0}",
                a.peers,
                t.elapsed().as_secs_f64() * 1000.0
            );
            let swarms: Vec<_> = (0..a.peers.div_ceil(a.peers_per_swarm.max(1)))
                .map(|k| peer(k * a.peers_per_swarm.max(1), a.peers_per_swarm, 0).info_hash)
                .collect();
            let t = Instant::now();
            let held = other.claim_grant_leases(&swarms, now_ms, 15_000).await?.len();
            anyhow::ensure!(held == swarms.len(), "{held} of {} leases claimed", swarms.len());
            println!(
                "{backend} lease-claim {} {:.0}",
                swarms.len(),
                t.elapsed().as_secs_f64() * 1000.0
            );
        }
    }
    let left = reg.load_swarms(now_ms).await?.peers.len();
    anyhow::ensure!(left == 0, "{left} peers left after the removal round");
    Ok(())
}
