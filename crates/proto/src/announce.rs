//! BitTorrent HTTP tracker protocol: announce (BEP 3) and scrape (BEP 48)
//! query parsing, and bencoded responses with compact peers (BEP 23),
//! dictionary peers (BEP 3) and IPv6 peers as `peers6` (BEP 7).
//!
//! Everything here is pure: no sockets, no clock. The server feeds it the raw
//! query string (the `info_hash` and `peer_id` values are binary, percent-encoded,
//! so they cannot go through a UTF-8 query extractor).

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use serde_bencode::value::Value;

pub use crate::ids::{InfoHash, PeerId};

/// Longest query string accepted, in bytes. A BEP 3 announce with every
/// parameter fits in well under 1 KiB.
pub const MAX_QUERY_LEN: usize = 4096;
/// Most peers returned per announce, whatever `numwant` asks for.
pub const MAX_NUMWANT: usize = 200;
/// Peers returned when the client does not send `numwant` (BEP 3 suggests 50).
pub const DEFAULT_NUMWANT: usize = 50;
/// Most info hashes in one scrape (BEP 48).
pub const MAX_SCRAPE_HASHES: usize = 74;

/// The `event` parameter of an announce (BEP 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnnounceEvent {
    /// First announce of a download.
    Started,
    /// The download finished (sent once).
    Completed,
    /// The client is leaving the swarm.
    Stopped,
    /// A regular re-announce (no `event`, or `event=empty`).
    None,
}

/// A parsed announce request (BEP 3 parameters plus this project's
/// `device` and `origin_token` query parameters, which clients carry in the
/// announce URL).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnnounceRequest {
    /// Swarm identifier.
    pub info_hash: InfoHash,
    /// The announcing client's id.
    pub peer_id: PeerId,
    /// TCP port the client listens on for peer-wire connections; never 0.
    pub port: u16,
    /// Bytes uploaded since `started`.
    pub uploaded: u64,
    /// Bytes downloaded since `started`.
    pub downloaded: u64,
    /// Bytes still missing; 0 means the client is a seeder.
    pub left: u64,
    /// Lifecycle event.
    pub event: AnnounceEvent,
    /// Whether the client accepts compact peers (BEP 23). Default true.
    pub compact: bool,
    /// Whether peer ids may be left out of dictionary peers.
    pub no_peer_id: bool,
    /// Peers wanted, already capped at [`MAX_NUMWANT`].
    pub numwant: usize,
    /// Address the client asks to be reached at, if it sent `ip`.
    pub ip: Option<IpAddr>,
    /// Client key (BEP 3 extension): opaque bytes, as clients send them
    /// (aria2 sends 8 raw bytes, percent-encoded), at most
    /// [`MAX_OPAQUE_LEN`] bytes.
    pub key: Option<Vec<u8>>,
    /// Tracker id echoed back by the client.
    pub trackerid: Option<Vec<u8>>,
    /// Device id carried in the announce URL (`device=`), if any.
    pub device: Option<String>,
    /// Origin credential carried in the seeder's announce URL (`origin_token=`).
    pub origin_token: Option<String>,
    /// The origin's QUIC listener, from the seeder's announce URL
    /// (`quic_port=PORT&quic_pin=HEX`, both or neither): its UDP port on
    /// the announce's IP and its certificate pin. The tracker believes it
    /// only with a valid `origin_token`.
    pub origin_quic: Option<(u16, crate::rendezvous::CertFingerprint)>,
}

impl AnnounceRequest {
    /// A request with the required parameters (BEP 3) and the defaults of
    /// everything optional: nothing uploaded or downloaded yet, compact
    /// peers, [`DEFAULT_NUMWANT`] peers wanted, no `ip`, `key`, `trackerid`,
    /// `device` or `origin_token`. `left` is in bytes; `port` is the
    /// peer-wire port.
    pub fn new(info_hash: InfoHash, peer_id: PeerId, port: u16, left: u64, event: AnnounceEvent) -> Self {
        AnnounceRequest {
            info_hash,
            peer_id,
            port,
            uploaded: 0,
            downloaded: 0,
            left,
            event,
            compact: true,
            no_peer_id: false,
            numwant: DEFAULT_NUMWANT,
            ip: None,
            key: None,
            trackerid: None,
            device: None,
            origin_token: None,
            origin_quic: None,
        }
    }
}

