//! Parsing one line of an Amazon S3 server access log (pure, no I/O).
//!
//! Format as documented by AWS ("Amazon S3 server access log format", S3 User
//! Guide): newline-delimited records of space-delimited fields, where `time`
//! is bracketed (`[06/Feb/2019:00:00:38 +0000]`) and `request_uri`, `referer`
//! and `user_agent` are double-quoted (and may contain spaces). Any field may
//! be `-` for "unknown or not applicable". The leading fields are:
//!
//! | # | field | used |
//! |---|-------|------|
//! | 0 | bucket_owner | |
//! | 1 | bucket | |
//! | 2 | time | hour bucket (UTC) |
//! | 3 | remote_ip | |
//! | 4 | requester | |
//! | 5 | request_id | |
//! | 6 | operation | only `REST.GET.OBJECT` is counted |
//! | 7 | key | object (URL-encoded, as logged) |
//! | 8 | request_uri | |
//! | 9 | http_status | |
//! | 10 | error_code | |
//! | 11 | bytes_sent | egress, bytes; `-` means 0 |
//! | 12… | object_size, total_time, turn_around_time, referer, user_agent, version_id, host_id, … | |
//!
//! AWS may append fields at the end of a record, so only the first 12 fields
//! are required and anything after `bytes_sent` is not inspected. All HTTP
//! statuses count: a `206 Partial Content` range response (how BitTorrent web
//! seeds fetch pieces) or an error body is egress too.

use crate::calendar::{days_from_civil, days_in_month, HourUtc};
use crate::log_line::{parse_bytes, EgressEvent, LineOutcome};

/// The only operation whose `bytes_sent` counts as object egress.
pub const GET_OBJECT: &str = "REST.GET.OBJECT";

/// Number of leading fields a record needs (through `bytes_sent`).
pub const REQUIRED_FIELDS: usize = 12;

/// Index of `operation` in a record.
const OPERATION: usize = 6;

/// Splits the next field off `rest`: `[bracketed]`, `"quoted"` (a backslash
/// escapes the next character) or bare up to the next space. Returns
/// `Ok(None)` at the end of the line.
fn next_field<'a>(rest: &mut &'a str) -> Result<Option<&'a str>, String> {
    let s = rest.trim_start_matches(' ');
    let bytes = s.as_bytes();
    let (field, after) = match bytes.first() {
        None => {
            *rest = s;
            return Ok(None);
        }
        Some(b'[') => {
            let end = s.find(']').ok_or("unterminated [bracketed] field")?;
            (&s[1..end], &s[end + 1..])
        }
        Some(b'"') => {
            let mut i = 1;
            loop {
                match bytes.get(i) {
                    None => return Err("unterminated \"quoted\" field".into()),
                    Some(b'\\') => i += 2,
                    Some(b'"') => break,
                    Some(_) => i += 1,
                }
            }
            (&s[1..i], &s[i + 1..])
        }
        Some(_) => {
            let end = s.find(' ').unwrap_or(s.len());
            (&s[..end], &s[end..])
        }
    };
    if !(after.is_empty() || after.starts_with(' ')) {
        return Err(format!("no space after field `{field}`"));
    }
    *rest = after;
    Ok(Some(field))
}

fn two_digits(b: &[u8]) -> Option<u32> {
    match b {
        [t @ b'0'..=b'9', u @ b'0'..=b'9'] => Some(u32::from(t - b'0') * 10 + u32::from(u - b'0')),
        _ => None,
    }
}

