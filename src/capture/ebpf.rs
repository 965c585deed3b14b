//! Live capture: loads the TC program, attaches it with TCX to ingress and
//! egress of interfaces, drains the RingBuf into batches of [`PacketEvent`]s
//! and mirrors the kernel's per-CPU counters into [`crate::stats`].
//!
//! TCX links are plain file descriptors owned by this process: dropping them
//! (detach, shutdown) or the process dying (even SIGKILL) removes the
//! programs from the interface, so nothing is left behind.
use super::ifaces::IfaceEvent;
use super::kernel_record::{self, DecodeError};
use super::{CaptureSettings, PacketEvent, TcAttach};
use crate::stats::{counter, gauge, Counter};
use anyhow::{bail, Context, Result};
use aya::maps::{Array, HashMap as BpfHashMap, MapData, PerCpuArray, RingBuf};
use aya::programs::links::LinkOrder;
use aya::programs::tc::{NlOptions, SchedClassifierLink, TcAttachOptions};
use aya::programs::{SchedClassifier, TcAttachType};
use cnflow_common::{CaptureConfig, COUNTER_NAMES, MAX_FILTER_PORTS, NUM_COUNTERS};
use parking_lot::Mutex;
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, LazyLock};
use std::time::Duration;
use tokio::io::unix::AsyncFd;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Events per batch sent to the consumer.
pub const BATCH: usize = 256;
/// Batches buffered between the ring reader and the consumer.
pub const CHANNEL_BATCHES: usize = 256;

const PROG_INGRESS: &str = "cnflow_ingress";
const PROG_EGRESS: &str = "cnflow_egress";

#[cfg(feature = "ebpf")]
static BPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/cnflow-tc"));
#[cfg(not(feature = "ebpf"))]
static BPF_OBJECT: &[u8] = &[];

/// Stale netlink filters of an earlier, killed cnflow removed at attach.
static STALE_FILTERS: LazyLock<Counter> =
    LazyLock::new(|| counter("cnflow.capture.interface_changes", &[("change", "stale_filter_removed")]));
static DELIVERED: LazyLock<Counter> = LazyLock::new(|| counter("cnflow.capture.packets", &[("reason", "delivered")]));
/// Interfaces captured on right now.
static ATTACHED: LazyLock<Counter> = LazyLock::new(|| gauge("cnflow.capture.interfaces", &[]));
/// Interfaces captured on right now (agent readiness needs at least one).
pub fn attached_interfaces() -> u64 {
    ATTACHED.get()
}

/// Interface changes applied by `follow`, so an interface that vanished
/// while attached (and the gap in its capture) shows up in the counters.
static IF_ATTACHED: LazyLock<Counter> =
    LazyLock::new(|| counter("cnflow.capture.interface_changes", &[("change", "attached")]));
static IF_REMOVED: LazyLock<Counter> =
    LazyLock::new(|| counter("cnflow.capture.interface_changes", &[("change", "removed")]));
static IF_ATTACH_FAILED: LazyLock<Counter> =
    LazyLock::new(|| counter("cnflow.capture.interface_changes", &[("change", "attach_failed")]));

fn decode_error_counter(e: DecodeError) -> Counter {
    counter("cnflow.capture.packets", &[("reason", e.as_str())])
}

/// Kernel counters (summed over CPUs), in `COUNTER_NAMES` order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KernelCounters(pub Vec<(&'static str, u64)>);

impl KernelCounters {
    pub fn get(&self, name: &str) -> u64 {
        self.0.iter().find(|(n, _)| *n == name).map(|(_, v)| *v).unwrap_or(0)
    }
}

impl std::fmt::Display for KernelCounters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, (n, v)) in self.0.iter().enumerate() {
            write!(f, "{}{n}={v}", if i > 0 { " " } else { "" })?;
        }
        write!(f, " delivered={}", DELIVERED.get())
    }
}

fn is_loopback(ifname: &str) -> bool {
    const IFF_LOOPBACK: u32 = 0x8;
    std::fs::read_to_string(format!("/sys/class/net/{ifname}/flags"))
        .ok()
        .and_then(|f| u32::from_str_radix(f.trim().trim_start_matches("0x"), 16).ok())
        .is_some_and(|f| f & IFF_LOOPBACK != 0)
}

struct Attached {
    _ingress: Option<SchedClassifierLink>,
    _egress: SchedClassifierLink,
}

