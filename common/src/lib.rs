//! Types shared between the eBPF TC program and the userspace agent.
//! Everything here is `#[repr(C)]`, fixed-size and `no_std`, because the same
//! bytes are written by the kernel into a RingBuf and read back by the agent.
#![no_std]

/// Compile-time upper bound for payload bytes copied per packet. The run-time
/// snap length (`CNFLOW_SNAPLEN`) may be smaller, never larger. Power of two so
/// the verifier can bound `len & (MAX_PAYLOAD - 1)`.
pub const MAX_PAYLOAD: usize = 4096;

pub const DIR_INGRESS: u8 = 0;
pub const DIR_EGRESS: u8 = 1;

pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;
pub const PROTO_ICMP: u8 = 1;
pub const PROTO_ICMPV6: u8 = 58;

pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_PSH: u8 = 0x08;
pub const TCP_ACK: u8 = 0x10;

/// One captured packet (assembled in a per-CPU scratch slot; the ring holds
/// the header and the captured payload prefix only). Addresses are IPv6 or IPv4-mapped-in-the-first-4-bytes
/// depending on `family` (4 or 6), stored in network byte order.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct PacketRecord {
    /// bpf_ktime_get_ns (CLOCK_MONOTONIC); userspace converts to wall-clock.
    pub ts_ns: u64,
    pub ifindex: u32,
    /// Original L4 payload length (bytes after the TCP/UDP header, or the
    /// whole ICMP message including its type/code header).
    pub payload_len: u32,
    pub tcp_seq: u32,
    pub tcp_ack: u32,
    /// Number of valid bytes in `payload`.
    pub cap_len: u16,
    pub src_port: u16,
    pub dst_port: u16,
    pub direction: u8,
    pub family: u8,
    pub proto: u8,
    pub tcp_flags: u8,
    /// 1 when the payload was copied only up to
    /// `CaptureConfig::http_response_snaplen` (an HTTP/1 response's head),
    /// else 0. The TC program's own flag (it decides `CNT_TRUNCATED`);
    /// userspace needs only `cap_len` < `payload_len`, cut or truncated alike.
    pub http_cut: u8,
    pub _pad: u8,
    pub src_addr: [u8; 16],
    pub dst_addr: [u8; 16],
    pub payload: [u8; MAX_PAYLOAD],
}

/// Bytes of a `PacketRecord` before `payload`. Ring entries are this header
/// followed by `cap_len` payload bytes (not the whole fixed-size struct),
/// padded to the TC program's next size class (readers use `cap_len`).
pub const PACKET_HEADER_LEN: usize = core::mem::offset_of!(PacketRecord, payload);

/// Indexes into the per-CPU `COUNTERS` array.
pub const CNT_SEEN: u32 = 0;
pub const CNT_FILTERED: u32 = 1;
pub const CNT_EMITTED: u32 = 2;
pub const CNT_RING_FULL: u32 = 3;
pub const CNT_NOT_IP: u32 = 4;
pub const CNT_TRUNCATED: u32 = 5;
/// TCP segments without payload and without SYN/FIN/RST (pure ACKs), skipped.
pub const CNT_NO_PAYLOAD: u32 = 6;
/// TSO/GSO/GRO packets cut back into one record per wire segment (from a
/// segment that starts an HTTP/1 response head cut at
/// `http_response_snaplen` on, one record: the rest is body).
pub const CNT_GSO_SPLIT: u32 = 7;
/// Tunnel headers removed, one counter per encapsulation (`DECAP_*` order);
/// userspace exports them as `cnflow.capture.decapsulated{encapsulation}`.
pub const CNT_DECAP_VXLAN: u32 = 8;
pub const CNT_DECAP_GENEVE: u32 = 9;
pub const CNT_DECAP_GRE: u32 = 10;
pub const CNT_DECAP_IPIP: u32 = 11;
pub const CNT_DECAP_SIT: u32 = 12;
/// Reader wakeups a CPU forced (the ring's wakeup limits, see `wake_flag`
/// in bpf-programs), and byte limits reached when the reader had already
/// read part of what this CPU wrote since its last one (no wakeup);
/// userspace exports them as `cnflow.capture.ring.wakeups{outcome=forced|not_needed}`.
pub const CNT_WAKEUP_FORCED: u32 = 13;
pub const CNT_WAKEUP_NOT_NEEDED: u32 = 14;
/// TCP segments that start an HTTP/1 response (status line first) longer
/// than `CaptureConfig::http_response_snaplen`: copied up to it only.
pub const CNT_HTTP_BODY_CUT: u32 = 15;
pub const NUM_COUNTERS: u32 = 16;