/// Parses an S3 `time` field without its brackets, `dd/Mon/yyyy:HH:MM:SS ±hhmm`
/// (e.g. `06/Feb/2019:00:00:38 +0000`), into seconds since the Unix epoch (UTC).
pub fn parse_time(text: &str) -> Option<i64> {
    let b = text.as_bytes();
    if b.len() != 26 || b[2] != b'/' || b[6] != b'/' || b[11] != b':' || b[14] != b':' || b[17] != b':' || b[20] != b' '
    {
        return None;
    }
    let day = two_digits(&b[0..2])?;
    let month = match &b[3..6] {
        b"Jan" => 1,
        b"Feb" => 2,
        b"Mar" => 3,
        b"Apr" => 4,
        b"May" => 5,
        b"Jun" => 6,
        b"Jul" => 7,
        b"Aug" => 8,
        b"Sep" => 9,
        b"Oct" => 10,
        b"Nov" => 11,
        b"Dec" => 12,
        _ => return None,
    };
    let year = i64::from(two_digits(&b[7..9])? * 100 + two_digits(&b[9..11])?);
    let (hour, minute, second) = (
        two_digits(&b[12..14])?,
        two_digits(&b[15..17])?,
        two_digits(&b[18..20])?,
    );
    let sign = match b[21] {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    let (off_h, off_m) = (two_digits(&b[22..24])?, two_digits(&b[24..26])?);
    if day == 0 || day > days_in_month(year, month) || hour > 23 || minute > 59 || second > 60 || off_m > 59 {
        return None;
    }
    let local = days_from_civil(year, month, day) * 86_400 + i64::from(hour * 3600 + minute * 60 + second);
    Some(local - sign * i64::from(off_h * 3600 + off_m * 60))
}

/// Parses one S3 server access log line: a `REST.GET.OBJECT` record becomes an
/// [`EgressEvent`] (`key`, UTC hour of `time`, `bytes_sent` in bytes), other
/// operations and blank lines are [`LineOutcome::Ignored`], anything else is
/// [`LineOutcome::Malformed`] with the reason.
pub fn parse_line(line: &str) -> LineOutcome<'_> {
    match parse_record(line) {
        Ok(Some(event)) => LineOutcome::Event(event),
        Ok(None) => LineOutcome::Ignored,
        Err(message) => LineOutcome::Malformed(message),
    }
}

