//! Sections 2 and 3: seeding throughput to one loopback leecher, S3-backed
//! seeder against librqbit's file storage, and S3 bytes read per byte served.

use super::*;

#[allow(clippy::too_many_arguments)]
pub(crate) async fn bench_s3_seeder(
    cli: &Cli,
    s3: &aws_sdk_s3::Client,
    tracker: &TestTracker,
    release: &NewRelease,
    torrent: &[u8],
    cache_bytes: u64,
    dir: &Path,
    timeout: Duration,
) -> anyhow::Result<SeedVariant> {
    std::fs::create_dir_all(dir)?;
    let ledger = ota_seeder::ledger::Ledger::open(&format!("sqlite://{}/ledger.db", dir.display())).await?;
    let peer: SocketAddr = ([127, 0, 0, 1], free_port()?).into();
    let seeder = Seeder::start(
        s3.clone(),
        tracker.client().clone(),
        ledger,
        SeedSettings {
            cache_bytes,
            read_ahead: cli.read_ahead,
            poll_interval: Duration::from_secs(1),
            verify_interval: Duration::from_secs(300),
            max_s3_requests: cli.max_s3_requests,
            ..SeedSettings::new(peer, dir.join("state"), ORIGIN)
        },
    )
    .await?;
    let r = async {
        let ih = release.info_hash;
        let t = Instant::now();
        seeder.sync_releases().await?;
        // Watch when the tracker lists the origin, next to when the check is over.
        let listed = {
            let client = tracker.client().clone();
            tokio::spawn(async move {
                for _ in 0..3000 {
                    if client
                        .release(&ih)
                        .await
                        .is_ok_and(|r| r.origin_peers.contains(&peer.to_string()))
                    {
                        return Some(t.elapsed());
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                None
            })
        };
        wait_until("the seeder's initial check", timeout, || seeder.is_seeding(&ih)).await?;
        let check_secs = t.elapsed().as_secs_f64();
        let listed_secs = tokio::time::timeout(Duration::from_secs(60), listed)
            .await
            .ok()
            .and_then(|r| r.ok())
            .flatten()
            .map(|d| d.as_secs_f64());
        // Let any read-ahead started by the check land before sampling.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let before = seeder.counters.bytes_read.load(Ordering::Relaxed);
        let gets_before = seeder.counters.gets.load(Ordering::Relaxed);
        let l = leech(torrent.to_vec(), &release.name, peer, &dir.join("leecher"), timeout).await?;
        let after = seeder.counters.bytes_read.load(Ordering::Relaxed);
        let gets_during = seeder.counters.gets.load(Ordering::Relaxed) - gets_before;
        let identical = sha256_file(l.path.clone()).await? == release.sha256;
        let ledger_bt = seeder
            .egress()
            .await?
            .iter()
            .find(|e| e.info_hash == ih)
            .map(|e| e.bittorrent_bytes);
        let _ = std::fs::remove_dir_all(dir.join("leecher"));
        let during = after - before;
        anyhow::Ok(SeedVariant {
            name: format!("S3 Seeder, cache {} MiB", cache_bytes / MIB),
            cache_bytes: Some(cache_bytes),
            initial_check_secs: check_secs,
            tracker_listed_origin_secs: listed_secs,
            initial_check_s3_bytes: Some(before),
            leech_secs: l.secs,
            leech_fetched_bytes: l.fetched,
            leech_mb_s: mb_s(release.size, l.secs),
            identical,
            s3_bytes_during_leech: Some(during),
            s3_read_per_byte_served: Some(during as f64 / l.fetched.max(1) as f64),
            s3_gets_during_leech: Some(gets_during),
            initial_check_s3_gets: Some(gets_before),
            ledger_bittorrent_bytes: ledger_bt,
        })
    }
    .await;
    seeder.stop().await;
    r
}

pub(crate) async fn bench_file_seeder(
    release: &NewRelease,
    torrent: &[u8],
    data_dir: &Path,
    dir: &Path,
    timeout: Duration,
) -> anyhow::Result<SeedVariant> {
    std::fs::create_dir_all(dir)?;
    let port = free_port()?;
    let peer: SocketAddr = ([127, 0, 0, 1], port).into();
    let session = PeerSession {
        trackers: false,
        announce_port: None,
        ..PeerSession::listening(peer)
    }
    .start(dir.join("state"))
    .await
    .context("cannot start the file seeder session")?;
    let r = async {
        let t = Instant::now();
        let handle = ota_peer::add_torrent(&session, torrent.to_vec(), data_dir, Default::default())
            .await
            .context("file seeder")?;
        wait_until("the file seeder's initial check", timeout, || handle.stats().finished).await?;
        let check_secs = t.elapsed().as_secs_f64();
        let l = leech(torrent.to_vec(), &release.name, peer, &dir.join("leecher"), timeout).await?;
        let identical = sha256_file(l.path.clone()).await? == release.sha256;
        let _ = std::fs::remove_dir_all(dir.join("leecher"));
        anyhow::Ok(SeedVariant {
            name: "librqbit file storage".into(),
            initial_check_secs: check_secs,
            leech_secs: l.secs,
            leech_fetched_bytes: l.fetched,
            leech_mb_s: mb_s(release.size, l.secs),
            identical,
            ..Default::default()
        })
    }
    .await;
    session.stop().await;
    r
}
