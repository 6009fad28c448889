//! When to drop and re-make every peer connection of a download that
//! stalled (librqbit: pause, then resume).
//!
//! Why: librqbit 9.1 sends no bitfield while it holds no piece (BEP 3 makes
//! it optional) and, for a peer that sent none, treats every piece as
//! already held by that peer, so it never sends it a `have` message
//! (`should_transmit_have` reads a missing bitfield entry as "has it"). Two
//! devices that connect while the receiving one has nothing therefore never
//! learn of each other's new pieces: the connection idles until librqbit's
//! 10 s read timeout, and the re-dial waits out a 10 s backoff. In a flash
//! crowd every device connects to the others at the first announce, when
//! none has a piece, so the swarm stalls and falls back on the origin.
//!
//! A new connection starts with fresh bitfields on both sides (and once a
//! device holds a piece it sends one), so after a stall of
//! [`ReconnectWatch`]'s delay the agent pauses and resumes the torrent:
//! librqbit drops every connection, re-announces and dials the peers it is
//! handed without a backoff. The delay doubles after each reconnect that
//! brought no progress (up to [`MAX_FACTOR`] times), and starts over on
//! progress. Pure: the caller passes the clock.

use std::time::{Duration, Instant};

/// Most times the delay is doubled while reconnects bring no progress.
pub const MAX_FACTOR: u32 = 8;

/// Watches a download's verified bytes and says when a reconnect is due.
#[derive(Debug, Clone)]
pub struct ReconnectWatch {
    after: Duration,
    factor: u32,
    last_bytes: u64,
    since: Instant,
    reconnects: u32,
}

impl ReconnectWatch {
    /// Starts watching at `now` with `bytes` verified so far; a reconnect is
    /// due after `after` without progress.
    pub fn new(after: Duration, bytes: u64, now: Instant) -> Self {
        ReconnectWatch {
            after,
            factor: 1,
            last_bytes: bytes,
            since: now,
            reconnects: 0,
        }
    }

    /// Records the verified bytes at `now`; true when a reconnect is due
    /// (the caller reconnects at once: the next one is due only after a
    /// longer stall).
    pub fn due(&mut self, bytes: u64, now: Instant) -> bool {
        if bytes != self.last_bytes {
            self.last_bytes = bytes;
            self.since = now;
            self.factor = 1;
            return false;
        }
        if now.saturating_duration_since(self.since) < self.after * self.factor {
            return false;
        }
        self.since = now;
        self.factor = (self.factor * 2).min(MAX_FACTOR);
        self.reconnects += 1;
        true
    }

    /// Reconnects so far.
    pub fn reconnects(&self) -> u32 {
        self.reconnects
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stall_reconnects_and_the_delay_backs_off_until_progress() {
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let mut w = ReconnectWatch::new(Duration::from_secs(2), 0, t0);
        assert!(!w.due(0, ms(1_999)));
        assert!(w.due(0, ms(2_000)), "2 s without progress");
        assert!(!w.due(0, ms(5_999)), "then 4 s");
        assert!(w.due(0, ms(6_000)));
        assert!(w.due(0, ms(14_000)), "then 8 s");
        assert!(!w.due(0, ms(29_999)), "then 16 s at most");
        assert!(w.due(0, ms(30_000)));
        assert!(w.due(0, ms(46_000)));
        assert_eq!(w.reconnects(), 5);
        // Progress starts the delay over.
        assert!(!w.due(100, ms(47_000)));
        assert!(!w.due(100, ms(48_999)));
        assert!(w.due(100, ms(49_000)));
    }
}
