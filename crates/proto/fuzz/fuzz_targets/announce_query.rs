//! Arbitrary bytes as an announce query string (BEP 3): the parser must
//! never panic, and whatever it accepts must respect its documented limits.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ota_proto::announce::{parse_announce, AnnounceError, MAX_NUMWANT, MAX_QUERY_LEN};

fuzz_target!(|data: &[u8]| {
    // The server hands the parser the raw query as a `&str` (axum's RawQuery);
    // lossy decoding reaches every byte sequence a client can send.
    let query = String::from_utf8_lossy(data);
    match parse_announce(&query) {
        Ok(req) => {
            assert!(query.len() <= MAX_QUERY_LEN);
            assert!(req.port != 0);
            assert!(req.numwant <= MAX_NUMWANT);
        }
        Err(AnnounceError::TooLong(_)) => assert!(query.len() > MAX_QUERY_LEN),
        Err(e) => {
            // Every refusal renders as a bencoded failure reason.
            let _ = ota_proto::announce::encode_failure(&e.to_string());
        }
    }
});
