//! Logging through `tracing` to stderr, the same for every binary.

/// Sends `tracing` logs to stderr, filtered by `RUST_LOG` or else by
/// `default_filter` (e.g. `info,librqbit=warn`). Shared by every binary.
pub fn init_logging(default_filter: &str) {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| default_filter.into()),
        )
        .with_writer(std::io::stderr)
        .init();
}
