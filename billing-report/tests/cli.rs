//! End-to-end tests of the `ota-billing-report` binary.

mod common;

use std::process::Output;

use common::write;

const HEADER: &str = "scenario,run,client_server_bytes,p2p_bytes";

fn savings(args: &[&str], stdin: Option<&str>) -> Output {
    common::run("savings", args, stdin.unwrap_or(""))
}

fn ok_stdout(out: &Output) -> String {
    assert!(out.status.success(), "stderr: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout.clone()).unwrap()
}

fn failure(out: &Output) -> String {
    assert!(!out.status.success(), "unexpected success");
    assert!(out.stdout.is_empty());
    String::from_utf8(out.stderr.clone()).unwrap()
}

#[test]
fn json_report_from_csv_and_json_inputs() {
    let dir = tempfile::tempdir().unwrap();
    let csv = write(
        dir.path(),
        "a.csv",
        &format!("{HEADER}\nflash,1,100,60\nflash,2,100,40\n"),
    );
    let json = write(
        dir.path(),
        "b.JSON",
        r#"[{"scenario":"solo","run":"x","client_server_bytes":200,"p2p_bytes":250,"swarm":3}]"#,
    );
    let out = savings(
        &[
            "--input",
            csv.to_str().unwrap(),
            "--input",
            json.to_str().unwrap(),
            "--format",
            "json",
        ],
        None,
    );
    let v: serde_json::Value = serde_json::from_str(&ok_stdout(&out)).unwrap();
    let keys = |v: &serde_json::Value| {
        let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
        k.sort();
        k
    };
    assert_eq!(
        keys(&v),
        ["highest_mean_saving_pct", "lowest_mean_saving_pct", "runs", "scenarios"]
    );
    assert_eq!(
        keys(&v["scenarios"][0]),
        [
            "ci95_saving_pct",
            "mean_client_server_bytes",
            "mean_p2p_bytes",
            "mean_saving_pct",
            "name",
            "runs",
            "stdev_client_server_bytes",
            "stdev_p2p_bytes",
            "stdev_saving_pct",
        ]
    );
    assert_eq!(
        keys(&v["runs"][0]),
        [
            "client_server_bytes",
            "gain_bytes",
            "p2p_bytes",
            "run",
            "saving_pct",
            "scenario"
        ]
    );
    let flash = &v["scenarios"][0];
    assert_eq!(flash["name"], "flash");
    assert_eq!(flash["runs"], 2);
    assert_eq!(flash["mean_saving_pct"], 50.0);
    assert_eq!(flash["stdev_saving_pct"], 10.0);
    assert!((flash["ci95_saving_pct"].as_f64().unwrap() - 127.06).abs() < 1e-9);
    assert_eq!(v["scenarios"][1]["ci95_saving_pct"], serde_json::Value::Null);
    assert_eq!(v["runs"][2]["gain_bytes"], -50);
    assert_eq!(v["lowest_mean_saving_pct"], -25.0);
    assert_eq!(v["highest_mean_saving_pct"], 50.0);
}

#[test]
fn stdin_csv_with_table_markdown_and_csv_formats() {
    let input = format!("{HEADER}\nflash,1,100,60\nflash,2,100,40\n");
    let table = ok_stdout(&savings(&["--input", "-"], Some(&input)));
    assert!(table.starts_with("scenario  runs"), "{table}");
    assert!(table.contains("lowest 50.00%, highest 50.00%"), "{table}");
    let md = ok_stdout(&savings(&["--input", "-", "--format", "markdown"], Some(&input)));
    assert!(
        md.contains("| flash | 2 | 100 | 0 | 50 | 10 | 50.00 | 10.00 | 127.06 |"),
        "{md}"
    );
    let csv = ok_stdout(&savings(&["--input", "-", "--format", "csv"], Some(&input)));
    assert!(csv.starts_with("scenario,runs,mean_client_server_bytes,"), "{csv}");
    assert!(
        csv.lines()
            .nth(1)
            .unwrap()
            .starts_with("flash,2,100,0,50,10,50,10,127.0"),
        "{csv}"
    );
}

#[test]
fn malformed_row_names_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "bad.csv",
        &format!("{HEADER}\nflash,1,100,60\nflash,2,100,4o\n"),
    );
    let err = failure(&savings(&["--input", path.to_str().unwrap()], None));
    assert!(err.contains("bad.csv: line 3: p2p_bytes: invalid digit"), "{err}");
}

#[test]
fn empty_file_and_wrong_header() {
    let dir = tempfile::tempdir().unwrap();
    let empty = write(dir.path(), "empty.csv", "");
    let err = failure(&savings(&["--input", empty.to_str().unwrap()], None));
    assert!(err.contains("empty.csv: empty input: expected header"), "{err}");
    let wrong = write(dir.path(), "wrong.csv", "scenario,run,cs,p2p\n");
    let err = failure(&savings(&["--input", wrong.to_str().unwrap()], None));
    assert!(err.contains("wrong.csv: wrong header"), "{err}");
    let header_only = write(dir.path(), "header.csv", &format!("{HEADER}\n"));
    let err = failure(&savings(&["--input", header_only.to_str().unwrap()], None));
    assert!(err.contains("header.csv: no runs"), "{err}");
}

#[test]
fn zero_client_server_bytes_names_file_scenario_and_run() {
    let dir = tempfile::tempdir().unwrap();
    let ok = write(dir.path(), "ok.csv", &format!("{HEADER}\nflash,1,100,60\n"));
    let zero = write(
        dir.path(),
        "zero.json",
        r#"[{"scenario":"flash","run":"r9","client_server_bytes":0,"p2p_bytes":5}]"#,
    );
    let err = failure(&savings(
        &["--input", ok.to_str().unwrap(), "--input", zero.to_str().unwrap()],
        None,
    ));
    assert!(
        err.contains("zero.json: scenario \"flash\" run \"r9\": client_server_bytes is 0"),
        "{err}"
    );
}

#[test]
fn bad_inputs_fail_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let txt = write(dir.path(), "runs.txt", "");
    let err = failure(&savings(&["--input", txt.to_str().unwrap()], None));
    assert!(err.contains("runs.txt: unsupported input type"), "{err}");
    let missing = dir.path().join("missing.csv");
    let err = failure(&savings(&["--input", missing.to_str().unwrap()], None));
    assert!(err.contains("missing.csv: cannot open"), "{err}");
    let bad_json = write(dir.path(), "bad.json", "{\"scenario\":1}");
    let err = failure(&savings(&["--input", bad_json.to_str().unwrap()], None));
    assert!(err.contains("bad.json: invalid JSON run records"), "{err}");
    let err = failure(&savings(&["--input", "-", "--format", "xml"], Some("")));
    assert!(err.contains("xml"), "{err}");
}
