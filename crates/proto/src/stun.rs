//! STUN binding responder (RFC 8489): tells a device the address and port its
//! UDP packets come from, as seen by the tracker (its server-reflexive
//! address), so that devices behind NAT learn what to announce.
//!
//! [`respond`] is the pure part (datagram in, reply out), built on the
//! `stun-rs` codec; the tracker's UDP socket loop calls it.
//!
//! Behaviour, per datagram:
//! - not STUN (shorter than the 20-byte header, top two bits set, wrong magic
//!   cookie, RFC 8489 §5): ignored, [`Verdict::NotStun`];
//! - a STUN header whose message does not decode (bad length, bad attribute):
//!   [`Verdict::Malformed`], counted in `ota_tracker_stun_malformed_total`
//!   and logged at debug;
//! - a success/error response, an indication, or a request for another
//!   method: ignored, [`Verdict::Ignored`] (RFC 8489 §6.3: indications and
//!   responses get no answer);
//! - a Binding request with an unknown comprehension-required attribute: a
//!   420 (Unknown Attribute) error response listing them (RFC 8489 §6.3.1.1);
//! - any other Binding request: a Binding success response with the same
//!   transaction id, carrying XOR-MAPPED-ADDRESS (RFC 8489 §14.2) of the
//!   request's source and SOFTWARE (§14.14).

use std::net::SocketAddr;

/// The default STUN port over UDP and TCP (IANA 3478, RFC 8489 §9).
pub const DEFAULT_STUN_PORT: u16 = 3478;

use stun_rs::attributes::stun::{ErrorCode, Software, UnknownAttributes, XorMappedAddress};
use stun_rs::methods::BINDING;
use stun_rs::{
    MessageClass, MessageDecoderBuilder, MessageEncoderBuilder, MessageHeader, StunAttribute, StunMessageBuilder,
    MAGIC_COOKIE, MESSAGE_HEADER_SIZE,
};

/// The SOFTWARE attribute (RFC 8489 §14.14) of every answer.
pub const SOFTWARE: &str = concat!("ota-tracker ", env!("CARGO_PKG_VERSION"));

/// Largest datagram read, in bytes; longer ones are truncated by the socket
/// and then fail to decode (RFC 8489 §6.1: STUN over UDP should stay under
/// the path MTU, 576 bytes when unknown).
pub const MAX_DATAGRAM: usize = 2048;

/// What [`respond`] made of one datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Send these bytes back to the source.
    Reply(Vec<u8>),
    /// Not a STUN message (RFC 8489 §5 header checks fail).
    NotStun,
    /// A STUN message that needs no answer (response, indication, other method).
    Ignored,
    /// A STUN header whose message cannot be decoded; the text says why.
    Malformed(String),
}

impl Verdict {
    /// The reply to send, if any.
    pub fn reply(self) -> Option<Vec<u8>> {
        match self {
            Verdict::Reply(bytes) => Some(bytes),
            _ => None,
        }
    }
}

/// The comprehension-required attributes (type below 0x8000) the responder
/// understands: those of RFC 8489 §18.3 (MAPPED-ADDRESS, USERNAME,
/// MESSAGE-INTEGRITY, ERROR-CODE, UNKNOWN-ATTRIBUTES, REALM, NONCE,
/// MESSAGE-INTEGRITY-SHA256, PASSWORD-ALGORITHM, USERHASH,
/// XOR-MAPPED-ADDRESS). Any other one in a request gets a 420.
const RFC8489_REQUIRED: [u16; 11] = [
    0x0001, 0x0006, 0x0008, 0x0009, 0x000a, 0x0014, 0x0015, 0x001c, 0x001d, 0x001e, 0x0020,
];

/// Whether `datagram` passes the RFC 8489 §5 header checks: at least 20
/// bytes, the two most significant bits zero, the magic cookie 0x2112A442.
fn looks_like_stun(datagram: &[u8]) -> bool {
    datagram.len() >= MESSAGE_HEADER_SIZE
        && datagram[0] & 0xc0 == 0
        && datagram[4..8] == MAGIC_COOKIE.as_u32().to_be_bytes()
}