/// Reads the kernel's per-CPU counters into [`crate::stats`] on demand, so a
/// metrics export can carry current values (ring_full above all) rather than
/// those of the last periodic mirror.
/// `None` for a capture without a kernel (`capture::simulated`).
#[derive(Clone)]
pub struct KernelCounterReader(Option<Arc<Mutex<PerCpuArray<MapData, u64>>>>);

impl KernelCounterReader {
    pub fn refresh(&self) -> KernelCounters {
        match &self.0 {
            Some(map) => mirror_counters(&map.lock()),
            None => KernelCounters(Vec::new()),
        }
    }

    pub fn none() -> Self {
        Self(None)
    }
}

/// The loaded eBPF object and its attachments.
pub struct LiveCapture {
    bpf: aya::Ebpf,
    links: BTreeMap<String, Attached>,
    counters: KernelCounterReader,
    /// Tcx or Netlink (Auto resolved at start).
    attach: TcAttach,
    /// TLS plaintext source (CNFLOW_TLS); lives and detaches with the capture.
    _tls: Option<super::tls::TlsCapture>,
}

/// Checks what live capture needs, so the error names what is missing
/// instead of a bare EPERM from the bpf syscall.
pub fn check_requirements(attach: TcAttach) -> Result<()> {
    if BPF_OBJECT.is_empty() {
        bail!("this cnflow was built without the `ebpf` feature: live capture is unavailable (use `cnflow replay`)");
    }
    let mut missing = Vec::new();
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        // Not root: accept the capabilities that suffice on kernels ≥ 5.8.
        let caps = effective_caps().unwrap_or(0);
        let has = |bit: u32| caps & (1u64 << bit) != 0;
        const CAP_NET_ADMIN: u32 = 12;
        const CAP_SYS_ADMIN: u32 = 21;
        const CAP_PERFMON: u32 = 38;
        const CAP_BPF: u32 = 39;
        if !(has(CAP_BPF) || has(CAP_SYS_ADMIN)) {
            missing.push("root or CAP_BPF");
        }
        if !has(CAP_NET_ADMIN) {
            missing.push("CAP_NET_ADMIN (to attach TC programs)");
        }
        if !(has(CAP_PERFMON) || has(CAP_SYS_ADMIN)) {
            missing.push("CAP_PERFMON");
        }
    }
    if !std::path::Path::new("/sys/kernel/btf/vmlinux").exists() {
        missing.push("kernel BTF (/sys/kernel/btf/vmlinux; CONFIG_DEBUG_INFO_BTF=y)");
    }
    if !super::kernel_has_tcx() {
        match attach {
            TcAttach::Tcx => missing.push("Linux ≥ 6.6 for CNFLOW_TC_ATTACH=tcx (TCX links); use auto or netlink"),
            TcAttach::Auto => tracing::warn!(
                "this kernel has no TCX (Linux < 6.6): attaching as clsact cls_bpf filters instead; they outlive a killed agent until its next start removes them"
            ),
            TcAttach::Netlink => {}
        }
    }
    if !missing.is_empty() {
        bail!("live capture needs: {}", missing.join(", "));
    }
    // Kernels before 5.11 charge BPF maps to RLIMIT_MEMLOCK; newer ones ignore it.
    let rl = libc::rlimit { rlim_cur: libc::RLIM_INFINITY, rlim_max: libc::RLIM_INFINITY };
    // SAFETY: valid rlimit pointer.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &rl) } != 0 {
        tracing::debug!("could not raise RLIMIT_MEMLOCK (fine on kernels ≥ 5.11)");
    }
    Ok(())
}

fn effective_caps() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("CapEff:"))?;
    u64::from_str_radix(line.trim_start_matches("CapEff:").trim(), 16).ok()
}

/// Protocol flags for the CONFIG map from CNFLOW_CAPTURE_PROTOCOLS.
fn capture_flags(cfg: &CaptureSettings) -> u32 {
    let mut flags = 0;
    for p in cfg.protocols.split(',').map(str::trim) {
        flags |= match p {
            "tcp" => cnflow_common::CFG_TCP,
            "udp" => cnflow_common::CFG_UDP,
            "icmp" => cnflow_common::CFG_ICMP,
            _ => 0,
        };
    }
    if cfg.gso_segments {
        flags |= cnflow_common::CFG_SPLIT_GSO;
    }
    flags
}