fn parse_record(line: &str) -> Result<Option<EgressEvent<'_>>, String> {
    if line.trim().is_empty() {
        return Ok(None);
    }
    let mut fields = [""; REQUIRED_FIELDS];
    let mut rest = line;
    for i in 0..REQUIRED_FIELDS {
        match next_field(&mut rest)? {
            Some(field) => fields[i] = field,
            None => {
                return Err(format!(
                    "expected at least {REQUIRED_FIELDS} space-separated fields (bucket_owner … bytes_sent), found {i}"
                ))
            }
        }
        if i == OPERATION && fields[OPERATION] != GET_OBJECT {
            return Ok(None);
        }
    }
    let [_, _, time, _, _, _, _, key, _, _, _, bytes_sent] = fields;
    let seconds =
        parse_time(time).ok_or_else(|| format!("time: expected [dd/Mon/yyyy:HH:MM:SS +hhmm], found [{time}]"))?;
    let bytes = parse_bytes(bytes_sent)
        .ok_or_else(|| format!("bytes_sent: expected a byte count or -, found `{bytes_sent}`"))?;
    Ok(Some(EgressEvent {
        key,
        hour: HourUtc::from_unix_seconds(seconds),
        bytes,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    const OWNER: &str = "79a59df900b949e55d96a1e698fbacedfd6e09d98eacf8f8d5218e7cd47ef2be";

    fn get(time: &str, key: &str, bytes: &str) -> String {
        format!(
            "{OWNER} ota-bucket [{time}] 192.0.2.3 - 3E57427F3EXAMPLE REST.GET.OBJECT {key} \"GET /ota-bucket/{key} HTTP/1.1\" 200 - {bytes} 1048576 70 10 \"-\" \"device-agent/0.1 (linux; \\\"quoted\\\")\" - hostid= SigV4 ECDHE-RSA-AES128-GCM-SHA256 AuthHeader ota-bucket.s3.eu-west-1.amazonaws.com TLSv1.2 - -"
        )
    }

    fn event(line: &str) -> EgressEvent<'_> {
        match parse_line(line) {
            LineOutcome::Event(e) => e,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn get_object_line() {
        let line = get("06/Feb/2019:00:00:38 +0000", "pkg/update-1.2.bin", "1048576");
        let e = event(&line);
        assert_eq!(
            (e.key, e.hour.to_string(), e.bytes),
            ("pkg/update-1.2.bin", "2019-02-06T00".into(), 1_048_576)
        );
        let line = get("31/Dec/2019:23:59:59 -0130", "k", "-");
        let e = event(&line);
        assert_eq!((e.hour.to_string(), e.bytes), ("2020-01-01T01".into(), 0));
        // Only the first 12 fields are needed.
        let e = event("o b [29/Feb/2024:13:00:00 +0000] ip r id REST.GET.OBJECT k \"GET /k HTTP/1.1\" 206 - 42");
        assert_eq!((e.hour.to_string(), e.bytes), ("2024-02-29T13".into(), 42));
    }

    #[test]
    fn other_operations_and_blank_lines_are_ignored() {
        let aws_example = format!("{OWNER} amzn-s3-demo-bucket1 [06/Feb/2019:00:00:38 +0000] 192.0.2.3 {OWNER} 3E57427F3EXAMPLE REST.GET.VERSIONING - \"GET /amzn-s3-demo-bucket1?versioning HTTP/1.1\" 200 - 113 - 7 - \"-\" \"S3Console/0.4\" -");
        assert_eq!(parse_line(&aws_example), LineOutcome::Ignored);
        assert_eq!(parse_line("o b [x] ip r id REST.PUT.OBJECT"), LineOutcome::Ignored);
        assert_eq!(parse_line(""), LineOutcome::Ignored);
        assert_eq!(parse_line("   "), LineOutcome::Ignored);
    }

    #[test]
    fn malformed_lines_say_why() {
        let msg = |line: &str| match parse_line(line) {
            LineOutcome::Malformed(m) => m,
            other => panic!("{other:?}"),
        };
        assert!(
            msg("garbage").starts_with("expected at least 12 space-separated fields"),
            "{}",
            msg("garbage")
        );
        assert!(msg("o b [06/Feb/2019:00:00:38 +0000").starts_with("unterminated [bracketed]"));
        assert!(msg("o b [t] ip r id REST.GET.OBJECT k \"GET /k").starts_with("unterminated \"quoted\""));
        assert!(msg("o b [t]x ip").starts_with("no space after field `t`"));
        let bad_time = get("06/Feb/2019:24:00:38 +0000", "k", "1");
        assert_eq!(
            msg(&bad_time),
            "time: expected [dd/Mon/yyyy:HH:MM:SS +hhmm], found [06/Feb/2019:24:00:38 +0000]"
        );
        assert!(msg(&get("30/Feb/2019:00:00:38 +0000", "k", "1")).starts_with("time:"));
        assert!(msg(&get("06/Fev/2019:00:00:38 +0000", "k", "1")).starts_with("time:"));
        assert_eq!(
            msg(&get("06/Feb/2019:00:00:38 +0000", "k", "12x")),
            "bytes_sent: expected a byte count or -, found `12x`"
        );
        assert!(msg(&get("06/Feb/2019:00:00:38 +0000", "k", "-5")).starts_with("bytes_sent:"));
    }

    #[test]
    fn time_and_bytes_fields() {
        assert_eq!(parse_time("01/Jan/1970:00:00:00 +0000"), Some(0));
        assert_eq!(parse_time("01/Jan/1970:01:00:00 +0100"), Some(0));
        assert_eq!(parse_time("31/Dec/1969:23:00:00 -0100"), Some(0));
        assert_eq!(parse_time("06/Feb/2019:00:00:38 +0000"), Some(1_549_411_238));
        assert_eq!(parse_time("6/Feb/2019:00:00:38 +0000"), None);
        assert_eq!(parse_bytes("-"), Some(0));
        assert_eq!(parse_bytes("18446744073709551615"), Some(u64::MAX));
        assert_eq!(parse_bytes("18446744073709551616"), None);
        assert_eq!(parse_bytes(""), None);
        assert_eq!(parse_bytes("+1"), None);
    }
}
