//! Connected traces across nodes (root): two "nodes" (network namespaces)
//! joined through a router namespace doing Service DNAT with nftables
//! (once DNAT only, once DNAT + masquerade). The client node calls a
//! Service address the router rewrites to the server node: nginx over
//! HTTP/1 keep-alive (curl), pipelined Redis (redis-benchmark -P 16), DNS
//! (dig to dnsmasq).
//!
//! - Replay: tcpdump on each node, then `cnflow replay --format otlp-json
//!   CLIENT.pcap SERVER.pcap`: every SERVER span (server capture) must sit
//!   under a CLIENT span of the client capture, in its trace.
//! - Live: `cnflow run` with eBPF on each node's interface exporting OTLP to
//!   one `cnflow gateway` (CNFLOW_GATEWAY_STITCH_WINDOW_MS) in the router
//!   namespace, which exports through rotel to a harness receiver: the same
//!   joins; then,
//!   with the client's agent stopped, SERVER halves whose CLIENT never
//!   comes are exported unjoined after the window and counted unmatched.
//!
//! Oracles, none from cnflow: what the clients did (5 keep-alive GETs, N
//! Redis SETs, 3 lookups), the span ids themselves (a SERVER span's parent
//! must be a CLIENT span of the other node's output).
#[path = "../harness/agent.rs"]
mod agent;
#[path = "../harness/mod.rs"]
mod harness;
#[path = "../harness/netns.rs"]
mod netns;
#[path = "../harness/otel.rs"]
mod otel;

use netns::{read, wait_until, ChildGuard, NetnsPair, Scratch};
use serde_json::Value;
use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

const T: Duration = Duration::from_secs(30);
const HTTP_GETS: usize = 5;
const REDIS_SETS: usize = 96;
const DIGS: usize = 3;

static SEQ: AtomicU32 = AtomicU32::new(0);

