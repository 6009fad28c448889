//! The Ctrl-C guard: the prefixes and PIDs of every live [`Lab`](super::Lab)
//! of this process, and a watcher that removes them when SIGINT, SIGTERM or
//! SIGHUP arrives, then lets the signal end the process as it would have.
//!
//! The signal handler itself only writes the signal number to a pipe (the
//! one async-signal-safe thing it needs); a watcher thread does the cleanup.

use std::collections::BTreeMap;
use std::sync::{Mutex, Once};

/// Live labs: prefix → PIDs of the processes they started.
static LIVE: Mutex<BTreeMap<String, Vec<u32>>> = Mutex::new(BTreeMap::new());
static INSTALL: Once = Once::new();
/// Write end of the self-pipe; -1 until installed.
static PIPE_WR: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(-1);

const SIGNALS: [libc::c_int; 3] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP];

fn live() -> std::sync::MutexGuard<'static, BTreeMap<String, Vec<u32>>> {
    LIVE.lock().unwrap_or_else(|e| e.into_inner())
}

/// Records a new lab (installing the guard the first time).
pub(crate) fn register(prefix: &str) {
    install();
    live().insert(prefix.to_string(), Vec::new());
}

/// Records a process a lab started.
pub(crate) fn add_pid(prefix: &str, pid: u32) {
    if let Some(pids) = live().get_mut(prefix) {
        pids.push(pid);
    }
}

/// Forgets a lab (it was cleaned up, or is kept on purpose).
pub(crate) fn unregister(prefix: &str) {
    live().remove(prefix);
}

extern "C" fn on_signal(sig: libc::c_int) {
    let fd = PIPE_WR.load(std::sync::atomic::Ordering::Relaxed);
    if fd >= 0 {
        let byte = sig as u8;
        // SAFETY: write(2) is async-signal-safe; one byte to our own pipe.
        unsafe {
            libc::write(fd, (&byte as *const u8).cast(), 1);
        }
    }
}

fn install() {
    INSTALL.call_once(|| {
        let mut fds = [0 as libc::c_int; 2];
        // SAFETY: pipe2(2) fills the two descriptors of the array we pass.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
            tracing::warn!("lab: cannot create the signal pipe; Ctrl-C will not clean up");
            return;
        }
        PIPE_WR.store(fds[1], std::sync::atomic::Ordering::Relaxed);
        let read_fd = fds[0];
        std::thread::Builder::new()
            .name("lab-signal-guard".into())
            .spawn(move || watch(read_fd))
            .ok();
        for sig in SIGNALS {
            // SAFETY: installs a handler that only calls write(2); the
            // sigaction struct is zeroed then filled as the man page says.
            unsafe {
                let mut action: libc::sigaction = std::mem::zeroed();
                action.sa_sigaction = on_signal as *const () as libc::sighandler_t;
                action.sa_flags = libc::SA_RESTART;
                libc::sigemptyset(&mut action.sa_mask);
                libc::sigaction(sig, &action, std::ptr::null_mut());
            }
        }
    });
}

fn watch(read_fd: libc::c_int) {
    let mut byte = 0u8;
    loop {
        // SAFETY: read(2) of one byte into a local from our own pipe.
        let n = unsafe { libc::read(read_fd, (&mut byte as *mut u8).cast(), 1) };
        if n == 1 {
            break;
        }
        if n == 0 {
            return;
        }
    }
    let sig = libc::c_int::from(byte);
    let labs = std::mem::take(&mut *live());
    for (prefix, pids) in labs {
        eprintln!("lab: signal {sig}: removing {prefix}*");
        super::stop_pids(&pids);
        if let Err(e) = super::Lab::cleanup_stale(&prefix) {
            eprintln!("lab: cleanup of {prefix}* failed: {e:#}");
        }
    }
    // SAFETY: restore the default action and re-raise, so the process ends
    // the way the signal would have ended it without the guard.
    unsafe {
        libc::signal(sig, libc::SIG_DFL);
        libc::raise(sig);
    }
}
