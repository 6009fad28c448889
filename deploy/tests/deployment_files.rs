//! The deployment files under `deploy/` are checked without installing
//! them: every systemd unit passes `systemd-analyze verify` with no
//! warning (an unknown or misspelt setting is a warning there, not an
//! error), its offline security exposure (`systemd-analyze security
//! --offline=yes`) is at most 2.0 of 10, and every flag its `ExecStart`
//! passes is one the binary's `--help` lists. The units' binaries are the
//! ones this workspace built (linked in place of `/usr/local/bin`).
//!
//! The container build files, the compose file and the Kubernetes manifests
//! are checked without a container runtime or a cluster: each Containerfile
//! builds a workspace binary and runs it unprivileged with flags its
//! `--help` lists; `docker-compose config -q` (Debian's docker-compose)
//! accepts the compose file and refuses a misspelt key; `kubernetes-validate
//! --strict` (PyPI) accepts every manifest and refuses a misspelt field; the
//! settings the files pass (TOML keys, environment variables) are ones the
//! binaries know.

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

/// The `--help` text of `bin sub`, built by this workspace.
fn help(bin: &str, sub: &str) -> String {
    let built = ota_deploy::processes::bin_dir().unwrap().join(bin);
    let out = Command::new(&built)
        .args([sub, "--help"])
        .output()
        .unwrap_or_else(|e| panic!("{} (cargo build --workspace --bins): {e}", built.display()));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn deploy_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

const IMAGES: [(&str, &str); 3] = [
    ("ota-tracker", "serve"),
    ("ota-seeder", "seed"),
    ("ota-device-agent", "run"),
];

#[test]
fn container_files_build_a_workspace_binary_and_run_it_unprivileged() {
    let ignore = std::fs::read_to_string(deploy_dir().join("../.dockerignore")).unwrap();
    assert!(
        ignore.lines().any(|l| l == "target/"),
        "the build context leaves out target/"
    );
    for (bin, sub) in IMAGES {
        let file = deploy_dir().join("container").join(format!("{bin}.Containerfile"));
        let text = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        let froms: Vec<&str> = text.lines().filter_map(|l| l.strip_prefix("FROM ")).collect();
        assert_eq!(froms.len(), 2, "{bin}: a build stage and a runtime stage");
        for f in &froms {
            let image = f.split_whitespace().next().unwrap();
            assert!(
                image.starts_with("docker.io/") && image.contains(':') && !image.ends_with(":latest"),
                "{bin}: {image} is not a fully named, tagged image"
            );
        }
        assert!(
            text.contains(&format!("cargo build --release --locked -p {bin} --bin {bin}")),
            "{bin}: builds its own binary from the locked workspace"
        );
        let user = text.lines().find_map(|l| l.strip_prefix("USER ")).expect("a USER line");
        let uid: u32 = user.split(':').next().unwrap().parse().expect("a numeric user");
        assert!(uid >= 1000, "{bin}: runs as root or a system user ({user})");
        assert!(
            text.contains(&format!("ENTRYPOINT [\"/usr/local/bin/{bin}\"]")),
            "{bin}: entrypoint"
        );
        let cmd: Vec<String> = serde_json::from_str(
            text.lines()
                .find_map(|l| l.strip_prefix("CMD "))
                .expect("a CMD line in JSON form"),
        )
        .unwrap();
        assert_eq!(cmd[0], sub, "{bin}");
        let help = help(bin, sub);
        // `--config` is read before the flags (ota_common::config), as in the units.
        for flag in cmd.iter().filter(|a| a.starts_with("--") && *a != "--config") {
            assert!(help.contains(&format!("{flag} ")), "{bin}: {sub} has no flag {flag}");
        }
    }
}

/// The environment variables a binary reads (`[env: NAME=]` in `--help`).
fn env_names(bin: &str, sub: &str) -> Vec<String> {
    help(bin, sub)
        .split("[env: ")
        .skip(1)
        .filter_map(|rest| rest.split(['=', ']']).next().map(str::to_string))
        .collect()
}

fn docker_compose(file: &Path, env: &[(&str, &str)]) -> (bool, String) {
    let out = Command::new("docker-compose")
        .arg("-f")
        .arg(file)
        .args(["config", "-q"])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(env.iter().copied())
        .output()
        .expect("docker-compose (Debian's docker-compose; bash deploy/test-deps.sh installs it)");
    (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn compose_file_validates_and_passes_only_known_settings() {
    let file = deploy_dir().join("compose.yaml");
    let secrets = [
        ("POSTGRES_PASSWORD", "pw"),
        ("OTA_PUBLIC_URL", "http://updates.example:7070"),
        ("OTA_ADMIN_TOKEN", "admin-token-0123456789"),
        ("OTA_ORIGIN_TOKEN", "origin-token-0123456789"),
        ("OTA_MQTT_PASSWORD", "mqtt"),
        ("AWS_ACCESS_KEY_ID", "key"),
        ("AWS_SECRET_ACCESS_KEY", "secret"),
    ];
    let (ok, err) = docker_compose(&file, &secrets);
    assert!(ok, "docker-compose config:\n{err}");
    // A missing secret is refused by name.
    let (ok, err) = docker_compose(&file, &secrets[1..]);
    assert!(!ok && err.contains("POSTGRES_PASSWORD"), "{err}");
    // The validator fails on a misspelt key (so passing above means something).
    let text = std::fs::read_to_string(&file).unwrap();
    let bad = tempfile::Builder::new()
        .suffix(".yaml")
        .tempfile_in(deploy_dir())
        .unwrap();
    std::fs::write(
        bad.path(),
        text.replacen("    restart: unless-stopped", "    restrat: unless-stopped", 1),
    )
    .unwrap();
    let (ok, err) = docker_compose(bad.path(), &secrets);
    assert!(!ok && err.contains("restrat"), "a misspelt key passed: {err}");

    for service in ["tracker:", "seeder:", "postgres:", "garage:", "mosquitto:"] {
        assert!(text.contains(&format!("\n  {service}\n")), "no service {service}");
    }
    // Every OTA_* / DATABASE_URL variable given to our services is one they read.
    let known: Vec<String> = IMAGES
        .iter()
        .take(2)
        .flat_map(|(bin, sub)| env_names(bin, sub))
        .collect();
    for line in text.lines().map(str::trim) {
        let Some((name, _)) = line.split_once(": ") else {
            continue;
        };
        if (name.starts_with("OTA_") || name == "DATABASE_URL") && !name.contains('{') {
            assert!(
                known.iter().any(|k| k == name),
                "{name} is read by neither the tracker nor the seeder"
            );
        }
    }
}

fn kubernetes_validate(files: &[PathBuf]) -> (bool, String) {
    let out = Command::new("python3")
        .args(["-m", "kubernetes_validate", "--strict", "--no-warn"])
        .args(files)
        .output()
        .expect("python3 with kubernetes-validate (PyPI; bash deploy/test-deps.sh installs it)");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn kubernetes_manifests_validate_strictly_and_name_known_settings() {
    let dir = deploy_dir().join("kubernetes");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    let (ok, out) = kubernetes_validate(&files);
    assert!(ok, "kubernetes-validate:\n{out}");
    let all: String = files.iter().map(|f| std::fs::read_to_string(f).unwrap()).collect();
    for kind in [
        "kind: Deployment",
        "kind: Service",
        "kind: StatefulSet",
        "kind: ConfigMap",
        "kind: Secret",
        "kind: PodDisruptionBudget",
    ] {
        assert!(all.contains(kind), "no {kind}");
    }
    let tracker = std::fs::read_to_string(dir.join("tracker.yaml")).unwrap();
    let ready = tracker.split("readinessProbe:").nth(1).expect("a readiness probe");
    assert!(
        ready.lines().take(3).any(|l| l.trim() == "path: /ready"),
        "the tracker's readiness probe checks the database (GET /ready)"
    );
    assert!(
        tracker.contains("name: OTA_TRACKER_REPLICA_ID"),
        "each pod is a replica"
    );
    // A misspelt field fails strict validation.
    let bad = tempfile::Builder::new().suffix(".yaml").tempfile().unwrap();
    std::fs::write(bad.path(), tracker.replacen("  replicas: 2", "  replicaz: 2", 1)).unwrap();
    let (ok, out) = kubernetes_validate(&[bad.path().to_path_buf()]);
    assert!(!ok, "a misspelt field passed: {out}");

    // The ConfigMap's TOML files hold only settings the binaries know, and
    // the Secret only variables they read.
    let config = std::fs::read_to_string(dir.join("configmap.yaml")).unwrap();
    for (file, bin, sub) in [
        ("tracker.toml", "ota-tracker", "serve"),
        ("seeder.toml", "ota-seeder", "seed"),
    ] {
        let body: String = config
            .split(&format!("  {file}: |\n"))
            .nth(1)
            .unwrap_or_else(|| panic!("no {file} in the ConfigMap"))
            .lines()
            .take_while(|l| l.starts_with("    "))
            .map(|l| format!("{}\n", &l[4..]))
            .collect();
        let table: toml::Table = toml::from_str(&body).unwrap_or_else(|e| panic!("{file}: {e}"));
        let help = help(bin, sub);
        for key in table.keys() {
            let flag = format!("--{}", key.replace('_', "-"));
            assert!(
                help.contains(&format!("{flag} ")) || help.contains(&format!("{flag}\n")),
                "{file}: {bin} {sub} has no setting {key}"
            );
        }
    }
    let secret = std::fs::read_to_string(dir.join("secret.yaml")).unwrap();
    let known: Vec<String> = IMAGES
        .iter()
        .take(2)
        .flat_map(|(bin, sub)| env_names(bin, sub))
        .collect();
    let data = secret.split("stringData:").nth(1).expect("stringData");
    for name in data
        .lines()
        .filter_map(|l| l.trim().split_once(':').map(|(k, _)| k.to_string()))
    {
        if name.starts_with("AWS_") {
            continue; // the AWS SDK's own credential chain
        }
        assert!(
            known.contains(&name),
            "secret {name} is read by neither the tracker nor the seeder"
        );
    }
}
