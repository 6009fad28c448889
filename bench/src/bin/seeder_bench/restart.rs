//! Section 5: what a restart of a real `ota-seeder seed` costs with many
//! releases published. The first start on an empty state folder runs
//! librqbit's full initial check (every object read from S3 once); the
//! restart on the same state folder loads the verified bitfields from
//! `STATE_DIR/fastresume` and reads only librqbit's fast-resume spot check.
//!
//! "Seeding" is measured from the spawn to the moment the tracker lists the
//! new process's peer address (a fresh port per start) as the origin of
//! every release: librqbit announces a torrent only once it is live. S3
//! bytes are the seeder's own counter (`/api/egress`, `s3_bytes_read`),
//! read once it has not moved for 1 s.

use super::*;

/// One start of the child seeder.
#[derive(Debug, Default, Clone, Serialize)]
pub(crate) struct StartCost {
    /// Spawn to every release listed at this start's peer address, seconds.
    pub(crate) seeding_secs: f64,
    /// Bytes the seeder read from S3 by then (and until its counter stood
    /// still for 1 s).
    pub(crate) s3_bytes: u64,
    /// VmRSS once seeding, MiB.
    pub(crate) rss_mib: f64,
}

/// Section 5's result.
#[derive(Debug, Default, Clone, Serialize)]
pub(crate) struct RestartResult {
    /// Releases published and seeded.
    pub(crate) releases: usize,
    /// Size of each, bytes.
    pub(crate) release_bytes: u64,
    /// The first start (empty state folder).
    pub(crate) first: StartCost,
    /// The restart (same state folder, after SIGTERM).
    pub(crate) restart: StartCost,
}

pub(crate) async fn bench_restart(
    cli: &Cli,
    s3: &aws_sdk_s3::Client,
    s3_server: &S3Server,
    dir: &Path,
    timeout: Duration,
) -> anyhow::Result<RestartResult> {
    anyhow::ensure!(
        cli.restart_releases >= 1 && cli.restart_release_mib >= 1,
        "--restart-releases and --restart-release-mib must be positive"
    );
    std::fs::create_dir_all(dir)?;
    let tracker = start_tracker(&dir.join("tracker")).await;
    let r = async {
        let size = cli.restart_release_mib * MIB;
        step(&format!(
            "section 5: publishing {} releases of {} MiB",
            cli.restart_releases, cli.restart_release_mib
        ));
        let releases =
            publish_releases(s3, &tracker, dir, "restart", cli.restart_releases, size, 5000, timeout).await?;
        let mut costs = Vec::new();
        for (i, what) in ["first start", "restart"].into_iter().enumerate() {
            step(&format!("section 5: ota-seeder seed, {what}"));
            let mut procs = ProcessGroup::default();
            let cost = start_once(cli, &mut procs, s3_server, &tracker, dir, &releases, i, timeout).await;
            procs.stop_all(Duration::from_secs(10)).await;
            costs.push(cost?);
        }
        let restart = costs.pop().unwrap_or_default();
        let first = costs.pop().unwrap_or_default();
        anyhow::Ok(RestartResult {
            releases: releases.len(),
            release_bytes: size,
            first,
            restart,
        })
    }
    .await;
    tracker.stop().await;
    r
}

/// Spawns the seeder on `dir/seeder` (the same folder every time) and waits
/// until the tracker lists its new peer address for every release and its
/// S3 counter stands still for 1 s.
#[allow(clippy::too_many_arguments)]
async fn start_once(
    cli: &Cli,
    procs: &mut ProcessGroup,
    s3_server: &S3Server,
    tracker: &TestTracker,
    dir: &Path,
    releases: &[(NewRelease, Vec<u8>)],
    run: usize,
    timeout: Duration,
) -> anyhow::Result<StartCost> {
    let t = Instant::now();
    let ChildSeeder { pid, peer, http } = spawn_seeder(
        cli,
        procs,
        s3_server,
        tracker,
        &dir.join("seeder"),
        cli.rss_cache_mib * MIB,
        &dir.join(format!("seeder-{run}.log")),
    )?;
    let peer = peer.to_string();
    let deadline = Instant::now() + timeout;
    let mut listed = vec![false; releases.len()];
    let mut seeding_secs = None;
    let mut settle = Settle::default();
    loop {
        procs.check_alive().context("while waiting for the seeder")?;
        anyhow::ensure!(
            Instant::now() < deadline,
            "timed out waiting for the seeder to seed {} releases ({} listed)",
            releases.len(),
            listed.iter().filter(|l| **l).count()
        );
        if seeding_secs.is_none() && count_listed(tracker, releases, &mut listed, Some(&peer)).await == releases.len() {
            seeding_secs = Some(t.elapsed().as_secs_f64());
        }
        if let (Some(secs), Some(b)) = (seeding_secs, seeder_s3_bytes(&http).await) {
            if settle.still_since(b, Duration::from_secs(1)).is_some() {
                let (rss_mib, _) = proc_mem_mib(pid)?;
                return Ok(StartCost {
                    seeding_secs: secs,
                    s3_bytes: b,
                    rss_mib,
                });
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Section 5 as markdown: one table, first start against restart.
pub(crate) fn render_restart(r: &RestartResult) -> String {
    let mut out = format!(
        "\n### Section 5: restart with {} releases of {} MiB (`ota-seeder seed`, fast-resume on)\n\n\
         | start | spawn to seeding every release | S3 bytes read | VmRSS |\n|---|---|---|---|\n",
        r.releases,
        r.release_bytes / MIB
    );
    for (what, c) in [
        ("first start (empty state folder)", &r.first),
        ("restart (same state folder)", &r.restart),
    ] {
        out.push_str(&format!(
            "| {what} | **{:.2} s** | {:.1} MB ({:.3} per published byte) | {:.0} MiB |\n",
            c.seeding_secs,
            c.s3_bytes as f64 / 1e6,
            c.s3_bytes as f64 / (r.release_bytes * r.releases as u64).max(1) as f64,
            c.rss_mib
        ));
    }
    out.push_str(&format!(
        "\nTarget (issue 12): a restart with 100 releases seeding in under 2 s: {}; reads no object bytes: {}.\n",
        if r.restart.seeding_secs < 2.0 { "met" } else { "NOT met" },
        if r.restart.s3_bytes == 0 {
            "met".to_string()
        } else {
            format!(
                "NOT met ({:.1} MB, librqbit's fast-resume spot check)",
                r.restart.s3_bytes as f64 / 1e6
            )
        }
    ));
    out
}
