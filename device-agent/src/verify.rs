//! Package verification: the finished file's SHA-256 against the release
//! manifest, before the package is offered for installation.

use std::io::Read;
use std::path::Path;

use sha2::{Digest, Sha256};

/// Why a package was refused.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The package path.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The SHA-256 differs from the manifest's.
    #[error("SHA-256 mismatch: manifest says {expected}, package is {actual}")]
    Mismatch {
        /// Hex SHA-256 from the manifest.
        expected: String,
        /// Hex SHA-256 of the file.
        actual: String,
    },
}

/// Hex SHA-256 of a file, read in 1 MiB blocks.
pub fn sha256_file(path: &Path) -> Result<String, VerifyError> {
    let io = |source| VerifyError::Io {
        path: path.display().to_string(),
        source,
    };
    let mut f = std::fs::File::open(path).map_err(io)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(io)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

/// Checks that the file at `path` has SHA-256 `expected_hex` (case-insensitive).
pub fn verify_package(path: &Path, expected_hex: &str) -> Result<(), VerifyError> {
    let actual = sha256_file(path)?;
    if !actual.eq_ignore_ascii_case(expected_hex) {
        return Err(VerifyError::Mismatch {
            expected: expected_hex.to_ascii_lowercase(),
            actual,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_right_hash_and_refuses_another() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("pkg");
        std::fs::write(&p, b"abc").unwrap();
        let good = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        verify_package(&p, good).unwrap();
        verify_package(&p, &good.to_uppercase()).unwrap();
        let err = verify_package(&p, &"0".repeat(64)).unwrap_err();
        assert!(err.to_string().contains("SHA-256 mismatch"), "{err}");
        assert!(matches!(
            verify_package(&dir.path().join("none"), good),
            Err(VerifyError::Io { .. })
        ));
    }
}
