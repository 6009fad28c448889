//! Wall-clock time, read in one place. Pure logic never reads a clock: it
//! takes `now` (a monotonic `Instant`, or these wall-clock values) as a
//! parameter, as quinn-proto does, so timing rules (peer timeouts, announce
//! intervals, fallback delays, re-add backoff) are tested without sleeping.

use std::time::{SystemTime, UNIX_EPOCH};

/// Wall-clock milliseconds since the Unix epoch (0 before 1970), for what
/// is stored or shown.
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

#[cfg(test)]
mod tests {
    #[test]
    fn wall_clock_is_after_2023_and_consistent() {
        let ms = super::wall_ms();
        assert!(ms > 1_700_000_000_000, "{ms}");
        assert!((super::wall_secs() - ms / 1000).abs() <= 1);
    }
}
