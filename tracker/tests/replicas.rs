//! Two tracker replicas (`--replica-id`) on one PostgreSQL database, over
//! real HTTP on loopback: a peer announced to one is handed out by the
//! other, only one replica grants the origin per swarm, and releases,
//! pushes, devices and revocations made through one reach the other within
//! a few persistence rounds.

use std::collections::BTreeSet;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

mod common;

use futures::StreamExt;
use ota_client::{AnnounceParams, PushMessage};
use ota_proto::announce::{encode_binary, AnnounceEvent};
use ota_proto::InfoHash;
use ota_testkit::tracker::{ConnectabilityConfig, TestTracker, TestTrackerBuilder, DEFAULT_ORIGIN};
use ota_tracker::DeviceAuth;

const ROUND: Duration = Duration::from_millis(200);

fn replica(db: &str, id: &str) -> TestTrackerBuilder {
    TestTracker::builder()
        .database_url(db)
        .replica_id(id)
        .persist_interval(ROUND)
        .device_auth(DeviceAuth::Required)
        .connectability(ConnectabilityConfig {
            enabled: false,
            ..Default::default()
        })
}

fn params(ih: InfoHash, n: u8, left: u64, event: AnnounceEvent) -> AnnounceParams {
    common::client_announce(ih, n, left, event, None)
}

fn addr(n: u8) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 7000 + n as u16))
}

/// Polls `check` every 50 ms for at most 5 s (25 rounds); returns its last
/// value.
async fn within_rounds<T, F, Fut>(mut check: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    for _ in 0..100 {
        if let Some(v) = check().await {
            return Some(v);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}

#[tokio::test(flavor = "multi_thread")]
async fn two_replicas_share_one_swarm_and_one_origin_grant() {
    let pg = ota_testkit::pg::PgCluster::start();
    let db = pg.create_db("replicas").await;
    let a = replica(&db, "a").start().await;
    let b = replica(&db, "b").start().await;
    let new = ota_testkit::release("pkg.bin", 10, 262144);
    let ih = new.info_hash;

    // A device registered and subscribed through B; the release registered
    // and pushed through A reaches it.
    let d1 = b.device_client("d1", "stable", "generic").await;
    let mut pushes = d1.subscribe().await.unwrap();
    within_rounds(|| async { (b.client().subscribers().await.ok()? == 1).then_some(()) })
        .await
        .expect("subscribed to B");
    a.client().register(&new).await.unwrap();
    assert_eq!(a.client().push(&ih).await.unwrap(), 0, "nobody subscribed to A");
    let ev = tokio::time::timeout(Duration::from_secs(5), pushes.next())
        .await
        .expect("B relays A's push within a few rounds")
        .unwrap()
        .unwrap();
    assert!(matches!(ev, PushMessage::Release(e) if e.info_hash == ih));

    // The origin announces to A; B hands it out once it read A's rows.
    let (_, body) = {
        let r = reqwest::get(format!(
            "{}/announce?info_hash={}&peer_id={}&port=7000&uploaded=0&downloaded=0&left=0&origin_token={DEFAULT_ORIGIN}",
            a.url(),
            encode_binary(ih.as_ref()),
            encode_binary(&[0; 20])
        ))
        .await
        .unwrap();
        (r.status(), r.bytes().await.unwrap())
    };
    ota_proto::announce::decode_announce(&body).unwrap();
    // Device 2 registered through A, announcing to A; device 1 to B. A
    // claimed the lease at the push (and keeps it while it has leechers).
    let d2 = a.device_client("d2", "stable", "generic").await;
    d2.announce(&params(ih, 2, 10, AnnounceEvent::Started)).await.unwrap();
    let granted = within_rounds(|| async {
        let got = d2.announce(&params(ih, 2, 10, AnnounceEvent::None)).await.ok()?.1;
        got.contains(&addr(0)).then_some(())
    })
    .await;
    assert!(granted.is_some(), "A, holding the lease, grants the origin to device 2");
    // Device 1 (at B) is handed A's device 2, and not the origin: the one
    // origin slot is taken by a grant made through A.
    let at_b = within_rounds(|| async {
        let got = d1.announce(&params(ih, 1, 10, AnnounceEvent::None)).await.ok()?.1;
        got.contains(&addr(2)).then_some(got)
    })
    .await
    .expect("B hands out the peer announced to A");
    assert!(!at_b.contains(&addr(0)), "{at_b:?}");
    // And A hands out B's device 1.
    within_rounds(|| async {
        let got = d2.announce(&params(ih, 2, 10, AnnounceEvent::None)).await.ok()?.1;
        got.contains(&addr(1)).then_some(())
    })
    .await
    .expect("A hands out the peer announced to B");
    let scrape = b.client().scrape(&ih).await.unwrap();
    assert_eq!((scrape.complete, scrape.incomplete), (1, 2), "B counts the whole swarm");

    // Device 2 leaves: its grant is free, and B, whose device 1 is the only
    // leecher left, takes the lease and grants the origin to it.
    d2.announce(&params(ih, 2, 10, AnnounceEvent::Stopped)).await.unwrap();
    let handed: BTreeSet<SocketAddr> = within_rounds(|| async {
        let got = d1.announce(&params(ih, 1, 10, AnnounceEvent::None)).await.ok()?.1;
        got.contains(&addr(0)).then(|| got.into_iter().collect())
    })
    .await
    .expect("the lease moves to B and B grants the origin");
    assert!(!handed.contains(&addr(2)), "device 2 left: {handed:?}");

    // A device revoked through A is refused by B within a few rounds.
    a.client().revoke_device("d1").await.unwrap();
    within_rounds(|| async { d1.announce(&params(ih, 1, 10, AnnounceEvent::None)).await.err() })
        .await
        .expect("B refuses the revoked device");

    // Readiness follows the database: ready now, 503 once PostgreSQL is gone.
    let ready = |url: String| async move {
        let r = reqwest::get(format!("{url}/ready")).await.unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    };
    assert_eq!(ready(a.url().to_string()).await, (200, "ready".to_string()));
    drop(pg);
    let (status, body) = ready(b.url().to_string()).await;
    assert_eq!((status, body.as_str()), (503, "database unavailable"));
    assert_eq!(reqwest::get(format!("{}/health", b.url())).await.unwrap().status(), 200);
    drop(a);
    drop(b);
}
