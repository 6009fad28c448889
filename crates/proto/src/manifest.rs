//! Signed release manifests (ed25519, RFC 8032, through ed25519-dalek).
//!
//! The device maker signs, at publish time, a JSON manifest naming the
//! package, its info hash, size and SHA-256, and the channel and device
//! models it is for. Devices pin the public key and refuse any release whose
//! manifest does not verify, names another info hash, or is not for them. The
//! signature covers the manifest's JSON text byte for byte, so the text is
//! carried as is and parsed only after verification.
//!
//! Pure: keys are passed in (the binaries read key files through
//! `ota_common::keys`).

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};

use crate::ids::InfoHash;

/// What a manifest states about a release.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Package name.
    pub name: String,
    /// Release version.
    pub version: String,
    /// Info hash (40 hex characters in the JSON text).
    pub info_hash: InfoHash,
    /// Package size in bytes.
    pub size: u64,
    /// SHA-256 of the package, 64 hex characters.
    pub sha256: String,
    /// Update channel, e.g. `stable`.
    pub channel: String,
    /// Device models the release is for; empty means every model.
    pub models: Vec<String>,
    /// Signing time, seconds since the Unix epoch.
    pub created_at: i64,
}

/// A manifest's JSON text and its ed25519 signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedManifest {
    /// The manifest as signed (JSON text).
    pub manifest: String,
    /// ed25519 signature over the bytes of `manifest`, 128 hex characters.
    pub signature: String,
}

/// Why a manifest was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    /// The signature is malformed or does not verify with the pinned key.
    #[error("manifest signature does not verify with the pinned public key")]
    BadSignature,
    /// The signed text is not a manifest.
    #[error("manifest is not valid JSON: {0}")]
    Malformed(String),
    /// The manifest is for another release.
    #[error("manifest names info hash {manifest}, release is {release}")]
    WrongRelease {
        /// Info hash in the manifest.
        manifest: String,
        /// Info hash of the release offered.
        release: String,
    },
    /// The manifest is for another channel.
    #[error("manifest is for channel {manifest:?}, device is on {device:?}")]
    WrongChannel {
        /// Channel in the manifest.
        manifest: String,
        /// The device's channel.
        device: String,
    },
    /// The manifest does not list this device's model.
    #[error("manifest is for models {models:?}, not {device:?}")]
    WrongModel {
        /// Models in the manifest.
        models: Vec<String>,
        /// The device's model.
        device: String,
    },
    /// The release record (or its `.torrent`) states another package name
    /// or size than the signed manifest: the manifest's word is the one
    /// that counts, and the release is refused.
    #[error("the release's {field} is {release:?}, the signed manifest says {manifest:?}")]
    Mismatch {
        /// Which field differs: `name` or `size`.
        field: &'static str,
        /// The manifest's value.
        manifest: String,
        /// The release record's value.
        release: String,
    },
    /// The release is not newer than one already installed.
    #[error("version {offered} is not newer than the installed {installed}")]
    NotNewer {
        /// Version offered.
        offered: String,
        /// Version installed.
        installed: String,
    },
}

/// Orders two version strings: dot- or dash-separated components compare
/// numerically when both are numbers, else as text (`2.10` > `2.9`,
/// `1.0.1` > `1.0`). Returns whether `offered` is strictly newer.
pub fn is_newer_version(offered: &str, installed: &str) -> bool {
    use std::cmp::Ordering;
    let parts = |v: &str| v.split(['.', '-']).map(str::to_string).collect::<Vec<_>>();
    let (a, b) = (parts(offered), parts(installed));
    for i in 0..a.len().max(b.len()) {
        let ord = match (a.get(i), b.get(i)) {
            (Some(x), Some(y)) => match (x.parse::<u64>(), y.parse::<u64>()) {
                (Ok(x), Ok(y)) => x.cmp(&y),
                _ => x.cmp(y),
            },
            (Some(_), None) => Ordering::Greater,
            (None, Some(_)) => Ordering::Less,
            (None, None) => Ordering::Equal,
        };
        if ord != Ordering::Equal {
            return ord == Ordering::Greater;
        }
    }
    false
}

/// Signs a manifest: serializes it to JSON and signs those bytes.
pub fn sign(manifest: &Manifest, key: &SigningKey) -> SignedManifest {
    let text = serde_json::to_string(manifest).expect("a manifest always serializes");
    let sig: Signature = key.sign(text.as_bytes());
    SignedManifest {
        manifest: text,
        signature: hex::encode(sig.to_bytes()),
    }
}