impl LiveCapture {
    /// Loads the program and configures it from `cfg`. Spawns the ring reader
    /// and the counter task on the current tokio runtime; packets arrive on
    /// the returned channel in batches of up to [`BATCH`].
    pub fn start(cfg: &CaptureSettings) -> Result<(Self, mpsc::Receiver<Vec<PacketEvent>>)> {
        check_requirements(cfg.tc_attach)?;
        let ports = &cfg.ports;
        if ports.len() > MAX_FILTER_PORTS as usize {
            bail!("CNFLOW_CAPTURE_PORTS: at most {MAX_FILTER_PORTS} ports (got {})", ports.len());
        }
        let mut bpf = aya::EbpfLoader::new().load(BPF_OBJECT).context("loading the eBPF object into the kernel")?;
        for name in [PROG_INGRESS, PROG_EGRESS] {
            let prog: &mut SchedClassifier = bpf
                .program_mut(name)
                .with_context(|| format!("eBPF program {name} missing from the object"))?
                .try_into()?;
            prog.load().with_context(|| format!("loading eBPF program {name} (verifier)"))?;
        }

        let mut flags = capture_flags(cfg);
        {
            let mut pf: BpfHashMap<_, u16, u8> =
                BpfHashMap::try_from(bpf.map_mut("PORT_FILTER").context("PORT_FILTER map missing")?)?;
            for p in ports {
                pf.insert(p, 1, 0).context("filling PORT_FILTER")?;
            }
            if !ports.is_empty() {
                flags |= cnflow_common::CFG_PORT_ALLOWLIST;
            }
        }
        // The record rings, one per CPU (see `rings`), filled in before the
        // configuration that lets the programs write.
        let cpus = aya::util::nr_cpus().map(|n| n.max(1) as u32).unwrap_or(1);
        let layout = RingLayout::new(cfg.ring_buffer_bytes, cpus);
        let rings = create_rings(&mut bpf, layout)?;
        // With the switch off (0 %) the node counts as busy from the start.
        let always = cfg.ring_wakeup_above_cpu_percent == 0;
        let node_busy = super::wakeup::NodeBusy::new(always.into());
        let mut wake_control = None;
        {
            let mut c: Array<_, CaptureConfig> = Array::try_from(bpf.map_mut("CONFIG").context("CONFIG map missing")?)?;
            let ring_bound = layout.wakeup_bytes(cpus);
            let (idle, busy) = super::wakeup::limits(cfg, ring_bound);
            let conf = (if always { busy } else { idle }).set_in(CaptureConfig {
                snaplen: cfg.snaplen,
                flags,
                rings: layout.rings,
                http_response_snaplen: cfg.http_response_snaplen,
                ..Default::default()
            });
            c.set(0, conf, 0).context("writing CONFIG")?;
            let switched = cfg.ring_poll_interval.is_some() && (busy != idle || cfg.ring_busy_drain.is_some());
            if cfg.ring_poll_interval.is_some() {
                let map = Array::try_from(bpf.take_map("CONFIG").context("CONFIG map missing")?)?;
                let control = super::wakeup::WakeControl::new(map, conf, idle, busy, always);
                if switched && !always {
                    super::wakeup::spawn_switch(control.clone(), cfg.ring_wakeup_above_cpu_percent, node_busy.clone())?;
                }
                wake_control = Some(control);
            }
            tracing::info!(
                idle_bytes = idle.bytes,
                busy_bytes = busy.bytes,
                busy_records = busy.records,
                busy_drain_us = cfg.ring_busy_drain.map_or(0, |d| d.as_micros() as u64),
                busy_above_percent = cfg.ring_wakeup_above_cpu_percent,
                busy_mode = if !switched { "never" } else if always { "always" } else { "switched" },
                "ring reader: woken by the kernel after `idle_bytes` per CPU; while the node is busy after `busy_bytes` or `busy_records` per CPU, drained every `busy_drain_us` (0: not) under heavy traffic"
            );
        }
        let counters: PerCpuArray<MapData, u64> =
            PerCpuArray::try_from(bpf.take_map("COUNTERS").context("COUNTERS map missing")?)?;
        let counters = KernelCounterReader(Some(Arc::new(Mutex::new(counters))));
        for c in [&ATTACHED, &IF_ATTACHED, &IF_REMOVED, &IF_ATTACH_FAILED, &READER_WOKEN] {
            LazyLock::force(c);
        }

        let (tx, rx) = mpsc::channel(CHANNEL_BATCHES);
        let afds = rings
            .into_iter()
            // SAFETY: the RingBuf owns its map fd and keeps it open, unchanged, while the AsyncFd lives.
            .map(|r| unsafe { AsyncFd::register(r) }.context("registering a ring buffer with tokio"))
            .collect::<Result<Vec<_>>>()?;
        let pace = Pace { idle: cfg.ring_poll_interval, busy_drain: cfg.ring_busy_drain, node_busy };
        tokio::spawn(read_ring(afds, tx.clone(), pace, wake_control));
        let c2 = counters.clone();
        let every = cfg.stats_interval.max(Duration::from_secs(1));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.tick().await;
            loop {
                tick.tick().await;
                let k = c2.refresh();
                tracing::info!(counters = %k, "capture counters");
            }
        });
        tracing::info!(
            snaplen = cfg.snaplen,
            ring_bytes = cfg.ring_buffer_bytes,
            rings = layout.rings,
            ring_bytes_each = layout.bytes_each,
            ring_poll_ms = cfg.ring_poll_interval.map_or(0, |d| d.as_millis() as u64),
            protocols = %cfg.protocols,
            ports = ?ports,
            "eBPF capture loaded"
        );
        let attach = cfg.tc_attach.resolve();
        // TLS is an addition to packet capture: if it cannot start (no BTF
        // for fentry, no uprobe support), packets are still captured.
        let tls = cfg.tls.as_ref().and_then(|t| {
            let settings = super::tls::TlsSettings {
                snaplen: cfg.snaplen,
                http_response_snaplen: cfg.http_response_snaplen,
                libraries: t.libraries.clone(),
                proc_root: t.proc_root.clone(),
                socket_hooks_always: t.socket_hooks_always,
                placement: t.placement,
            };
            super::tls::TlsCapture::start(&settings, tx.clone())
                .inspect_err(|e| {
                    tracing::warn!(error = format!("{e:#}"), "TLS plaintext capture unavailable; TLS stays encrypted")
                })
                .ok()
        });
        drop(tx);
        Ok((LiveCapture { bpf, links: BTreeMap::new(), counters, attach, _tls: tls }, rx))
    }

    /// Attaches to ingress and egress of `ifname` (TCX, ahead of other programs
    /// so cnflow sees packets before anything rewrites or drops them).
    /// Attaching twice is a no-op.
    pub fn attach(&mut self, ifname: &str) -> Result<()> {
        if self.links.contains_key(ifname) {
            return Ok(());
        }
        let _span = tracing::info_span!("capture.attach", iface = ifname).entered();
        // Every loopback packet passes lo's egress and then its ingress: one hook
        // sees it once, where both would double every datagram and segment.
        let loopback = is_loopback(ifname);
        let ingress =
            if loopback { None } else { Some(self.attach_one(PROG_INGRESS, ifname, TcAttachType::Ingress)?) };
        // If egress fails, dropping `ingress` detaches it again.
        let egress = self.attach_one(PROG_EGRESS, ifname, TcAttachType::Egress)?;
        self.links.insert(ifname.to_string(), Attached { _ingress: ingress, _egress: egress });
        ATTACHED.set(self.links.len() as u64);
        let hooks = if loopback { "egress only: loopback" } else { "ingress+egress" };
        let how = if self.attach == TcAttach::Netlink { "tc clsact" } else { "tcx" };
        tracing::info!(iface = ifname, "capture attached ({how} {hooks})");
        Ok(())
    }

    fn attach_one(&mut self, prog: &str, ifname: &str, at: TcAttachType) -> Result<SchedClassifierLink> {
        let opts = match self.attach {
            TcAttach::Netlink => {
                // The clsact qdisc may exist already (another tool's filters, or ours).
                if let Err(e) = aya::programs::tc::qdisc_add_clsact(ifname) {
                    tracing::debug!(iface = ifname, error = %e, "clsact qdisc not added (usually: it exists)");
                }
                // Filters of a cnflow that was killed stay attached (unlike TCX
                // links): remove them so packets are not captured twice.
                if aya::programs::tc::qdisc_detach_program(ifname, at, prog).is_ok() {
                    STALE_FILTERS.inc();
                    tracing::warn!(
                        iface = ifname,
                        program = prog,
                        "removed a stale cnflow tc filter left by an earlier run"
                    );
                }
                // Priority 1: ahead of filters added with the default priority,
                // and direct action returning TC_ACT_UNSPEC, so the next filter
                // still runs.
                TcAttachOptions::Netlink(NlOptions { priority: 1, ..Default::default() })
            }
            _ => TcAttachOptions::TcxOrder(LinkOrder::first()),
        };
        let p: &mut SchedClassifier =
            self.bpf.program_mut(prog).with_context(|| format!("program {prog} missing"))?.try_into()?;
        let id = p
            .attach_with_options(ifname, at, opts)
            .with_context(|| format!("attaching {prog} to {ifname} ({at:?})"))?;
        Ok(p.take_link(id)?)
    }

    /// Detaches from `ifname` (dropping the TCX links). Unknown names are ignored.
    pub fn detach(&mut self, ifname: &str) {
        if self.links.contains_key(ifname) {
            let _span = tracing::info_span!("capture.detach", iface = ifname).entered();
            self.links.remove(ifname);
            ATTACHED.set(self.links.len() as u64);
            tracing::info!(iface = ifname, "capture detached");
        }
    }

    pub fn attached(&self) -> Vec<String> {
        self.links.keys().cloned().collect()
    }

    /// Current kernel counters, also written into `cnflow.capture.packets{reason}`.
    pub fn counters(&self) -> KernelCounters {
        self.counters.refresh()
    }

    /// A handle that refreshes the kernel counters after the capture moved into its task.
    pub fn counter_reader(&self) -> KernelCounterReader {
        self.counters.clone()
    }

    /// Applies interface events until `cancel` fires or the event source ends,
    /// then detaches everything and logs the final counters.
    pub async fn follow(mut self, mut events: mpsc::Receiver<IfaceEvent>, cancel: CancellationToken) -> Result<()> {
        loop {
            tokio::select! {
                _ = cancel.cancelled() => break,
                ev = events.recv() => match ev {
                    Some(IfaceEvent::Added(name, _)) => match self.attach(&name) {
                        Ok(()) => IF_ATTACHED.inc(),
                        Err(e) => {
                            // An interface can vanish right after appearing; keep going.
                            IF_ATTACH_FAILED.inc();
                            tracing::warn!(iface = %name, error = format!("{e:#}"), "attach failed");
                        }
                    },
                    Some(IfaceEvent::Removed(name, _)) => {
                        IF_REMOVED.inc();
                        tracing::warn!(iface = %name, "interface removed or down: its traffic is no longer captured");
                        self.detach(&name);
                    }
                    None => {
                        cancel.cancelled().await;
                        break;
                    }
                },
            }
        }
        self.shutdown();
        Ok(())
    }

    /// Follows the interfaces the configuration names (CNFLOW_INTERFACES or
    /// auto mode) on a task that detaches everything once `cancel` fires.
    pub fn follow_configured(
        self,
        cfg: &CaptureSettings,
        cancel: CancellationToken,
    ) -> Result<tokio::task::JoinHandle<Result<()>>> {
        let events = super::ifaces::watch(cfg)?;
        Ok(tokio::spawn(self.follow(events, cancel)))
    }

    /// Detaches from every interface and logs the final counters.
    pub fn shutdown(mut self) {
        let names = self.attached();
        for n in names {
            self.detach(&n);
        }
        let k = self.counters();
        tracing::info!(counters = %k, "capture stopped");
    }
}

