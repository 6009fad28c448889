//! Identifiers of the BitTorrent protocol, parsed once at the edge.
//!
//! [`InfoHash`] is the 20-byte SHA-1 of a torrent's bencoded `info`
//! dictionary (BEP 3); [`PeerId`] is the 20-byte id a client picks for
//! itself (BEP 3, BEP 20 for the `-XXnnnn-` prefix convention). Both travel
//! raw (percent-encoded) in announces and as 40 lowercase hex characters in
//! the JSON API; once parsed, the rest of the code passes these types, never
//! strings.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Why a hex or binary identifier was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// Not 40 hex characters (the API form).
    #[error("{what} {value:?} is not 40 hex characters")]
    BadHex {
        /// `info hash` or `peer id`.
        what: &'static str,
        /// The refused text (cut to 64 characters).
        value: String,
    },
    /// Not 20 bytes (the announce form).
    #[error("{what}: expected 20 bytes, got {len}")]
    BadLength {
        /// `info hash` or `peer id`.
        what: &'static str,
        /// Bytes given.
        len: usize,
    },
}

fn parse_hex20(what: &'static str, s: &str) -> Result<[u8; 20], IdError> {
    let bad = || IdError::BadHex {
        what,
        value: s.chars().take(64).collect(),
    };
    if s.len() != 40 {
        return Err(bad());
    }
    let mut out = [0u8; 20];
    hex::decode_to_slice(s, &mut out).map_err(|_| bad())?;
    Ok(out)
}

macro_rules! id20 {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
        pub struct $name(pub [u8; 20]);

        impl $name {
            /// The 20 raw bytes.
            pub fn as_bytes(&self) -> &[u8; 20] {
                &self.0
            }

            /// 40 lowercase hex characters (the API and folder-name form).
            pub fn to_hex(&self) -> String {
                hex::encode(self.0)
            }

            /// Takes exactly 20 raw bytes (the percent-decoded announce form).
            ///
            /// Errors: [`IdError::BadLength`] for any other length.
            pub fn from_slice(bytes: &[u8]) -> Result<Self, IdError> {
                bytes.try_into().map($name).map_err(|_| IdError::BadLength { what: $what, len: bytes.len() })
            }
        }

        impl AsRef<[u8]> for $name {
            fn as_ref(&self) -> &[u8] {
                &self.0
            }
        }

        impl From<[u8; 20]> for $name {
            fn from(b: [u8; 20]) -> Self {
                $name(b)
            }
        }

        impl fmt::Display for $name {
            /// 40 lowercase hex characters.
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.to_hex())
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "({})"), self.to_hex())
            }
        }

        impl FromStr for $name {
            type Err = IdError;
            /// Parses 40 hex characters (either case).
            fn from_str(s: &str) -> Result<Self, IdError> {
                parse_hex20($what, s).map($name)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.to_hex())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

id20!(
    /// A torrent's info hash: SHA-1 of its bencoded `info` dictionary
    /// (BEP 3), 20 bytes; written as 40 lowercase hex characters in JSON,
    /// folder names and logs.
    InfoHash,
    "info hash"
);

id20!(
    /// A BitTorrent client's peer id (BEP 3), 20 bytes; ours start with an
    /// Azureus-style prefix such as `-OA0100-` (BEP 20).
    PeerId,
    "peer id"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip_and_refusals() {
        let ih: InfoHash = "AB".repeat(20).parse().unwrap();
        assert_eq!(ih.0, [0xAB; 20]);
        assert_eq!(ih.to_string(), "ab".repeat(20));
        assert!("ab".repeat(19).parse::<InfoHash>().is_err());
        assert!("zz".repeat(20).parse::<InfoHash>().is_err());
        assert!(format!("{}/", "ab".repeat(20)).parse::<InfoHash>().is_err());
        assert!("../../etc/passwd".parse::<InfoHash>().is_err());
        assert_eq!(
            PeerId::from_slice(&[1; 19]),
            Err(IdError::BadLength {
                what: "peer id",
                len: 19
            })
        );
    }

    #[test]
    fn json_is_the_hex_string() {
        let ih = InfoHash([0x01; 20]);
        let json = serde_json::to_string(&ih).unwrap();
        assert_eq!(json, format!("\"{}\"", "01".repeat(20)));
        assert_eq!(serde_json::from_str::<InfoHash>(&json).unwrap(), ih);
        assert!(serde_json::from_str::<InfoHash>("\"/etc/cron.d/x\"").is_err());
    }
}
