#![allow(missing_docs)] // criterion_group! generates undocumented functions
//! Criterion benchmarks of the announce path's pure parts: parsing an
//! announce query (BEP 3) and encoding a compact response of 50 peers
//! (BEP 23), the two things every announce costs besides the peer store.
//!
//! `cargo bench -p ota-proto --bench announce`

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ota_proto::announce::{encode_announce, encode_binary, parse_announce, parse_scrape, AnnounceResponse, PeerAddr};
use ota_proto::PeerId;

fn query() -> String {
    format!(
        "info_hash={}&peer_id={}&port=6881&uploaded=0&downloaded=1048576&left=73400320&event=started&compact=1&numwant=50&key=8a01ff00&token={}",
        encode_binary(&[0xAB; 20]),
        encode_binary(b"-OA0100-abcdefghijkl"),
        "9f".repeat(32)
    )
}

fn response(peers: usize) -> AnnounceResponse {
    AnnounceResponse {
        interval: 30,
        min_interval: 30,
        complete: 10,
        incomplete: peers as u32,
        peers: (0..peers)
            .map(|i| PeerAddr {
                peer_id: PeerId([i as u8; 20]),
                addr: SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, (i / 250) as u8, (i % 250) as u8)), 6881),
            })
            .collect(),
    }
}

fn bench(c: &mut Criterion) {
    let q = query();
    let mut g = c.benchmark_group("announce");
    g.throughput(Throughput::Elements(1));
    g.bench_function("parse_announce", |b| {
        b.iter(|| parse_announce(std::hint::black_box(&q)).unwrap())
    });
    let resp = response(50);
    g.bench_function("encode_announce_compact_50_peers", |b| {
        b.iter(|| encode_announce(std::hint::black_box(&resp), true, false))
    });
    g.bench_function("encode_announce_dict_50_peers", |b| {
        b.iter(|| encode_announce(std::hint::black_box(&resp), false, false))
    });
    let scrape: String = (0..50)
        .map(|i| format!("info_hash={}&", encode_binary(&[i as u8; 20])))
        .collect();
    g.bench_function("parse_scrape_50_hashes", |b| {
        b.iter(|| parse_scrape(std::hint::black_box(&scrape)).unwrap())
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
