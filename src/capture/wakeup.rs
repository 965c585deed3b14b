//! The ring reader's busy mode while the node's CPUs are saturated
//! (CNFLOW_RING_WAKEUP_ABOVE_CPU_PERCENT). Short, frequent drains delay the
//! workload least when every core is busy, but cost CPU and latency when
//! there is idle capacity (README, "Session 27"); this switches between the
//! two as the node's load moves: the TC programs' early wakeups
//! (CNFLOW_RING_WAKEUP_RECORDS / _BYTES) and, if set, the reader's own
//! sub-millisecond drains (CNFLOW_RING_BUSY_DRAIN_US).
use crate::stats::Counter;
use anyhow::Result;
use aya::maps::{Array, MapData};
use cnflow_common::CaptureConfig;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

/// When the TC programs force a ring-reader wakeup: after `bytes` of
/// records or `records` records (0: bytes only) per CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WakeLimits {
    pub bytes: u32,
    pub records: u32,
}

impl WakeLimits {
    /// `c` with these limits.
    pub fn set_in(self, c: CaptureConfig) -> CaptureConfig {
        CaptureConfig { wakeup_bytes: self.bytes, wakeup_records: self.records, ..c }
    }
}

/// Empty drains in a row before a ring reader (the packet rings', the TLS
/// plaintext's, the TLS process events') stops polling and has the kernel
/// wake it: a second of quiet at the default 10 ms idle polls.
pub const IDLE_AFTER: u32 = 100;
/// How often an idle reader looks anyway: a record written while it went
/// idle may not have woken it.
pub const IDLE_SAFETY: Duration = Duration::from_secs(1);

/// A ring reader's idle mode: after [`IDLE_AFTER`] drains that found nothing
/// it stops its polls and has the kernel wake it with the next record
/// instead (each wakeup of an idle agent thread costs the node's workloads
/// more than its CPU time on the VMs measured: README, Session 34); the
/// first drain that finds records turns the polls back on (counted in
/// `woken`). One for the packet rings ([`WakeControl::set_reader_idle`]),
/// one each for the TLS plaintext and process-event rings (`TLS_IDLE`).
pub struct IdleSwitch {
    /// Tells the kernel; true when it now is as asked.
    set: Box<dyn FnMut(bool) -> bool + Send>,
    empty: u32,
    on: bool,
    woken: &'static LazyLock<Counter>,
}

impl IdleSwitch {
    pub fn new(set: Box<dyn FnMut(bool) -> bool + Send>, woken: &'static LazyLock<Counter>) -> Self {
        IdleSwitch { set, empty: 0, on: false, woken }
    }

    /// Whether the reader is idle (polls off, the kernel wakes it).
    pub fn is_on(&self) -> bool {
        self.on
    }

    /// After a drain that read `got` records. True when the reader has just
    /// gone idle: it must drain once more, since records written before the
    /// kernel saw the switch did not wake it.
    pub fn after_drain(&mut self, got: usize) -> bool {
        if got > 0 {
            self.empty = 0;
            if self.on {
                self.woken.inc();
                // A failed write leaves it idle: the next drain with records tries again.
                self.on = !(self.set)(false);
            }
            return false;
        }
        if self.on {
            return false;
        }
        self.empty += 1;
        self.on = self.empty >= IDLE_AFTER && (self.set)(true);
        self.on
    }
}

/// The programs' wakeup limits in `CONFIG`, written by two parties: the
/// busy-mode switch ([`spawn_switch`]) and the ring reader, which, once
/// idle, has the first record of any CPU wake it ([`WakeControl::set_reader_idle`])
/// instead of polling every CNFLOW_RING_POLL_INTERVAL_MS for nothing.
pub struct WakeControl {
    inner: Mutex<Control>,
}

struct Control {
    map: Array<MapData, CaptureConfig>,
    base: CaptureConfig,
    idle: WakeLimits,
    busy: WakeLimits,
    node_busy: bool,
    reader_idle: bool,
}