fn mirror_counters(map: &PerCpuArray<MapData, u64>) -> KernelCounters {
    let mut out = Vec::with_capacity(COUNTER_NAMES.len());
    for (i, name) in COUNTER_NAMES.iter().enumerate().take(NUM_COUNTERS as usize) {
        let v = map.get(&(i as u32), 0).map(|vals| vals.iter().sum::<u64>()).unwrap_or(0);
        if let Some(encap) = name.strip_prefix("decap_") {
            counter("cnflow.capture.decapsulated", &[("encapsulation", encap)]).set(v);
        } else if let Some(outcome) = name.strip_prefix("wakeup_") {
            counter("cnflow.capture.ring.wakeups", &[("outcome", outcome)]).set(v);
        } else {
            counter("cnflow.capture.packets", &[("reason", name)]).set(v);
        }
        out.push((*name, v));
    }
    KernelCounters(out)
}

/// Drains the ring buffer when the kernel wakes the reader (the ring is 1/8
/// full, or every record with CNFLOW_RING_POLL_INTERVAL_MS=0) and on the poll
/// timer, decoding records into batches. A slow consumer applies
/// backpressure: the reader waits for room in the channel and the kernel ring
/// (sized by CNFLOW_RING_BUFFER_BYTES) absorbs the burst; if it overflows the
/// kernel counts `ring_full`. Dropping there is cheaper than decoding packets
/// only to drop them here.
///
/// After [`super::wakeup::IDLE_AFTER`] drains in a row that found nothing,
/// the reader stops polling: `control` has the programs wake it with any
/// CPU's next record (and it still looks every
/// [`super::wakeup::IDLE_SAFETY`]); the first drain that finds records
/// restores the limits. The reader of an idle node then wakes once
/// a second instead of 100 times: each wakeup of an agent thread costs the
/// node's latency-bound workloads more than its CPU time on these VMs
/// (README, "Session 34").
async fn read_ring(
    mut afds: Vec<AsyncFd<RingBuf<MapData>>>,
    tx: mpsc::Sender<Vec<PacketEvent>>,
    pace: Pace,
    control: Option<Arc<super::wakeup::WakeControl>>,
) {
    let mut wait = pace.idle;
    // Without a control (CNFLOW_RING_POLL_INTERVAL_MS=0: woken for every record) it never goes idle.
    let mut idle = super::wakeup::IdleSwitch::new(
        match control {
            Some(c) => Box::new(move |on| c.set_reader_idle(on)),
            None => Box::new(|on| !on),
        },
        &READER_WOKEN,
    );
    let mut recheck = false;
    let mut merger = super::rings::Merger::new(afds.len());
    let sub_ms = pace.busy_drain.is_some_and(|d| d < Duration::from_millis(1));
    let mut timer = match super::drain_timer::DrainTimer::new(sub_ms) {
        Ok(t) => t,
        Err(e) => {
            tracing::error!(error = %e, "capture stopped");
            return;
        }
    };
    let mut last_drain = std::time::Instant::now();
    loop {
        // Readiness is cleared before draining: a wakeup that arrives while
        // draining sets it again, so none is lost.
        let ready = if std::mem::take(&mut recheck) {
            Ok(())
        } else {
            let readable = futures::future::select_all(afds.iter().map(|a| Box::pin(a.readable())));
            match wait {
                Some(w) => tokio::select! {
                    (r, _, _) = readable => r.map(|mut g| g.clear_ready()),
                    r = timer.sleep(w) => r.map_err(std::io::Error::other),
                },
                None => readable.await.0.map(|mut g| g.clear_ready()),
            }
        };
        if let Err(e) = ready {
            tracing::error!(error = %e, "ring buffer poll failed; capture stopped");
            return;
        }
        let now = std::time::Instant::now();
        let since = now - last_drain;
        last_drain = now;
        let mut got = 0u64;
        let offset = kernel_record::mono_to_wall_offset();
        let decode = |raw: &[u8]| match kernel_record::decode_entry(raw, offset) {
            Ok(x) => Some(x),
            Err(e) => {
                decode_error_counter(e).inc();
                None
            }
        };
        loop {
            let (batch, drained) = merger.next_batch(&mut afds, BATCH, &decode);
            if !batch.is_empty() {
                let n = batch.len() as u64;
                got += n;
                if tx.send(batch).await.is_err() {
                    return;
                }
                DELIVERED.add(n);
            }
            if drained {
                break;
            }
        }
        wait = pace.next_wait(got, since);
        // Going idle: drain again at once (see `IdleSwitch::after_drain`).
        recheck = idle.after_drain(got as usize);
        if idle.is_on() {
            wait = Some(super::wakeup::IDLE_SAFETY);
        }
    }
}

