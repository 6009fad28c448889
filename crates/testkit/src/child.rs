//! Child processes of interoperability tests (other BitTorrent clients):
//! a guard that kills the child by PID when dropped, also when an assertion
//! fails, and [`require`], which fails a test whose program is not
//! installed (these tests never skip).

use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::Duration;

/// Kills (SIGKILL, by PID) the child when dropped, unless it has exited.
/// [`ChildGuard::spawn`] also sets `kill_on_drop(true)`; a child spawned
/// elsewhere should have it too.
pub struct ChildGuard {
    /// The child process.
    pub child: tokio::process::Child,
    /// What it is, for messages (`"qbittorrent-nox"`).
    pub what: &'static str,
    /// The file its stderr goes to, shown by [`Self::stderr_text`].
    pub stderr: PathBuf,
}

impl ChildGuard {
    /// Guards `child`, whose stderr is written to the file `stderr`.
    pub fn new(child: tokio::process::Child, what: &'static str, stderr: PathBuf) -> ChildGuard {
        ChildGuard { child, what, stderr }
    }

    /// Spawns `cmd` with its stderr written to the file `stderr` and
    /// `kill_on_drop(true)`, and guards it; stdin and stdout are as `cmd`
    /// sets them.
    ///
    /// Panics when the file cannot be created or the program not started
    /// (tests only), naming `what`.
    pub fn spawn(cmd: &mut tokio::process::Command, what: &'static str, stderr: PathBuf) -> ChildGuard {
        let file = std::fs::File::create(&stderr).unwrap_or_else(|e| panic!("cannot create {}: {e}", stderr.display()));
        let child = cmd
            .stderr(file)
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
        ChildGuard::new(child, what, stderr)
    }

    /// The last 30 lines of its stderr file.
    pub fn stderr_text(&self) -> String {
        let s = std::fs::read_to_string(&self.stderr).unwrap_or_default();
        tail(&s, 30)
    }

    /// Waits at most `limit` for the child to exit by itself.
    pub async fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        tokio::time::timeout(limit, self.child.wait())
            .await
            .ok()
            .and_then(|r| r.ok())
    }

    /// Its exit status if it has exited, without waiting.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Kills it (SIGKILL, by PID) unless it has exited, and reaps it
    /// (waiting at most 5 s).
    pub async fn kill(&mut self) {
        if self.exited().is_none() {
            let _ = self.child.start_kill();
        }
        let _ = self.wait_exit(Duration::from_secs(5)).await;
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            eprintln!("killing {} (pid {:?})", self.what, self.child.id());
            let _ = self.child.start_kill();
        }
    }
}

/// The last `n` lines of `text`.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Fails with the install line when `path` is not there: `package` is the
/// Debian package that has it (`deploy/test-deps.sh` installs them all).
pub fn require(path: &str, package: &str) {
    assert!(
        Path::new(path).exists(),
        "{path} not found: install it with `apt-get install -y {package}` \
         (or `bash deploy/test-deps.sh`; this test does not skip)"
    );
}
