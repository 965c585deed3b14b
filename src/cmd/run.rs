//! `cnflow run` (standalone host) and `cnflow agent` (DaemonSet).
use anyhow::Result;

#[derive(clap::Args, Debug, Clone)]
pub struct RunArgs {
    /// Output on stdout: text (one line per span), otlp-json, or packets (one line per captured packet, for debugging).
    #[arg(long, default_value = "text")]
    pub format: String,
    /// Stop after this many seconds (0 = until SIGINT/SIGTERM).
    #[arg(long, default_value_t = 0)]
    pub duration: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Standalone,
    Agent,
}

pub fn main(args: RunArgs, _mode: Mode) -> Result<()> {
    let cfg = crate::config::AgentConfig::from_env()?;
    if args.format != "packets" {
        anyhow::bail!("--format {}: not built yet (available: packets)", args.format);
    }
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        let cancel = crate::capture::live::cancel_on_signal_or(args.duration)?;
        crate::capture::live::print_packets(&cfg, cancel).await
    })
}
