//! cnflow's own TCP connections (OTLP export, self-telemetry, Kubernetes API),
//! so that exchanges on them are not turned into spans. Without this, an
//! agent capturing the interface its collector is reached through would
//! describe each export in a span that the next export carries, for ever.
//!
//! The local addresses of our sockets come from /proc: socket inodes of
//! /proc/self/fd matched against /proc/self/net/tcp{,6} (the namespace the
//! process lives in). Only exchanges whose client side is a local address are
//! looked up (our connections are always the client). A miss re-reads /proc
//! at once when the server port is one of the OTLP endpoints' ports (a new
//! export connection must never slip through), otherwise at most every
//! `min_refresh`.
use crate::exchange::Exchange;
use crate::stats::{counter, Counter};
use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

static SKIPPED: std::sync::LazyLock<Counter> =
    std::sync::LazyLock::new(|| counter("cnflow.telemetry.own_exchanges_skipped", &[]));

/// A closed connection's exchange may still be in the pipeline: addresses
/// stay known this long after their socket is gone.
const KEEP_CLOSED: Duration = Duration::from_secs(30);

/// Looked up for every exchange with a local client: foldhash (randomly
/// seeded), not SipHash, like the other maps on the per-exchange path.
type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;
type FastSet<T> = HashSet<T, foldhash::fast::RandomState>;

pub struct OwnSockets {
    /// Local address → last time it was seen among our sockets.
    local: FastMap<SocketAddr, Instant>,
    last_refresh: Option<Instant>,
    min_refresh: Duration,
    export_ports: FastSet<u16>,
}

impl OwnSockets {
    pub fn new(export_ports: impl IntoIterator<Item = u16>, min_refresh: Duration) -> Self {
        Self {
            local: FastMap::default(),
            last_refresh: None,
            min_refresh,
            export_ports: export_ports.into_iter().collect(),
        }
    }

    /// Watches the ports of the configured OTLP endpoints, which cnflow's
    /// exporter and the self-telemetry SDK connect to.
    pub fn for_export(export: &crate::export::OtlpExportConfig) -> Self {
        Self::new(export.endpoint_ports(), Duration::from_millis(200))
    }

    /// Whether `ex` travelled on one of this process's connections (counted).
    pub fn is_own(&mut self, ex: &Exchange, local_ip: impl Fn(IpAddr) -> bool) -> bool {
        let client = ex.conn.client;
        if ex.conn.transport != crate::flow::Transport::Tcp || !local_ip(client.ip()) {
            return false;
        }
        let mut own = self.local.contains_key(&client);
        let wait = if self.export_ports.contains(&ex.conn.server.port()) { Duration::ZERO } else { self.min_refresh };
        if !own && self.last_refresh.is_none_or(|t| t.elapsed() >= wait) {
            self.refresh();
            own = self.local.contains_key(&client);
        }
        if own {
            SKIPPED.inc();
        }
        own
    }

    fn refresh(&mut self) {
        let now = Instant::now();
        self.last_refresh = Some(now);
        let inodes = own_socket_inodes();
        for (file, v6) in [("/proc/self/net/tcp", false), ("/proc/self/net/tcp6", true)] {
            let Ok(text) = std::fs::read_to_string(file) else { continue };
            for a in parse_proc_net_tcp(&text, v6, &inodes) {
                self.local.insert(a, now);
            }
        }
        self.local.retain(|_, seen| now.duration_since(*seen) < KEEP_CLOSED);
    }
}

fn own_socket_inodes() -> HashSet<u64> {
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else { return HashSet::new() };
    dir.filter_map(|e| e.ok())
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .filter_map(|l| l.to_str()?.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok())
        .collect()
}

/// Local addresses of the /proc/net/tcp{,6} rows whose inode is in `inodes`.
/// Addresses are hex in host byte order per 32-bit word; ports hex big-endian.
pub fn parse_proc_net_tcp(text: &str, v6: bool, inodes: &HashSet<u64>) -> Vec<SocketAddr> {
    let mut out = Vec::new();
    for line in text.lines().skip(1) {
        let cols: Vec<&str> = line.split_whitespace().collect();
        let (Some(local), Some(inode)) = (cols.get(1), cols.get(9)) else { continue };
        let Ok(inode) = inode.parse::<u64>() else { continue };
        if !inodes.contains(&inode) {
            continue;
        }
        let Some((addr, port)) = local.split_once(':') else { continue };
        let Ok(port) = u16::from_str_radix(port, 16) else { continue };
        let ip = if v6 { parse_v6(addr) } else { parse_v4(addr) };
        if let Some(ip) = ip {
            out.push(SocketAddr::new(unmap(ip), port));
        }
    }
    out
}

fn parse_v4(hex: &str) -> Option<IpAddr> {
    let w = u32::from_str_radix(hex, 16).ok()?;
    Some(IpAddr::V4(Ipv4Addr::from(w.to_ne_bytes())))
}

fn parse_v6(hex: &str) -> Option<IpAddr> {
    if hex.len() != 32 {
        return None;
    }
    let mut b = [0u8; 16];
    for i in 0..4 {
        let w = u32::from_str_radix(&hex[i * 8..i * 8 + 8], 16).ok()?;
        b[i * 4..i * 4 + 4].copy_from_slice(&w.to_ne_bytes());
    }
    Some(IpAddr::V6(Ipv6Addr::from(b)))
}

/// A v4 connection on a dual-stack socket shows as ::ffff:a.b.c.d; flows carry the v4 address.
fn unmap(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_net_tcp_rows_of_our_inodes() {
        // Little-endian host: 0100007F is 127.0.0.1.
        let v4 = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
                  0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 111 1 0 100 0 0 10 0\n\
                  1: 0100007F:9C40 0100007F:10E1 01 00000000:00000000 00:00000000 00000000     0        0 222 1 0 20 4 30 10 -1\n";
        let inodes: HashSet<u64> = [222].into();
        let got = parse_proc_net_tcp(v4, false, &inodes);
        if cfg!(target_endian = "little") {
            assert_eq!(got, vec!["127.0.0.1:40000".parse::<SocketAddr>().unwrap()]);
        }
        let v6 = "header\n\
                  0: 0000000000000000FFFF00000100007F:9C41 0000000000000000FFFF00000100007F:10E1 01 0:0 0:0 0 0 0 333 1\n";
        let got = parse_proc_net_tcp(v6, true, &[333].into());
        if cfg!(target_endian = "little") {
            assert_eq!(got, vec!["127.0.0.1:40001".parse::<SocketAddr>().unwrap()]);
        }
        assert!(parse_proc_net_tcp("h\n garbage\n0: zz:zz", false, &inodes).is_empty());
    }

    #[test]
    fn finds_a_connection_of_this_process() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let mut own = OwnSockets::new([], Duration::ZERO);
        own.refresh();
        assert!(own.local.contains_key(&c.local_addr().unwrap()), "{:?} not in {:?}", c.local_addr(), own.local);
    }
}
