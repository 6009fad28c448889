//! Parsing Amazon CloudFront standard access logs one line at a time (pure, no I/O).
//!
//! Format as documented by AWS ("Standard logging (access logs)", CloudFront
//! Developer Guide, log file format): tab-separated records in UTC, preceded
//! by two directive lines,
//!
//! ```text
//! #Version: 1.0
//! #Fields: date time x-edge-location sc-bytes c-ip cs-method cs(Host) cs-uri-stem sc-status cs(Referer) …
//! ```
//!
//! The `#Fields:` line names the columns, so this parser looks up `date`
//! (`YYYY-MM-DD`), `time` (`HH:MM:SS`, UTC), `sc-bytes` (bytes CloudFront
//! served to the viewer, headers included; `-` means 0) and `cs-uri-stem`
//! (the object path) by name. Until a `#Fields:` line is seen the documented
//! default order is assumed (`date`=0, `time`=1, `sc-bytes`=3, `cs-uri-stem`=7).

use crate::calendar::{days_in_month, HourUtc};
use crate::log_line::{parse_bytes, EgressEvent, LineOutcome};

/// Column positions of the fields used, from a `#Fields:` directive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CloudFrontColumns {
    /// Index of `date` (`YYYY-MM-DD`, UTC).
    pub date: usize,
    /// Index of `time` (`HH:MM:SS`, UTC).
    pub time: usize,
    /// Index of `sc-bytes` (bytes sent to the viewer).
    pub sc_bytes: usize,
    /// Index of `cs-uri-stem` (object path).
    pub uri_stem: usize,
}

impl Default for CloudFrontColumns {
    /// The documented standard-log column order: `date time x-edge-location sc-bytes c-ip cs-method cs(Host) cs-uri-stem …`.
    fn default() -> Self {
        CloudFrontColumns {
            date: 0,
            time: 1,
            sc_bytes: 3,
            uri_stem: 7,
        }
    }
}

impl CloudFrontColumns {
    /// Reads the column positions from a `#Fields: name name …` directive
    /// (names separated by spaces or tabs). Fails naming the missing field(s).
    pub fn from_fields_directive(line: &str) -> Result<Self, String> {
        let names = line.strip_prefix("#Fields:").ok_or("not a #Fields: line")?;
        let names: Vec<&str> = names.split_whitespace().collect();
        let find = |name: &str| names.iter().position(|n| *n == name);
        match (find("date"), find("time"), find("sc-bytes"), find("cs-uri-stem")) {
            (Some(date), Some(time), Some(sc_bytes), Some(uri_stem)) => Ok(CloudFrontColumns {
                date,
                time,
                sc_bytes,
                uri_stem,
            }),
            _ => {
                let missing: Vec<&str> = ["date", "time", "sc-bytes", "cs-uri-stem"]
                    .into_iter()
                    .filter(|n| find(n).is_none())
                    .collect();
                Err(format!("#Fields: directive lacks {}", missing.join(", ")))
            }
        }
    }

    fn max_index(&self) -> usize {
        self.date.max(self.time).max(self.sc_bytes).max(self.uri_stem)
    }
}

/// Line-by-line CloudFront log parser; its only state is the current column
/// layout (the last `#Fields:` directive).
#[derive(Clone, Debug)]
pub struct CloudFrontParser {
    /// Current layout, or why the last `#Fields:` directive was unusable
    /// (with its line number).
    columns: Result<CloudFrontColumns, (u64, String)>,
}

impl Default for CloudFrontParser {
    fn default() -> Self {
        Self::new()
    }
}

fn parse_date(text: &str) -> Option<(i64, u32, u32)> {
    let b = text.as_bytes();
    let digits = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_digit);
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' || !digits(0..4) || !digits(5..7) || !digits(8..10) {
        return None;
    }
    let year: i64 = text[..4].parse().ok()?;
    let month: u32 = text[5..7].parse().ok()?;
    let day: u32 = text[8..10].parse().ok()?;
    if !(1..=12).contains(&month) || day == 0 || day > days_in_month(year, month) {
        return None;
    }
    Some((year, month, day))
}

fn parse_hour(text: &str) -> Option<u32> {
    let b = text.as_bytes();
    let digits = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_digit);
    if b.len() != 8 || b[2] != b':' || b[5] != b':' || !digits(0..2) || !digits(3..5) || !digits(6..8) {
        return None;
    }
    let hour: u32 = text[..2].parse().ok()?;
    let (minute, second): (u32, u32) = (text[3..5].parse().ok()?, text[6..8].parse().ok()?);
    (hour < 24 && minute < 60 && second <= 60).then_some(hour)
}

impl CloudFrontParser {
    /// A parser expecting the documented default column order until a
    /// `#Fields:` directive says otherwise.
    pub fn new() -> Self {
        CloudFrontParser {
            columns: Ok(CloudFrontColumns::default()),
        }
    }

    /// The current column layout, if usable.
    pub fn columns(&self) -> Option<CloudFrontColumns> {
        self.columns.as_ref().ok().copied()
    }