/// Why a query was refused. Its `Display` text is what goes into the
/// bencoded `failure reason`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AnnounceError {
    /// The query string is longer than [`MAX_QUERY_LEN`].
    #[error("query string is longer than {0} bytes")]
    TooLong(usize),
    /// A required parameter is absent.
    #[error("missing parameter: {0}")]
    Missing(&'static str),
    /// A parameter is present but malformed.
    #[error("invalid {0}: {1}")]
    Invalid(&'static str, String),
    /// The swarm is not a registered release.
    #[error("unregistered info hash {0}")]
    Unregistered(String),
    /// Too many info hashes in one scrape.
    #[error("too many info hashes in one scrape (at most {0})")]
    TooManyHashes(usize),
}

fn decode(s: &str) -> Vec<u8> {
    percent_encoding::percent_decode_str(s).collect()
}

/// Splits a raw query string into percent-decoded `(key, value)` byte pairs.
fn pairs(query: &str) -> impl Iterator<Item = (Vec<u8>, Vec<u8>)> + '_ {
    query.split('&').filter(|p| !p.is_empty()).map(|p| {
        let (k, v) = p.split_once('=').unwrap_or((p, ""));
        (decode(k), decode(v))
    })
}

fn id20<T: From<[u8; 20]>>(name: &'static str, v: &[u8]) -> Result<T, AnnounceError> {
    <[u8; 20]>::try_from(v)
        .map(T::from)
        .map_err(|_| AnnounceError::Invalid(name, format!("expected 20 bytes, got {}", v.len())))
}

/// Longest `key` or `trackerid` kept, in bytes (BEP 3 leaves both opaque;
/// clients send 4 to 20).
pub const MAX_OPAQUE_LEN: usize = 64;

/// An opaque parameter (BEP 3 defines no encoding for it): its raw bytes.
fn opaque(name: &'static str, v: Vec<u8>) -> Result<Vec<u8>, AnnounceError> {
    if v.len() > MAX_OPAQUE_LEN {
        return Err(AnnounceError::Invalid(
            name,
            format!("longer than {MAX_OPAQUE_LEN} bytes"),
        ));
    }
    Ok(v)
}

fn text(name: &'static str, v: &[u8]) -> Result<String, AnnounceError> {
    String::from_utf8(v.to_vec()).map_err(|_| AnnounceError::Invalid(name, "not UTF-8".into()))
}

