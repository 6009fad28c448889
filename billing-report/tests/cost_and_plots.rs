//! End-to-end tests of `ota-billing-report savings` with `--prices`, the
//! fleet projection and `--plot-dir`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_ota-billing-report");
const HEADER: &str = "scenario,run,client_server_bytes,p2p_bytes";
const PRICES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/prices/cloudfront-2026-example.toml");

fn write(dir: &Path, name: &str, content: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, content).unwrap();
    path
}

fn savings(args: &[&str]) -> Output {
    Command::new(BIN).arg("savings").args(args).output().unwrap()
}

fn ok_stdout(out: &Output) -> String {
    assert!(out.status.success(), "stderr: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout.clone()).unwrap()
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * b.abs().max(1.0)
}

/// Two tiers: first 10 GB at $1/GB, then $0.50/GB; 1 GB = 10^9 bytes.
const SIMPLE_PRICES: &str = "[[tier]]\nup_to_gb = 10\nusd_per_gb = 1.0\n[[tier]]\nusd_per_gb = 0.5\n";

fn runs_csv(dir: &Path) -> PathBuf {
    // flash: W = 80 % and 40 %; solo: W = -10 %.
    write(
        dir,
        "runs.csv",
        &format!(
            "{HEADER}\nflash,1,20000000000,4000000000\nflash,2,20000000000,12000000000\nsolo,1,1000000000,1100000000\n"
        ),
    )
}

#[test]
fn json_gains_cost_fields_and_keeps_the_old_ones() {
    let dir = tempfile::tempdir().unwrap();
    let runs = runs_csv(dir.path());
    let prices = write(dir.path(), "p.toml", SIMPLE_PRICES);
    let args = [
        "--input",
        runs.to_str().unwrap(),
        "--format",
        "json",
        "--prices",
        prices.to_str().unwrap(),
        "--fleet-devices",
        "1000",
        "--package-bytes",
        "100000000",
        "--releases-per-month",
        "0.5",
    ];
    let text = ok_stdout(&savings(&args));
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let mut keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "fleet",
            "highest_mean_saving_pct",
            "lowest_mean_saving_pct",
            "price_table",
            "runs",
            "scenarios"
        ]
    );
    // Existing keys keep their order in the text, cost keys follow them.
    let at = |needle: &str| text.find(needle).unwrap_or_else(|| panic!("no {needle}"));
    assert!(
        at("\"scenarios\"") < at("\"runs\": [")
            && at("\"runs\": [") < at("\"lowest_mean_saving_pct\"")
            && at("\"highest_mean_saving_pct\"") < at("\"price_table\"")
    );
    assert!(at("\"stdev_p2p_bytes\"") < at("\"mean_client_server_usd\""));
    assert!(at("\"saving_pct\"") < at("\"client_server_usd\""));
    let flash = &v["scenarios"][0];
    for old in [
        "name",
        "runs",
        "mean_client_server_bytes",
        "mean_p2p_bytes",
        "mean_saving_pct",
        "stdev_saving_pct",
        "ci95_saving_pct",
        "stdev_client_server_bytes",
        "stdev_p2p_bytes",
    ] {
        assert!(flash.get(old).is_some(), "missing {old}");
    }
    // Run 1: 20 GB → 10 + 5 = $15, 4 GB → $4. Run 2: $15, 12 GB → 10 + 1 = $11.
    assert!(close(v["runs"][0]["client_server_usd"].as_f64().unwrap(), 15.0));
    assert!(close(v["runs"][0]["p2p_usd"].as_f64().unwrap(), 4.0));
    assert!(close(v["runs"][1]["saved_usd"].as_f64().unwrap(), 4.0));
    assert_eq!(v["runs"][1]["gain_bytes"], 8_000_000_000i64);
    assert!(close(flash["mean_client_server_usd"].as_f64().unwrap(), 15.0));
    assert!(close(flash["mean_p2p_usd"].as_f64().unwrap(), 7.5));
    assert!(close(flash["mean_saved_usd"].as_f64().unwrap(), 7.5));
    // Fleet: 1000 × 0.1 GB × 0.5 = 50 GB → $30; W = 60 % → 20 GB → $15.
    let fleet = &flash["fleet"];
    assert!(close(fleet["monthly_client_server_bytes"].as_f64().unwrap(), 50e9));
    assert!(close(fleet["monthly_p2p_bytes"].as_f64().unwrap(), 20e9));
    assert!(close(fleet["monthly_client_server_usd"].as_f64().unwrap(), 30.0));
    assert!(close(fleet["monthly_p2p_usd"].as_f64().unwrap(), 15.0));
    assert!(close(fleet["monthly_saved_usd"].as_f64().unwrap(), 15.0));
    // solo: W = -10 % → 55 GB → 10 + 22.5 = $32.50, i.e. $2.50 more.
    assert!(close(
        v["scenarios"][1]["fleet"]["monthly_saved_usd"].as_f64().unwrap(),
        -2.5
    ));
    assert_eq!(v["fleet"]["devices"], 1000);
    assert_eq!(v["price_table"]["bytes_per_gb"], 1_000_000_000u64);
    assert_eq!(v["price_table"]["tier"][0]["usd_per_gb"], 1.0);
}

