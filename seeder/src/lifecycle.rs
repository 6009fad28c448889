//! The lifecycle of every release at the origin: one [`ReleaseState`] per
//! info hash, in one map ([`Releases`]) that the seeder keeps under one lock.
//! Pure: no I/O and no clock (callers pass `now`); [`crate::seeding`] does
//! the I/O around each transition (adding to librqbit, pausing, deleting)
//! and never holds the lock across it.
//!
//! ```text
//!              added                       recheck_later
//!  (absent) ──────────▶ Seeding ─────────────────────────▶ RecheckAt { at, backoff }
//!     │                  │   ▲                                  │        │
//!     │ refused          │   └──── added (once now >= at) ──────┘        │ refused
//!     ▼                  │ stop                                          ▼
//!   Failed ◀─────────────┘                                            Failed
//! ```
//!
//! - `refused`: the object changed since it was published, seen before the
//!   release was added. `stop`: a piece failed its SHA-1 or the object
//!   changed while seeding. A failed release is never added again (until
//!   the seeder restarts) and is reported with its reason.
//! - `recheck_later`: librqbit's initial check ended with pieces missing
//!   (S3 failed for longer than the storage's retry budget); the release is
//!   added again after a backoff of 1 s, doubling at each incomplete check,
//!   at most 5 min ([`next_backoff`]). The backoff is remembered across
//!   re-adds and never reset while the seeder runs.
//! - An add that fails for any other reason (S3 or the tracker unreachable)
//!   changes nothing, so the next sync tries again.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ota_proto::api::Release;
use ota_proto::InfoHash;

use crate::origin_store::S3Location;

/// Wait before the first re-add of a release whose initial check was incomplete.
pub const FIRST_RECHECK: Duration = Duration::from_secs(1);
/// Longest wait between re-adds.
pub const MAX_RECHECK: Duration = Duration::from_secs(300);

/// The wait before the next re-add: [`FIRST_RECHECK`] the first time, then
/// twice the previous wait, at most [`MAX_RECHECK`].
pub fn next_backoff(previous: Option<Duration>) -> Duration {
    previous.map_or(FIRST_RECHECK, |d| (d * 2).min(MAX_RECHECK))
}

/// A release in the librqbit session (checking its pieces or seeding).
#[derive(Debug)]
pub struct Seeded<T> {
    /// The registered release.
    pub release: Release,
    /// Its S3 object.
    pub location: S3Location,
    /// The torrent in the session (`Arc<librqbit::ManagedTorrent>` in the seeder).
    pub torrent: T,
    /// Set by the S3 storage when a piece read from S3 fails its SHA-1.
    pub corrupt: Arc<Mutex<Option<String>>>,
    /// The wait before this (re-)add, if the release came back from
    /// [`ReleaseState::RecheckAt`].
    pub backoff: Option<Duration>,
}

/// Where one release stands.
#[derive(Debug)]
pub enum ReleaseState<T> {
    /// In the session: checking its pieces or seeding.
    Seeding(Seeded<T>),
    /// Not served, for good (until the seeder restarts).
    Failed {
        /// The registered release.
        release: Release,
        /// Why, as the egress report shows it.
        reason: String,
    },
    /// Removed after an incomplete initial check; added again once `at` has come.
    RecheckAt {
        /// When the next sync may add it again.
        at: Instant,
        /// The wait that led to `at`.
        backoff: Duration,
    },
}

/// Every release the seeder knows, by info hash.
#[derive(Debug)]
pub struct Releases<T> {
    states: HashMap<InfoHash, ReleaseState<T>>,
}

impl<T> Default for Releases<T> {
    fn default() -> Self {
        Releases { states: HashMap::new() }
    }
}

impl<T> Releases<T> {
    /// No release known.
    pub fn new() -> Self {
        Self::default()
    }

    /// The state of one release, if known.
    pub fn get(&self, info_hash: &InfoHash) -> Option<&ReleaseState<T>> {
        self.states.get(info_hash)
    }

