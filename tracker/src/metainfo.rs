//! `.torrent` metainfo files (BEP 3) built from a raw bencoded info
//! dictionary, so that the info hash never changes when the announce URL does.

use sha1::{Digest, Sha1};

/// SHA-1 of the raw bencoded info dictionary: the info hash (BEP 3).
pub fn info_hash(info: &[u8]) -> [u8; 20] {
    Sha1::digest(info).into()
}

/// Builds a `.torrent` file: `d8:announce<url>[13:announce-listll<url>ee]4:info<info>e`.
///
/// `info` is inserted byte for byte, so the info hash of the result is
/// [`info_hash`]`(info)` whatever the announce URL. Keys are in bencoding order.
pub fn torrent_bytes(announce: &str, info: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(info.len() + 2 * announce.len() + 64);
    let s = |out: &mut Vec<u8>, v: &[u8]| {
        out.extend_from_slice(v.len().to_string().as_bytes());
        out.push(b':');
        out.extend_from_slice(v);
    };
    out.push(b'd');
    s(&mut out, b"announce");
    s(&mut out, announce.as_bytes());
    s(&mut out, b"announce-list");
    out.extend_from_slice(b"ll");
    s(&mut out, announce.as_bytes());
    out.extend_from_slice(b"ee");
    s(&mut out, b"info");
    out.extend_from_slice(info);
    out.push(b'e');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn torrent_is_valid_bencode_with_the_same_info() {
        let info = b"d6:lengthi5e4:name1:a12:piece lengthi16384e6:pieces20:aaaaaaaaaaaaaaaaaaaae";
        let t = torrent_bytes("http://127.0.0.1:1/announce?device=d1", info);
        let v: serde_bencode::value::Value = serde_bencode::from_bytes(&t).unwrap();
        let serde_bencode::value::Value::Dict(d) = v else { panic!() };
        let reencoded = serde_bencode::to_bytes(&d[b"info".as_slice()]).unwrap();
        assert_eq!(reencoded, info.to_vec());
        assert_eq!(info_hash(&reencoded), info_hash(info));
    }
}
