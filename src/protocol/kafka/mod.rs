//! kafka decoder (not built yet).
use super::{ConnDecoder, DecodeConfig, Emit, Probe};
use crate::flow::{CloseReason, Conn, StreamDir};

/// Does the first data of a connection look like kafka? `dir` is the direction of `data`.
pub fn probe(_conn: &Conn, _dir: StreamDir, _data: &[u8]) -> Probe {
    Probe::No
}

pub fn new_decoder(_cfg: &DecodeConfig) -> Box<dyn ConnDecoder> {
    Box::new(Stub)
}

struct Stub;

impl ConnDecoder for Stub {
    fn on_data(&mut self, _dir: StreamDir, _ts_ns: u64, _data: &[u8], _out: &mut Emit) {}
    fn on_gap(&mut self, _dir: StreamDir, _ts_ns: u64, _len: u64, _out: &mut Emit) {}
    fn on_close(&mut self, _ts_ns: u64, _reason: CloseReason, _out: &mut Emit) {}
    fn expire(&mut self, _deadline_ns: u64, _out: &mut Emit) {}
}