    /// Whether a sync should add `release` now: an `s3://` release never
    /// seen, or one waiting for a re-add whose time has come. Never a
    /// seeding or failed one.
    pub fn should_add(&self, release: &Release, now: Instant) -> bool {
        release.source.starts_with("s3://")
            && match self.states.get(&release.info_hash) {
                None => true,
                Some(ReleaseState::RecheckAt { at, .. }) => now >= *at,
                Some(ReleaseState::Seeding(_) | ReleaseState::Failed { .. }) => false,
            }
    }

    /// The release was added to the session: it is now seeding (its
    /// initial check running), keeping the backoff of an earlier re-add.
    pub fn added(&mut self, release: Release, location: S3Location, torrent: T, corrupt: Arc<Mutex<Option<String>>>) {
        let backoff = match self.states.get(&release.info_hash) {
            Some(ReleaseState::RecheckAt { backoff, .. }) => Some(*backoff),
            _ => None,
        };
        self.states.insert(
            release.info_hash,
            ReleaseState::Seeding(Seeded {
                release,
                location,
                torrent,
                corrupt,
                backoff,
            }),
        );
    }

    /// The release was refused before it was added (its object changed
    /// since it was published): failed, with `reason`.
    pub fn refused(&mut self, release: Release, reason: String) {
        self.states
            .insert(release.info_hash, ReleaseState::Failed { release, reason });
    }

    /// Stops a seeding release for good: failed, with `reason`. Returns its
    /// object and torrent for the caller to pause and forget, or `None`
    /// (nothing changes) when the release is not seeding.
    pub fn stop(&mut self, info_hash: &InfoHash, reason: String) -> Option<(S3Location, T)> {
        match self.states.remove(info_hash)? {
            ReleaseState::Seeding(s) => {
                self.states.insert(
                    *info_hash,
                    ReleaseState::Failed {
                        release: s.release,
                        reason,
                    },
                );
                Some((s.location, s.torrent))
            }
            other => {
                self.states.insert(*info_hash, other);
                None
            }
        }
    }

    /// A seeding release whose initial check came out incomplete was removed
    /// from the session: it waits for a re-add at `now` plus the next
    /// backoff, which is returned. `None` (nothing changes) when the release
    /// is not seeding.
    pub fn recheck_later(&mut self, info_hash: &InfoHash, now: Instant) -> Option<Duration> {
        let ReleaseState::Seeding(s) = self.states.get(info_hash)? else {
            return None;
        };
        let backoff = next_backoff(s.backoff);
        self.states.insert(
            *info_hash,
            ReleaseState::RecheckAt {
                at: now + backoff,
                backoff,
            },
        );
        Some(backoff)
    }

    /// The seeding release `info_hash`, if it is seeding.
    pub fn seeded(&self, info_hash: &InfoHash) -> Option<&Seeded<T>> {
        match self.states.get(info_hash)? {
            ReleaseState::Seeding(s) => Some(s),
            _ => None,
        }
    }

    /// Every seeding release, in no order.
    pub fn seeding(&self) -> impl Iterator<Item = (&InfoHash, &Seeded<T>)> {
        self.states.iter().filter_map(|(ih, st)| match st {
            ReleaseState::Seeding(s) => Some((ih, s)),
            _ => None,
        })
    }

