//! One configuration mechanism for every binary: typed clap structs read
//! flags and environment variables (`OTA_*`, named in `--help`), and a TOML
//! file (`--config FILE` or the binary's `*_CONFIG` variable) whose keys are
//! the long flag names with `_`. Precedence: flag > file > environment >
//! default.

/// Turns a TOML file of settings into command-line flags placed before the
/// real ones, so that one typed clap struct reads flags, environment and file.
///
/// `args` is the process's argument list. The file is the value of
/// `--config PATH` in `args`, or else of the environment variable `env_var`.
/// Each `key = value` becomes `--key value` (`_` in keys become `-`;
/// `true` becomes a bare `--key`, `false` is skipped; arrays repeat the flag).
/// The command must set `args_override_self`, so a real flag given later wins
/// over the file; an environment variable is used only when neither gives the
/// setting. Precedence: flag > file > environment > default.
///
/// Errors: an unreadable file, invalid TOML, or a nested table.
pub fn expand_config_file(args: Vec<String>, env_var: &str) -> anyhow::Result<Vec<String>> {
    let mut path = std::env::var(env_var).ok();
    let mut rest = Vec::with_capacity(args.len());
    let mut it = args.into_iter();
    let argv0 = it.next().unwrap_or_default();
    let mut prefix_len = 0;
    while let Some(a) = it.next() {
        if a == "--config" {
            path = it.next();
        } else if let Some(p) = a.strip_prefix("--config=") {
            path = Some(p.to_string());
        } else {
            rest.push(a);
        }
    }
    // Subcommand names (leading words without dashes) stay in front.
    while prefix_len < rest.len() && !rest[prefix_len].starts_with('-') {
        prefix_len += 1;
    }
    let mut out = vec![argv0];
    out.extend(rest.drain(..prefix_len));
    if let Some(p) = path {
        let text = std::fs::read_to_string(&p).map_err(|e| anyhow::anyhow!("cannot read config file {p}: {e}"))?;
        let table: toml::Table = text.parse().map_err(|e| anyhow::anyhow!("config file {p}: {e}"))?;
        for (k, v) in table {
            let flag = format!("--{}", k.replace('_', "-"));
            let values = match v {
                toml::Value::Array(a) => a,
                v => vec![v],
            };
            for v in values {
                match v {
                    toml::Value::Boolean(true) => out.push(flag.clone()),
                    toml::Value::Boolean(false) => {}
                    toml::Value::String(s) => out.extend([flag.clone(), s]),
                    toml::Value::Integer(i) => out.extend([flag.clone(), i.to_string()]),
                    toml::Value::Float(f) => out.extend([flag.clone(), f.to_string()]),
                    other => anyhow::bail!("config file {p}: {k} = {other} is not a plain value"),
                }
            }
        }
    }
    out.extend(rest);
    Ok(out)
}

#[cfg(test)]
mod file_tests {
    use super::*;

    #[test]
    fn config_file_becomes_leading_flags() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        std::fs::write(
            &p,
            "cache_bytes = 10\nverbose = true\nquiet = false\npeer = [\"a\", \"b\"]\n",
        )
        .unwrap();
        let args: Vec<String> = ["prog", "seed", "--config", p.to_str().unwrap(), "--cache-bytes", "20"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let out = expand_config_file(args, "OTA_TEST_NO_SUCH_VAR").unwrap();
        assert_eq!(
            out,
            [
                "prog",
                "seed",
                "--cache-bytes",
                "10",
                "--peer",
                "a",
                "--peer",
                "b",
                "--verbose",
                "--cache-bytes",
                "20"
            ]
        );
        std::fs::write(&p, "[nested]\nx = 1\n").unwrap();
        let args = vec!["prog".to_string(), format!("--config={}", p.display())];
        assert!(expand_config_file(args, "OTA_TEST_NO_SUCH_VAR").is_err());
    }
}

/// A setting that is on or off: `on`/`off` on the command line, in the
/// environment and in TOML files (a string, so that a default of `on` can
/// be turned off from a file, which a TOML `false` for a plain flag cannot).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Switch {
    /// Turned on.
    On,
    /// Turned off.
    Off,
}
