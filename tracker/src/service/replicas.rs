//! Tracker replicas on one database (`--replica-id`): the replica round.
//!
//! Every replica keeps the whole swarm in memory and answers announces from
//! it alone; the database is touched only on the persistence round's beat
//! ([`crate::persistence`], every `--persist-interval`), never in the
//! announce path. After writing its own changes, each round of a replica:
//!
//! 1. reads the other replicas' live peers (one read of the `peers` rows
//!    with another `replica` seen within the peer timeout), dials each
//!    device address once per verdict TTL (connectability verdicts are per
//!    replica; the round waits at most [`CONNECTABILITY_SETTLE`] for them)
//!    and merges them ([`PeerStore::merge_remote`]): a peer that
//!    announced to one replica is handed out by every other within one
//!    persist interval and one announce;
//! 2. claims or renews the origin-grant lease of each swarm it has
//!    leechers in, or whose release it pushed within the lease's time to
//!    live ([`Registry::claim_grant_leases`], time to live [`lease_ttl`];
//!    a push claims the lease at once): only the holder hands out new
//!    origin grants, and grants
//!    held through any replica fill the same slots, so N replicas send no
//!    more origin copies than one tracker. On a database error it holds no
//!    lease (grants nothing new) until the next round;
//! 3. reads the releases: one registered, pushed or widened through another
//!    replica is registered here, and pushed to this replica's event-stream
//!    subscribers ([`release_changes`]);
//! 4. reloads the device directory when the `devices` table's fingerprint
//!    changed, and fully every [`DEVICE_RELOAD_ROUNDS`] rounds: a device
//!    registered or revoked through another replica is known here within
//!    one or two persist intervals.
//!
//! A flash crowd is one hot swarm, so replicas do not shard by info hash:
//! each holds the whole swarm (its own peers and the others', as rows), so
//! any replica can answer any announce; the cost of a peer is one row
//! written by its replica per round in which it changed, and one row read
//! by each other replica per round.
//!
//! Gauges: `ota_tracker_remote_peers`, `ota_tracker_grant_leases_held`;
//! counter `ota_tracker_replica_round_failures_total`.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ota_common::clock::wall_ms;
use ota_proto::api::PushEvent;
use ota_proto::rollout::Audience;
use ota_proto::InfoHash;

use super::{audience_of, PushMsg, Tracker};
use crate::connectability::Connectability;
use crate::registry::{Registry, StoredRelease};
use crate::swarm::PeerStore;

/// A replica reloads every device credential at least every this many
/// rounds, even when the fingerprint did not change.
pub const DEVICE_RELOAD_ROUNDS: u64 = 12;

/// Longest wait of a round for its connectability dials before merging
/// the other replicas' peers (dials are bounded by their own timeout).
pub const CONNECTABILITY_SETTLE: Duration = Duration::from_millis(500);

/// Longest replica id (`--replica-id`), in characters.
pub const MAX_REPLICA_ID_LEN: usize = 64;

/// Checks a replica id: 1 to [`MAX_REPLICA_ID_LEN`] ASCII letters, digits,
/// `-`, `_` or `.`.
///
/// Errors: the message says what is wrong.
pub fn check_replica_id(id: &str) -> anyhow::Result<()> {
    anyhow::ensure!(
        !id.is_empty() && id.len() <= MAX_REPLICA_ID_LEN,
        "the replica id must be 1 to {MAX_REPLICA_ID_LEN} characters, got {}",
        id.len()
    );
    anyhow::ensure!(
        id.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.')),
        "the replica id {id:?} may hold only ASCII letters, digits, '-', '_' and '.'"
    );
    Ok(())
}

/// How long a claimed origin-grant lease lasts: three persist intervals
/// (at least 1 s), so a replica that misses one round keeps it, and one
/// that stopped without releasing it frees it within three.
pub fn lease_ttl(persist_interval: Duration) -> Duration {
    (persist_interval * 3).max(Duration::from_secs(1))
}

