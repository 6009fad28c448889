//! CDN/origin egress from real access logs: bytes per object and per UTC hour.
//!
//! The per-line parsers live in [`crate::s3_log`] (Amazon S3 server access
//! logs), [`crate::cloudfront_log`] (Amazon CloudFront standard access
//! logs) and [`crate::origin_ledger`]; each turns one line into a
//! [`LineOutcome`] ([`crate::log_line`]) without I/O, and none of them
//! depends on this module. An
//! [`EgressTally`] adds the outcomes up (pure), and [`scan_log`] streams a
//! whole log through a [`BufRead`] line by line, so memory stays flat whatever
//! the size of the log: it holds one line (at most [`MAX_LINE_BYTES`] bytes)
//! plus one counter per distinct object and per distinct hour.
//!
//! These byte counts are the measured counterpart of the 2017 Sony Mobile
//! study's `D_cs`/`D_p2p`: the bytes the origin or CDN really served.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::io::{self, BufRead, Read};

use serde::{Deserialize, Serialize};

pub use crate::calendar::HourUtc;
pub use crate::log_line::{EgressEvent, LineOutcome};

/// Longest line accepted, bytes (64 KiB). Longer lines are reported as
/// malformed and skipped without being held in memory. Real S3 and CloudFront
/// log lines are a few KiB at most (keys are limited to 1 024 bytes).
pub const MAX_LINE_BYTES: usize = 64 * 1024;

/// How many malformed lines are kept, with their line numbers, as examples.
pub const MAX_MALFORMED_EXAMPLES: usize = 5;

/// Which access log format a source is in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LogFormat {
    /// Amazon S3 server access log (space-separated; `bytes_sent` of `REST.GET.OBJECT`).
    S3,
    /// Amazon CloudFront standard access log (tab-separated; `sc-bytes` per `cs-uri-stem`).
    Cloudfront,
    /// The origin seeder's egress ledger export (CSV; bytes per release info hash).
    OriginLedger,
}

/// A malformed line kept as an example.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MalformedLine {
    /// Where it came from (file path, or `<stdin>`).
    pub source: String,
    /// 1-based line number in that source.
    pub line: u64,
    /// Why it was rejected.
    pub message: String,
}

impl fmt::Display for MalformedLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: line {}: {}", self.source, self.line, self.message)
    }
}

/// Requests and bytes of one group.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counter {
    /// Number of requests counted.
    pub requests: u64,
    /// Bytes sent, bytes (saturating at `u64::MAX`).
    pub bytes: u64,
}

impl Counter {
    fn add(&mut self, bytes: u64) {
        self.requests += 1;
        self.bytes = self.bytes.saturating_add(bytes);
    }
}

/// Running totals of an egress scan (pure; feed it [`LineOutcome`]s).
///
/// Memory: one entry per distinct object key and per distinct hour, plus at
/// most [`MAX_MALFORMED_EXAMPLES`] malformed-line examples.
#[derive(Clone, Debug, Default)]
pub struct EgressTally {
    objects: HashMap<String, Counter>,
    hours: BTreeMap<HourUtc, Counter>,
    total: Counter,
    lines: u64,
    ignored: u64,
    malformed: u64,
    examples: Vec<MalformedLine>,
}

impl EgressTally {
    /// An empty tally.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one line's outcome; `source` and `line` (1-based) only name a
    /// malformed line in the examples.
    pub fn record(&mut self, source: &str, line: u64, outcome: LineOutcome<'_>) {
        self.lines += 1;
        match outcome {
            LineOutcome::Event(event) => self.add(&event),
            LineOutcome::Ignored => self.ignored += 1,
            LineOutcome::Malformed(message) => {
                self.malformed += 1;
                if self.examples.len() < MAX_MALFORMED_EXAMPLES {
                    self.examples.push(MalformedLine {
                        source: source.to_owned(),
                        line,
                        message,
                    });
                }
            }
        }
    }

    fn add(&mut self, event: &EgressEvent<'_>) {
        match self.objects.get_mut(event.key) {
            Some(counter) => counter.add(event.bytes),
            None => self.objects.entry(event.key.to_owned()).or_default().add(event.bytes),
        }
        self.hours.entry(event.hour).or_default().add(event.bytes);
        self.total.add(event.bytes);
    }

