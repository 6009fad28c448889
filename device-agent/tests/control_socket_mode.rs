//! The control socket is mode 0600 from the moment it exists: it is bound
//! under a 0177 umask, not chmod-ed afterwards (no window in which another
//! local user could connect), whatever the process umask.

use ota_device_agent::control_socket::bind_private;

#[tokio::test]
async fn the_control_socket_is_0600_from_bind_even_under_umask_0() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agent.sock");
    // SAFETY: umask(2) only swaps the process's file-mode mask.
    let before = unsafe { libc::umask(0) };
    let listener = bind_private(&path).unwrap();
    // SAFETY: as above.
    let during = unsafe { libc::umask(before) };
    assert_eq!(during, 0, "the process umask is restored after the bind");
    // Nothing but bind ran: the mode is the one the socket was created with.
    assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    drop(listener);
}
