//! The persistence round: live peers, completed-download counters and
//! device activity (last seen, completions) are mirrored to the database
//! every [`StoreConfig::persist_interval`](crate::swarm::StoreConfig::persist_interval)
//! (5 s by default) and at graceful shutdown — never in the announce path —
//! and read back by [`restore`] when the tracker starts, with their ages, so
//! a restarted tracker hands out the same swarm and expiry carries on.
//!
//! A failed write loses nothing: device activity is put back, and the next
//! round rewrites every live peer (a full resync). Counters:
//! `ota_tracker_persisted_rows_total`, `ota_tracker_persist_failures_total`.
//!
//! Depends only on [`crate::registry`] and [`crate::swarm`]; the tracker
//! owns a [`Mirror`] and schedules its rounds with [`spawn_rounds`].

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use ota_common::clock::wall_ms;
use ota_proto::InfoHash;

use crate::registry::{DeviceActivity, DeviceDirectory, Registry};
use crate::swarm::PeerStore;

/// Shortest interval between two rounds, whatever the setting says.
pub const MIN_INTERVAL: Duration = Duration::from_millis(100);

/// Puts the stored live peers (as old as they are now, downtime included:
/// those past the peer timeout are dropped) and counters back into `store`,
/// whose releases must already be registered; the first write afterwards
/// replaces the stored table, dropping rows that were not restored.
///
/// Errors: a database failure.
pub async fn restore(registry: &Registry, store: &PeerStore) -> anyhow::Result<()> {
    let stored = registry.load_swarms(wall_ms()).await?;
    let now = Instant::now();
    let restored = stored.peers.iter().filter(|p| store.restore(p, now)).count();
    for (ih, n) in &stored.downloaded {
        store.restore_downloaded(ih, *n);
    }
    store.mark_full_resync();
    if !stored.peers.is_empty() {
        tracing::info!(
            restored,
            stored = stored.peers.len(),
            "live peers restored from the database"
        );
    }
    Ok(())
}

/// What the persistence round keeps between rounds: the completed
/// downloads per (device id, info hash) not yet written, and the lock that
/// keeps two writes from overlapping.
#[derive(Debug)]
pub struct Mirror {
    lock: tokio::sync::Mutex<()>,
    interval: Duration,
    completions: Mutex<HashMap<(Arc<str>, InfoHash), u32>>,
}

impl Mirror {
    /// A mirror written every `interval` (at least [`MIN_INTERVAL`]).
    pub fn new(interval: Duration) -> Self {
        Mirror {
            lock: tokio::sync::Mutex::new(()),
            interval: interval.max(MIN_INTERVAL),
            completions: Mutex::default(),
        }
    }

    /// Time between two rounds.
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// Notes one completed download (announce event `completed`) of
    /// `info_hash` by device `device_id`, written in the next round.
    pub fn count_completion(&self, device_id: Arc<str>, info_hash: InfoHash) {
        *self
            .completions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry((device_id, info_hash))
            .or_default() += 1;
    }

    /// One round: writes devices' last-seen times (from `devices`) and
    /// completion counts, then `store`'s changes, to `registry`; returns the
    /// number of rows written (devices, peers upserted or deleted,
    /// counters). Rounds never overlap.
    ///
    /// Errors: a database failure; the device activity is put back and the
    /// next round rewrites every live peer, so nothing is lost.
    pub async fn persist(
        &self,
        registry: &Registry,
        store: &PeerStore,
        devices: &RwLock<DeviceDirectory>,
    ) -> anyhow::Result<usize> {
        let _guard = self.lock.lock().await;
        let activity = self.take_device_activity(devices);
        let mut rows = activity.last_seen.len() + activity.completions.len();
        if !activity.is_empty() {
            if let Err(e) = registry.save_device_activity(&activity).await {
                self.restore_device_activity(devices, activity);
                metrics::counter!("ota_tracker_persist_failures_total").increment(1);
                return Err(anyhow::Error::from(e).context("cannot write device activity to the database"));
            }
        }
        let (changes, now_ms) = (store.take_changes(Instant::now()), wall_ms());
        if changes.is_empty() {
            return Ok(rows);
        }
        rows += changes.upserts.len() + changes.removals.len() + changes.downloaded.len();
        if let Err(e) = registry.save_swarms(&changes, now_ms).await {
            store.mark_full_resync();
            metrics::counter!("ota_tracker_persist_failures_total").increment(1);
            return Err(anyhow::Error::from(e).context("cannot write live peers to the database"));
        }
        metrics::counter!("ota_tracker_persisted_rows_total").increment(rows as u64);
        Ok(rows)
    }

    fn take_device_activity(&self, devices: &RwLock<DeviceDirectory>) -> DeviceActivity {
        let last_seen = devices.read().unwrap_or_else(|e| e.into_inner()).take_seen();
        let completions = std::mem::take(&mut *self.completions.lock().unwrap_or_else(|e| e.into_inner()))
            .into_iter()
            .map(|((id, ih), n)| (id.to_string(), ih, n))
            .collect();
        DeviceActivity { last_seen, completions }
    }

    fn restore_device_activity(&self, devices: &RwLock<DeviceDirectory>, a: DeviceActivity) {
        devices
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .restore_seen(&a.last_seen);
        let mut c = self.completions.lock().unwrap_or_else(|e| e.into_inner());
        for (id, ih, n) in a.completions {
            *c.entry((id.into(), ih)).or_default() += n;
        }
    }
}

/// Runs `round` every `interval` (a late tick is delayed, never doubled)
/// until `stop` turns true, then returns; a stop never interrupts a round.
/// A failed round is logged (warning) and the next one runs as planned.
pub fn spawn_rounds<F, Fut>(
    interval: Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
    mut round: F,
) -> tokio::task::JoinHandle<()>
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: Future<Output = anyhow::Result<usize>> + Send,
{
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    if let Err(e) = round().await {
                        tracing::warn!(error = %format!("{e:#}"), "persisting live peers failed");
                    }
                }
                _ = async { let _ = stop.wait_for(|s| *s).await; } => break,
            }
        }
    })
}
