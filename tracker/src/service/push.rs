//! The push bus: one broadcast channel of release events, filtered per
//! subscriber by the release's audience. A device holds at most
//! [`MAX_STREAMS_PER_DEVICE`] streams; its streams end when its token is
//! revoked; a subscriber that falls more than [`BUS_CAPACITY`] events behind
//! gets [`PushItem::Resync`] instead of silently missing them.
//!
//! Introductions for hole punching ([`PushItem::Introduce`]) go to one
//! device only, so they travel on a channel of that device's streams (made
//! with its first stream, dropped with its last), not on the bus that
//! every subscriber reads: an introduction costs O(the device's streams),
//! and a busy rendezvous never makes other subscribers lag.

use std::sync::Arc;

use futures::Stream;
use ota_proto::api::PushEvent;
use ota_proto::rendezvous::Introduction;
use tokio::sync::broadcast::error::RecvError;

use super::{ApiError, Caller, Tracker};

/// Events the push bus holds for a slow subscriber before it lags.
pub const BUS_CAPACITY: usize = 64;

/// Open push streams one device may hold at once; one more is refused
/// (HTTP 429).
pub const MAX_STREAMS_PER_DEVICE: usize = 4;

/// Introductions a device's channel holds for a slow stream; older ones
/// are dropped for it (an introduction is stale within seconds anyway).
pub const INTRODUCTIONS_CAPACITY: usize = 16;

/// The open push streams of one device and their introduction channel.
#[derive(Debug)]
pub(crate) struct DeviceStreams {
    /// Streams open now (at least 1 while the entry exists).
    open: usize,
    /// Introductions for this device, read by each of its streams.
    introductions: tokio::sync::broadcast::Sender<Introduction>,
}

/// One message on the internal push bus: the event and, for a wave raised
/// from `previous_percent`, the old percentage (only devices newly included
/// get it).
#[derive(Debug, Clone)]
pub struct PushMsg {
    /// The release event sent to subscribers.
    pub event: PushEvent,
    /// For a raised rollout wave, the percentage before.
    pub previous_percent: Option<u8>,
    /// Learnt from the database (another tracker replica pushed it): sent
    /// to this replica's event streams only, not published to the broker
    /// again (the replica that pushed it publishes it).
    pub replicated: bool,
}

/// What a push subscriber receives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PushItem {
    /// A release offered to the subscriber (SSE event `release`).
    Release(PushEvent),
    /// The subscriber fell behind and `missed` bus events were dropped for
    /// it (SSE event `resync`): it should list its releases again.
    Resync {
        /// Events dropped (not all of them were for this subscriber).
        missed: u64,
    },
    /// Another device asks to punch a QUIC path to this one (SSE event
    /// `introduce`, JSON [`Introduction`]): where to send to, and its
    /// certificate pin. Only to the device introduced.
    Introduce(Introduction),
}

/// One open stream of a device; dropping it frees the slot.
struct StreamSlot {
    tracker: Arc<Tracker>,
    device: Arc<str>,
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut streams = self.tracker.streams.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(d) = streams.get_mut(&self.device) {
            d.open -= 1;
            if d.open == 0 {
                streams.remove(&self.device);
            }
        }
    }
}

/// The state of one subscriber's stream.
struct Subscriber {
    tracker: Arc<Tracker>,
    caller: Caller,
    bus: tokio::sync::broadcast::Receiver<PushMsg>,
    /// The device's introductions (none for other callers).
    introductions: Option<tokio::sync::broadcast::Receiver<Introduction>>,
    revocations: tokio::sync::watch::Receiver<u64>,
    _slot: Option<StreamSlot>,
}

impl Tracker {
    /// Whether `caller` gets `msg`: a device only for releases offered to
    /// it, and for a raised wave only when the wave newly includes it.
    pub fn delivers_to(&self, msg: &PushMsg, caller: &Caller) -> bool {
        let Caller::Device(d) = caller else { return true };
        let ih = &msg.event.info_hash;
        self.offered(ih, d).is_ok()
            && !msg
                .previous_percent
                .is_some_and(|p| ota_proto::rollout::in_wave(ih, &d.device_id, p))
    }

    /// Whether `caller`'s credential still holds: a device's token has not
    /// been revoked (nor its id registered again with a new token).
    fn still_valid(&self, caller: &Caller) -> bool {
        match caller {
            Caller::Device(d) => self
                .devices
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .current(&d.device_id)
                .is_some_and(|now| Arc::ptr_eq(now, d)),
            _ => true,
        }
    }