fn run(args: &[&str]) {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// Client node ⇄ router ⇄ server node; the router DNATs the Service
/// address to the server (and masquerades toward it when asked).
struct Topo {
    cl: String,
    rt: String,
    sv: String,
    /// Interfaces: the client's, the server's.
    if_cl: String,
    if_sv: String,
    cl_ip: String,
    sv_ip: String,
    /// The router's address on each side (where the agents find the gateway).
    rt_cl_ip: String,
    rt_sv_ip: String,
    vip: String,
    /// An address of the router reachable from both nodes under one name
    /// (agents must list the same gateway endpoints to agree on routing).
    gw_ip: String,
}

impl Topo {
    fn new(tag: &str, masquerade: bool, dir: &Scratch) -> Self {
        netns::require_root();
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        let id = format!("{}{}", std::process::id() % 100_000, n);
        let s = 1 + (std::process::id() as usize * 7 + n as usize * 31) % 240;
        let t = Topo {
            cl: format!("cnf-{tag}-cl-{id}"),
            rt: format!("cnf-{tag}-rt-{id}"),
            sv: format!("cnf-{tag}-sv-{id}"),
            if_cl: format!("stc{id}"),
            if_sv: format!("sts{id}"),
            cl_ip: format!("10.200.{s}.1"),
            sv_ip: format!("10.200.{}.1", s + 1),
            rt_cl_ip: format!("10.200.{s}.254"),
            rt_sv_ip: format!("10.200.{}.254", s + 1),
            vip: format!("10.200.{}.10", s + 2),
            gw_ip: format!("10.200.{}.1", s + 3),
        };
        for ns in [&t.cl, &t.rt, &t.sv] {
            run(&["ip", "netns", "add", ns]);
            run(&["ip", "-n", ns, "link", "set", "lo", "up"]);
        }
        let (rc, rs) = (format!("rtc{id}"), format!("rts{id}"));
        run(&["ip", "link", "add", &t.if_cl, "netns", &t.cl, "type", "veth", "peer", "name", &rc, "netns", &t.rt]);
        run(&["ip", "link", "add", &t.if_sv, "netns", &t.sv, "type", "veth", "peer", "name", &rs, "netns", &t.rt]);
        for (ns, dev, ip) in [
            (&t.cl, &t.if_cl, &t.cl_ip),
            (&t.rt, &rc, &t.rt_cl_ip),
            (&t.rt, &rs, &t.rt_sv_ip),
            (&t.sv, &t.if_sv, &t.sv_ip),
        ] {
            run(&["ip", "-n", ns, "addr", "add", &format!("{ip}/24"), "dev", dev]);
            run(&["ip", "-n", ns, "link", "set", dev, "up"]);
        }
        run(&["ip", "-n", &t.rt, "addr", "add", &format!("{}/32", t.gw_ip), "dev", "lo"]);
        run(&["ip", "-n", &t.cl, "route", "add", "default", "via", &t.rt_cl_ip]);
        run(&["ip", "-n", &t.sv, "route", "add", "default", "via", &t.rt_sv_ip]);
        run(&["ip", "netns", "exec", &t.rt, "sysctl", "-qw", "net.ipv4.ip_forward=1"]);
        let masq = if masquerade { format!("oifname \"{rs}\" masquerade") } else { String::new() };
        let rules = format!(
            "table ip svc {{\n\
               chain pre {{ type nat hook prerouting priority dstnat;\n\
                 ip daddr {vip} tcp dport 80 dnat to {sv}:8080\n\
                 ip daddr {vip} tcp dport 6379 dnat to {sv}:6379\n\
                 ip daddr {vip} tcp dport 8081 dnat to {sv}:8081\n\
                 ip daddr {vip} udp dport 53 dnat to {sv}:53\n\
               }}\n\
               chain post {{ type nat hook postrouting priority srcnat;\n {masq}\n }}\n\
             }}\n",
            vip = t.vip,
            sv = t.sv_ip,
        );
        let f = dir.path("svc.nft");
        std::fs::write(&f, rules).unwrap();
        run(&["ip", "netns", "exec", &t.rt, "nft", "-f", f.to_str().unwrap()]);
        t
    }
}

impl Drop for Topo {
    fn drop(&mut self) {
        for ns in [&self.cl, &self.rt, &self.sv] {
            netns::delete_netns(ns);
        }
    }
}

fn spawn(ns: &str, args: &[&str], what: &str, dir: &Scratch, envs: &[(&str, String)]) -> ChildGuard {
    let log = std::fs::File::create(dir.path(&format!("{what}.log"))).unwrap();
    let mut c = NetnsPair::cmd(ns, args[0]);
    c.args(&args[1..]).stdin(Stdio::null()).stdout(log.try_clone().unwrap()).stderr(log);
    for (k, v) in envs {
        c.env(k, v);
    }
    ChildGuard::new(c.spawn().unwrap_or_else(|e| panic!("{what}: {e}")), what)
}

/// nginx, redis and dnsmasq on the server node, checked through the Service address.
fn servers(t: &Topo, dir: &Scratch) -> Vec<ChildGuard> {
    let mut g = vec![agent::nginx(&t.sv, &t.sv_ip, &dir.0), agent::redis(&t.sv, &t.sv_ip)];
    g.push(spawn(
        &t.sv,
        &[
            "dnsmasq",
            "--keep-in-foreground",
            "--conf-file=/dev/null",
            "--no-resolv",
            "--no-hosts",
            "--bind-interfaces",
            &format!("--listen-address={}", t.sv_ip),
            "--local=/test/",
            "--address=/test/10.200.250.250",
            "--user=root",
            "--pid-file",
        ],
        "dnsmasq",
        dir,
        &[],
    ));
    agent::wait_port(&t.cl, &t.vip, 80);
    agent::wait_port(&t.cl, &t.vip, 6379);
    assert!(
        wait_until(T, || NetnsPair::cmd(&t.cl, "dig")
            .args([&format!("@{}", t.vip), "+short", "+tries=1", "+time=1", "ready.test"])
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("10.200.250.250"))),
        "dnsmasq not answering through the Service address"
    );
    g
}

/// The clients; what they did is the oracle: (keep-alive GETs, SETs, lookups).
fn clients(t: &Topo) {
    let urls: Vec<String> = (0..HTTP_GETS).map(|i| format!("http://{}/users/{i}", t.vip)).collect();
    let mut args = vec!["curl", "-sf", "--http1.1"];
    args.extend(urls.iter().map(String::as_str));
    // One curl, several URLs: one keep-alive connection.
    assert_eq!(NetnsPair::exec(&t.cl, &args, T), "user\n".repeat(HTTP_GETS));
    agent::redis_benchmark_set(&t.cl, &t.vip, REDIS_SETS);
    for i in 0..DIGS {
        let a =
            NetnsPair::exec(&t.cl, &["dig", &format!("@{}", t.vip), "+short", "+tries=1", &format!("h{i}.test")], T);
        assert_eq!(a.trim(), "10.200.250.250");
    }
}

