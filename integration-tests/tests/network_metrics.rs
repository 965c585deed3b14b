//! L4 network metrics and service-graph metrics (root): real peers in a
//! namespace pair (nginx + curl, redis-server + redis-cli, dnsmasq + dig, a
//! refused port, a port whose SYNs are dropped), `cnflow run --format
//! otlp-json` capturing with eBPF on the client-side veth while tcpdump
//! records the same packets; then `cnflow replay` of the recording.
//!
//! The live agent also exports over OTLP/gRPC to the harness receiver, which
//! must get the same metrics as stdout.
//!
//! Oracles, none from cnflow: the clients' own list of what they did
//! (connections opened, refused, timed out, lookups), and tshark's reading of
//! the recording (payload bytes per direction, packets, retransmissions).
#[path = "../harness/agent.rs"]
mod agent;
#[path = "../harness/mod.rs"]
mod harness;
#[path = "../harness/netns.rs"]
mod netns;
#[path = "../harness/otel.rs"]
mod otel;

use netns::{read, wait_until, ChildGuard, NetnsPair, Scratch};
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, KeyValue};
use opentelemetry_proto::tonic::metrics::v1::{metric, number_data_point, Metric};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

const T: Duration = Duration::from_secs(20);
const HTTP_RUNS: usize = 5;
const REDIS_RUNS: usize = 4;
const DIGS: usize = 3;
const SILENT_PORT: u16 = 9;
const CLOSED_PORT: u16 = 81;

const ENV: &[(&str, &str)] = &[
    ("CNFLOW_NETWORK_METRICS", "true"),
    ("CNFLOW_SERVICE_GRAPH_METRICS", "true"),
    ("OTEL_SERVICE_NAME", "netclient"),
    ("CNFLOW_SNAPLEN", "4096"),
];

fn value(kv: &KeyValue) -> Option<String> {
    match kv.value.as_ref()?.value.as_ref()? {
        any_value::Value::StringValue(s) => Some(s.clone()),
        any_value::Value::IntValue(i) => Some(i.to_string()),
        any_value::Value::BoolValue(b) => Some(b.to_string()),
        _ => None,
    }
}

fn matches(attrs: &[KeyValue], want: &[(&str, &str)]) -> bool {
    want.iter().all(|(k, v)| attrs.iter().any(|kv| kv.key == *k && value(kv).as_deref() == Some(*v)))
}

/// The metrics of the last OTLP/JSON metrics request in `out` (cumulative: it holds everything).
fn last_metrics(out: &str) -> Vec<Metric> {
    let line = out.lines().rev().find(|l| l.contains("\"resourceMetrics\"")).expect("no metrics line");
    let req: ExportMetricsServiceRequest = serde_json::from_str(line).expect("OTLP/JSON metrics");
    req.resource_metrics.into_iter().flat_map(|r| r.scope_metrics).flat_map(|s| s.metrics).collect()
}

fn sum(ms: &[Metric], name: &str, want: &[(&str, &str)]) -> i64 {
    ms.iter()
        .filter(|m| m.name == name)
        .flat_map(|m| match &m.data {
            Some(metric::Data::Sum(s)) => s.data_points.clone(),
            _ => vec![],
        })
        .filter(|p| matches(&p.attributes, want))
        .map(|p| match p.value {
            Some(number_data_point::Value::AsInt(i)) => i,
            _ => 0,
        })
        .sum()
}

fn hist_count(ms: &[Metric], name: &str, want: &[(&str, &str)]) -> u64 {
    ms.iter()
        .filter(|m| m.name == name)
        .flat_map(|m| match &m.data {
            Some(metric::Data::Histogram(h)) => h.data_points.clone(),
            _ => vec![],
        })
        .filter(|p| matches(&p.attributes, want))
        .map(|p| p.count)
        .sum()
}

/// tshark's view of TCP in the recording: per (src, dst, server port) the
/// payload bytes, all packets, and packets other than pure ACKs (what the
/// eBPF program delivers); plus retransmissions it flags.
#[derive(Default, Debug)]
struct Tshark {
    bytes: BTreeMap<(String, String, u16), i64>,
    packets: BTreeMap<(String, String, u16), i64>,
    delivered: BTreeMap<(String, String, u16), i64>,
    retransmissions: i64,
}

