//! The push bus: one broadcast channel of release events, filtered per
//! subscriber by the release's audience.

use std::sync::Arc;

use futures::Stream;
use ota_proto::api::PushEvent;
use tokio_stream::StreamExt;

use super::{Caller, Tracker};

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

    /// The release events `caller` gets from now on (see
    /// [`Self::delivers_to`]). A subscriber that falls more than 64 events
    /// behind skips the missed ones.
    pub fn push_events(self: &Arc<Self>, caller: Caller) -> impl Stream<Item = PushEvent> + Send + 'static {
        let me = self.clone();
        tokio_stream::wrappers::BroadcastStream::new(self.push.subscribe()).filter_map(move |msg| {
            let msg = msg.ok()?;
            me.delivers_to(&msg, &caller).then_some(msg.event)
        })
    }

    /// Number of connected push subscribers.
    pub fn subscribers(&self) -> usize {
        self.push.receiver_count()
    }
}