/// What a replica keeps between its rounds.
#[derive(Debug, Default)]
pub(crate) struct ReplicaState {
    rounds: AtomicU64,
    device_fingerprint: Mutex<Option<(i64, i64, i64)>>,
    /// Swarms whose lease was claimed at a push, and when: kept for one
    /// lease TTL even before this replica's devices announce.
    pushed: Mutex<HashMap<InfoHash, Instant>>,
}

/// What to do with one stored release another replica may have changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReleaseChange {
    /// The release.
    pub info_hash: InfoHash,
    /// Not registered here yet.
    pub new: bool,
    /// Its audience as stored.
    pub audience: Audience,
    /// Push it to this replica's subscribers: `Some(None)` for a release
    /// pushed since, `Some(Some(p))` for a pushed release whose wave was
    /// raised from `p` %.
    pub push: Option<Option<u8>>,
}

/// Compares this replica's audiences with the stored releases (pure): a
/// release it does not know, or whose audience differs, is listed. A new
/// release that is already pushed, a known one pushed since, and a pushed
/// one whose rollout rose are to be pushed here; a lowered wave only
/// updates the audience (devices outside it are refused from then on).
pub fn release_changes(local: &HashMap<InfoHash, Audience>, stored: &[(InfoHash, Audience)]) -> Vec<ReleaseChange> {
    stored
        .iter()
        .filter_map(|(ih, a)| {
            let push = match local.get(ih) {
                None => a.pushed.then_some(None),
                Some(l) if l == a => return None,
                Some(l) if a.pushed && !l.pushed => Some(None),
                Some(l) if a.pushed && a.percent > l.percent => Some(Some(l.percent)),
                Some(_) => None,
            };
            Some(ReleaseChange {
                info_hash: *ih,
                new: !local.contains_key(ih),
                audience: a.clone(),
                push,
            })
        })
        .collect()
}

impl Tracker {
    /// One replica round (see the module docs); does nothing for a single
    /// tracker (an empty replica id). Returns the number of rows read.
    ///
    /// Errors: a database failure; the round's other steps still run, and
    /// without a confirmed lease this replica grants nothing new.
    pub(crate) async fn replica_round(&self) -> anyhow::Result<usize> {
        if self.registry.replica().is_empty() {
            return Ok(0);
        }
        let round = self.replica.rounds.fetch_add(1, Ordering::Relaxed);
        let mut rows = 0;
        let mut first_error: Option<anyhow::Error> = None;
        let mut fail = |e: anyhow::Error| {
            metrics::counter!("ota_tracker_replica_round_failures_total").increment(1);
            first_error.get_or_insert(e);
        };
        match merge_remote_peers(&self.registry, &self.store, &self.connectability, self.peer_timeout).await {
            Ok(n) => rows += n,
            Err(e) => fail(e.context("cannot read the other replicas' live peers")),
        }
        let now_ms = wall_ms();
        let ttl = lease_ttl(self.mirror.interval());
        let mut wanted = self.store.grant_wanted();
        {
            let mut pushed = self.replica.pushed.lock().unwrap_or_else(|e| e.into_inner());
            pushed.retain(|_, at| at.elapsed() < ttl);
            wanted.extend(
                pushed
                    .keys()
                    .filter(|ih| !wanted.contains(ih))
                    .copied()
                    .collect::<Vec<_>>(),
            );
        }
        let held = match self
            .registry
            .claim_grant_leases(&wanted, now_ms, ttl.as_millis() as i64)
            .await
        {
            Ok(held) => held.into_iter().collect(),
            Err(e) => {
                fail(anyhow::Error::from(e).context("cannot claim origin-grant leases"));
                HashSet::new()
            }
        };
        let n = self.store.set_grant_leases(&held);
        metrics::gauge!("ota_tracker_grant_leases_held").set(n as f64);
        match self.registry.list().await {
            Ok(stored) => {
                rows += stored.len();
                self.apply_release_changes(&stored);
            }
            Err(e) => fail(anyhow::Error::from(e).context("cannot read the releases")),
        }
        match self.sync_devices(round).await {
            Ok(n) => rows += n,
            Err(e) => fail(e.context("cannot read the device credentials")),
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(rows),
        }
    }