static READER_WOKEN: LazyLock<Counter> = LazyLock::new(|| counter("cnflow.capture.ring.reader_wakeups", &[]));

impl super::rings::RecordSource for AsyncFd<RingBuf<MapData>> {
    fn take<F: FnMut(&[u8])>(&mut self, max: usize, mut f: F) -> usize {
        let ring = self.get_mut();
        let mut n = 0;
        while n < max {
            let Some(item) = ring.next() else { break };
            f(&item);
            n += 1;
        }
        n
    }
}

/// How the configured ring bytes are shared among the per-CPU rings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct RingLayout {
    rings: u32,
    bytes_each: u32,
}

impl RingLayout {
    /// One ring per CPU up to `MAX_RINGS` (CPUs beyond share them), each a
    /// power of two ≥ 64 KiB (a ring's size must be a power-of-two number of
    /// pages; 64 KiB holds ~16 of the largest records), together at most
    /// CNFLOW_RING_BUFFER_BYTES unless that floor needs more.
    fn new(total: u32, cpus: u32) -> Self {
        let rings = cpus.clamp(1, cnflow_common::MAX_RINGS);
        let each = (total / rings).max(64 * 1024);
        // Largest power of two ≤ each.
        let bytes_each = 1u32 << (31 - each.leading_zeros());
        Self { rings, bytes_each }
    }

