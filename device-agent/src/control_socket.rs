//! The local control socket between the daemon (`ota-device-agent run`)
//! and the CLI (`status`, `pause`, `resume`, `cancel`, `history`,
//! `installed RELEASE`).
//!
//! Transport: a Unix domain stream socket, by default `STATE_DIR/agent.sock`,
//! mode 0600 (only the agent's user may talk to it).
//!
//! Protocol (JSON lines): the client connects, writes ONE request as a JSON
//! object on one line ending in `\n`, reads ONE response line, and the
//! connection closes. Requests ([`Request`]):
//!
//! ```text
//! {"cmd":"status"}
//! {"cmd":"pause"}            {"cmd":"pause","release":"name@1.2"}
//! {"cmd":"resume"}           {"cmd":"resume","release":"<40 hex>"}
//! {"cmd":"cancel"}           {"cmd":"cancel","release":"name@1.2"}
//! {"cmd":"history"}
//! {"cmd":"installed","release":"name@1.2"}
//! ```
//!
//! Responses ([`Response`]): `{"ok":true,"message":…,"releases":[…],"history":[…]}`
//! or `{"ok":false,"error":"text"}`. A request line is at most
//! [`MAX_REQUEST_BYTES`] bytes.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

use crate::download_state::{ActiveRelease, HistoryEntry};

/// Longest request line accepted, bytes.
pub const MAX_REQUEST_BYTES: u64 = 64 * 1024;

/// A CLI request. `release` is an info hash or `name@version`; when absent,
/// pause/resume/cancel apply to every active download.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "kebab-case")]
pub enum Request {
    /// Active releases with progress, speed and bytes per source.
    Status,
    /// Pause downloading (reason: user).
    Pause {
        /// Which release; all when absent.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        release: Option<String>,
    },
    /// Lift the user's pause.
    Resume {
        /// Which release; all when absent.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        release: Option<String>,
    },
    /// Stop a download and delete its partial data.
    Cancel {
        /// Which release; all unfinished when absent.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        release: Option<String>,
    },
    /// Finished, failed, cancelled and rejected releases.
    History,
    /// The device's own installer installed this release.
    Installed {
        /// Which release.
        release: String,
    },
}

/// The daemon's answer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Response {
    /// Whether the request was carried out.
    pub ok: bool,
    /// Why not, when `ok` is false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Human-readable result of a command.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// For `status`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub releases: Option<Vec<ActiveRelease>>,
    /// For `history`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub history: Option<Vec<HistoryEntry>>,
    /// For `status`: the direct paths (LAN address, UPnP mapping, NAT).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paths: Option<crate::direct_paths::PathsStatus>,
}

impl Response {
    /// `{"ok":true,"message":…}`.
    pub fn done(message: impl Into<String>) -> Self {
        Response {
            ok: true,
            message: Some(message.into()),
            ..Default::default()
        }
    }

    /// `{"ok":false,"error":…}`.
    pub fn failed(error: impl Into<String>) -> Self {
        Response {
            ok: false,
            error: Some(error.into()),
            ..Default::default()
        }
    }
}

/// What answers requests (the agent).
pub trait ControlHandler: Send + Sync + 'static {
    /// Carries out one request.
    fn handle(&self, request: Request) -> Response;
}

/// The default socket path: `STATE_DIR/agent.sock`.
pub fn default_socket_path(state_dir: &Path) -> PathBuf {
    state_dir.join("agent.sock")
}

/// Binds the socket at `path` (mode 0600 from the start, [`bind_private`])
/// and answers requests with
/// `handler` until the returned task is aborted. A stale socket file left
/// by a killed daemon is replaced; a live one is an error. A failing
/// `accept` (e.g. out of file descriptors) is retried after an
/// [`AcceptBackoff`] delay, never in a busy loop.
///
/// Errors: another daemon answers on `path`, or the socket cannot be bound.
pub async fn serve(path: &Path, handler: Arc<dyn ControlHandler>) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    if path.exists() {
        if tokio::net::UnixStream::connect(path).await.is_ok() {
            anyhow::bail!("another agent is already running on {}", path.display());
        }
        std::fs::remove_file(path).with_context(|| format!("cannot remove the stale socket {}", path.display()))?;
    }
    let listener = bind_private(path)?;
    tracing::info!(socket = %path.display(), "control socket listening");
    Ok(tokio::spawn(async move {
        let mut backoff = AcceptBackoff::default();
        loop {
            let stream = match listener.accept().await {
                Ok((stream, _)) => {
                    backoff.reset();
                    stream
                }
                Err(e) => {
                    // EMFILE and friends: the pending connection stays in
                    // the backlog and accept fails again at once, so wait.
                    let wait = backoff.next_delay();
                    tracing::warn!(error = %e, wait_ms = wait.as_millis() as u64, "control socket accept failed");
                    tokio::time::sleep(wait).await;
                    continue;
                }
            };
            let handler = handler.clone();
            tokio::spawn(async move {
                if let Err(e) = answer(stream, handler).await {
                    tracing::debug!(error = %format!("{e:#}"), "control connection failed");
                }
            });
        }
    }))
}