/// Answers one UDP datagram received from `source`; see the module docs for
/// each case. Never panics, whatever the bytes.
pub fn respond(datagram: &[u8], source: SocketAddr) -> Verdict {
    if !looks_like_stun(datagram) {
        return Verdict::NotStun;
    }
    let header: &[u8; MESSAGE_HEADER_SIZE] = datagram[..MESSAGE_HEADER_SIZE].try_into().expect("checked length");
    if let Err(e) = MessageHeader::try_from(header) {
        return Verdict::Malformed(format!("header: {e}"));
    }
    let decoder = MessageDecoderBuilder::default().build();
    let msg = match decoder.decode(datagram) {
        Ok((msg, _)) => msg,
        Err(e) => return Verdict::Malformed(format!("{:?}", e.0)),
    };
    if msg.method() != BINDING || msg.class() != MessageClass::Request {
        return Verdict::Ignored;
    }
    let unknown: Vec<u16> = msg
        .attributes()
        .iter()
        .filter_map(|a| match a {
            StunAttribute::Unknown(u) if u.attribute_type().is_comprehension_required() => {
                Some(u.attribute_type().as_u16())
            }
            // An attribute stun-rs decodes only because a crate elsewhere in
            // the build enabled one of its features (`discovery`, `ice`,
            // `turn`, ...: cargo unifies them): still unknown to this
            // responder, so CHANGE-REQUEST gets a 420 as without the feature
            // (RFC 5780 §7.2 clients then know it is not an RFC 5780 server).
            a if a.attribute_type().is_comprehension_required()
                && !RFC8489_REQUIRED.contains(&a.attribute_type().as_u16()) =>
            {
                Some(a.attribute_type().as_u16())
            }
            _ => None,
        })
        .collect();
    let software = Software::new(SOFTWARE).expect("a short SOFTWARE text");
    let answer = if unknown.is_empty() {
        StunMessageBuilder::new(BINDING, MessageClass::SuccessResponse)
            .with_transaction_id(*msg.transaction_id())
            .with_attribute(XorMappedAddress::from(source))
            .with_attribute(software)
            .build()
    } else {
        let mut list = UnknownAttributes::default();
        for t in unknown {
            list.add(t);
        }
        let code = stun_rs::ErrorCode::new(420, "Unknown Attribute").expect("a valid error code");
        StunMessageBuilder::new(BINDING, MessageClass::ErrorResponse)
            .with_transaction_id(*msg.transaction_id())
            .with_attribute(ErrorCode::new(code))
            .with_attribute(list)
            .with_attribute(software)
            .build()
    };
    let mut buf = [0u8; 512];
    match MessageEncoderBuilder::default().build().encode(&mut buf, &answer) {
        Ok(n) => Verdict::Reply(buf[..n].to_vec()),
        // Cannot happen for these few fixed-size attributes; never answer garbage.
        Err(e) => Verdict::Malformed(format!("encoding the answer: {e}")),
    }
}

/// Encodes a Binding request (RFC 8489 §5, no attributes) with transaction
/// id `id`: 20 bytes, what a client sends to learn its server-reflexive
/// address.
pub fn binding_request(id: stun_rs::TransactionId) -> Vec<u8> {
    let msg = StunMessageBuilder::new(BINDING, MessageClass::Request)
        .with_transaction_id(id)
        .build();
    let mut buf = [0u8; MESSAGE_HEADER_SIZE];
    let n = MessageEncoderBuilder::default()
        .build()
        .encode(&mut buf, &msg)
        .expect("a Binding request without attributes fits in its 20-byte header");
    buf[..n].to_vec()
}

/// What the first byte of a UDP datagram says it is, when STUN shares a
/// socket with QUIC (RFC 7983 §7, updated by RFC 9443 §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DatagramKind {
    /// 0..=3: STUN (the two top bits of the message type are zero, RFC 8489 §5).
    Stun,
    /// QUIC (RFC 9000 §17: the fixed bit, 0x40, set): 64..=127, short
    /// headers (RFC 9443 §3 gives QUIC this whole range when no TURN channel
    /// shares the socket), and 192..=255, long headers (Initial, Handshake:
    /// a range RFC 7983 leaves unassigned).
    Quic,
    /// Anything else (ZRTP, DTLS, RTP, ...): neither ours to answer nor QUIC's.
    Other,
}

