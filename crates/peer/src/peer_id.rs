//! Peer ids for our own BitTorrent clients (BEP 3, Azureus style per BEP 20).

use ota_proto::PeerId;
use rand::Rng;

/// Peer-id prefix of the device agent (`-OA` + version `0100`).
pub const AGENT_PREFIX: &[u8; 8] = b"-OA0100-";
/// Peer-id prefix of the origin seeder.
pub const SEEDER_PREFIX: &[u8; 8] = b"-OS0100-";

/// An Azureus-style peer id: the 8-byte `prefix` and 12 random characters
/// from `[0-9a-z]`.
pub fn random_peer_id(prefix: &[u8; 8]) -> PeerId {
    const CHARS: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut id = [0u8; 20];
    id[..8].copy_from_slice(prefix);
    let mut rng = rand::thread_rng();
    for b in &mut id[8..] {
        *b = CHARS[rng.gen_range(0..CHARS.len())];
    }
    PeerId(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_and_alphanumerics() {
        let a = random_peer_id(AGENT_PREFIX);
        assert_eq!(&a.0[..8], AGENT_PREFIX);
        assert!(a.0[8..].iter().all(|c| c.is_ascii_digit() || c.is_ascii_lowercase()));
        assert_ne!(a, random_peer_id(AGENT_PREFIX));
    }
}
