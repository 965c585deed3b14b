//! Agent configuration from `CNFLOW_*` environment variables (envy), plus the
//! standard `OTEL_*` variables read by the export module. Bad values fail at
//! start-up with a message naming the variable.
use crate::capture::CaptureSettings;
use crate::env_vars::{EnvVars, VarDoc};
use crate::flow::FlowConfig;
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

fn d_tc_attach() -> String {
    "auto".into()
}
fn d_snaplen() -> u32 {
    2048
}
fn d_http_response_snaplen() -> u32 {
    1024
}
fn d_ring() -> u32 {
    32 * 1024 * 1024
}
fn d_ring_poll() -> u64 {
    10
}
fn d_wakeup_cpu() -> u8 {
    90
}
fn d_wakeup_records() -> u32 {
    128
}
fn d_protocols() -> String {
    "tcp,udp,icmp".into()
}
fn d_max_flows() -> usize {
    65_536
}
fn d_flow_buf() -> usize {
    256 * 1024
}
fn d_idle() -> u64 {
    120
}
fn d_req_timeout() -> u64 {
    30
}
fn d_pending() -> usize {
    1024
}
fn d_true() -> bool {
    true
}
fn d_stats() -> u64 {
    10
}
/// See `agent::sched`: measured against the kernel default in README "Live overhead".
fn d_slice() -> u64 {
    100
}
fn d_socket_hooks() -> String {
    "first_use".into()
}
fn d_probe_placement() -> String {
    "emulated".into()
}

/// Settings of the capture agent (`cnflow run` / `cnflow agent` / `cnflow replay`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AgentConfig {
    /// Comma-separated interface names.
    #[serde(default)]
    pub interfaces: Option<String>,
    /// Payload bytes copied per packet by the kernel (1..=4096).
    #[serde(default = "d_snaplen")]
    pub snaplen: u32,
    /// Size of the kernel→userspace ring buffer (power of two, ≥ 64 KiB).
    #[serde(default = "d_ring")]
    pub ring_buffer_bytes: u32,
    /// How often the ring buffer is drained.
    #[serde(default = "d_ring_poll")]
    pub ring_poll_interval_ms: u64,
    /// Record bytes a CPU writes before the kernel wakes the ring reader early (0: 1/8 of its ring).
    #[serde(default)]
    pub ring_wakeup_bytes: u32,
    /// Records a CPU writes before the kernel wakes the ring reader early (0: none).
    #[serde(default = "d_wakeup_records")]
    pub ring_wakeup_records: u32,
    /// The ring reader's drain interval under heavy traffic while the node is busy (0: off).
    #[serde(default)]
    pub ring_busy_drain_us: u64,
    /// When set (1..=100), the busy mode only while the node's CPUs are at least this busy.
    #[serde(default = "d_wakeup_cpu")]
    pub ring_wakeup_above_cpu_percent: u8,
    /// Transports to capture: any of tcp, udp, icmp.
    #[serde(default = "d_protocols")]
    pub capture_protocols: String,
    /// When set, only packets with one of these ports (either side) are captured (ICMP always passes).
    #[serde(default)]
    pub capture_ports: Option<String>,
    /// Cut TSO/GSO/GRO packets into the wire segments they stand for, so CNFLOW_SNAPLEN applies per wire packet.
    #[serde(default = "d_true")]
    pub capture_gso_segments: bool,
    /// Payload bytes copied of a TCP segment that starts an HTTP/1 response
    /// (0 = CNFLOW_SNAPLEN applies to it too).
    #[serde(default = "d_http_response_snaplen")]
    pub http_response_snaplen: u32,
    /// How the TC programs are attached: auto, tcx or netlink.
    #[serde(default = "d_tc_attach")]
    pub tc_attach: String,
    /// Flow-table capacity.
    #[serde(default = "d_max_flows")]
    pub max_flows: usize,
    /// Out-of-order bytes buffered per flow direction before skipping ahead (counted).
    #[serde(default = "d_flow_buf")]
    pub max_flow_buffer_bytes: usize,
    /// Flows idle this long are closed.
    #[serde(default = "d_idle")]
    pub flow_idle_timeout_secs: u64,
    /// A request unanswered this long becomes an error span.
    #[serde(default = "d_req_timeout")]
    pub request_timeout_secs: u64,
    /// Pending requests kept per connection.
    #[serde(default = "d_pending")]
    pub max_pending_requests: usize,
    /// Replace url.query values and db/messaging arguments with '?'.
    #[serde(default = "d_true")]
    pub mask_query_values: bool,
    /// In Kubernetes mode, also capture on host interfaces.
    #[serde(default)]
    pub capture_host: bool,
    /// How often counters are logged.
    #[serde(default = "d_stats")]
    pub stats_interval_secs: u64,
    /// Listen address of /healthz and /readyz.
    #[serde(default)]
    pub health_addr: Option<String>,
    /// Decrypted TLS traffic through uprobes on OpenSSL's SSL_read/SSL_write.
    #[serde(default = "d_true")]
    pub tls: bool,
    /// Comma-separated extra library files to attach the TLS uprobes to.
    #[serde(default)]
    pub tls_libraries: Option<String>,
    /// When the socket tracepoints of the TLS capture are attached.
    #[serde(default = "d_socket_hooks")]
    pub tls_socket_hooks: String,
    /// Where on OpenSSL's functions the TLS uprobes go.
    #[serde(default = "d_probe_placement")]
    pub tls_probe_placement: String,
    /// Scheduler time slice of the agent's threads in µs (0 = the kernel's default).
    #[serde(default = "d_slice")]
    pub sched_slice_us: u64,
}