fn number<T: std::str::FromStr>(name: &'static str, v: &[u8]) -> Result<T, AnnounceError>
where
    T::Err: std::fmt::Display,
{
    let s = text(name, v)?;
    s.parse::<T>()
        .map_err(|e| AnnounceError::Invalid(name, format!("{s:?}: {e}")))
}

fn flag(name: &'static str, v: &[u8]) -> Result<bool, AnnounceError> {
    match v {
        b"1" | b"true" => Ok(true),
        b"0" | b"false" => Ok(false),
        _ => Err(AnnounceError::Invalid(name, "expected 0 or 1".into())),
    }
}

/// Parses an announce query string (BEP 3).
///
/// Required: `info_hash` (20 bytes), `peer_id` (20 bytes), `port` (1..=65535),
/// `uploaded`, `downloaded`, `left` (decimal bytes). Optional: `event`,
/// `compact` (default 1), `no_peer_id`, `numwant` (capped at [`MAX_NUMWANT`]),
/// `ip`, `key`, `trackerid`, `device`, `origin_token`. Unknown parameters are
/// ignored, as BEP 3 asks.
///
/// Errors: [`AnnounceError`] naming the first bad or missing parameter.
pub fn parse_announce(query: &str) -> Result<AnnounceRequest, AnnounceError> {
    if query.len() > MAX_QUERY_LEN {
        return Err(AnnounceError::TooLong(MAX_QUERY_LEN));
    }
    let mut info_hash = None;
    let mut peer_id = None;
    let mut port = None;
    let mut uploaded = None;
    let mut downloaded = None;
    let mut left = None;
    let mut event = AnnounceEvent::None;
    let mut compact = true;
    let mut no_peer_id = false;
    let mut numwant = DEFAULT_NUMWANT;
    let mut ip = None;
    let mut key = None;
    let mut trackerid = None;
    let mut device = None;
    let mut origin_token = None;
    let mut quic_port = None;
    let mut quic_pin = None;
    for (k, v) in pairs(query) {
        match k.as_slice() {
            b"info_hash" => info_hash = Some(id20("info_hash", &v)?),
            b"peer_id" => peer_id = Some(id20("peer_id", &v)?),
            b"port" => {
                let p: u16 = number("port", &v)?;
                if p == 0 {
                    return Err(AnnounceError::Invalid("port", "0".into()));
                }
                port = Some(p);
            }
            b"uploaded" => uploaded = Some(number("uploaded", &v)?),
            b"downloaded" => downloaded = Some(number("downloaded", &v)?),
            b"left" => left = Some(number("left", &v)?),
            b"event" => {
                event = match v.as_slice() {
                    b"started" => AnnounceEvent::Started,
                    b"completed" => AnnounceEvent::Completed,
                    b"stopped" => AnnounceEvent::Stopped,
                    b"" | b"empty" => AnnounceEvent::None,
                    other => {
                        return Err(AnnounceError::Invalid(
                            "event",
                            String::from_utf8_lossy(other).into_owned(),
                        ))
                    }
                }
            }
            b"compact" => compact = flag("compact", &v)?,
            b"no_peer_id" => no_peer_id = flag("no_peer_id", &v)?,
            b"numwant" => numwant = number::<usize>("numwant", &v)?.min(MAX_NUMWANT),
            // BEP 3 also allows a DNS name here; the tracker believes `ip=`
            // only from trusted proxies anyway, so a value that is not an
            // address is ignored rather than refused.
            b"ip" => ip = std::str::from_utf8(&v).ok().and_then(|s| s.parse().ok()),
            b"key" => key = Some(opaque("key", v)?),
            b"trackerid" => trackerid = Some(opaque("trackerid", v)?),
            b"device" => device = Some(text("device", &v)?),
            b"origin_token" => origin_token = Some(text("origin_token", &v)?),
            b"quic_port" => {
                let p: u16 = number("quic_port", &v)?;
                if p == 0 {
                    return Err(AnnounceError::Invalid("quic_port", "0".into()));
                }
                quic_port = Some(p);
            }
            b"quic_pin" => {
                let pin = text("quic_pin", &v)?;
                quic_pin = Some(pin.parse().map_err(|_| {
                    AnnounceError::Invalid("quic_pin", "not 64 hex digits (a SHA-256 certificate pin)".into())
                })?);
            }
            _ => {}
        }
    }
    Ok(AnnounceRequest {
        info_hash: info_hash.ok_or(AnnounceError::Missing("info_hash"))?,
        peer_id: peer_id.ok_or(AnnounceError::Missing("peer_id"))?,
        port: port.ok_or(AnnounceError::Missing("port"))?,
        uploaded: uploaded.ok_or(AnnounceError::Missing("uploaded"))?,
        downloaded: downloaded.ok_or(AnnounceError::Missing("downloaded"))?,
        left: left.ok_or(AnnounceError::Missing("left"))?,
        event,
        compact,
        no_peer_id,
        numwant,
        ip,
        key,
        trackerid,
        device,
        origin_token,
        origin_quic: match (quic_port, quic_pin) {
            (Some(port), Some(pin)) => Some((port, pin)),
            (None, None) => None,
            (Some(_), None) => return Err(AnnounceError::Missing("quic_pin")),
            (None, Some(_)) => return Err(AnnounceError::Missing("quic_port")),
        },
    })
}

/// Parses a scrape query string (BEP 48): zero or more `info_hash`
/// parameters, at most [`MAX_SCRAPE_HASHES`]. Zero means "all swarms".
pub fn parse_scrape(query: &str) -> Result<Vec<InfoHash>, AnnounceError> {
    if query.len() > MAX_QUERY_LEN {
        return Err(AnnounceError::TooLong(MAX_QUERY_LEN));
    }
    let mut out = Vec::new();
    for (k, v) in pairs(query) {
        if k == b"info_hash" {
            out.push(id20("info_hash", &v)?);
            if out.len() > MAX_SCRAPE_HASHES {
                return Err(AnnounceError::TooManyHashes(MAX_SCRAPE_HASHES));
            }
        }
    }
    Ok(out)
}

/// One peer in an announce response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerAddr {
    /// The peer's id, for dictionary-model responses.
    pub peer_id: PeerId,
    /// Where to dial it.
    pub addr: SocketAddr,
}

