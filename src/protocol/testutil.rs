//! Connections and feeding loops for decoder tests and benchmarks.
use crate::capture::Direction;
use crate::exchange::Exchange;
use crate::flow::{CloseReason, Conn, ConnInfo, RoleEvidence, StreamDir, Transport};
use crate::protocol::{ConnDecoder, Emit};
use std::sync::Arc;

/// A client 10.200.0.1:40000 → server 10.200.0.2:`server_port` connection whose start was seen.
pub fn conn(transport: Transport, server_port: u16) -> Conn {
    conn_with(transport, server_port, RoleEvidence::Syn)
}

pub fn conn_with(transport: Transport, server_port: u16, evidence: RoleEvidence) -> Conn {
    Arc::new(ConnInfo {
        id: 1,
        ifindex: 1,
        transport,
        client: ([10, 200, 0, 1], 40000).into(),
        server: ([10, 200, 0, 2], server_port).into(),
        client_to_server: Direction::Egress,
        evidence,
        first_ts_ns: 0,
    })
}

/// The "valid traffic in any segmentation" proptests: each message of
/// `script` cut into chunks whose sizes cycle through `cuts` (the cycle
/// carries on across messages, so one `cuts` vector covers every boundary).
/// Yields (direction, offset of the chunk in its message, chunk); tests pass
/// the offset as the timestamp, which keeps timestamps increasing per message.
pub fn in_cuts<'a, D: Copy, B: AsRef<[u8]>>(script: &'a [(D, B)], cuts: &[usize]) -> Vec<(D, u64, &'a [u8])> {
    let mut out = Vec::new();
    let mut k = 0;
    for (dir, bytes) in script {
        let (mut rest, mut at) = (bytes.as_ref(), 0u64);
        while !rest.is_empty() {
            let n = cuts[k % cuts.len()].clamp(1, rest.len());
            out.push((*dir, at, &rest[..n]));
            (rest, at, k) = (&rest[n..], at + n as u64, k + 1);
        }
    }
    out
}

/// The decoder benches' loop: each write of `writes` fed to `dec` in
/// `segment`-sized pieces as flow tracking hands them over (one microsecond
/// per piece), then the connection closed. Returns how many exchanges `out`
/// gained.
pub fn feed_writes<B: AsRef<[u8]>>(
    dec: &mut dyn ConnDecoder,
    conn: &Conn,
    writes: &[(StreamDir, B)],
    segment: usize,
    out: &mut Vec<Exchange>,
) -> usize {
    let before = out.len();
    let mut e = Emit { conn, out };
    let mut ts = 0;
    for (dir, bytes) in writes {
        for piece in bytes.as_ref().chunks(segment) {
            ts += 1000;
            dec.on_data(*dir, ts, piece, &mut e);
        }
    }
    dec.on_close(ts + 1000, CloseReason::Fin, &mut e);
    out.len() - before
}
