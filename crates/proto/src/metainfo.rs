//! `.torrent` metainfo files (BEP 3) built from a raw bencoded info
//! dictionary, so that the info hash never changes when the announce URL does.

use sha1::{Digest, Sha1};

use crate::ids::InfoHash;

/// SHA-1 of the raw bencoded info dictionary: the info hash (BEP 3).
pub fn info_hash(info: &[u8]) -> InfoHash {
    InfoHash(Sha1::digest(info).into())
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

/// The fields of a single-file info dictionary (BEP 3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InfoDict {
    /// Suggested file name.
    pub name: String,
    /// File length in bytes.
    pub length: u64,
    /// Piece length in bytes.
    pub piece_length: u64,
    /// SHA-1 of each piece, in order.
    pub pieces: Vec<[u8; 20]>,
    /// BEP 27 private flag.
    pub private: bool,
}

/// Number of pieces for `length` bytes in pieces of `piece_length` bytes:
/// `ceil(length / piece_length)`, and exactly `length / piece_length` when the
/// length is a multiple (no extra empty piece). 0 bytes give 0 pieces.
pub fn piece_count(length: u64, piece_length: u64) -> u64 {
    length.div_ceil(piece_length)
}

impl InfoDict {
    /// Bencodes the dictionary with keys in order: `length`, `name`,
    /// `piece length`, `pieces`, and `private` when set.
    pub fn to_bytes(&self) -> Vec<u8> {
        use serde_bencode::value::Value;
        let mut d = std::collections::HashMap::new();
        d.insert(b"length".to_vec(), Value::Int(self.length as i64));
        d.insert(b"name".to_vec(), Value::Bytes(self.name.as_bytes().to_vec()));
        d.insert(b"piece length".to_vec(), Value::Int(self.piece_length as i64));
        d.insert(b"pieces".to_vec(), Value::Bytes(self.pieces.concat()));
        if self.private {
            d.insert(b"private".to_vec(), Value::Int(1));
        }
        serde_bencode::to_bytes(&Value::Dict(d)).expect("bencode encoding of a Value")
    }

    /// Parses a single-file info dictionary.
    ///
    /// Errors: not bencode, a missing or mistyped key, a multi-file torrent,
    /// or a `pieces` string whose length is not 20 × the piece count.
    pub fn parse(info: &[u8]) -> anyhow::Result<Self> {
        use serde_bencode::value::Value;
        let Value::Dict(d) = serde_bencode::from_bytes::<Value>(info)? else {
            anyhow::bail!("info is not a dictionary")
        };
        let int = |k: &str| match d.get(k.as_bytes()) {
            Some(Value::Int(i)) if *i >= 0 => Ok(*i as u64),
            _ => Err(anyhow::anyhow!("info dictionary: missing or invalid {k:?}")),
        };
        if d.contains_key(b"files".as_slice()) {
            anyhow::bail!("multi-file torrents are not supported");
        }
        let name = match d.get(b"name".as_slice()) {
            Some(Value::Bytes(b)) => String::from_utf8(b.clone())?,
            _ => anyhow::bail!("info dictionary: missing name"),
        };
        let (length, piece_length) = (int("length")?, int("piece length")?);
        if piece_length == 0 {
            anyhow::bail!("info dictionary: piece length is 0");
        }
        let pieces = match d.get(b"pieces".as_slice()) {
            Some(Value::Bytes(b)) if b.len() % 20 == 0 => b
                .chunks_exact(20)
                .map(|c| c.try_into().expect("20 bytes"))
                .collect::<Vec<[u8; 20]>>(),
            _ => anyhow::bail!("info dictionary: pieces must be a multiple of 20 bytes"),
        };
        if pieces.len() as u64 != piece_count(length, piece_length) {
            anyhow::bail!(
                "info dictionary: {} piece hashes for {length} bytes in {piece_length}-byte pieces",
                pieces.len()
            );
        }
        let private = matches!(d.get(b"private".as_slice()), Some(Value::Int(1)));
        Ok(InfoDict {
            name,
            length,
            piece_length,
            pieces,
            private,
        })
    }
}

/// Extracts the bencoded info dictionary from a `.torrent` file.
///
/// Errors: not bencode, or no `info` dictionary.
pub fn info_from_torrent(torrent: &[u8]) -> anyhow::Result<Vec<u8>> {
    use serde_bencode::value::Value;
    let Value::Dict(d) = serde_bencode::from_bytes::<Value>(torrent)? else {
        anyhow::bail!("torrent is not a dictionary")
    };
    match d.get(b"info".as_slice()) {
        Some(v @ Value::Dict(_)) => Ok(serde_bencode::to_bytes(v)?),
        _ => anyhow::bail!("torrent has no info dictionary"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_dict_round_trips_and_checks_piece_count() {
        let d = InfoDict {
            name: "a.deb".into(),
            length: 32768,
            piece_length: 16384,
            pieces: vec![[1; 20], [2; 20]],
            private: false,
        };
        let b = d.to_bytes();
        assert!(b.starts_with(b"d6:lengthi32768e4:name5:a.deb12:piece lengthi16384e6:pieces40:"));
        assert_eq!(InfoDict::parse(&b).unwrap(), d);
        let t = torrent_bytes("http://x/announce", &b);
        assert_eq!(info_from_torrent(&t).unwrap(), b);
        let wrong = InfoDict {
            pieces: vec![[1; 20]; 3],
            ..d
        };
        assert!(InfoDict::parse(&wrong.to_bytes())
            .unwrap_err()
            .to_string()
            .contains("3 piece hashes"));
        assert_eq!(piece_count(32768, 16384), 2);
        assert_eq!(piece_count(32769, 16384), 3);
        assert_eq!(piece_count(0, 16384), 0);
    }

    #[test]
    fn torrent_is_valid_bencode_with_the_same_info() {
        let info = b"d6:lengthi5e4:name1:a12:piece lengthi16384e6:pieces20:aaaaaaaaaaaaaaaaaaaae";
        let t = torrent_bytes("http://127.0.0.1:1/announce?device=d1", info);
        let v: serde_bencode::value::Value = serde_bencode::from_bytes(&t).unwrap();
        let serde_bencode::value::Value::Dict(d) = v else {
            panic!()
        };
        let reencoded = serde_bencode::to_bytes(&d[b"info".as_slice()]).unwrap();
        assert_eq!(reencoded, info.to_vec());
        assert_eq!(info_hash(&reencoded), info_hash(info));
    }
}