impl Control {
    /// The limits for the current state: the reader's idle mode forces a
    /// wakeup with any CPU's first record (the programs' record limit,
    /// which skips the ring query), else the busy mode's or the idle ones.
    fn limits(&self) -> WakeLimits {
        let l = if self.node_busy { self.busy } else { self.idle };
        if self.reader_idle {
            WakeLimits { records: 1, ..l }
        } else {
            l
        }
    }
}

impl WakeControl {
    /// `map` holds `base` (with the limits for `node_busy`).
    pub fn new(
        map: Array<MapData, CaptureConfig>,
        base: CaptureConfig,
        idle: WakeLimits,
        busy: WakeLimits,
        node_busy: bool,
    ) -> Arc<Self> {
        Arc::new(WakeControl { inner: Mutex::new(Control { map, base, idle, busy, node_busy, reader_idle: false }) })
    }

    /// Applies `f` and writes the limits when they changed; on an error the
    /// state goes back to what the kernel has.
    fn update(&self, f: impl FnOnce(&mut Control)) -> Result<()> {
        let mut c = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let (before, saved) = (c.limits(), (c.node_busy, c.reader_idle));
        f(&mut c);
        let after = c.limits();
        if after != before {
            let conf = after.set_in(c.base);
            if let Err(e) = c.map.set(0, conf, 0) {
                (c.node_busy, c.reader_idle) = saved;
                return Err(e.into());
            }
        }
        Ok(())
    }

    fn set_node_busy(&self, on: bool) -> Result<()> {
        self.update(|c| c.node_busy = on)
    }

    /// The reader's idle mode on or off: whether it is now as asked (the
    /// kernel told). Not with limits that have no byte bound (the programs
    /// wake the reader for every record then).
    pub fn set_reader_idle(&self, on: bool) -> bool {
        let mut applied = on;
        let r = self.update(|c| {
            applied = on && c.limits().bytes != 0;
            c.reader_idle = applied;
        });
        if let Err(e) = &r {
            tracing::debug!(error = %e, "cannot switch the ring reader's idle mode");
        }
        r.is_ok() && applied == on
    }
}

/// How often the node's CPU load is sampled.
const PERIOD: Duration = Duration::from_millis(250);
/// Points below the threshold at which the busy mode ends again, so a
/// load that hovers at the threshold does not flip the mode every period.
const HYSTERESIS: f64 = 10.0;

/// The kernel's wakeup limits while the node is not busy and while it is
/// (CNFLOW_RING_WAKEUP_ABOVE_CPU_PERCENT; 0 = busy always). Early wakeups
/// (CNFLOW_RING_WAKEUP_RECORDS / _BYTES; or the reader's own
/// CNFLOW_RING_BUSY_DRAIN_US) make shorter, more frequent drains (README,
/// "Session 27", "Session 28", "Session 30");
/// the ring's own bound (`ring_bound` bytes per CPU) always applies.
pub fn limits(cfg: &super::CaptureSettings, ring_bound: u32) -> (WakeLimits, WakeLimits) {
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
        None => (WakeLimits { bytes: 0, records: 0 }, WakeLimits { bytes: 0, records: 0 }),
        Some(_) => (idle, early),
    }
}

/// Whether the node's CPUs are busy, as the switch last found them; the
/// ring reader drains on its own short timer while they are.
pub type NodeBusy = Arc<AtomicBool>;

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

/// Whether the busy mode should be on after a period with `busy_pct`.
fn next_mode(on: bool, busy_pct: f64, threshold: f64) -> bool {
    if on {
        busy_pct >= threshold - HYSTERESIS
    } else {
        busy_pct >= threshold
    }
}