    /// The report so far: objects by decreasing bytes (then key), hours in
    /// chronological order.
    pub fn report(&self, format: LogFormat) -> EgressReport {
        let mut objects: Vec<ObjectEgress> = self
            .objects
            .iter()
            .map(|(key, c)| ObjectEgress {
                key: key.clone(),
                requests: c.requests,
                bytes: c.bytes,
            })
            .collect();
        objects.sort_by(|a, b| b.bytes.cmp(&a.bytes).then_with(|| a.key.cmp(&b.key)));
        EgressReport {
            format,
            total_bytes: self.total.bytes,
            total_requests: self.total.requests,
            total_usd: None,
            lines: self.lines,
            ignored_lines: self.ignored,
            malformed_lines: self.malformed,
            malformed_examples: self.examples.clone(),
            objects,
            hours: self
                .hours
                .iter()
                .map(|(hour, c)| HourEgress {
                    hour: *hour,
                    requests: c.requests,
                    bytes: c.bytes,
                })
                .collect(),
        }
    }
}

/// Egress of one object.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ObjectEgress {
    /// S3 `key` (URL-encoded as logged) or CloudFront `cs-uri-stem`.
    pub key: String,
    /// Requests counted.
    pub requests: u64,
    /// Bytes sent, bytes.
    pub bytes: u64,
}

/// Egress of one UTC hour.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct HourEgress {
    /// The hour, `YYYY-MM-DDTHH` (UTC).
    pub hour: HourUtc,
    /// Requests counted.
    pub requests: u64,
    /// Bytes sent, bytes.
    pub bytes: u64,
}

/// Result of an egress scan. Field order is the JSON key order.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct EgressReport {
    /// Log format scanned (`s3` or `cloudfront`).
    pub format: LogFormat,
    /// Bytes sent over all counted requests, bytes.
    pub total_bytes: u64,
    /// Requests counted.
    pub total_requests: u64,
    /// Tiered cost of `total_bytes` as one month's traffic, USD (only with a price table).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total_usd: Option<f64>,
    /// Lines read, including blank, ignored and malformed ones.
    pub lines: u64,
    /// Lines not counted: blank, `#` directives, other S3 operations.
    pub ignored_lines: u64,
    /// Lines that could not be parsed (skipped, not fatal).
    pub malformed_lines: u64,
    /// The first [`MAX_MALFORMED_EXAMPLES`] malformed lines.
    pub malformed_examples: Vec<MalformedLine>,
    /// Egress per object, by decreasing bytes.
    pub objects: Vec<ObjectEgress>,
    /// Egress per UTC hour, chronological.
    pub hours: Vec<HourEgress>,
}

/// One physical line handed out by [`for_each_line`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RawLine<'a> {
    /// The line without its `\n` / `\r\n` ending (invalid UTF-8 replaced by U+FFFD).
    Text(&'a str),
    /// The line was longer than [`MAX_LINE_BYTES`] and was skipped.
    TooLong,
}

