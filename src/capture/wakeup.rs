//! Early ring-reader wakeups only while the node's CPUs are saturated
//! (CNFLOW_RING_WAKEUP_ABOVE_CPU_PERCENT). Short, frequent drains delay the
//! workload least when every core is busy, but cost CPU and latency when
//! there is idle capacity (README, "Session 27"); this switches the TC
//! programs' wakeup threshold between the two as the node's load moves.
use anyhow::Result;
use aya::maps::{Array, MapData};
use cnflow_common::CaptureConfig;
use std::time::Duration;

/// When the TC programs force a ring-reader wakeup: after `bytes` of
/// records or `records` records (0: bytes only) per CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WakeLimits {
    pub bytes: u32,
    pub records: u32,
}

impl WakeLimits {
    /// The limits `c` holds.
    fn of(c: &CaptureConfig) -> Self {
        WakeLimits { bytes: c.wakeup_bytes, records: c.wakeup_records }
    }

    /// `c` with these limits.
    pub fn set_in(self, c: CaptureConfig) -> CaptureConfig {
        CaptureConfig { wakeup_bytes: self.bytes, wakeup_records: self.records, ..c }
    }
}

/// How often the node's CPU load is sampled.
const PERIOD: Duration = Duration::from_millis(250);
/// Points below the threshold at which the early wakeups stop again, so a
/// load that hovers at the threshold does not flip the mode every period.
const HYSTERESIS: f64 = 10.0;

/// The wakeup limits the programs start with, and the early ones the
/// switch (CNFLOW_RING_WAKEUP_ABOVE_CPU_PERCENT) puts in while the node is
/// busy, if any. Early wakeups (CNFLOW_RING_WAKEUP_RECORDS / _BYTES) make
/// shorter, more frequent drains (README, "Session 27" and "Session 28");
/// the ring's own bound (`ring_bound` bytes per CPU) always applies.
pub fn limits(cfg: &super::CaptureSettings, ring_bound: u32) -> (WakeLimits, Option<WakeLimits>) {
    let idle = WakeLimits { bytes: ring_bound, records: 0 };
    let early = WakeLimits {
        bytes: match cfg.ring_wakeup_bytes {
            0 => ring_bound,
            b => b.min(ring_bound),
        },
        records: cfg.ring_wakeup_records,
    };
    match cfg.ring_poll_interval {
        // The kernel wakes the reader for every record.
        None => (WakeLimits { bytes: 0, records: 0 }, None),
        Some(_) if early == idle => (idle, None),
        Some(_) if cfg.ring_wakeup_above_cpu_percent > 0 => (idle, Some(early)),
        Some(_) => (early, None),
    }
}

/// Busy and total jiffies of all CPUs, from the first line of /proc/stat
/// (`cpu user nice system idle iowait irq softirq steal …`); idle and
/// iowait are not busy.
fn cpu_jiffies(stat: &str) -> Option<(u64, u64)> {
    let line = stat.lines().next()?.strip_prefix("cpu ")?;
    let v: Vec<u64> = line.split_whitespace().take(8).map(str::parse).collect::<Result<_, _>>().ok()?;
    if v.len() < 5 {
        return None;
    }
    let total: u64 = v.iter().sum();
    Some((total - v[3] - v[4], total))
}

/// Whether early wakeups should be on after a period with `busy_pct`.
fn next_mode(on: bool, busy_pct: f64, threshold: f64) -> bool {
    if on {
        busy_pct >= threshold - HYSTERESIS
    } else {
        busy_pct >= threshold
    }
}

/// Spawns the task that writes the `busy` wakeup limits or those of `base`
/// into the programs' configuration as the node's CPU load crosses `percent`.
pub fn spawn_switch(
    mut map: Array<MapData, CaptureConfig>,
    base: CaptureConfig,
    busy: WakeLimits,
    percent: u8,
) -> Result<()> {
    let read = || std::fs::read_to_string("/proc/stat").ok().as_deref().and_then(cpu_jiffies);
    let Some(mut last) = read() else {
        // Capture goes on with the timer-paced drains.
        tracing::warn!("CNFLOW_RING_WAKEUP_ABOVE_CPU_PERCENT: /proc/stat is not readable; early wakeups stay off");
        return Ok(());
    };
    let idle = WakeLimits::of(&base);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(PERIOD);
        let mut on = false;
        loop {
            tick.tick().await;
            let Some(now) = read() else { continue };
            let (db, dt) = (now.0.saturating_sub(last.0), now.1.saturating_sub(last.1));
            last = now;
            if dt == 0 {
                continue;
            }
            let pct = 100.0 * db as f64 / dt as f64;
            let want = next_mode(on, pct, percent as f64);
            if want != on {
                on = want;
                let conf = (if on { busy } else { idle }).set_in(base);
                match map.set(0, conf, 0) {
                    Ok(()) => tracing::debug!(busy_pct = pct, early_wakeups = on, "ring wakeup threshold switched"),
                    Err(e) => tracing::warn!(error = %e, "cannot switch the ring wakeup threshold"),
                }
            }
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_stat_busy_excludes_idle_and_iowait() {
        let s = "cpu  100 5 50 800 40 3 2 0 0 0\ncpu0 50 2 25 400 20 1 1 0 0 0\n";
        assert_eq!(cpu_jiffies(s), Some((160, 1000)));
        assert_eq!(cpu_jiffies("intr 1 2\n"), None);
        assert_eq!(cpu_jiffies("cpu  1 2\n"), None);
    }

    #[test]
    fn switches_with_hysteresis() {
        assert!(!next_mode(false, 89.0, 90.0));
        assert!(next_mode(false, 90.0, 90.0));
        assert!(next_mode(true, 85.0, 90.0));
        assert!(!next_mode(true, 79.0, 90.0));
    }

    fn limits_for(v: &[(&str, &str)]) -> (WakeLimits, Option<WakeLimits>) {
        let vars = v.iter().map(|(a, b)| (a.to_string(), b.to_string()));
        let cfg = crate::agent::config::AgentConfig::from_vars(vars).unwrap();
        limits(&cfg.capture_settings().unwrap(), 256 << 10)
    }

    #[test]
    fn early_limits_by_records_switched_by_default() {
        let idle = WakeLimits { bytes: 256 << 10, records: 0 };
        assert_eq!(limits_for(&[]), (idle, Some(WakeLimits { bytes: 256 << 10, records: 128 })));
        // Always on, bytes capped at the ring's bound.
        let always = [("CNFLOW_RING_WAKEUP_ABOVE_CPU_PERCENT", "0"), ("CNFLOW_RING_WAKEUP_BYTES", "1048576")];
        assert_eq!(limits_for(&always), (WakeLimits { bytes: 256 << 10, records: 128 }, None));
        let bytes_only = [("CNFLOW_RING_WAKEUP_RECORDS", "0"), ("CNFLOW_RING_WAKEUP_BYTES", "16384")];
        assert_eq!(limits_for(&bytes_only), (idle, Some(WakeLimits { bytes: 16384, records: 0 })));
        // No early limits: nothing to switch.
        assert_eq!(limits_for(&[("CNFLOW_RING_WAKEUP_RECORDS", "0")]), (idle, None));
        // A wakeup per record.
        let per_record = [("CNFLOW_RING_POLL_INTERVAL_MS", "0")];
        assert_eq!(limits_for(&per_record), (WakeLimits { bytes: 0, records: 0 }, None));
    }
}
