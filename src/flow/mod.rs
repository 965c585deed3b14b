//! Flow tracking: turns [`PacketEvent`]s into per-connection, per-direction
//! ordered byte streams (TCP) or datagrams (UDP, ICMP), delivered to a
//! [`StreamSink`]. Bounded: caps on flows, buffered bytes and idle time.
use crate::capture::Direction;
use serde::Serialize;
use std::net::SocketAddr;
use std::sync::Arc;

pub mod key;
pub mod recorder;
pub mod role;
pub mod table;
pub mod tcp;
#[cfg(test)]
pub(crate) mod testing;
#[cfg(test)]
mod tests;

pub use key::FlowKey;
pub use recorder::{FlowRecorder, FlowSummary};
pub use table::{FlowConfig, FlowTable};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    Tcp,
    Udp,
    Icmp,
}

/// Direction inside a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StreamDir {
    ToServer,
    ToClient,
}

impl StreamDir {
    /// Position in per-direction arrays (`[T; 2]`): ToServer 0, ToClient 1.
    #[inline]
    pub const fn index(self) -> usize {
        match self {
            StreamDir::ToServer => 0,
            StreamDir::ToClient => 1,
        }
    }
    pub fn flip(self) -> Self {
        match self {
            StreamDir::ToServer => StreamDir::ToClient,
            StreamDir::ToClient => StreamDir::ToServer,
        }
    }
}

/// How the client/server roles of a connection were decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RoleEvidence {
    Syn,
    Port,
    FirstPacket,
}

/// Identity of one connection (or UDP/ICMP pseudo-connection). Shared by all
/// events of the connection; immutable once created.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConnInfo {
    /// Unique for the life of the process.
    pub id: u64,
    pub ifindex: u32,
    pub transport: Transport,
    pub client: SocketAddr,
    pub server: SocketAddr,
    /// Direction (at the interface) of client→server packets. Telemetry uses it,
    /// with the interface's role, to decide CLIENT vs SERVER span kind.
    pub client_to_server: Direction,
    pub evidence: RoleEvidence,
    /// Time of the first packet seen (ns since epoch).
    pub first_ts_ns: u64,
}

pub type Conn = Arc<ConnInfo>;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CloseReason {
    Fin,
    Rst,
    Idle,
    Evicted,
    /// End of a replayed capture.
    EndOfInput,
}

/// Receiver of reassembled data. Implemented by the protocol dispatcher and by
/// test/debug sinks. Data slices are only valid for the duration of the call.
pub trait StreamSink {
    /// In-order stream bytes of a TCP connection.
    fn on_data(&mut self, conn: &Conn, dir: StreamDir, ts_ns: u64, data: &[u8]);
    /// `len` bytes of the stream are missing (lost or not captured); the next
    /// `on_data` continues after them.
    fn on_gap(&mut self, conn: &Conn, dir: StreamDir, ts_ns: u64, len: u64);
    /// One UDP or ICMP datagram; `orig_len` may exceed `data.len()` when truncated.
    fn on_datagram(&mut self, conn: &Conn, dir: StreamDir, ts_ns: u64, data: &[u8], orig_len: u32);
    /// The connection ended; no further events follow for it.
    fn on_close(&mut self, conn: &Conn, ts_ns: u64, reason: CloseReason);
    /// A TCP direction starts: `seq` is the sequence number of its stream
    /// offset 0 (the byte after the SYN, or the first byte seen mid-stream).
    /// Called before that direction's first `on_data`/`on_gap`. Offsets then
    /// count delivered and skipped bytes, so offset N is `seq + N` (mod 2^32).
    fn on_stream_start(&mut self, _conn: &Conn, _dir: StreamDir, _seq: u32) {}
}
