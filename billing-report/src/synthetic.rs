//! Synthetic Amazon S3 server access logs of any size, for the memory test and
//! the throughput benchmark (`benches/access_log.rs`).
//!
//! Lines follow the documented S3 server access log layout (see
//! [`crate::s3_log`]). Line `i` (0-based) is, deterministically:
//! a `REST.HEAD.OBJECT` request (ignored by the egress scan) when
//! `i % 1000 == 999`; a malformed, truncated record when `i % 50_000 == 49_999`;
//! otherwise a `REST.GET.OBJECT` of one of [`DISTINCT_KEYS`] package keys,
//! sending `(i × 7919) mod 1 048 577` bytes (`-` when that is 0), one second
//! after the previous line from 2026-01-01T00:00:00Z.

use std::fmt::Write as _;
use std::io::{self, Write};

use crate::calendar::civil_from_days;

/// Number of distinct object keys in a synthetic log.
pub const DISTINCT_KEYS: u64 = 64;

/// Unix time of the first synthetic line: 2026-01-01T00:00:00Z, seconds.
pub const START_UNIX_SECONDS: i64 = 1_767_225_600;

/// What a synthetic line is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyntheticLine {
    /// A `REST.GET.OBJECT` record sending this many bytes.
    GetObject(u64),
    /// A valid record of another operation (`REST.HEAD.OBJECT`).
    Other,
    /// A truncated record.
    Malformed,
}

/// Expected totals of a synthetic log, to check a scan against.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SyntheticTotals {
    /// Size of the log, bytes.
    pub log_bytes: u64,
    /// Lines written.
    pub lines: u64,
    /// `REST.GET.OBJECT` records.
    pub get_objects: u64,
    /// Sum of their `bytes_sent`, bytes.
    pub egress_bytes: u64,
    /// Other-operation records.
    pub other: u64,
    /// Malformed lines.
    pub malformed: u64,
}

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// Appends synthetic line `i` (with its `\n`) to `out` and says what it is (pure).
pub fn s3_line(i: u64, out: &mut String) -> SyntheticLine {
    let seconds = START_UNIX_SECONDS + i as i64;
    let (year, month, day) = civil_from_days(seconds.div_euclid(86_400));
    let second_of_day = seconds.rem_euclid(86_400);
    let (h, m, s) = (second_of_day / 3600, second_of_day / 60 % 60, second_of_day % 60);
    let key = format!(
        "ota/releases/2026.{:02}/device-model-{:02}/update-full.zip",
        i % 4,
        i % DISTINCT_KEYS
    );
    let kind = if i % 50_000 == 49_999 {
        SyntheticLine::Malformed
    } else if i % 1000 == 999 {
        SyntheticLine::Other
    } else {
        SyntheticLine::GetObject(i.wrapping_mul(7919) % 1_048_577)
    };
    let operation = if kind == SyntheticLine::Other {
        "REST.HEAD.OBJECT"
    } else {
        "REST.GET.OBJECT"
    };
    let _ = write!(
        out,
        "79a59df900b949e55d96a1e698fbacedfd6e09d98eacf8f8d5218e7cd47ef2be ota-updates [{day:02}/{}/{year}:{h:02}:{m:02}:{s:02} +0000] 198.51.100.{} - {:016X} {operation} {key}",
        MONTHS[month as usize - 1],
        i % 250 + 1,
        i.wrapping_mul(0x9E37_79B9_7F4A_7C15),
    );
    if kind == SyntheticLine::Malformed {
        out.push_str(" \"GET /ota-updates/trunc\n");
        return kind;
    }
    let bytes = match kind {
        SyntheticLine::GetObject(0) | SyntheticLine::Other => "-".to_string(),
        SyntheticLine::GetObject(b) => b.to_string(),
        SyntheticLine::Malformed => unreachable!(),
    };
    let _ = writeln!(
        out,
        " \"GET /ota-updates/{key} HTTP/1.1\" 206 - {bytes} 1073741824 {} {} \"-\" \"ota-device-agent/0.1 librqbit\" - Zm9vYmFyYmF6cXV4= SigV4 ECDHE-RSA-AES128-GCM-SHA256 AuthHeader ota-updates.s3.eu-west-1.amazonaws.com TLSv1.3 - -",
        i % 900 + 20,
        i % 40 + 1,
    );
    kind
}

/// Writes synthetic lines to `out` until at least `target_bytes` bytes are
/// written (whole lines only) and returns the expected totals.
pub fn write_s3_log<W: Write>(mut out: W, target_bytes: u64) -> io::Result<SyntheticTotals> {
    let mut totals = SyntheticTotals::default();
    let mut chunk = String::with_capacity(1 << 16);
    let mut i = 0u64;
    while totals.log_bytes < target_bytes {
        let before = chunk.len();
        match s3_line(i, &mut chunk) {
            SyntheticLine::GetObject(bytes) => {
                totals.get_objects += 1;
                totals.egress_bytes += bytes;
            }
            SyntheticLine::Other => totals.other += 1,
            SyntheticLine::Malformed => totals.malformed += 1,
        }
        totals.log_bytes += (chunk.len() - before) as u64;
        totals.lines += 1;
        i += 1;
        if chunk.len() >= (1 << 16) - 1024 {
            out.write_all(chunk.as_bytes())?;
            chunk.clear();
        }
    }
    out.write_all(chunk.as_bytes())?;
    out.flush()?;
    Ok(totals)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::egress::{scan_log, EgressTally, LogFormat};
    use crate::s3_log::parse_line;

    #[test]
    fn synthetic_lines_parse_as_announced() {
        let mut line = String::new();
        for i in [0u64, 1, 998, 999, 49_999, 86_399, 86_400] {
            line.clear();
            let kind = s3_line(i, &mut line);
            let outcome = parse_line(line.trim_end());
            match (kind, outcome) {
                (SyntheticLine::GetObject(b), crate::egress::LineOutcome::Event(e)) => {
                    assert_eq!(e.bytes, b);
                    assert!(e.key.starts_with("ota/releases/2026."));
                }
                (SyntheticLine::Other, crate::egress::LineOutcome::Ignored) => {}
                (SyntheticLine::Malformed, crate::egress::LineOutcome::Malformed(_)) => {}
                (k, o) => panic!("line {i}: {k:?} vs {o:?}: {line}"),
            }
        }
        line.clear();
        s3_line(86_400, &mut line);
        assert!(line.contains("[02/Jan/2026:00:00:00 +0000]"), "{line}");
    }

    #[test]
    fn small_log_totals_match_a_scan() {
        let mut log = Vec::new();
        let totals = write_s3_log(&mut log, 2_000_000).unwrap();
        assert_eq!(totals.log_bytes, log.len() as u64);
        let mut tally = EgressTally::new();
        scan_log(LogFormat::S3, &log[..], "synthetic", &mut tally).unwrap();
        let r = tally.report(LogFormat::S3);
        assert_eq!(
            (r.lines, r.total_requests, r.total_bytes),
            (totals.lines, totals.get_objects, totals.egress_bytes)
        );
        assert_eq!((r.ignored_lines, r.malformed_lines), (totals.other, totals.malformed));
        assert_eq!(r.objects.len() as u64, DISTINCT_KEYS);
        assert_eq!(r.hours[0].hour.to_string(), "2026-01-01T00");
    }
}
