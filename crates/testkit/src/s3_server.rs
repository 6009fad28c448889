//! The embedded S3-protocol server: the `s3s-fs` crate (S3 API over a local
//! folder, one sub-folder per bucket) served in-process with hyper.
//!
//! It speaks the real S3 protocol with SigV4 authentication, so the seeder
//! talks to it through aws-sdk-s3 exactly as it would talk to AWS.

use std::net::SocketAddr;
use std::path::Path;

use anyhow::Context;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use s3s::auth::SimpleAuth;
use s3s::service::S3ServiceBuilder;

/// A running embedded S3 server; stops when dropped (open connections
/// are cut too, so a test can stop and restart it on the same port to play
/// an S3 outage).
pub struct S3Server {
    /// Where it listens.
    pub addr: SocketAddr,
    access_key: String,
    secret_key: String,
    task: tokio::task::JoinHandle<()>,
}

impl S3Server {
    /// Serves the folder `root` on `listener` with one access key / secret
    /// key pair. Buckets are sub-folders of `root`.
    ///
    /// Errors: `root` is not a usable folder.
    pub fn start(
        root: &Path,
        listener: tokio::net::TcpListener,
        access_key: &str,
        secret_key: &str,
    ) -> anyhow::Result<Self> {
        std::fs::create_dir_all(root).with_context(|| format!("cannot create {}", root.display()))?;
        let fs = s3s_fs::FileSystem::new(root).map_err(|e| anyhow::anyhow!("s3s-fs: {e:?}"))?;
        let mut builder = S3ServiceBuilder::new(fs);
        builder.set_auth(SimpleAuth::from_single(access_key, secret_key));
        let service = builder.build();
        let addr = listener.local_addr()?;
        let task = tokio::spawn(async move {
            let http = ConnBuilder::new(TokioExecutor::new());
            // Connections live in this set, so stopping the server (aborting
            // this task) also cuts every open connection, as a crash would.
            let mut conns = tokio::task::JoinSet::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        let Ok((socket, _)) = accepted else { continue };
                        // Without it every ranged GET waits ~40 ms on Nagle
                        // plus the client's delayed ACK.
                        let _ = socket.set_nodelay(true);
                        let conn = http.serve_connection(TokioIo::new(socket), service.clone()).into_owned();
                        conns.spawn(async move {
                            let _ = conn.await;
                        });
                    }
                    Some(_) = conns.join_next(), if !conns.is_empty() => {}
                }
            }
        });
        Ok(S3Server {
            addr,
            access_key: access_key.into(),
            secret_key: secret_key.into(),
            task,
        })
    }

    /// Environment for an aws-sdk-s3 client of this server: the static
    /// credentials, and IMDS disabled so the credential chain never leaves
    /// the machine.
    pub fn client_env(&self) -> Vec<(String, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID".into(), self.access_key.clone()),
            ("AWS_SECRET_ACCESS_KEY".into(), self.secret_key.clone()),
            ("AWS_EC2_METADATA_DISABLED".into(), "true".into()),
            ("OTA_S3_ENDPOINT".into(), self.endpoint()),
            ("OTA_S3_PATH_STYLE".into(), "true".into()),
        ]
    }

    /// The endpoint URL for aws-sdk-s3 (`http://ip:port`).
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}
