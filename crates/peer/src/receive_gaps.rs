//! Gaps in received bytes: when bytes last arrived over the QUIC transport
//! and the silences between arrivals, so that a network switch
//! (connection migration, issue 16) can be judged by the longest pause the
//! device saw around it. Pure: callers pass the instants.
//!
//! Only silences longer than [`MIN_GAP`] are kept (at most [`MAX_GAPS`],
//! the oldest dropped first): a steady transfer records nothing.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Shorter silences are not recorded (a 40 ms round trip with a full
/// window has none this long).
pub const MIN_GAP: Duration = Duration::from_millis(5);
/// Silences kept.
pub const MAX_GAPS: usize = 1024;

/// The arrival record (see the module docs).
#[derive(Debug, Default, Clone)]
pub struct ReceiveGaps {
    last: Option<Instant>,
    /// (start, end) of each silence longer than [`MIN_GAP`], oldest first.
    gaps: VecDeque<(Instant, Instant)>,
}

impl ReceiveGaps {
    /// Bytes arrived at `now` (instants must not go backwards; an earlier
    /// one is taken as `now` of the last arrival).
    pub fn record(&mut self, now: Instant) {
        if let Some(last) = self.last {
            if now.saturating_duration_since(last) > MIN_GAP {
                self.gaps.push_back((last, now));
                while self.gaps.len() > MAX_GAPS {
                    self.gaps.pop_front();
                }
            }
        }
        self.last = Some(self.last.map_or(now, |l| l.max(now)));
    }

    /// When bytes last arrived, if ever.
    pub fn last_arrival(&self) -> Option<Instant> {
        self.last
    }

    /// The longest silence that overlaps `from..=to`, seen at `now`: a
    /// recorded one, or the one still going on (from the last arrival to
    /// `now`) when the last arrival is before `to`. `None` when nothing
    /// ever arrived or no silence overlaps. Each silence counts whole, also
    /// the part outside the window.
    pub fn longest_overlapping(&self, from: Instant, to: Instant, now: Instant) -> Option<Duration> {
        let ongoing = self
            .last
            .filter(|last| *last <= to && now > *last)
            .map(|last| (last, now));
        self.gaps
            .iter()
            .copied()
            .chain(ongoing)
            .filter(|(start, end)| *start <= to && *end >= from)
            .map(|(start, end)| end.saturating_duration_since(start))
            .max()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn the_silence_around_a_switch_is_found_and_short_ones_are_not_kept() {
        let t0 = Instant::now();
        let mut g = ReceiveGaps::default();
        assert_eq!(g.longest_overlapping(t0, t0 + ms(10), t0 + ms(10)), None);
        // A steady stream every 2 ms: nothing recorded.
        for i in 0..100 {
            g.record(t0 + ms(2 * i));
        }
        assert_eq!(g.gaps.len(), 0);
        // A switch at 300 ms inside a silence from 198 to 420 ms.
        g.record(t0 + ms(420));
        g.record(t0 + ms(422));
        // An unrelated 50 ms silence later.
        g.record(t0 + ms(1_000));
        let switch = t0 + ms(300);
        assert_eq!(
            g.longest_overlapping(switch - ms(50), switch + ms(50), t0 + ms(1_001)),
            Some(ms(222))
        );
        // A window covering both finds the longer.
        assert_eq!(g.longest_overlapping(t0, t0 + ms(2_000), t0 + ms(1_001)), Some(ms(578)));
        // A window with no silence in it.
        assert_eq!(g.longest_overlapping(t0 + ms(10), t0 + ms(20), t0 + ms(1_001)), None);
        // An ongoing silence counts up to now.
        assert_eq!(
            g.longest_overlapping(t0 + ms(1_100), t0 + ms(1_200), t0 + ms(1_500)),
            Some(ms(500))
        );
        assert_eq!(g.last_arrival(), Some(t0 + ms(1_000)));
    }

    #[test]
    fn the_record_is_bounded() {
        let t0 = Instant::now();
        let mut g = ReceiveGaps::default();
        for i in 0..(MAX_GAPS as u64 + 10) {
            g.record(t0 + ms(10 * i));
        }
        assert_eq!(g.gaps.len(), MAX_GAPS);
        // An instant from the past does not move the last arrival back.
        g.record(t0);
        assert_eq!(g.last_arrival(), Some(t0 + ms(10 * (MAX_GAPS as u64 + 9))));
    }
}
