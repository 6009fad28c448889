//! Rollout waves and release audiences: which devices a release is offered
//! to. Pure: no I/O.
//!
//! A release has a rollout percentage `p` (0..=100). A device is in the wave
//! when its bucket — the first 8 bytes of SHA-256(info_hash ‖ device_id) as a
//! big-endian integer, mod 100 — is below `p`. The bucket is a pure function
//! of the release and the device, so raising `p` only adds devices (every
//! device in the 10 % wave is also in the 20 % wave), and each release draws
//! its own sample of devices. A release with a signed manifest is offered
//! only to devices on the manifest's channel whose model it lists (an empty
//! model list means every model).

use sha2::{Digest, Sha256};

use crate::ids::InfoHash;
use crate::manifest::Manifest;

/// The device's bucket for a release, 0..=99.
pub fn bucket(info_hash: &InfoHash, device_id: &str) -> u8 {
    let mut h = Sha256::new();
    h.update(info_hash.0);
    h.update(device_id.as_bytes());
    let d = h.finalize();
    let first = u64::from_be_bytes(d[..8].try_into().expect("8 bytes"));
    (first % 100) as u8
}

/// Whether the device is in a wave of `percent` % of devices (100 and
/// above: every device; 0: none).
pub fn in_wave(info_hash: &InfoHash, device_id: &str, percent: u8) -> bool {
    bucket(info_hash, device_id) < percent
}

/// Why a device is not offered a release.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The device's bucket is not below the rollout percentage.
    #[error("device is not in this release's rollout wave ({percent} % of devices so far)")]
    OutsideWave {
        /// The release's current rollout percentage.
        percent: u8,
    },
    /// The manifest names another channel.
    #[error("release is for channel {release:?}, device is on {device:?}")]
    Channel {
        /// Channel in the manifest.
        release: String,
        /// The device's channel.
        device: String,
    },
    /// The manifest does not list the device's model.
    #[error("release is not for device model {0:?}")]
    Model(String),
}

/// Who a release is offered to: its rollout percentage and, when it has a
/// signed manifest, the manifest's channel and models.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Audience {
    /// Rollout percentage, 0..=100.
    pub percent: u8,
    /// Channel named by the manifest, if the release has one.
    pub channel: Option<String>,
    /// Models named by the manifest; empty means every model.
    pub models: Vec<String>,
    /// Whether the release was pushed (then raising the wave pushes it to
    /// the devices newly included).
    pub pushed: bool,
}

impl Audience {
    /// The audience of a release with rollout `percent` and manifest JSON
    /// text `manifest` (not verified here: devices verify the signature).
    /// A manifest that does not parse is ignored (registration refuses
    /// those).
    pub fn new(percent: u8, manifest: Option<&str>, pushed: bool) -> Self {
        let m = manifest.and_then(|m| serde_json::from_str::<Manifest>(m).ok());
        Audience {
            percent: percent.min(100),
            channel: m.as_ref().map(|m| m.channel.clone()),
            models: m.map(|m| m.models).unwrap_or_default(),
            pushed,
        }
    }

    /// Whether a device (id, channel, model) is offered the release
    /// `info_hash`; the reason when not.
    pub fn admits(&self, info_hash: &InfoHash, device_id: &str, channel: &str, model: &str) -> Result<(), Refusal> {
        if let Some(c) = &self.channel {
            if c != channel {
                return Err(Refusal::Channel {
                    release: c.clone(),
                    device: channel.into(),
                });
            }
        }
        if !self.models.is_empty() && !self.models.iter().any(|m| m == model) {
            return Err(Refusal::Model(model.into()));
        }
        if !in_wave(info_hash, device_id, self.percent) {
            return Err(Refusal::OutsideWave { percent: self.percent });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waves_spread_evenly_and_only_grow() {
        let ih = InfoHash([7u8; 20]);
        let ids: Vec<String> = (0..10_000).map(|i| format!("device-{i}")).collect();
        let at = |p: u8| ids.iter().filter(|d| in_wave(&ih, d, p)).count();
        let quarter = at(25);
        assert!(
            (2_300..=2_700).contains(&quarter),
            "25 % wave holds {quarter} of 10,000"
        );
        assert_eq!(at(0), 0);
        assert_eq!(at(100), 10_000);
        // Every device of a smaller wave is in every larger wave.
        for d in &ids {
            if in_wave(&ih, d, 10) {
                assert!(in_wave(&ih, d, 50));
            }
        }
        // Another release draws another sample.
        let other = InfoHash([8u8; 20]);
        let same = ids
            .iter()
            .filter(|d| in_wave(&ih, d, 25) == in_wave(&other, d, 25))
            .count();
        assert!(same < 9_000, "waves of two releases coincide for {same} devices");
        // Buckets are spread over 0..100.
        let mut hist = [0u32; 100];
        for d in &ids {
            hist[bucket(&ih, d) as usize] += 1;
        }
        assert!(hist.iter().all(|&n| (50..=150).contains(&n)), "{hist:?}");
    }

    #[test]
    fn manifest_channel_and_models_restrict_the_audience() {
        let manifest = serde_json::json!({
            "name": "p", "version": "1", "info_hash": "00".repeat(20), "size": 1, "sha256": "00",
            "channel": "beta", "models": ["m1", "m2"], "created_at": 0
        })
        .to_string();
        let a = Audience::new(100, Some(&manifest), false);
        let ih = InfoHash([1u8; 20]);
        assert_eq!(a.admits(&ih, "d", "beta", "m2"), Ok(()));
        assert!(matches!(
            a.admits(&ih, "d", "stable", "m2"),
            Err(Refusal::Channel { .. })
        ));
        assert_eq!(a.admits(&ih, "d", "beta", "m3"), Err(Refusal::Model("m3".into())));
        let none = Audience::new(0, None, false);
        assert_eq!(
            none.admits(&ih, "d", "any", "any"),
            Err(Refusal::OutsideWave { percent: 0 })
        );
        assert_eq!(Audience::new(100, None, false).admits(&ih, "d", "any", "any"), Ok(()));
    }
}