    /// The rows of the egress report, in no order: every seeding release
    /// with its torrent's error (`error_of`), and every failed release with
    /// its reason. Releases waiting for a re-add are not listed.
    pub fn report(&self, error_of: impl Fn(&T) -> Option<String>) -> Vec<(Release, Option<String>)> {
        self.states
            .values()
            .filter_map(|st| match st {
                ReleaseState::Seeding(s) => Some((s.release.clone(), error_of(&s.torrent))),
                ReleaseState::Failed { release, reason } => Some((release.clone(), Some(reason.clone()))),
                ReleaseState::RecheckAt { .. } => None,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn release(n: u8, source: &str) -> Release {
        Release {
            name: format!("pkg-{n}.bin"),
            version: "1".into(),
            info_hash: InfoHash([n; 20]),
            size: 10,
            piece_length: 16384,
            sha256: "00".repeat(32),
            http_url: None,
            source: source.into(),
            created_at: 0,
            origin_peers: vec![],
            etag: None,
            manifest: None,
            rollout_percent: 100,
            origin_goal: None,
        }
    }

    fn loc() -> S3Location {
        S3Location {
            bucket: "ota".into(),
            key: "pkg.bin".into(),
        }
    }

    #[test]
    fn backoff_doubles_from_one_second_to_five_minutes() {
        let mut d = None;
        let waits: Vec<u64> = (0..11)
            .map(|_| {
                d = Some(next_backoff(d));
                d.unwrap().as_secs()
            })
            .collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300]);
    }

    #[test]
    fn new_s3_releases_are_added_once() {
        let now = Instant::now();
        let mut rs: Releases<&str> = Releases::new();
        let r = release(1, "s3://ota/pkg.bin");
        assert!(rs.should_add(&r, now));
        assert!(
            !rs.should_add(&release(2, "https://example.com/pkg.bin"), now),
            "only s3:// sources"
        );
        rs.added(r.clone(), loc(), "torrent-1", Arc::default());
        assert!(!rs.should_add(&r, now), "seeding: not added twice");
        assert_eq!(
            rs.seeded(&r.info_hash).map(|s| (s.torrent, s.backoff)),
            Some(("torrent-1", None))
        );
        assert_eq!(rs.seeding().count(), 1);
        assert_eq!(
            rs.report(|t| Some(format!("{t} error"))),
            vec![(r, Some("torrent-1 error".into()))]
        );
    }

    #[test]
    fn refused_and_stopped_releases_fail_for_good_with_their_reason() {
        let now = Instant::now();
        let mut rs: Releases<&str> = Releases::new();
        let (a, b) = (release(1, "s3://ota/a"), release(2, "s3://ota/b"));
        rs.refused(a.clone(), "a changed".into());
        rs.added(b.clone(), loc(), "torrent-b", Arc::default());
        assert_eq!(
            rs.stop(&b.info_hash, "b fails its SHA-1".into()),
            Some((loc(), "torrent-b"))
        );
        assert_eq!(
            rs.stop(&b.info_hash, "again".into()),
            None,
            "only a seeding release stops"
        );
        assert_eq!(
            rs.recheck_later(&a.info_hash, now),
            None,
            "a failed release is never re-checked"
        );
        for r in [&a, &b] {
            assert!(!rs.should_add(r, now + MAX_RECHECK * 10), "never added again");
            assert!(rs.seeded(&r.info_hash).is_none());
        }
        let mut report = rs.report(|_| None);
        report.sort_by_key(|(r, _)| r.info_hash);
        assert_eq!(
            report,
            vec![(a, Some("a changed".into())), (b, Some("b fails its SHA-1".into()))]
        );
        assert_eq!(rs.seeding().count(), 0);
    }

    #[test]
    fn incomplete_checks_are_re_added_with_a_backoff_that_survives_re_adds() {
        let t0 = Instant::now();
        let mut rs: Releases<u32> = Releases::new();
        let r = release(1, "s3://ota/pkg.bin");
        rs.added(r.clone(), loc(), 1, Arc::default());
        let mut now = t0;
        for (n, expected) in [1u64, 2, 4, 8].into_iter().enumerate() {
            assert_eq!(rs.recheck_later(&r.info_hash, now), Some(Duration::from_secs(expected)));
            assert!(
                rs.report(|_| None).is_empty(),
                "a release waiting for a re-add is not reported"
            );
            assert!(!rs.should_add(&r, now + Duration::from_secs(expected) - Duration::from_millis(1)));
            now += Duration::from_secs(expected);
            assert!(rs.should_add(&r, now), "due after {expected} s");
            rs.added(r.clone(), loc(), n as u32 + 2, Arc::default());
            assert_eq!(
                rs.seeded(&r.info_hash).unwrap().backoff,
                Some(Duration::from_secs(expected))
            );
        }
        // A complete check keeps seeding; an object that changed while the
        // release waited for its re-add fails it.
        assert_eq!(rs.recheck_later(&r.info_hash, now), Some(Duration::from_secs(16)));
        rs.refused(r.clone(), "changed".into());
        assert!(matches!(rs.get(&r.info_hash), Some(ReleaseState::Failed { .. })));
        assert!(!rs.should_add(&r, now + MAX_RECHECK));
    }
}