fn tcpdump(ns: &str, pcap: &std::path::Path, dir: &Scratch, what: &str) -> ChildGuard {
    let err = dir.path(&format!("{what}.err"));
    let c = NetnsPair::cmd(ns, "tcpdump")
        .args(["-i", "any", "-n", "-U", "--immediate-mode", "-B", "16384", "-s", "0", "-w"])
        .arg(pcap)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&err).unwrap())
        .spawn()
        .expect("tcpdump");
    let g = ChildGuard::new(c, what);
    assert!(wait_until(T, || read(&err).contains("listening on")), "{what} did not start");
    g
}

fn stop_tcpdump(mut g: ChildGuard, dir: &Scratch, what: &str) {
    g.signal(libc::SIGINT);
    g.wait_timeout(T).expect("tcpdump did not stop");
    let err = read(&dir.path(&format!("{what}.err")));
    assert!(err.lines().any(|l| l.trim() == "0 packets dropped by kernel"), "{what} lost packets: {err}");
}

/// One span of the output: (trace, span, parent, kind, name, server.port, has wire attrs).
#[derive(Debug, Clone)]
struct S {
    trace: String,
    id: String,
    parent: String,
    kind: i64,
    name: String,
    node: String,
    keys: bool,
}

fn spans_of_json(out: &str) -> Vec<S> {
    let mut v = Vec::new();
    for line in out.lines().filter(|l| l.contains("resourceSpans")) {
        let j: Value = serde_json::from_str(line).unwrap();
        for rs in j["resourceSpans"].as_array().unwrap() {
            let node = rs["resource"]["attributes"]
                .as_array()
                .unwrap()
                .iter()
                .find(|kv| kv["key"] == "host.name")
                .and_then(|kv| kv["value"]["stringValue"].as_str())
                .unwrap_or_default()
                .to_string();
            for ss in rs["scopeSpans"].as_array().unwrap() {
                for s in ss["spans"].as_array().unwrap() {
                    v.push(S {
                        trace: s["traceId"].as_str().unwrap().into(),
                        id: s["spanId"].as_str().unwrap().into(),
                        parent: s["parentSpanId"].as_str().unwrap().into(),
                        kind: s["kind"].as_i64().unwrap(),
                        name: s["name"].as_str().unwrap().into(),
                        node: node.clone(),
                        keys: s["attributes"]
                            .as_array()
                            .unwrap()
                            .iter()
                            .any(|kv| kv["key"].as_str().unwrap().starts_with("cnflow.tcp.")),
                    });
                }
            }
        }
    }
    v
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn spans_of_receiver(r: &otel::Received) -> Vec<S> {
    let traces = r.traces.lock().unwrap();
    let mut v = Vec::new();
    for t in traces.iter() {
        for rs in &t.resource_spans {
            let node =
                rs.resource.as_ref().and_then(|r| otel::str_value(&r.attributes, "host.name")).unwrap_or_default();
            for s in rs.scope_spans.iter().flat_map(|ss| &ss.spans) {
                v.push(S {
                    trace: hex(&s.trace_id),
                    id: hex(&s.span_id),
                    parent: hex(&s.parent_span_id),
                    kind: i64::from(s.kind),
                    name: s.name.clone(),
                    node: node.clone(),
                    keys: s.attributes.iter().any(|kv| kv.key.starts_with("cnflow.tcp.")),
                });
            }
        }
    }
    v
}

const SERVER: i64 = 2;
const CLIENT: i64 = 3;

/// SERVER spans of `server_node` named like `name`: (total, joined under a
/// CLIENT span of another node in the same trace).
fn joins(spans: &[S], server_node: &str, name: impl Fn(&str) -> bool) -> (usize, usize) {
    let by_id: HashMap<&str, &S> = spans.iter().map(|s| (s.id.as_str(), s)).collect();
    let servers: Vec<&S> =
        spans.iter().filter(|s| s.kind == SERVER && s.node == server_node && name(&s.name)).collect();
    let joined = servers
        .iter()
        .filter(|s| {
            by_id
                .get(s.parent.as_str())
                .is_some_and(|c| c.kind == CLIENT && c.node != server_node && c.trace == s.trace)
        })
        .count();
    (servers.len(), joined)
}

fn check_all_joined(spans: &[S], server_node: &str, what: &str) {
    let mut names: std::collections::BTreeMap<(String, i64, String), usize> = Default::default();
    for s in spans {
        *names.entry((s.node.clone(), s.kind, s.name.clone())).or_default() += 1;
    }
    eprintln!("{what}: spans by (node, kind, name): {names:?}");
    assert!(spans.iter().all(|s| !s.keys), "{what}: wire attributes must be stripped");
    let http = joins(spans, server_node, |n| n.starts_with("GET"));
    assert_eq!(http, (HTTP_GETS, HTTP_GETS), "{what}: HTTP/1 keep-alive (server spans, joined)");
    let set = joins(spans, server_node, |n| n == "SET");
    assert_eq!(set, (REDIS_SETS, REDIS_SETS), "{what}: pipelined Redis SET");
    let dns = joins(spans, server_node, |n| n.contains(".test"));
    assert_eq!(dns, (DIGS, DIGS), "{what}: DNS");
    // redis-benchmark's own CONFIG GETs too: no SERVER span left alone.
    let all = joins(spans, server_node, |_| true);
    assert_eq!(all.0, all.1, "{what}: every SERVER span joined");
}

fn replay_two(dir: &Scratch, masquerade: bool) {
    let t = Topo::new(if masquerade { "stm" } else { "std" }, masquerade, dir);
    let _servers = servers(&t, dir);
    let (pc, ps) = (dir.path("client.pcap"), dir.path("server.pcap"));
    let dc = tcpdump(&t.cl, &pc, dir, "tcpdump-client");
    let ds = tcpdump(&t.sv, &ps, dir, "tcpdump-server");
    clients(&t);
    std::thread::sleep(Duration::from_millis(300));
    stop_tcpdump(dc, dir, "tcpdump-client");
    stop_tcpdump(ds, dir, "tcpdump-server");
    let out = Command::new(harness::cnflow_bin())
        .args(["replay", "--format", "otlp-json", "--stats"])
        .arg(&pc)
        .arg(&ps)
        .output()
        .expect("cnflow replay");
    assert!(out.status.success(), "replay: {}", String::from_utf8_lossy(&out.stderr));
    let spans = spans_of_json(&String::from_utf8_lossy(&out.stdout));
    check_all_joined(&spans, "server.pcap", if masquerade { "replay DNAT+masquerade" } else { "replay DNAT" });
    let stats = String::from_utf8_lossy(&out.stderr);
    let joined = stats.lines().find(|l| l.starts_with("cnflow.gateway.stitch.joined ")).unwrap_or_default();
    let n = spans.iter().filter(|s| s.kind == SERVER).count();
    assert_eq!(joined, format!("cnflow.gateway.stitch.joined {n}"), "{stats}");
}

#[test]
fn replay_of_two_captures_joins_every_exchange_across_dnat() {
    replay_two(&Scratch::new("stitch-dnat"), false);
}

#[test]
fn replay_of_two_captures_joins_every_exchange_across_dnat_and_masquerade() {
    replay_two(&Scratch::new("stitch-masq"), true);
}

/// The gateway (router namespace, reachable from both nodes) with stitching on.
fn gateway(t: &Topo, dir: &Scratch, sink_port: u16, window_ms: u64, name: &str) -> (ChildGuard, u16) {
    gateway_with(t, dir, sink_port, window_ms, name, &[])
}

fn gateway_with(
    t: &Topo,
    dir: &Scratch,
    sink_port: u16,
    window_ms: u64,
    name: &str,
    extra: &[(&str, String)],
) -> (ChildGuard, u16) {
    let port = otel::free_port();
    let mut env = vec![
        ("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://127.0.0.1:{sink_port}")),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc".into()),
        ("CNFLOW_SELF_TELEMETRY", "false".into()),
        ("CNFLOW_GATEWAY_GRPC_LISTEN", format!("{}:{port}", t.gw_ip)),
        ("CNFLOW_GATEWAY_HTTP_LISTEN", "127.0.0.1:0".into()),
        ("CNFLOW_GATEWAY_HEALTH_LISTEN", "127.0.0.1:0".into()),
        ("CNFLOW_GATEWAY_BATCH_TIMEOUT_MS", "50".into()),
        ("CNFLOW_GATEWAY_STATS_INTERVAL_SECS", "1".into()),
        ("CNFLOW_GATEWAY_STITCH_WINDOW_MS", window_ms.to_string()),
    ];
    env.extend(extra.iter().cloned());
    let g = spawn(&t.rt, &[harness::cnflow_bin(), "gateway"], name, dir, &env);
    let log = dir.path(&format!("{name}.log"));
    assert!(wait_until(T, || read(&log).contains("gateway listening")), "{name} did not start");
    (g, port)
}