    /// Registers, updates and pushes what [`release_changes`] finds.
    fn apply_release_changes(&self, stored: &[StoredRelease]) {
        let audiences: Vec<(InfoHash, Audience)> =
            stored.iter().map(|r| (r.release.info_hash, audience_of(r))).collect();
        let changes = {
            let local = self.audiences.read().unwrap_or_else(|e| e.into_inner());
            release_changes(&local, &audiences)
        };
        for c in changes {
            if c.new {
                self.store.register(c.info_hash);
                tracing::info!(info_hash = %c.info_hash, "release registered through another replica");
            }
            metrics::gauge!("ota_tracker_rollout_percent", "info_hash" => c.info_hash.to_hex())
                .set(c.audience.percent as f64);
            self.audiences
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .insert(c.info_hash, c.audience);
            if let Some(previous_percent) = c.push {
                let Some(r) = stored.iter().find(|r| r.release.info_hash == c.info_hash) else {
                    continue;
                };
                let delivered = self.send_push(PushMsg {
                    event: PushEvent {
                        info_hash: c.info_hash,
                        name: r.release.name.clone(),
                        version: r.release.version.clone(),
                    },
                    previous_percent,
                    replicated: true,
                });
                tracing::info!(info_hash = %c.info_hash, ?previous_percent, delivered, "push from another replica relayed to this replica's subscribers");
            }
        }
    }

    /// Reloads the device directory when the table's fingerprint changed
    /// (or every [`DEVICE_RELOAD_ROUNDS`] rounds); open push streams of
    /// removed devices end. Returns the rows read.
    async fn sync_devices(&self, round: u64) -> anyhow::Result<usize> {
        let fingerprint = self.registry.device_fingerprint().await?;
        let unchanged = *self
            .replica
            .device_fingerprint
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            == Some(fingerprint);
        if unchanged && !round.is_multiple_of(DEVICE_RELOAD_ROUNDS) {
            return Ok(1);
        }
        let creds = self.registry.device_credentials().await?;
        let read = creds.len();
        let (changed, removed) = {
            let mut d = self.devices.write().unwrap_or_else(|e| e.into_inner());
            let r = d.sync(creds);
            metrics::gauge!("ota_tracker_devices_registered").set(d.len() as f64);
            r
        };
        *self
            .replica
            .device_fingerprint
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(fingerprint);
        if removed > 0 {
            self.note_revocation();
        }
        if changed + removed > 0 {
            tracing::info!(changed, removed, "device directory synchronised with the database");
        }
        Ok(read + 1)
    }

    /// Claims the origin-grant lease of a swarm at once (when its release
    /// is pushed through this replica), so the devices announcing here right
    /// after the push get the origin at their first announce instead of
    /// after the next round; the round keeps it only while this replica has
    /// leechers there. Nothing for a single tracker; a database error is
    /// logged and leaves the lease to the next round.
    pub(crate) async fn claim_grant_lease_now(&self, info_hash: &InfoHash) {
        if self.registry.replica().is_empty() {
            return;
        }
        let ttl = lease_ttl(self.mirror.interval()).as_millis() as i64;
        match self.registry.claim_grant_lease(info_hash, wall_ms(), ttl).await {
            Ok(held) => {
                self.store.set_grant_lease(info_hash, held);
                if held {
                    self.replica
                        .pushed
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(*info_hash, Instant::now());
                }
            }
            Err(e) => tracing::warn!(%info_hash, error = %e, "cannot claim the origin-grant lease at push"),
        }
    }

