//! Arbitrary bytes as a scrape query string (BEP 48): the parser must never
//! panic and never return more than the documented number of info hashes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ota_proto::announce::{encode_scrape, parse_scrape, ScrapeStats, MAX_SCRAPE_HASHES};

fuzz_target!(|data: &[u8]| {
    let query = String::from_utf8_lossy(data);
    if let Ok(hashes) = parse_scrape(&query) {
        assert!(hashes.len() <= MAX_SCRAPE_HASHES);
        let files: Vec<_> = hashes.iter().map(|h| (*h, ScrapeStats::default())).collect();
        let body = encode_scrape(&files);
        for h in &hashes {
            ota_proto::announce::decode_scrape(&body, h).expect("own scrape response decodes");
        }
    }
});