    /// The most a CPU writes before it forces a reader wakeup: 1/8 of its
    /// ring split over the CPUs that share it, so a ring never holds more
    /// than 1/8 of its size unannounced (a smaller CNFLOW_RING_WAKEUP_BYTES
    /// applies below this).
    fn wakeup_bytes(&self, cpus: u32) -> u32 {
        let sharing = cpus.div_ceil(self.rings).max(1);
        (self.bytes_each / 8 / sharing).max(4096)
    }
}

/// Creates the rings of `layout` and puts them in the programs' `RINGS` array.
fn create_rings(bpf: &mut aya::Ebpf, layout: RingLayout) -> Result<Vec<RingBuf<MapData>>> {
    let mut outer: aya::maps::ArrayOfMaps<&mut MapData, MapData> =
        aya::maps::ArrayOfMaps::try_from(bpf.map_mut("RINGS").context("RINGS map missing")?)?;
    let mut rings = Vec::with_capacity(layout.rings as usize);
    for i in 0..layout.rings {
        let obj = aya_obj::Map::new_from_params(
            aya_obj::generated::bpf_map_type::BPF_MAP_TYPE_RINGBUF as u32,
            0,
            0,
            layout.bytes_each,
            0,
        );
        let data = MapData::create(obj, "cnflow_ring", None)
            .with_context(|| format!("creating record ring {i} ({} bytes)", layout.bytes_each))?;
        outer.set(i, &data, 0).with_context(|| format!("putting record ring {i} in RINGS"))?;
        rings.push(RingBuf::try_from(aya::maps::Map::RingBuf(data))?);
    }
    Ok(rings)
}