/// Demultiplexes one datagram by its first byte (RFC 7983 §7, RFC 9443
/// §3); an empty datagram is [`DatagramKind::Other`].
pub fn classify_datagram(first_byte: Option<u8>) -> DatagramKind {
    match first_byte {
        Some(0..=3) => DatagramKind::Stun,
        Some(64..=127 | 192..=255) => DatagramKind::Quic,
        _ => DatagramKind::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use stun_rs::TransactionId;

    fn decode(bytes: &[u8]) -> stun_rs::StunMessage {
        MessageDecoderBuilder::default().build().decode(bytes).unwrap().0
    }

    #[test]
    fn binding_request_gets_its_source_back() {
        for source in ["203.0.113.7:40000", "[2001:db8::5]:3478"] {
            let source: SocketAddr = source.parse().unwrap();
            let id = TransactionId::default();
            let reply = respond(&binding_request(id), source).reply().expect("an answer");
            let msg = decode(&reply);
            assert_eq!(msg.class(), MessageClass::SuccessResponse);
            assert_eq!(msg.method(), BINDING);
            assert_eq!(msg.transaction_id(), &id);
            let mapped = msg.get::<XorMappedAddress>().unwrap().as_xor_mapped_address().unwrap();
            assert_eq!(*mapped.socket_address(), source);
        }
    }

    #[test]
    fn rfc5769_sample_request_is_answered() {
        // RFC 5769 §2.1: a Binding request with SOFTWARE, PRIORITY, ICE-CONTROLLED,
        // USERNAME, MESSAGE-INTEGRITY and FINGERPRINT (PRIORITY and ICE-CONTROLLED
        // are comprehension-required ICE attributes, unknown without the `ice`
        // feature: so the answer is a 420 naming them).
        let sample: [u8; 108] = [
            0x00, 0x01, 0x00, 0x58, 0x21, 0x12, 0xa4, 0x42, 0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34, 0xd6, 0x86, 0xfa, 0x87,
            0xdf, 0xae, 0x80, 0x22, 0x00, 0x10, 0x53, 0x54, 0x55, 0x4e, 0x20, 0x74, 0x65, 0x73, 0x74, 0x20, 0x63, 0x6c,
            0x69, 0x65, 0x6e, 0x74, 0x00, 0x24, 0x00, 0x04, 0x6e, 0x00, 0x01, 0xff, 0x80, 0x29, 0x00, 0x08, 0x93, 0x2f,
            0xf9, 0xb1, 0x51, 0x26, 0x3b, 0x36, 0x00, 0x06, 0x00, 0x09, 0x65, 0x76, 0x74, 0x6a, 0x3a, 0x68, 0x36, 0x76,
            0x59, 0x20, 0x20, 0x20, 0x00, 0x08, 0x00, 0x14, 0x9a, 0xea, 0xa7, 0x0c, 0xbf, 0xd8, 0xcb, 0x56, 0x78, 0x1e,
            0xf2, 0xb5, 0xb2, 0xd3, 0xf2, 0x49, 0xc1, 0xb5, 0x71, 0xa2, 0x80, 0x28, 0x00, 0x04, 0xe5, 0x7a, 0x3b, 0xcf,
        ];
        let source: SocketAddr = "192.0.2.1:32853".parse().unwrap();
        let reply = respond(&sample, source).reply().expect("an answer");
        let msg = decode(&reply);
        assert_eq!(msg.transaction_id().as_bytes(), &sample[8..20]);
        assert_eq!(msg.class(), MessageClass::ErrorResponse);
        let code = msg.get::<ErrorCode>().unwrap().as_error_code().unwrap();
        assert_eq!(code.error_code().error_code(), 420);
        let unknown = msg.get::<UnknownAttributes>().unwrap().as_unknown_attributes().unwrap();
        assert_eq!(unknown.attributes(), &[0x0024]);
    }

    #[test]
    fn responses_indications_and_garbage_are_not_answered() {
        let source: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let ok = respond(&binding_request(TransactionId::default()), source)
            .reply()
            .unwrap();
        assert_eq!(respond(&ok, source), Verdict::Ignored, "a response is never answered");
        let ind = StunMessageBuilder::new(BINDING, MessageClass::Indication).build();
        let mut buf = [0u8; 64];
        let n = MessageEncoderBuilder::default().build().encode(&mut buf, &ind).unwrap();
        assert_eq!(respond(&buf[..n], source), Verdict::Ignored);
        assert_eq!(respond(b"", source), Verdict::NotStun);
        assert_eq!(respond(b"GET /announce HTTP/1.1\r\n\r\n", source), Verdict::NotStun);
        // Right cookie, length field beyond the datagram.
        let mut bad = binding_request(TransactionId::default());
        bad[3] = 0x40;
        assert!(matches!(respond(&bad, source), Verdict::Malformed(_)));
    }

    #[test]
    fn change_request_gets_a_420_whatever_stun_rs_features_are_enabled() {
        // A Binding request with CHANGE-REQUEST (0x0003, change IP and port,
        // RFC 5780 §7.2): this responder has one address, so it must not
        // pretend to honour it.
        let mut req = binding_request(TransactionId::default());
        req[3] = 8;
        req.extend_from_slice(&[0x00, 0x03, 0x00, 0x04, 0x00, 0x00, 0x00, 0x06]);
        let reply = respond(&req, "127.0.0.1:5000".parse().unwrap())
            .reply()
            .expect("an answer");
        let msg = decode(&reply);
        assert_eq!(msg.class(), MessageClass::ErrorResponse);
        let unknown = msg.get::<UnknownAttributes>().unwrap().as_unknown_attributes().unwrap();
        assert_eq!(unknown.attributes(), &[0x0003]);
    }

    #[test]
    fn datagrams_are_told_apart_by_their_first_byte() {
        assert_eq!(
            classify_datagram(binding_request(TransactionId::default()).first().copied()),
            DatagramKind::Stun
        );
        for b in 0..=3u8 {
            assert_eq!(classify_datagram(Some(b)), DatagramKind::Stun);
        }
        // Short headers (0x40..=0x7f) and long headers (0xc0..=0xff, an Initial is 0xc0 | ...).
        for b in [64u8, 0x4f, 127, 0xc0, 0xc3, 255] {
            assert_eq!(classify_datagram(Some(b)), DatagramKind::Quic);
        }
        // ZRTP, DTLS, RTP/RTCP (RFC 7983) and unassigned bytes.
        for b in [4u8, 16, 19, 20, 63, 128, 191] {
            assert_eq!(classify_datagram(Some(b)), DatagramKind::Other);
        }
        assert_eq!(classify_datagram(None), DatagramKind::Other);
    }

    #[test]
    fn random_datagrams_never_panic_and_are_never_answered() {
        // A small LCG: reproducible, no seeded RNG type needed.
        let mut x: u64 = 12345;
        let mut next = move || {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (x >> 33) as u8
        };
        let source: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let valid = binding_request(TransactionId::default());
        for i in 0..100_000 {
            let len = next() as usize % 120;
            let mut d: Vec<u8> = (0..len).map(|_| next()).collect();
            if i % 2 == 0 && d.len() >= 20 {
                // Half of them carry a valid STUN header prefix with random attributes.
                d[..8].copy_from_slice(&valid[..8]);
                let body = (d.len() - 20) as u16;
                d[2..4].copy_from_slice(&body.to_be_bytes());
            }
            let verdict = respond(&d, source);
            if let Verdict::Reply(bytes) = &verdict {
                // Only well-formed Binding requests are answered.
                assert!(i % 2 == 0, "random bytes answered: {d:?}");
                assert_eq!(&bytes[8..20], &d[8..20], "transaction id echoed");
            }
        }
    }
}