/// What an announce answers (BEP 3), before encoding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnnounceResponse {
    /// Seconds a client should wait between regular announces.
    pub interval: u32,
    /// Seconds a client must wait at least between announces.
    pub min_interval: u32,
    /// Seeders in the swarm.
    pub complete: u32,
    /// Leechers in the swarm.
    pub incomplete: u32,
    /// Peers handed out.
    pub peers: Vec<PeerAddr>,
}

/// Swarm counters for a scrape (BEP 48).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ScrapeStats {
    /// Seeders.
    pub complete: u32,
    /// Completed downloads ever counted.
    pub downloaded: u32,
    /// Leechers.
    pub incomplete: u32,
}

fn int(v: impl Into<i64>) -> Value {
    Value::Int(v.into())
}

fn dict(entries: Vec<(&str, Value)>) -> Value {
    Value::Dict(entries.into_iter().map(|(k, v)| (k.as_bytes().to_vec(), v)).collect())
}

fn encode(v: &Value) -> Vec<u8> {
    // Encoding a Value into a Vec cannot fail; keys are sorted by the encoder.
    serde_bencode::to_bytes(v).expect("bencode encoding of a Value")
}

/// Bencodes an announce response. With `compact`, IPv4 peers go into
/// `peers` as 6-byte strings (BEP 23) and IPv6 peers into `peers6` as 18-byte
/// strings (BEP 7); otherwise `peers` is a list of dictionaries with `ip`,
/// `port` and, unless `no_peer_id`, `peer id` (BEP 3).
pub fn encode_announce(resp: &AnnounceResponse, compact: bool, no_peer_id: bool) -> Vec<u8> {
    let mut entries = vec![
        ("interval", int(resp.interval)),
        ("min interval", int(resp.min_interval)),
        ("complete", int(resp.complete)),
        ("incomplete", int(resp.incomplete)),
    ];
    if compact {
        let mut v4 = Vec::new();
        let mut v6 = Vec::new();
        for p in &resp.peers {
            match p.addr {
                SocketAddr::V4(a) => {
                    v4.extend_from_slice(&a.ip().octets());
                    v4.extend_from_slice(&a.port().to_be_bytes());
                }
                SocketAddr::V6(a) => {
                    v6.extend_from_slice(&a.ip().octets());
                    v6.extend_from_slice(&a.port().to_be_bytes());
                }
            }
        }
        entries.push(("peers", Value::Bytes(v4)));
        if !v6.is_empty() {
            entries.push(("peers6", Value::Bytes(v6)));
        }
    } else {
        let list = resp
            .peers
            .iter()
            .map(|p| {
                let mut e = vec![
                    ("ip", Value::Bytes(p.addr.ip().to_string().into_bytes())),
                    ("port", int(p.addr.port())),
                ];
                if !no_peer_id {
                    e.push(("peer id", Value::Bytes(p.peer_id.0.to_vec())));
                }
                dict(e)
            })
            .collect();
        entries.push(("peers", Value::List(list)));
    }
    encode(&dict(entries))
}

/// Bencodes a scrape response (BEP 48): `files` maps each raw info hash to
/// its `complete`, `downloaded` and `incomplete` counters.
pub fn encode_scrape(files: &[(InfoHash, ScrapeStats)]) -> Vec<u8> {
    let files: std::collections::HashMap<Vec<u8>, Value> = files
        .iter()
        .map(|(ih, s)| {
            (
                ih.0.to_vec(),
                dict(vec![
                    ("complete", int(s.complete)),
                    ("downloaded", int(s.downloaded)),
                    ("incomplete", int(s.incomplete)),
                ]),
            )
        })
        .collect();
    encode(&dict(vec![("files", Value::Dict(files))]))
}

