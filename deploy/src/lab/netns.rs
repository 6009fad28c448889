//! Running code inside a lab namespace from this process: a thread enters
//! the namespace with `setns(2)` and whatever it creates there (sockets)
//! stays in that namespace, usable from any thread afterwards.

use std::os::fd::{AsRawFd, RawFd};

use anyhow::Context;

/// Opens network namespace `ns`: the file `/run/netns/NS` that `ip netns
/// add` creates, the handle `setns(2)` takes.
///
/// Errors: the namespace does not exist.
pub fn open(ns: &str) -> anyhow::Result<std::fs::File> {
    let path = format!("/run/netns/{ns}");
    std::fs::File::open(&path).with_context(|| format!("cannot open network namespace {path}"))
}

/// What a child process runs between `fork` and `exec` (for the
/// `pre_exec` of std's or tokio's `Command`): the parent-death signal
/// SIGKILL, so it dies with its starter, and, given the descriptor of an
/// [`open`]ed namespace, `setns(2)` into it, so the program and every socket
/// it opens live there. The caller keeps the namespace file open until the
/// spawn returns.
pub fn child_setup(netns: Option<RawFd>) -> impl FnMut() -> std::io::Result<()> + Send + Sync + 'static {
    move || {
        // SAFETY (for the caller's `pre_exec`): prctl(2) and setns(2) are
        // async-signal-safe and change only the child itself.
        unsafe {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            if let Some(fd) = netns {
                if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
        }
        Ok(())
    }
}

/// Moves the calling thread into network namespace `ns` (the file
/// `/run/netns/NS` that `ip netns add` creates).
///
/// Errors: the namespace does not exist or `setns` fails (not root).
pub fn enter(ns: &str) -> anyhow::Result<()> {
    let path = format!("/run/netns/{ns}");
    let file = open(ns)?;
    // SAFETY: setns(2) on a file descriptor we own; it only changes the
    // calling thread's network namespace.
    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error()).with_context(|| format!("setns({path}) failed (needs root)"));
    }
    Ok(())
}

/// Runs `f` on a new thread inside network namespace `ns` and returns its
/// result; sockets `f` creates belong to `ns` for their whole life, e.g.
/// `in_netns(&host.ns, || UdpSocket::bind("0.0.0.0:0"))`.
///
/// Errors: the namespace cannot be entered, or `f` panicked.
pub fn in_netns<T, F>(ns: &str, f: F) -> anyhow::Result<T>
where
    T: Send,
    F: FnOnce() -> T + Send,
{
    std::thread::scope(|s| {
        s.spawn(|| -> anyhow::Result<T> {
            enter(ns)?;
            Ok(f())
        })
        .join()
        .map_err(|_| anyhow::anyhow!("the thread running in namespace {ns} panicked"))?
    })
}

/// Sets a sysctl of namespace `ns` under `/proc/sys/net/`, e.g.
/// `("ipv4/ip_forward", "1")`.
///
/// Errors: the namespace cannot be entered or the file cannot be written.
pub(crate) fn sysctl_net(ns: &str, key: &str, value: &str) -> anyhow::Result<()> {
    let path = format!("/proc/sys/net/{key}");
    in_netns(ns, || std::fs::write(&path, value))?.with_context(|| format!("cannot set {path} in {ns}"))
}
