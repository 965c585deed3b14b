//! Subcommands. Each file is the entry point of one `cnflow` subcommand.
pub mod config;
pub mod gateway;
pub mod replay;
pub mod run;

/// Logs go to stderr (stdout is reserved for spans/OTLP JSON), filtered by RUST_LOG.
pub fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
}
