//! The deployment files under `deploy/` are checked without installing
//! them: every systemd unit passes `systemd-analyze verify` with no
//! warning (an unknown or misspelt setting is a warning there, not an
//! error), its offline security exposure (`systemd-analyze security
//! --offline=yes`) is at most 2.0 of 10, and every flag its `ExecStart`
//! passes is one the binary's `--help` lists. The units' binaries are the
//! ones this workspace built (linked in place of `/usr/local/bin`).

use std::path::{Path, PathBuf};
use std::process::Command;

const UNITS: [(&str, &str); 3] = [
    ("ota-tracker.service", "ota-tracker"),
    ("ota-seeder.service", "ota-seeder"),
    ("ota-device-agent.service", "ota-device-agent"),
];

/// Highest exposure accepted (systemd's scale: 0 best, 10 worst).
const MAX_EXPOSURE: f64 = 2.0;

fn units_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd")
}

fn systemd_analyze(args: &[&str], dir: &Path) -> (bool, String, String) {
    let out = Command::new("systemd-analyze")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("systemd-analyze (Debian's systemd package; bash deploy/test-deps.sh installs it)");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The `ExecStart=` command line of a unit.
fn exec_start(unit: &str) -> Vec<String> {
    let line = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .expect("an ExecStart line");
    line.split_whitespace().map(str::to_string).collect()
}

#[test]
fn systemd_units_verify_cleanly_are_hardened_and_pass_only_known_flags() {
    let bins = ota_deploy::processes::bin_dir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let bin_dir = work.path().join("bin");
    std::fs::create_dir(&bin_dir).unwrap();
    for (unit, bin) in UNITS {
        let built = bins.join(bin);
        assert!(
            built.exists(),
            "{} not built (cargo build --workspace --bins)",
            built.display()
        );
        std::os::unix::fs::symlink(&built, bin_dir.join(bin)).unwrap();
        let text = std::fs::read_to_string(units_dir().join(unit)).unwrap();
        assert!(
            text.contains("DynamicUser=yes") && text.contains("ProtectSystem=strict"),
            "{unit}"
        );
        assert!(text.contains(&format!("ExecStart=/usr/local/bin/{bin} ")), "{unit}");
        std::fs::write(
            work.path().join(unit),
            text.replace("/usr/local/bin/", &format!("{}/", bin_dir.display())),
        )
        .unwrap();

        let (ok, _, err) = systemd_analyze(&["verify", "--man=no", &format!("./{unit}")], work.path());
        assert!(ok && err.trim().is_empty(), "systemd-analyze verify {unit}:\n{err}");

        let (_, out, err) = systemd_analyze(&["security", "--offline=yes", &format!("./{unit}")], work.path());
        let exposure: f64 = out
            .lines()
            .chain(err.lines())
            .find_map(|l| l.split("Overall exposure level for ").nth(1))
            .and_then(|rest| rest.split(": ").nth(1))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no exposure level for {unit}:\n{out}\n{err}"));
        assert!(exposure <= MAX_EXPOSURE, "{unit}: exposure {exposure} > {MAX_EXPOSURE}");

        let cmd = exec_start(&text);
        let sub = &cmd[1];
        let help = Command::new(&built).args([sub.as_str(), "--help"]).output().unwrap();
        let help = String::from_utf8_lossy(&help.stdout);
        for flag in cmd.iter().filter(|a| a.starts_with("--")) {
            assert!(
                help.contains(&format!("{flag} ")) || help.contains(&format!("{flag}\n")) || flag == "--config",
                "{unit}: {bin} {sub} has no flag {flag}"
            );
        }
    }
}