/// When the ring reader drains next (see [`Pace::next_wait`]).
struct Pace {
    /// CNFLOW_RING_POLL_INTERVAL_MS; None = the kernel wakes the reader for every record.
    idle: Option<Duration>,
    /// CNFLOW_RING_BUSY_DRAIN_US.
    busy_drain: Option<Duration>,
    /// Set while the node's CPUs are busy (`wakeup::spawn_switch`).
    node_busy: super::wakeup::NodeBusy,
}

impl Pace {
    /// The wait before the next drain after one that found `got` records,
    /// `since` after the one before.
    fn next_wait(&self, got: u64, since: Duration) -> Option<Duration> {
        let idle = self.idle?;
        let busy_drain = self.busy_drain.filter(|_| self.node_busy.load(Ordering::Relaxed));
        Some(busy_poll_wait(idle, got, since, busy_drain))
    }
}

/// While packets keep arriving the ring is drained every [`BUSY_POLL`] (or
/// the configured interval when it is shorter), otherwise every configured
/// interval. The work of a drain runs in one burst on a core the workload
/// uses: 10 ms of Redis traffic at ~80k requests/s is ~1.3 ms of agent CPU
/// at once, which a request waiting behind it sees as latency (p99 +85–96%
/// with the agent on; +30–42% draining every 2 ms, `bench_overhead.sh`,
/// 2026-12-05). Under heavy traffic (records arriving at [`HEAVY_RATE`] or
/// more since the drain before) the next one comes after [`HEAVY_POLL`]:
/// shorter bursts again (18 alternated pairs, 2026-12-06: p99 lower in 22.5
/// of 36 comparisons, medians redis +39..+54% against +58..+72%, agent CPU
/// per request within the spread), or `busy_drain` while the node's CPUs
/// are saturated (README, "Session 30"). Light traffic keeps the 2 ms (a
/// drain costs a wakeup whatever it finds), and an idle node the longer
/// interval.
fn busy_poll_wait(idle: Duration, got: u64, since: Duration, busy_drain: Option<Duration>) -> Duration {
    match got {
        0 => idle,
        n if n as f64 >= HEAVY_RATE * since.as_secs_f64() => busy_drain.unwrap_or(HEAVY_POLL).min(idle),
        _ => BUSY_POLL.min(idle),
    }
}

/// Drain interval of the ring while packets arrive (see [`busy_poll_wait`]).
const BUSY_POLL: Duration = Duration::from_millis(2);
/// Drain interval under heavy traffic (outside the busy mode).
const HEAVY_POLL: Duration = Duration::from_millis(1);
/// Records per second, over the time since the drain before, that make
/// heavy traffic (what 200 records in the 2 ms of [`BUSY_POLL`] were).
const HEAVY_RATE: f64 = 100_000.0;