/// `gws`: gateway `host:port`s; several = routing by join key.
fn start_agent(ns: &str, iface: &str, gws: &[String], node: &str, dir: &Scratch) -> ChildGuard {
    start_agent_with(ns, iface, gws, node, dir, &[])
}

fn start_agent_with(
    ns: &str,
    iface: &str,
    gws: &[String],
    node: &str,
    dir: &Scratch,
    extra: &[(&str, &str)],
) -> ChildGuard {
    let d = dir.path(node);
    std::fs::create_dir_all(&d).unwrap();
    let endpoint = format!("http://{}", gws[0]);
    let resource = format!("host.name={node}");
    let all: Vec<String> = gws.iter().map(|g| format!("http://{g}")).collect();
    let all = all.join(",");
    let mut env = vec![
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
        ("CNFLOW_EXPORT_GATEWAY_ENDPOINTS", if gws.len() > 1 { all.as_str() } else { "" }),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
        ("OTEL_RESOURCE_ATTRIBUTES", resource.as_str()),
        ("CNFLOW_SELF_TELEMETRY", "false"),
        ("CNFLOW_SPAN_BATCH_TIMEOUT_MS", "100"),
        // TLS uprobes would see every OpenSSL process on the machine (other tests).
        ("CNFLOW_TLS", "false"),
    ];
    env.extend_from_slice(extra);
    agent::start_agent(ns, iface, "run", &["--format", "text"], &env, &d)
}

