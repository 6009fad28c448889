//! The info dictionary that `publish::hash_object` builds while streaming an
//! object from S3 must hash to the same v1 info hash as independent tools
//! compute for the same file, name and piece length: libtorrent-rasterbar
//! (Debian `python3-libtorrent`, through /usr/bin/python3) and `mktorrent`
//! (Debian `mktorrent`). Sizes sit just below, at and just above piece
//! multiples, where an off-by-one piece (librqbit's own `create_torrent` adds
//! an empty one at exact multiples) would change the hash.
//!
//! A missing tool fails the test and names the package to install.

use std::path::Path;
use std::process::Command;

use sha1::{Digest, Sha1};

use ota_proto::metainfo::{info_from_torrent, torrent_bytes, InfoDict};
use ota_seeder::publish::{hash_object, PublishRequest};
use ota_testkit::package;
use ota_testkit::stack::Stack;

const KIB: u64 = 1024;

/// (size, piece length, private)
const CASES: &[(u64, u64, bool)] = &[
    (3 * 256 * KIB - 1, 256 * KIB, false),
    (3 * 256 * KIB, 256 * KIB, false),
    (3 * 256 * KIB + 1, 256 * KIB, false),
    (1000, 256 * KIB, false),
    (2 * 1024 * KIB, 1024 * KIB, false),
    (3 * 1024 * KIB + 1, 1024 * KIB, false),
    // BEP 27: both tools add `private: 1` inside the info dictionary.
    (3 * 256 * KIB, 256 * KIB, true),
];

fn python() -> String {
    std::env::var("OTA_TEST_PYTHON").unwrap_or_else(|_| "/usr/bin/python3".into())
}

/// Prints the libtorrent-created v1 info hash, its piece count, and the info
/// hash libtorrent reads from our own `.torrent`.
const LT_SCRIPT: &str = r#"
import sys, os
import libtorrent as lt
path, piece_size, private, ours = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1", sys.argv[4]
fs = lt.file_storage()
lt.add_files(fs, path)
flags = lt.create_torrent.v1_only if hasattr(lt.create_torrent, "v1_only") else 0
t = lt.create_torrent(fs, piece_size, flags=flags)
t.set_priv(private)
lt.set_piece_hashes(t, os.path.dirname(path))
ti = lt.torrent_info(lt.bencode(t.generate()))
h = ti.info_hashes().v1 if hasattr(ti, "info_hashes") else ti.info_hash()
theirs = lt.torrent_info(ours)
th = theirs.info_hashes().v1 if hasattr(theirs, "info_hashes") else theirs.info_hash()
print(str(h), ti.num_pieces(), str(th), theirs.num_pieces(), theirs.priv())
"#;

fn libtorrent_hashes(file: &Path, piece_length: u64, private: bool, ours: &Path) -> (String, u64, String, u64, bool) {
    let py = python();
    let out = Command::new(&py)
        .arg("-c")
        .arg(LT_SCRIPT)
        .arg(file)
        .arg(piece_length.to_string())
        .arg(if private { "1" } else { "0" })
        .arg(ours)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {py}: {e}; install the Debian package python3-libtorrent (apt-get install python3-libtorrent)"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    if stderr.contains("No module named 'libtorrent'") {
        panic!("{py} has no libtorrent module: install the Debian package python3-libtorrent (apt-get install python3-libtorrent), or point OTA_TEST_PYTHON at a python3 that has it");
    }
    assert!(out.status.success(), "libtorrent script failed: {stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let f: Vec<&str> = stdout.split_whitespace().collect();
    assert_eq!(f.len(), 5, "unexpected libtorrent output {stdout:?}");
    (
        f[0].to_lowercase(),
        f[1].parse().unwrap(),
        f[2].to_lowercase(),
        f[3].parse().unwrap(),
        f[4] == "True",
    )
}

/// Runs mktorrent and returns the `.torrent` bytes.
fn mktorrent(file: &Path, piece_length: u64, private: bool, out: &Path) -> Vec<u8> {
    assert!(piece_length.is_power_of_two());
    let mut cmd = Command::new("mktorrent");
    cmd.arg("-l")
        .arg(piece_length.trailing_zeros().to_string())
        .arg("-a")
        .arg("http://x/announce")
        .arg("-o")
        .arg(out);
    if private {
        cmd.arg("-p");
    }
    let res = cmd.arg(file).output().unwrap_or_else(|e| {
        panic!("cannot run mktorrent: {e}; install the Debian package mktorrent (apt-get install mktorrent)")
    });
    assert!(
        res.status.success(),
        "mktorrent failed: {}",
        String::from_utf8_lossy(&res.stderr)
    );
    std::fs::read(out).unwrap()
}

