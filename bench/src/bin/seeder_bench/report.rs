//! The bench's results and their rendering as a markdown table.

use super::*;

#[derive(Debug, Clone, Serialize, Default)]
pub(crate) struct PublishResult {
    pub(crate) object_bytes: u64,
    pub(crate) piece_length: u64,
    pub(crate) raw_get_secs: Vec<f64>,
    pub(crate) publish_secs: Vec<f64>,
    pub(crate) raw_get_mb_s: f64,
    pub(crate) publish_mb_s: f64,
    pub(crate) ratio_publish_to_raw: f64,
    /// Piece-sized ranged GETs, one at a time: count, mean / p50 / p90 / max latency, ms.
    pub(crate) probe_gets: usize,
    pub(crate) probe_mean_ms: f64,
    pub(crate) probe_p50_ms: f64,
    pub(crate) probe_p90_ms: f64,
    pub(crate) probe_max_ms: f64,
    /// `PieceHasher` alone over 64 MiB in memory (no I/O), MB/s.
    pub(crate) hasher_only_mb_s: f64,
}

#[derive(Debug, Clone, Serialize, Default)]
pub(crate) struct SeedVariant {
    pub(crate) name: String,
    /// Piece cache cap (S3 variants), bytes.
    pub(crate) cache_bytes: Option<u64>,
    /// From add to "seeding" (initial check done), seconds.
    pub(crate) initial_check_secs: f64,
    /// When the tracker first listed the origin, seconds after add (S3 variants).
    pub(crate) tracker_listed_origin_secs: Option<f64>,
    /// S3 bytes read by the initial check (S3 variants).
    pub(crate) initial_check_s3_bytes: Option<u64>,
    /// From the leecher's add to wait_until_completed, seconds.
    pub(crate) leech_secs: f64,
    /// Bytes the leecher fetched (payload, including any discarded).
    pub(crate) leech_fetched_bytes: u64,
    pub(crate) leech_mb_s: f64,
    /// The leecher's file has the published SHA-256.
    pub(crate) identical: bool,
    /// S3 bytes read while the leecher ran (S3 variants).
    pub(crate) s3_bytes_during_leech: Option<u64>,
    /// S3 bytes read per byte the leecher fetched (S3 variants).
    pub(crate) s3_read_per_byte_served: Option<f64>,
    /// Ranged GETs the seeder started while the leecher ran (S3 variants).
    pub(crate) s3_gets_during_leech: Option<u64>,
    /// Ranged GETs the seeder started before the leecher (the initial check; S3 variants).
    pub(crate) initial_check_s3_gets: Option<u64>,
    /// Bytes the seeder's ledger recorded for the release over BitTorrent (S3 variants).
    pub(crate) ledger_bittorrent_bytes: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Default)]
pub(crate) struct SeedResult {
    pub(crate) object_bytes: u64,
    pub(crate) variants: Vec<SeedVariant>,
}

#[derive(Debug, Clone, Serialize, Default)]
pub(crate) struct RssResult {
    pub(crate) pid: u32,
    pub(crate) releases: usize,
    pub(crate) release_bytes: u64,
    pub(crate) cache_bytes: u64,
    pub(crate) downloads: usize,
    /// From spawn until every release is listed and the initial checks are over, seconds.
    pub(crate) seed_all_secs: f64,
    /// S3 bytes the child read by then (its initial checks).
    pub(crate) initial_check_s3_bytes: u64,
    pub(crate) rss_seeded_mib: f64,
    pub(crate) hwm_seeded_mib: f64,
    pub(crate) download_secs: f64,
    pub(crate) downloaded_bytes: u64,
    /// S3 bytes the child read during the downloads.
    pub(crate) s3_bytes_during_downloads: u64,
    pub(crate) rss_end_mib: f64,
    pub(crate) hwm_end_mib: f64,
    /// Highest VmRSS seen by a 200 ms sampler during the downloads.
    pub(crate) rss_sampled_max_mib: f64,
}

#[derive(Debug, Clone, Serialize, Default)]
pub(crate) struct Report {
    pub(crate) machine: String,
    pub(crate) worker_threads: usize,
    /// Which S3 server: the project's `S3Server`, or the bench's TCP_NODELAY copy.
    pub(crate) s3_server: String,
    pub(crate) publish: Option<PublishResult>,
    pub(crate) seed: Option<SeedResult>,
    pub(crate) rss: Option<RssResult>,
    pub(crate) wall_secs: f64,
}