#[test]
fn table_markdown_and_csv_get_cost_columns_only_with_prices() {
    let dir = tempfile::tempdir().unwrap();
    let runs = runs_csv(dir.path());
    let runs = runs.to_str().unwrap();
    let plain = ok_stdout(&savings(&["--input", runs]));
    assert!(!plain.contains("USD"), "{plain}");
    let table = ok_stdout(&savings(&["--input", runs, "--prices", PRICES]));
    assert!(
        table.contains("mean cost D_cs (USD)  mean cost D_p2p (USD)  mean saved (USD)"),
        "{table}"
    );
    // 20 GB at $0.085 = $1.70; 4 GB = $0.34.
    let run1: Vec<&str> = table
        .lines()
        .find(|l| l.starts_with("flash     1"))
        .unwrap()
        .split_whitespace()
        .collect();
    assert_eq!(run1[6..], ["1.7000", "0.3400", "1.3600"], "{table}");
    assert!(table.contains("prices: CloudFront data transfer out"), "{table}");
    assert!(!table.contains("bytes/month"), "{table}");
    let md = ok_stdout(&savings(&[
        "--input",
        runs,
        "--prices",
        PRICES,
        "--format",
        "markdown",
        "--fleet-devices",
        "2000000",
        "--package-bytes",
        "1500000000",
        "--releases-per-month",
        "1",
    ]));
    assert!(md.contains("## Fleet projection (per month)"), "{md}");
    // 3 PB a month through the example tiers: $89 510.08.
    assert!(
        md.contains("| solo | -10.00 | 3000000000000000 | 3300000000000000 | -300000000000000 | 89510.08 |"),
        "{md}"
    );
    let csv = ok_stdout(&savings(&["--input", runs, "--prices", PRICES, "--format", "csv"]));
    let header = csv.lines().next().unwrap();
    assert!(
        header.ends_with(",ci95_saving_pct,mean_client_server_usd,mean_p2p_usd,mean_saved_usd"),
        "{header}"
    );
    // flash: mean of $1.70 and $1.70; of $0.34 and $1.02; of $1.36 and $0.68.
    let row: Vec<f64> = csv
        .lines()
        .nth(1)
        .unwrap()
        .rsplitn(4, ',')
        .take(3)
        .map(|x| x.parse().unwrap())
        .collect();
    assert!(
        close(row[2], 1.7) && close(row[1], 0.68) && close(row[0], 1.02),
        "{csv}"
    );
}