impl EnvVars for AgentConfig {
    const PREFIX: &'static str = "CNFLOW_";
    const VARS: &'static [VarDoc] = &[
        VarDoc::new("CNFLOW_INTERFACES", "comma-separated interface names; unset, empty or \"auto\" = every up, non-loopback interface."),
        VarDoc::new("CNFLOW_SNAPLEN", "payload bytes copied per packet by the kernel (1..=4096)."),
        VarDoc::new("CNFLOW_RING_BUFFER_BYTES", "bytes of the kernel→userspace ring buffers (power of two, ≥ 64 KiB), shared by one ring per CPU (up to 64), each the largest power of two ≤ its share and ≥ 64 KiB."),
        VarDoc::new("CNFLOW_RING_POLL_INTERVAL_MS", "how often the ring buffer is drained when idle (while packets arrive: every 2 ms, every 1 ms while they arrive at ≥ 100k records/s, CNFLOW_RING_BUSY_DRAIN_US then while the node is busy, or this interval when shorter, so the agent works in short bursts); the kernel wakes the reader sooner once a CPU has written 1/8 of its ring, or the early-wakeup limits below. 0 = wake the reader for every packet (more CPU per packet)."),
        VarDoc::new("CNFLOW_RING_BUSY_DRAIN_US", "while the node's CPUs are busy (CNFLOW_RING_WAKEUP_ABOVE_CPU_PERCENT) and records arrive at ≥ 100k/s, the ring reader also drains this often (µs, on a timerfd: fires on the reader's CPU and wakes only it). With CNFLOW_RING_WAKEUP_RECORDS=0 it replaces the wakeups the TC programs force: 70–90 ns less eBPF time per packet on saturated cores, but ~3.5 points less wrk throughput and ~5% more agent CPU per request in alternated runs (README, Session 30). 0 (default) = off; else 50..=10000."),
        VarDoc::new("CNFLOW_RING_WAKEUP_RECORDS", "records a CPU writes before the kernel wakes the ring reader early while the node is busy (at most one such wakeup per CPU every 100 µs; each is an irq_work on the workload's CPU, charged to the packet that forces it): short, frequent drains whose length follows the reader's work (per record), which delay the workload's requests less on saturated CPUs but cost CPU and latency when there is idle capacity, hence CNFLOW_RING_WAKEUP_ABOVE_CPU_PERCENT. 0 = by bytes only (CNFLOW_RING_WAKEUP_BYTES)."),
        VarDoc::new("CNFLOW_RING_WAKEUP_BYTES", "record bytes a CPU writes before the kernel wakes the ring reader early while the node is busy, besides CNFLOW_RING_WAKEUP_RECORDS (same spacing). 0 (default) = 1/8 of its ring, the bound that always applies; ≥ 4096 otherwise."),
        VarDoc::new("CNFLOW_RING_WAKEUP_ABOVE_CPU_PERCENT", "the busy mode (CNFLOW_RING_BUSY_DRAIN_US, CNFLOW_RING_WAKEUP_RECORDS, CNFLOW_RING_WAKEUP_BYTES) only while the node's CPUs are at least this many percent busy (/proc/stat every 250 ms; off again 10 points below); otherwise the reader drains every 1 ms under heavy traffic, 2 ms under light traffic. 0 = busy mode always."),
        VarDoc::new("CNFLOW_CAPTURE_PROTOCOLS", "transports to capture: any of tcp, udp, icmp."),
        VarDoc::new("CNFLOW_CAPTURE_PORTS", "when set, only packets with one of these ports (either side) are captured (ICMP always passes)."),
        VarDoc::new("CNFLOW_HTTP_RESPONSE_SNAPLEN", "payload bytes the kernel copies of a TCP segment that starts with an HTTP/1.0 or HTTP/1.1 status line, when fewer than CNFLOW_SNAPLEN: the response head (status line and headers) fits, and the body bytes beyond, which the HTTP/1 decoder only counts, arrive as a gap (counter http_body_cut). A longer head keeps its status code and is marked partial. 0 = CNFLOW_SNAPLEN; else 128..=4096."),
        VarDoc::new("CNFLOW_CAPTURE_GSO_SEGMENTS", "cut TSO/GSO/GRO packets into the wire segments they stand for, so CNFLOW_SNAPLEN applies per wire packet; false copies only the first CNFLOW_SNAPLEN bytes of each (cheaper for bulk transfers, but large HTTP/2, gRPC and Kafka messages then lose frame boundaries)."),
        VarDoc::new("CNFLOW_TC_ATTACH", "auto: TCX links on kernels ≥ 6.6, else a clsact filter (with a warning); tcx; netlink: a clsact cls_bpf filter (direct action, priority 1, never exclusive: other filters still run), for kernels without TCX. Netlink filters outlive a killed agent, so the next start removes cnflow's stale ones."),
        VarDoc::new("CNFLOW_MAX_FLOWS", "flow-table capacity; the least recently active flow is evicted (and counted) beyond it."),
        VarDoc::new("CNFLOW_MAX_FLOW_BUFFER_BYTES", "out-of-order bytes buffered per flow direction before skipping ahead (counted)."),
        VarDoc::new("CNFLOW_FLOW_IDLE_TIMEOUT_SECS", "flows idle this long are closed."),
        VarDoc::new("CNFLOW_REQUEST_TIMEOUT_SECS", "a request unanswered this long becomes an error span."),
        VarDoc::new("CNFLOW_MAX_PENDING_REQUESTS", "pending requests kept per connection."),
        VarDoc::new("CNFLOW_MASK_QUERY_VALUES", "true: every value in url.query becomes '?' (`user=alice&x=` → `user=?&x=`; keys and empty values kept); false: the query as sent. Database statements are masked separately (CNFLOW_UNMASK_DB_STATEMENTS)."),
        VarDoc::new("CNFLOW_CAPTURE_HOST", "in Kubernetes mode, also capture on host interfaces."),
        VarDoc::new("CNFLOW_STATS_INTERVAL_SECS", "how often counters are logged."),
        VarDoc::new("CNFLOW_HEALTH_ADDR", "listen address of /healthz and /readyz; unset = 0.0.0.0:13134 for `cnflow agent`, off for `cnflow run`; \"off\" disables."),
        VarDoc::new("CNFLOW_TLS", "true: plaintext of TLS connections made with OpenSSL (every libssl.so* a process maps, in containers too, and executables or libraries that link OpenSSL/BoringSSL statically with their SSL_read/SSL_write symbols present) is read with uprobes on SSL_read/SSL_write and decoded like captured traffic (url.scheme=https, tls.protocol.*); false: off. Needs hostPID, CAP_SYS_PTRACE (/proc/PID/root), CAP_BPF, CAP_PERFMON and CAP_SYS_ADMIN (uprobe perf events), and Linux ≥ 6.3 for the socket 5-tuple."),
        VarDoc::new("CNFLOW_SCHED_SLICE_US", "time slice of the agent's threads for the kernel's EEVDF scheduler (Linux ≥ 6.12; ignored before), 100–100000 µs; 0 = the kernel's default (~1.5 ms on 2 cores). A short slice lets the node's workloads preempt the agent's bursts of decoding sooner (lower p99 latency of the observed services) without changing its share of CPU."),
        VarDoc::new("CNFLOW_TLS_SOCKET_HOOKS", "when the TLS capture attaches its socket tracepoints (sock_send_length/sock_recv_length, which give each SSL call its 5-tuple and fire on every socket send and receive of every process): `first_use` (default) when a process on the node first creates an OpenSSL connection (SSL_new) or makes an SSL call, so nodes without OpenSSL TLS pay nothing for them; `always`: from the start (calls of a connection whose reads and writes all finish within the ~0.5 ms the attach takes then keep their 5-tuple too)."),
        VarDoc::new("CNFLOW_TLS_PROBE_PLACEMENT", "where on OpenSSL's read and write functions the TLS uprobes go: `emulated` (default) on an instruction the kernel emulates when the code allows it (after a leading endbr64, or on the internal function that SSL_read_ex/SSL_write_ex pass their arguments to unchanged), because any other probed instruction is single-stepped, a second trap that cost 16–17 µs per SSL call on the VMs measured (README, Session 34); `entry`: on each symbol's first byte."),
        VarDoc::new("CNFLOW_TLS_LIBRARIES", "comma-separated extra library files to attach the TLS uprobes to, attached even while no process maps them; every libssl.so* a process maps, and every mapped executable file that defines the SSL_* symbols, is found without it."),
    ];
}