/// Streams `reader` line by line, calling `f(line_number, line)` with 1-based
/// line numbers. Holds at most [`MAX_LINE_BYTES`] + 1 bytes of line at a time.
pub fn for_each_line<R: BufRead>(mut reader: R, mut f: impl FnMut(u64, RawLine<'_>)) -> io::Result<()> {
    let limit = MAX_LINE_BYTES as u64 + 1;
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    let mut line_no = 0u64;
    loop {
        buf.clear();
        let n = (&mut reader).take(limit).read_until(b'\n', &mut buf)?;
        if n == 0 {
            return Ok(());
        }
        line_no += 1;
        if buf.last() == Some(&b'\n') {
            buf.pop();
        } else if n as u64 == limit {
            // Too long: drop the rest of the line without keeping it.
            loop {
                buf.clear();
                let m = (&mut reader).take(limit).read_until(b'\n', &mut buf)?;
                if m == 0 || buf.last() == Some(&b'\n') {
                    break;
                }
            }
            if buf.capacity() > 2 * limit as usize {
                buf.shrink_to(4096);
            }
            f(line_no, RawLine::TooLong);
            continue;
        }
        if buf.last() == Some(&b'\r') {
            buf.pop();
        }
        let text = String::from_utf8_lossy(&buf);
        f(line_no, RawLine::Text(&text));
    }
}

/// Streams a whole log of `format` from `reader` into `tally`; `source` names
/// it in malformed-line examples. Malformed lines are counted, not fatal; only
/// read errors are.
pub fn scan_log<R: BufRead>(format: LogFormat, reader: R, source: &str, tally: &mut EgressTally) -> io::Result<()> {
    let too_long = || LineOutcome::Malformed(format!("line longer than {MAX_LINE_BYTES} bytes, skipped"));
    match format {
        LogFormat::S3 => for_each_line(reader, |n, line| {
            let outcome = match line {
                RawLine::Text(text) => crate::s3_log::parse_line(text),
                RawLine::TooLong => too_long(),
            };
            tally.record(source, n, outcome);
        }),
        LogFormat::OriginLedger => for_each_line(reader, |n, line| {
            let outcome = match line {
                RawLine::Text(text) => crate::origin_ledger::parse_line(text),
                RawLine::TooLong => too_long(),
            };
            tally.record(source, n, outcome);
        }),
        LogFormat::Cloudfront => {
            let mut parser = crate::cloudfront_log::CloudFrontParser::new();
            for_each_line(reader, |n, line| {
                let outcome = match line {
                    RawLine::Text(text) => parser.parse_line(n, text),
                    RawLine::TooLong => too_long(),
                };
                tally.record(source, n, outcome);
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tally_groups_and_caps_examples() {
        let mut t = EgressTally::new();
        let h = HourUtc::from_civil(2020, 1, 1, 5);
        t.record(
            "f",
            1,
            LineOutcome::Event(EgressEvent {
                key: "a",
                hour: h,
                bytes: 10,
            }),
        );
        t.record(
            "f",
            2,
            LineOutcome::Event(EgressEvent {
                key: "b",
                hour: h,
                bytes: 30,
            }),
        );
        t.record(
            "f",
            3,
            LineOutcome::Event(EgressEvent {
                key: "a",
                hour: HourUtc(h.0 - 1),
                bytes: 25,
            }),
        );
        t.record("f", 4, LineOutcome::Ignored);
        for i in 0..7 {
            t.record("f", 5 + i, LineOutcome::Malformed(format!("bad {i}")));
        }
        let r = t.report(LogFormat::S3);
        assert_eq!(
            (
                r.total_bytes,
                r.total_requests,
                r.lines,
                r.ignored_lines,
                r.malformed_lines
            ),
            (65, 3, 11, 1, 7)
        );
        assert_eq!(
            r.objects,
            [
                ObjectEgress {
                    key: "a".into(),
                    requests: 2,
                    bytes: 35
                },
                ObjectEgress {
                    key: "b".into(),
                    requests: 1,
                    bytes: 30
                },
            ]
        );
        assert_eq!(
            r.hours
                .iter()
                .map(|h| (h.hour.to_string(), h.bytes))
                .collect::<Vec<_>>(),
            [("2020-01-01T04".to_string(), 25), ("2020-01-01T05".to_string(), 40),]
        );
        assert_eq!(r.malformed_examples.len(), MAX_MALFORMED_EXAMPLES);
        assert_eq!(r.malformed_examples[0].to_string(), "f: line 5: bad 0");
    }

    #[test]
    fn lines_crlf_last_line_and_overlong_lines() {
        let long = "x".repeat(MAX_LINE_BYTES + 10);
        let exact = "y".repeat(MAX_LINE_BYTES);
        let input = format!("a\r\n\n{long}\nb\n{exact}\nlast");
        let mut seen = Vec::new();
        for_each_line(input.as_bytes(), |n, l| {
            seen.push((
                n,
                match l {
                    RawLine::Text(t) if t.len() > 10 => format!("<{}>", t.len()),
                    RawLine::Text(t) => t.to_owned(),
                    RawLine::TooLong => "TOO LONG".into(),
                },
            ))
        })
        .unwrap();
        let expected = [
            (1, "a".to_string()),
            (2, "".into()),
            (3, "TOO LONG".into()),
            (4, "b".into()),
            (5, format!("<{MAX_LINE_BYTES}>")),
            (6, "last".into()),
        ];
        assert_eq!(seen, expected);
        let mut count = 0;
        for_each_line(&b""[..], |_, _| count += 1).unwrap();
        assert_eq!(count, 0);
    }
}