/// Names of the counters, indexed by `CNT_*` (the `reason` attribute in
/// userspace; `decap_<encapsulation>` for the decapsulation counters).
pub const COUNTER_NAMES: [&str; 16] = [
    "seen",
    "filtered",
    "emitted",
    "ring_full",
    "not_ip",
    "truncated",
    "no_payload",
    "gso_split",
    "decap_vxlan",
    "decap_geneve",
    "decap_gre",
    "decap_ipip",
    "decap_sit",
    "wakeup_forced",
    "wakeup_not_needed",
    "http_body_cut",
];

/// At most this many tunnel headers are removed per packet (kernel and
/// replay alike), which bounds the verifier's and the parser's work.
pub const MAX_DECAP_DEPTH: usize = 3;
/// UDP destination ports of VXLAN (IANA; 8472 = Linux default, Flannel) and Geneve.
pub const VXLAN_PORT: u16 = 4789;
pub const VXLAN_LINUX_PORT: u16 = 8472;
pub const GENEVE_PORT: u16 = 6081;
pub const PROTO_IPIP: u8 = 4;
pub const PROTO_IPV6: u8 = 41;
pub const PROTO_GRE: u8 = 47;

/// At most this many records per GSO/GRO packet (64 KiB of 1 KiB+ segments);
/// a larger BIG TCP packet gets its remainder in the last record.
pub const MAX_GSO_SEGS: usize = 64;

/// Capacity of the `PORT_FILTER` hash map (CNFLOW_CAPTURE_PORTS entries).
pub const MAX_FILTER_PORTS: u32 = 1024;

/// Userspace-controlled settings, slot 0 of the `CONFIG` array map.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct CaptureConfig {
    /// Payload bytes to copy (1..=MAX_PAYLOAD).
    pub snaplen: u32,
    /// Bit flags of `CFG_*`.
    pub flags: u32,
    /// Batched notification: records are written without waking the reader
    /// (userspace drains on a timer); each CPU forces a wakeup after it has
    /// written this many record bytes since its last one. 0 = wake the
    /// reader for every record.
    pub wakeup_bytes: u32,
    /// Record rings in `RINGS` (1..=MAX_RINGS); a CPU writes to ring `cpu % rings`.
    pub rings: u32,
    /// When non-zero (and `wakeup_bytes` is), each CPU also forces a wakeup
    /// after it has written this many records since its last one: the
    /// reader's work per drain follows the record count, not the bytes.
    pub wakeup_records: u32,
    /// When non-zero, a TCP segment whose payload starts with an HTTP/1
    /// status line (`HTTP/1.0` / `HTTP/1.1`) is copied up to this many
    /// bytes instead of `snaplen`: the response head fits, and the body
    /// bytes beyond, which the HTTP/1 decoder only counts, arrive as a gap.
    pub http_response_snaplen: u32,
}

/// Payloads (TCP segments, SSL calls) this short are never cut as HTTP/1
/// responses: the check's load is not worth it for them, and the limits
/// (`http_response_snaplen`) start here.
pub const HTTP_HEAD_MIN: usize = 128;

/// `b`, a payload's first 8 bytes, start an HTTP/1.0 or HTTP/1.1 status line.
#[inline(always)]
pub fn is_http1_status_start(b: [u8; 8]) -> bool {
    let w = u64::from_le_bytes(b);
    w == u64::from_le_bytes(*b"HTTP/1.1") || w == u64::from_le_bytes(*b"HTTP/1.0")
}

/// Entries of the `RINGS` array of record rings.
pub const MAX_RINGS: u32 = 64;

/// Capture TCP / UDP / ICMP(v6). A cleared bit filters the protocol out.
pub const CFG_TCP: u32 = 1 << 0;
pub const CFG_UDP: u32 = 1 << 1;
pub const CFG_ICMP: u32 = 1 << 2;
/// When set, only ports present in `PORT_FILTER` (either side) are captured.
pub const CFG_PORT_ALLOWLIST: u32 = 1 << 3;
/// When set, TSO/GSO/GRO packets are cut into one record per wire segment.
pub const CFG_SPLIT_GSO: u32 = 1 << 4;

// ---- TLS plaintext (uprobes on OpenSSL's SSL_read/SSL_write) ----

/// The plaintext was written by the process (SSL_write*): it leaves the process.
pub const TLS_DIR_WRITE: u8 = 0;
/// The plaintext was read by the process (SSL_read*): it arrived at the process.
pub const TLS_DIR_READ: u8 = 1;

