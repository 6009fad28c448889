//! A recording pass-through in front of an HTTP server on loopback (the
//! tracker): a test hands a client the tap's URL and reads back exactly
//! which requests the client sent (`GET /announce?…`, `GET /scrape?…`),
//! which a counter shared by every test in the process cannot tell.
//!
//! One request per connection: the tap reads the request head, forwards it
//! with `Connection: close` instead of any `Connection` header the client
//! sent, and copies the answer back until the server closes.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Largest request head read.
const MAX_HEAD: usize = 16 * 1024;

/// How long one exchange (request head, connect, answer) may take.
const EXCHANGE_LIMIT: Duration = Duration::from_secs(10);

/// A listening tap; it stops when dropped.
pub struct HttpTap {
    addr: SocketAddr,
    requests: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for HttpTap {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl HttpTap {
    /// Listens on a free port of 127.0.0.1 and forwards to `upstream`.
    ///
    /// Panics when no port can be bound (tests only).
    pub async fn start(upstream: SocketAddr) -> HttpTap {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the tap");
        let addr = listener.local_addr().expect("tap address");
        let requests = Arc::new(Mutex::new(Vec::new()));
        let seen = requests.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let seen = seen.clone();
                tokio::spawn(async move {
                    let _ = tokio::time::timeout(EXCHANGE_LIMIT, relay(client, upstream, seen)).await;
                });
            }
        });
        HttpTap { addr, requests, task }
    }

    /// Its base URL, `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The request lines received so far (`GET /scrape?info_hash=… HTTP/1.1`),
    /// in arrival order.
    pub fn requests(&self) -> Vec<String> {
        self.requests.lock().expect("tap log").clone()
    }

    /// The targets (path and query) of the requests so far whose path is
    /// `path` (e.g. `/scrape`).
    pub fn targets(&self, path: &str) -> Vec<String> {
        self.requests()
            .iter()
            .filter_map(|line| line.split(' ').nth(1))
            .filter(|target| target.split('?').next() == Some(path))
            .map(str::to_string)
            .collect()
    }
}

/// One exchange: read the head, record its first line, forward it (with
/// `Connection: close`), copy the answer back.
async fn relay(
    mut client: tokio::net::TcpStream,
    upstream: SocketAddr,
    seen: Arc<Mutex<Vec<String>>>,
) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(1024);
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if buf.len() > MAX_HEAD {
            return Ok(());
        }
        let mut chunk = [0u8; 2048];
        let n = client.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n").filter(|l| !l.is_empty());
    let request_line = lines.next().unwrap_or_default().to_string();
    seen.lock().expect("tap log").push(request_line.clone());
    let mut forwarded = format!("{request_line}\r\n");
    for line in lines.filter(|l| !l.to_ascii_lowercase().starts_with("connection:")) {
        forwarded.push_str(line);
        forwarded.push_str("\r\n");
    }
    forwarded.push_str("Connection: close\r\n\r\n");
    let mut server = tokio::net::TcpStream::connect(upstream).await?;
    server.write_all(forwarded.as_bytes()).await?;
    server.write_all(&buf[head_end..]).await?;
    tokio::io::copy(&mut server, &mut client).await?;
    client.shutdown().await
}
