//! L7 protocol detection and decoding. A [`Dispatcher`] receives reassembled
//! flow events, picks a decoder per connection by content (ports are only a
//! hint), and collects the [`Exchange`]s the decoders produce.
//!
//! One folder per protocol (probe, decoder, detail type, span mapping), all
//! listed once in [`registry`]; see its docs for adding one. The rest is
//! shared: [`detect`] and [`dispatch`] (choosing a decoder), [`exchange`]
//! (the output type and request/response pairing), [`resync`] and
//! [`span_common`] (helpers for decoders and span mappings).
use crate::flow::{CloseReason, Conn, StreamDir};
use crate::protocol::exchange::Exchange;

// The machinery.
pub mod detect;
pub mod exchange;
pub mod registry;
pub mod resync;
pub mod span_common;
pub mod spare;
#[doc(hidden)]
pub mod testutil;

// The protocols (each one also a line in registry.rs).
pub mod amqp;
pub mod dns;
/// Shared by http1 and http2 (not a registry entry).
pub mod http;
pub mod http1;
pub mod http2;
pub mod icmp;
pub mod kafka;
pub mod memcached;
pub mod mongodb;
pub mod mqtt;
pub mod mysql;
pub mod nats;
pub mod postgres;
pub mod redis;
/// SQL text helpers shared by the SQL database protocols (not a registry entry).
pub mod sql;

/// Result of probing the first bytes of a connection for a protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probe {
    /// Certainly not this protocol.
    No,
    /// Could be, but more bytes are needed to tell.
    NeedMore,
    /// This protocol (confidence 0..=100; the dispatcher picks the highest).
    Yes(u8),
}

impl Probe {
    /// The stronger of two answers (for two directions or two looks at one
    /// flow): the higher `Yes`, else `NeedMore` if either waits.
    pub fn merge(self, other: Probe) -> Probe {
        match (self, other) {
            (Probe::Yes(x), Probe::Yes(y)) => Probe::Yes(x.max(y)),
            (Probe::Yes(x), _) | (_, Probe::Yes(x)) => Probe::Yes(x),
            (Probe::NeedMore, _) | (_, Probe::NeedMore) => Probe::NeedMore,
            _ => Probe::No,
        }
    }
}

/// Output context handed to decoders.
pub struct Emit<'a> {
    pub conn: &'a Conn,
    pub out: &'a mut Vec<Exchange>,
}

impl Emit<'_> {
    pub fn push(&mut self, ex: Exchange) {
        self.out.push(ex);
    }
}

/// Settings decoders need (from the agent config).
#[derive(Debug, Clone)]
pub struct DecodeConfig {
    /// A request without a response after this long becomes a timeout exchange.
    pub request_timeout_ns: u64,
    /// Max pending requests per connection before the oldest is given up.
    pub max_pending_per_conn: usize,
    /// Max bytes a decoder buffers per direction while waiting for a whole message header.
    pub max_buffer_per_dir: usize,
    /// Decode what only spans (and printed exchanges) show: database
    /// statement texts (`db.query.text`; Redis builds them per command), and
    /// an HTTP/1 request's user agent, query string and trace-context
    /// headers. Off when nothing reads them: an agent whose outputs take no
    /// spans and no exchanges records metrics only, and no metric carries
    /// any of these.
    pub span_fields: bool,
}

impl Default for DecodeConfig {
    fn default() -> Self {
        Self {
            request_timeout_ns: 30_000_000_000,
            max_pending_per_conn: 1024,
            max_buffer_per_dir: 64 * 1024,
            span_fields: true,
        }
    }
}

/// A per-connection decoder for one protocol. Implementations must never
/// panic on any input and must keep their memory bounded.
pub trait ConnDecoder: Send {
    fn on_data(&mut self, dir: StreamDir, ts_ns: u64, data: &[u8], out: &mut Emit);
    /// Bytes missing from the stream. Decoders skip them when they fall inside
    /// a body, or resynchronise (and mark exchanges partial) otherwise.
    fn on_gap(&mut self, dir: StreamDir, ts_ns: u64, len: u64, out: &mut Emit);
    /// UDP/ICMP datagram.
    fn on_datagram(&mut self, _dir: StreamDir, _ts_ns: u64, _data: &[u8], _orig_len: u32, _out: &mut Emit) {}
    /// Connection ended: flush pending requests as Timeout/Reset exchanges.
    fn on_close(&mut self, ts_ns: u64, reason: CloseReason, out: &mut Emit);
    /// Give up requests older than `deadline_ns` (emit them as Timeout).
    fn expire(&mut self, deadline_ns: u64, out: &mut Emit);
}

pub mod dispatch;
pub use dispatch::Dispatcher;
