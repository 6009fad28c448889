//! The install hook: it runs at most its timeout (then its whole process
//! group is killed), and after a crash it is run again only on a package
//! whose SHA-256 is still the verified one.

mod common;

use std::time::{Duration, Instant};

use common::fake_tracker::{genuine, FakeTracker};
use common::package;
use ota_device_agent::agent::{run_install_hook, HookRelease};
use ota_device_agent::download_state::{save_json, ActiveMap, ActiveRelease, Installed, Outcome, Phase};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_install_hook_is_killed_after_its_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("pid");
    let pkg = dir.path().join("fw.bin");
    std::fs::write(&pkg, b"x").unwrap();
    let hook = format!("sleep 60 & echo $! > '{}'; wait; true", pid_file.display());
    let release = HookRelease {
        name: "fw.bin".into(),
        version: "1".into(),
        info_hash: ota_proto::InfoHash([1; 20]),
    };
    let t = Instant::now();
    let err = run_install_hook(&hook, &release, &pkg, Duration::from_secs(1))
        .await
        .unwrap_err();
    assert!(err.contains("did not finish within 1 s; killed"), "{err}");
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    // The hook's child (the sleep) is gone too: the process group was killed.
    let pid = std::fs::read_to_string(&pid_file).unwrap().trim().to_string();
    let mut gone = false;
    for _ in 0..50 {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // Gone, or a zombie waiting for init to reap it.
        if stat.is_empty() || stat.split(' ').nth(2) == Some("Z") {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(gone, "the hook's child {pid} still runs");
    // A quick hook still succeeds.
    run_install_hook("true", &release, &pkg, Duration::from_secs(5))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_package_changed_after_a_crash_is_not_handed_to_the_install_hook_again() {
    let fake = FakeTracker::start().await;
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("agent");
    let data = package(50_000, 1);
    let (release, torrent) = genuine(&fake.url(), "fw.bin", "2", &data, 16_384, None);
    fake.serve(&release, &torrent, "fw.bin", &data);
    let ih = release.info_hash;

    // The state a crash in the install hook leaves: verified, phase
    // installing; then the package is changed on disk.
    let folder = common::download_folder(&state, &ih);
    std::fs::create_dir_all(&folder).unwrap();
    let path = folder.join("fw.bin");
    let mut tampered = data.clone();
    tampered[7] ^= 1;
    std::fs::write(&path, &tampered).unwrap();
    let mut installed = std::collections::BTreeMap::new();
    installed.insert(
        ih,
        Installed {
            name: "fw.bin".into(),
            version: "2".into(),
            path: path.clone(),
            sha256: release.sha256.clone(),
            installed_at_ms: None,
        },
    );
    save_json(&state.join("installed.json"), &installed).unwrap();
    let mut active = ActiveMap::new();
    let mut a = ActiveRelease::new(ih, "fw.bin", "2", data.len() as u64, 1);
    a.phase = Phase::Installing;
    active.insert(ih, a);
    save_json(&state.join("active.json"), &active).unwrap();

    let marker = dir.path().join("hook-ran");
    let mut settings = common::settings("dev-hook", &state);
    settings.install_hook = Some(format!("touch '{}'; echo", marker.display()));
    let downloader = ota_device_agent::download::Downloader::start(&state, common::free_addr())
        .await
        .unwrap();
    let agent =
        ota_device_agent::agent::Agent::new(ota_client::TrackerClient::new(&fake.url(), None), downloader, settings)
            .unwrap();
    agent.resume_unfinished();
    let mut entry = None;
    for _ in 0..100 {
        entry = agent.history().into_iter().find(|h| h.info_hash == ih);
        if entry.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let entry = entry.expect("the rerun is recorded");
    assert_eq!(entry.outcome, Outcome::Failed);
    let reason = entry.reason.unwrap_or_default();
    assert!(reason.contains("package changed since it was verified"), "{reason}");
    assert!(!marker.exists(), "the hook was not run on the changed package");
    assert!(agent.installed()[&ih].installed_at_ms.is_none());
    agent.stop().await;
    fake.stop();
}
