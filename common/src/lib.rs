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
    pub _pad: [u8; 2],
    pub src_addr: [u8; 16],
    pub dst_addr: [u8; 16],
    pub payload: [u8; MAX_PAYLOAD],
}

/// Bytes of a `PacketRecord` before `payload`. Ring entries are this header
/// followed by `cap_len` payload bytes (not the whole fixed-size struct).
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
/// TSO/GSO/GRO packets cut back into one record per wire segment.
pub const CNT_GSO_SPLIT: u32 = 7;
pub const NUM_COUNTERS: u32 = 8;

/// Names of the counters, indexed by `CNT_*` (the `reason` attribute in userspace).
pub const COUNTER_NAMES: [&str; 8] =
    ["seen", "filtered", "emitted", "ring_full", "not_ip", "truncated", "no_payload", "gso_split"];

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
    /// until the ring holds at least this many bytes (userspace also drains
    /// on a timer). 0 = wake the reader for every record.
    pub wakeup_bytes: u32,
}

/// Capture TCP / UDP / ICMP(v6). A cleared bit filters the protocol out.
pub const CFG_TCP: u32 = 1 << 0;
pub const CFG_UDP: u32 = 1 << 1;
pub const CFG_ICMP: u32 = 1 << 2;
/// When set, only ports present in `PORT_FILTER` (either side) are captured.
pub const CFG_PORT_ALLOWLIST: u32 = 1 << 3;
/// When set, TSO/GSO/GRO packets are cut into one record per wire segment.
pub const CFG_SPLIT_GSO: u32 = 1 << 4;

#[cfg(feature = "user")]
mod user {
    unsafe impl aya::Pod for super::PacketRecord {}
    unsafe impl aya::Pod for super::CaptureConfig {}
}