/// End of the bencoded value starting at `i` (exclusive), without decoding it.
fn skip(b: &[u8], i: usize) -> usize {
    match b[i] {
        b'i' => i + b[i..].iter().position(|&c| c == b'e').expect("integer end") + 1,
        b'l' | b'd' => {
            let mut j = i + 1;
            while b[j] != b'e' {
                j = skip(b, j);
            }
            j + 1
        }
        b'0'..=b'9' => {
            let colon = i + b[i..].iter().position(|&c| c == b':').expect("string length");
            let n: usize = std::str::from_utf8(&b[i..colon]).unwrap().parse().unwrap();
            colon + 1 + n
        }
        c => panic!("not bencode at {i}: {:?}", c as char),
    }
}

/// The raw bytes of the top-level `info` value, exactly as the file holds them.
fn raw_info(t: &[u8]) -> &[u8] {
    assert_eq!(t[0], b'd', "torrent is a dictionary");
    let mut j = 1;
    while t[j] != b'e' {
        let key_end = skip(t, j);
        let key = &t[t[j..].iter().position(|&c| c == b':').unwrap() + j + 1..key_end];
        let val_end = skip(t, key_end);
        if key == b"info" {
            return &t[key_end..val_end];
        }
        j = val_end;
    }
    panic!("no info key")
}

#[tokio::test(flavor = "multi_thread")]
async fn info_hash_matches_libtorrent_and_mktorrent_around_piece_multiples() {
    let stack = Stack::start().await;
    let work = stack.dir.path().join("tools");
    for (n, &(size, piece_length, private)) in CASES.iter().enumerate() {
        let name = format!("update-{size}-{piece_length}-{private}.bin");
        let data = package(size as usize, n as u64);
        let folder = work.join(n.to_string());
        std::fs::create_dir_all(&folder).unwrap();
        let file = folder.join(&name);
        std::fs::write(&file, &data).unwrap();

        // Ours: streamed from S3 (a key with a folder: the name is its last part).
        let key = format!("releases/{n}/{name}");
        stack.put(&key, &data).await;
        let req = PublishRequest {
            tracker_url: "http://127.0.0.1:9".into(),
            private,
            ..stack.publish_request(&key, piece_length)
        };
        let (release, info) = hash_object(&stack.s3.client, &req).await.unwrap();
        let what = format!("size {size}, piece length {piece_length}, private {private}");
        let ih = release.info_hash.to_hex();
        assert_eq!(ih, hex::encode(Sha1::digest(&info)), "{what}");
        let dict = InfoDict::parse(&info).unwrap();
        assert_eq!(dict.name, name);
        assert_eq!(
            dict.pieces.len() as u64,
            size.div_ceil(piece_length),
            "{what}: piece count"
        );
        let ours = folder.join("ours.torrent");
        std::fs::write(&ours, torrent_bytes("http://x/announce", &info)).unwrap();

        // libtorrent-rasterbar, v1 only.
        let (lt_hash, lt_pieces, lt_reads_ours, lt_ours_pieces, lt_ours_private) =
            libtorrent_hashes(&file, piece_length, private, &ours);
        assert_eq!(lt_pieces, size.div_ceil(piece_length), "{what}: libtorrent piece count");
        assert_eq!(ih, lt_hash, "{what}: info hash differs from libtorrent's");
        assert_eq!(lt_reads_ours, ih, "{what}: libtorrent hashes our .torrent differently");
        assert_eq!(lt_ours_pieces, dict.pieces.len() as u64, "{what}");
        assert_eq!(lt_ours_private, private, "{what}: libtorrent reads our private flag");

        // mktorrent: compare the raw info dictionary byte for byte.
        let mk = mktorrent(&file, piece_length, private, &folder.join("mk.torrent"));
        let mk_info = raw_info(&mk);
        assert_eq!(
            hex::encode(Sha1::digest(mk_info)),
            ih,
            "{what}: info hash differs from mktorrent's"
        );
        assert_eq!(
            mk_info,
            info.as_slice(),
            "{what}: info dictionary differs from mktorrent's"
        );
        assert_eq!(
            info_from_torrent(&mk).unwrap(),
            info,
            "{what}: info_from_torrent of mktorrent's file"
        );
        eprintln!("{what}: {} (libtorrent and mktorrent agree)", release.info_hash);
    }
    stack.shutdown().await;
}

#[test]
fn raw_info_extraction_is_exact() {
    let info = b"d6:lengthi5e4:name1:a12:piece lengthi16384e6:pieces20:aaaaaaaaaaaaaaaaaaaae";
    let t = [b"d8:announce3:x:y13:creation datei1e4:info".as_slice(), info, b"e"].concat();
    assert_eq!(raw_info(&t), info);
    assert_eq!(raw_info(&torrent_bytes("http://x/announce", info)), info);
}
