//! Interoperability with two independent BitTorrent implementations from
//! Debian, both announcing to this tracker over HTTP on 127.0.0.1:
//!
//! - libtorrent-rasterbar 2.0 through `python3-libtorrent` (run with
//!   `/usr/bin/python3`),
//! - Transmission 3.00 (`transmission-daemon`, driven over its JSON RPC).
//!
//! Each test checks both sides: the tracker lists the client in the swarm
//! (admin peer list with the client's peer-id tag, BEP 48 scrape counts, the
//! client's address handed to another peer) and the client received the peers
//! the tracker handed out. The last test has libtorrent download a package
//! from Transmission with only the tracker to introduce them.
//!
//! Missing packages make the tests fail (not skip) with the `apt-get` line to
//! run. Every child process is killed by PID when its guard drops, also when
//! an assertion fails; temporary directories are removed the same way.
//!
//! Known limit: Transmission 3.00 never dials a peer on 127.0.0.0/8 that a
//! tracker hands out (its "martian address" filter, `isMartianAddr` in
//! libtransmission/net.c), so on loopback its side is checked through the
//! peer count of its last announce, and data flows by libtorrent dialing it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use ota_client::{AnnounceParams, TrackerClient};
use ota_proto::announce::{AnnounceEvent, ScrapeStats};
use ota_proto::api::{NewRelease, PeerInfo};
use ota_proto::metainfo::{info_hash, torrent_bytes, InfoDict};
use ota_proto::InfoHash;
use ota_testkit::child::{require, ChildGuard};
use ota_testkit::fake_peer::{check_handshake, FakePeer};
use ota_testkit::net::free_port;
use ota_testkit::tracker::TestTracker;
use ota_tracker::DeviceAuth;
use serde_json::{json, Value};
use sha1::{Digest, Sha1};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

const ADMIN: &str = "interop-admin-token";
const PYTHON: &str = "/usr/bin/python3";
const PIECE: usize = 16384;

// ---------------------------------------------------------------- tracker

/// A tracker as in production: device tokens required; 5 s announce
/// intervals so that re-announces (if any) come quickly.
async fn start_tracker() -> TestTracker {
    TestTracker::builder()
        .admin_token(ADMIN)
        .device_auth(DeviceAuth::Required)
        .announce_interval(Duration::from_secs(5))
        .start()
        .await
}

/// A small package (5 pieces, the last one short) and its release.
struct Package {
    data: Vec<u8>,
    info: Vec<u8>,
    ih: InfoHash,
    release: NewRelease,
}

