//! `cnflow run` (standalone host) and `cnflow agent` (DaemonSet).
use anyhow::Result;

#[derive(clap::Args, Debug, Clone)]
pub struct RunArgs {
    /// Output on stdout: text (one line per span) or otlp-json. Ignored when an OTLP endpoint is set in agent mode.
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

pub fn main(_args: RunArgs, _mode: Mode) -> Result<()> {
    anyhow::bail!("live capture is not built yet")
}
