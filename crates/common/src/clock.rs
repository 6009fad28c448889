//! A clock that pure logic takes as a parameter, so that timing rules (peer
//! timeouts, announce intervals, fallback delays) are tested without
//! sleeping (as torrust-tracker's mockable clock).

use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Monotonic and wall-clock time.
pub trait Clock: Send + Sync {
    /// Monotonic time, for intervals and timeouts.
    fn now(&self) -> Instant;
    /// Wall-clock milliseconds since the Unix epoch (0 before 1970), for
    /// what is stored or shown.
    fn wall_ms(&self) -> i64;
}

/// The operating system's clocks.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }
    fn wall_ms(&self) -> i64 {
        wall_ms()
    }
}

/// Wall-clock milliseconds since the Unix epoch (0 before 1970).
pub fn wall_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Wall-clock seconds since the Unix epoch (0 before 1970).
pub fn wall_secs() -> i64 {
    wall_ms() / 1000
}

/// A clock that moves only when told to, for tests.
#[derive(Debug)]
pub struct ManualClock {
    start: Instant,
    offset: Mutex<Duration>,
    wall_start_ms: i64,
}

impl ManualClock {
    /// A clock at the current instant and the given wall-clock time (ms since the epoch).
    pub fn new(wall_start_ms: i64) -> Self {
        ManualClock {
            start: Instant::now(),
            offset: Mutex::new(Duration::ZERO),
            wall_start_ms,
        }
    }

    /// Moves the clock forward by `d`.
    pub fn advance(&self, d: Duration) {
        *self.offset.lock().unwrap_or_else(|e| e.into_inner()) += d;
    }

    fn offset(&self) -> Duration {
        *self.offset.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Instant {
        self.start + self.offset()
    }
    fn wall_ms(&self) -> i64 {
        self.wall_start_ms + self.offset().as_millis() as i64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_moves_only_when_advanced() {
        let c = ManualClock::new(1_000);
        let t0 = c.now();
        assert_eq!(c.now(), t0);
        c.advance(Duration::from_millis(1500));
        assert_eq!(c.now() - t0, Duration::from_millis(1500));
        assert_eq!(c.wall_ms(), 2_500);
        assert!(SystemClock.wall_ms() > 1_700_000_000_000);
    }
}
