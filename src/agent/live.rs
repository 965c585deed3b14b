//! Glue for the live commands: signal handling and the `--format packets`
//! debug output. Kept here so `cmd/run.rs` stays a thin entry point.
use crate::capture::ebpf::{start_following, LiveSession};
use crate::capture::kernel_record::format_line;
use crate::capture::CaptureSettings;
use anyhow::Result;
use std::io::Write;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// A token cancelled on SIGINT, SIGTERM or after `duration_secs` (0 = never).
pub fn cancel_on_signal_or(duration_secs: u64) -> Result<CancellationToken> {
    use tokio::signal::unix::{signal, SignalKind};
    let cancel = CancellationToken::new();
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let c = cancel.clone();
    tokio::spawn(async move {
        let timeout = async {
            if duration_secs == 0 {
                std::future::pending::<()>().await
            } else {
                tokio::time::sleep(Duration::from_secs(duration_secs)).await
            }
        };
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: stopping"),
            _ = int.recv() => tracing::info!("SIGINT: stopping"),
            _ = timeout => tracing::info!("duration elapsed: stopping"),
        }
        c.cancel();
    });
    Ok(cancel)
}

/// Captures until `cancel` and prints one line per packet on stdout.
pub async fn print_packets(cfg: &CaptureSettings, cancel: CancellationToken) -> Result<()> {
    let LiveSession { packets: mut rx, task: follow, .. } = start_following(cfg, cancel.clone())?;
    let stdout = std::io::stdout();
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            b = rx.recv() => {
                let Some(batch) = b else { break };
                let mut out = stdout.lock();
                for ev in &batch {
                    writeln!(out, "{}", format_line(ev))?;
                }
                out.flush()?;
            }
        }
    }
    // Packets already in the channel are still printed.
    while let Ok(batch) = rx.try_recv() {
        let mut out = stdout.lock();
        for ev in &batch {
            writeln!(out, "{}", format_line(ev))?;
        }
        out.flush()?;
    }
    follow.await??;
    Ok(())
}
