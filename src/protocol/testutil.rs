//! Connections for decoder tests and benchmarks.
use crate::capture::Direction;
use crate::flow::{Conn, ConnInfo, RoleEvidence, Transport};
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
