//! Fast resume for storages that are not files: the origin's S3 storage
//! keeps librqbit's verified bitfield across restarts, so a restart does not
//! read every published object again.
//!
//! librqbit 9.1 keeps one bitfield per torrent (`<info hash>.bitv`, one bit
//! per piece, MSB first) in its JSON session folder when
//! `SessionOptions::fastresume` is on. Re-adding a torrent whose bitfield is
//! there skips the full piece check: librqbit only spot-checks the pieces it
//! claims (at least one per file, then a random sample of at most 64, each
//! kept with probability 1/min(k, 50)), and falls back to the full check
//! when one of them cannot be read. Two constraints of librqbit shape this
//! module:
//! - The session folder also holds librqbit's torrent list (`session.json`
//!   and one `<info hash>.torrent` each), which librqbit would re-add by
//!   itself at start with the session's default storage.
//!   [`prepare_dir`] removes them before the session starts, so the caller
//!   re-adds its torrents with its own storage and only the bitfields
//!   carry over.
//! - Its JSON persistence stores only torrents whose storage factory is, or
//!   wraps, librqbit's `FilesystemStorageFactory`; any other storage makes
//!   `add_torrent` fail. [`Resumable`] wraps a factory and answers that
//!   question with yes. What persistence then writes is the torrent list
//!   (discarded at the next start) and the bitfields; the storage itself
//!   is untouched.
//!
//! A bitfield is local state written by librqbit from its own check: it
//! says which pieces hashed right when they were last read. The caller
//! still has to check that the object did not change since (the seeder
//! compares the ETag before adding, and SHA-1 checks every piece it
//! serves).

use std::any::TypeId;
use std::path::Path;

use ota_proto::InfoHash;

use anyhow::Context;
use librqbit::storage::filesystem::FilesystemStorageFactory;
use librqbit::storage::{BoxStorageFactory, StorageFactory, StorageFactoryExt};
use librqbit::{ManagedTorrentShared, TorrentMetadata};

/// A storage factory that librqbit's session persistence accepts (see the
/// module docs); creation is `F`'s.
#[derive(Clone)]
pub struct Resumable<F>(pub F);

impl<F: StorageFactory + Clone> StorageFactory for Resumable<F> {
    type Storage = F::Storage;

    fn create(&self, shared: &ManagedTorrentShared, metadata: &TorrentMetadata) -> anyhow::Result<F::Storage> {
        self.0.create(shared, metadata)
    }

    fn is_type_id(&self, type_id: TypeId) -> bool {
        type_id == TypeId::of::<FilesystemStorageFactory>() || self.0.is_type_id(type_id)
    }

    fn clone_box(&self) -> BoxStorageFactory {
        self.clone().boxed()
    }
}

/// How librqbit names a torrent's bitfield file: `<info hash hex>` + this.
pub const BITFIELD_SUFFIX: &str = ".bitv";

/// Whether `dir` holds a bitfield for `info_hash`: librqbit will then only
/// spot-check the torrent when it is added, not read it all.
pub fn has_bitfield(dir: &Path, info_hash: &InfoHash) -> bool {
    dir.join(format!("{}{BITFIELD_SUFFIX}", info_hash.to_hex())).exists()
}

/// What [`prepare_dir`] found in the folder.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Prepared {
    /// Bitfields kept (`*.bitv`).
    pub bitfields: usize,
    /// librqbit torrent-list files removed (`session.json`, `*.torrent`).
    pub removed: usize,
}

/// Creates `dir` (mode 0700: the torrent list librqbit writes there holds
/// announce URLs with their credentials) and removes librqbit's torrent list
/// from it, keeping the bitfields. Call before starting the session.
///
/// Errors: the folder cannot be created, listed or a file removed.
pub fn prepare_dir(dir: &Path) -> anyhow::Result<Prepared> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("cannot restrict {}", dir.display()))?;
    let mut found = Prepared::default();
    for entry in std::fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))? {
        let path = entry?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        let torrent_list = name == "session.json" || name.ends_with(".torrent") || name.ends_with(".tmp");
        if torrent_list {
            std::fs::remove_file(&path).with_context(|| format!("cannot remove {}", path.display()))?;
            found.removed += 1;
        } else if name.ends_with(BITFIELD_SUFFIX) {
            found.bitfields += 1;
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prepare_keeps_bitfields_and_drops_the_torrent_list() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("fastresume");
        assert_eq!(prepare_dir(&d).unwrap(), Prepared::default());
        for f in [
            "session.json",
            "session.json.tmp",
            "ab.torrent",
            "ab.bitv",
            "cd.bitv",
            "other",
        ] {
            std::fs::write(d.join(f), b"x").unwrap();
        }
        assert_eq!(
            prepare_dir(&d).unwrap(),
            Prepared {
                bitfields: 2,
                removed: 3
            }
        );
        let mut left: Vec<String> = std::fs::read_dir(&d)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(left, ["ab.bitv", "cd.bitv", "other"]);
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&d).unwrap().permissions().mode() & 0o777, 0o700);
    }

    #[test]
    fn resumable_passes_for_file_storage_and_keeps_its_own_type() {
        #[derive(Clone)]
        struct Other;
        impl StorageFactory for Other {
            type Storage = Box<dyn librqbit::storage::TorrentStorage>;
            fn create(&self, _: &ManagedTorrentShared, _: &TorrentMetadata) -> anyhow::Result<Self::Storage> {
                anyhow::bail!("not used")
            }
            fn clone_box(&self) -> BoxStorageFactory {
                self.clone().boxed()
            }
        }
        assert!(!Other.is_type_id(TypeId::of::<FilesystemStorageFactory>()));
        let r = Resumable(Other);
        assert!(r.is_type_id(TypeId::of::<FilesystemStorageFactory>()));
        assert!(r.is_type_id(TypeId::of::<Other>()));
        assert!(
            r.boxed().is_type_id(TypeId::of::<FilesystemStorageFactory>()),
            "survives boxing"
        );
    }
}