    /// The push items `caller` gets from now on (see [`Self::delivers_to`]
    /// and [`PushItem`]). A device's stream ends when its token is revoked.
    ///
    /// Errors: [`ApiError::TooMany`] when the device already holds
    /// [`MAX_STREAMS_PER_DEVICE`] streams.
    pub fn push_events(
        self: &Arc<Self>,
        caller: Caller,
    ) -> Result<impl Stream<Item = PushItem> + Send + 'static, ApiError> {
        let (slot, introductions) = match &caller {
            Caller::Device(d) => {
                let mut streams = self.streams.lock().unwrap_or_else(|e| e.into_inner());
                let entry = streams.entry(d.device_id.clone()).or_insert_with(|| DeviceStreams {
                    open: 0,
                    introductions: tokio::sync::broadcast::channel(INTRODUCTIONS_CAPACITY).0,
                });
                if entry.open >= MAX_STREAMS_PER_DEVICE {
                    return Err(ApiError::TooMany(format!(
                        "device {} already holds {MAX_STREAMS_PER_DEVICE} push streams",
                        d.device_id
                    )));
                }
                entry.open += 1;
                let slot = StreamSlot {
                    tracker: self.clone(),
                    device: d.device_id.clone(),
                };
                (Some(slot), Some(entry.introductions.subscribe()))
            }
            _ => (None, None),
        };
        let mut revocations = self.revocations.subscribe();
        revocations.mark_unchanged();
        let sub = Subscriber {
            tracker: self.clone(),
            caller,
            bus: self.push.subscribe(),
            introductions,
            revocations,
            _slot: slot,
        };
        Ok(futures::stream::unfold(sub, |mut s| async move {
            if !s.tracker.still_valid(&s.caller) {
                return None;
            }
            loop {
                tokio::select! {
                    msg = s.bus.recv() => match msg {
                        Ok(m) if s.tracker.delivers_to(&m, &s.caller) => return Some((PushItem::Release(m.event), s)),
                        Ok(_) => {}
                        Err(RecvError::Lagged(missed)) => return Some((PushItem::Resync { missed }, s)),
                        Err(RecvError::Closed) => return None,
                    },
                    intro = next_introduction(&mut s.introductions) => match intro {
                        Ok(i) => return Some((PushItem::Introduce(i), s)),
                        Err(RecvError::Lagged(missed)) => {
                            tracing::debug!(missed, "introductions dropped for a slow push stream");
                        }
                        // Not while this stream's slot holds the entry.
                        Err(RecvError::Closed) => s.introductions = None,
                    },
                    changed = s.revocations.changed() => {
                        if changed.is_err() || !s.tracker.still_valid(&s.caller) {
                            return None;
                        }
                    }
                }
            }
        }))
    }

    /// Pushes `introduction` to the open push streams of device
    /// `device_id` (SSE event `introduce`); returns how many streams it
    /// reached (0 when the device holds none).
    pub fn push_introduction(&self, device_id: &str, introduction: Introduction) -> usize {
        let streams = self.streams.lock().unwrap_or_else(|e| e.into_inner());
        streams
            .get(device_id)
            .and_then(|d| d.introductions.send(introduction).ok())
            .unwrap_or(0)
    }

    /// Number of connected push subscribers (event streams; a broker
    /// publisher is not one).
    pub fn subscribers(&self) -> usize {
        self.push
            .receiver_count()
            .saturating_sub(self.broker_taps.load(std::sync::atomic::Ordering::Relaxed))
    }

    /// Puts `msg` on the push bus (event streams and broker publishers);
    /// returns the event streams that got it (0 when none is open).
    pub(crate) fn send_push(&self, msg: PushMsg) -> usize {
        self.push
            .send(msg)
            .unwrap_or(0)
            .saturating_sub(self.broker_taps.load(std::sync::atomic::Ordering::Relaxed))
    }

    /// Open push streams of device `device_id`.
    pub fn device_streams(&self, device_id: &str) -> usize {
        self.streams
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(device_id)
            .map_or(0, |d| d.open)
    }
}

/// The next introduction of a device's stream; pending forever for a
/// stream without one.
async fn next_introduction(
    rx: &mut Option<tokio::sync::broadcast::Receiver<Introduction>>,
) -> Result<Introduction, RecvError> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}
