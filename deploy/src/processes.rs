//! Child processes of a run: started with the parent-death signal set, so
//! they die with the runner, and stopped by PID (SIGTERM, then SIGKILL
//! after a grace period) when the run ends or fails.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context;

/// One started process.
pub struct Proc {
    /// Short name for logs, e.g. `agent-3`.
    pub name: String,
    /// Its PID.
    pub pid: u32,
    child: tokio::process::Child,
}

/// All processes of a run; stops them on [`ProcessGroup::stop_all`] or drop.
#[derive(Default)]
pub struct ProcessGroup {
    procs: Vec<Proc>,
}

/// The folder of the running executable, where the sibling binaries
/// (`ota-tracker`, `ota-seeder`, `ota-device-agent`) are built.
pub fn bin_dir() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("cannot find the running executable")?;
    let dir = exe.parent().context("executable has no folder")?;
    // Integration tests run from target/debug/deps.
    if dir.ends_with("deps") {
        return Ok(dir.parent().unwrap_or(dir).to_path_buf());
    }
    Ok(dir.to_path_buf())
}

impl ProcessGroup {
    /// Starts `program` (a sibling binary name) with `args` and `envs`,
    /// writing its stderr to `log`.
    ///
    /// Errors: the binary is missing (build the workspace first) or cannot start.
    pub fn spawn(
        &mut self,
        name: &str,
        program: &str,
        args: &[String],
        envs: &[(String, String)],
        log: &Path,
    ) -> anyhow::Result<u32> {
        self.spawn_in(None, name, program, args, envs, log)
    }

    /// [`ProcessGroup::spawn`] inside network namespace `netns` (a name
    /// under `/run/netns`, e.g. a NAT-lab host): the child enters it with
    /// `setns(2)` before `exec`, so the program and every socket it opens
    /// live there. `None`: the calling thread's namespace.
    ///
    /// Errors: as [`ProcessGroup::spawn`], or the namespace does not exist.
    pub fn spawn_in(
        &mut self,
        netns: Option<&str>,
        name: &str,
        program: &str,
        args: &[String],
        envs: &[(String, String)],
        log: &Path,
    ) -> anyhow::Result<u32> {
        let path = bin_dir()?.join(program);
        if !path.exists() {
            anyhow::bail!(
                "{} not found: build the workspace first (cargo build --release)",
                path.display()
            );
        }
        let log_file = std::fs::File::create(log).with_context(|| format!("cannot create {}", log.display()))?;
        let mut cmd = tokio::process::Command::new(&path);
        cmd.args(args)
            .envs(envs.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log_file))
            .kill_on_drop(true);
        let ns_file = netns.map(crate::lab::netns::open).transpose()?;
        let ns_fd = ns_file.as_ref().map(std::os::fd::AsRawFd::as_raw_fd);
        // SAFETY: `child_setup` makes only async-signal-safe calls (prctl,
        // setns) on the child itself; the namespace file stays open in the
        // parent until after the spawn.
        unsafe {
            cmd.pre_exec(crate::lab::netns::child_setup(ns_fd));
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("cannot start {}", path.display()))?;
        drop(ns_file);
        let pid = child.id().context("child has no PID")?;
        tracing::debug!(name, pid, "started");
        self.procs.push(Proc {
            name: name.to_string(),
            pid,
            child,
        });
        Ok(pid)
    }

    /// PIDs of every process started, running or not.
    pub fn pids(&self) -> Vec<u32> {
        self.procs.iter().map(|p| p.pid).collect()
    }

    /// Fails if any process has exited, naming it and its status.
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        for p in &mut self.procs {
            if let Some(status) = p.child.try_wait()? {
                anyhow::bail!("{} (pid {}) exited: {status}", p.name, p.pid);
            }
        }
        Ok(())
    }

    /// Stops the process started as `name` (SIGTERM, SIGKILL after
    /// `grace`), reaps it and drops it from the group, so that
    /// [`ProcessGroup::check_alive`] no longer counts it. Returns whether
    /// there was one.
    pub async fn stop(&mut self, name: &str, grace: Duration) -> bool {
        let Some(i) = self.procs.iter().position(|p| p.name == name) else {
            return false;
        };
        let mut p = self.procs.remove(i);
        // SAFETY: plain kill(2) on a PID this group started and has not reaped.
        unsafe {
            libc::kill(p.pid as i32, libc::SIGTERM);
        }
        if tokio::time::timeout(grace, p.child.wait()).await.is_err() {
            let _ = p.child.kill().await;
        }
        tracing::info!(name, pid = p.pid, "stopped");
        true
    }

    /// Sends SIGTERM to every process, waits up to `grace`, then SIGKILLs
    /// what is left and reaps everything.
    pub async fn stop_all(&mut self, grace: Duration) {
        for p in &self.procs {
            // SAFETY: plain kill(2) on a PID this group started and has not reaped.
            unsafe {
                libc::kill(p.pid as i32, libc::SIGTERM);
            }
        }
        let deadline = tokio::time::Instant::now() + grace;
        for p in &mut self.procs {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if tokio::time::timeout(left, p.child.wait()).await.is_err() {
                let _ = p.child.kill().await;
            }
        }
        self.procs.clear();
    }
}
