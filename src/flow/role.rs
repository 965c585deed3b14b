//! Which side of a connection is the server when no SYN was seen.
//! Well-known service ports first, then privileged vs unprivileged, then the
//! Linux ephemeral range; None when the ports do not tell.

/// Ports of services cnflow decodes or commonly sees, above 1023.
const SERVICE_PORTS: &[u16] = &[
    1883, 2181, 2379, 3000, 3306, 4317, 4318, 5000, 5432, 5672, 6379, 6443, 8000, 8080, 8443, 8888, 9000, 9090, 9092,
    9093, 9200, 10250, 11211, 15672, 26379, 27017, 50051,
];

/// Linux default ip_local_port_range starts here.
const EPHEMERAL_START: u16 = 32768;

/// `Some(true)` when `p` is the server port and `q` the client port,
/// `Some(false)` for the reverse, None when undecided.
pub fn port_is_server(p: u16, q: u16) -> Option<bool> {
    if p == q {
        return None;
    }
    let svc = |x: u16| SERVICE_PORTS.binary_search(&x).is_ok();
    match (svc(p), svc(q)) {
        (true, false) => return Some(true),
        (false, true) => return Some(false),
        _ => {}
    }
    match (p < 1024, q < 1024) {
        (true, false) => return Some(true),
        (false, true) => return Some(false),
        _ => {}
    }
    match (p >= EPHEMERAL_START, q >= EPHEMERAL_START) {
        (false, true) => Some(true),
        (true, false) => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn heuristics() {
        assert!(SERVICE_PORTS.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(port_is_server(6379, 40000), Some(true));
        assert_eq!(port_is_server(40000, 53), Some(false));
        assert_eq!(port_is_server(8081, 50000), Some(true));
        assert_eq!(port_is_server(7000, 7001), None);
        assert_eq!(port_is_server(53, 53), None);
    }
}
