//! Reading [`RunRecord`]s from CSV or JSON.
//!
//! Each record carries `D_cs` (`client_server_bytes`) and `D_p2p`
//! (`p2p_bytes`), both in bytes, as defined by the 2017 Sony Mobile study
//! "Peer-assisted OTA updates" (gain `G = D_cs − D_p2p`, saving `W = G / D_cs`).

use std::io::{BufRead, BufReader, Read};

use thiserror::Error;

use crate::savings::RunRecord;

/// The exact CSV header line expected by [`parse_csv`].
pub const CSV_HEADER: &str = "scenario,run,client_server_bytes,p2p_bytes";

/// Why run records could not be read. Line numbers are 1-based file lines.
#[derive(Debug, Error)]
pub enum RecordsError {
    /// The input holds nothing but whitespace.
    #[error("empty input: expected header `{CSV_HEADER}`")]
    EmptyCsv,
    /// The first line is not [`CSV_HEADER`].
    #[error("wrong header: expected `{CSV_HEADER}`, found `{found}`")]
    WrongHeader {
        /// The header line actually found.
        found: String,
    },
    /// A data row (or the underlying read of it) is malformed.
    #[error("line {line}: {message}")]
    Row {
        /// 1-based line number in the file.
        line: usize,
        /// What was wrong, e.g. `p2p_bytes: invalid digit found in string`.
        message: String,
    },
    /// The JSON input holds nothing but whitespace.
    #[error("empty input: expected a JSON array of run records")]
    EmptyJson,
    /// The JSON input is not an array of run records.
    #[error("invalid JSON run records: {0}")]
    Json(#[from] serde_json::Error),
    /// Reading the input failed.
    #[error("read error: {0}")]
    Io(#[from] std::io::Error),
}

/// Splits one CSV line into fields, honouring `"quoted, fields"` with `""`
/// escapes; unquoted fields are trimmed. Quoted fields cannot span lines.
fn split_fields(line: &str) -> Result<Vec<String>, String> {
    let mut fields = Vec::new();
    let mut chars = line.chars().peekable();
    loop {
        while chars.next_if(|c| *c == ' ' || *c == '\t').is_some() {}
        let mut field = String::new();
        if chars.next_if_eq(&'"').is_some() {
            loop {
                match chars.next() {
                    None => return Err("unterminated quoted field".into()),
                    Some('"') if chars.next_if_eq(&'"').is_some() => field.push('"'),
                    Some('"') => break,
                    Some(c) => field.push(c),
                }
            }
            while chars.next_if(|c| *c == ' ' || *c == '\t').is_some() {}
            if !matches!(chars.peek(), None | Some(',')) {
                return Err("unexpected text after quoted field".into());
            }
        } else {
            while let Some(c) = chars.next_if(|c| *c != ',') {
                field.push(c);
            }
            field.truncate(field.trim_end().len());
        }
        fields.push(field);
        if chars.next().is_none() {
            return Ok(fields);
        }
    }
}

fn parse_row(fields: &[String]) -> Result<RunRecord, String> {
    let [scenario, run, cs, p2p] = fields else {
        return Err(format!("expected 4 fields ({CSV_HEADER}), found {}", fields.len()));
    };
    let number = |name: &str, value: &str| {
        value
            .parse::<u64>()
            .map_err(|e| format!("{name}: {e} (value {value:?}, expected a byte count)"))
    };
    if scenario.is_empty() {
        return Err("scenario: empty".into());
    }
    Ok(RunRecord {
        scenario: scenario.clone(),
        run: run.clone(),
        client_server_bytes: number("client_server_bytes", cs)?,
        p2p_bytes: number("p2p_bytes", p2p)?,
    })
}

/// Parses CSV with the exact header [`CSV_HEADER`] (a UTF-8 BOM and CRLF line
/// endings are tolerated; blank lines are skipped).
///
/// Byte counts are non-negative integers (bytes). A header-only file yields an
/// empty vector. Errors name the 1-based line, e.g.
/// `line 3: p2p_bytes: invalid digit found in string (...)`.
pub fn parse_csv<R: Read>(reader: R) -> Result<Vec<RunRecord>, RecordsError> {
    let mut lines = BufReader::new(reader).lines().enumerate();
    let mut records = Vec::new();
    // The header is the first non-blank line; nothing but blank lines is "empty".
    let header = loop {
        let Some((i, line)) = lines.next() else {
            return Err(RecordsError::EmptyCsv);
        };
        let line = line.map_err(|e| RecordsError::Row {
            line: i + 1,
            message: e.to_string(),
        })?;
        let line = line.strip_prefix('\u{feff}').unwrap_or(&line).trim_end_matches('\r');
        if !line.trim().is_empty() {
            break line.to_owned();
        }
    };
    if header != CSV_HEADER {
        return Err(RecordsError::WrongHeader { found: header });
    }
    for (i, line) in lines {
        let row_err = |message: String| RecordsError::Row { line: i + 1, message };
        let line = line.map_err(|e| row_err(e.to_string()))?;
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() {
            continue;
        }
        let fields = split_fields(line).map_err(row_err)?;
        records.push(parse_row(&fields).map_err(row_err)?);
    }
    Ok(records)
}

/// Parses a JSON array of [`RunRecord`] objects (as written by the
/// flash-crowd experiment runner). Each object needs `scenario`, `run`,
/// `client_server_bytes` and `p2p_bytes` (bytes); extra fields are ignored.
pub fn parse_json<R: Read>(mut reader: R) -> Result<Vec<RunRecord>, RecordsError> {
    let mut text = String::new();
    reader.read_to_string(&mut text)?;
    if text.trim().is_empty() {
        return Err(RecordsError::EmptyJson);
    }
    Ok(serde_json::from_str(&text)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn csv(text: &str) -> Result<Vec<RunRecord>, RecordsError> {
        parse_csv(text.as_bytes())
    }

    #[test]
    fn parses_valid_csv() {
        let recs = csv("\u{feff}scenario,run,client_server_bytes,p2p_bytes\r\na,1,100,60\r\n\"b, quoted \"\"x\"\"\", r2 , 5 ,0\r\n\r\n").unwrap();
        assert_eq!(recs.len(), 2);
        assert_eq!(
            recs[0],
            RunRecord {
                scenario: "a".into(),
                run: "1".into(),
                client_server_bytes: 100,
                p2p_bytes: 60
            }
        );
        assert_eq!(recs[1].scenario, "b, quoted \"x\"");
        assert_eq!(recs[1].run, "r2");
        assert_eq!((recs[1].client_server_bytes, recs[1].p2p_bytes), (5, 0));
        assert!(csv(&format!("{CSV_HEADER}\n")).unwrap().is_empty());
    }

    #[test]
    fn malformed_rows_name_the_line() {
        let err = csv(&format!("{CSV_HEADER}\na,1,100,60\na,2,100,6x\n")).unwrap_err();
        assert!(err.to_string().starts_with("line 3: p2p_bytes: invalid digit"), "{err}");
        let err = csv(&format!("{CSV_HEADER}\n\na,2,100\n")).unwrap_err();
        assert!(err.to_string().starts_with("line 3: expected 4 fields"), "{err}");
        let err = csv(&format!("{CSV_HEADER}\na,1,-5,0\n")).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("line 2: client_server_bytes: invalid digit"),
            "{err}"
        );
        let err = csv(&format!("{CSV_HEADER}\n\"a,1,5,0\n")).unwrap_err();
        assert_eq!(err.to_string(), "line 2: unterminated quoted field");
        let err = csv(&format!("{CSV_HEADER}\n,1,5,0\n")).unwrap_err();
        assert_eq!(err.to_string(), "line 2: scenario: empty");
    }

    #[test]
    fn empty_and_wrong_header() {
        for empty in ["", "\n", "  \r\n\n"] {
            let err = csv(empty).unwrap_err();
            assert_eq!(err.to_string(), format!("empty input: expected header `{CSV_HEADER}`"));
        }
        let err = csv("scenario,run,cs,p2p\na,1,1,1\n").unwrap_err();
        assert!(matches!(err, RecordsError::WrongHeader { .. }));
        assert!(err.to_string().contains("found `scenario,run,cs,p2p`"), "{err}");
    }

    #[test]
    fn parses_json() {
        let recs = parse_json(
            r#"[{"scenario":"a","run":"1","client_server_bytes":100,"p2p_bytes":40,"peers":12}]"#.as_bytes(),
        )
        .unwrap();
        assert_eq!(
            recs,
            [RunRecord {
                scenario: "a".into(),
                run: "1".into(),
                client_server_bytes: 100,
                p2p_bytes: 40
            }]
        );
        let err = parse_json(r#"[{"scenario":"a","run":"1","p2p_bytes":40}]"#.as_bytes()).unwrap_err();
        assert!(err.to_string().contains("client_server_bytes"), "{err}");
        assert!(matches!(parse_json(" \n".as_bytes()), Err(RecordsError::EmptyJson)));
    }
}
