//! `ota-tracker serve`: the tracker binary. Reads its settings
//! ([`ota_tracker::config`]), opens the registry, starts the STUN responder
//! and serves HTTP until SIGINT or SIGTERM, then writes the live peers one
//! last time.

use std::sync::Arc;

use clap::Parser;
use ota_tracker::config::{expand_args, Cli, Command, TrackerArgs};
use ota_tracker::{Registry, Tracker};

fn main() {
    ota_common::logging::init_logging("info");
    if let Err(e) = run() {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn run() -> anyhow::Result<()> {
    let Cli {
        command: Command::Serve(args),
    } = Cli::parse_from(expand_args(std::env::args().collect())?);
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = args.worker_threads() {
        runtime.worker_threads(n);
    }
    runtime.enable_all().build()?.block_on(serve(args))
}

async fn serve(args: TrackerArgs) -> anyhow::Result<()> {
    let settings = args.settings()?;
    let broker = args.broker_push();
    if settings.origin_token.is_none() {
        tracing::warn!("no --origin-token (OTA_ORIGIN_TOKEN): no origin seeder can announce");
    }
    let mut registry = Registry::open(&args.database_url).await?;
    if let Some(id) = &args.replica_id {
        if registry.backend() != ota_tracker::registry::Backend::Postgres {
            tracing::warn!(
                "--replica-id with SQLite: replicas need one database they can all reach, such as PostgreSQL"
            );
        }
        tracing::info!(replica = %id, "tracker replica: sharing live peers and origin grants through the database");
        registry = registry.with_replica(id);
    }
    let tracker = Tracker::new(registry, settings).await?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", args.listen))?;
    tracing::info!(addr = %listener.local_addr()?, "tracker listening");
    if let Some(addr) = args.stun_listen() {
        match tokio::net::UdpSocket::bind(addr).await {
            Ok(socket) => {
                tracing::info!(addr = %socket.local_addr()?, "STUN responder listening");
                let limits = ota_tracker::stun::StunLimits::per_second(args.stun_rate);
                tokio::spawn(ota_tracker::stun::serve_with(Arc::new(socket), limits));
            }
            Err(e) if !args.stun_listen_explicit() => {
                tracing::warn!(%addr, error = %e, "STUN responder off: cannot bind its default address");
            }
            Err(e) => anyhow::bail!("cannot listen for STUN on {addr}: {e}"),
        }
    }
    // Kept alive (not aborted) until the process ends.
    let _broker = match broker {
        Some(b) => {
            tracing::info!(broker = %b.addr, prefix = %b.prefix, client_id = %b.client_id, "publishing release notices to the MQTT broker");
            Some(tracker.spawn_broker_push(b)?)
        }
        None => None,
    };
    let shutdown = async {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    };
    tracker.serve(listener, shutdown).await
}