    /// Parses line `line_no` (1-based, used to point at a bad `#Fields:`
    /// directive): a data record becomes an [`EgressEvent`] (`cs-uri-stem`,
    /// UTC hour, `sc-bytes` in bytes); blank lines and `#` directives are
    /// [`LineOutcome::Ignored`] (a `#Fields:` directive also sets the layout);
    /// anything else is [`LineOutcome::Malformed`].
    pub fn parse_line<'a>(&mut self, line_no: u64, line: &'a str) -> LineOutcome<'a> {
        if line.trim().is_empty() {
            return LineOutcome::Ignored;
        }
        if line.starts_with('#') {
            if line.starts_with("#Fields:") {
                match CloudFrontColumns::from_fields_directive(line) {
                    Ok(columns) => self.columns = Ok(columns),
                    Err(message) => {
                        self.columns = Err((line_no, message.clone()));
                        return LineOutcome::Malformed(message);
                    }
                }
            }
            return LineOutcome::Ignored;
        }
        let columns = match &self.columns {
            Ok(columns) => *columns,
            Err((at, _)) => {
                return LineOutcome::Malformed(format!("no usable #Fields: directive (the one on line {at} is not)"))
            }
        };
        match parse_record(&columns, line) {
            Ok(event) => LineOutcome::Event(event),
            Err(message) => LineOutcome::Malformed(message),
        }
    }
}

fn parse_record<'a>(columns: &CloudFrontColumns, line: &'a str) -> Result<EgressEvent<'a>, String> {
    let last = columns.max_index();
    let (mut date, mut time, mut sc_bytes, mut uri_stem) = ("", "", "", "");
    let mut count = 0;
    for (i, field) in line.split('\t').enumerate().take(last + 1) {
        count = i + 1;
        if i == columns.date {
            date = field;
        }
        if i == columns.time {
            time = field;
        }
        if i == columns.sc_bytes {
            sc_bytes = field;
        }
        if i == columns.uri_stem {
            uri_stem = field;
        }
    }
    if count <= last {
        return Err(format!(
            "expected at least {} tab-separated fields, found {count}",
            last + 1
        ));
    }
    let (year, month, day) = parse_date(date).ok_or_else(|| format!("date: expected YYYY-MM-DD, found `{date}`"))?;
    let hour = parse_hour(time).ok_or_else(|| format!("time: expected HH:MM:SS, found `{time}`"))?;
    let bytes =
        parse_bytes(sc_bytes).ok_or_else(|| format!("sc-bytes: expected a byte count or -, found `{sc_bytes}`"))?;
    Ok(EgressEvent {
        key: uri_stem,
        hour: HourUtc::from_civil(year, month, day, hour),
        bytes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIELDS: &str = "#Fields: date time x-edge-location sc-bytes c-ip cs-method cs(Host) cs-uri-stem sc-status cs(Referer) cs(User-Agent) cs-uri-query";

    fn row(date: &str, time: &str, bytes: &str, stem: &str) -> String {
        [
            date,
            time,
            "FRA56-C1",
            bytes,
            "192.0.2.10",
            "GET",
            "d111111abcdef8.cloudfront.net",
            stem,
            "200",
            "-",
            "device-agent/0.1",
            "-",
        ]
        .join("\t")
    }

    #[test]
    fn header_and_records() {
        let mut p = CloudFrontParser::new();
        assert_eq!(p.parse_line(1, "#Version: 1.0"), LineOutcome::Ignored);
        assert_eq!(p.parse_line(2, FIELDS), LineOutcome::Ignored);
        let line = row("2019-12-04", "21:02:31", "4096", "/pkg/update.bin");
        let LineOutcome::Event(e) = p.parse_line(3, &line) else {
            panic!()
        };
        assert_eq!(
            (e.key, e.hour.to_string(), e.bytes),
            ("/pkg/update.bin", "2019-12-04T21".into(), 4096)
        );
        let line = row("2019-12-04", "21:02:31", "-", "/x");
        assert!(matches!(
            p.parse_line(4, &line),
            LineOutcome::Event(EgressEvent { bytes: 0, .. })
        ));
        assert_eq!(p.parse_line(5, ""), LineOutcome::Ignored);
    }

    #[test]
    fn columns_come_from_the_fields_directive() {
        let mut p = CloudFrontParser::new();
        p.parse_line(1, "#Fields: cs-uri-stem sc-bytes time date");
        assert_eq!(
            p.columns(),
            Some(CloudFrontColumns {
                date: 3,
                time: 2,
                sc_bytes: 1,
                uri_stem: 0
            })
        );
        let LineOutcome::Event(e) = p.parse_line(2, "/a\t10\t00:59:59\t2024-02-29") else {
            panic!()
        };
        assert_eq!((e.key, e.hour.to_string(), e.bytes), ("/a", "2024-02-29T00".into(), 10));
        assert_eq!(
            p.parse_line(3, "#Fields: date time cs-uri-stem"),
            LineOutcome::Malformed("#Fields: directive lacks sc-bytes".into())
        );
        assert_eq!(
            p.parse_line(4, "/a\t10\t00:59:59\t2024-02-29"),
            LineOutcome::Malformed("no usable #Fields: directive (the one on line 3 is not)".into())
        );
    }

    #[test]
    fn malformed_records() {
        let mut p = CloudFrontParser::new();
        let msg = |p: &mut CloudFrontParser, line: &str| match p.parse_line(9, line) {
            LineOutcome::Malformed(m) => m,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            msg(&mut p, "2019-12-04\t21:02:31\tFRA"),
            "expected at least 8 tab-separated fields, found 3"
        );
        assert_eq!(
            msg(&mut p, &row("2019-02-30", "21:02:31", "1", "/x")),
            "date: expected YYYY-MM-DD, found `2019-02-30`"
        );
        assert_eq!(
            msg(&mut p, &row("2019-12-04", "24:00:00", "1", "/x")),
            "time: expected HH:MM:SS, found `24:00:00`"
        );
        assert_eq!(
            msg(&mut p, &row("2019-12-04", "21:02:31", "lots", "/x")),
            "sc-bytes: expected a byte count or -, found `lots`"
        );
    }
}
