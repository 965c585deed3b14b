//! What an ICMP exchange carries.
use serde::Serialize;

#[derive(Debug, Clone, Default, Serialize)]
pub struct IcmpDetail {
    pub v6: bool,
    pub icmp_type: u8,
    pub code: u8,
    /// Echo identifier and sequence.
    pub echo_id: Option<u16>,
    pub echo_seq: Option<u16>,
    /// For errors (unreachable, time exceeded, too big): the quoted original flow.
    pub original: Option<IcmpOriginal>,
    /// Human name, e.g. "echo", "destination_unreachable".
    pub name: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct IcmpOriginal {
    pub protocol: u8,
    pub src: std::net::SocketAddr,
    pub dst: std::net::SocketAddr,
}