fn tshark(pcap: &Path, server_ports: &[u16]) -> Tshark {
    let out = std::process::Command::new("tshark")
        .args(["-n", "-r"])
        .arg(pcap)
        .args(["-Y", "tcp", "-T", "fields", "-E", "separator=,"])
        .args(["-e", "ip.src", "-e", "ip.dst", "-e", "tcp.srcport", "-e", "tcp.dstport", "-e", "tcp.len"])
        .args([
            "-e",
            "tcp.flags.syn",
            "-e",
            "tcp.flags.fin",
            "-e",
            "tcp.flags.reset",
            "-e",
            "tcp.analysis.retransmission",
        ])
        .output()
        .expect("tshark");
    assert!(out.status.success(), "tshark: {}", String::from_utf8_lossy(&out.stderr));
    let mut t = Tshark::default();
    for l in String::from_utf8_lossy(&out.stdout).lines() {
        let f: Vec<&str> = l.split(',').collect();
        let (sp, dp): (u16, u16) = (f[2].parse().unwrap(), f[3].parse().unwrap());
        let port = if server_ports.contains(&dp) { dp } else { sp };
        let key = (f[0].to_string(), f[1].to_string(), port);
        let len: i64 = f[4].parse().unwrap();
        let flag = |i: usize| matches!(f[i], "1" | "True");
        *t.bytes.entry(key.clone()).or_default() += len;
        *t.packets.entry(key.clone()).or_default() += 1;
        if len > 0 || flag(5) || flag(6) || flag(7) {
            *t.delivered.entry(key).or_default() += 1;
        }
        if !f[8].is_empty() {
            t.retransmissions += 1;
        }
    }
    t
}

fn spawn(ns: &str, args: &[&str], what: &str, dir: &Scratch) -> ChildGuard {
    let log = std::fs::File::create(dir.path(&format!("{what}.log"))).unwrap();
    let c = NetnsPair::cmd(ns, args[0])
        .args(&args[1..])
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    ChildGuard::new(c, what)
}

