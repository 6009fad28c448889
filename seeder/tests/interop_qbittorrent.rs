//! qBittorrent 4.5 (Debian `qbittorrent-nox`, on libtorrent-rasterbar 2.0)
//! against the tracker and the S3-backed seeder, driven over its Web API v2
//! (reqwest, no login: `WebUI\LocalHostAuth=false`), everything on
//! 127.0.0.1 with DHT, PeX, LSD, UPnP and NAT-PMP off, so that the tracker is
//! its only source of peers.
//!
//! - It announces, the tracker lists it (`-qB4520-`) and hands it a fake
//!   peer the test announced, which it dials (BEP 3 handshake for this info
//!   hash); starved while the fake holds the origin grant, it is handed the
//!   origin, downloads the package byte for byte from the S3-backed seeder
//!   (whose ledger counts the bytes: the origin never dials out), announces
//!   `completed`, reports the swarm counts of the tracker's answers, and
//!   leaves on `stopped` when it shuts down.
//! - It scrapes: libtorrent scrapes by itself only torrents that are queued
//!   (paused and auto-managed), first 180 s after the session starts and then
//!   at most every 15 min (qBittorrent sets `auto_scrape_min_interval` to
//!   900 s; qBittorrent 4.5 has no scrape action of its own). The second test
//!   queues a torrent that never announces and waits for that scrape: a
//!   recording tap in front of the tracker sees the `GET /scrape` for this
//!   info hash, and qBittorrent then shows the tracker's seeder and leecher
//!   counts. It takes about 3 minutes for that reason. libtorrent's SSRF
//!   mitigation (on by default) drops every request to a loopback tracker
//!   whose path is not `/announce`, scrapes included, so that test turns it
//!   off (`Session\SSRFMitigation=false`); with a tracker on 127.0.0.1 and
//!   default settings qBittorrent never scrapes.
//!
//! qBittorrent re-announces by itself only after libtorrent's
//! `min_announce_interval` (300 s) whatever interval the tracker asks for,
//! so the first test asks for re-announces over the Web API
//! (`/api/v2/torrents/reannounce`). Encryption is off (`Session\Encryption=2`)
//! so that its handshake to the fake peer is plaintext; uTP is off.
//!
//! The child is killed by PID when its guard drops (every panic), and
//! explicitly after a clean shutdown; every wait is bounded.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use ota_client::{AnnounceParams, TrackerClient};
use ota_proto::announce::{parse_scrape, AnnounceEvent, ScrapeStats};
use ota_proto::api::PeerInfo;
use ota_proto::metainfo::torrent_bytes;
use ota_proto::InfoHash;
use ota_testkit::child::{require, tail, ChildGuard};
use ota_testkit::fake_peer::{check_handshake, FakePeer};
use ota_testkit::http_tap::HttpTap;
use ota_testkit::net::free_port;
use ota_testkit::package;
use ota_testkit::stack::{wait_origin, Stack};
use serde_json::Value;

const QBT: &str = "/usr/bin/qbittorrent-nox";
const PIECE: u64 = 256 * 1024;
const SIZE: usize = 3 * 1024 * 1024 + 555;

// ------------------------------------------------------------ qBittorrent

/// How the session queues torrents.
#[derive(Clone, Copy)]
enum Queueing {
    /// No queueing system: an added torrent starts at once.
    Off,
    /// Queueing on with no active download allowed: an added torrent stays
    /// queued (paused, auto-managed), the only kind libtorrent auto-scrapes.
    Queued,
}

/// A running `qbittorrent-nox` with its own profile folder.
struct Qbt {
    guard: ChildGuard,
    api: String,
    http: reqwest::Client,
    peer_port: u16,
    profile: tempfile::TempDir,
}