#[test]
fn bad_prices_and_incomplete_fleet_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let runs = runs_csv(dir.path());
    let runs = runs.to_str().unwrap();
    let bad = write(dir.path(), "bad.toml", "[[tier]]\nup_to_gb = 10\nusd_per_gb = 1\n");
    let out = savings(&["--input", runs, "--prices", bad.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.toml: tier 1: the last tier must not have up_to_gb"),
        "{err}"
    );
    let out = savings(&["--input", runs, "--prices", PRICES, "--fleet-devices", "10"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--package-bytes"));
    let out = savings(&[
        "--input",
        runs,
        "--fleet-devices",
        "10",
        "--package-bytes",
        "1",
        "--releases-per-month",
        "1",
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--prices"));
}

fn assert_png(path: &Path) {
    let bytes = std::fs::read(path).unwrap();
    assert!(bytes.len() > 1000, "{} is only {} bytes", path.display(), bytes.len());
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "{} is not a PNG", path.display());
    assert_eq!(&bytes[12..16], b"IHDR");
    let width = u32::from_be_bytes(bytes[16..20].try_into().unwrap());
    let height = u32::from_be_bytes(bytes[20..24].try_into().unwrap());
    assert!(width >= 800 && height >= 500, "{width}x{height}");
    assert_eq!(&bytes[bytes.len() - 8..bytes.len() - 4], b"IEND");
}

fn assert_svg(path: &Path, must_contain: &[&str]) {
    let text = std::fs::read_to_string(path).unwrap();
    assert!(
        text.starts_with("<svg") || text.starts_with("<?xml"),
        "{}",
        path.display()
    );
    assert!(text.trim_end().ends_with("</svg>"), "{}", path.display());
    for needle in must_contain {
        assert!(text.contains(needle), "{} lacks {needle:?}", path.display());
    }
}

#[test]
fn plots_are_written_as_valid_svg_and_png() {
    let dir = tempfile::tempdir().unwrap();
    let runs = runs_csv(dir.path());
    let plots = dir.path().join("plots/nested");
    let out = savings(&[
        "--input",
        runs.to_str().unwrap(),
        "--plot-dir",
        plots.to_str().unwrap(),
        "--format",
        "csv",
    ]);
    ok_stdout(&out);
    assert!(String::from_utf8_lossy(&out.stderr).contains("wrote 6 plot files to"));
    let mut names: Vec<String> = std::fs::read_dir(&plots)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "scenario-01-flash.png",
            "scenario-01-flash.svg",
            "scenario-02-solo.png",
            "scenario-02-solo.svg",
            "scenarios-mean-saving.png",
            "scenarios-mean-saving.svg",
        ]
    );
    for name in names.iter().filter(|n| n.ends_with(".png")) {
        assert_png(&plots.join(name));
    }
    assert_svg(
        &plots.join("scenario-01-flash.svg"),
        &["D_cs, without P2P", "D_p2p, with P2P", "mean W = 60.00 %"],
    );
    assert_svg(&plots.join("scenario-02-solo.svg"), &["mean W = -10.00 %"]);
    assert_svg(
        &plots.join("scenarios-mean-saving.svg"),
        &["flash", "solo", "60.0 ± 20.0 %"],
    );
}

#[test]
fn a_missing_font_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let runs = runs_csv(dir.path());
    let font = dir.path().join("nope.ttf");
    let out = savings(&[
        "--input",
        runs.to_str().unwrap(),
        "--plot-dir",
        dir.path().to_str().unwrap(),
        "--font",
        font.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("plots: no font for plot labels") && err.contains("nope.ttf"),
        "{err}"
    );
    let not_a_font = write(dir.path(), "fake.ttf", "not a font");
    let out = savings(&[
        "--input",
        runs.to_str().unwrap(),
        "--plot-dir",
        dir.path().to_str().unwrap(),
        "--font",
        not_a_font.to_str().unwrap(),
    ]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a TrueType/OpenType font"));
}
