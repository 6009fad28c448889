//! Structured variant: announce queries built from well-formed
//! `key=value` pairs (known keys, arbitrary percent-encoded values), so the
//! fuzzer reaches the per-parameter checks quickly. Accepted requests go
//! through the peer store and the response encoder and decoder.
#![no_main]

use std::net::SocketAddr;
use std::time::Instant;

use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use ota_proto::announce::{decode_announce, encode_announce, encode_binary, parse_announce};
use ota_tracker::swarm::{PeerStore, StoreConfig};

const KEYS: [&str; 15] = [
    "info_hash", "peer_id", "port", "uploaded", "downloaded", "left", "event", "compact",
    "no_peer_id", "numwant", "ip", "key", "trackerid", "device", "origin_token",
];

#[derive(Debug, Arbitrary)]
struct Param {
    key: u8,
    value: Vec<u8>,
    /// Send the value as decimal text of this number instead of raw bytes.
    number: Option<u64>,
}

fuzz_target!(|params: Vec<Param>| {
    let query: Vec<String> = params
        .iter()
        .map(|p| {
            let key = KEYS[p.key as usize % KEYS.len()];
            let value = match p.number {
                Some(n) => n.to_string(),
                None => encode_binary(&p.value),
            };
            format!("{key}={value}")
        })
        .collect();
    let query = query.join("&");
    if let Ok(req) = parse_announce(&query) {
        let store = PeerStore::new(StoreConfig::default());
        store.register(req.info_hash);
        let addr = SocketAddr::from(([127, 0, 0, 1], req.port));
        let resp = store.announce(&req, addr, false, Instant::now()).expect("registered swarm");
        let body = encode_announce(&resp, req.compact, req.no_peer_id);
        decode_announce(&body).expect("own announce response decodes");
    }
});