impl Default for AgentConfig {
    fn default() -> Self {
        crate::env_vars::serde_defaults()
    }
}

impl AgentConfig {
    pub fn from_vars(vars: impl IntoIterator<Item = (String, String)>) -> Result<Self> {
        let cfg: Self = envy::prefixed("CNFLOW_")
            .from_iter(vars.into_iter().filter(|(k, _)| k.starts_with("CNFLOW_")))
            .map_err(|e| anyhow::anyhow!("invalid agent configuration: {e}"))?;
        cfg.validate()?;
        Ok(cfg)
    }

    pub fn validate(&self) -> Result<()> {
        if self.snaplen == 0 || self.snaplen as usize > cnflow_common::MAX_PAYLOAD {
            bail!("CNFLOW_SNAPLEN must be between 1 and {} (got {})", cnflow_common::MAX_PAYLOAD, self.snaplen);
        }
        if !self.ring_buffer_bytes.is_power_of_two() || self.ring_buffer_bytes < 64 * 1024 {
            bail!("CNFLOW_RING_BUFFER_BYTES must be a power of two ≥ 65536 (got {})", self.ring_buffer_bytes);
        }
        let head_limits = cnflow_common::HTTP_HEAD_MIN as u32..=cnflow_common::MAX_PAYLOAD as u32;
        if self.http_response_snaplen != 0 && !head_limits.contains(&self.http_response_snaplen) {
            bail!(
                "CNFLOW_HTTP_RESPONSE_SNAPLEN must be 0 or between {} and {} (got {})",
                head_limits.start(),
                head_limits.end(),
                self.http_response_snaplen
            );
        }
        if self.ring_wakeup_bytes != 0 && self.ring_wakeup_bytes < 4096 {
            bail!("CNFLOW_RING_WAKEUP_BYTES must be 0 or ≥ 4096 (got {})", self.ring_wakeup_bytes);
        }
        if self.ring_busy_drain_us != 0 && !(50..=10_000).contains(&self.ring_busy_drain_us) {
            bail!("CNFLOW_RING_BUSY_DRAIN_US must be 0 or 50..=10000 (got {})", self.ring_busy_drain_us);
        }
        if self.ring_wakeup_above_cpu_percent > 100 {
            bail!("CNFLOW_RING_WAKEUP_ABOVE_CPU_PERCENT must be 0..=100 (got {})", self.ring_wakeup_above_cpu_percent);
        }
        for p in self.capture_protocols.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            if !matches!(p, "tcp" | "udp" | "icmp") {
                bail!("CNFLOW_CAPTURE_PROTOCOLS: unknown protocol {p:?} (expected tcp, udp, icmp)");
            }
        }
        self.ports().context("CNFLOW_CAPTURE_PORTS")?;
        self.tls_socket_hooks_always()?;
        crate::capture::tls_sites::Placement::parse(&self.tls_probe_placement)?;
        crate::capture::TcAttach::parse(&self.tc_attach).context("CNFLOW_TC_ATTACH")?;
        self.health_socket(true).context("CNFLOW_HEALTH_ADDR")?;
        if self.max_flows == 0 {
            bail!("CNFLOW_MAX_FLOWS must be > 0");
        }
        if self.sched_slice_us != 0 && !(100..=100_000).contains(&self.sched_slice_us) {
            bail!("CNFLOW_SCHED_SLICE_US must be 0 or between 100 and 100000 (got {})", self.sched_slice_us);
        }
        Ok(())
    }

    /// Interface names from CNFLOW_INTERFACES, or None for auto mode.
    pub fn interface_list(&self) -> Option<Vec<String>> {
        let s = self.interfaces.as_deref()?.trim();
        if s.is_empty() || s == "auto" {
            return None;
        }
        Some(s.split(',').map(|x| x.trim().to_string()).filter(|x| !x.is_empty()).collect())
    }

    /// Where the health endpoint listens (None = off). `agent_mode` picks the default.
    pub fn health_socket(&self, agent_mode: bool) -> Result<Option<std::net::SocketAddr>> {
        match self.health_addr.as_deref().map(str::trim) {
            Some("off") => Ok(None),
            Some(s) if !s.is_empty() => Ok(Some(s.parse().with_context(|| format!("invalid address {s:?}"))?)),
            _ if agent_mode => Ok(Some(std::net::SocketAddr::from(([0, 0, 0, 0], 13134)))),
            _ => Ok(None),
        }
    }

    /// The live capture's part of the configuration.
    pub fn capture_settings(&self) -> Result<CaptureSettings> {
        let socket_hooks_always = self.tls_socket_hooks_always()?;
        Ok(CaptureSettings {
            interfaces: self.interface_list(),
            snaplen: self.snaplen,
            ring_buffer_bytes: self.ring_buffer_bytes,
            ring_wakeup_bytes: self.ring_wakeup_bytes,
            ring_wakeup_records: self.ring_wakeup_records,
            ring_wakeup_above_cpu_percent: self.ring_wakeup_above_cpu_percent,
            ring_busy_drain: (self.ring_busy_drain_us > 0)
                .then(|| std::time::Duration::from_micros(self.ring_busy_drain_us)),
            ring_poll_interval: (self.ring_poll_interval_ms > 0)
                .then(|| std::time::Duration::from_millis(self.ring_poll_interval_ms)),
            protocols: self.capture_protocols.clone(),
            ports: self.ports().context("CNFLOW_CAPTURE_PORTS")?,
            gso_segments: self.capture_gso_segments,
            http_response_snaplen: self.http_response_snaplen,
            tc_attach: crate::capture::TcAttach::parse(&self.tc_attach).context("CNFLOW_TC_ATTACH")?,
            stats_interval: std::time::Duration::from_secs(self.stats_interval_secs),
            tls: self.tls.then_some(crate::capture::TlsOptions {
                libraries: self
                    .tls_libraries
                    .as_deref()
                    .unwrap_or("")
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(std::path::PathBuf::from)
                    .collect(),
                socket_hooks_always,
                placement: crate::capture::tls_sites::Placement::parse(&self.tls_probe_placement)?,
                // CNFLOW_K8S_PROC_ROOT replaces it in `cnflow agent` (see agent::start_kubernetes).
                ..Default::default()
            }),
        })
    }

    /// CNFLOW_TLS_SOCKET_HOOKS: true for `always`.
    fn tls_socket_hooks_always(&self) -> Result<bool> {
        match self.tls_socket_hooks.as_str() {
            "first_use" => Ok(false),
            "always" => Ok(true),
            other => bail!("CNFLOW_TLS_SOCKET_HOOKS must be first_use or always (got {other:?})"),
        }
    }

    pub fn ports(&self) -> Result<Vec<u16>> {
        let Some(s) = self.capture_ports.as_deref() else { return Ok(vec![]) };
        s.split(',')
            .map(str::trim)
            .filter(|x| !x.is_empty())
            .map(|x| x.parse::<u16>().with_context(|| format!("invalid port {x:?}")))
            .collect()
    }
}