/// Both nodes' agents export to `gws` while the clients run, then stop (they
/// flush at exit; the gateways join as halves arrive); returns once every
/// SERVER span reached `recv` joined.
fn run_nodes_until_joined(t: &Topo, dir: &Scratch, gws: &[String], recv: &otel::Receiver) {
    let a_cl = start_agent(&t.cl, &t.if_cl, gws, "node-client", dir);
    let a_sv = start_agent(&t.sv, &t.if_sv, gws, "node-server", dir);
    clients(t);
    std::thread::sleep(Duration::from_secs(1));
    agent::stop_agent(a_cl);
    agent::stop_agent(a_sv);
    let want = HTTP_GETS + REDIS_SETS + DIGS;
    assert!(
        wait_until(T, || joins(&spans_of_receiver(&recv.received), "node-server", |_| true).1 >= want),
        "joined: {:?}\ngateways' logs in {}",
        joins(&spans_of_receiver(&recv.received), "node-server", |_| true),
        dir.path("").display()
    );
}

fn gateway_counter(dir: &Scratch, gw: &str, name: &str) -> u64 {
    let log = read(&dir.path(&format!("{gw}.log")));
    let Some(line) = log.lines().rev().find(|l| l.contains("gateway stats:")) else { return 0 };
    line.split_whitespace().find_map(|w| w.strip_prefix(&format!("{name}="))).and_then(|v| v.parse().ok()).unwrap_or(0)
}

#[test]
fn live_agents_on_two_nodes_through_one_gateway_across_dnat_and_masquerade() {
    let dir = Scratch::new("stitch-live");
    let t = Topo::new("stl", true, &dir);
    let _servers = servers(&t, &dir);
    let recv = otel::Receiver::start(Some(&t.rt));
    // gateway → rotel → receiver.
    let rotel = otel::Rotel::start(Some(&t.rt), recv.port);
    let window_ms = 3000;
    let (_gw, port) = gateway(&t, &dir, rotel.grpc_port, window_ms, "gateway");
    let gws = [format!("{}:{port}", t.gw_ip)];
    run_nodes_until_joined(&t, &dir, &gws, &recv);
    std::thread::sleep(Duration::from_millis(window_ms + 1500));
    let spans = spans_of_receiver(&recv.received);
    check_all_joined(&spans, "node-server", "live DNAT+masquerade");

    // A half that never comes: only the server's agent runs now. Its SERVER
    // spans wait the window, then leave unjoined and are counted.
    recv.received.clear();
    let unmatched_before = gateway_counter(&dir, "gateway", "cnflow.gateway.stitch.unmatched");
    let a_sv = start_agent(&t.sv, &t.if_sv, &gws, "node-server", &dir);
    let urls: Vec<String> = (0..HTTP_GETS).map(|i| format!("http://{}/users/{i}", t.vip)).collect();
    let mut args = vec!["curl", "-sf", "--http1.1"];
    args.extend(urls.iter().map(String::as_str));
    NetnsPair::exec(&t.cl, &args, T);
    // Let the agent read its ring before it stops.
    std::thread::sleep(Duration::from_secs(1));
    agent::stop_agent(a_sv);
    let sent = std::time::Instant::now();
    let servers_seen = || spans_of_receiver(&recv.received).iter().filter(|s| s.kind == SERVER).count();
    assert!(wait_until(T, || servers_seen() >= HTTP_GETS), "unjoined halves not exported");
    assert!(
        sent.elapsed() >= Duration::from_millis(window_ms / 2),
        "exported before the window ended: {:?}",
        spans_of_receiver(&recv.received)
    );
    let spans = spans_of_receiver(&recv.received);
    assert_eq!(joins(&spans, "node-server", |n| n.starts_with("GET")), (HTTP_GETS, 0));
    assert!(spans.iter().filter(|s| s.kind == SERVER).all(|s| s.parent.is_empty()));
    assert!(
        wait_until(T, || gateway_counter(&dir, "gateway", "cnflow.gateway.stitch.unmatched")
            >= unmatched_before + HTTP_GETS as u64),
        "unmatched counter: {}",
        read(&dir.path("gateway.log"))
    );
}

