//! Per-device tokens, checked in memory on every announce and API call.
//!
//! A device's token is 32 random bytes written as 64 lowercase hex
//! characters; the database keeps only its SHA-256 ([`token_digest`]). The tracker loads every digest at
//! start into a [`DeviceDirectory`] and keeps it current on register and
//! revoke, so an announce costs one SHA-256 and one hash-map look-up, never a
//! database query. Last-seen times are noted in memory (an atomic store) and
//! written in the periodic persistence round. Pure: no I/O.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

/// SHA-256 of a device token's text (the 64 hex characters as sent): the
/// 32-byte digest the database and the directory keep instead of the token.
pub fn token_digest(token: &str) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(token.as_bytes()).into()
}

/// What the tracker keeps in memory of a device to check its announces:
/// loaded by [`super::Registry::device_credentials`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceCredential {
    /// SHA-256 of the device's token (32 bytes).
    pub token_sha256: [u8; 32],
    /// Device id.
    pub device_id: String,
    /// Update channel, e.g. `stable`.
    pub channel: String,
    /// Device model.
    pub model: String,
}

/// Whether announces, scrapes and device API calls need a device token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum DeviceAuth {
    /// A valid device token (or the admin/origin token) is required.
    #[default]
    Required,
    /// Anyone may announce; device ids come from `device=` (development,
    /// plain BitTorrent clients).
    Off,
}

/// One registered device as the tracker keeps it in memory.
#[derive(Debug)]
pub struct DeviceEntry {
    /// Device id.
    pub device_id: Arc<str>,
    /// Update channel.
    pub channel: String,
    /// Device model.
    pub model: String,
    /// The direct paths it last reported (`PUT /api/paths`), kept in
    /// memory only: a device reports them again after a tracker restart.
    paths: std::sync::RwLock<Option<Arc<ota_proto::direct_paths::DirectPaths>>>,
    /// Latest announce not yet written, seconds since the Unix epoch; 0
    /// when there is nothing to write.
    unsaved_seen: AtomicI64,
}

impl DeviceEntry {
    /// Notes an announce at `now_secs` (seconds since the Unix epoch).
    pub fn seen(&self, now_secs: i64) {
        self.unsaved_seen.store(now_secs, Ordering::Relaxed);
    }

    /// Its last direct-paths report, if any (checked when it was taken).
    pub fn paths(&self) -> Option<Arc<ota_proto::direct_paths::DirectPaths>> {
        self.paths.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Keeps a checked direct-paths report.
    pub fn set_paths(&self, paths: ota_proto::direct_paths::DirectPaths) {
        *self.paths.write().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(paths));
    }
}

/// Every device's token digest → its entry.
#[derive(Debug, Default)]
pub struct DeviceDirectory {
    by_digest: HashMap<[u8; 32], Arc<DeviceEntry>>,
    by_id: HashMap<Arc<str>, [u8; 32]>,
}