/// A running live capture: packet batches plus the task that keeps the
/// program attached to the configured interfaces.
pub struct LiveSession {
    pub packets: mpsc::Receiver<Vec<PacketEvent>>,
    pub kernel: KernelCounterReader,
    /// Ends after the cancel token fires, once everything is detached.
    pub task: tokio::task::JoinHandle<Result<()>>,
}

/// Everything `cnflow run` needs for live packets: loads the program, follows
/// interfaces per the configuration (CNFLOW_INTERFACES or auto), and detaches
/// everything once `cancel` fires.
pub fn start_following(cfg: &CaptureSettings, cancel: CancellationToken) -> Result<LiveSession> {
    // Cheap checks and interface names first, so config errors come before the kernel load.
    check_requirements(cfg.tc_attach)?;
    let events = super::ifaces::watch(cfg)?;
    let (cap, packets) = LiveCapture::start(cfg)?;
    let kernel = cap.counter_reader();
    let task = tokio::spawn(cap.follow(events, cancel));
    Ok(LiveSession { packets, kernel, task })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drains_sooner_only_while_packets_arrive() {
        let idle = Duration::from_millis(10);
        let ms2 = Duration::from_millis(2);
        assert_eq!(busy_poll_wait(idle, 0, ms2, None), idle);
        assert_eq!(busy_poll_wait(idle, 1, ms2, None), BUSY_POLL);
        // 100k records/s over the time since the drain before is heavy.
        assert_eq!(busy_poll_wait(idle, 199, ms2, None), BUSY_POLL);
        assert_eq!(busy_poll_wait(idle, 200, ms2, None), HEAVY_POLL);
        assert_eq!(busy_poll_wait(idle, 50, Duration::from_micros(500), None), HEAVY_POLL);
        // The busy mode's interval replaces the heavy one only.
        let busy = Some(Duration::from_micros(500));
        assert_eq!(busy_poll_wait(idle, 50, Duration::from_micros(500), busy), Duration::from_micros(500));
        assert_eq!(busy_poll_wait(idle, 1, ms2, busy), BUSY_POLL);
        assert_eq!(busy_poll_wait(idle, 0, ms2, busy), idle);
        // A configured interval shorter than the busy one is kept.
        assert_eq!(busy_poll_wait(Duration::from_millis(1), 5, ms2, None), Duration::from_millis(1));
        assert_eq!(busy_poll_wait(Duration::from_millis(1), 200, ms2, None), Duration::from_millis(1));
    }

    #[test]
    fn the_busy_interval_applies_while_the_node_is_busy() {
        let pace = Pace {
            idle: Some(Duration::from_millis(10)),
            busy_drain: Some(Duration::from_micros(300)),
            node_busy: Default::default(),
        };
        let heavy = (1000, Duration::from_millis(1));
        assert_eq!(pace.next_wait(heavy.0, heavy.1), Some(HEAVY_POLL));
        pace.node_busy.store(true, Ordering::Relaxed);
        assert_eq!(pace.next_wait(heavy.0, heavy.1), Some(Duration::from_micros(300)));
        let per_record = Pace { idle: None, ..pace };
        assert_eq!(per_record.next_wait(heavy.0, heavy.1), None);
    }

    #[test]
    fn ring_layout_splits_the_configured_bytes() {
        let l = RingLayout::new(32 << 20, 2);
        assert_eq!((l.rings, l.bytes_each), (2, 16 << 20));
        assert_eq!(l.wakeup_bytes(2), 2 << 20);
        // Not a power of two per ring: rounded down, never above the total.
        let l = RingLayout::new(32 << 20, 6);
        assert_eq!((l.rings, l.bytes_each), (6, 4 << 20));
        // More CPUs than rings: they share, and wake the reader sooner.
        let l = RingLayout::new(32 << 20, 128);
        assert_eq!((l.rings, l.bytes_each), (cnflow_common::MAX_RINGS, 512 << 10));
        assert_eq!(l.wakeup_bytes(128), 32 << 10);
        // The 64 KiB floor.
        let l = RingLayout::new(64 << 10, 4);
        assert_eq!((l.rings, l.bytes_each), (4, 64 << 10));
        assert_eq!(l.wakeup_bytes(4), 8 << 10);
    }
}
