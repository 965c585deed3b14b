//! Packet sources. Both the live eBPF source and pcap replay produce
//! [`PacketEvent`]s, so everything downstream is identical for both.
use bytes::Bytes;
use serde::Serialize;
use std::net::IpAddr;
use std::time::Duration;

#[cfg(target_os = "linux")]
pub mod drain_timer;
#[cfg(target_os = "linux")]
pub mod ebpf;
pub mod frame;
pub mod ifaces;
pub mod kernel_record;
pub mod pcap;
pub mod rings;
pub mod simulated;
#[cfg(target_os = "linux")]
pub mod tls;
pub mod tls_sites;
pub mod tls_stream;
#[cfg(target_os = "linux")]
pub mod tls_symbols;
pub mod wakeup;

/// What the live capture needs to know: the capture's own settings, filled
/// by whoever owns the configuration (the agent, from `CNFLOW_*`).
#[derive(Debug, Clone)]
pub struct CaptureSettings {
    /// Interface names to capture on; None = every up, non-loopback interface.
    pub interfaces: Option<Vec<String>>,
    /// Payload bytes the kernel copies per packet.
    pub snaplen: u32,
    /// Size of the kernel→userspace ring buffer (power of two).
    pub ring_buffer_bytes: u32,
    /// Record bytes a CPU writes before the kernel wakes the reader early
    /// (0: 1/8 of its ring, always the bound).
    pub ring_wakeup_bytes: u32,
    /// Records a CPU writes before the kernel wakes the reader early (0: none).
    pub ring_wakeup_records: u32,
    /// When non-zero, the busy mode (`ring_busy_drain`, the early wakeups
    /// `ring_wakeup_records`, `ring_wakeup_bytes`) applies only while the
    /// node's CPUs are at least this many percent busy.
    pub ring_wakeup_above_cpu_percent: u8,
    /// The reader's drain interval under heavy traffic in the busy mode.
    pub ring_busy_drain: Option<Duration>,
    /// How often the ring is drained; None = the kernel wakes the reader for every packet.
    pub ring_poll_interval: Option<Duration>,
    /// Transports to capture, comma-separated: any of tcp, udp, icmp.
    pub protocols: String,
    /// When not empty, only packets with one of these ports (either side) are captured.
    pub ports: Vec<u16>,
    /// Cut TSO/GSO/GRO packets into the wire segments they stand for.
    pub gso_segments: bool,
    /// Payload bytes copied of a TCP segment that starts an HTTP/1 response (0 = `snaplen`).
    pub http_response_snaplen: u32,
    /// How often the kernel counters are logged.
    pub stats_interval: Duration,
    /// How the TC programs are attached.
    pub tc_attach: TcAttach,
    /// TLS plaintext through uprobes on OpenSSL (CNFLOW_TLS); None = off.
    pub tls: Option<TlsOptions>,
}

/// CNFLOW_TLS_* settings of the live capture.
#[derive(Debug, Clone)]
pub struct TlsOptions {
    /// Extra library files to attach to (CNFLOW_TLS_LIBRARIES).
    pub libraries: Vec<std::path::PathBuf>,
    /// The host's /proc (CNFLOW_K8S_PROC_ROOT in `cnflow agent`, else
    /// `/proc`): every process's maps, root, exe, cgroup and sockets are
    /// read under it.
    pub proc_root: std::path::PathBuf,
    /// CNFLOW_TLS_SOCKET_HOOKS=always: the socket tracepoints from the start
    /// instead of on the node's first use of TLS.
    pub socket_hooks_always: bool,
    /// CNFLOW_TLS_PROBE_PLACEMENT.
    pub placement: tls_sites::Placement,
}

impl Default for TlsOptions {
    fn default() -> Self {
        TlsOptions {
            libraries: Vec::new(),
            proc_root: std::path::PathBuf::from("/proc"),
            socket_hooks_always: false,
            placement: tls_sites::Placement::default(),
        }
    }
}

/// How the TC programs are attached (CNFLOW_TC_ATTACH).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TcAttach {
    /// TCX where the kernel has it (≥ 6.6), else netlink with a warning.
    #[default]
    Auto,
    /// TCX links: detached by the kernel when cnflow exits, however it exits.
    Tcx,
    /// A clsact qdisc and a cls_bpf filter (direct action): kernels without TCX.
    Netlink,
}

impl TcAttach {
    pub fn parse(s: &str) -> anyhow::Result<Self> {
        Ok(match s.trim().to_ascii_lowercase().as_str() {
            "" | "auto" => TcAttach::Auto,
            "tcx" => TcAttach::Tcx,
            "netlink" | "tc" | "clsact" => TcAttach::Netlink,
            other => anyhow::bail!("unknown attach mode {other:?} (expected auto, tcx or netlink)"),
        })
    }

    /// Auto resolved for the running kernel.
    pub fn resolve(self) -> Self {
        match self {
            TcAttach::Auto if !kernel_has_tcx() => TcAttach::Netlink,
            TcAttach::Auto => TcAttach::Tcx,
            other => other,
        }
    }
}

/// TCX links came with Linux 6.6.
pub fn kernel_has_tcx() -> bool {
    use aya::util::KernelVersion;
    KernelVersion::current().map(|v| v >= KernelVersion::new(6, 6, 0)).unwrap_or(true)
}

/// Direction of a packet relative to the interface it was seen on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Ingress,
    Egress,
}

/// Transport-layer facts of a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "proto", rename_all = "lowercase")]
pub enum L4 {
    Tcp {
        seq: u32,
        ack: u32,
        flags: u8,
    },
    Udp,
    /// ICMP (v4 or v6). `payload` holds the whole ICMP message from its type byte.
    Icmp {
        v6: bool,
    },
}

/// One packet as seen by a capture source.
#[derive(Debug, Clone, Serialize)]
pub struct PacketEvent {
    /// Wall-clock time, nanoseconds since the Unix epoch.
    pub ts_ns: u64,
    pub ifindex: u32,
    pub direction: Direction,
    pub src: IpAddr,
    pub dst: IpAddr,
    /// 0 for ICMP.
    pub src_port: u16,
    /// 0 for ICMP.
    pub dst_port: u16,
    pub l4: L4,
    /// Original L4 payload length on the wire (may exceed `payload.len()`).
    pub payload_len: u32,
    /// Captured prefix of the payload.
    #[serde(skip)]
    pub payload: Bytes,
}

impl PacketEvent {
    /// Bytes of the payload that were not captured (snap length smaller than packet).
    pub fn truncated_bytes(&self) -> u32 {
        self.payload_len.saturating_sub(self.payload.len() as u32)
    }
}
