//! A throwaway PostgreSQL cluster for tests (feature `pg`): `initdb` into a temporary
//! directory (as the `postgres` user when the test runs as root, since
//! PostgreSQL refuses to run as root), a server listening on 127.0.0.1 at a
//! free port and on a Unix socket inside that directory, stopped (`pg_ctl
//! stop -m immediate`, then SIGKILL to the PID in `postmaster.pid` if it is
//! still alive) and removed on drop. Needs Debian's `postgresql` package
//! (the binaries under `/usr/lib/postgresql/VERSION/bin`): missing binaries
//! fail the test with a message naming the package.
//!
//! ```no_run
//! # async fn example() {
//! let pg = ota_testkit::pg::PgCluster::start();
//! let url = pg.create_db("reg_a").await; // postgres://postgres@127.0.0.1:PORT/reg_a
//! # }
//! ```

use std::path::{Path, PathBuf};
use std::process::Command;

/// A running throwaway cluster: superuser `postgres`, trust
/// authentication, `fsync=off`; stopped and deleted on drop.
#[derive(Debug)]
pub struct PgCluster {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
}

fn pg_bin() -> PathBuf {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|b| b.join("initdb").exists() && b.join("pg_ctl").exists())
        .collect();
    found.sort();
    found.pop().unwrap_or_else(|| {
        panic!("PostgreSQL binaries not found under /usr/lib/postgresql/*/bin: install Debian's postgresql package (apt-get install -y --no-install-recommends postgresql)")
    })
}

/// Whether this process runs as root (`/proc/self` belongs to the effective user).
fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").map(|m| m.uid() == 0).unwrap_or(false)
}

fn as_postgres(bin: &Path, tool: &str) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(bin.join(tool));
        c
    } else {
        Command::new(bin.join(tool))
    }
}

fn run(mut c: Command, what: &str) {
    let out = c.output().unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed: {}\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl PgCluster {
    /// Creates and starts a cluster on a free loopback port; waits (at most
    /// 60 s) until it accepts connections.
    ///
    /// Panics when the PostgreSQL binaries are missing or `initdb` /
    /// `pg_ctl start` fail (their output is in the message).
    pub fn start() -> PgCluster {
        let bin = pg_bin();
        let dir = tempfile::Builder::new().prefix("ota-pg-").tempdir().expect("temp dir");
        if is_root() {
            run(
                {
                    let mut c = Command::new("chown");
                    c.arg("postgres:").arg(dir.path());
                    c
                },
                "chown",
            );
        }
        let data = dir.path().join("data");
        let mut init = as_postgres(&bin, "initdb");
        init.args(["-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8", "-D"])
            .arg(&data);
        run(init, "initdb");
        let port = crate::net::free_port().expect("a free loopback port");
        let mut start = as_postgres(&bin, "pg_ctl");
        start
            .args(["-D"])
            .arg(&data)
            .args(["-l"])
            .arg(dir.path().join("log"))
            .args(["-w", "-t", "60", "-o"])
            .arg(format!(
                "-h 127.0.0.1 -p {port} -k {} -c fsync=off",
                dir.path().display()
            ))
            .arg("start");
        let cluster = PgCluster { dir, bin, port };
        run(start, "pg_ctl start");
        cluster
    }

    /// The TCP port it listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// URL of database `db` on this cluster:
    /// `postgres://postgres@127.0.0.1:PORT/DB`.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// Creates an empty database `db` (a plain SQL identifier) and returns
    /// its URL.
    ///
    /// Panics when the server cannot be reached or the database exists.
    pub async fn create_db(&self, db: &str) -> String {
        use sqlx::Connection;
        let mut c = sqlx::postgres::PgConnection::connect(&self.url("postgres"))
            .await
            .expect("connect to postgres");
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {db}")))
            .execute(&mut c)
            .await
            .expect("create database");
        c.close().await.ok();
        self.url(db)
    }

    fn postmaster_pid(&self) -> Option<i32> {
        let text = std::fs::read_to_string(self.dir.path().join("data/postmaster.pid")).ok()?;
        text.lines().next()?.trim().parse().ok()
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let pid = self.postmaster_pid();
        let mut stop = as_postgres(&self.bin, "pg_ctl");
        stop.args(["-D"])
            .arg(self.dir.path().join("data"))
            .args(["-m", "immediate", "-w", "-t", "20", "stop"]);
        let _ = stop.output();
        if let Some(pid) = pid {
            if Path::new(&format!("/proc/{pid}")).exists() {
                let _ = Command::new("kill").args(["-KILL", &pid.to_string()]).status();
            }
        }
    }
}
