//! "Never put the wrong protocol on a flow": every committed capture is
//! replayed and the protocols cnflow names in it (detected connections and
//! exchange labels) must be exactly those of the peers that were recorded.
//! A capture of protocol X is named `X.pcap` or `X_<variant>.pcap`; the few
//! captures of several protocols, or of shapes no protocol may claim, are
//! listed in [`rule`]. The odd-HTTP captures (`http_odd*`, recorded by
//! scripts/record_memcached.sh: HTTP/0.9, a request line without URI, a
//! request whose first captured segment is headers, an error page body) and
//! the memcached ones (text, meta and binary protocol) were decoded as Redis
//! before its probe asked for a RESP reply.
#[path = "../harness/golden.rs"]
mod golden;

use std::collections::BTreeSet;
use std::process::Command;

/// Protocols named in one replay: `cnflow.protocol.detected{protocol=X} N`
/// with N > 0 (from --stats) and the exchange labels of `--format count`;
/// also every protocol the registry knows (the detected series lists them all).
fn labels(pcap: &std::path::Path) -> (BTreeSet<String>, BTreeSet<String>) {
    let out = Command::new(env!("CARGO_BIN_EXE_cnflow"))
        .arg("replay")
        .arg(pcap)
        .args(["--format", "count", "--stats"])
        .output()
        .expect("running cnflow replay");
    assert!(out.status.success(), "replay {}: {}", pcap.display(), String::from_utf8_lossy(&out.stderr));
    let (mut seen, mut known) = (BTreeSet::new(), BTreeSet::new());
    for line in String::from_utf8_lossy(&out.stderr).lines() {
        if let Some(rest) = line.strip_prefix("cnflow.protocol.detected{protocol=") {
            let (name, n) = rest.split_once("} ").expect("counter line");
            known.insert(name.to_string());
            if n.trim() != "0" {
                seen.insert(name.to_string());
            }
        }
    }
    for word in String::from_utf8_lossy(&out.stdout).split_whitespace() {
        let (name, n) = word.split_once('=').expect("count output is name=n");
        if name != "exchanges" && n != "0" {
            seen.insert(name.to_string());
        }
    }
    (seen, known)
}

/// (allowed labels, labels that must be there) for a capture.
fn rule(name: &str, known: &BTreeSet<String>) -> (Vec<&'static str>, Vec<&'static str>) {
    let stem = name.split(['_', '.']).next().unwrap_or(name);
    match stem {
        // flow tests: a redis-cli session and pings.
        "flow" => (vec!["redis", "icmp"], vec!["redis", "icmp"]),
        "h2" => (vec!["http2"], vec!["http2"]),
        // Starts as an HTTP/1.1 request carrying `Upgrade: h2c`.
        "h2c" => (vec!["http1", "http2"], vec!["http2"]),
        // A cut gRPC stream may lose its content type and stay plain HTTP/2.
        "grpc" => (vec!["grpc", "http2"], vec!["grpc"]),
        // Whether HTTP/1 accepts these shapes is its own business; nothing else may.
        "http" if name.starts_with("http_odd") => (vec!["http1"], vec![]),
        // scripts/record_tunnels.sh: HTTP/1, Redis and DNS, plain and inside tunnels.
        "tunnel" => (vec!["http1", "redis", "dns"], vec!["http1", "redis", "dns"]),
        _ => {
            let p = known
                .get(stem)
                .unwrap_or_else(|| panic!("{name}: name it <protocol>[_variant].pcap or give it a rule here"));
            let p: &'static str = Box::leak(p.clone().into_boxed_str());
            (vec![p], vec![p])
        }
    }
}

#[test]
fn every_capture_is_only_its_own_protocol() {
    let dir = golden::pcap_path("");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".pcap") || n.ends_with(".pcapng"))
        .collect();
    names.sort();
    assert!(names.iter().any(|n| n.starts_with("http_odd")) && names.iter().any(|n| n.starts_with("memcached")));
    let mut wrong = Vec::new();
    for name in &names {
        let (seen, known) = labels(&dir.join(name));
        let (allowed, required) = rule(name, &known);
        let extra: Vec<_> = seen.iter().filter(|p| !allowed.contains(&p.as_str())).collect();
        let missing: Vec<_> = required.iter().filter(|p| !seen.contains(**p)).collect();
        if !extra.is_empty() || !missing.is_empty() {
            wrong.push(format!("{name}: named {seen:?}, wrong {extra:?}, missing {missing:?}"));
        }
    }
    assert!(wrong.is_empty(), "captures with a wrong protocol:\n{}", wrong.join("\n"));
}