impl Qbt {
    /// Writes a profile (`PROFILE/qBittorrent/config/qBittorrent.conf`) and
    /// starts qBittorrent on it; waits (at most 20 s) for the Web API.
    async fn start(queueing: Queueing) -> Qbt {
        require(QBT, "qbittorrent-nox");
        let profile = tempfile::tempdir().unwrap();
        let config = profile.path().join("qBittorrent/config");
        std::fs::create_dir_all(&config).unwrap();
        std::fs::create_dir_all(profile.path().join("save")).unwrap();
        let (web_port, peer_port) = (free_port().unwrap(), free_port().unwrap());
        // SSRF mitigation (on by default) drops every request to a loopback
        // tracker whose path is not `/announce`, so on 127.0.0.1 it forbids
        // scrapes (libtorrent's http_tracker_connection.cpp): off for the
        // scrape test only.
        let (queueing_enabled, max_active, ssrf_mitigation) = match queueing {
            Queueing::Off => (false, 3, true),
            Queueing::Queued => (true, 0, false),
        };
        // Keys as qBittorrent 4.5.2 reads them (src/base/preferences.cpp,
        // src/base/bittorrent/sessionimpl.cpp). 4.5 has no
        // `--confirm-legal-notice` flag (5.0 added it): the notice is
        // accepted in the file. `MigrationVersion=4` skips the settings
        // upgrade of a first start.
        let conf = format!(
            r"[LegalNotice]
Accepted=true

[Meta]
MigrationVersion=4

[Network]
PortForwardingEnabled=false

[BitTorrent]
Session\DHTEnabled=false
Session\LSDEnabled=false
Session\PeXEnabled=false
Session\Port={peer_port}
Session\InterfaceAddress=127.0.0.1
Session\Encryption=2
Session\BTProtocol=TCP
Session\MultiConnectionsPerIp=true
Session\QueueingSystemEnabled={queueing_enabled}
Session\MaxActiveDownloads={max_active}
Session\MaxActiveTorrents={max_active}
Session\RefreshInterval=250
Session\SSRFMitigation={ssrf_mitigation}
Session\DefaultSavePath={save}

[Preferences]
WebUI\Enabled=true
WebUI\Address=127.0.0.1
WebUI\Port={web_port}
WebUI\LocalHostAuth=false
WebUI\UseUPnP=false
Connection\ResolvePeerCountries=false
General\Locale=en
",
            save = profile.path().join("save").display()
        );
        std::fs::write(config.join("qBittorrent.conf"), conf).unwrap();
        let stderr = profile.path().join("stderr.txt");
        let guard = ChildGuard::spawn(
            tokio::process::Command::new(QBT)
                .arg(format!("--profile={}", profile.path().display()))
                .stdin(Stdio::null())
                .stdout(std::fs::File::create(profile.path().join("stdout.txt")).unwrap()),
            "qbittorrent-nox",
            stderr,
        );
        let mut qb = Qbt {
            guard,
            api: format!("http://127.0.0.1:{web_port}/api/v2"),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .no_proxy()
                .build()
                .unwrap(),
            peer_port,
            profile,
        };
        let end = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(r) = qb.http.get(format!("{}/app/version", qb.api)).send().await {
                let version = r.text().await.unwrap_or_default();
                assert!(
                    version.starts_with("v4."),
                    "qBittorrent {version}: this test reads 4.x settings"
                );
                break;
            }
            if let Some(status) = qb.guard.exited() {
                panic!("qbittorrent-nox exited with {status}: {}", qb.diagnostics());
            }
            assert!(
                Instant::now() < end,
                "qBittorrent's Web API did not come up within 20 s: {}",
                qb.diagnostics()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        qb
    }

    fn save_dir(&self) -> PathBuf {
        self.profile.path().join("save")
    }

    /// Its stderr and the end of its own log, for failure messages.
    fn diagnostics(&self) -> String {
        let log = self.profile.path().join("qBittorrent/data/logs/qbittorrent.log");
        format!(
            "stderr:\n{}\nqbittorrent.log:\n{}",
            self.guard.stderr_text(),
            tail(&std::fs::read_to_string(log).unwrap_or_default(), 40)
        )
    }

    async fn get(&self, path: &str, query: &[(&str, &str)]) -> Value {
        let r = self
            .http
            .get(format!("{}{path}", self.api))
            .query(query)
            .send()
            .await
            .and_then(|r| r.error_for_status());
        match r {
            Ok(r) => r
                .json()
                .await
                .unwrap_or_else(|e| panic!("GET {path}: {e}; {}", self.diagnostics())),
            Err(e) => panic!("GET {path}: {e}; {}", self.diagnostics()),
        }
    }

    async fn post(&self, path: &str, form: &[(&str, &str)]) -> String {
        let r = self
            .http
            .post(format!("{}{path}", self.api))
            .form(form)
            .send()
            .await
            .and_then(|r| r.error_for_status());
        match r {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(e) => panic!("POST {path}: {e}; {}", self.diagnostics()),
        }
    }

    /// `POST /api/v2/torrents/add` with the `.torrent` file (multipart, as
    /// the Web UI uploads it) and the save folder; waits (at most 10 s) until
    /// the torrent `hash` is listed (qBittorrent adds it asynchronously:
    /// until then its other endpoints answer 404).
    async fn add(&self, torrent: &[u8], hash: &str) {
        let boundary = "ota-interop-7d3c9f1a2b5e";
        assert!(!torrent.windows(boundary.len()).any(|w| w == boundary.as_bytes()));
        let mut body = Vec::new();
        body.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"torrents\"; filename=\"pkg.torrent\"\r\n\
                 Content-Type: application/x-bittorrent\r\n\r\n"
            )
            .as_bytes(),
        );
        body.extend_from_slice(torrent);
        body.extend_from_slice(
            format!(
                "\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"savepath\"\r\n\r\n{}\r\n--{boundary}--\r\n",
                self.save_dir().display()
            )
            .as_bytes(),
        );
        let r = self
            .http
            .post(format!("{}/torrents/add", self.api))
            .header("Content-Type", format!("multipart/form-data; boundary={boundary}"))
            .body(body)
            .send()
            .await
            .unwrap_or_else(|e| panic!("torrents/add: {e}; {}", self.diagnostics()));
        let status = r.status();
        let text = r.text().await.unwrap_or_default();
        assert!(
            status.is_success() && text.trim() == "Ok.",
            "torrents/add answered {status} {text:?}; {}",
            self.diagnostics()
        );
        self.wait_info(hash, Duration::from_secs(10), "added", |i| i["hash"] == hash)
            .await;
    }

    /// The torrent's entry in `/api/v2/torrents/info` (null until added).
    async fn info(&self, hash: &str) -> Value {
        self.get("/torrents/info", &[("hashes", hash)]).await[0].clone()
    }

    /// The HTTP tracker's entry in `/api/v2/torrents/trackers` (the list
    /// also holds DHT, PeX and LSD pseudo-entries).
    async fn tracker(&self, hash: &str) -> Value {
        let list = self.get("/torrents/trackers", &[("hash", hash)]).await;
        list.as_array()
            .and_then(|l| {
                l.iter()
                    .find(|t| t["url"].as_str().is_some_and(|u| u.starts_with("http")))
            })
            .cloned()
            .unwrap_or(Value::Null)
    }

    /// Polls the tracker entry until `want` holds, for at most `limit`.
    async fn wait_tracker(&self, hash: &str, limit: Duration, what: &str, want: impl Fn(&Value) -> bool) -> Value {
        let end = Instant::now() + limit;
        loop {
            let t = self.tracker(hash).await;
            if want(&t) {
                return t;
            }
            assert!(
                Instant::now() < end,
                "qBittorrent's tracker entry did not show {what} within {limit:?}: {t}; {}",
                self.diagnostics()
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Polls the torrent until `want` holds, for at most `limit`.
    async fn wait_info(&self, hash: &str, limit: Duration, what: &str, want: impl Fn(&Value) -> bool) -> Value {
        let end = Instant::now() + limit;
        loop {
            let i = self.info(hash).await;
            if want(&i) {
                return i;
            }
            assert!(
                Instant::now() < end,
                "qBittorrent's torrent was not {what} within {limit:?}: {i}; {}",
                self.diagnostics()
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Asks qBittorrent to quit (`/api/v2/app/shutdown`: it pauses the
    /// session, which announces `stopped`), checks that it exited within
    /// 20 s, and kills it by PID in any case.
    async fn shutdown(mut self) {
        self.post("/app/shutdown", &[]).await;
        let status = self.guard.wait_exit(Duration::from_secs(20)).await;
        let diagnostics = self.diagnostics();
        self.guard.kill().await;
        assert!(
            status.is_some(),
            "qbittorrent-nox did not exit within 20 s of /app/shutdown: {diagnostics}"
        );
    }
}

// ---------------------------------------------------------------- helpers

/// The tracker's view of the peers whose id starts with `tag`.
async fn peers_tagged(admin: &TrackerClient, ih: &InfoHash, tag: &str) -> Vec<PeerInfo> {
    let peers = admin.peers(ih).await.unwrap();
    peers.into_iter().filter(|p| p.client.starts_with(tag)).collect()
}

/// Polls [`peers_tagged`] until `want` holds, for at most `limit`.
async fn wait_tagged(
    admin: &TrackerClient,
    ih: &InfoHash,
    tag: &str,
    limit: Duration,
    want: impl Fn(&[PeerInfo]) -> bool,
) -> Vec<PeerInfo> {
    let end = Instant::now() + limit;
    loop {
        let mine = peers_tagged(admin, ih, tag).await;
        if want(&mine) || Instant::now() > end {
            return mine;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Announces a fake peer (no device) as `left` bytes short of the package.
async fn announce_fake(c: &TrackerClient, ih: &InfoHash, f: &FakePeer, left: u64, event: AnnounceEvent) {
    let a = AnnounceParams {
        info_hash: *ih,
        peer_id: f.peer_id,
        port: f.addr.port(),
        uploaded: 0,
        downloaded: 0,
        left,
        event,
        device: None,
    };
    c.announce(&a).await.unwrap();
}

fn tracker_counts(s: &ScrapeStats) -> (i64, i64, i64) {
    (s.complete.into(), s.incomplete.into(), s.downloaded.into())
}

// ------------------------------------------------------------------ tests

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn qbittorrent_is_handed_peers_and_downloads_from_the_origin() {
    let t0 = Instant::now();
    let stack = Stack::start().await;
    let admin = stack.tracker.client();
    let data = package(SIZE, 11);
    let published = stack.publish("qbittorrent/pkg.bin", &data, PIECE).await;
    let ih = published.release.info_hash;
    let hash = ih.to_string();
    let seeder = stack.start_seeding(stack.seed_settings(), &ih).await;
    assert!(
        wait_origin(admin, &ih, 1, Duration::from_secs(10)).await,
        "the origin did not announce"
    );

    // A fake peer joins first, as a leecher: it takes the one origin grant,
    // so qBittorrent is handed the fake alone until it starves.
    let mut fake = FakePeer::start(1).await;
    let anon = stack.tracker.anonymous_client();
    announce_fake(&anon, &ih, &fake, SIZE as u64, AnnounceEvent::Started).await;

    let torrent = admin.torrent(&ih, "qbittorrent").await.unwrap();
    let qb = Qbt::start(Queueing::Off).await;
    qb.add(&torrent, &hash).await;

    // Client side: its announce was answered and it was handed peers.
    let entry = qb
        .wait_tracker(&hash, Duration::from_secs(30), "a working announce with peers", |t| {
            t["status"] == 2 && t["num_peers"].as_i64() >= Some(1)
        })
        .await;
    assert!(
        entry["url"]
            .as_str()
            .is_some_and(|u| u.starts_with(stack.tracker.url())),
        "{entry}"
    );
    // Tracker side: qBittorrent 4.5.2 (`-qB4520-`) is in the swarm, a
    // leecher at its listen port.
    let mine = wait_tagged(admin, &ih, "-qB", Duration::from_secs(10), |m| m.len() == 1).await;
    assert_eq!(
        mine.len(),
        1,
        "one qBittorrent peer: {:?}",
        admin.peers(&ih).await.unwrap()
    );
    assert_eq!(mine[0].client, "-qB4520-");
    assert_eq!(mine[0].addr, format!("127.0.0.1:{}", qb.peer_port), "announced address");
    assert_eq!(mine[0].left, SIZE as u64);
    // It dials the fake peer the tracker handed out, for this torrent.
    let h = fake
        .plaintext_handshake(Duration::from_secs(20))
        .await
        .unwrap_or_else(|e| panic!("{e}; {}", qb.diagnostics()));
    check_handshake(&h, &ih, "-qB4520-");

    // Starved (no progress), it is handed the origin on a later announce:
    // ask for one, wait 4 s for the download to start, ask again. (libtorrent
    // sends a forced announce 1 s after the later of now and the last one's
    // minimum interval, and moves that minimum there: asking every second
    // would postpone it for ever.)
    let end = Instant::now() + Duration::from_secs(30);
    'reannounce: loop {
        qb.post("/torrents/reannounce", &[("hashes", &hash)]).await;
        let wait = Instant::now() + Duration::from_secs(4);
        let i = loop {
            let i = qb.info(&hash).await;
            if i["downloaded"].as_u64().unwrap_or(0) > 0 {
                break 'reannounce;
            }
            if Instant::now() > wait {
                break i;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        };
        assert!(
            Instant::now() < end,
            "qBittorrent never started downloading: {i}; tracker entry {}; swarm {:?}; {}",
            qb.tracker(&hash).await,
            admin.peers(&ih).await.unwrap(),
            qb.diagnostics()
        );
    }
    let done = qb
        .wait_info(&hash, Duration::from_secs(30), "complete", |i| {
            i["progress"].as_f64() == Some(1.0) && i["amount_left"] == 0
        })
        .await;
    let got = std::fs::read(qb.save_dir().join(&published.release.name)).expect("qBittorrent's download");
    assert!(got == data, "qBittorrent's copy differs from the package: {done}");

    // The bytes came from the origin over BitTorrent (the fake sends none,
    // and the origin never dials out: qBittorrent dialed the address the
    // tracker handed it). The ledger is sampled every second.
    let served = ota_testkit::stack::wait_served(&seeder, SIZE as u64, Duration::from_secs(10)).await;
    assert!(served >= SIZE as u64, "origin served {served} bytes over BitTorrent");

    // It announced `completed`: a seeder now, its download counted.
    let mine = wait_tagged(admin, &ih, "-qB", Duration::from_secs(15), |m| {
        m.len() == 1 && m[0].left == 0
    })
    .await;
    assert!(mine.len() == 1 && mine[0].left == 0, "{mine:?}");
    // The swarm counts it shows (`torrents/info`: libtorrent's current
    // ones) are those of the tracker's answer to that announce: the origin
    // and qBittorrent complete, the fake incomplete. (The `trackers`
    // endpoint of qBittorrent 4.5.2 keeps the highest count ever seen per
    // tracker, `updateTrackerEntry` in torrentimpl.cpp, so it is not read
    // for these.) An announce answer has no `downloaded`: the `trackers`
    // endpoint's -1 shows that qBittorrent did not scrape (the second test
    // has it scrape).
    let s = admin.scrape(&ih).await.unwrap();
    assert_eq!((s.complete, s.incomplete, s.downloaded), (2, 1, 1), "tracker's counts");
    let i = qb
        .wait_info(&hash, Duration::from_secs(10), "showing the tracker's counts", |i| {
            (i["num_complete"].as_i64(), i["num_incomplete"].as_i64()) == (Some(2), Some(1))
        })
        .await;
    assert_eq!(
        (i["num_complete"].as_i64(), i["num_incomplete"].as_i64()),
        (Some(2), Some(1)),
        "{i}"
    );
    let entry = qb.tracker(&hash).await;
    assert_eq!(entry["num_downloaded"], -1, "qBittorrent scraped: {entry}");

    // It leaves: shutting down announces `stopped`, the tracker drops it.
    qb.shutdown().await;
    let mine = wait_tagged(admin, &ih, "-qB", Duration::from_secs(15), |m| m.is_empty()).await;
    assert!(
        mine.is_empty(),
        "qBittorrent's stopped announce should remove it: {mine:?}"
    );
    seeder.stop().await;
    stack.shutdown().await;
    eprintln!("qBittorrent download test took {:?}", t0.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn qbittorrent_scrapes_a_queued_torrent() {
    let t0 = Instant::now();
    let stack = Stack::start().await;
    let admin = stack.tracker.client();
    let size = 700_000;
    let published = stack.publish("qbittorrent/queued.bin", &package(size, 12), PIECE).await;
    let ih = published.release.info_hash;
    let hash = ih.to_string();
    // A swarm with something to count, all numbers different: one device
    // finished (a completed download), two still leeching.
    let anon = stack.tracker.anonymous_client();
    let fakes = [
        FakePeer::start(1).await,
        FakePeer::start(2).await,
        FakePeer::start(3).await,
    ];
    announce_fake(&anon, &ih, &fakes[0], size as u64, AnnounceEvent::Started).await;
    announce_fake(&anon, &ih, &fakes[0], 0, AnnounceEvent::Completed).await;
    for f in &fakes[1..] {
        announce_fake(&anon, &ih, f, size as u64, AnnounceEvent::Started).await;
    }
    let want = admin.scrape(&ih).await.unwrap();
    assert_eq!(tracker_counts(&want), (1, 2, 1), "tracker's counts");

    // qBittorrent reaches the tracker through a recording tap.
    let tap = HttpTap::start(stack.tracker.addr()).await;
    let torrent = torrent_bytes(&format!("{}/announce", tap.url()), &published.info);
    let qb = Qbt::start(Queueing::Queued).await;
    let started = Instant::now();
    qb.add(&torrent, &hash).await;
    let queued = qb
        .wait_info(&hash, Duration::from_secs(20), "queued", |i| i["state"] == "queuedDL")
        .await;
    assert_eq!(
        (queued["num_complete"].as_i64(), queued["num_incomplete"].as_i64()),
        (Some(0), Some(0)),
        "counts before any tracker answer: {queued}"
    );

    // Tracker side: libtorrent's first auto-scrape comes 180 s after the
    // session started; it names this info hash.
    let end = Instant::now() + Duration::from_secs(240);
    let scrape = loop {
        let found = tap.targets("/scrape").into_iter().find(|target| {
            let query = target.split_once('?').map_or("", |(_, q)| q);
            parse_scrape(query).is_ok_and(|hashes| hashes == vec![ih])
        });
        if let Some(target) = found {
            break target;
        }
        assert!(
            Instant::now() < end,
            "no GET /scrape for {ih} within 240 s: the tap saw {:?}; {}",
            tap.requests(),
            qb.diagnostics()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let waited = started.elapsed();
    // Client side: it shows the tracker's counts (`torrents/info`;
    // qBittorrent 4.5.2 ignores scrape replies itself, so its `trackers`
    // endpoint, and with it `downloaded`, stays as it was). The torrent
    // never announced, so they came from the scrape.
    let i = qb
        .wait_info(&hash, Duration::from_secs(10), "showing the scraped counts", |i| {
            (i["num_complete"].as_i64(), i["num_incomplete"].as_i64()) == (Some(1), Some(2))
        })
        .await;
    assert_eq!(
        (i["num_complete"].as_i64(), i["num_incomplete"].as_i64()),
        (Some(want.complete.into()), Some(want.incomplete.into())),
        "{i}"
    );
    assert!(
        tap.targets("/announce").is_empty(),
        "the queued torrent announced: {:?}",
        tap.requests()
    );
    assert_eq!(i["state"], "queuedDL", "no longer queued: {i}");
    qb.shutdown().await;
    stack.shutdown().await;
    eprintln!(
        "qBittorrent scraped ({scrape}) {waited:?} after the torrent was added (test took {:?})",
        t0.elapsed()
    );
}