/// Bencodes a refusal: `d14:failure reason<len>:<reason>e` (BEP 3). Trackers
/// send it with HTTP 200 so that clients show the reason.
pub fn encode_failure(reason: &str) -> Vec<u8> {
    encode(&dict(vec![(
        "failure reason",
        Value::Bytes(reason.as_bytes().to_vec()),
    )]))
}

/// Decodes a bencoded announce response into its interval and peers; used by
/// tests and by clients that talk to the tracker directly. Compact and
/// dictionary peer lists and `peers6` are accepted.
///
/// Errors: a `failure reason` in the response, or a malformed response.
pub fn decode_announce(bytes: &[u8]) -> anyhow::Result<(u32, Vec<SocketAddr>)> {
    let v: Value = serde_bencode::from_bytes(bytes)?;
    let Value::Dict(d) = v else {
        anyhow::bail!("announce response is not a dictionary")
    };
    let d: BTreeMap<Vec<u8>, Value> = d.into_iter().collect();
    if let Some(Value::Bytes(r)) = d.get(b"failure reason".as_slice()) {
        anyhow::bail!("tracker failure: {}", String::from_utf8_lossy(r));
    }
    let interval = match d.get(b"interval".as_slice()) {
        Some(Value::Int(i)) => u32::try_from(*i)?,
        _ => anyhow::bail!("announce response has no interval"),
    };
    let mut peers = Vec::new();
    match d.get(b"peers".as_slice()) {
        Some(Value::Bytes(b)) => {
            for c in b.chunks_exact(6) {
                let ip = std::net::Ipv4Addr::new(c[0], c[1], c[2], c[3]);
                peers.push(SocketAddr::new(ip.into(), u16::from_be_bytes([c[4], c[5]])));
            }
        }
        Some(Value::List(l)) => {
            for p in l {
                let Value::Dict(p) = p else { continue };
                let ip = match p.get(b"ip".as_slice()) {
                    Some(Value::Bytes(b)) => String::from_utf8_lossy(b).parse::<IpAddr>()?,
                    _ => continue,
                };
                let port = match p.get(b"port".as_slice()) {
                    Some(Value::Int(i)) => u16::try_from(*i)?,
                    _ => continue,
                };
                peers.push(SocketAddr::new(ip, port));
            }
        }
        _ => {}
    }
    if let Some(Value::Bytes(b)) = d.get(b"peers6".as_slice()) {
        for c in b.chunks_exact(18) {
            let ip: [u8; 16] = c[..16].try_into()?;
            peers.push(SocketAddr::new(
                std::net::Ipv6Addr::from(ip).into(),
                u16::from_be_bytes([c[16], c[17]]),
            ));
        }
    }
    Ok((interval, peers))
}

/// Decodes a bencoded scrape response (BEP 48) and returns the counters of
/// `info_hash`; used by tests and tools.
///
/// Errors: a `failure reason`, a malformed response, or no entry for `info_hash`.
pub fn decode_scrape(bytes: &[u8], info_hash: &InfoHash) -> anyhow::Result<ScrapeStats> {
    let Value::Dict(d) = serde_bencode::from_bytes::<Value>(bytes)? else {
        anyhow::bail!("scrape response is not a dictionary")
    };
    if let Some(Value::Bytes(r)) = d.get(b"failure reason".as_slice()) {
        anyhow::bail!("tracker failure: {}", String::from_utf8_lossy(r));
    }
    let Some(Value::Dict(files)) = d.get(b"files".as_slice()) else {
        anyhow::bail!("scrape response has no files dictionary")
    };
    let Some(Value::Dict(f)) = files.get(info_hash.0.as_slice()) else {
        anyhow::bail!("scrape response has no entry for {}", info_hash)
    };
    let get = |k: &str| match f.get(k.as_bytes()) {
        Some(Value::Int(i)) => u32::try_from(*i).map_err(|_| anyhow::anyhow!("scrape {k} out of range: {i}")),
        _ => anyhow::bail!("scrape entry has no {k}"),
    };
    Ok(ScrapeStats {
        complete: get("complete")?,
        downloaded: get("downloaded")?,
        incomplete: get("incomplete")?,
    })
}

