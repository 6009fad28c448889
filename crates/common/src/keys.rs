//! Key files of the device maker's manifest signing key (ed25519, RFC 8032):
//! 64 hex characters, the 32-byte secret or public key.

use std::path::Path;

use anyhow::Context;
use ed25519_dalek::{SigningKey, VerifyingKey};

/// Largest key file read, in bytes (a key file is 64 hex characters).
const MAX_KEY_FILE: u64 = 4096;

/// 64 hex characters (surrounding white space allowed) as 32 bytes.
fn hex32(text: &str) -> anyhow::Result<[u8; 32]> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(text.trim(), &mut out).map_err(|e| anyhow::anyhow!("expected 64 hex characters: {e}"))?;
    Ok(out)
}

fn read_small(path: &Path, what: &str) -> anyhow::Result<String> {
    let meta = std::fs::metadata(path).with_context(|| format!("cannot read {what} {}", path.display()))?;
    anyhow::ensure!(
        meta.len() <= MAX_KEY_FILE,
        "{what} {} is larger than {MAX_KEY_FILE} bytes",
        path.display()
    );
    std::fs::read_to_string(path).with_context(|| format!("cannot read {what} {}", path.display()))
}

/// Reads a signing key file: the 32-byte secret key as 64 hex characters.
///
/// Errors: an unreadable file, one over 4 KiB, or not 64 hex characters.
pub fn load_signing_key(path: &Path) -> anyhow::Result<SigningKey> {
    let text = read_small(path, "signing key")?;
    Ok(SigningKey::from_bytes(
        &hex32(&text).with_context(|| format!("signing key {}", path.display()))?,
    ))
}

/// Reads a public key: 64 hex characters, given inline or in a file.
///
/// Errors: neither inline hex nor a readable file of it, or not an ed25519
/// public key.
pub fn load_verifying_key(hex_or_path: &str) -> anyhow::Result<VerifyingKey> {
    let bytes = match hex32(hex_or_path) {
        Ok(b) => b,
        Err(_) => {
            let path = Path::new(hex_or_path);
            hex32(&read_small(path, "public key")?).with_context(|| format!("public key {}", path.display()))?
        }
    };
    VerifyingKey::from_bytes(&bytes).map_err(|e| anyhow::anyhow!("not an ed25519 public key: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_load_from_files_or_inline_hex() {
        let dir = tempfile::tempdir().unwrap();
        let key = SigningKey::from_bytes(&[7u8; 32]);
        let p = dir.path().join("k");
        std::fs::write(&p, hex::encode(key.to_bytes())).unwrap();
        assert_eq!(load_signing_key(&p).unwrap().to_bytes(), key.to_bytes());
        let pub_hex = hex::encode(key.verifying_key().to_bytes());
        assert_eq!(load_verifying_key(&pub_hex).unwrap(), key.verifying_key());
        let pp = dir.path().join("k.pub");
        std::fs::write(&pp, format!("{pub_hex}\n")).unwrap();
        assert_eq!(load_verifying_key(pp.to_str().unwrap()).unwrap(), key.verifying_key());
        assert!(load_verifying_key("/no/such/file").is_err());
    }
}