/// Whether `token` looks like a device token: 64 lowercase hex characters.
pub fn well_formed(token: &str) -> bool {
    token.len() == 64 && token.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

impl DeviceDirectory {
    /// A directory holding `creds`.
    pub fn new(creds: impl IntoIterator<Item = DeviceCredential>) -> Self {
        let mut d = DeviceDirectory::default();
        for c in creds {
            d.insert(c);
        }
        d
    }

    /// Adds (or replaces, by id) a device.
    pub fn insert(&mut self, c: DeviceCredential) {
        self.remove(&c.device_id);
        let id: Arc<str> = c.device_id.into();
        self.by_id.insert(id.clone(), c.token_sha256);
        self.by_digest.insert(
            c.token_sha256,
            Arc::new(DeviceEntry {
                device_id: id,
                channel: c.channel,
                model: c.model,
                paths: Default::default(),
                unsaved_seen: AtomicI64::new(0),
            }),
        );
    }

    /// Removes a device by id; returns whether it was there.
    pub fn remove(&mut self, device_id: &str) -> bool {
        match self.by_id.remove(device_id) {
            Some(d) => {
                self.by_digest.remove(&d);
                true
            }
            None => false,
        }
    }

    /// Makes the directory hold exactly `creds` (as read from the database
    /// by another tracker replica's round): a device whose digest, channel
    /// and model are unchanged keeps its entry (its reported paths and
    /// unwritten last-seen time), others are inserted or replaced, and
    /// devices missing from `creds` are removed. Returns `(added or
    /// changed, removed)`.
    pub fn sync(&mut self, creds: Vec<DeviceCredential>) -> (usize, usize) {
        let wanted: std::collections::HashSet<String> = creds.iter().map(|c| c.device_id.clone()).collect();
        let gone: Vec<Arc<str>> = self
            .by_id
            .keys()
            .filter(|id| !wanted.contains(&***id))
            .cloned()
            .collect();
        for id in &gone {
            self.remove(id);
        }
        let mut changed = 0;
        for c in creds {
            let same = self.current(&c.device_id).is_some_and(|e| {
                self.by_id[&*e.device_id] == c.token_sha256 && e.channel == c.channel && e.model == c.model
            });
            if !same {
                self.insert(c);
                changed += 1;
            }
        }
        (changed, gone.len())
    }

    /// The device holding `token`, if the token is well formed and
    /// registered.
    pub fn lookup(&self, token: &str) -> Option<&Arc<DeviceEntry>> {
        if !well_formed(token) {
            return None;
        }
        self.by_digest.get(&token_digest(token))
    }

    /// The entry of device `device_id` as registered now, if any.
    pub fn current(&self, device_id: &str) -> Option<&Arc<DeviceEntry>> {
        self.by_digest.get(self.by_id.get(device_id)?)
    }

    /// Number of registered devices.
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// Whether no device is registered.
    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// Takes the last-seen times noted since the previous call, as
    /// `(device id, seconds since the Unix epoch)`.
    pub fn take_seen(&self) -> Vec<(String, i64)> {
        self.by_digest
            .values()
            .filter_map(|e| {
                let t = e.unsaved_seen.swap(0, Ordering::Relaxed);
                (t != 0).then(|| (e.device_id.to_string(), t))
            })
            .collect()
    }

    /// Puts back last-seen times that could not be written (newer notes win).
    pub fn restore_seen(&self, seen: &[(String, i64)]) {
        for (id, t) in seen {
            if let Some(e) = self.by_id.get(id.as_str()).and_then(|d| self.by_digest.get(d)) {
                let _ = e
                    .unsaved_seen
                    .compare_exchange(0, *t, Ordering::Relaxed, Ordering::Relaxed);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cred(id: &str, token: &str) -> DeviceCredential {
        DeviceCredential {
            token_sha256: token_digest(token),
            device_id: id.into(),
            channel: "c".into(),
            model: "m".into(),
        }
    }

    #[test]
    fn sync_keeps_unchanged_entries_and_drops_revoked_ones() {
        let (t1, t2, t3) = ("a".repeat(64), "b".repeat(64), "c".repeat(64));
        let mut d = DeviceDirectory::new([cred("d1", &t1), cred("d2", &t2)]);
        let kept = d.lookup(&t1).unwrap().clone();
        kept.seen(42);
        // d2 revoked and registered again with a new token, d3 new.
        assert_eq!(d.sync(vec![cred("d1", &t1), cred("d2", &t3)]), (1, 0));
        assert!(Arc::ptr_eq(d.lookup(&t1).unwrap(), &kept), "unchanged entry kept");
        assert!(d.lookup(&t2).is_none(), "the old token no longer works");
        assert_eq!(&*d.lookup(&t3).unwrap().device_id, "d2");
        assert_eq!(d.take_seen(), vec![("d1".to_string(), 42)]);
        assert_eq!(d.sync(vec![cred("d2", &t3)]), (0, 1));
        assert!(d.lookup(&t1).is_none());
        assert_eq!(d.len(), 1);
    }

    #[test]
    fn tokens_resolve_to_devices_until_revoked() {
        let t1 = "a".repeat(64);
        let t2 = "b".repeat(64);
        let mut d = DeviceDirectory::new([cred("d1", &t1), cred("d2", &t2)]);
        assert_eq!(d.len(), 2);
        assert_eq!(&*d.lookup(&t1).unwrap().device_id, "d1");
        assert!(d.lookup(&"c".repeat(64)).is_none());
        assert!(d.lookup(&"A".repeat(64)).is_none(), "upper case is not a token");
        assert!(d.lookup("short").is_none());
        d.lookup(&t2).unwrap().seen(1234);
        assert_eq!(d.take_seen(), vec![("d2".to_string(), 1234)]);
        assert!(d.take_seen().is_empty());
        d.restore_seen(&[("d2".into(), 1234)]);
        assert_eq!(d.take_seen(), vec![("d2".to_string(), 1234)]);
        assert!(d.remove("d1"));
        assert!(!d.remove("d1"));
        assert!(d.lookup(&t1).is_none());
        // Re-registering an id drops its old token.
        d.insert(cred("d2", &t1));
        assert!(d.lookup(&t2).is_none());
        assert_eq!(&*d.lookup(&t1).unwrap().device_id, "d2");
        assert_eq!(d.len(), 1);
    }
}
