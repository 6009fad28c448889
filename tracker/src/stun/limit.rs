//! Per-source rate limit of the STUN responder: a token bucket per source
//! IP in a bounded map. Pure: the caller passes the clock.
//!
//! A STUN reply is larger than the request, so an open responder is a
//! reflector for spoofed sources; the limit caps what any one address (or a
//! flood of forged ones, through the map's bound) can make it send.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Rate limit settings of the STUN responder. [`Default`]: 10 requests per
/// second and source, bursts of 40, 10,000 sources tracked.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StunLimits {
    /// Requests answered per second and source IP, sustained; 0 turns the
    /// limit off.
    pub per_second: u32,
    /// Requests a source may send at once after being quiet.
    pub burst: u32,
    /// Sources tracked at once; when full, sources idle long enough to have
    /// refilled their bucket are forgotten, and while none is, requests from
    /// new sources are dropped.
    pub max_sources: usize,
}

impl Default for StunLimits {
    fn default() -> Self {
        StunLimits::per_second(10)
    }
}

impl StunLimits {
    /// `rate` requests per second and source, bursts of 4 × `rate`, 10,000
    /// sources.
    pub fn per_second(rate: u32) -> Self {
        StunLimits {
            per_second: rate,
            burst: rate.saturating_mul(4).max(1),
            max_sources: 10_000,
        }
    }
}

/// The token buckets of every recent source.
#[derive(Debug)]
pub struct RateLimiter {
    limits: StunLimits,
    /// Source → (tokens left, last refill).
    buckets: HashMap<IpAddr, (f64, Instant)>,
    /// When the map was last swept for idle sources (at most once a second).
    last_sweep: Option<Instant>,
}

impl RateLimiter {
    /// Empty buckets under `limits`.
    pub fn new(limits: StunLimits) -> Self {
        RateLimiter {
            limits,
            buckets: HashMap::new(),
            last_sweep: None,
        }
    }

    /// Sources tracked now.
    pub fn sources(&self) -> usize {
        self.buckets.len()
    }

    /// Whether a request from `source` at `now` is answered (and takes a
    /// token).
    pub fn allow(&mut self, source: IpAddr, now: Instant) -> bool {
        let l = self.limits;
        if l.per_second == 0 {
            return true;
        }
        let (rate, burst) = (f64::from(l.per_second), f64::from(l.burst));
        if !self.buckets.contains_key(&source) && self.buckets.len() >= l.max_sources {
            let due = self
                .last_sweep
                .is_none_or(|t| now.saturating_duration_since(t) >= Duration::from_secs(1));
            if !due {
                return false;
            }
            self.last_sweep = Some(now);
            let refill = Duration::from_secs_f64(burst / rate);
            self.buckets
                .retain(|_, (_, last)| now.saturating_duration_since(*last) < refill);
            if self.buckets.len() >= l.max_sources {
                return false;
            }
        }
        let (tokens, last) = self.buckets.entry(source).or_insert((burst, now));
        let elapsed = now.saturating_duration_since(*last).as_secs_f64();
        *tokens = (*tokens + elapsed * rate).min(burst);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_source_gets_its_burst_then_its_rate() {
        let t0 = Instant::now();
        let mut r = RateLimiter::new(StunLimits {
            per_second: 2,
            burst: 3,
            max_sources: 10,
        });
        let a: IpAddr = [192, 0, 2, 1].into();
        assert_eq!((0..5).filter(|_| r.allow(a, t0)).count(), 3);
        assert!(!r.allow(a, t0 + Duration::from_millis(100)));
        assert!(r.allow(a, t0 + Duration::from_millis(600)), "one token after 0.5 s");
        assert!(r.allow([192, 0, 2, 2].into(), t0), "another source has its own bucket");
    }

    #[test]
    fn the_map_is_bounded_and_idle_sources_are_forgotten() {
        let t0 = Instant::now();
        let mut r = RateLimiter::new(StunLimits {
            per_second: 1,
            burst: 1,
            max_sources: 2,
        });
        assert!(r.allow([10, 0, 0, 1].into(), t0));
        assert!(r.allow([10, 0, 0, 2].into(), t0));
        assert!(!r.allow([10, 0, 0, 3].into(), t0), "full: a new source is dropped");
        assert_eq!(r.sources(), 2);
        assert!(
            r.allow([10, 0, 0, 3].into(), t0 + Duration::from_secs(2)),
            "idle ones were forgotten"
        );
        assert!(r.sources() <= 2);
    }
}
