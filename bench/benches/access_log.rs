//! Access log parse throughput, rerunnable by anyone:
//!
//! ```text
//! cargo bench -p ota-billing-report --bench access_log            # 256 MB
//! ACCESS_LOG_BENCH_MB=1024 cargo bench -p ota-billing-report --bench access_log
//! ```
//!
//! Writes a synthetic Amazon S3 server access log of `ACCESS_LOG_BENCH_MB`
//! megabytes (10^6 bytes; default 256) to a temporary file, then streams it
//! through the same code path as `ota-billing-report egress --s3-log`
//! (`BufReader` → `scan_log`) `ACCESS_LOG_BENCH_ROUNDS` times (default 3) and
//! prints the throughput of each round and the best, in MB/s (10^6 bytes per
//! second) and lines per second. The file is read from the page cache after
//! the first round, so this measures parsing, not the disk.

use std::fs::File;
use std::io::{BufReader, BufWriter};
use std::time::Instant;

use ota_billing_report::egress::{scan_log, EgressTally, LogFormat};
use ota_billing_report::synthetic::write_s3_log;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn main() {
    // `cargo bench` passes `--bench`; a harness-less bench ignores its arguments.
    let mb = env_u64("ACCESS_LOG_BENCH_MB", 256);
    let rounds = env_u64("ACCESS_LOG_BENCH_ROUNDS", 3).max(1);
    let file = tempfile::NamedTempFile::new().expect("temp file");
    let started = Instant::now();
    let totals = write_s3_log(BufWriter::new(file.as_file()), mb * 1_000_000).expect("write synthetic log");
    println!(
        "generated {:.1} MB synthetic S3 access log ({} lines) in {:.2} s",
        totals.log_bytes as f64 / 1e6,
        totals.lines,
        started.elapsed().as_secs_f64()
    );
    let mut best = 0.0f64;
    for round in 1..=rounds {
        let reader = BufReader::with_capacity(256 * 1024, File::open(file.path()).expect("open"));
        let mut tally = EgressTally::new();
        let started = Instant::now();
        scan_log(LogFormat::S3, reader, "bench", &mut tally).expect("scan");
        let report = tally.report(LogFormat::S3);
        let secs = started.elapsed().as_secs_f64();
        assert_eq!(
            report.total_bytes, totals.egress_bytes,
            "scan disagrees with the generator"
        );
        assert_eq!(report.lines, totals.lines);
        let mb_s = totals.log_bytes as f64 / 1e6 / secs;
        best = best.max(mb_s);
        println!(
            "round {round}: parsed {:.1} MB in {secs:.3} s: {mb_s:.1} MB/s, {:.0} lines/s ({} GET objects, {} malformed)",
            totals.log_bytes as f64 / 1e6,
            totals.lines as f64 / secs,
            report.total_requests,
            report.malformed_lines
        );
    }
    println!("best: {best:.1} MB/s");
}
