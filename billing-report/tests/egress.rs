//! End-to-end tests of `ota-billing-report egress` on small hand-written
//! Amazon S3 server access logs and CloudFront standard access logs.

mod common;

use std::process::Output;

use common::write;

const OWNER: &str = "79a59df900b949e55d96a1e698fbacedfd6e09d98eacf8f8d5218e7cd47ef2be";
const PRICES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/prices/cloudfront-2026-example.toml");

fn egress(args: &[&str], stdin: &str) -> Output {
    common::run("egress", args, stdin)
}

fn ok_json(out: &Output) -> serde_json::Value {
    assert!(out.status.success(), "stderr: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn s3_line(time: &str, operation: &str, key: &str, status: u16, bytes: &str) -> String {
    format!(
        "{OWNER} ota-updates [{time}] 192.0.2.3 {OWNER} 3E57427F3EXAMPLE {operation} {key} \"GET /ota-updates/{key} HTTP/1.1\" {status} - {bytes} 1048576 70 10 \"-\" \"ota-device-agent/0.1 (Linux; Android 14)\" - s9lzHYrFp76ZVxRcpX9+5cjAnEH2ROuNkd2BHfIa6UkF= SigV4 ECDHE-RSA-AES128-GCM-SHA256 AuthHeader ota-updates.s3.eu-west-1.amazonaws.com TLSv1.2 - -\n"
    )
}

/// Hand-written S3 log: 3 counted GETs on 2 keys over 2 hours, one other
/// operation, one blank line and a malformed line 4.
fn s3_log() -> String {
    [
        s3_line(
            "06/Feb/2019:00:00:38 +0000",
            "REST.GET.OBJECT",
            "release/1.2/update.zip",
            200,
            "1048576",
        ),
        s3_line(
            "06/Feb/2019:00:10:00 +0000",
            "REST.HEAD.OBJECT",
            "release/1.2/update.zip",
            200,
            "-",
        ),
        s3_line(
            "06/Feb/2019:00:59:59 +0000",
            "REST.GET.OBJECT",
            "release/1.2/delta.zip",
            206,
            "4096",
        ),
        format!("{OWNER} ota-updates [06/Feb/2019:01:00:00 +0000] 192.0.2.3 - ID REST.GET.OBJECT truncated\n"),
        "\n".into(),
        s3_line(
            "06/Feb/2019:01:00:00 +0000",
            "REST.GET.OBJECT",
            "release/1.2/update.zip",
            304,
            "-",
        ),
    ]
    .concat()
}

#[test]
fn s3_log_per_object_and_hour() {
    let dir = tempfile::tempdir().unwrap();
    let log = write(dir.path(), "s3.log", &s3_log());
    let out = egress(&["--s3-log", log.to_str().unwrap(), "--format", "json"], "");
    let v = ok_json(&out);
    assert_eq!(v["format"], "s3");
    assert_eq!(v["total_bytes"], 1_048_576 + 4096);
    assert_eq!(v["total_requests"], 3);
    assert_eq!(
        (
            v["lines"].as_u64(),
            v["ignored_lines"].as_u64(),
            v["malformed_lines"].as_u64()
        ),
        (Some(6), Some(2), Some(1))
    );
    assert_eq!(v["objects"][0]["key"], "release/1.2/update.zip");
    assert_eq!(v["objects"][0]["requests"], 2);
    assert_eq!(v["objects"][0]["bytes"], 1_048_576);
    assert_eq!(v["objects"][1]["key"], "release/1.2/delta.zip");
    assert_eq!(v["hours"][0]["hour"], "2019-02-06T00");
    assert_eq!(v["hours"][0]["bytes"], 1_048_576 + 4096);
    assert_eq!(v["hours"][1]["hour"], "2019-02-06T01");
    assert_eq!(v["hours"][1]["bytes"], 0);
    let example = &v["malformed_examples"][0];
    assert_eq!(example["line"], 4);
    assert!(example["source"].as_str().unwrap().ends_with("s3.log"));
    assert!(
        example["message"]
            .as_str()
            .unwrap()
            .starts_with("expected at least 12 space-separated fields"),
        "{example}"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("warning: 1 malformed line(s) skipped; first: ") && stderr.contains("s3.log: line 4: "),
        "{stderr}"
    );
}

#[test]
fn s3_log_table_and_csv_with_prices_from_stdin() {
    let out = egress(&["--s3-log", "-"], &s3_log());
    assert!(out.status.success());
    let table = String::from_utf8(out.stdout).unwrap();
    assert!(table.starts_with("S3 server access log egress"), "{table}");
    assert!(
        table.contains("total: 1052672 bytes (0.001 GB) in 3 request(s)"),
        "{table}"
    );
    assert!(table.contains("<stdin>: line 4: expected at least 12"), "{table}");
    let out = egress(&["--s3-log", "-", "--format", "markdown"], &s3_log());
    let md = String::from_utf8(out.stdout).unwrap();
    assert!(
        md.contains("### Per object\n\n| object | requests | bytes | GB (10^9 bytes) |"),
        "{md}"
    );
    assert!(md.contains("| 2019-02-06T01 | 1 | 0 | 0.000 |"), "{md}");
    assert!(md.contains("\n  - <stdin>: line 4: expected at least 12"), "{md}");
    let out = egress(&["--s3-log", "-", "--format", "csv", "--prices", PRICES], &s3_log());
    let csv = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines[0], "kind,name,requests,bytes,usd");
    assert_eq!(lines[1], "object,release/1.2/update.zip,2,1048576,");
    assert_eq!(lines[3], "hour,2019-02-06T00,2,1052672,");
    let (head, usd) = lines[5].rsplit_once(',').unwrap();
    assert_eq!(head, "total,,3,1052672");
    // 1 052 672 bytes = 0.001052672 GB at $0.085/GB.
    assert!(
        (usd.parse::<f64>().unwrap() - 0.001_052_672 * 0.085).abs() < 1e-12,
        "{usd}"
    );
}