fn package(name: &str) -> Package {
    let mut x: u32 = 0x1234_5678;
    let data: Vec<u8> = (0..4 * PIECE + 1000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect();
    let pieces = data.chunks(PIECE).map(|c| Sha1::digest(c).into()).collect();
    let info = InfoDict {
        name: name.into(),
        length: data.len() as u64,
        piece_length: PIECE as u64,
        pieces,
        private: true,
    }
    .to_bytes();
    let ih = info_hash(&info);
    let release = NewRelease {
        name: name.into(),
        version: "1.0".into(),
        info_hash: ih,
        size: data.len() as u64,
        piece_length: PIECE as u64,
        sha256: "ab".repeat(32),
        info_hex: hex::encode(&info),
        http_url: None,
        source: format!("s3://b/{name}"),
        etag: None,
        manifest: None,
        rollout_percent: None,
        origin_goal: None,
    };
    Package {
        data,
        info,
        ih,
        release,
    }
}

/// Registers a device and returns a client acting as it (its token in
/// announce URLs and API calls): device tokens are required here, as in
/// production.
async fn device(t: &TestTracker, id: &str) -> TrackerClient {
    t.device_client(id, "stable", "test-model").await
}

/// The release's `.torrent` as the tracker serves it to `dev`: its announce
/// URL carries the device's token.
async fn device_torrent(dev: &TrackerClient, p: &Package) -> Vec<u8> {
    let t = dev.torrent(&p.release.info_hash, "").await.unwrap();
    let text = String::from_utf8_lossy(&t);
    assert!(text.contains("/announce?token="), "announce URL carries the token");
    t
}

/// Polls the scrape until `want` holds, for at most `limit`.
async fn wait_scrape(
    c: &TrackerClient,
    ih: &InfoHash,
    limit: Duration,
    want: impl Fn(&ScrapeStats) -> bool,
) -> ScrapeStats {
    let end = Instant::now() + limit;
    loop {
        let s = c.scrape(ih).await.unwrap();
        if want(&s) || Instant::now() > end {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The tracker's view of the peers whose id starts with `tag`.
async fn peers_tagged(admin: &TrackerClient, p: &Package, tag: &str) -> Vec<PeerInfo> {
    admin
        .peers(&p.release.info_hash)
        .await
        .unwrap()
        .into_iter()
        .filter(|x| x.client.starts_with(tag))
        .collect()
}

// ------------------------------------------------------------- fake peers

// `FakePeer` (a peer-wire listener recording the BEP 3 handshake of every
// client that dials it) and `check_handshake` are in `ota_testkit::fake_peer`.

async fn announce_fake(c: &TrackerClient, p: &Package, f: &FakePeer) -> Vec<SocketAddr> {
    let a = AnnounceParams {
        info_hash: p.ih,
        peer_id: f.peer_id,
        port: f.addr.port(),
        uploaded: 0,
        downloaded: 0,
        left: p.data.len() as u64,
        event: AnnounceEvent::Started,
        device: None,
    };
    c.announce(&a).await.unwrap().1
}

// --------------------------------------------------------- child processes

// `ChildGuard` (kills the child by PID when dropped) and `require` (fails
// with the install line) are in `ota_testkit::child`.

// --------------------------------------------------------------- libtorrent

/// Drives one libtorrent session: prints one JSON object per line on stdout
/// and reads commands on stdin (`quit`, or end of input: close the session,
/// which announces `stopped`, then exit 0). Exits by itself after
/// `limit` seconds (exit code 3).
const LT_SCRIPT: &str = r#"
import json, os, select, sys, time
import libtorrent as lt

torrent, save, limit = sys.argv[1], sys.argv[2], float(sys.argv[3])
deadline = time.monotonic() + limit

def emit(**kw):
    sys.stdout.write(json.dumps(kw) + "\n")
    sys.stdout.flush()

cat = lt.alert.category_t
ses = lt.session({
    "enable_dht": False, "enable_lsd": False, "enable_upnp": False, "enable_natpmp": False,
    "listen_interfaces": "127.0.0.1:0",
    "enable_incoming_utp": False, "enable_outgoing_utp": False,
    "allow_multiple_connections_per_ip": True,
    "out_enc_policy": int(lt.enc_policy.pe_disabled),
    "in_enc_policy": int(lt.enc_policy.pe_enabled),
    "stop_tracker_timeout": 3,
    "alert_mask": int(cat.error_notification | cat.status_notification | cat.tracker_notification
                      | cat.peer_notification | cat.connect_notification),
})
atp = lt.add_torrent_params()
atp.ti = lt.torrent_info(torrent)
atp.save_path = save
h = ses.add_torrent(atp)
emit(event="added", version=lt.__version__, listen_port=ses.listen_port())

pending = b""
quitting = False
while not quitting and time.monotonic() < deadline:
    ses.wait_for_alert(100)
    for a in ses.pop_alerts():
        if isinstance(a, lt.tracker_reply_alert):
            emit(event="tracker_reply", num_peers=a.num_peers, url=a.tracker_url())
        elif isinstance(a, lt.tracker_error_alert):
            emit(event="tracker_error", message=a.message())
        elif isinstance(a, lt.tracker_warning_alert):
            emit(event="tracker_warning", message=a.message())
        elif isinstance(a, lt.listen_succeeded_alert):
            emit(event="listening", port=a.port, socket_type=str(a.socket_type))
        elif isinstance(a, lt.listen_failed_alert):
            emit(event="listen_failed", message=a.message())
        elif isinstance(a, lt.peer_connect_alert):
            emit(event="peer_connect", endpoint="%s:%d" % tuple(a.endpoint))
        elif isinstance(a, lt.torrent_finished_alert):
            emit(event="finished")
        elif isinstance(a, lt.torrent_error_alert):
            emit(event="torrent_error", message=a.message())
    if select.select([0], [], [], 0)[0]:
        chunk = os.read(0, 4096)
        lines = (pending + chunk).split(b"\n")
        pending = lines.pop()
        quitting = not chunk or any(l.strip() == b"quit" for l in lines)
if not quitting:
    emit(event="timeout")
    sys.exit(3)
# Destroying the session announces `stopped` and waits for the tracker's
# answer (at most stop_tracker_timeout seconds).
t0 = time.monotonic()
del h
del ses
emit(event="bye", shutdown_s=round(time.monotonic() - t0, 3))
"#;

/// A running libtorrent session (python3-libtorrent) and its JSON output.
struct Libtorrent {
    guard: ChildGuard,
    lines: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
    stdin: tokio::process::ChildStdin,
    seen: Vec<Value>,
    dir: tempfile::TempDir,
}

impl Libtorrent {
    /// Starts a session on `torrent` with an empty save directory.
    async fn start(torrent: &[u8]) -> Libtorrent {
        require(PYTHON, "python3");
        let probe = std::process::Command::new(PYTHON)
            .args(["-c", "import libtorrent"])
            .output()
            .unwrap();
        assert!(
            probe.status.success(),
            "{PYTHON} cannot import libtorrent: install it with `apt-get install -y python3-libtorrent` ({})",
            String::from_utf8_lossy(&probe.stderr).trim()
        );
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("lt_client.py");
        std::fs::write(&script, LT_SCRIPT).unwrap();
        let tpath = dir.path().join("pkg.torrent");
        std::fs::write(&tpath, torrent).unwrap();
        let save = dir.path().join("save");
        std::fs::create_dir(&save).unwrap();
        let stderr = dir.path().join("stderr.txt");
        let mut guard = ChildGuard::spawn(
            tokio::process::Command::new(PYTHON)
                .arg(&script)
                .arg(&tpath)
                .arg(&save)
                .arg("90")
                .stdin(Stdio::piped())
                .stdout(Stdio::piped()),
            "libtorrent client",
            stderr,
        );
        let lines = BufReader::new(guard.child.stdout.take().unwrap()).lines();
        let stdin = guard.child.stdin.take().unwrap();
        Libtorrent {
            guard,
            lines,
            stdin,
            seen: Vec::new(),
            dir,
        }
    }

    fn save_dir(&self) -> PathBuf {
        self.dir.path().join("save")
    }

    /// Reads output lines until one has `"event": event`; fails on
    /// `fail_on` events, end of output or after `limit`.
    async fn wait_event(&mut self, event: &str, fail_on: &[&str], limit: Duration) -> Value {
        let end = Instant::now() + limit;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            let line = match tokio::time::timeout(left, self.lines.next_line()).await {
                Ok(Ok(Some(l))) => l,
                Ok(_) => panic!(
                    "libtorrent client ended before {event:?}; output {:?}; stderr:\n{}",
                    self.seen,
                    self.guard.stderr_text()
                ),
                Err(_) => panic!(
                    "no {event:?} from libtorrent within {limit:?}; output {:?}; stderr:\n{}",
                    self.seen,
                    self.guard.stderr_text()
                ),
            };
            let v: Value = serde_json::from_str(&line).unwrap_or(json!({ "event": "raw", "line": line }));
            self.seen.push(v.clone());
            let ev = v["event"].as_str().unwrap_or("");
            if fail_on.contains(&ev) {
                panic!(
                    "libtorrent reported {v} while waiting for {event:?}; output so far {:?}",
                    self.seen
                );
            }
            if ev == event {
                return v;
            }
        }
    }

    async fn command(&mut self, cmd: &str) {
        self.stdin.write_all(format!("{cmd}\n").as_bytes()).await.unwrap();
        self.stdin.flush().await.unwrap();
    }

    /// Asks for a clean exit (`stopped` announce) and checks it happened.
    async fn quit(mut self) {
        self.command("quit").await;
        self.wait_event("bye", &[], Duration::from_secs(15)).await;
        let status = self.guard.wait_exit(Duration::from_secs(10)).await;
        assert!(
            status.is_some_and(|s| s.success()),
            "libtorrent client exit: {status:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn libtorrent_announces_and_receives_the_handed_out_peers() {
    let t = start_tracker().await;
    let admin = t.client();
    let p = package("lt-pkg.bin");
    admin.register(&p.release).await.unwrap();
    let mut fakes = [FakePeer::start(1).await, FakePeer::start(2).await];
    // One device per fake peer: a device keeps one peer entry per swarm and address family.
    let fake_devs = [device(&t, "fake-peer-1").await, device(&t, "fake-peer-2").await];
    for (f, dev) in fakes.iter().zip(&fake_devs) {
        announce_fake(dev, &p, f).await;
    }
    // Without a token, libtorrent's announce is refused with a reason.
    let mut anon = Libtorrent::start(&torrent_bytes(&format!("{}/announce", t.url()), &p.info)).await;
    let refused = anon
        .wait_event("tracker_error", &["tracker_reply"], Duration::from_secs(30))
        .await;
    assert!(refused.to_string().contains("device token required"), "{refused}");
    drop(anon);

    let lt_dev = device(&t, "libtorrent").await;
    let mut lt = Libtorrent::start(&device_torrent(&lt_dev, &p).await).await;
    let fail = [
        "tracker_error",
        "tracker_warning",
        "listen_failed",
        "torrent_error",
        "timeout",
    ];
    let reply = lt.wait_event("tracker_reply", &fail, Duration::from_secs(30)).await;
    assert_eq!(
        reply["num_peers"], 2,
        "libtorrent should have received both handed-out peers: {reply}"
    );

    // Client side: libtorrent dials both handed-out peers, for this torrent.
    for f in fakes.iter_mut() {
        let h = f
            .handshake(Duration::from_secs(20))
            .await
            .unwrap_or_else(|e| panic!("{e}; libtorrent said {:?}", lt.seen));
        check_handshake(&h, &p.ih, "-LT");
    }

    // Tracker side: the client is in the swarm, seen as a leecher.
    let mine = peers_tagged(admin, &p, "-LT").await;
    assert_eq!(
        mine.len(),
        1,
        "one libtorrent peer in the swarm: {:?}",
        admin.peers(&p.release.info_hash).await.unwrap()
    );
    assert_eq!(mine[0].left, p.data.len() as u64);
    let lt_addr: SocketAddr = mine[0].addr.parse().unwrap();
    assert_eq!(lt_addr.ip().to_string(), "127.0.0.1");
    let added = lt.seen.iter().find(|v| v["event"] == "added").unwrap().clone();
    assert_eq!(
        added["listen_port"].as_u64(),
        Some(lt_addr.port() as u64),
        "announced port is the listen port"
    );
    let s = admin.scrape(&p.ih).await.unwrap();
    assert_eq!((s.complete, s.incomplete), (0, 3), "two fake peers and libtorrent");
    // ... and it is handed out to the next peer that announces.
    let handed = announce_fake(&fake_devs[0], &p, &fakes[0]).await;
    assert!(handed.contains(&lt_addr), "{lt_addr} not in {handed:?}");

    // A clean exit sends `stopped`: the tracker drops the client.
    lt.quit().await;
    let s = wait_scrape(admin, &p.ih, Duration::from_secs(10), |s| s.incomplete == 2).await;
    assert_eq!(s.incomplete, 2, "libtorrent's stopped announce should remove it");
    assert!(peers_tagged(admin, &p, "-LT").await.is_empty());
    t.stop().await;
}

// ------------------------------------------------------------- Transmission

/// A running `transmission-daemon` with its own config and download dirs.
struct Transmission {
    guard: ChildGuard,
    rpc: String,
    http: reqwest::Client,
    session: String,
    peer_port: u16,
    dir: tempfile::TempDir,
}

impl Transmission {
    async fn start() -> Transmission {
        require("/usr/bin/transmission-daemon", "transmission-daemon");
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("config");
        let download = dir.path().join("download");
        std::fs::create_dir_all(&config).unwrap();
        std::fs::create_dir_all(&download).unwrap();
        let (rpc_port, peer_port) = (free_port().unwrap(), free_port().unwrap());
        let settings = json!({
            "dht-enabled": false, "lpd-enabled": false, "pex-enabled": false, "utp-enabled": false,
            "port-forwarding-enabled": false,
            "bind-address-ipv4": "127.0.0.1", "bind-address-ipv6": "::1",
            "peer-port": peer_port, "peer-port-random-on-start": false,
            "rpc-enabled": true, "rpc-bind-address": "127.0.0.1", "rpc-port": rpc_port,
            "rpc-authentication-required": false, "rpc-whitelist-enabled": true, "rpc-whitelist": "127.0.0.1",
            "rpc-host-whitelist-enabled": false,
            "download-dir": download, "incomplete-dir-enabled": false, "watch-dir-enabled": false,
            "encryption": 0, "blocklist-enabled": false, "start-added-torrents": true,
            "message-level": 2, "cache-size-mb": 1
        });
        std::fs::write(
            config.join("settings.json"),
            serde_json::to_vec_pretty(&settings).unwrap(),
        )
        .unwrap();
        let stderr = dir.path().join("stderr.txt");
        let guard = ChildGuard::spawn(
            tokio::process::Command::new("/usr/bin/transmission-daemon")
                .arg("--foreground")
                .arg("--config-dir")
                .arg(&config)
                .stdin(Stdio::null())
                .stdout(std::fs::File::create(dir.path().join("stdout.txt")).unwrap()),
            "transmission-daemon",
            stderr,
        );
        let mut tr = Transmission {
            guard,
            rpc: format!("http://127.0.0.1:{rpc_port}/transmission/rpc"),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()
                .unwrap(),
            session: String::new(),
            peer_port,
            dir,
        };
        // Wait (at most 15 s) for the RPC server.
        let end = Instant::now() + Duration::from_secs(15);
        loop {
            if tr.try_call("session-get", json!({})).await.is_ok() {
                break;
            }
            if let Ok(Some(status)) = tr.guard.child.try_wait() {
                panic!(
                    "transmission-daemon exited with {status}; stderr:\n{}",
                    tr.guard.stderr_text()
                );
            }
            assert!(
                Instant::now() < end,
                "transmission RPC did not come up; stderr:\n{}",
                tr.guard.stderr_text()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        tr
    }

    fn download_dir(&self) -> PathBuf {
        self.dir.path().join("download")
    }

    /// One RPC call, with the `X-Transmission-Session-Id` exchange (409 first).
    async fn try_call(&mut self, method: &str, arguments: Value) -> anyhow::Result<Value> {
        let body = json!({ "method": method, "arguments": arguments });
        for _ in 0..2 {
            let resp = self
                .http
                .post(&self.rpc)
                .header("X-Transmission-Session-Id", &self.session)
                .json(&body)
                .send()
                .await?;
            if resp.status() == reqwest::StatusCode::CONFLICT {
                self.session = resp
                    .headers()
                    .get("X-Transmission-Session-Id")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_string();
                continue;
            }
            let v: Value = resp.error_for_status()?.json().await?;
            anyhow::ensure!(v["result"] == "success", "{method}: {v}");
            return Ok(v["arguments"].clone());
        }
        anyhow::bail!("{method}: no session id")
    }

    async fn call(&mut self, method: &str, arguments: Value) -> Value {
        match self.try_call(method, arguments).await {
            Ok(v) => v,
            Err(e) => panic!(
                "transmission RPC {method} failed: {e:#}; stderr:\n{}",
                self.guard.stderr_text()
            ),
        }
    }

    /// Adds a .torrent file; returns the torrent id.
    async fn add(&mut self, torrent: &[u8]) -> i64 {
        let path = self.dir.path().join("pkg.torrent");
        std::fs::write(&path, torrent).unwrap();
        let download = self.download_dir();
        let r = self
            .call(
                "torrent-add",
                json!({ "filename": path, "download-dir": download, "paused": false }),
            )
            .await;
        r["torrent-added"]["id"]
            .as_i64()
            .unwrap_or_else(|| panic!("torrent-add: {r}"))
    }

    async fn torrent(&mut self, id: i64, fields: &[&str]) -> Value {
        let r = self.call("torrent-get", json!({ "ids": [id], "fields": fields })).await;
        r["torrents"][0].clone()
    }

    /// Waits (at most `limit`) for a successful announce; returns its tracker stats.
    async fn wait_announced(&mut self, id: i64, limit: Duration) -> Value {
        let end = Instant::now() + limit;
        loop {
            let t = self
                .torrent(id, &["trackerStats", "error", "errorString", "status"])
                .await;
            let ts = t["trackerStats"][0].clone();
            if ts["hasAnnounced"] == true && ts["lastAnnounceSucceeded"] == true {
                return ts;
            }
            assert!(
                Instant::now() < end,
                "transmission did not announce successfully within {limit:?}: {t}; stderr:\n{}",
                self.guard.stderr_text()
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Asks the daemon to exit cleanly and waits for it.
    async fn close(mut self) {
        let _ = self.try_call("session-close", json!({})).await;
        let status = self.guard.wait_exit(Duration::from_secs(15)).await;
        assert!(status.is_some(), "transmission-daemon did not exit after session-close");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn transmission_announces_and_receives_the_handed_out_peers() {
    let t = start_tracker().await;
    let admin = t.client();
    let p = package("tr-pkg.bin");
    admin.register(&p.release).await.unwrap();
    let fakes = [FakePeer::start(1).await, FakePeer::start(2).await];
    // One device per fake peer: a device keeps one peer entry per swarm and address family.
    let fake_devs = [device(&t, "fake-peer-1").await, device(&t, "fake-peer-2").await];
    for (f, dev) in fakes.iter().zip(&fake_devs) {
        announce_fake(dev, &p, f).await;
    }

    let mut tr = Transmission::start().await;
    let tr_dev = device(&t, "transmission").await;
    let id = tr.add(&device_torrent(&tr_dev, &p).await).await;
    let stats = tr.wait_announced(id, Duration::from_secs(30)).await;
    // Client side: Transmission parsed both peers the tracker handed out.
    assert_eq!(stats["lastAnnouncePeerCount"], 2, "tracker stats: {stats}");
    // ... and the swarm counts of the announce response (BEP 3 complete/incomplete).
    assert_eq!(
        (stats["seederCount"].as_i64(), stats["leecherCount"].as_i64()),
        (Some(0), Some(3)),
        "{stats}"
    );
    let announced = stats["announce"].as_str().unwrap_or("");
    assert!(
        announced.starts_with(&format!("{}/announce?token=", t.url())),
        "{stats}"
    );

    // Tracker side: Transmission 3.00 (`-TR3000-`) is in the swarm as a leecher.
    let mine = peers_tagged(admin, &p, "-TR").await;
    assert_eq!(
        mine.len(),
        1,
        "one Transmission peer: {:?}",
        admin.peers(&p.release.info_hash).await.unwrap()
    );
    assert_eq!(
        mine[0].addr,
        format!("127.0.0.1:{}", tr.peer_port),
        "announced address is its peer port"
    );
    assert_eq!(mine[0].left, p.data.len() as u64);
    let s = admin.scrape(&p.ih).await.unwrap();
    assert_eq!((s.complete, s.incomplete), (0, 3), "two fake peers and Transmission");
    let handed = announce_fake(&fake_devs[0], &p, &fakes[0]).await;
    assert!(
        handed.contains(&mine[0].addr.parse().unwrap()),
        "{:?} not handed out: {handed:?}",
        mine[0].addr
    );

    // Stopping the torrent sends `stopped`: the tracker drops it.
    tr.call("torrent-stop", json!({ "ids": [id] })).await;
    let s = wait_scrape(admin, &p.ih, Duration::from_secs(15), |s| s.incomplete == 2).await;
    assert_eq!(s.incomplete, 2, "Transmission's stopped announce should remove it");
    tr.close().await;
    t.stop().await;
}

// ---------------------------------------------- both clients, one package

#[tokio::test(flavor = "multi_thread")]
async fn libtorrent_downloads_from_transmission_through_the_tracker() {
    let t = start_tracker().await;
    let admin = t.client();
    let p = package("both-pkg.bin");
    admin.register(&p.release).await.unwrap();
    let tr_torrent = device_torrent(&device(&t, "transmission").await, &p).await;
    let lt_torrent = device_torrent(&device(&t, "libtorrent").await, &p).await;

    // Transmission holds the whole package: it verifies it and announces as a seeder.
    let mut tr = Transmission::start().await;
    std::fs::write(tr.download_dir().join(&p.release.name), &p.data).unwrap();
    let id = tr.add(&tr_torrent).await;
    let end = Instant::now() + Duration::from_secs(30);
    // (A device that announces `left=0` from its first announce is not
    // believed to hold the package: it counts as incomplete in the scrape
    // and holds back no origin grant, but it is handed out like any peer.)
    loop {
        tr.wait_announced(id, Duration::from_secs(30)).await;
        let peers = admin.peers(&p.ih).await.unwrap();
        if peers.iter().any(|x| x.left == 0) {
            break;
        }
        assert!(
            Instant::now() < end,
            "Transmission never announced as a seeder: {peers:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    // (Transmission may have announced once before its check found the data:
    // the tracker then counted that as a completed download too, and
    // believes its `left=0`.)
    let before = admin.scrape(&p.ih).await.unwrap();
    // libtorrent, empty, gets Transmission from the tracker and downloads from it.
    let mut lt = Libtorrent::start(&lt_torrent).await;
    let fail = [
        "tracker_error",
        "tracker_warning",
        "listen_failed",
        "torrent_error",
        "timeout",
    ];
    let reply = lt.wait_event("tracker_reply", &fail, Duration::from_secs(30)).await;
    assert_eq!(reply["num_peers"], 1, "the seeder was handed out: {reply}");
    lt.wait_event("finished", &fail, Duration::from_secs(60)).await;
    let got = std::fs::read(lt.save_dir().join(&p.release.name)).unwrap();
    assert!(got == p.data, "libtorrent's copy differs from the package");
    // Its only peer connection was to Transmission's announced address (two
    // seeders then part, so the live peer list is empty by now).
    let tr_addr = json!(format!("127.0.0.1:{}", tr.peer_port));
    let connects: Vec<&Value> = lt.seen.iter().filter(|v| v["event"] == "peer_connect").collect();
    assert!(
        !connects.is_empty() && connects.iter().all(|v| v["endpoint"] == tr_addr),
        "libtorrent should have connected to Transmission at {tr_addr} only: {:?}",
        lt.seen
    );
    // libtorrent announces `completed`; the tracker counts the download.
    let want = before.downloaded + 1;
    let s = wait_scrape(admin, &p.ih, Duration::from_secs(20), |s| {
        s.complete >= 1 && s.downloaded == want
    })
    .await;
    assert_eq!(
        (s.complete + s.incomplete, s.downloaded),
        (2, want),
        "libtorrent complete (it downloaded), Transmission complete if it showed progress"
    );
    assert!(s.complete >= 1, "{s:?}");
    let uploaded = tr.torrent(id, &["uploadedEver"]).await;
    assert!(
        uploaded["uploadedEver"].as_u64().unwrap_or(0) >= p.data.len() as u64,
        "Transmission uploaded: {uploaded}"
    );
    lt.quit().await;
    tr.close().await;
    t.stop().await;
}
