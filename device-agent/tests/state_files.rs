//! The agent's state files: a lost, empty or corrupt `installed.json` never
//! re-enables a downgrade (`installed.max.json` keeps the highest version
//! per package, or the agent refuses to start), and the history and the
//! attempted set stay bounded.

mod common;

use std::time::Duration;

use common::fake_tracker::{genuine, FakeTracker};
use common::package;
use ota_device_agent::download_state::{HistoryEntry, Outcome, RecentSet, SourceTotals, MAX_ATTEMPTED, MAX_HISTORY};
use ota_proto::manifest::generate_signing_key;
use ota_proto::InfoHash;

const PIECE: u64 = 16_384;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_empty_or_corrupt_installed_json_does_not_re_enable_a_downgrade() {
    let fake = FakeTracker::start().await;
    let dir = tempfile::tempdir().unwrap();
    let key = generate_signing_key();
    let state = dir.path().join("agent");

    // Version 2 is downloaded (HTTP fallback from the fake origin) and verified.
    let v2 = package(60_000, 1);
    let (r2, t2) = genuine(&fake.url(), "fw.bin", "2", &v2, PIECE, Some(&key));
    fake.serve(&r2, &t2, "fw.bin", &v2);
    let agent = common::agent_for_fake(&fake.url(), &state, Some(key.verifying_key()), None).await;
    agent.handle_release(&r2.info_hash).await.unwrap();
    agent.stop().await;
    drop(agent);
    assert!(state.join("installed.max.json").exists());

    // A genuine, signed, older version 1 of the same package.
    let v1 = package(60_000, 2);
    let (r1, t1) = genuine(&fake.url(), "fw.bin", "1", &v1, PIECE, Some(&key));
    fake.serve(&r1, &t1, "fw.bin", &v1);

    for broken in [&b""[..], &b"{\"trunc"[..]] {
        std::fs::write(state.join("installed.json"), broken).unwrap();
        let agent = common::agent_for_fake(&fake.url(), &state, Some(key.verifying_key()), None).await;
        let err = format!("{:#}", agent.handle_release(&r1.info_hash).await.unwrap_err());
        assert!(
            err.contains("version 1 is not newer than the installed 2"),
            "{broken:?}: {err}"
        );
        assert!(!common::download_folder(&state, &r1.info_hash).exists());
        agent.stop().await;
    }

    // installed.json and installed.max.json both unreadable: refuse to start.
    std::fs::write(state.join("installed.json"), b"").unwrap();
    std::fs::write(state.join("installed.max.json"), b"").unwrap();
    let downloader = ota_device_agent::download::Downloader::start(&state, common::free_addr())
        .await
        .unwrap();
    let err = ota_device_agent::agent::Agent::new(
        ota_client::TrackerClient::new(&fake.url(), None),
        downloader,
        common::settings("dev-sec", &state),
    )
    .err()
    .expect("the agent refuses to start");
    let err = format!("{err:#}");
    assert!(err.contains("would accept downgrades; refusing to start"), "{err}");
    assert!(state.join("installed.json").exists(), "nothing moved aside");
    fake.stop();
}

fn entry(i: u32) -> HistoryEntry {
    let mut ih = [0u8; 20];
    ih[..4].copy_from_slice(&i.to_be_bytes());
    HistoryEntry {
        info_hash: InfoHash(ih),
        name: format!("p{i}"),
        version: "1".into(),
        outcome: Outcome::Failed,
        reason: None,
        started_at_ms: i as u64,
        ended_at_ms: i as u64,
        received: SourceTotals::default(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_history_keeps_only_the_newest_entries() {
    let fake = FakeTracker::start().await;
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("agent");
    std::fs::create_dir_all(&state).unwrap();
    let old: Vec<HistoryEntry> = (0..(MAX_HISTORY as u32 + 200)).map(entry).collect();
    std::fs::write(state.join("history.json"), serde_json::to_vec(&old).unwrap()).unwrap();
    let agent = common::agent_for_fake(&fake.url(), &state, None, None).await;
    let h = agent.history();
    assert_eq!(h.len(), MAX_HISTORY);
    assert_eq!(h[0].name, "p200", "the oldest are dropped");
    // One more (a release the tracker does not know): still capped, on disk too.
    let unknown = InfoHash([0xee; 20]);
    agent.handle_release(&unknown).await.unwrap_err();
    let on_disk: Vec<HistoryEntry> =
        serde_json::from_slice(&std::fs::read(state.join("history.json")).unwrap()).unwrap();
    assert_eq!(on_disk.len(), MAX_HISTORY);
    assert_eq!(on_disk.last().unwrap().info_hash, unknown);
    assert_eq!(on_disk[0].name, "p201");
    agent.stop().await;
    fake.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_attempted_set_forgets_the_oldest_releases() {
    let mut s = RecentSet::new(MAX_ATTEMPTED);
    for i in 0..(MAX_ATTEMPTED as u32 + 1) {
        assert!(s.insert(entry(i).info_hash));
    }
    assert_eq!(s.len(), MAX_ATTEMPTED);
    assert!(!s.contains(&entry(0).info_hash), "the oldest is forgotten");
    assert!(s.contains(&entry(1).info_hash));
    assert!(!s.insert(entry(5).info_hash), "still there");

    // The agent's set is one of these: a tracker pushing many fake
    // releases cannot grow it without end. After MAX_ATTEMPTED others, the
    // first one is considered again (and asked for again).
    let fake = FakeTracker::start().await;
    let dir = tempfile::tempdir().unwrap();
    let agent = common::agent_for_fake(&fake.url(), dir.path(), None, None).await;
    let first = entry(0).info_hash;
    agent.consider(&first);
    let path = format!("/api/releases/{first}");
    wait_for(|| fake.count(&path) == 1).await;
    for i in 1..=(MAX_ATTEMPTED as u32) {
        agent.consider(&entry(i).info_hash);
    }
    wait_for(|| fake.count(&format!("/api/releases/{}", entry(MAX_ATTEMPTED as u32).info_hash)) == 1).await;
    agent.consider(&first);
    wait_for(|| fake.count(&path) == 2).await;
    agent.stop().await;
    fake.stop();
}

async fn wait_for(mut f: impl FnMut() -> bool) {
    for _ in 0..300 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("condition not met within 15 s");
}
