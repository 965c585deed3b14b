//! Chooses a decoder per connection and routes flow events to it.
use super::{ConnDecoder, DecodeConfig, Emit};
use crate::exchange::Exchange;
use crate::flow::{CloseReason, Conn, StreamDir, StreamSink};
use std::collections::HashMap;

pub struct Dispatcher {
    pub cfg: DecodeConfig,
    decoders: HashMap<u64, Box<dyn ConnDecoder>>,
    /// Exchanges produced since the last [`Dispatcher::take`].
    pub out: Vec<Exchange>,
}

impl Dispatcher {
    pub fn new(cfg: DecodeConfig) -> Self {
        Self { cfg, decoders: HashMap::new(), out: Vec::new() }
    }
    pub fn take(&mut self) -> Vec<Exchange> {
        std::mem::take(&mut self.out)
    }
    /// Emit requests older than the request timeout as Timeout exchanges.
    pub fn expire(&mut self, _now_ns: u64) {}
    #[allow(dead_code)]
    fn emit<'a>(conn: &'a Conn, out: &'a mut Vec<Exchange>) -> Emit<'a> {
        Emit { conn, out }
    }
}

impl StreamSink for Dispatcher {
    fn on_data(&mut self, _conn: &Conn, _dir: StreamDir, _ts_ns: u64, _data: &[u8]) {}
    fn on_gap(&mut self, _conn: &Conn, _dir: StreamDir, _ts_ns: u64, _len: u64) {}
    fn on_datagram(&mut self, _conn: &Conn, _dir: StreamDir, _ts_ns: u64, _data: &[u8], _orig_len: u32) {}
    fn on_close(&mut self, conn: &Conn, _ts_ns: u64, _reason: CloseReason) {
        self.decoders.remove(&conn.id);
    }
}
