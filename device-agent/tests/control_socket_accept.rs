//! A failing `accept` on the control socket (out of file descriptors, with
//! a connection waiting in the backlog, so every accept fails at once) is
//! retried with backoff: the daemon does not burn a core, and answers again
//! once descriptors are free.

use std::sync::Arc;
use std::time::Duration;

use ota_device_agent::control_socket::{serve, ControlHandler, Request, Response};

struct Fine;
impl ControlHandler for Fine {
    fn handle(&self, _: Request) -> Response {
        Response::done("fine")
    }
}

fn cpu_time() -> Duration {
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage writes into the struct we own.
    assert_eq!(unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) }, 0);
    let tv = |t: libc::timeval| Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64);
    tv(u.ru_utime) + tv(u.ru_stime)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_accept_error_backs_off_instead_of_spinning() {
    use std::io::{BufRead, Write};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agent.sock");
    let task = serve(&path, Arc::new(Fine)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;

    // Use up every file descriptor but one, then connect with it: the
    // connection waits in the backlog and each accept fails with EMFILE.
    let mut fill = Vec::new();
    while let Ok(f) = std::fs::File::open("/dev/null") {
        fill.push(f);
    }
    fill.pop();
    let mut client = std::os::unix::net::UnixStream::connect(&path).expect("one descriptor left for the client");
    let t0 = cpu_time();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let spent = cpu_time() - t0;
    // Free the descriptors: the waiting connection is answered.
    drop(fill);
    assert!(
        spent < Duration::from_millis(600),
        "accept errors spun: {spent:?} of CPU in 2 s"
    );
    client.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    client.write_all(b"{\"cmd\":\"status\"}\n").unwrap();
    let mut line = String::new();
    std::io::BufReader::new(&client).read_line(&mut line).unwrap();
    assert!(line.contains("fine"), "{line}");
    task.abort();
}
