//! Moving a device between two home routers in the middle of a flash
//! crowd (issue 16, connection migration): the lab cuts its link to one
//! router and brings up a link to the other ([`Lab::move_host`]), as when
//! a phone leaves the house's WiFi for cellular.
//!
//! The first move comes once the device's agent reports
//! [`MoveSettings::at_pct`] of the package verified (its control socket's
//! `status`, polled every [`POLL`]); each further one
//! [`MoveSettings::every`] later, back and forth, while the device is
//! still downloading. Every move is logged, printed as one JSON line and
//! kept in `moves.json` in the work folder ([`MoveRecord`]).

use std::io::{BufRead, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;

use crate::lab::{Host, Lab, Router};

/// How often the agent's status is read.
pub const POLL: Duration = Duration::from_millis(50);
/// Bound on one status request (connect, write, read).
pub const STATUS_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest status answer read, bytes.
pub const MAX_STATUS_BYTES: u64 = 1 << 20;

/// When and how often the device moves.
#[derive(Debug, Clone, Copy)]
pub struct MoveSettings {
    /// The first move: once this share of the package is verified, percent.
    pub at_pct: f64,
    /// Moves in all (at least 1).
    pub count: u32,
    /// Time between moves.
    pub every: Duration,
}

/// The device that moves and its two routers.
#[derive(Debug, Clone)]
pub struct MovePlan {
    /// Its host as built (behind `routers[0]`).
    pub host: Host,
    /// Where it starts and the second router of the same kind.
    pub routers: [Router; 2],
    /// The agent's control socket.
    pub socket: PathBuf,
}

/// One move as it happened.
#[derive(Debug, Clone, Serialize)]
pub struct MoveRecord {
    /// 1, 2, ...
    pub n: u32,
    /// The router it left and the one it joined ([`Router::index`]).
    pub from_router: u32,
    /// See [`MoveRecord::from_router`].
    pub to_router: u32,
    /// The device's new LAN address.
    pub addr: std::net::Ipv4Addr,
    /// Verified bytes when it moved.
    pub progress_bytes: u64,
    /// When the old link was cut, ms since the Unix epoch.
    pub cut_at_ms: i64,
    /// From the cut to the new default route, ms (the lab's commands).
    pub link_ms: u64,
}

/// (verified bytes, size) of the first active release in the status the
/// agent on `socket` answers; `None` when it has none. Bounded by
/// [`STATUS_TIMEOUT`] and [`MAX_STATUS_BYTES`]. Errors: the agent cannot
/// be reached or answers something else.
pub fn progress(socket: &Path) -> anyhow::Result<Option<(u64, u64)>> {
    let mut stream = std::os::unix::net::UnixStream::connect(socket)
        .with_context(|| format!("cannot reach {}", socket.display()))?;
    stream.set_read_timeout(Some(STATUS_TIMEOUT))?;
    stream.set_write_timeout(Some(STATUS_TIMEOUT))?;
    stream.write_all(b"{\"cmd\":\"status\"}\n")?;
    let mut line = String::new();
    std::io::BufReader::new(stream.take(MAX_STATUS_BYTES)).read_line(&mut line)?;
    let v: serde_json::Value = serde_json::from_str(line.trim()).context("the agent's status is not JSON")?;
    let Some(r) = v["releases"].as_array().and_then(|r| r.first()) else {
        return Ok(None);
    };
    Ok(r["progress_bytes"].as_u64().zip(r["size"].as_u64()))
}

/// Runs the moves of `plan` in `lab` (see the module docs) until all are
/// made, `done` is set (the flash crowd ended) or `deadline`; writes
/// `moves.json` into `work`. Errors: a move fails in the lab.
pub fn run(
    lab: &mut Lab,
    plan: MovePlan,
    settings: MoveSettings,
    work: &Path,
    done: &AtomicBool,
    deadline: Instant,
) -> anyhow::Result<Vec<MoveRecord>> {
    let mut records = Vec::new();
    let mut host = plan.host;
    let mut next_at: Option<Instant> = None;
    while records.len() < settings.count.max(1) as usize && !done.load(Ordering::Relaxed) && Instant::now() < deadline {
        std::thread::sleep(POLL);
        let (progress_bytes, size) = match progress(&plan.socket) {
            Ok(Some((have, size))) if have < size => (have, size),
            // Finished, or not started yet: a move now proves nothing.
            Ok(_) => {
                if records.is_empty() {
                    continue;
                }
                break;
            }
            Err(_) => continue,
        };
        let due = match next_at {
            None => progress_bytes as f64 >= settings.at_pct / 100.0 * size as f64,
            Some(t) => Instant::now() >= t,
        };
        if !due {
            continue;
        }
        let to = if host.router == plan.routers[0].index {
            &plan.routers[1]
        } else {
            &plan.routers[0]
        };
        let from_router = host.router;
        let (moved, cut) = lab.move_host(&host, to)?;
        let record = MoveRecord {
            n: records.len() as u32 + 1,
            from_router,
            to_router: to.index,
            addr: moved.addr,
            progress_bytes,
            cut_at_ms: ota_common::clock::wall_ms() - cut.elapsed().as_millis() as i64,
            link_ms: cut.elapsed().as_millis() as u64,
        };
        tracing::info!(n = record.n, from_router, to_router = to.index, addr = %moved.addr, progress_bytes, link_ms = record.link_ms, "moved the device to another router");
        println!("{}", serde_json::to_string(&record)?);
        records.push(record);
        host = moved;
        next_at = Some(Instant::now() + settings.every);
    }
    std::fs::write(work.join("moves.json"), serde_json::to_vec_pretty(&records)?)?;
    Ok(records)
}