/// Binds a Unix socket at `path` that is mode 0600 from the moment it
/// exists: the process umask is 0177 around `bind(2)` (and restored after),
/// so no other user can connect in a window before a `chmod`.
///
/// Errors: the socket cannot be bound (path taken, folder missing, …).
pub fn bind_private(path: &Path) -> anyhow::Result<tokio::net::UnixListener> {
    // SAFETY: umask(2) only swaps the process's file-mode mask; it cannot
    // fail and touches no memory. The mask is process-wide: files created
    // by other threads during this call get 0600 at most, never more.
    let old = unsafe { libc::umask(0o177) };
    let bound = tokio::net::UnixListener::bind(path);
    // SAFETY: as above, restoring the previous mask.
    unsafe { libc::umask(old) };
    bound.with_context(|| format!("cannot bind {}", path.display()))
}

/// Delay between failed `accept` calls: 10 ms doubling to 1 s, reset by a
/// successful accept.
#[derive(Debug, Clone)]
pub struct AcceptBackoff {
    next: std::time::Duration,
}

impl AcceptBackoff {
    /// First delay.
    pub const MIN: std::time::Duration = std::time::Duration::from_millis(10);
    /// Longest delay.
    pub const MAX: std::time::Duration = std::time::Duration::from_secs(1);

    /// The delay to wait after this failure (each one doubles the next).
    pub fn next_delay(&mut self) -> std::time::Duration {
        let d = self.next;
        self.next = (self.next * 2).min(Self::MAX);
        d
    }

    /// Back to [`Self::MIN`] (after a successful accept).
    pub fn reset(&mut self) {
        self.next = Self::MIN;
    }
}

impl Default for AcceptBackoff {
    fn default() -> Self {
        AcceptBackoff { next: Self::MIN }
    }
}

async fn answer(stream: tokio::net::UnixStream, handler: Arc<dyn ControlHandler>) -> anyhow::Result<()> {
    let (r, mut w) = stream.into_split();
    let mut line = String::new();
    BufReader::new(r.take(MAX_REQUEST_BYTES)).read_line(&mut line).await?;
    let response = match serde_json::from_str::<Request>(line.trim()) {
        Ok(req) => handler.handle(req),
        Err(e) => Response::failed(format!("bad request: {e}")),
    };
    let mut out = serde_json::to_vec(&response)?;
    out.push(b'\n');
    w.write_all(&out).await?;
    w.shutdown().await?;
    Ok(())
}

/// Sends one request to the daemon at `path` and returns its response.
///
/// Errors: no daemon listens there (the message says to start
/// `ota-device-agent run`), or it answered something that is not a response.
pub async fn request(path: &Path, req: &Request) -> anyhow::Result<Response> {
    let stream = tokio::net::UnixStream::connect(path).await.with_context(|| {
        format!(
            "cannot reach the agent on {} (is `ota-device-agent run` running with this --state-dir / --control-socket?)",
            path.display()
        )
    })?;
    let (r, mut w) = stream.into_split();
    let mut out = serde_json::to_vec(req)?;
    out.push(b'\n');
    w.write_all(&out).await?;
    let mut line = String::new();
    BufReader::new(r)
        .read_line(&mut line)
        .await
        .context("the agent closed the connection")?;
    serde_json::from_str(line.trim()).with_context(|| format!("the agent answered something unexpected: {line:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Echo;
    impl ControlHandler for Echo {
        fn handle(&self, request: Request) -> Response {
            match request {
                Request::Installed { release } => Response::done(format!("installed {release}")),
                Request::Pause { release: None } => Response::done("all paused"),
                other => Response::failed(format!("unexpected {other:?}")),
            }
        }
    }

    #[test]
    fn requests_are_tagged_json_lines() {
        assert_eq!(serde_json::to_string(&Request::Status).unwrap(), r#"{"cmd":"status"}"#);
        assert_eq!(
            serde_json::to_string(&Request::Pause { release: None }).unwrap(),
            r#"{"cmd":"pause"}"#
        );
        let r: Request = serde_json::from_str(r#"{"cmd":"cancel","release":"p@1"}"#).unwrap();
        assert_eq!(
            r,
            Request::Cancel {
                release: Some("p@1".into())
            }
        );
        assert!(serde_json::from_str::<Request>(r#"{"cmd":"reboot"}"#).is_err());
    }

    #[tokio::test]
    async fn a_request_round_trips_over_a_0600_socket_and_a_missing_daemon_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = default_socket_path(dir.path());
        let missing = request(&path, &Request::Status).await.unwrap_err();
        assert!(
            format!("{missing:#}").contains("is `ota-device-agent run` running"),
            "{missing:#}"
        );
        // A stale socket file (as after kill -9) is replaced.
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        let task = serve(&path, Arc::new(Echo)).await.unwrap();
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        }
        let r = request(&path, &Request::Installed { release: "p@1".into() })
            .await
            .unwrap();
        assert_eq!(r, Response::done("installed p@1"));
        let r = request(&path, &Request::Pause { release: None }).await.unwrap();
        assert!(r.ok);
        let r = request(&path, &Request::History).await.unwrap();
        assert!(!r.ok && r.error.unwrap().contains("unexpected History"));
        // A second daemon on the same socket is refused.
        assert!(serve(&path, Arc::new(Echo))
            .await
            .unwrap_err()
            .to_string()
            .contains("already running"));
        // Garbage gets a clear error, not a hang.
        let mut s = tokio::net::UnixStream::connect(&path).await.unwrap();
        s.write_all(b"hello\n").await.unwrap();
        let mut back = String::new();
        BufReader::new(s).read_line(&mut back).await.unwrap();
        assert!(back.contains("bad request"), "{back}");
        task.abort();
    }
}
