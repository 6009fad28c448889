//! Issue 12: a device that was handed the whole package and then vanished
//! (killed, no `stopped` event) must not keep the origin from a plain
//! BitTorrent client that has no HTTP fallback.
//!
//! Two aria2 1.36 clients (Debian `aria2`) against the tracker (3 s announce
//! interval) and the S3-backed seeder, all on 127.0.0.1: the first, the
//! "device", downloads the package from the origin, seeds, is believed a
//! seeder by the tracker (reachable, `left=0` after leeching) and is killed
//! with SIGKILL. The second joins through a recording proxy in front of the
//! tracker: its first announce lists the dead seeder and not the origin (the
//! seeder still looks alive, and a swarm whose seeders serve keeps using
//! them); after one interval without progress the origin is listed, and the
//! download completes byte for byte. Before the fix the origin came back
//! only after 4 intervals, or when the dead seeder's entry expired.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ota_proto::direct_paths::Reach;
use ota_proto::InfoHash;
use ota_testkit::net::free_port;
use ota_testkit::package;
use ota_testkit::stack::{Stack, TestS3, ADMIN};
use ota_testkit::tracker::TestTracker;

const ARIA2: &str = "/usr/bin/aria2c";
const PIECE: u64 = 256 * 1024;
const SIZE: usize = 3 * 1024 * 1024 + 777;
/// The tracker's announce interval (and `min interval`).
const INTERVAL: Duration = Duration::from_secs(3);
/// How late after one interval aria2's second announce may come: it checks
/// its announce timer about once a second, plus scheduling on a busy host.
const ANNOUNCE_SLACK: Duration = Duration::from_secs(2);
/// How long a 3 MiB download on loopback may take once a source is listed.
const DOWNLOAD_WITHIN: Duration = Duration::from_secs(30);

/// One announce answer the proxy passed on: when it came back, and the body.
type Answers = Arc<Mutex<Vec<(Instant, Vec<u8>)>>>;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_seeder_does_not_keep_the_origin_from_a_plain_client() {
    assert!(
        Path::new(ARIA2).exists(),
        "{ARIA2} is missing: install the Debian package aria2 (bash deploy/test-deps.sh)"
    );
    let stack = stack_with_interval(INTERVAL).await;
    let data = package(SIZE, 12);
    let published = stack.publish("vanished/pkg.bin", &data, PIECE).await;
    let ih = published.release.info_hash;
    let settings = stack.seed_settings();
    let origin_addr = settings.peer_listen;
    let seeder = stack.start_seeding(settings, &ih).await;
    let torrent = stack.tracker.client().torrent(&ih, "device").await.unwrap();
    let root = stack.dir.path().join("aria2");
    std::fs::create_dir_all(&root).unwrap();
    let torrent_path = root.join("pkg.torrent");
    std::fs::write(&torrent_path, &torrent).unwrap();

    // 1. The device: downloads from the origin (it takes the grant), seeds.
    let device_port = free_port().unwrap();
    let device_addr: SocketAddr = ([127, 0, 0, 1], device_port).into();
    let device_dir = root.join("device");
    let mut device = aria2(
        &torrent_path,
        &device_dir,
        device_port,
        &["--seed-time=10", "--seed-ratio=0.0"],
    );
    let believed = wait_believed_seeder(&stack, &ih, device_addr, Duration::from_secs(60)).await;
    if !believed {
        let _ = device.kill().await;
        panic!(
            "the device was not a reachable seeder within 60 s; its log:\n{}",
            tail(&device_dir.join("aria2.log"))
        );
    }
    assert!(
        std::fs::read(device_dir.join("out/pkg.bin")).ok().as_deref() == Some(&data[..]),
        "the device's copy differs from the package"
    );
    // It vanishes: SIGKILL, no `stopped`; the tracker still lists it.
    device.kill().await.expect("SIGKILL the device");
    let vanished = Instant::now();
    let listed = stack.tracker.client().peers(&ih).await.unwrap();
    assert!(
        listed.iter().any(|p| p.addr == device_addr.to_string() && p.left == 0),
        "the killed device is still listed as a seeder: {listed:?}"
    );

    // 2. A plain client (no HTTP fallback) joins, its announces recorded.
    let answers: Answers = Arc::default();
    let proxy = announce_proxy(stack.tracker.url(), answers.clone()).await;
    let client_port = free_port().unwrap();
    let client_dir = root.join("client");
    let tracker_url = format!("http://{}/announce?device=plain-client", proxy.0);
    let started = Instant::now();
    let mut client = aria2(
        &torrent_path,
        &client_dir,
        client_port,
        &[
            "--seed-time=0",
            "--bt-exclude-tracker=*",
            &format!("--bt-tracker={tracker_url}"),
        ],
    );
    let bound = INTERVAL + ANNOUNCE_SLACK + DOWNLOAD_WITHIN;
    let status = tokio::time::timeout(bound, client.wait()).await;
    let finished = Instant::now();
    proxy.1.abort();
    let log = tail(&client_dir.join("aria2.log"));
    let status = match status {
        Ok(s) => s.expect("wait for aria2c"),
        Err(_) => {
            let _ = client.kill().await;
            panic!(
                "the client did not finish within {bound:?}; answers: {}; its log:\n{log}",
                describe(&answers, origin_addr)
            );
        }
    };
    assert!(status.success(), "aria2c failed ({status}); its log:\n{log}");
    let got = std::fs::read(client_dir.join("out/pkg.bin")).expect("the client's download");
    assert!(got == data, "the client's copy differs from the package");

    // 3. What the tracker answered it, announce by announce.
    let answers: Vec<(Instant, Vec<SocketAddr>)> = answers
        .lock()
        .unwrap()
        .iter()
        .map(|(at, body)| {
            (
                *at,
                ota_proto::announce::decode_announce(body).expect("announce answer").1,
            )
        })
        .collect();
    let (first_at, first) = answers.first().cloned().expect("the client announced");
    assert!(
        first.contains(&device_addr) && !first.contains(&origin_addr),
        "first announce: the dead seeder (still looking alive) and not the origin: {first:?}"
    );
    let (n, origin_at) = answers
        .iter()
        .enumerate()
        .find(|(_, (_, peers))| peers.contains(&origin_addr))
        .map(|(n, (at, _))| (n, *at))
        .expect("the origin was listed");
    let waited = origin_at.duration_since(first_at);
    eprintln!(
        "origin listed at announce {} of {}, {:.2} s after the first (interval {} s); \
         first announce {:.2} s after aria2 started, {:.2} s after the device was killed; \
         download complete {:.2} s after the origin was listed, {:.2} s after aria2 started",
        n + 1,
        answers.len(),
        waited.as_secs_f64(),
        INTERVAL.as_secs(),
        first_at.duration_since(started).as_secs_f64(),
        first_at.duration_since(vanished).as_secs_f64(),
        finished.duration_since(origin_at).as_secs_f64(),
        finished.duration_since(started).as_secs_f64(),
    );
    assert!(
        waited <= INTERVAL + ANNOUNCE_SLACK,
        "the origin came back {waited:?} after the first announce, more than one interval \
         ({INTERVAL:?}) plus {ANNOUNCE_SLACK:?}"
    );
    // The origin served it over BitTorrent (its ledger is sampled every
    // second: wait for it, bounded). The device had fetched one copy before.
    let served = ota_testkit::stack::wait_served(&seeder, 2 * SIZE as u64, Duration::from_secs(10)).await;
    assert!(
        served >= 2 * SIZE as u64,
        "origin served {served} bytes over BitTorrent for two copies"
    );
    seeder.stop().await;
    stack.shutdown().await;
}

