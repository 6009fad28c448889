//! The origin's cost/speed dial end to end ([`ota_seeder::origin_dial`]):
//! the seeder reads the tracker's peer list, sets librqbit's upload limit
//! from its goal, and the limit holds on a real transfer.

use std::time::{Duration, Instant};

use ota_client::AnnounceParams;
use ota_proto::announce::AnnounceEvent;
use ota_proto::PeerId;
use ota_seeder::origin_dial::{DialConfig, OriginGoal};
use ota_seeder::seeding::SeedSettings;
use ota_testkit::leecher::{leech, leecher_session};
use ota_testkit::package;
use ota_testkit::stack::Stack;

const PIECE: u64 = 256 * 1024;
const SIZE: usize = 6 << 20;
const FLOOR: u64 = 1 << 20;

/// A device announcing `left` bytes missing, so that the tracker lists it.
async fn announce_leecher(stack: &Stack, ih: ota_proto::InfoHash, id: u8, left: u64) {
    let a = AnnounceParams {
        info_hash: ih,
        peer_id: PeerId([id; 20]),
        port: 40_000 + u16::from(id),
        uploaded: 0,
        downloaded: 0,
        left,
        event: AnnounceEvent::Started,
        device: None,
    };
    stack.tracker.anonymous_client().announce(&a).await.expect("announce");
}

fn settings(stack: &Stack, goal: OriginGoal) -> SeedSettings {
    SeedSettings {
        origin_goal: goal,
        dial: DialConfig {
            min_bps: FLOOR,
            ..DialConfig::default()
        },
        ..stack.seed_settings()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cheapest_holds_the_origin_at_the_floor_on_a_real_transfer() {
    let stack = Stack::start().await;
    let data = package(SIZE, 7);
    let p = stack.publish("dial/cheap.bin", &data, PIECE).await;
    let ih = p.release.info_hash;
    let seeder = stack.start_seeding(settings(&stack, OriginGoal::Cheapest), &ih).await;
    // Idle: a new crowd starts at the floor.
    assert_eq!(seeder.dial_round(true).await, Some(FLOOR as u32));
    announce_leecher(&stack, ih, 1, SIZE as u64).await;
    assert_eq!(
        seeder.dial_round(true).await,
        Some(FLOOR as u32),
        "a leecher: still the floor"
    );

    let dir = stack.dir.path().join("leecher");
    let session = leecher_session(&dir).await;
    let started = Instant::now();
    let handle = leech(&session, &p.info, seeder.peer_listen(), &dir.join("out")).await;
    tokio::time::timeout(Duration::from_secs(60), handle.wait_until_completed())
        .await
        .expect("leecher finished within 60 s")
        .expect("leecher completed");
    let took = started.elapsed();
    let got = std::fs::read(dir.join("out").join(&p.release.name)).unwrap();
    assert!(got == data, "the package differs");
    // 6 MiB at 1 MiB/s, less the limiter's one-second burst: at least 5 s
    // (unlimited, it takes well under one on loopback).
    assert!(
        took >= Duration::from_secs(4),
        "6 MiB at a 1 MiB/s floor took only {took:?}"
    );
    eprintln!("6 MiB at the 1 MiB/s floor: {took:?}");
    session.stop().await;
    seeder.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn within_asks_for_the_deadline_rate_and_fastest_lifts_the_limit() {
    let stack = Stack::start().await;
    let p = stack.publish("dial/within.bin", &package(SIZE, 8), PIECE).await;
    let ih = p.release.info_hash;
    let seeder = stack
        .start_seeding(
            settings(&stack, OriginGoal::CompleteWithin(Duration::from_secs(3))),
            &ih,
        )
        .await;
    announce_leecher(&stack, ih, 1, SIZE as u64).await;
    announce_leecher(&stack, ih, 2, SIZE as u64).await;
    // Two devices missing 6 MiB each, 3 s to go, nothing received yet:
    // 4 MiB/s needed, × the default margin 1.25 = 5 MiB/s (less the time
    // already gone since the announces).
    assert_eq!(
        seeder.dial_round(false).await,
        Some(FLOOR as u32),
        "an origin that sends nothing is not polled: the idle floor"
    );
    let limit = seeder.dial_round(true).await.expect("a limit");
    let want = 2.0 * SIZE as f64 / 3.0 * DialConfig::default().margin;
    assert!(
        (want * 0.95..want * 1.5).contains(&f64::from(limit)),
        "limit {limit} B/s, want about {want}"
    );
    // Past the deadline and not done: the limit is lifted.
    tokio::time::sleep(Duration::from_millis(3100)).await;
    assert_eq!(seeder.dial_round(true).await, None, "late devices: unlimited");
    seeder.stop().await;

    let fast = stack.start_seeding(settings(&stack, OriginGoal::Fastest), &ih).await;
    assert_eq!(fast.dial_round(true).await, None);
    fast.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_release_s_own_goal_beats_the_seeder_default() {
    let stack = Stack::start().await;
    let p = stack.publish("dial/own.bin", &package(SIZE, 9), PIECE).await;
    let ih = p.release.info_hash;
    let seeder = stack.start_seeding(settings(&stack, OriginGoal::Cheapest), &ih).await;
    announce_leecher(&stack, ih, 1, SIZE as u64).await;
    assert_eq!(
        seeder.dial_round(true).await,
        Some(FLOOR as u32),
        "the default: cheapest"
    );
    let r = stack
        .tracker
        .client()
        .set_origin_goal(&ih, Some(OriginGoal::Fastest))
        .await
        .expect("set the release's goal");
    assert_eq!(r.origin_goal, Some(OriginGoal::Fastest));
    seeder.sync_releases().await.expect("sync");
    assert_eq!(seeder.dial_round(true).await, None, "the release's own goal: fastest");
    seeder.stop().await;
}