#[test]
fn live_agents_route_by_join_key_so_halves_meet_in_one_of_two_gateways() {
    let dir = Scratch::new("stitch-two-gw");
    let t = Topo::new("st2", false, &dir);
    let _servers = servers(&t, &dir);
    let recv = otel::Receiver::start(Some(&t.rt));
    let (_g1, p1) = gateway(&t, &dir, recv.port, 3000, "gateway-1");
    let (_g2, p2) = gateway(&t, &dir, recv.port, 3000, "gateway-2");
    let gws = [format!("{}:{p1}", t.gw_ip), format!("{}:{p2}", t.gw_ip)];
    run_nodes_until_joined(&t, &dir, &gws, &recv);
    std::thread::sleep(Duration::from_millis(1500));
    let spans = spans_of_receiver(&recv.received);
    check_all_joined(&spans, "node-server", "two gateways");
    // Both gateways took a share, and between them joined every SERVER span.
    let servers = spans.iter().filter(|s| s.kind == SERVER).count() as u64;
    let per_gw = || -> Vec<u64> {
        ["gateway-1", "gateway-2"].iter().map(|g| gateway_counter(&dir, g, "cnflow.gateway.stitch.joined")).collect()
    };
    assert!(
        wait_until(T, || per_gw().iter().sum::<u64>() == servers),
        "joins per gateway {:?}, SERVER spans {servers}",
        per_gw()
    );
    assert!(per_gw().iter().all(|&n| n > 0), "{:?}", per_gw());
}

const H2_REQUESTS: usize = 40;

