//! Deterministic test packages: bytes that look random, differ from piece
//! to piece (so a piece served from the wrong offset fails its SHA-1) and
//! are the same in every run.

/// `len` deterministic bytes (xorshift64*); a different `seed` changes every
/// byte, so two seeds give two packages of the same length whose pieces all
/// differ.
pub fn package(len: usize, seed: u64) -> Vec<u8> {
    let mut x = 0x9E37_79B9_7F4A_7C15u64 ^ seed.wrapping_mul(0xD1B5_4A32_D192_ED03);
    (0..len)
        .map(|_| {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            (x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 56) as u8
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::package;

    #[test]
    fn same_seed_same_bytes_other_seed_other_pieces() {
        assert_eq!(package(1000, 1), package(1000, 1));
        assert_eq!(package(10, 1), package(1000, 1)[..10]);
        let (a, b) = (package(64 * 1024, 1), package(64 * 1024, 2));
        assert!(a.chunks(16384).zip(b.chunks(16384)).all(|(x, y)| x != y));
        // Pinned: other crates' tests rely on these exact bytes staying put.
        assert_eq!(package(4, 0), [0x0d, 0x54, 0xa8, 0x7d]);
    }
}
