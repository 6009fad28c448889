//! The push bus: one broadcast channel of release events, filtered per
//! subscriber by the release's audience. A device holds at most
//! [`MAX_STREAMS_PER_DEVICE`] streams; its streams end when its token is
//! revoked; a subscriber that falls more than [`BUS_CAPACITY`] events behind
//! gets [`PushItem::Resync`] instead of silently missing them.

use std::sync::Arc;

use futures::Stream;
use ota_proto::api::PushEvent;
use tokio::sync::broadcast::error::RecvError;

use super::{ApiError, Caller, Tracker};

/// Events the push bus holds for a slow subscriber before it lags.
pub const BUS_CAPACITY: usize = 64;

/// Open push streams one device may hold at once; one more is refused
/// (HTTP 429).
pub const MAX_STREAMS_PER_DEVICE: usize = 4;

/// One message on the internal push bus: the event and, for a wave raised
/// from `previous_percent`, the old percentage (only devices newly included
/// get it).
#[derive(Debug, Clone)]
pub struct PushMsg {
    /// The release event sent to subscribers.
    pub event: PushEvent,
    /// For a raised rollout wave, the percentage before.
    pub previous_percent: Option<u8>,
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
}

/// One open stream of a device; dropping it frees the slot.
struct StreamSlot {
    tracker: Arc<Tracker>,
    device: Arc<str>,
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut streams = self.tracker.streams.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = streams.get_mut(&self.device) {
            *n -= 1;
            if *n == 0 {
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
        let slot = match &caller {
            Caller::Device(d) => {
                let mut streams = self.streams.lock().unwrap_or_else(|e| e.into_inner());
                let n = streams.entry(d.device_id.clone()).or_insert(0);
                if *n >= MAX_STREAMS_PER_DEVICE {
                    return Err(ApiError::TooMany(format!(
                        "device {} already holds {MAX_STREAMS_PER_DEVICE} push streams",
                        d.device_id
                    )));
                }
                *n += 1;
                Some(StreamSlot {
                    tracker: self.clone(),
                    device: d.device_id.clone(),
                })
            }
            _ => None,
        };
        let mut revocations = self.revocations.subscribe();
        revocations.mark_unchanged();
        let sub = Subscriber {
            tracker: self.clone(),
            caller,
            bus: self.push.subscribe(),
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
                    changed = s.revocations.changed() => {
                        if changed.is_err() || !s.tracker.still_valid(&s.caller) {
                            return None;
                        }
                    }
                }
            }
        }))
    }

    /// Number of connected push subscribers.
    pub fn subscribers(&self) -> usize {
        self.push.receiver_count()
    }

    /// Open push streams of device `device_id`.
    pub fn device_streams(&self, device_id: &str) -> usize {
        self.streams
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(device_id)
            .copied()
            .unwrap_or(0)
    }
}
