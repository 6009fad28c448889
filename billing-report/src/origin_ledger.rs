//! The origin seeder's egress ledger export (`ota-seeder ledger --format csv`,
//! or `GET /api/ledger?format=csv`) as an egress source: CSV with the header
//! `at_ms,info_hash,path,peer,device,bytes`, one row per sample of bytes the
//! origin sent over BitTorrent or HTTP. Per-line parsing is pure.

use crate::calendar::HourUtc;
use crate::log_line::{EgressEvent, LineOutcome};

/// The header line of a ledger export.
pub const LEDGER_HEADER: &str = "at_ms,info_hash,path,peer,device,bytes";

/// Parses one ledger line: the object is the release's info hash, the hour
/// comes from `at_ms` (milliseconds since the Unix epoch, UTC), the bytes
/// from the last field. The header and blank lines are ignored; a `device`
/// field may be quoted and contain commas (only the first four and the last
/// field are split off).
pub fn parse_line(line: &str) -> LineOutcome<'_> {
    let line = line.trim_end_matches('\r');
    if line.is_empty() || line == LEDGER_HEADER {
        return LineOutcome::Ignored;
    }
    let mut head = line.splitn(5, ',');
    let (Some(at), Some(info_hash), Some(path), Some(_peer), Some(rest)) =
        (head.next(), head.next(), head.next(), head.next(), head.next())
    else {
        return LineOutcome::Malformed("expected 6 fields: at_ms,info_hash,path,peer,device,bytes".into());
    };
    let Some((_device, bytes)) = rest.rsplit_once(',') else {
        return LineOutcome::Malformed("expected 6 fields: at_ms,info_hash,path,peer,device,bytes".into());
    };
    let Ok(at_ms) = at.parse::<i64>() else {
        return LineOutcome::Malformed(format!("at_ms: {at:?} is not a number of milliseconds"));
    };
    if path != "bittorrent" && path != "http" {
        return LineOutcome::Malformed(format!("path: {path:?} is neither bittorrent nor http"));
    }
    let Ok(bytes) = bytes.parse::<u64>() else {
        return LineOutcome::Malformed(format!("bytes: {bytes:?} is not a byte count"));
    };
    LineOutcome::Event(EgressEvent {
        key: info_hash,
        hour: HourUtc(at_ms.div_euclid(3_600_000)),
        bytes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rows_and_names_bad_ones() {
        assert_eq!(parse_line(LEDGER_HEADER), LineOutcome::Ignored);
        let row = "1763859600000,abcd,bittorrent,127.0.0.1:5000,,16384";
        match parse_line(row) {
            LineOutcome::Event(e) => {
                assert_eq!(e.key, "abcd");
                assert_eq!(e.bytes, 16384);
                assert_eq!(e.hour.to_string(), "2025-11-23T01");
            }
            other => panic!("{other:?}"),
        }
        match parse_line("5,ab,http,[::1]:80,\"dev,7\",10") {
            LineOutcome::Event(e) => assert_eq!(e.bytes, 10),
            other => panic!("{other:?}"),
        }
        assert!(matches!(parse_line("x,ab,http,p,,1"), LineOutcome::Malformed(m) if m.contains("at_ms")));
        assert!(matches!(parse_line("1,ab,ftp,p,,1"), LineOutcome::Malformed(m) if m.contains("path")));
        assert!(matches!(parse_line("1,ab,http,p,,-1"), LineOutcome::Malformed(m) if m.contains("bytes")));
        assert!(matches!(parse_line("1,ab"), LineOutcome::Malformed(_)));
    }
}
