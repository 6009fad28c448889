//! Memory stays flat however large the access log is: a ~200 MB synthetic S3
//! server access log, generated on the fly, is piped through
//! `ota-billing-report egress --s3-log -`, and the child's peak resident set
//! size must stay below [`PEAK_RSS_LIMIT_KIB`] and within
//! [`GROWTH_LIMIT_KIB`] of a run on a 1 MB log.
//!
//! Peak RSS is read from `/usr/bin/time -v` ("Maximum resident set size")
//! when that program exists, else from the binary's own report of `VmHWM`
//! (`/proc/self/status`, enabled by `OTA_BILLING_REPORT_PEAK_RSS`). The log
//! size can be changed with `BIG_LOG_MB` (megabytes, 10^6 bytes).

use std::io::{BufWriter, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use ota_billing_report::synthetic::{write_s3_log, SyntheticTotals, DISTINCT_KEYS};

const BIN: &str = env!("CARGO_BIN_EXE_ota-billing-report");
/// Upper bound of the peak RSS of the scan of the big log, KiB (64 MiB).
const PEAK_RSS_LIMIT_KIB: u64 = 64 * 1024;
/// Upper bound of the peak RSS growth from the 1 MB log to the big one, KiB (16 MiB).
const GROWTH_LIMIT_KIB: u64 = 16 * 1024;

struct Run {
    totals: SyntheticTotals,
    json: serde_json::Value,
    peak_rss_kib: u64,
    seconds: f64,
}

fn field_kib(stderr: &str, prefix: &str) -> Option<u64> {
    let line = stderr.lines().map(str::trim).find(|l| l.starts_with(prefix))?;
    line[prefix.len()..].split_whitespace().next()?.parse().ok()
}

fn pipe_synthetic_log(megabytes: u64) -> Run {
    let time = Path::new("/usr/bin/time");
    let mut command = if time.exists() {
        let mut c = Command::new(time);
        c.arg("-v").arg(BIN);
        c
    } else {
        Command::new(BIN)
    };
    let started = Instant::now();
    let mut child = command
        .args(["egress", "--s3-log", "-", "--format", "json"])
        .env("OTA_BILLING_REPORT_PEAK_RSS", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || {
        let mut pipe = BufWriter::with_capacity(1 << 16, stdin);
        let totals = write_s3_log(&mut pipe, megabytes * 1_000_000).unwrap();
        pipe.flush().unwrap();
        totals
    });
    let out = child.wait_with_output().unwrap();
    let totals = writer.join().unwrap();
    let seconds = started.elapsed().as_secs_f64();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let from_time = field_kib(&stderr, "Maximum resident set size (kbytes):");
    let from_proc = field_kib(&stderr, "peak RSS (VmHWM):");
    let peak_rss_kib = from_time
        .or(from_proc)
        .unwrap_or_else(|| panic!("no peak RSS in stderr: {stderr}"));
    eprintln!(
        "{megabytes} MB log ({} lines) in {seconds:.1} s: peak RSS {peak_rss_kib} KiB (/usr/bin/time: {from_time:?}, VmHWM: {from_proc:?})",
        totals.lines
    );
    Run {
        totals,
        json: serde_json::from_slice(&out.stdout).unwrap(),
        peak_rss_kib,
        seconds,
    }
}

fn check_totals(run: &Run) {
    let (v, t) = (&run.json, &run.totals);
    assert_eq!(v["lines"].as_u64(), Some(t.lines));
    assert_eq!(v["total_requests"].as_u64(), Some(t.get_objects));
    assert_eq!(v["total_bytes"].as_u64(), Some(t.egress_bytes));
    assert_eq!(v["ignored_lines"].as_u64(), Some(t.other));
    assert_eq!(v["malformed_lines"].as_u64(), Some(t.malformed));
    assert_eq!(v["objects"].as_array().unwrap().len() as u64, DISTINCT_KEYS);
}

#[test]
fn big_log_streams_in_flat_memory() {
    let megabytes = std::env::var("BIG_LOG_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let small = pipe_synthetic_log(1);
    check_totals(&small);
    let big = pipe_synthetic_log(megabytes);
    check_totals(&big);
    assert!(big.totals.log_bytes >= megabytes * 1_000_000);
    // One example per malformed line, up to 5, each named by its line number.
    let examples = big.json["malformed_examples"].as_array().unwrap();
    assert_eq!(examples.len() as u64, big.totals.malformed.min(5));
    if let Some(first) = examples.first() {
        assert_eq!(first["line"], 50_000);
        assert_eq!(first["source"], "<stdin>");
    }
    // Hours: one line per second from 2026-01-01T00.
    let hours = big.json["hours"].as_array().unwrap();
    assert_eq!(hours[0]["hour"], "2026-01-01T00");
    assert_eq!(hours.len() as u64, (big.totals.lines - 1) / 3600 + 1);
    assert!(
        big.peak_rss_kib < PEAK_RSS_LIMIT_KIB,
        "peak RSS {} KiB >= {PEAK_RSS_LIMIT_KIB} KiB",
        big.peak_rss_kib
    );
    let growth = big.peak_rss_kib.saturating_sub(small.peak_rss_kib);
    assert!(
        growth < GROWTH_LIMIT_KIB,
        "peak RSS grew by {growth} KiB from 1 MB to {megabytes} MB"
    );
    eprintln!(
        "throughput through the debug build and the pipe: {:.1} MB/s",
        big.totals.log_bytes as f64 / 1e6 / big.seconds
    );
}
