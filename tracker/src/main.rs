use clap::{Parser, Subcommand};
use ota_tracker::config::TrackerArgs;
use ota_tracker::registry::Registry;
use ota_tracker::{Tracker, TrackerSettings};

/// ota-tracker: BitTorrent tracker, release registry and push channel for OTA updates.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the tracker server.
    Serve(TrackerArgs),
}

fn main() -> anyhow::Result<()> {
    ota_common::logging::init_logging("info");
    let Cli { command: Command::Serve(args) } = Cli::parse();
    let cfg = args.resolve()?;
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = cfg.worker_threads {
        runtime.worker_threads(n);
    }
    runtime.enable_all().build()?.block_on(serve(cfg))
}

async fn serve(cfg: ota_tracker::config::TrackerConfig) -> anyhow::Result<()> {
    let registry = Registry::open(&cfg.database_url).await?;
    let tracker = Tracker::new(
        registry,
        TrackerSettings {
            admin_token: cfg.admin_token,
            public_url: cfg.public_url,
            store: cfg.store,
            device_auth: cfg.device_auth,
        },
    )
    .await?;
    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", cfg.listen))?;
    tracing::info!(addr = %listener.local_addr()?, "tracker listening");
    if let Some(addr) = cfg.stun_listen {
        match tokio::net::UdpSocket::bind(addr).await {
            Ok(socket) => {
                tracing::info!(addr = %socket.local_addr()?, "STUN responder listening");
                tokio::spawn(ota_tracker::stun::serve(std::sync::Arc::new(socket)));
            }
            Err(e) if !cfg.stun_listen_explicit => {
                tracing::warn!(%addr, error = %e, "STUN responder off: cannot bind its default address");
            }
            Err(e) => anyhow::bail!("cannot listen for STUN on {addr}: {e}"),
        }
    }
    let shutdown = async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    };
    tracker.serve(listener, shutdown).await
}