/// The testkit's stack ([`Stack::start`]) with announce interval `interval`.
async fn stack_with_interval(interval: Duration) -> Stack {
    let dir = tempfile::tempdir().expect("temporary folder");
    let s3 = TestS3::start(&dir.path().join("s3")).await;
    let tracker = TestTracker::builder()
        .db_dir(dir.path().join("tracker"))
        .admin_token(ADMIN)
        .announce_interval(interval)
        .start()
        .await;
    Stack { dir, s3, tracker }
}

/// Starts aria2c on `torrent` into `DIR/out`, logging to `DIR/aria2.log`,
/// listening on 127.0.0.1:`port`, no DHT, LPD or peer exchange, the
/// tracker's own interval; killed when dropped.
fn aria2(torrent: &Path, dir: &Path, port: u16, extra: &[&str]) -> tokio::process::Child {
    std::fs::create_dir_all(dir).unwrap();
    tokio::process::Command::new(ARIA2)
        .args([
            "--interface=127.0.0.1",
            "--disable-ipv6=true",
            "--enable-dht=false",
            "--enable-dht6=false",
            "--bt-enable-lpd=false",
            "--enable-peer-exchange=false",
            "--check-certificate=false",
            "--file-allocation=none",
            "--summary-interval=0",
            "--console-log-level=warn",
            "--log-level=info",
        ])
        .arg(format!("--listen-port={port}"))
        .args(extra)
        .arg(format!("--log={}", dir.join("aria2.log").display()))
        .arg(format!("--dir={}", dir.join("out").display()))
        .arg(torrent)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start aria2c")
}

/// Waits (bounded by `within`, polling every 100 ms) until the tracker
/// lists `addr` as a seeder it has dialled; returns whether it did.
async fn wait_believed_seeder(stack: &Stack, ih: &InfoHash, addr: SocketAddr, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        let peers = stack.tracker.client().peers(ih).await.unwrap_or_default();
        if peers
            .iter()
            .any(|p| p.addr == addr.to_string() && p.left == 0 && p.reach == Some(Reach::Public))
        {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// An HTTP proxy on 127.0.0.1 that passes `GET /announce?…` on to the
/// tracker at `tracker` unchanged and records every answer; returns its
/// address and its task.
async fn announce_proxy(tracker: &str, answers: Answers) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    use axum::extract::{RawQuery, State};
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let upstream = format!("{tracker}/announce");
    let forward = move |State(answers): State<Answers>, RawQuery(query): RawQuery| {
        let (http, upstream) = (http.clone(), upstream.clone());
        async move {
            let url = format!("{upstream}?{}", query.unwrap_or_default());
            match http.get(url).send().await {
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    let body = resp.bytes().await.map(|b| b.to_vec()).unwrap_or_default();
                    answers.lock().unwrap().push((Instant::now(), body.clone()));
                    (axum::http::StatusCode::from_u16(status).unwrap(), body)
                }
                Err(e) => (axum::http::StatusCode::BAD_GATEWAY, e.to_string().into_bytes()),
            }
        }
    };
    let app = axum::Router::new()
        .route("/announce", axum::routing::get(forward))
        .with_state(answers);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (addr, task)
}

/// The recorded answers as peer lists, the origin marked, for a failure message.
fn describe(answers: &Answers, origin: SocketAddr) -> String {
    let answers = answers.lock().unwrap();
    let Some(t0) = answers.first().map(|a| a.0) else {
        return "none".into();
    };
    answers
        .iter()
        .map(|(at, body)| {
            let peers = ota_proto::announce::decode_announce(body)
                .map(|r| r.1)
                .unwrap_or_default();
            format!(
                "+{:.2} s {:?}{}",
                at.duration_since(t0).as_secs_f64(),
                peers,
                if peers.contains(&origin) { " (origin)" } else { "" }
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// The last 40 lines of a log file.
fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}