/// Spawns the task that follows the node's CPU load: past `percent` it sets
/// `node_busy` and has `control` write the busy wakeup limits into the
/// programs' configuration, below it (with [`HYSTERESIS`]) it clears the
/// flag and the idle limits come back.
pub fn spawn_switch(control: Arc<WakeControl>, percent: u8, node_busy: NodeBusy) -> Result<()> {
    let read = || std::fs::read_to_string("/proc/stat").ok().as_deref().and_then(cpu_jiffies);
    let Some(mut last) = read() else {
        // Capture goes on with the timer-paced drains.
        tracing::warn!("CNFLOW_RING_WAKEUP_ABOVE_CPU_PERCENT: /proc/stat is not readable; the busy mode stays off");
        return Ok(());
    };
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
                node_busy.store(on, Ordering::Relaxed);
                if let Err(e) = control.set_node_busy(on) {
                    tracing::warn!(error = %e, "cannot switch the ring wakeup threshold");
                }
                tracing::debug!(busy_pct = pct, busy_mode = on, "ring reader's busy mode switched");
            }
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_switch_goes_idle_after_a_quiet_second_and_back_with_records() {
        static WOKEN: LazyLock<Counter> = LazyLock::new(|| crate::stats::counter("test.idle_switch.woken", &[]));
        let kernel = Arc::new(Mutex::new(Vec::new()));
        let k = kernel.clone();
        let mut s = IdleSwitch::new(
            Box::new(move |on| {
                k.lock().unwrap().push(on);
                true
            }),
            &WOKEN,
        );
        for _ in 1..IDLE_AFTER {
            assert!(!s.after_drain(0));
        }
        // The 100th empty drain: idle now, and drain once more.
        assert!(s.after_drain(0) && s.is_on());
        assert!(!s.after_drain(0) && s.is_on());
        let before = WOKEN.get();
        assert!(!s.after_drain(3) && !s.is_on());
        assert_eq!(WOKEN.get(), before + 1);
        assert_eq!(*kernel.lock().unwrap(), [true, false]);
        // Records reset the count.
        for _ in 1..IDLE_AFTER {
            s.after_drain(0);
        }
        s.after_drain(1);
        assert!(!s.after_drain(0) && !s.is_on());
    }

    #[test]
    fn idle_switch_follows_what_the_kernel_was_told() {
        static WOKEN: LazyLock<Counter> = LazyLock::new(|| crate::stats::counter("test.idle_switch.refused", &[]));
        // A setter that cannot go idle (no byte bound, or a failed write): polling goes on.
        let mut s = IdleSwitch::new(Box::new(|on| !on), &WOKEN);
        for _ in 0..3 * IDLE_AFTER {
            assert!(!s.after_drain(0));
        }
        assert!(!s.is_on());
    }

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

    fn limits_for(v: &[(&str, &str)]) -> (WakeLimits, WakeLimits) {
        let vars = v.iter().map(|(a, b)| (a.to_string(), b.to_string()));
        let cfg = crate::agent::config::AgentConfig::from_vars(vars).unwrap();
        limits(&cfg.capture_settings().unwrap(), 256 << 10)
    }

    #[test]
    fn kernel_limits_idle_and_busy() {
        let idle = WakeLimits { bytes: 256 << 10, records: 0 };
        // By default 128 records while busy.
        assert_eq!(limits_for(&[]), (idle, WakeLimits { bytes: 256 << 10, records: 128 }));
        // Bytes capped at the ring's bound.
        assert_eq!(limits_for(&[("CNFLOW_RING_WAKEUP_BYTES", "1048576")]), limits_for(&[]));
        let bytes_only = [("CNFLOW_RING_WAKEUP_RECORDS", "0"), ("CNFLOW_RING_WAKEUP_BYTES", "16384")];
        assert_eq!(limits_for(&bytes_only), (idle, WakeLimits { bytes: 16384, records: 0 }));
        // The reader paces itself instead: the ring's bound only.
        let reader_paced = [("CNFLOW_RING_WAKEUP_RECORDS", "0"), ("CNFLOW_RING_BUSY_DRAIN_US", "500")];
        assert_eq!(limits_for(&reader_paced), (idle, idle));
        // A wakeup per record.
        let per_record = [("CNFLOW_RING_POLL_INTERVAL_MS", "0")];
        let none = WakeLimits { bytes: 0, records: 0 };
        assert_eq!(limits_for(&per_record), (none, none));
    }
}