pub(crate) fn mb_s(bytes: u64, secs: f64) -> f64 {
    if secs <= 0.0 {
        return 0.0;
    }
    bytes as f64 / 1e6 / secs
}

pub(crate) fn verdict(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "NOT met"
    }
}

/// Section 2: the S3 GETs of the initial check and of the leech, count and mean size.
fn get_note(v: &SeedVariant) -> String {
    let one = |what: &str, gets: Option<u64>, bytes: Option<u64>| match (gets, bytes) {
        (Some(n), Some(b)) if n > 0 => format!("{what} {n} GETs, mean {:.0} KiB", b as f64 / n as f64 / 1024.0),
        (Some(_), Some(_)) => format!("{what} no GET"),
        _ => String::new(),
    };
    let check = one("check", v.initial_check_s3_gets, v.initial_check_s3_bytes);
    let leech = one("leech", v.s3_gets_during_leech, v.s3_bytes_during_leech);
    if check.is_empty() && leech.is_empty() {
        return String::new();
    }
    format!("; S3 GETs: {check}; {leech}")
}

pub(crate) fn render(cli: &Cli, r: &Report) -> String {
    let mb = |b: u64| b as f64 / 1e6;
    let mib = |b: u64| b as f64 / MIB as f64;
    let mut rows: Vec<[String; 4]> = Vec::new();
    if let Some(p) = &r.publish {
        let best = |v: &[f64]| v.iter().cloned().fold(f64::INFINITY, f64::min);
        let runs = |v: &[f64]| v.iter().map(|s| format!("{s:.2}")).collect::<Vec<_>>().join(" / ");
        rows.push([
            "1".into(),
            format!(
                "raw S3 GetObject, stream and discard ({} MiB, best of {})",
                mib(p.object_bytes),
                p.raw_get_secs.len()
            ),
            format!(
                "**{:.0} MB/s** ({:.2} s; runs {} s)",
                p.raw_get_mb_s,
                best(&p.raw_get_secs),
                runs(&p.raw_get_secs)
            ),
            String::new(),
        ]);
        rows.push([
            "1".into(),
            format!(
                "publish `hash_object` (SHA-1/piece of {} KiB + SHA-256)",
                p.piece_length / 1024
            ),
            format!(
                "**{:.0} MB/s** ({:.2} s; runs {} s)",
                p.publish_mb_s,
                best(&p.publish_secs),
                runs(&p.publish_secs)
            ),
            String::new(),
        ]);
        rows.push([
            "1".into(),
            "ratio publish / raw GET".into(),
            format!("**{:.2}**", p.ratio_publish_to_raw),
            format!("≥ 0.8: {}", verdict(p.ratio_publish_to_raw >= 0.8)),
        ]);
        rows.push([
            "1".into(),
            "`PieceHasher` alone, 64 MiB in memory (no I/O)".into(),
            format!("{:.0} MB/s", p.hasher_only_mb_s),
            "ceiling of publish on this CPU (SHA-1 and SHA-256 on one thread)".into(),
        ]);
        if p.probe_gets > 0 {
            rows.push([
                "1".into(),
                format!(
                    "ranged GET of one {} KiB piece, one at a time ({} GETs)",
                    p.piece_length / 1024,
                    p.probe_gets
                ),
                format!(
                    "mean **{:.1} ms** (p50 {:.1}, p90 {:.1}, max {:.1} ms) = {:.0} MB/s",
                    p.probe_mean_ms,
                    p.probe_p50_ms,
                    p.probe_p90_ms,
                    p.probe_max_ms,
                    p.piece_length as f64 / 1e3 / p.probe_mean_ms
                ),
                "latency of one piece GET; the seeder's read-ahead keeps about read-ahead / pieces-per-GET + 1 coalesced GETs in flight per reader".into(),
            ]);
        }
    }
    if let Some(s) = &r.seed {
        let file = s.variants.iter().find(|v| v.cache_bytes.is_none());
        for v in &s.variants {
            let check = match v.initial_check_s3_bytes {
                Some(b) => format!(
                    "initial check {:.2} s ({:.0} MB/s), {:.1} MB read from S3 (\"initial check bytes\"){}{}",
                    v.initial_check_secs,
                    mb_s(s.object_bytes, v.initial_check_secs),
                    mb(b),
                    v.tracker_listed_origin_secs
                        .map(|l| format!("; tracker listed the origin after {l:.2} s"))
                        .unwrap_or_default(),
                    get_note(v)
                ),
                None => format!(
                    "initial check {:.2} s ({:.0} MB/s) from the local file",
                    v.initial_check_secs,
                    mb_s(s.object_bytes, v.initial_check_secs)
                ),
            };
            rows.push([
                "2".into(),
                format!("{} → 1 loopback leecher ({} MiB)", v.name, mib(s.object_bytes)),
                format!(
                    "**{:.0} MB/s** ({:.2} s, {:.1} MB fetched, SHA-256 {})",
                    v.leech_mb_s,
                    v.leech_secs,
                    mb(v.leech_fetched_bytes),
                    if v.identical { "ok" } else { "MISMATCH" }
                ),
                check,
            ]);
        }
        if let Some(f) = file {
            for v in s.variants.iter().filter(|v| v.cache_bytes.is_some()) {
                let ratio = v.leech_mb_s / f.leech_mb_s;
                rows.push([
                    "2".into(),
                    format!("ratio {} / file storage", v.name),
                    format!("**{ratio:.2}**"),
                    format!("≥ 0.8: {}", verdict(ratio >= 0.8)),
                ]);
            }
        }
        for v in s.variants.iter().filter(|v| v.cache_bytes.is_some()) {
            let ratio = v.s3_read_per_byte_served.unwrap_or(0.0);
            rows.push([
                "3".into(),
                format!("S3 bytes read per byte served, {}", v.name),
                format!(
                    "**{ratio:.3}** ({:.1} MB read / {:.1} MB served; ledger {:.1} MB)",
                    mb(v.s3_bytes_during_leech.unwrap_or(0)),
                    mb(v.leech_fetched_bytes),
                    mb(v.ledger_bittorrent_bytes.unwrap_or(0))
                ),
                format!("≤ 1.05: {}", verdict(ratio <= 1.05)),
            ]);
        }
    }
    if let Some(m) = &r.rss {
        let what = format!(
            "`ota-seeder seed` (pid {}), {} releases × {} MiB, cache {} MiB",
            m.pid,
            m.releases,
            mib(m.release_bytes),
            mib(m.cache_bytes)
        );
        rows.push([
            "4".into(),
            format!(
                "{what}: all seeded ({:.1} s, {:.0} MB read from S3 by the initial checks)",
                m.seed_all_secs,
                mb(m.initial_check_s3_bytes)
            ),
            format!(
                "VmRSS **{:.0} MiB**, VmHWM {:.0} MiB",
                m.rss_seeded_mib, m.hwm_seeded_mib
            ),
            format!("VmHWM − cache cap: {:+.0} MiB", m.hwm_seeded_mib - mib(m.cache_bytes)),
        ]);
        rows.push([
            "4".into(),
            format!(
                "{what}: after {} leechers ({} at once) fetched {:.0} MB in {:.1} s ({:.0} MB/s; {:.0} MB read from S3 meanwhile)",
                m.downloads,
                cli.parallel_leechers.max(1),
                mb(m.downloaded_bytes),
                m.download_secs,
                mb_s(m.downloaded_bytes, m.download_secs),
                mb(m.s3_bytes_during_downloads)
            ),
            format!("VmRSS **{:.0} MiB**, VmHWM **{:.0} MiB** (sampled max RSS {:.0} MiB)", m.rss_end_mib, m.hwm_end_mib, m.rss_sampled_max_mib),
            format!("VmHWM − cache cap: {:+.0} MiB", m.hwm_end_mib - mib(m.cache_bytes)),
        ]);
    }
    let mut out = format!(
        "### ota-seeder bench — {}, {} tokio workers, S3: {}, wall {:.0} s (MB = 10^6 bytes)\n\n| # | measurement | result | target / notes |\n|---|---|---|---|\n",
        r.machine, r.worker_threads, r.s3_server, r.wall_secs
    );
    for row in rows {
        out.push_str(&format!("| {} | {} | {} | {} |\n", row[0], row[1], row[2], row[3]));
    }
    out
}
