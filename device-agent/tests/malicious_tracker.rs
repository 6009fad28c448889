//! A hostile tracker (or anyone on the path of its plain-http URL) serving
//! crafted release records, torrents and bodies next to a genuine signed
//! manifest: nothing is written outside the release's download folder,
//! nothing at all before the record and the torrent match the manifest,
//! and no response is read past its size limit.

mod common;

use common::fake_tracker::{genuine, FakeTracker, Served};
use common::package;
use ota_proto::manifest::generate_signing_key;

const PIECE: u64 = 16_384;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_path_as_the_release_name_writes_nothing_outside_the_download_folder() {
    let fake = FakeTracker::start().await;
    let dir = tempfile::tempdir().unwrap();
    let outside = dir.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    let key = generate_signing_key();
    let state = dir.path().join("agent");
    let agent = common::agent_for_fake(&fake.url(), &state, Some(key.verifying_key()), None).await;

    let data = package(100_000, 1);
    let (genuine_release, torrent) = genuine(&fake.url(), "fw.bin", "2.0", &data, PIECE, Some(&key));
    let absolute = outside.join("x");
    for name in [absolute.display().to_string(), "../../outside/x".to_string()] {
        // Genuine signed manifest and torrent; the unsigned record names a
        // path. No peers: only the HTTP fallback would bring bytes.
        let mut evil = genuine_release.clone();
        evil.name = name.clone();
        fake.serve(&evil, &torrent, "fw.bin", &data);
        {
            let mut s = fake.state.lock().unwrap();
            s.packages.insert(name.clone(), data.clone());
        }
        let err = format!("{:#}", agent.handle_release(&evil.info_hash).await.unwrap_err());
        assert!(err.contains("release record refused"), "{name}: {err}");
        assert!(err.contains("not a plain file name"), "{name}: {err}");
        assert!(!absolute.exists(), "{name}: written outside the download folder");
        assert!(std::fs::read_dir(&outside).unwrap().next().is_none(), "{name}");
        assert!(
            !common::download_folder(&state, &evil.info_hash).exists(),
            "{name}: nothing written at all"
        );
        assert_eq!(fake.count(&format!("/api/releases/{}/torrent", evil.info_hash)), 0);
    }
    let rejected = agent.history();
    assert_eq!(rejected.len(), 2);
    assert!(rejected
        .iter()
        .all(|h| h.outcome == ota_device_agent::download_state::Outcome::Rejected));
    agent.stop().await;
    fake.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_record_or_torrent_not_matching_the_signed_manifest_is_refused_before_anything_is_written() {
    let fake = FakeTracker::start().await;
    let dir = tempfile::tempdir().unwrap();
    let key = generate_signing_key();
    let state = dir.path().join("agent");
    let agent = common::agent_for_fake(&fake.url(), &state, Some(key.verifying_key()), None).await;
    let data = package(100_000, 2);
    let (release, torrent) = genuine(&fake.url(), "fw.bin", "2.0", &data, PIECE, Some(&key));

    // A plain but different name, or a different size, than the manifest's.
    for (name, size, field) in [
        ("other.bin", release.size, "name"),
        ("fw.bin", release.size + 1, "size"),
    ] {
        let mut evil = release.clone();
        evil.name = name.into();
        evil.size = size;
        fake.serve(&evil, &torrent, name, &data);
        let err = format!("{:#}", agent.handle_release(&evil.info_hash).await.unwrap_err());
        assert!(err.contains(&format!("the release's {field} is")), "{err}");
        assert!(!common::download_folder(&state, &release.info_hash).exists());
        // Rejected releases are not started again on their own; forget it
        // for the next case by using a fresh agent state below.
    }
    agent.stop().await;

    // The genuine record with another release's torrent (another info hash)
    // or a torrent with the manifest's hash... that does not exist: only
    // the hash check can refuse it, before librqbit or the fallback write.
    let state = dir.path().join("agent2");
    let agent = common::agent_for_fake(&fake.url(), &state, Some(key.verifying_key()), None).await;
    let other = package(100_000, 3);
    let (_, other_torrent) = genuine(&fake.url(), "fw.bin", "2.0", &other, PIECE, Some(&key));
    fake.serve(&release, &other_torrent, "fw.bin", &other);
    let err = format!("{:#}", agent.handle_release(&release.info_hash).await.unwrap_err());
    assert!(err.contains("torrent refused: its info hash is"), "{err}");
    assert!(
        !common::download_folder(&state, &release.info_hash).exists(),
        "nothing written"
    );
    assert_eq!(fake.count("/packages/fw.bin"), 0, "no HTTP fallback");
    agent.stop().await;
    fake.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn oversized_and_endless_responses_are_refused_without_being_buffered() {
    use futures::StreamExt;
    let fake = FakeTracker::start().await;
    let client = ota_client::TrackerClient::new(&fake.url(), None);
    let data = package(100_000, 4);
    let (release, torrent) = genuine(&fake.url(), "fw.bin", "2.0", &data, PIECE, None);
    let ih = release.info_hash;
    let hex = ih.to_hex();

    // A record of 2 MiB: refused on its Content-Length, before reading it.
    fake.state
        .lock()
        .unwrap()
        .releases
        .insert(hex.clone(), Served::Bytes(vec![b' '; 2 << 20]));
    let err = format!("{:#}", client.release(&ih).await.unwrap_err());
    assert!(
        err.contains("response of 2097152 bytes is over the limit of 1048576 bytes"),
        "{err}"
    );
    // An endless record and an endless torrent: reading stops at the limit.
    for (what, endless_release) in [("release", true), ("torrent", false)] {
        {
            let mut s = fake.state.lock().unwrap();
            let endless = Served::Endless(vec![b' '; 64 << 10]);
            if endless_release {
                s.releases.insert(hex.clone(), endless);
            } else {
                s.torrents.insert(hex.clone(), endless);
            }
        }
        let t = std::time::Instant::now();
        let err = if endless_release {
            format!("{:#}", client.release(&ih).await.unwrap_err())
        } else {
            format!("{:#}", client.torrent(&ih, "dev").await.unwrap_err())
        };
        assert!(err.contains("not read further"), "{what}: {err}");
        assert!(t.elapsed() < std::time::Duration::from_secs(20), "{what}");
    }
    // A push event that never ends (one endless line): the stream errors.
    fake.state.lock().unwrap().push = Some(Served::Endless(vec![b'x'; 16 << 10]));
    let mut stream = client.subscribe().await.unwrap();
    let first = tokio::time::timeout(std::time::Duration::from_secs(20), stream.next())
        .await
        .expect("the stream ends or fails, it does not buffer forever");
    let err = format!("{:#}", first.expect("an error, not the end").unwrap_err());
    assert!(err.contains("push event"), "{err}");

    // A `resync` event (the tracker dropped pushes for this subscriber)
    // ends the stream with an error, so the agent reconnects and lists its
    // releases again instead of silently missing a push.
    fake.state.lock().unwrap().push = Some(Served::Bytes(b"event: resync\ndata: {\"missed\":10}\n\n".to_vec()));
    let mut stream = client.subscribe().await.unwrap();
    let first = tokio::time::timeout(std::time::Duration::from_secs(20), stream.next())
        .await
        .expect("the resync event arrives");
    let err = format!("{:#}", first.expect("an error, not the end").unwrap_err());
    assert!(err.contains("resync"), "{err}");

    // The origin's HTTP path answering more than a piece: the first piece
    // is refused on its Content-Length and nothing of it is written.
    fake.serve(&release, &torrent, "fw.bin", &data);
    fake.state.lock().unwrap().package_extra = 1 << 20;
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("agent");
    let agent = common::agent_for_fake(&fake.url(), &state, None, None).await;
    let err = format!("{:#}", agent.handle_release(&ih).await.unwrap_err());
    assert!(err.contains("HTTP fallback failed"), "{err}");
    assert!(err.contains("Content-Length"), "{err}");
    assert!(!common::download_folder(&state, &ih).exists());
    // Without a Content-Length, reading stops past the piece.
    {
        let mut st = fake.state.lock().unwrap();
        st.package_chunked = true;
    }
    let table = ota_device_agent::http_fallback::PieceTable::from_torrent(&torrent).unwrap();
    let src = ota_device_agent::http_fallback::HttpSource {
        url: format!("{}/packages/fw.bin", fake.url()),
        etag: None,
        device: "dev".into(),
        token: None,
    };
    let err = ota_device_agent::http_fallback::fetch_piece(&reqwest::Client::new(), &src, &table, 0)
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("body longer than the piece's 16384 bytes"),
        "{err}"
    );
    // The same origin without the extra bytes is fine.
    fake.state.lock().unwrap().package_extra = 0;
    let piece = ota_device_agent::http_fallback::fetch_piece(&reqwest::Client::new(), &src, &table, 0)
        .await
        .unwrap();
    assert_eq!(piece, data[..PIECE as usize]);
    agent.stop().await;
    fake.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_http_fallback_authenticates_with_the_device_token() {
    let fake = FakeTracker::start().await;
    let dir = tempfile::tempdir().unwrap();
    let data = package(100_000, 5);
    let (release, torrent) = genuine(&fake.url(), "fw.bin", "2.0", &data, PIECE, None);
    fake.serve(&release, &torrent, "fw.bin", &data);
    let token = "ab".repeat(32);
    fake.state.lock().unwrap().require_package_auth = Some(format!("Bearer {token}"));
    let state = dir.path().join("agent");
    let agent = common::agent_for_fake(&fake.url(), &state, None, Some(token.clone())).await;
    let installed = agent.handle_release(&release.info_hash).await.unwrap();
    assert_eq!(std::fs::read(&installed.path).unwrap(), data);
    let seen = fake.state.lock().unwrap().package_auth_seen.clone();
    assert!(!seen.is_empty());
    assert!(seen
        .iter()
        .all(|a| a.as_deref() == Some(format!("Bearer {token}").as_str())));
    agent.stop().await;
    fake.stop();
}
