//! What one access-log line amounts to, shared by every line parser
//! ([`crate::s3_log`], [`crate::cloudfront_log`], [`crate::origin_ledger`])
//! and the tally in [`crate::egress`]. Pure types, no parsing state.

use crate::calendar::HourUtc;

/// One request's egress, borrowed from the log line it was parsed from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EgressEvent<'a> {
    /// Object served: S3 `key` (URL-encoded, as logged) or CloudFront `cs-uri-stem`.
    pub key: &'a str,
    /// UTC hour of the request (S3 `time`; CloudFront `date` + `time`).
    pub hour: HourUtc,
    /// Response bytes sent: S3 `bytes_sent` or CloudFront `sc-bytes`, bytes (`-` = 0).
    pub bytes: u64,
}

/// What one log line amounts to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LineOutcome<'a> {
    /// A counted request.
    Event(EgressEvent<'a>),
    /// A line that is valid but not counted: blank, a `#` directive, or
    /// another S3 operation than `REST.GET.OBJECT`.
    Ignored,
    /// A line that cannot be parsed, with the reason.
    Malformed(String),
}

/// Parses a byte-count field: `-` is 0 bytes (AWS: "`-` if zero").
pub fn parse_bytes(field: &str) -> Option<u64> {
    if field == "-" {
        Some(0)
    } else if !field.is_empty() && field.bytes().all(|c| c.is_ascii_digit()) {
        field.parse().ok()
    } else {
        None
    }
}
