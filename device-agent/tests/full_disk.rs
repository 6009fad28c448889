//! Full disk and storage cap. The agent's state folder is a small tmpfs
//! (mounted by the test, as root; unmounted by a drop guard):
//! - a release larger than the free space is refused before it starts,
//!   with a clear "no space left" error in the telemetry and the history,
//!   and the installed package and `installed.json` stay intact;
//! - a disk that fills up during the download makes it fail with the OS's
//!   "No space left on device", the agent keeps running, its partial data is
//!   deleted, and once space is freed the same release installs;
//! - the storage cap policy refuses a release that does not fit the cap.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{package, Stack};
use ota_device_agent::policy::PolicySettings;

/// A tmpfs mounted on a folder; unmounted (lazily) when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(at).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .status()
            .unwrap();
        assert!(ok.success(), "mount tmpfs (the test needs root)");
        Tmpfs(at.to_path_buf())
    }

    fn resize(&self, size: &str) {
        let ok = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.0)
            .status()
            .unwrap();
        assert!(ok.success());
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn full_disk_is_reported_and_survived_and_the_storage_cap_refuses() {
    // The origin is listed to every device: a stopped agent still listed as a
    // seeder must not starve the later ones.
    let stack = Stack::start_with(ota_tracker::OriginPolicy::Always).await;
    let small = package(200_000, 3);
    let big = package(3_000_000, 4);
    let small_rel = stack.publish("fw/small.bin", &small, 65_536, None).await;
    let big_rel = stack.publish("fw/big.bin", &big, 65_536, None).await;
    // 1 MB/s from the origin: the big download takes about 3 s.
    let seeder = stack.seeder(Some(1_000_000)).await;
    for ih in [&small_rel.info_hash, &big_rel.info_hash] {
        assert!(common::wait_origin(stack.tracker.client(), ih, 1, Duration::from_secs(30)).await);
    }

    let state = stack.dir.path().join("agent");
    let disk = Tmpfs::mount(&state, "1m");
    let agent = common::agent(stack.tracker.url(), "dev-disk", &state, None).await;
    let small_installed = agent.handle_release(&small_rel.info_hash).await.unwrap();
    let installed_json = std::fs::read(state.join("installed.json")).unwrap();

    // Too big for the free space: refused before any byte is fetched.
    let err = format!("{:#}", agent.handle_release(&big_rel.info_hash).await.unwrap_err());
    assert!(err.contains("no space left: the package needs 3000000 bytes"), "{err}");
    assert!(!common::download_folder(&state, &big_rel.info_hash).exists());
    let reports = stack.tracker.client().telemetry(&big_rel.info_hash).await.unwrap();
    assert!(
        reports[0].error.as_deref().unwrap_or("").contains("no space left"),
        "{reports:?}"
    );
    assert_eq!(
        std::fs::read(state.join("installed.json")).unwrap(),
        installed_json,
        "installed list intact"
    );
    assert!(
        agent.history().iter().any(|h| h.info_hash == big_rel.info_hash),
        "failure recorded in the history"
    );

    // Room for the package at the start, but the disk fills up while it downloads.
    disk.resize("5m");
    let run = {
        let agent = agent.clone();
        let ih = big_rel.info_hash;
        tokio::spawn(async move { agent.handle_release(&ih).await })
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while agent
        .active()
        .get(&big_rel.info_hash)
        .is_none_or(|a| a.progress_bytes == 0)
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let filler = state.join("filler");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&filler).unwrap();
        let block = vec![0x5au8; 64 * 1024];
        // Write until the file system refuses (bounded by its 5 MiB size).
        for _ in 0..200 {
            if f.write_all(&block).is_err() {
                break;
            }
        }
    }
    let err = format!(
        "{:#}",
        tokio::time::timeout(Duration::from_secs(60), run)
            .await
            .unwrap()
            .unwrap()
            .unwrap_err()
    );
    assert!(err.contains("No space left on device"), "{err}");
    assert!(
        !common::download_folder(&state, &big_rel.info_hash).exists(),
        "partial data deleted"
    );
    let reports = stack.tracker.client().telemetry(&big_rel.info_hash).await.unwrap();
    assert!(
        reports
            .iter()
            .any(|r| r.error.as_deref().unwrap_or("").contains("No space left on device")),
        "{reports:?}"
    );
    // Other state is kept: the installed package and its record.
    assert_eq!(std::fs::read(&small_installed.path).unwrap(), small);
    assert!(agent.installed().contains_key(&small_rel.info_hash));

    // Space freed: the same release installs.
    std::fs::remove_file(&filler).unwrap();
    let big_installed = agent.handle_release(&big_rel.info_hash).await.unwrap();
    assert!(std::fs::read(&big_installed.path).unwrap() == big);
    assert_eq!(agent.installed().len(), 2);
    agent.stop().await;

    // Storage cap: 2 MB for packages; with the small one kept, the big one does not fit.
    let capped_state = stack.dir.path().join("capped");
    let downloader = ota_device_agent::download::Downloader::start(&capped_state, common::free_addr())
        .await
        .unwrap();
    let mut settings = common::settings("dev-capped", &capped_state);
    settings.policy = PolicySettings {
        storage_cap_bytes: Some(2_000_000),
        ..Default::default()
    };
    let capped = ota_device_agent::agent::Agent::new(
        ota_client::TrackerClient::new(stack.tracker.url(), None),
        downloader,
        settings,
    )
    .unwrap();
    capped.handle_release(&small_rel.info_hash).await.unwrap();
    let err = format!("{:#}", capped.handle_release(&big_rel.info_hash).await.unwrap_err());
    assert!(
        err.contains("does not fit the storage cap: 200000 of 2000000 bytes in use"),
        "{err}"
    );
    assert!(!common::download_folder(&capped_state, &big_rel.info_hash).exists());
    capped.stop().await;

    seeder.stop().await;
    drop(disk);
    stack.tracker.stop().await;
}
