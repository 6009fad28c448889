//! Release notices through an MQTT broker, for fleets whose push fan-out
//! outgrows one tracker's event streams (issue 18). The tracker reads its
//! own push bus like one more subscriber and publishes every release event
//! as a [`ReleaseNotice`] to the release's topics
//! ([`ota_proto::release_notice::release_topics`]), QoS 1 (at least once)
//! and retained, so that a device subscribing later gets the latest notice
//! of each of its topics at once. The broker does the fan-out; the tracker
//! sends one publish per topic whatever the fleet size.
//!
//! On every (re)connection to the broker, and when the bus lagged, every
//! pushed release is published again, oldest first, so that a broker that
//! restarted without its retained store, or notices dropped while the
//! broker was away, are made good. A rollout wave raised on a pushed
//! release publishes its notice again with the new percentage.
//!
//! Introductions for hole punching stay on the tracker's event stream:
//! they go to one device only and carry addresses to send to, which a
//! broker topic without per-device access control must not carry.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use ota_proto::release_notice::{self, BrokerAddr, ReleaseNotice};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::sync::broadcast::error::RecvError;

use ota_proto::api::PushEvent;

use super::Tracker;

/// Requests queued towards the broker before a publish waits.
const REQUEST_CAPACITY: usize = 256;

/// Largest packet read from or written to the broker, in bytes.
const MAX_PACKET_BYTES: usize = 64 * 1024;

/// Settings of the broker publisher.
#[derive(Debug, Clone)]
pub struct BrokerPush {
    /// The broker (`mqtt://[USER[:PASSWORD]@]HOST[:PORT]`).
    pub addr: BrokerAddr,
    /// Topic prefix ([`release_notice::check_prefix`]).
    pub prefix: String,
    /// MQTT client id; distinct per tracker replica (the broker drops
    /// the older of two connections with one id).
    pub client_id: String,
    /// MQTT keep-alive (PINGREQ when idle this long).
    pub keep_alive: Duration,
}

impl BrokerPush {
    /// Settings with the default prefix, keep-alive 30 s and a client id
    /// `ota-tracker-` + 8 random hex digits.
    pub fn new(addr: BrokerAddr) -> Self {
        BrokerPush {
            addr,
            prefix: release_notice::DEFAULT_PREFIX.into(),
            client_id: format!("ota-tracker-{:08x}", rand::random::<u32>()),
            keep_alive: Duration::from_secs(30),
        }
    }
}

/// Counts the bus receivers held by broker publishers (they are not push
/// subscribers); decremented when the publisher ends.
struct Tap(Arc<Tracker>);

