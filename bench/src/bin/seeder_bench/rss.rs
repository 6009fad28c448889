//! Section 4: memory of a real `ota-seeder seed` process with many releases.

use super::*;

pub(crate) async fn bench_rss(
    cli: &Cli,
    s3: &aws_sdk_s3::Client,
    s3_server: &S3Server,
    dir: &Path,
    procs: &mut ProcessGroup,
    timeout: Duration,
) -> anyhow::Result<RssResult> {
    anyhow::ensure!(
        cli.releases >= 1 && cli.release_mib >= 1,
        "--releases and --release-mib must be positive"
    );
    std::fs::create_dir_all(dir)?;
    let tracker = start_tracker(&dir.join("tracker")).await;
    let r = async {
        let size = cli.release_mib * MIB;
        step(&format!(
            "section 4: publishing {} releases of {} MiB",
            cli.releases, cli.release_mib
        ));
        let releases = publish_releases(s3, &tracker, dir, "release", cli.releases, size, 1000, timeout).await?;

        step("section 4: starting ota-seeder seed");
        let t = Instant::now();
        let ChildSeeder { pid, peer, http } = spawn_seeder(
            cli,
            procs,
            s3_server,
            &tracker,
            &dir.join("seeder"),
            cli.rss_cache_mib * MIB,
            &dir.join("seeder.log"),
        )?;
        // Seeded: the tracker lists the origin for every release, and the
        // initial checks are over (every object read from S3 at least once and
        // the S3 counter still for 1 s). librqbit announces only once a
        // torrent is live (section 2 shows the listing and the end of the
        // check coincide); the S3 counter makes the end of the checks explicit.
        let total = size * cli.releases as u64;
        let deadline = Instant::now() + timeout * 2;
        let mut listed = vec![false; releases.len()];
        let mut settle = Settle::default();
        let (checked_bytes, seeded_at) = loop {
            procs.check_alive().context("while waiting for the seeder")?;
            anyhow::ensure!(
                Instant::now() < deadline,
                "timed out waiting for the seeder to seed {} releases",
                releases.len()
            );
            let all = count_listed(&tracker, &releases, &mut listed, None).await == releases.len();
            if let Some(b) = seeder_s3_bytes(&http).await {
                if all && b >= total {
                    if let Some(since) = settle.still_since(b, Duration::from_secs(1)) {
                        break (b, since);
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        let seed_all_secs = seeded_at.duration_since(t).as_secs_f64();
        let (rss_seeded, hwm_seeded) = proc_mem_mib(pid)?;

        let n = cli.downloads.min(releases.len());
        step(&format!(
            "section 4: {n} leechers ({} at once)",
            cli.parallel_leechers.max(1)
        ));
        let sampler_stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let sampler = {
            let stop = sampler_stop.clone();
            tokio::spawn(async move {
                let mut max = 0f64;
                while !stop.load(Ordering::Relaxed) {
                    if let Ok((rss, _)) = proc_mem_mib(pid) {
                        max = max.max(rss);
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                max
            })
        };
        let t = Instant::now();
        // Spread the picks over the whole list, so that some are still in the
        // cache after the initial checks and some are not.
        let picks: Vec<usize> = (0..n).map(|k| k * releases.len() / n.max(1)).collect();
        let results: Vec<anyhow::Result<Leeched>> = futures::stream::iter(picks.into_iter().map(|i| {
            let (new, info) = &releases[i];
            let torrent = torrent_bytes(&format!("{}/announce", tracker.url()), info);
            let ldir = dir.join(format!("leecher-{i:02}"));
            let name = new.name.clone();
            async move {
                let r = leech(torrent, &name, peer, &ldir, timeout).await;
                let _ = std::fs::remove_dir_all(&ldir);
                r
            }
        }))
        .buffer_unordered(cli.parallel_leechers.max(1))
        .collect()
        .await;
        let download_secs = t.elapsed().as_secs_f64();
        sampler_stop.store(true, Ordering::Relaxed);
        let sampled_max = sampler.await.unwrap_or(0.0);
        let mut downloaded = 0;
        for r in results {
            downloaded += r?.fetched;
        }
        procs.check_alive().context("after the downloads")?;
        let s3_after = seeder_s3_bytes(&http).await.unwrap_or(checked_bytes);
        let (rss_end, hwm_end) = proc_mem_mib(pid)?;
        anyhow::Ok(RssResult {
            pid,
            releases: releases.len(),
            release_bytes: size,
            cache_bytes: cli.rss_cache_mib * MIB,
            downloads: n,
            seed_all_secs,
            initial_check_s3_bytes: checked_bytes,
            rss_seeded_mib: rss_seeded,
            hwm_seeded_mib: hwm_seeded,
            download_secs,
            downloaded_bytes: downloaded,
            s3_bytes_during_downloads: s3_after.saturating_sub(checked_bytes),
            rss_end_mib: rss_end,
            hwm_end_mib: hwm_end,
            rss_sampled_max_mib: sampled_max.max(rss_end),
        })
    }
    .await;
    tracker.stop().await;
    r
}