#[test]
fn l4_and_service_graph_from_real_traffic_live_and_replayed() {
    let pair = NetnsPair::new("nm");
    let dir = Scratch::new("netmetrics");
    let (srv, cli) = (pair.ip_a.clone(), pair.ip_b.clone());
    // Servers (ns_a): nginx :8080, redis :6379, dnsmasq :53; SYNs to the
    // silent port are dropped by netfilter (after TC, so both captures see them).
    let _nginx = agent::nginx(&pair.ns_a, &srv, &dir.0);
    let _redis = agent::redis(&pair.ns_a, &srv);
    let _dns = spawn(
        &pair.ns_a,
        &[
            "dnsmasq",
            "--keep-in-foreground",
            "--conf-file=/dev/null",
            "--no-resolv",
            "--no-hosts",
            "--bind-interfaces",
            &format!("--listen-address={srv}"),
            "--local=/test/",
            "--address=/test/10.200.250.250",
            "--user=root",
            "--pid-file",
        ],
        "dnsmasq",
        &dir,
    );
    NetnsPair::exec(
        &pair.ns_a,
        &["iptables", "-A", "INPUT", "-p", "tcp", "--dport", &SILENT_PORT.to_string(), "-j", "DROP"],
        T,
    );
    // Readiness is checked before capture starts, so the probes are not counted.
    agent::wait_port(&pair.ns_b, &srv, 8080);
    agent::wait_port(&pair.ns_b, &srv, 6379);
    assert!(
        wait_until(T, || NetnsPair::cmd(&pair.ns_b, "dig")
            .args([&format!("@{srv}"), "+short", "+tries=1", "+time=1", "ready.test"])
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("10.200.250.250"))),
        "dnsmasq not answering"
    );

    // The agent and tcpdump on the client side (ns_b); OTLP to a receiver on
    // ns_b's loopback (not captured).
    let recv = otel::Receiver::start(Some(&pair.ns_b));
    let endpoint = format!("http://127.0.0.1:{}", recv.port);
    let mut env = ENV.to_vec();
    env.extend([
        ("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", endpoint.as_str()),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
        ("CNFLOW_SELF_TELEMETRY", "false"),
    ]);
    let agent = agent::start_agent(&pair.ns_b, &pair.veth_b, "run", &["--format", "otlp-json"], &env, &dir.0);
    let pcap = dir.path("l4.pcap");
    let tcpdump = NetnsPair::cmd(&pair.ns_b, "tcpdump")
        .args(["-i", &pair.veth_b, "-n", "-U", "--immediate-mode", "-B", "16384", "-s", "0", "-w"])
        .arg(&pcap)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.path("tcpdump.err")).unwrap())
        .spawn()
        .expect("tcpdump");
    let mut tcpdump = ChildGuard::new(tcpdump, "tcpdump");
    assert!(wait_until(T, || read(&dir.path("tcpdump.err")).contains("listening on")), "tcpdump did not start");

    // The clients; what they did is the oracle.
    for i in 0..HTTP_RUNS {
        let body = NetnsPair::exec(&pair.ns_b, &["curl", "-sf", &format!("http://{srv}:8080/users/{i}")], T);
        assert_eq!(body, "user\n");
    }
    for _ in 0..REDIS_RUNS {
        assert_eq!(NetnsPair::exec(&pair.ns_b, &["redis-cli", "-h", &srv, "PING"], T).trim(), "PONG");
    }
    for i in 0..DIGS {
        let a =
            NetnsPair::exec(&pair.ns_b, &["dig", &format!("@{srv}"), "+short", "+tries=1", &format!("h{i}.test")], T);
        assert_eq!(a.trim(), "10.200.250.250");
    }
    // curl exit 7: refused; exit 28: connect timeout.
    let refused = format!("curl -s http://{srv}:{CLOSED_PORT}/; echo $?");
    assert_eq!(NetnsPair::exec(&pair.ns_b, &["bash", "-c", &refused], T).trim(), "7");
    let silent = format!("curl -s --connect-timeout 2 http://{srv}:{SILENT_PORT}/; echo $?");
    assert_eq!(NetnsPair::exec(&pair.ns_b, &["bash", "-c", &silent], T).trim(), "28");

    std::thread::sleep(Duration::from_millis(500));
    tcpdump.signal(libc::SIGINT);
    tcpdump.wait_timeout(T).expect("tcpdump did not stop");
    assert!(
        read(&dir.path("tcpdump.err")).lines().any(|l| l.trim() == "0 packets dropped by kernel"),
        "tcpdump lost packets"
    );
    agent::stop_agent(agent);
    // Nothing lost or cut on the live side, or a difference below would be about the setup.
    let log = read(&dir.path("agent.err"));
    let counters = log.lines().rev().find(|l| l.contains("capture stopped")).unwrap_or_default();
    assert!(counters.contains("ring_full=0 ") && counters.contains("truncated=0 "), "agent lost packets: {counters}");
    let live = last_metrics(&read(&dir.path("agent.out")));
    let exported: Vec<Metric> = {
        let got = recv.received.metrics.lock().unwrap();
        let last = got.last().expect("no OTLP metrics received").clone();
        last.resource_metrics.into_iter().flat_map(|r| r.scope_metrics).flat_map(|s| s.metrics).collect()
    };
    for name in [
        "cnflow.network.flow.bytes",
        "cnflow.network.flow.packets",
        "cnflow.network.tcp.connections.opened",
        "cnflow.network.tcp.connections.failed",
        "traces_service_graph_request_total",
    ] {
        assert_eq!(sum(&exported, name, &[]), sum(&live, name, &[]), "OTLP export vs stdout: {name}");
        assert!(sum(&live, name, &[]) > 0, "{name}");
    }

    let replay = std::process::Command::new(harness::cnflow_bin())
        .args(["replay", "--format", "otlp-json"])
        .arg(&pcap)
        .envs(ENV.iter().copied())
        .output()
        .expect("cnflow replay");
    assert!(replay.status.success(), "replay: {}", String::from_utf8_lossy(&replay.stderr));
    let replayed = last_metrics(&String::from_utf8_lossy(&replay.stdout));

    let ports = [8080u16, 6379, CLOSED_PORT, SILENT_PORT, 53];
    let ts = tshark(&pcap, &ports);
    eprintln!("tshark: {ts:?}");
    for (what, ms) in [("live", &live), ("replay", &replayed)] {
        eprintln!("checking {what}");
        // Bytes per direction and port: tshark's payload sums.
        for ((src, dst, port), bytes) in &ts.bytes {
            let p = port.to_string();
            let want = [("src.address", src.as_str()), ("dst.address", dst.as_str()), ("server.port", p.as_str())];
            let want_tcp = [want.as_slice(), &[("network.transport", "tcp")]].concat();
            assert_eq!(sum(ms, "cnflow.network.flow.bytes", &want_tcp), *bytes, "{what} bytes {src}→{dst} :{port}");
            // Live sees no pure ACKs; the recording has them all.
            let packets = if what == "live" {
                ts.delivered[&(src.clone(), dst.clone(), *port)]
            } else {
                ts.packets[&(src.clone(), dst.clone(), *port)]
            };
            assert_eq!(
                sum(ms, "cnflow.network.flow.packets", &want_tcp),
                packets,
                "{what} packets {src}→{dst} :{port}"
            );
        }
        let up = |port: u16| port.to_string();
        let conn = |port: &str| {
            vec![("src.address", cli.clone()), ("dst.address", srv.clone()), ("server.port", port.to_string())]
        };
        let as_ref = |v: &Vec<(&'static str, String)>| v.iter().map(|(k, v)| (*k, v.clone())).collect::<Vec<_>>();
        let check = |name: &str, port: u16, extra: &[(&str, &str)], want: i64| {
            let p = up(port);
            let base = as_ref(&conn(&p));
            let mut w: Vec<(&str, &str)> = base.iter().map(|(k, v)| (*k, v.as_str())).collect();
            w.extend_from_slice(extra);
            assert_eq!(sum(ms, name, &w), want, "{what} {name} :{port} {extra:?}");
        };
        check("cnflow.network.tcp.connections.opened", 8080, &[], HTTP_RUNS as i64);
        check("cnflow.network.tcp.connections.opened", 6379, &[], REDIS_RUNS as i64);
        check("cnflow.network.tcp.connections.closed", 8080, &[("cnflow.tcp.close.reason", "fin")], HTTP_RUNS as i64);
        check("cnflow.network.tcp.connections.closed", 6379, &[("cnflow.tcp.close.reason", "fin")], REDIS_RUNS as i64);
        check("cnflow.network.tcp.connections.failed", CLOSED_PORT, &[("error.type", "connection_refused")], 1);
        check("cnflow.network.tcp.connections.failed", SILENT_PORT, &[("error.type", "timeout")], 1);
        assert_eq!(sum(ms, "cnflow.network.tcp.connections.opened", &[]), (HTTP_RUNS + REDIS_RUNS) as i64, "{what}");
        assert_eq!(sum(ms, "cnflow.network.tcp.connections.failed", &[]), 2, "{what}");
        assert_eq!(sum(ms, "cnflow.network.tcp.retransmissions", &[]), ts.retransmissions, "{what} retransmissions");
        assert!(ts.retransmissions >= 1, "the silent port's SYN is retransmitted");
        let p = up(8080);
        let w: Vec<(&str, &str)> = [("src.address", cli.as_str()), ("server.port", p.as_str())].to_vec();
        assert_eq!(hist_count(ms, "cnflow.network.tcp.handshake.duration", &w), HTTP_RUNS as u64, "{what}");
        assert_eq!(hist_count(ms, "cnflow.network.tcp.handshake.duration", &[]), (HTTP_RUNS + REDIS_RUNS) as u64);
        // DNS over UDP: one datagram each way per lookup; lookup durations on the client.
        let dns = [("src.address", cli.as_str()), ("network.transport", "udp"), ("server.port", "53")];
        assert_eq!(sum(ms, "cnflow.network.flow.packets", &dns), DIGS as i64, "{what} dns queries");
        assert_eq!(hist_count(ms, "dns.lookup.duration", &[]), DIGS as u64, "{what} dns.lookup.duration");
        // Service graph: every request once, none failed.
        let total = "traces_service_graph_request_total";
        assert_eq!(sum(ms, total, &[]), (HTTP_RUNS + REDIS_RUNS + DIGS) as i64, "{what} requests");
        assert_eq!(sum(ms, "traces_service_graph_request_failed_total", &[]), 0, "{what}");
        if what == "replay" {
            // A pcap carries no capture direction and replay knows no local
            // addresses, so it sees the server ends: unknown client "user".
            let edge = [("client", "user"), ("server", "netclient"), ("connection_type", "virtual_node")];
            assert_eq!(sum(ms, total, &edge), (HTTP_RUNS + REDIS_RUNS + DIGS) as i64, "{what} edge");
            continue;
        }
        // Live: the client side is seen (egress on the client's veth), the servers have no agent.
        let edge = |t: &'static str| [("client", "netclient"), ("server", srv.as_str()), ("connection_type", t)];
        assert_eq!(sum(ms, total, &edge("virtual_node")), (HTTP_RUNS + DIGS) as i64, "{what} http+dns edge");
        assert_eq!(sum(ms, total, &edge("database")), REDIS_RUNS as i64, "{what} redis edge");
        assert_eq!(sum(ms, total, &[]), (HTTP_RUNS + REDIS_RUNS + DIGS) as i64, "{what} no other edge");
        assert_eq!(sum(ms, "traces_service_graph_request_failed_total", &[]), 0, "{what}");
        let cs = hist_count(ms, "traces_service_graph_request_client_seconds", &[]);
        assert_eq!(cs, (HTTP_RUNS + REDIS_RUNS + DIGS) as u64, "{what}");
        assert_eq!(hist_count(ms, "traces_service_graph_request_server_seconds", &[]), 0, "{what}: no server end seen");
    }
}