impl From<&AgentConfig> for FlowConfig {
    fn from(c: &AgentConfig) -> Self {
        Self {
            max_flows: c.max_flows.max(1),
            max_buffer_bytes: c.max_flow_buffer_bytes,
            idle_timeout_ns: c.flow_idle_timeout_secs.saturating_mul(1_000_000_000),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    fn vars(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
    }
    #[test]
    fn defaults_and_overrides() {
        let c =
            AgentConfig::from_vars(vars(&[("CNFLOW_SNAPLEN", "512"), ("CNFLOW_INTERFACES", "eth0, veth1")])).unwrap();
        assert_eq!(c.snaplen, 512);
        assert_eq!(c.interface_list().unwrap(), vec!["eth0", "veth1"]);
        assert_eq!(AgentConfig::default().snaplen, 2048);
        assert_eq!(AgentConfig::default().capture_settings().unwrap().ring_wakeup_bytes, 0);
        assert_eq!(AgentConfig::default().capture_settings().unwrap().ring_wakeup_above_cpu_percent, 90);
        assert_eq!(AgentConfig::default().capture_settings().unwrap().ring_wakeup_records, 128);
        assert_eq!(AgentConfig::default().capture_settings().unwrap().ring_busy_drain, None);
        let c =
            AgentConfig::from_vars(vars(&[("CNFLOW_RING_WAKEUP_RECORDS", "0"), ("CNFLOW_RING_BUSY_DRAIN_US", "500")]))
                .unwrap();
        assert_eq!(c.capture_settings().unwrap().ring_wakeup_records, 0);
        assert_eq!(c.capture_settings().unwrap().ring_busy_drain, Some(std::time::Duration::from_micros(500)));
        let c = AgentConfig::from_vars(vars(&[("CNFLOW_RING_WAKEUP_BYTES", "262144")])).unwrap();
        assert_eq!(c.capture_settings().unwrap().ring_wakeup_bytes, 262144);
        assert_eq!(AgentConfig::default().capture_settings().unwrap().http_response_snaplen, 1024);
        for (v, want) in [("0", 0), ("128", 128), ("4096", 4096)] {
            let c = AgentConfig::from_vars(vars(&[("CNFLOW_HTTP_RESPONSE_SNAPLEN", v)])).unwrap();
            assert_eq!(c.capture_settings().unwrap().http_response_snaplen, want);
        }
    }
    #[test]
    fn flow_defaults_are_the_agent_defaults() {
        let (a, b) = (FlowConfig::default(), FlowConfig::from(&AgentConfig::default()));
        assert_eq!(
            (a.max_flows, a.max_buffer_bytes, a.idle_timeout_ns),
            (b.max_flows, b.max_buffer_bytes, b.idle_timeout_ns)
        );
    }
    #[test]
    fn bad_values_name_the_variable() {
        let e = AgentConfig::from_vars(vars(&[("CNFLOW_SNAPLEN", "abc")])).unwrap_err().to_string();
        assert!(e.contains("snaplen") || e.contains("SNAPLEN"), "{e}");
        let e = AgentConfig::from_vars(vars(&[("CNFLOW_SNAPLEN", "99999")])).unwrap_err().to_string();
        assert!(e.contains("CNFLOW_SNAPLEN"), "{e}");
        for v in ["64", "4097"] {
            let e = AgentConfig::from_vars(vars(&[("CNFLOW_HTTP_RESPONSE_SNAPLEN", v)])).unwrap_err().to_string();
            assert!(e.contains("CNFLOW_HTTP_RESPONSE_SNAPLEN"), "{e}");
        }
        let e = AgentConfig::from_vars(vars(&[("CNFLOW_RING_WAKEUP_BYTES", "100")])).unwrap_err().to_string();
        assert!(e.contains("CNFLOW_RING_WAKEUP_BYTES"), "{e}");
        for bad in ["10", "20000"] {
            let e = AgentConfig::from_vars(vars(&[("CNFLOW_RING_BUSY_DRAIN_US", bad)])).unwrap_err().to_string();
            assert!(e.contains("CNFLOW_RING_BUSY_DRAIN_US"), "{e}");
        }
        let e = AgentConfig::from_vars(vars(&[("CNFLOW_CAPTURE_PORTS", "80,x")])).unwrap_err();
        assert!(format!("{e:#}").contains("CNFLOW_CAPTURE_PORTS"));
        let e = AgentConfig::from_vars(vars(&[("CNFLOW_TLS_SOCKET_HOOKS", "lazy")])).unwrap_err().to_string();
        assert!(e.contains("CNFLOW_TLS_SOCKET_HOOKS"), "{e}");
        let e = AgentConfig::from_vars(vars(&[("CNFLOW_TLS_PROBE_PLACEMENT", "middle")])).unwrap_err().to_string();
        assert!(e.contains("CNFLOW_TLS_PROBE_PLACEMENT") && e.contains("emulated or entry"), "{e}");
        let ok = AgentConfig::from_vars(vars(&[("CNFLOW_TLS_SOCKET_HOOKS", "always")])).unwrap();
        assert!(ok.capture_settings().unwrap().tls.unwrap().socket_hooks_always);
        assert!(!AgentConfig::default().capture_settings().unwrap().tls.unwrap().socket_hooks_always);
    }
}
