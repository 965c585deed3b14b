//! A [`StreamSink`] that summarises each connection (bytes, gaps, datagrams,
//! close reason) and optionally keeps the reassembled bytes. Backs
//! `cnflow replay --format flows` and stream-comparison tests. A summary is
//! handed out when its connection closes, so memory follows the flow table.
use super::{CloseReason, Conn, StreamDir, StreamSink};
use serde::Serialize;
use std::collections::HashMap;

#[derive(Debug, Default, Clone, Serialize)]
pub struct DirSummary {
    /// Stream bytes delivered (TCP) or datagram payload bytes captured.
    pub bytes: u64,
    /// Bytes reported missing (lost, truncated, skipped).
    pub gap_bytes: u64,
    /// Number of gaps.
    pub gaps: u64,
    pub datagrams: u64,
    /// TCP: the reassembled stream, hex (only when bytes are kept).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_hex: Option<String>,
    /// UDP/ICMP: each datagram, hex (only when bytes are kept).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub datagrams_hex: Option<Vec<String>>,
    #[serde(skip)]
    raw: Vec<u8>,
    #[serde(skip)]
    dgrams: Vec<Vec<u8>>,
}

impl DirSummary {
    /// The kept stream bytes (TCP).
    pub fn data(&self) -> &[u8] {
        &self.raw
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct FlowSummary {
    pub conn: Conn,
    pub close: CloseReason,
    pub last_ts_ns: u64,
    pub to_server: DirSummary,
    pub to_client: DirSummary,
}

struct Open {
    conn: Conn,
    last_ts: u64,
    dirs: [DirSummary; 2],
}

pub struct FlowRecorder {
    keep_bytes: bool,
    open: HashMap<u64, Open>,
    /// Summaries of connections closed since the last [`FlowRecorder::take`].
    pub done: Vec<FlowSummary>,
}

impl FlowRecorder {
    pub fn new(keep_bytes: bool) -> Self {
        Self { keep_bytes, open: HashMap::new(), done: Vec::new() }
    }

    pub fn take(&mut self) -> Vec<FlowSummary> {
        std::mem::take(&mut self.done)
    }

    fn dir(&mut self, conn: &Conn, dir: StreamDir, ts: u64) -> &mut DirSummary {
        let o = self.open.entry(conn.id).or_insert_with(|| Open {
            conn: conn.clone(),
            last_ts: ts,
            dirs: Default::default(),
        });
        o.last_ts = o.last_ts.max(ts);
        &mut o.dirs[match dir {
            StreamDir::ToServer => 0,
            StreamDir::ToClient => 1,
        }]
    }
}

impl StreamSink for FlowRecorder {
    fn on_data(&mut self, conn: &Conn, dir: StreamDir, ts_ns: u64, data: &[u8]) {
        let keep = self.keep_bytes;
        let d = self.dir(conn, dir, ts_ns);
        d.bytes += data.len() as u64;
        if keep {
            d.raw.extend_from_slice(data);
        }
    }
    fn on_gap(&mut self, conn: &Conn, dir: StreamDir, ts_ns: u64, len: u64) {
        let d = self.dir(conn, dir, ts_ns);
        d.gap_bytes += len;
        d.gaps += 1;
    }
    fn on_datagram(&mut self, conn: &Conn, dir: StreamDir, ts_ns: u64, data: &[u8], orig_len: u32) {
        let keep = self.keep_bytes;
        let d = self.dir(conn, dir, ts_ns);
        d.datagrams += 1;
        d.bytes += data.len() as u64;
        let missing = (orig_len as u64).saturating_sub(data.len() as u64);
        if missing > 0 {
            d.gap_bytes += missing;
            d.gaps += 1;
        }
        if keep {
            d.dgrams.push(data.to_vec());
        }
    }
    fn on_close(&mut self, conn: &Conn, ts_ns: u64, reason: CloseReason) {
        let o =
            self.open.remove(&conn.id).unwrap_or(Open { conn: conn.clone(), last_ts: ts_ns, dirs: Default::default() });
        let [mut to_server, mut to_client] = o.dirs;
        if self.keep_bytes {
            for d in [&mut to_server, &mut to_client] {
                if conn.transport == super::Transport::Tcp {
                    d.data_hex = Some(hex::encode(&d.raw));
                } else {
                    d.datagrams_hex = Some(d.dgrams.iter().map(hex::encode).collect());
                }
            }
        }
        self.done.push(FlowSummary {
            conn: o.conn,
            close: reason,
            last_ts_ns: o.last_ts.max(ts_ns),
            to_server,
            to_client,
        });
    }
}
