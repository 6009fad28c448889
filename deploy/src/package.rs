//! The default update package: Debian's `chromium` .deb (about 81 MB), a
//! real package of the size OTA updates have, fetched with
//! `apt-get download` into a cache folder when missing.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context;

fn cached_deb(cache_dir: &Path) -> Option<PathBuf> {
    let mut debs: Vec<PathBuf> = std::fs::read_dir(cache_dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("chromium_") && n.ends_with(".deb"))
        })
        .collect();
    debs.sort();
    debs.pop()
}

/// The chromium .deb in `cache_dir`, downloading it with `apt-get download
/// chromium` (after `apt-get update` if the first try fails) when missing.
///
/// Errors: apt-get is missing or cannot fetch the package; the message says
/// to pass `--package PATH` instead.
pub fn default_package(cache_dir: &Path) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(cache_dir).with_context(|| format!("cannot create {}", cache_dir.display()))?;
    if let Some(p) = cached_deb(cache_dir) {
        return Ok(p);
    }
    let download = || {
        Command::new("apt-get")
            .args(["download", "chromium"])
            .current_dir(cache_dir)
            .status()
    };
    tracing::info!(dir = %cache_dir.display(), "fetching the chromium .deb with apt-get download");
    let ok = download().map(|s| s.success()).unwrap_or(false);
    if !ok {
        let _ = Command::new("apt-get").arg("update").status();
        let status = download().context("cannot run apt-get; pass --package PATH")?;
        if !status.success() {
            anyhow::bail!("apt-get download chromium failed ({status}); pass --package PATH");
        }
    }
    cached_deb(cache_dir).context("apt-get reported success but no chromium_*.deb appeared; pass --package PATH")
}