impl Drop for Tap {
    fn drop(&mut self) {
        self.0.broker_taps.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Tracker {
    /// Starts publishing release notices to the broker; the returned tasks
    /// run until aborted (or the runtime ends). Connection failures are
    /// retried forever with backoff (0.5 s doubling to 10 s) and logged;
    /// gauge `ota_tracker_broker_connected` (0/1), counters
    /// `ota_tracker_broker_notices_total` and
    /// `ota_tracker_broker_errors_total`.
    ///
    /// Errors: an invalid topic prefix.
    pub fn spawn_broker_push(self: &Arc<Self>, settings: BrokerPush) -> anyhow::Result<BrokerPushTasks> {
        release_notice::check_prefix(&settings.prefix)?;
        let mut opts = MqttOptions::new(&settings.client_id, &settings.addr.host, settings.addr.port);
        opts.set_keep_alive(settings.keep_alive)
            .set_clean_session(true)
            .set_max_packet_size(MAX_PACKET_BYTES, MAX_PACKET_BYTES);
        if let Some(u) = &settings.addr.username {
            opts.set_credentials(u, settings.addr.password.clone().unwrap_or_default());
        }
        let (client, mut eventloop) = AsyncClient::new(opts, REQUEST_CAPACITY);
        let (connected_tx, mut connected_rx) = tokio::sync::watch::channel(0u64);
        let addr = settings.addr.clone();
        let connection = tokio::spawn(async move {
            let mut backoff = Duration::from_millis(500);
            let mut up = false;
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        tracing::info!(broker = %addr, "connected to the MQTT broker");
                        metrics::gauge!("ota_tracker_broker_connected").set(1.0);
                        up = true;
                        backoff = Duration::from_millis(500);
                        connected_tx.send_modify(|n| *n += 1);
                    }
                    Ok(_) => {}
                    Err(e) => {
                        metrics::gauge!("ota_tracker_broker_connected").set(0.0);
                        metrics::counter!("ota_tracker_broker_errors_total").increment(1);
                        if up {
                            tracing::warn!(broker = %addr, error = %e, "MQTT broker connection lost; reconnecting");
                        } else {
                            tracing::debug!(broker = %addr, error = %e, "MQTT broker unreachable; retrying");
                        }
                        up = false;
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(10));
                    }
                }
            }
        });
        self.broker_taps.fetch_add(1, Ordering::Relaxed);
        let mut bus = self.push.subscribe();
        let tap = Tap(self.clone());
        let prefix = settings.prefix;
        let publisher = tokio::spawn(async move {
            let tracker = &tap.0;
            loop {
                tokio::select! {
                    changed = connected_rx.changed() => {
                        if changed.is_err() {
                            return;
                        }
                        tracker.publish_all_notices(&client, &prefix).await;
                    }
                    msg = bus.recv() => match msg {
                        Ok(msg) if msg.replicated => {}
                        Ok(msg) => tracker.publish_notice(&client, &prefix, &msg.event).await,
                        Err(RecvError::Lagged(n)) => {
                            tracing::warn!(missed = n, "broker publisher lagged; publishing every pushed release again");
                            tracker.publish_all_notices(&client, &prefix).await;
                        }
                        Err(RecvError::Closed) => return,
                    },
                }
            }
        });
        Ok(BrokerPushTasks { connection, publisher })
    }

    /// Publishes one release event's notice to its release's topics.
    async fn publish_notice(&self, client: &AsyncClient, prefix: &str, ev: &PushEvent) {
        let Some(audience) = self
            .audiences
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&ev.info_hash)
            .cloned()
        else {
            return;
        };
        let notice = ReleaseNotice {
            info_hash: ev.info_hash,
            name: ev.name.clone(),
            version: ev.version.clone(),
            rollout_percent: audience.percent,
        };
        let body = notice.encode();
        for topic in release_notice::release_topics(prefix, audience.channel.as_deref(), &audience.models) {
            match client
                .publish(topic.clone(), QoS::AtLeastOnce, true, body.clone())
                .await
            {
                Ok(()) => {
                    metrics::counter!("ota_tracker_broker_notices_total").increment(1);
                    tracing::debug!(%topic, info_hash = %ev.info_hash, "release notice queued for the broker");
                }
                Err(e) => tracing::warn!(%topic, error = %e, "release notice not queued"),
            }
        }
    }

    /// Publishes every pushed release again, oldest first (the newest ends
    /// up retained on each topic).
    async fn publish_all_notices(&self, client: &AsyncClient, prefix: &str) {
        let mut releases = match self.registry.list().await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "cannot list releases for the broker");
                return;
            }
        };
        releases.retain(|r| r.pushed);
        releases.sort_by_key(|r| r.release.created_at);
        for r in releases {
            let ev = PushEvent {
                info_hash: r.release.info_hash,
                name: r.release.name,
                version: r.release.version,
            };
            self.publish_notice(client, prefix, &ev).await;
        }
    }
}

/// The two tasks of a broker publisher (the connection's event loop and
/// the bus reader); [`BrokerPushTasks::abort`] stops both.
#[derive(Debug)]
pub struct BrokerPushTasks {
    connection: tokio::task::JoinHandle<()>,
    publisher: tokio::task::JoinHandle<()>,
}

impl BrokerPushTasks {
    /// Stops publishing and closes the broker connection.
    pub fn abort(&self) {
        self.publisher.abort();
        self.connection.abort();
    }
}