/// One SSL_read/SSL_write call that moved plaintext (assembled in a per-CPU
/// scratch slot; the ring holds the header and `cap_len` data bytes).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct TlsRecord {
    /// bpf_ktime_get_ns at the return of the call.
    pub ts_ns: u64,
    /// bpf_get_current_pid_tgid: tgid (process id) in the upper 32 bits.
    pub pid_tgid: u64,
    /// The `SSL *` of the call: the connection's identity inside the process.
    pub ssl: u64,
    /// Plaintext bytes the call moved (its result).
    pub len: u32,
    /// Bytes of `data` that are valid (≤ len, ≤ snap length).
    pub cap_len: u32,
    /// `TLS_DIR_*`.
    pub direction: u8,
    /// AF_INET (2) or AF_INET6 (10) when the socket under the call was seen
    /// (fentry on tcp_sendmsg/tcp_recvmsg in the same thread), else 0.
    pub family: u8,
    /// First `int` of the `SSL` object: the negotiated version (0x0301..0x0304)
    /// in OpenSSL 1.1 and 3.0/3.1 layouts; anything else means unknown.
    pub tls_version: u16,
    /// Local and remote port of the socket, host byte order.
    pub local_port: u16,
    pub remote_port: u16,
    pub _pad: [u8; 4],
    /// Plaintext bytes this `SSL *` moved in this direction before this call
    /// (counted in the kernel, also for records the ring had no room for, so
    /// a lost record shows up as a gap instead of silently shifted bytes).
    pub offset: u64,
    /// Local and remote address, network byte order (IPv4 in the first 4 bytes).
    pub local_addr: [u8; 16],
    pub remote_addr: [u8; 16],
    pub data: [u8; MAX_PAYLOAD],
}

/// Bytes of a `TlsRecord` before `data`.
pub const TLS_HEADER_LEN: usize = core::mem::offset_of!(TlsRecord, data);

/// Indexes into the per-CPU `TLS_COUNTERS` array.
pub const TLS_CNT_CALLS: u32 = 0;
pub const TLS_CNT_EMITTED: u32 = 1;
pub const TLS_CNT_RING_FULL: u32 = 2;
/// Calls that failed or moved no data (want-read/write, errors, close).
pub const TLS_CNT_NO_DATA: u32 = 3;
/// Records without a socket 5-tuple (no tcp_sendmsg/recvmsg seen in the call).
pub const TLS_CNT_NO_SOCKET: u32 = 4;
pub const TLS_CNT_TRUNCATED: u32 = 5;
/// The user buffer could not be read (paged out, bad pointer).
pub const TLS_CNT_READ_FAILED: u32 = 6;
/// Calls whose plaintext started with an HTTP/1 status line, copied only up
/// to `TlsConfig::http_response_snaplen` (not counted as truncated).
pub const TLS_CNT_HTTP_BODY_CUT: u32 = 7;
pub const TLS_NUM_COUNTERS: u32 = 8;
/// `TLS_IDLE` entries: the plaintext ring's reader and the process-event reader.
pub const TLS_READER_DATA: u32 = 0;
pub const TLS_READER_PROC: u32 = 1;
pub const TLS_COUNTER_NAMES: [&str; 8] =
    ["calls", "emitted", "ring_full", "no_data", "no_socket", "truncated", "read_failed", "http_body_cut"];

/// Settings of the TLS programs, slot 0 of `TLS_CONFIG`.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct TlsConfig {
    /// Plaintext bytes copied per call (1..=MAX_PAYLOAD); 0 = off.
    pub snaplen: u32,
    /// tgid of the agent itself: its own TLS (OTLP export) is not traced.
    pub own_tgid: u32,
    /// Offsets of `skc_v6_daddr` / `skc_v6_rcv_saddr` in `struct sock_common`
    /// (the IPv4 fields and the ports sit at fixed offsets 0..18 on every
    /// kernel); 0 = IPv6 sockets get no 5-tuple.
    pub v6_daddr_off: u32,
    pub v6_saddr_off: u32,
    /// 1 once userspace has attached the socket tracepoints: `SSL_new` and
    /// first calls stop announcing themselves on `TLS_HOOK_EVENTS`.
    pub socket_hooks: u32,
    /// As `CaptureConfig::http_response_snaplen`, for a call's plaintext.
    pub http_response_snaplen: u32,
}

#[cfg(feature = "user")]
mod user {
    unsafe impl aya::Pod for super::PacketRecord {}
    unsafe impl aya::Pod for super::CaptureConfig {}
    unsafe impl aya::Pod for super::TlsRecord {}
    unsafe impl aya::Pod for super::TlsConfig {}
}