/// Verifies the signature (strict RFC 8032 verification) and parses the
/// manifest. Errors: [`ManifestError::BadSignature`] or [`ManifestError::Malformed`].
pub fn verify(signed: &SignedManifest, key: &VerifyingKey) -> Result<Manifest, ManifestError> {
    let bytes: [u8; 64] = hex::decode(&signed.signature)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or(ManifestError::BadSignature)?;
    key.verify_strict(signed.manifest.as_bytes(), &Signature::from_bytes(&bytes))
        .map_err(|_| ManifestError::BadSignature)?;
    serde_json::from_str(&signed.manifest).map_err(|e| ManifestError::Malformed(e.to_string()))
}

impl Manifest {
    /// Checks that the manifest is for release `info_hash` and for a device
    /// on `channel` of `model`.
    pub fn check_for(&self, info_hash: &InfoHash, channel: &str, model: &str) -> Result<(), ManifestError> {
        if self.info_hash != *info_hash {
            return Err(ManifestError::WrongRelease {
                manifest: self.info_hash.to_hex(),
                release: info_hash.to_hex(),
            });
        }
        if self.channel != channel {
            return Err(ManifestError::WrongChannel {
                manifest: self.channel.clone(),
                device: channel.into(),
            });
        }
        if !self.models.is_empty() && !self.models.iter().any(|m| m == model) {
            return Err(ManifestError::WrongModel {
                models: self.models.clone(),
                device: model.into(),
            });
        }
        Ok(())
    }
}

/// A new random signing key (32 bytes from the OS generator).
pub fn generate_signing_key() -> SigningKey {
    use rand::RngCore;
    let mut seed = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut seed);
    SigningKey::from_bytes(&seed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest() -> Manifest {
        Manifest {
            name: "fw.bin".into(),
            version: "2.1".into(),
            info_hash: InfoHash([0xab; 20]),
            size: 10,
            sha256: "cd".repeat(32),
            channel: "stable".into(),
            models: vec!["gw-100".into()],
            created_at: 1,
        }
    }

    #[test]
    fn signed_manifest_verifies_and_tampering_is_caught() {
        let key = generate_signing_key();
        let signed = sign(&manifest(), &key);
        assert_eq!(verify(&signed, &key.verifying_key()).unwrap(), manifest());
        let tampered = SignedManifest {
            manifest: signed.manifest.replace("cdcd", "cdce"),
            ..signed.clone()
        };
        assert_eq!(
            verify(&tampered, &key.verifying_key()),
            Err(ManifestError::BadSignature)
        );
        let other = generate_signing_key();
        assert_eq!(
            verify(&signed, &other.verifying_key()),
            Err(ManifestError::BadSignature)
        );
        let garbage = SignedManifest {
            signature: "zz".into(),
            ..signed
        };
        assert_eq!(verify(&garbage, &key.verifying_key()), Err(ManifestError::BadSignature));
    }

    #[test]
    fn manifest_must_be_for_this_release_channel_and_model() {
        let m = manifest();
        m.check_for(&InfoHash([0xab; 20]), "stable", "gw-100").unwrap();
        assert!(matches!(
            m.check_for(&InfoHash([0; 20]), "stable", "gw-100"),
            Err(ManifestError::WrongRelease { .. })
        ));
        assert!(matches!(
            m.check_for(&InfoHash([0xab; 20]), "beta", "gw-100"),
            Err(ManifestError::WrongChannel { .. })
        ));
        assert!(matches!(
            m.check_for(&InfoHash([0xab; 20]), "stable", "gw-200"),
            Err(ManifestError::WrongModel { .. })
        ));
        let all = Manifest { models: vec![], ..m };
        all.check_for(&InfoHash([0xab; 20]), "stable", "anything").unwrap();
    }

    #[test]
    fn versions_compare_numerically() {
        assert!(is_newer_version("2.10", "2.9"));
        assert!(is_newer_version("1.0.1", "1.0"));
        assert!(!is_newer_version("1.0", "1.0"));
        assert!(!is_newer_version("1.9", "1.10"));
        assert!(is_newer_version("2026.11.2", "2026.11.1"));
        assert!(is_newer_version("1.0-rc2", "1.0-rc1"));
    }
}
