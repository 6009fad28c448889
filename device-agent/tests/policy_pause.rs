//! The download policy pauses and resumes a real download: with
//! `unmetered_command` answering "metered" (exit status 1) the agent's
//! download stays paused with the reason `policy` and fetches nothing; once
//! the command answers 0 the download resumes and installs.

mod common;

use std::time::{Duration, Instant};

use common::{package, Stack};
use ota_device_agent::download_state::PauseReason;
use ota_device_agent::policy::PolicySettings;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn metered_network_pauses_until_the_command_says_unmetered() {
    let stack = Stack::start_with(ota_tracker::OriginPolicy::Always).await;
    let data = package(500_000, 5);
    let release = stack.publish("fw/policy.bin", &data, 65_536, None).await;
    let seeder = stack.seeder(None).await;
    assert!(common::wait_origin(stack.tracker.client(), &release.info_hash, 1, Duration::from_secs(30)).await);

    let flag = stack.dir.path().join("unmetered");
    let state = stack.dir.path().join("agent");
    let downloader = ota_device_agent::download::Downloader::start(&state, common::free_addr())
        .await
        .unwrap();
    let mut settings = common::settings("dev-policy", &state);
    // The command leaves a mark each time it runs, so the test knows the
    // policy loop has given its first verdict.
    let ran = stack.dir.path().join("ran");
    settings.policy = PolicySettings {
        unmetered_command: Some(format!("touch '{}'; test -e '{}'", ran.display(), flag.display())),
        ..Default::default()
    };
    let agent = ota_device_agent::agent::Agent::new(
        ota_client::TrackerClient::new(stack.tracker.url(), None),
        downloader,
        settings,
    )
    .unwrap();
    let policy_loop = tokio::spawn(agent.clone().run_policy_loop(Duration::from_millis(100)));
    // Let the loop see the metered network before the download starts.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !ran.exists() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let run = {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let agent = agent.clone();
        let ih = release.info_hash;
        tokio::spawn(async move { agent.handle_release(&ih).await })
    };
    while !agent.active().contains_key(&release.info_hash) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let a = agent.active()[&release.info_hash].clone();
    assert!(a.paused.contains(&PauseReason::Policy), "{a:?}");
    assert_eq!(a.progress_bytes, 0, "nothing fetched on a metered network");
    assert!(!run.is_finished());

    std::fs::write(&flag, b"").unwrap();
    let installed = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(std::fs::read(&installed.path).unwrap() == data);

    policy_loop.abort();
    agent.stop().await;
    seeder.stop().await;
    stack.tracker.stop().await;
}
