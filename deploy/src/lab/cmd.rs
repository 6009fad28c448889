//! The external commands the lab runs (`ip`, `nft`, `tc`; `vde_switch` and
//! `wirefilter` as lab processes), each bounded by a timeout, and where to
//! find them.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::Context;

/// How long one `ip` or `nft` command may take before it is killed.
pub(crate) const COMMAND_TIMEOUT: Duration = Duration::from_secs(10);

/// A program the lab needs and the Debian package that ships it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Tool {
    pub(crate) program: &'static str,
    pub(crate) package: &'static str,
}

/// `ip` (network namespaces, links, addresses, routes).
pub(crate) const IP: Tool = Tool {
    program: "ip",
    package: "iproute2",
};
/// `nft` (the routers' NAT and filter rules).
pub(crate) const NFT: Tool = Tool {
    program: "nft",
    package: "nftables",
};
/// `tc` (tbf rate limits on the lab's links, tc-tbf(8)).
pub(crate) const TC: Tool = Tool {
    program: "tc",
    package: "iproute2",
};
/// `vde_switch` (a VDE switch, one per side of a link with delay or loss,
/// attached to a tap with `--tap`; the same package has `vde_plug2tap`,
/// which the lab does not need).
pub(crate) const VDE_SWITCH: Tool = Tool {
    program: "vde_switch",
    package: "vde2",
};
/// `wirefilter` (delay and loss between two VDE switches).
pub(crate) const WIREFILTER: Tool = Tool {
    program: "wirefilter",
    package: "vde-wirefilter",
};

impl Tool {
    /// The program's path: `PATH`, then the usual system folders (a test
    /// harness's `PATH` often lacks `/usr/sbin`).
    ///
    /// Errors: not found, naming the Debian package to install.
    pub(crate) fn path(&self) -> anyhow::Result<PathBuf> {
        let path = std::env::var_os("PATH").unwrap_or_default();
        let extra = ["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from);
        std::env::split_paths(&path)
            .chain(extra)
            .map(|d| d.join(self.program))
            .find(|p| p.is_file())
            .with_context(|| {
                format!(
                    "`{}` not found: install the Debian package {} (deploy/test-deps.sh does)",
                    self.program, self.package
                )
            })
    }
}

/// Runs `tool args...` (writing `stdin` to it when given), waits at most
/// [`COMMAND_TIMEOUT`] and returns its stdout.
///
/// Errors: the tool is missing, cannot start, times out (it is then killed)
/// or exits unsuccessfully (its stderr is in the error).
pub(crate) fn run(tool: Tool, args: &[&str], stdin: Option<&str>) -> anyhow::Result<String> {
    let path = tool.path()?;
    let line = format!("{} {}", tool.program, args.join(" "));
    let mut child = Command::new(&path)
        .args(args)
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start {}", path.display()))?;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        // Rulesets are a few KiB, far below a pipe's buffer: this does not block.
        pipe.write_all(text.as_bytes())
            .with_context(|| format!("cannot write to `{line}`"))?;
    }
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let output = match rx.recv_timeout(COMMAND_TIMEOUT) {
        Ok(out) => out.with_context(|| format!("`{line}` failed"))?,
        Err(_) => {
            // SAFETY: kill(2) on the PID of our own child, not yet reaped (the
            // waiting thread is still blocked in wait).
            unsafe {
                libc::kill(pid as i32, libc::SIGKILL);
            }
            anyhow::bail!("`{line}` did not finish within {COMMAND_TIMEOUT:?}");
        }
    };
    if !output.status.success() {
        anyhow::bail!(
            "`{line}` failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// `ip args...`.
pub(crate) fn ip(args: &[&str]) -> anyhow::Result<String> {
    run(IP, args, None)
}

/// Loads an nftables `ruleset` inside namespace `ns` (`ip netns exec NS nft -f -`).
pub(crate) fn nft_in(ns: &str, ruleset: &str) -> anyhow::Result<()> {
    let nft = NFT.path()?;
    let nft = nft.to_str().context("nft path is not UTF-8")?;
    run(IP, &["netns", "exec", ns, nft, "-f", "-"], Some(ruleset))
        .with_context(|| format!("cannot load the nftables rules of {ns}:\n{ruleset}"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_tool_names_its_debian_package() {
        let tool = Tool {
            program: "ota-lab-no-such-tool",
            package: "some-debian-package",
        };
        let err = format!("{:#}", tool.path().unwrap_err());
        assert!(err.contains("install the Debian package some-debian-package"), "{err}");
        assert!(run(tool, &[], None).is_err());
    }

    #[test]
    fn a_failing_command_reports_its_stderr() {
        let err = format!("{:#}", ip(&["no-such-object"]).unwrap_err());
        assert!(err.contains("`ip no-such-object` failed"), "{err}");
    }
}