/// Percent-encodes raw bytes for a query string (every byte outside
/// `[A-Za-z0-9-._~]`), as announce clients do for `info_hash` and `peer_id`.
pub fn encode_binary(bytes: &[u8]) -> String {
    percent_encoding::percent_encode(bytes, percent_encoding::NON_ALPHANUMERIC).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(extra: &str) -> String {
        format!(
            "info_hash={}&peer_id={}&port=6881&uploaded=0&downloaded=0&left=100{extra}",
            encode_binary(&[0xAB; 20]),
            encode_binary(b"-XX0001-abcdefghijkl")
        )
    }

    #[test]
    fn parses_full_announce() {
        let r = parse_announce(&query(
            "&event=started&compact=0&no_peer_id=1&numwant=1000&ip=10.1.2.3&key=k1&device=dev-7",
        ))
        .unwrap();
        assert_eq!(r.info_hash, InfoHash([0xAB; 20]));
        assert_eq!(&r.peer_id.0, b"-XX0001-abcdefghijkl");
        assert_eq!(r.port, 6881);
        assert_eq!(r.left, 100);
        assert_eq!(r.event, AnnounceEvent::Started);
        assert!(!r.compact);
        assert!(r.no_peer_id);
        assert_eq!(r.numwant, MAX_NUMWANT);
        assert_eq!(r.ip, Some("10.1.2.3".parse().unwrap()));
        assert_eq!(r.device.as_deref(), Some("dev-7"));
        assert_eq!(r.key.as_deref(), Some(b"k1".as_slice()));
    }

    /// The origin's QUIC listener comes as a port and a pin, both or
    /// neither; a bad value is named.
    #[test]
    fn origin_quic_is_a_port_and_a_pin() {
        let pin = "ab".repeat(32);
        let r = parse_announce(&query(&format!("&quic_port=6882&quic_pin={pin}"))).unwrap();
        assert_eq!(
            r.origin_quic,
            Some((6882, crate::rendezvous::CertFingerprint([0xab; 32])))
        );
        assert_eq!(parse_announce(&query("")).unwrap().origin_quic, None);
        assert_eq!(
            parse_announce(&query("&quic_port=6882")),
            Err(AnnounceError::Missing("quic_pin"))
        );
        assert_eq!(
            parse_announce(&query(&format!("&quic_pin={pin}"))),
            Err(AnnounceError::Missing("quic_port"))
        );
        assert!(matches!(
            parse_announce(&query(&format!("&quic_port=0&quic_pin={pin}"))),
            Err(AnnounceError::Invalid("quic_port", _))
        ));
        assert!(matches!(
            parse_announce(&query("&quic_port=6882&quic_pin=abcd")),
            Err(AnnounceError::Invalid("quic_pin", _))
        ));
    }

    /// BEP 3 leaves `key` and `trackerid` opaque: aria2 1.36 sends `key` as
    /// 8 raw bytes, percent-encoded, which are not UTF-8. Such announces are
    /// accepted with the bytes kept as they came; `ip=` with a DNS name (BEP 3
    /// allows one) is ignored, not refused.
    #[test]
    fn opaque_key_and_trackerid_bytes_are_accepted() {
        let r = parse_announce(&query("&key=%8A%01%FF%00%C3%28%A0%A1&trackerid=%FE%FF&ip=peer.example")).unwrap();
        assert_eq!(
            r.key.as_deref(),
            Some([0x8A, 0x01, 0xFF, 0x00, 0xC3, 0x28, 0xA0, 0xA1].as_slice())
        );
        assert_eq!(r.trackerid.as_deref(), Some([0xFE, 0xFF].as_slice()));
        assert_eq!(r.ip, None);
        let long = format!("&key={}", "%41".repeat(MAX_OPAQUE_LEN + 1));
        assert!(matches!(
            parse_announce(&query(&long)),
            Err(AnnounceError::Invalid("key", _))
        ));
    }

    #[test]
    fn names_missing_and_bad_parameters() {
        assert_eq!(
            parse_announce("peer_id=x"),
            Err(AnnounceError::Invalid("peer_id", "expected 20 bytes, got 1".into()))
        );
        let no_left = query("").replace("&left=100", "");
        assert_eq!(parse_announce(&no_left), Err(AnnounceError::Missing("left")));
        let bad_port = query("").replace("port=6881", "port=70000");
        assert!(matches!(
            parse_announce(&bad_port),
            Err(AnnounceError::Invalid("port", _))
        ));
        let zero_port = query("").replace("port=6881", "port=0");
        assert!(matches!(
            parse_announce(&zero_port),
            Err(AnnounceError::Invalid("port", _))
        ));
        assert!(matches!(
            parse_announce(&query("&event=bogus")),
            Err(AnnounceError::Invalid("event", _))
        ));
        let long = "a".repeat(MAX_QUERY_LEN + 1);
        assert_eq!(parse_announce(&long), Err(AnnounceError::TooLong(MAX_QUERY_LEN)));
        assert_eq!(parse_announce(""), Err(AnnounceError::Missing("info_hash")));
    }

    #[test]
    fn compact_response_round_trips() {
        let resp = AnnounceResponse {
            interval: 30,
            min_interval: 10,
            complete: 1,
            incomplete: 2,
            peers: vec![
                PeerAddr {
                    peer_id: PeerId([1; 20]),
                    addr: "127.0.0.1:7000".parse().unwrap(),
                },
                PeerAddr {
                    peer_id: PeerId([2; 20]),
                    addr: "[::1]:7001".parse().unwrap(),
                },
            ],
        };
        let bytes = encode_announce(&resp, true, false);
        // Keys must come out sorted (BEP 3 bencoding).
        let s = String::from_utf8_lossy(&bytes);
        let order: Vec<usize> = ["complete", "incomplete", "interval", "min interval", "peers"]
            .iter()
            .map(|k| s.find(k).unwrap())
            .collect();
        assert!(order.windows(2).all(|w| w[0] < w[1]), "{s}");
        let (interval, peers) = decode_announce(&bytes).unwrap();
        assert_eq!(interval, 30);
        assert_eq!(
            peers,
            vec!["127.0.0.1:7000".parse().unwrap(), "[::1]:7001".parse().unwrap()]
        );
        let dict_form = encode_announce(&resp, false, false);
        assert_eq!(decode_announce(&dict_form).unwrap().1.len(), 2);
    }

    #[test]
    fn failure_is_bencoded() {
        assert_eq!(encode_failure("bad port"), b"d14:failure reason8:bad porte".to_vec());
        assert!(decode_announce(&encode_failure("x")).is_err());
    }

    #[test]
    fn scrape_parses_many_and_encodes() {
        let q = format!(
            "info_hash={}&info_hash={}",
            encode_binary(&[1; 20]),
            encode_binary(&[2; 20])
        );
        assert_eq!(parse_scrape(&q).unwrap(), vec![InfoHash([1; 20]), InfoHash([2; 20])]);
        let enc = encode_scrape(&[(
            InfoHash([1; 20]),
            ScrapeStats {
                complete: 3,
                downloaded: 4,
                incomplete: 5,
            },
        )]);
        let s = String::from_utf8_lossy(&enc);
        assert!(s.starts_with("d5:filesd20:"), "{s}");
        assert!(s.contains("8:completei3e10:downloadedi4e10:incompletei5e"), "{s}");
        assert_eq!(
            decode_scrape(&enc, &InfoHash([1; 20])).unwrap(),
            ScrapeStats {
                complete: 3,
                downloaded: 4,
                incomplete: 5
            }
        );
        assert!(decode_scrape(&enc, &InfoHash([2; 20])).is_err());
        assert!(decode_scrape(&encode_failure("x"), &InfoHash([1; 20])).is_err());
    }

    /// xorshift64*: a small deterministic PRNG, so that a failure replays.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    /// Fragments that steer random queries into every branch of the parsers.
    const TOKENS: &[&str] = &[
        "info_hash",
        "peer_id",
        "port",
        "uploaded",
        "downloaded",
        "left",
        "event",
        "compact",
        "no_peer_id",
        "numwant",
        "ip",
        "key",
        "trackerid",
        "device",
        "origin_token",
        "=",
        "=",
        "&",
        "&",
        "&&",
        "%",
        "%2",
        "%zz",
        "%ff",
        "%00",
        "%C3%A9",
        "%e2%82",
        "0",
        "1",
        "true",
        "65535",
        "65536",
        "-1",
        "+5",
        "18446744073709551616",
        "started",
        "stopped",
        "completed",
        "empty",
        "::1",
        "127.0.0.1",
        "[::1]",
        "\u{e9}",
        "\u{10FFFF}",
        " ",
    ];

    /// One random query: raw random bytes (lossy UTF-8), a string of tokens
    /// with random bytes between them, or a mutated valid announce.
    fn random_query(rng: &mut Rng, valid: &str) -> String {
        match rng.below(3) {
            0 => {
                let len = if rng.below(100) == 0 {
                    MAX_QUERY_LEN + rng.below(64)
                } else {
                    rng.below(300)
                };
                let bytes: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
                String::from_utf8_lossy(&bytes).into_owned()
            }
            1 => {
                let mut q = String::new();
                for _ in 0..rng.below(60) {
                    match rng.below(8) {
                        0 => q.push_str(&encode_binary(&(0..20).map(|_| rng.next() as u8).collect::<Vec<_>>())),
                        1 => q.push(char::from_u32(rng.below(0x11_0000) as u32).unwrap_or('?')),
                        _ => q.push_str(TOKENS[rng.below(TOKENS.len())]),
                    }
                }
                q
            }
            _ => {
                let mut b = valid.as_bytes().to_vec();
                for _ in 0..1 + rng.below(4) {
                    let at = rng.below(b.len() + 1);
                    match rng.below(3) {
                        0 if at < b.len() => b[at] = rng.next() as u8,
                        1 if at < b.len() => {
                            b.remove(at);
                        }
                        _ => b.insert(at, TOKENS[rng.below(TOKENS.len())].as_bytes()[0]),
                    }
                }
                String::from_utf8_lossy(&b).into_owned()
            }
        }
    }

    /// Property test: neither parser panics on 100,000 random queries, and
    /// what they accept keeps their invariants. Deterministic (fixed seed).
    #[test]
    fn parsers_never_panic_on_random_queries() {
        const CASES: usize = 100_000;
        let valid = query("&event=started&numwant=5&ip=10.0.0.1&key=k&device=d1");
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        let started = std::time::Instant::now();
        let (mut announces_ok, mut scrapes_ok) = (0usize, 0usize);
        for i in 0..CASES {
            let q = random_query(&mut rng, &valid);
            let a = std::panic::catch_unwind(|| parse_announce(&q));
            let a = a.unwrap_or_else(|_| panic!("parse_announce panicked on case {i}: {q:?}"));
            match a {
                Ok(r) => {
                    announces_ok += 1;
                    assert!(r.port != 0 && r.numwant <= MAX_NUMWANT, "case {i}: {q:?} -> {r:?}");
                    assert!(q.len() <= MAX_QUERY_LEN);
                }
                Err(e) => {
                    if q.len() > MAX_QUERY_LEN {
                        assert_eq!(e, AnnounceError::TooLong(MAX_QUERY_LEN));
                    }
                    let body = encode_failure(&e.to_string());
                    assert!(
                        decode_announce(&body).is_err(),
                        "case {i}: a failure must decode as one"
                    );
                }
            }
            let s = std::panic::catch_unwind(|| parse_scrape(&q));
            match s.unwrap_or_else(|_| panic!("parse_scrape panicked on case {i}: {q:?}")) {
                Ok(h) => {
                    scrapes_ok += 1;
                    assert!(h.len() <= MAX_SCRAPE_HASHES);
                }
                Err(e) => {
                    let _ = e.to_string();
                }
            }
        }
        eprintln!(
            "{CASES} random queries through parse_announce and parse_scrape in {:?} \
             ({announces_ok} announces and {scrapes_ok} scrapes accepted)",
            started.elapsed()
        );
        // The generators reach past the first parameter: some inputs parse.
        assert!(announces_ok > CASES / 100, "only {announces_ok} announces parsed");
        assert!(scrapes_ok > CASES / 10, "only {scrapes_ok} scrapes parsed");
    }
}