#[test]
fn cloudfront_log_uses_the_fields_line() {
    let dir = tempfile::tempdir().unwrap();
    // Columns deliberately not in the default order: found through #Fields.
    let log = "#Version: 1.0\n\
        #Fields: date time x-edge-location c-ip sc-bytes cs-method cs(Host) sc-status cs-uri-stem cs(Referer) cs(User-Agent)\n\
        2019-12-04\t21:02:31\tLAX1-C1\t192.0.2.100\t1048576\tGET\td111111abcdef8.cloudfront.net\t200\t/release/update.zip\t-\tagent\n\
        2019-12-04\t21:59:59\tLAX1-C1\t192.0.2.101\t-\tGET\td111111abcdef8.cloudfront.net\t304\t/release/update.zip\t-\tagent\n\
        2019-12-04\t22:00:00\tLAX1-C1\t192.0.2.102\tnot-a-number\tGET\td111111abcdef8.cloudfront.net\t200\t/release/update.zip\t-\tagent\n\
        2019-12-04\t22:00:01\tFRA6-C2\t192.0.2.103\t512\tGET\td111111abcdef8.cloudfront.net\t206\t/release/delta.zip\t-\tagent\n";
    let path = write(dir.path(), "E2EXAMPLE.2019-12-04-21.log", log);
    let v = ok_json(&egress(
        &["--cloudfront-log", path.to_str().unwrap(), "--format", "json"],
        "",
    ));
    assert_eq!(v["format"], "cloudfront");
    assert_eq!(v["total_bytes"], 1_048_576 + 512);
    assert_eq!(v["total_requests"], 3);
    assert_eq!(
        (
            v["lines"].as_u64(),
            v["ignored_lines"].as_u64(),
            v["malformed_lines"].as_u64()
        ),
        (Some(6), Some(2), Some(1))
    );
    assert_eq!(v["objects"][0]["key"], "/release/update.zip");
    assert_eq!(v["objects"][0]["requests"], 2);
    assert_eq!(v["objects"][1]["key"], "/release/delta.zip");
    assert_eq!(v["hours"][0]["hour"], "2019-12-04T21");
    assert_eq!(v["hours"][1]["hour"], "2019-12-04T22");
    assert_eq!(v["hours"][1]["bytes"], 512);
    assert_eq!(v["malformed_examples"][0]["line"], 5);
    assert_eq!(
        v["malformed_examples"][0]["message"],
        "sc-bytes: expected a byte count or -, found `not-a-number`"
    );
}

#[test]
fn empty_logs_give_zero_totals() {
    let dir = tempfile::tempdir().unwrap();
    let empty = write(dir.path(), "empty.log", "");
    for flag in ["--s3-log", "--cloudfront-log"] {
        let v = ok_json(&egress(&[flag, empty.to_str().unwrap(), "--format", "json"], ""));
        assert_eq!(
            (
                v["total_bytes"].as_u64(),
                v["total_requests"].as_u64(),
                v["lines"].as_u64()
            ),
            (Some(0), Some(0), Some(0))
        );
        assert_eq!(v["objects"], serde_json::json!([]));
        assert_eq!(v["hours"], serde_json::json!([]));
        assert_eq!(v["malformed_examples"], serde_json::json!([]));
    }
    let out = egress(&["--s3-log", empty.to_str().unwrap()], "");
    assert!(out.status.success() && out.stderr.is_empty());
    assert!(String::from_utf8(out.stdout)
        .unwrap()
        .contains("total: 0 bytes (0.000 GB) in 0 request(s)"));
}

#[test]
fn several_files_and_usage_errors() {
    let dir = tempfile::tempdir().unwrap();
    let a = write(
        dir.path(),
        "a.log",
        &s3_line("06/Feb/2019:00:00:38 +0000", "REST.GET.OBJECT", "k", 200, "10"),
    );
    let b = write(
        dir.path(),
        "b.log",
        &s3_line("07/Feb/2019:05:00:00 +0100", "REST.GET.OBJECT", "k", 200, "5"),
    );
    let v = ok_json(&egress(
        &["--s3-log", a.to_str().unwrap(), b.to_str().unwrap(), "--format", "json"],
        "",
    ));
    assert_eq!(v["total_bytes"], 15);
    assert_eq!(v["hours"][1]["hour"], "2019-02-07T04");
    let out = egress(&["--s3-log", dir.path().join("missing.log").to_str().unwrap()], "");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing.log: cannot open"));
    let out = egress(&[], "");
    assert!(!out.status.success());
    let out = egress(
        &["--s3-log", a.to_str().unwrap(), "--cloudfront-log", b.to_str().unwrap()],
        "",
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot be used with"));
}