    /// Gives up this replica's origin-grant leases (graceful shutdown), so
    /// another replica takes them at its next round. Nothing for a single
    /// tracker.
    ///
    /// Errors: a database failure (the leases then run out by themselves).
    pub(crate) async fn release_grant_leases(&self) -> anyhow::Result<()> {
        if self.registry.replica().is_empty() {
            return Ok(());
        }
        self.store.set_grant_leases(&HashSet::new());
        self.registry.release_grant_leases().await?;
        Ok(())
    }
}

/// Reads the other replicas' live peers seen within `peer_timeout` and
/// merges them into `store`; returns the rows read. Each device's address
/// gets this replica's own connectability check (a verdict is per replica,
/// kept for its TTL), so it is handed out from the next announce on.
///
/// Errors: a database failure (the remote peers held stay as they were).
async fn merge_remote_peers(
    registry: &Registry,
    store: &PeerStore,
    connectability: &Arc<Connectability>,
    peer_timeout: Duration,
) -> anyhow::Result<usize> {
    let records = registry
        .load_remote_peers(wall_ms(), peer_timeout.as_millis() as i64)
        .await?;
    // Dial first (only addresses without a fresh verdict are dialled), so a
    // merged device seeder is reachable at once and counts as serving.
    for r in records.iter().filter(|r| !r.is_origin) {
        connectability.check(r.addr);
    }
    connectability.settle(CONNECTABILITY_SETTLE).await;
    let held = store.merge_remote(&records, Instant::now());
    metrics::gauge!("ota_tracker_remote_peers").set(held as f64);
    Ok(records.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn audience(percent: u8, pushed: bool) -> Audience {
        Audience::new(percent, None, pushed)
    }

    #[test]
    fn replica_ids_are_short_and_plain() {
        assert!(check_replica_id("tracker-0").is_ok());
        assert!(check_replica_id("").is_err());
        assert!(check_replica_id(&"a".repeat(65)).is_err());
        assert!(check_replica_id("a b").is_err());
        assert!(check_replica_id("é").is_err());
    }

    #[test]
    fn leases_outlive_a_missed_round() {
        assert_eq!(lease_ttl(Duration::from_secs(5)), Duration::from_secs(15));
        assert_eq!(lease_ttl(Duration::from_millis(100)), Duration::from_secs(1));
    }

    #[test]
    fn pushes_and_raised_waves_from_another_replica_are_relayed_once() {
        let (a, b, c, d) = (
            InfoHash([1; 20]),
            InfoHash([2; 20]),
            InfoHash([3; 20]),
            InfoHash([4; 20]),
        );
        let local = HashMap::from([
            (a, audience(100, false)),
            (b, audience(20, true)),
            (c, audience(50, true)),
        ]);
        let stored = vec![
            (a, audience(100, true)),  // pushed elsewhere
            (b, audience(60, true)),   // wave raised elsewhere
            (c, audience(10, true)),   // wave lowered elsewhere
            (d, audience(100, false)), // registered elsewhere
        ];
        let changes = release_changes(&local, &stored);
        let summary: Vec<(InfoHash, bool, Option<Option<u8>>)> =
            changes.iter().map(|c| (c.info_hash, c.new, c.push)).collect();
        assert_eq!(
            summary,
            vec![
                (a, false, Some(None)),
                (b, false, Some(Some(20))),
                (c, false, None),
                (d, true, None)
            ]
        );
        // Applied, nothing is left to do.
        let applied: HashMap<_, _> = changes.into_iter().map(|c| (c.info_hash, c.audience)).collect();
        assert!(release_changes(&applied, &stored).is_empty());
        // A release first seen already pushed is pushed here too.
        let pushed_new = release_changes(&HashMap::new(), &[(d, audience(100, true))]);
        assert_eq!(pushed_new[0].push, Some(None));
    }
}
