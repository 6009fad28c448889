//! Release notices through a real MQTT broker (Debian's mosquitto, started
//! here): the tracker publishes pushes and raised waves retained with QoS 1;
//! a device's subscription (`ota_client::broker`, what the agent runs) gets
//! them, also when it subscribes later and after the broker restarted
//! without its retained store; with `deploy/mosquitto/acl` a device cannot
//! publish a forged notice to other devices.

use std::time::Duration;

use ota_client::broker::{subscribe_notices, BrokerEvent, NoticeSubscription};
use ota_proto::release_notice::{BrokerAddr, ReleaseNotice};
use ota_testkit::mqtt_broker::MqttBroker;
use ota_testkit::tracker::TestTracker;
use ota_tracker::BrokerPush;
use tokio::sync::mpsc::Receiver;

fn subscription(url: &str, id: &str) -> NoticeSubscription {
    NoticeSubscription {
        addr: url.parse().unwrap(),
        prefix: "ota".into(),
        client_id: id.into(),
        channel: "stable".into(),
        model: "gw-100".into(),
        keep_alive: Duration::from_secs(5),
    }
}

/// The next notice within `limit` (skipping `Connected`), or `None`.
async fn next_notice(rx: &mut Receiver<BrokerEvent>, limit: Duration) -> Option<ReleaseNotice> {
    tokio::time::timeout(limit, async {
        loop {
            match rx.recv().await? {
                BrokerEvent::Notice(n) => return Some(n),
                BrokerEvent::Connected => {}
            }
        }
    })
    .await
    .ok()
    .flatten()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushes_and_raised_waves_reach_subscribers_retained_and_after_a_broker_restart() {
    let mut broker = MqttBroker::start().await;
    let t = TestTracker::start().await;
    let addr: BrokerAddr = broker.url(None).parse().unwrap();
    let _tasks = t.tracker().spawn_broker_push(BrokerPush::new(addr)).unwrap();

    let mut r = ota_testkit::release("fw.bin", 100_000, 16_384);
    r.rollout_percent = Some(0);
    t.client().register(&r).await.unwrap();
    // The broker publisher is not an event-stream subscriber.
    assert_eq!(t.client().subscribers().await.unwrap(), 0);
    assert_eq!(t.client().push(&r.info_hash).await.unwrap(), 0);

    // Subscribing after the push: the retained notice arrives at once.
    let (mut rx, _sub) = subscribe_notices(subscription(&broker.url(None), "dev-a")).unwrap();
    let n = next_notice(&mut rx, Duration::from_secs(15))
        .await
        .unwrap_or_else(|| panic!("no retained notice; broker log:\n{}", broker.log()));
    assert_eq!(
        (n.info_hash, n.name.as_str(), n.rollout_percent),
        (r.info_hash, "fw.bin", 0)
    );
    assert!(!n.wave_includes("dev-a"), "a 0 % wave includes no device");

    // Raising the wave publishes the notice again, with the new percentage.
    t.client().set_rollout(&r.info_hash, 100).await.unwrap();
    let n = next_notice(&mut rx, Duration::from_secs(15))
        .await
        .expect("notice of the raised wave");
    assert_eq!((n.info_hash, n.rollout_percent), (r.info_hash, 100));
    assert!(n.wave_includes("dev-a"));

    // The broker restarts without persistence (retained notices lost): the
    // tracker reconnects and publishes every pushed release again.
    broker.kill().await;
    broker.restart().await;
    let (mut late, _late_sub) = subscribe_notices(subscription(&broker.url(None), "dev-b")).unwrap();
    let n = next_notice(&mut late, Duration::from_secs(30))
        .await
        .unwrap_or_else(|| panic!("no notice after the broker restarted; broker log:\n{}", broker.log()));
    assert_eq!((n.info_hash, n.rollout_percent), (r.info_hash, 100));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_deploy_acl_only_the_tracker_publishes_notices() {
    let acl = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/mosquitto/acl");
    let users = [("ota-tracker", "tracker-secret"), ("device", "device-secret")];
    let broker = MqttBroker::start_with_users(&users, &acl).await;
    let t = TestTracker::start().await;
    let tracker_url = broker.url(Some(users[0]));
    let device_url = broker.url(Some(users[1]));
    let _tasks = t
        .tracker()
        .spawn_broker_push(BrokerPush::new(tracker_url.parse().unwrap()))
        .unwrap();

    let (mut rx, _sub) = subscribe_notices(subscription(&device_url, "dev-a")).unwrap();
    let connected = tokio::time::timeout(Duration::from_secs(15), rx.recv()).await;
    assert!(
        matches!(connected, Ok(Some(BrokerEvent::Connected))),
        "{connected:?}; broker log:\n{}",
        broker.log()
    );

    // A device forges a notice on every device's topic: the broker drops it.
    let forged = ReleaseNotice {
        info_hash: ota_proto::InfoHash([9; 20]),
        name: "evil.bin".into(),
        version: "6.6.6".into(),
        rollout_percent: 100,
    };
    let mut opts = rumqttc::MqttOptions::new("dev-evil", "127.0.0.1", broker.addr().port());
    opts.set_credentials("device", "device-secret");
    let (evil, mut evil_loop) = rumqttc::AsyncClient::new(opts, 8);
    evil.publish("ota/releases/*/*", rumqttc::QoS::AtLeastOnce, true, forged.encode())
        .await
        .unwrap();
    let mut acked = false;
    for _ in 0..50 {
        match tokio::time::timeout(Duration::from_secs(5), evil_loop.poll()).await {
            Ok(Ok(rumqttc::Event::Incoming(rumqttc::Packet::PubAck(_)))) => {
                acked = true;
                break;
            }
            Ok(Ok(_)) => {}
            other => panic!("forging client: {other:?}"),
        }
    }
    assert!(acked, "the broker never answered the forged publish");

    // The tracker's real notice arrives; the forged one never does.
    let r = ota_testkit::release("fw.bin", 100_000, 16_384);
    t.client().register(&r).await.unwrap();
    t.client().push(&r.info_hash).await.unwrap();
    let n = next_notice(&mut rx, Duration::from_secs(15))
        .await
        .unwrap_or_else(|| panic!("no notice from the tracker; broker log:\n{}", broker.log()));
    assert_eq!(n.info_hash, r.info_hash, "got {n:?}");
    assert_eq!(
        next_notice(&mut rx, Duration::from_secs(2)).await,
        None,
        "a forged notice came through"
    );
}
