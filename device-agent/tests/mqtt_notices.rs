//! The agent takes its release notices from a real MQTT broker (Debian's
//! mosquitto, started here) instead of the tracker's event stream: a device
//! outside the announced rollout wave stays quiet, and when the wave is
//! raised the tracker's new notice makes it download, verify and install
//! the package from the S3-backed seeder.

mod common;

use std::time::{Duration, Instant};

use ota_testkit::mqtt_broker::MqttBroker;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notice_from_the_broker_installs_the_release_once_the_wave_includes_the_device() {
    let broker = MqttBroker::start().await;
    let stack = common::Stack::start().await;
    let _publisher = stack
        .tracker
        .tracker()
        .spawn_broker_push(ota_tracker::BrokerPush::new(broker.url(None).parse().unwrap()))
        .unwrap();
    let data = common::package(300_000, 5);
    let mut new = stack.hash(&data, &stack.publish_request("fw.bin", 65_536, None)).await;
    new.rollout_percent = Some(0);
    stack.tracker.client().register(&new).await.unwrap();
    let _seeder = stack.seeder(None).await;
    let ih = new.info_hash;

    let dir = tempfile::tempdir().unwrap();
    let mut settings = common::settings("dev-mqtt", &dir.path().join("agent"));
    settings.broker = Some((broker.url(None).parse().unwrap(), "ota".into()));
    let agent = common::agent_with(stack.tracker.url(), settings, None).await;
    tokio::spawn(agent.clone().run());

    // No event stream: the agent's notices come from the broker only.
    stack.tracker.client().push(&ih).await.unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(stack.tracker.client().subscribers().await.unwrap(), 0);
    assert!(agent.installed().is_empty(), "installed outside its wave");

    stack.tracker.client().set_rollout(&ih, 100).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !agent.installed().contains_key(&ih) {
        assert!(
            Instant::now() < deadline,
            "not installed within 60 s; broker log:\n{}",
            broker.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let path = &agent.installed()[&ih].path;
    assert_eq!(std::fs::read(path).unwrap(), data, "the installed package differs");
    agent.stop().await;
}
