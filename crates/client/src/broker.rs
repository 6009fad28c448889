//! A device's subscription to release notices through an MQTT broker
//! (issue 18; topics and body in [`ota_proto::release_notice`]): the
//! fleet-scale alternative to the tracker's event stream.
//!
//! Everything from the broker is treated as hostile: packets are at most
//! [`MAX_PACKET_BYTES`] (larger ones end the connection, which is made
//! anew), a publish on a topic this device did not subscribe to is
//! dropped, a body that is not a [`ReleaseNotice`] is dropped with a
//! warning. A notice only ever leads to an authenticated request to the
//! tracker; it names no path and no address.

use std::time::Duration;

use ota_proto::release_notice::{self, BrokerAddr, ReleaseNotice};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

/// Largest packet read from the broker, bytes: one notice
/// ([`release_notice::MAX_NOTICE_BYTES`]) with its topic and headers.
pub const MAX_PACKET_BYTES: usize = release_notice::MAX_NOTICE_BYTES + 1024;

/// Events queued for the agent before the subscription waits.
const EVENT_CAPACITY: usize = 64;

/// What a device subscribes with.
#[derive(Debug, Clone)]
pub struct NoticeSubscription {
    /// The broker.
    pub addr: BrokerAddr,
    /// Topic prefix (the tracker's `--mqtt-prefix`).
    pub prefix: String,
    /// MQTT client id (the agent uses `ota-device-` + its device id).
    pub client_id: String,
    /// The device's channel.
    pub channel: String,
    /// The device's model.
    pub model: String,
    /// MQTT keep-alive; a broker silent for 1.5 × this is taken as gone.
    pub keep_alive: Duration,
}

/// What the subscription reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BrokerEvent {
    /// Connected (again) and subscribed: notices published while away may
    /// be missed, so the device lists its releases at the tracker.
    Connected,
    /// A release notice on one of the device's topics.
    Notice(ReleaseNotice),
}

/// Subscribes to the device's four topics
/// ([`release_notice::device_topics`], QoS 1) and yields what arrives,
/// reconnecting forever with backoff (0.5 s doubling to 10 s). The task
/// ends when the receiver is dropped.
///
/// Errors: an invalid topic prefix.
pub fn subscribe_notices(
    sub: NoticeSubscription,
) -> anyhow::Result<(tokio::sync::mpsc::Receiver<BrokerEvent>, tokio::task::JoinHandle<()>)> {
    release_notice::check_prefix(&sub.prefix)?;
    let topics = release_notice::device_topics(&sub.prefix, &sub.channel, &sub.model);
    let mut opts = MqttOptions::new(&sub.client_id, &sub.addr.host, sub.addr.port);
    opts.set_keep_alive(sub.keep_alive)
        .set_clean_session(true)
        .set_max_packet_size(MAX_PACKET_BYTES, MAX_PACKET_BYTES);
    if let Some(u) = &sub.addr.username {
        opts.set_credentials(u, sub.addr.password.clone().unwrap_or_default());
    }
    let (client, mut eventloop) = AsyncClient::new(opts, 16);
    let (tx, rx) = tokio::sync::mpsc::channel(EVENT_CAPACITY);
    let addr = sub.addr;
    let task = tokio::spawn(async move {
        let mut backoff = Duration::from_millis(500);
        let mut up = false;
        loop {
            let event = tokio::select! {
                e = eventloop.poll() => e,
                _ = tx.closed() => return,
            };
            match event {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    let filters = topics
                        .iter()
                        .map(|t| rumqttc::SubscribeFilter::new(t.clone(), QoS::AtLeastOnce));
                    if let Err(e) = client.try_subscribe_many(filters) {
                        tracing::warn!(error = %e, "cannot subscribe to release notices");
                        continue;
                    }
                    tracing::info!(broker = %addr, topics = ?topics, "subscribed to release notices");
                    up = true;
                    backoff = Duration::from_millis(500);
                    if tx.send(BrokerEvent::Connected).await.is_err() {
                        return;
                    }
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    if !topics.contains(&p.topic) {
                        tracing::warn!(topic = %p.topic, "release notice on a topic not subscribed to; dropped");
                        continue;
                    }
                    match ReleaseNotice::decode(&p.payload) {
                        Ok(n) => {
                            if tx.send(BrokerEvent::Notice(n)).await.is_err() {
                                return;
                            }
                        }
                        Err(e) => tracing::warn!(topic = %p.topic, error = %e, "release notice dropped"),
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    if up {
                        tracing::warn!(broker = %addr, error = %e, "MQTT broker connection lost; reconnecting");
                    } else {
                        tracing::debug!(broker = %addr, error = %e, "MQTT broker unreachable; retrying");
                    }
                    up = false;
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = tx.closed() => return,
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                }
            }
        }
    });
    Ok((rx, task))
}