#[test]
fn replay_of_two_captures_joins_multiplexed_http2_streams() {
    let dir = Scratch::new("stitch-h2");
    let t = Topo::new("sth", false, &dir);
    std::fs::create_dir_all(dir.path("h2")).unwrap();
    std::fs::write(dir.path("h2/hello.txt"), "hello\n").unwrap();
    let h2dir = dir.path("h2");
    let _h2 = spawn(&t.sv, &["nghttpd", "--no-tls", "-d", h2dir.to_str().unwrap(), "8081"], "nghttpd", &dir, &[]);
    agent::wait_port(&t.cl, &t.vip, 8081);
    let (pc, ps) = (dir.path("client.pcap"), dir.path("server.pcap"));
    let dc = tcpdump(&t.cl, &pc, &dir, "tcpdump-client");
    let ds = tcpdump(&t.sv, &ps, &dir, "tcpdump-server");
    // One connection, 8 streams in flight.
    let out = NetnsPair::exec(
        &t.cl,
        &["h2load", "-n", &H2_REQUESTS.to_string(), "-c", "1", "-m", "8", &format!("http://{}:8081/hello.txt", t.vip)],
        T,
    );
    assert!(out.contains(&format!("{H2_REQUESTS} succeeded")), "{out}");
    std::thread::sleep(Duration::from_millis(300));
    stop_tcpdump(dc, &dir, "tcpdump-client");
    stop_tcpdump(ds, &dir, "tcpdump-server");
    let out = Command::new(harness::cnflow_bin())
        .args(["replay", "--format", "otlp-json"])
        .arg(&pc)
        .arg(&ps)
        .output()
        .expect("cnflow replay");
    assert!(out.status.success(), "replay: {}", String::from_utf8_lossy(&out.stderr));
    let spans = spans_of_json(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(joins(&spans, "server.pcap", |n| n.starts_with("GET")), (H2_REQUESTS, H2_REQUESTS));
}

/// Service-graph series at the receiver: (resource service.name, metric,
/// client, server, connection_type) → the latest cumulative value (counter
/// value, or histogram count).
type Edges = std::collections::BTreeMap<(String, String, String, String, String), u64>;

fn graph_edges(r: &otel::Received) -> Edges {
    use opentelemetry_proto::tonic::metrics::v1::{metric::Data, number_data_point::Value as NV};
    let mut out = Edges::new();
    for m in r.metrics.lock().unwrap().iter() {
        for rm in &m.resource_metrics {
            let res =
                rm.resource.as_ref().and_then(|r| otel::str_value(&r.attributes, "service.name")).unwrap_or_default();
            for metric in rm.scope_metrics.iter().flat_map(|s| &s.metrics) {
                if !metric.name.starts_with("traces_service_graph_") {
                    continue;
                }
                let points: Vec<(&[opentelemetry_proto::tonic::common::v1::KeyValue], u64)> = match &metric.data {
                    Some(Data::Sum(s)) => s
                        .data_points
                        .iter()
                        .map(|dp| {
                            let v = match dp.value {
                                Some(NV::AsInt(v)) => v.max(0) as u64,
                                _ => 0,
                            };
                            (dp.attributes.as_slice(), v)
                        })
                        .collect(),
                    Some(Data::Histogram(h)) => {
                        h.data_points.iter().map(|dp| (dp.attributes.as_slice(), dp.count)).collect()
                    }
                    _ => continue,
                };
                for (attrs, v) in points {
                    let a = |k: &str| otel::str_value(attrs, k).unwrap_or_default();
                    let key = (res.clone(), metric.name.clone(), a("client"), a("server"), a("connection_type"));
                    let e = out.entry(key).or_default();
                    *e = (*e).max(v);
                }
            }
        }
    }
    out
}

/// Sum of `metric` over series matching (resource, client, server, connection_type) filters.
fn edge_sum(e: &Edges, metric: &str, f: impl Fn(&str, &str, &str, &str) -> bool) -> u64 {
    e.iter().filter(|((r, m, c, s, ct), _)| m == metric && f(r, c, s, ct)).map(|(_, v)| *v).sum()
}

/// Service graph from the joined pairs (CNFLOW_GATEWAY_SERVICE_GRAPH=true,
/// agents in `gateway` mode): the gateway's client → server edge counts every
/// cross-node request the clients made (HTTP GETs and DNS lookups; Redis is a
/// database call, counted by the client's agent) exactly once, with both
/// durations; the agents count none of them. Then, the client's agent stopped, SERVER
/// halves whose CLIENT never comes are edges from `user` (Tempo's expired
/// server span), once the window ends.
#[test]
fn live_service_graph_from_joined_pairs_counts_each_request_once() {
    service_graph_from_joined_pairs(false);
}

/// The same with every span sampled out by the agents (`always_off`, errors
/// not kept): the edges are the same, exact, and the backend gets no span
/// (the halves went to the gateway marked graph-only and stopped there).
#[test]
fn live_service_graph_stays_exact_when_the_agents_sample_every_span_out() {
    service_graph_from_joined_pairs(true);
}

fn service_graph_from_joined_pairs(sampled_out: bool) {
    let dir = Scratch::new(if sampled_out { "stitch-graph-s" } else { "stitch-graph" });
    let t = Topo::new(if sampled_out { "sgs" } else { "stg" }, true, &dir);
    let _servers = servers(&t, &dir);
    let recv = otel::Receiver::start(Some(&t.rt));
    let window_ms = 2000;
    let (_gw, port) =
        gateway_with(&t, &dir, recv.port, window_ms, "gateway", &[("CNFLOW_GATEWAY_SERVICE_GRAPH", "true".into())]);
    let gws = [format!("{}:{port}", t.gw_ip)];
    let mode = ("CNFLOW_SERVICE_GRAPH_METRICS", "gateway");
    let sampler: &[(&str, &str)] = if sampled_out {
        &[("OTEL_TRACES_SAMPLER", "always_off"), ("CNFLOW_SAMPLING_KEEP_ERRORS", "false")]
    } else {
        &[]
    };
    let env = |service: &'static str| {
        let mut e = vec![mode, ("OTEL_SERVICE_NAME", service)];
        e.extend_from_slice(sampler);
        e
    };
    let a_cl = start_agent_with(&t.cl, &t.if_cl, &gws, "node-client", &dir, &env("svc-client"));
    let a_sv = start_agent_with(&t.sv, &t.if_sv, &gws, "node-server", &dir, &env("svc-server"));
    clients(&t);
    std::thread::sleep(Duration::from_secs(1));
    agent::stop_agent(a_cl);
    agent::stop_agent(a_sv);

    // The oracle: what the clients did.
    let want = (HTTP_GETS + DIGS) as u64;
    let total = "traces_service_graph_request_total";
    let gw_edge = |e: &Edges, m: &str| {
        edge_sum(e, m, |r, c, s, ct| r == "cnflow-gateway" && c == "svc-client" && s == "svc-server" && ct.is_empty())
    };
    assert!(
        wait_until(T, || gw_edge(&graph_edges(&recv.received), total) >= want),
        "gateway edge: {:?}\nlogs in {}",
        graph_edges(&recv.received),
        dir.path("").display()
    );
    // A few more gateway exports: nothing late may add to it.
    std::thread::sleep(Duration::from_millis(window_ms + 2500));
    let e = graph_edges(&recv.received);
    eprintln!("service graph series: {e:#?}");
    assert_eq!(gw_edge(&e, total), want, "one edge per request, counted once");
    assert_eq!(gw_edge(&e, "traces_service_graph_request_failed_total"), 0);
    assert_eq!(gw_edge(&e, "traces_service_graph_request_client_seconds"), want, "client seconds per pair");
    assert_eq!(gw_edge(&e, "traces_service_graph_request_server_seconds"), want, "server seconds per pair");
    // Every half was joined: no virtual node at the gateway.
    assert_eq!(edge_sum(&e, total, |r, _, _, ct| r == "cnflow-gateway" && ct == "virtual_node"), 0);
    // No double count: the agents counted none of the cross-node HTTP/DNS
    // edges (in `true` mode each would have counted its end as a virtual
    // node), and across all sources svc-client → svc-server is the oracle.
    let agents = |r: &str| r == "svc-client" || r == "svc-server";
    assert_eq!(edge_sum(&e, total, |r, c, _, ct| agents(r) && c == "svc-client" && ct != "database"), 0, "{e:#?}");
    assert_eq!(edge_sum(&e, total, |r, c, s, _| !agents(r) && c == "svc-client" && s == "svc-server"), want);
    assert_eq!(edge_sum(&e, total, |_, c, s, _| c == "svc-client" && s == "svc-server"), want);
    // The Redis calls are database edges, from the client's agent only: the
    // server's agent leaves its end to the gateway, which counts a database
    // SERVER half only when no CLIENT half comes (none here).
    let db = edge_sum(&e, total, |r, c, _, ct| r == "svc-client" && c == "svc-client" && ct == "database");
    assert!(db >= REDIS_SETS as u64, "{db}");
    assert_eq!(edge_sum(&e, total, |_, _, _, ct| ct == "database"), db, "database edges from one source");
    assert_eq!(edge_sum(&e, total, |_, c, _, _| c == "user"), 0, "every SERVER half had its CLIENT");

    // Halves that never meet: only the server's agent runs; its SERVER spans
    // leave unjoined after the window and are edges from `user`.
    let user_edge = |e: &Edges| {
        edge_sum(e, total, |r, c, s, ct| {
            r == "cnflow-gateway" && c == "user" && s == "svc-server" && ct == "virtual_node"
        })
    };
    let a_sv = start_agent_with(&t.sv, &t.if_sv, &gws, "node-server", &dir, &env("svc-server"));
    let urls: Vec<String> = (0..HTTP_GETS).map(|i| format!("http://{}/users/{i}", t.vip)).collect();
    let mut args = vec!["curl", "-sf", "--http1.1"];
    args.extend(urls.iter().map(String::as_str));
    NetnsPair::exec(&t.cl, &args, T);
    std::thread::sleep(Duration::from_secs(1));
    agent::stop_agent(a_sv);
    assert!(
        wait_until(T, || user_edge(&graph_edges(&recv.received)) >= HTTP_GETS as u64),
        "user edge: {:?}",
        graph_edges(&recv.received)
    );
    std::thread::sleep(Duration::from_millis(1500));
    let e = graph_edges(&recv.received);
    assert_eq!(user_edge(&e), HTTP_GETS as u64);
    assert_eq!(gw_edge(&e, total), want, "the joined edge is unchanged");
    let spans = spans_of_receiver(&recv.received);
    if sampled_out {
        assert!(spans.is_empty(), "sampled-out spans reached the backend: {}", spans.len());
        assert!(gateway_counter(&dir, "gateway", "cnflow.gateway.stitch.graph_only") > 0);
    } else {
        assert!(!spans.is_empty());
    }
}
