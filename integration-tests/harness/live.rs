//! Live-versus-replay sessions: real peers in a namespace pair, `cnflow run
//! --format exchanges` capturing with eBPF on the server-side veth while
//! tcpdump records the same packets, then `cnflow replay` of that recording.
//! Everything (agent, tcpdump, peers, namespaces, scratch dir) is removed on
//! drop, also when a test fails.
//! Include with `#[path = "../harness/netns.rs"] mod netns;` and
//! `#[path = "../harness/live.rs"] mod live;` at the test crate root.
#![allow(dead_code)]

use crate::netns::{read, wait_until, ChildGuard, NetnsPair, Scratch};
use serde_json::Value;
use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::{Duration, Instant};

/// Unique-local IPv6 addresses added to the pair by [`LiveSession::with_ipv6`];
/// they exist only inside the session's two namespaces.
pub const IP6_A: &str = "fd00:200::1";
pub const IP6_B: &str = "fd00:200::2";

pub struct LiveSession {
    // Dropped in declaration order: processes go before their namespaces.
    peers: Vec<ChildGuard>,
    tcpdump: Option<ChildGuard>,
    agent: Option<ChildGuard>,
    pub pair: NetnsPair,
    pub dir: Scratch,
    started: Instant,
}

/// What the agent printed live and what replay made of the tcpdump recording.
pub struct Observed {
    pub live: Vec<Value>,
    pub replayed: Vec<Value>,
}

impl LiveSession {
    /// Namespaces and scratch dir only; servers are started with
    /// [`spawn_server`](Self::spawn_server), capture with [`start_capture`](Self::start_capture).
    pub fn new(tag: &str) -> Self {
        let pair = NetnsPair::new(tag);
        let dir = Scratch::new(&format!("live-{tag}"));
        LiveSession { peers: Vec::new(), tcpdump: None, agent: None, pair, dir, started: Instant::now() }
    }

    /// Adds [`IP6_A`]/[`IP6_B`] (no duplicate address detection, so they are
    /// usable at once).
    pub fn with_ipv6(self) -> Self {
        for (ns, dev, ip) in [(&self.pair.ns_a, &self.pair.veth_a, IP6_A), (&self.pair.ns_b, &self.pair.veth_b, IP6_B)]
        {
            let st = std::process::Command::new("ip")
                .args(["-n", ns, "addr", "add", &format!("{ip}/64"), "dev", dev, "nodad"])
                .status()
                .expect("ip addr add");
            assert!(st.success(), "adding {ip} failed");
        }
        self
    }

    /// A long-running peer in the server namespace (`ns_a`, where the agent
    /// captures); its stdout+stderr go to `<what>.log` in the scratch dir.
    pub fn spawn_server(&mut self, args: &[&str], what: &str) {
        let log = std::fs::File::create(self.dir.path(&format!("{what}.log"))).unwrap();
        let child = NetnsPair::cmd(&self.pair.ns_a, args[0])
            .args(&args[1..])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        self.peers.push(ChildGuard::new(child, what));
    }

    pub fn server_log(&self, what: &str) -> String {
        read(&self.dir.path(&format!("{what}.log")))
    }

    /// Starts the agent on the server-side veth, waits until its capture is
    /// attached, then starts tcpdump on the same interface.
    pub fn start_capture(&mut self) {
        let mut c = crate::harness::cnflow_in(&self.pair.ns_a);
        c.args(["run", "--format", "exchanges"])
            .env("CNFLOW_INTERFACES", &self.pair.veth_a)
            .env("CNFLOW_SNAPLEN", "4096")
            .stdout(std::fs::File::create(self.dir.path("agent.out")).unwrap())
            .stderr(std::fs::File::create(self.dir.path("agent.err")).unwrap());
        self.agent = Some(ChildGuard::new(c.spawn().expect("spawn cnflow"), "cnflow run"));
        let err = self.dir.path("agent.err");
        assert!(
            wait_until(Duration::from_secs(30), || read(&err).contains("capture attached")),
            "agent did not attach: {}",
            read(&err)
        );
        let pcap = self.dir.path("live.pcap");
        let c = NetnsPair::cmd(&self.pair.ns_a, "tcpdump")
            .args(["-i", &self.pair.veth_a, "-n", "-U", "--immediate-mode", "-B", "16384", "-s", "0", "-w"])
            .arg(&pcap)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(self.dir.path("tcpdump.err")).unwrap())
            .spawn()
            .expect("tcpdump");
        self.tcpdump = Some(ChildGuard::new(c, "tcpdump"));
        let err = self.dir.path("tcpdump.err");
        assert!(wait_until(Duration::from_secs(10), || read(&err).contains("listening on")), "tcpdump: {}", read(&err));
    }

    /// Waits (at most `timeout`) until `addr:port` accepts TCP connections
    /// from the client namespace. The probe connection carries no payload, so
    /// it yields no exchange.
    pub fn wait_tcp(&self, addr: &str, port: u16, timeout: Duration) -> bool {
        let target = format!("exec 3<>/dev/tcp/{addr}/{port}");
        wait_until(timeout, || {
            NetnsPair::cmd(&self.pair.ns_b, "bash")
                .args(["-c", &target])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        })
    }

    /// Runs a client to completion in the client namespace (`ns_b`), bounded by `timeout`.
    pub fn client(&self, args: &[&str], timeout: Duration) -> String {
        NetnsPair::exec(&self.pair.ns_b, args, timeout)
    }

    /// Lets the last packets reach the agent, stops tcpdump then the agent
    /// (which flushes what is pending), and replays the recording.
    pub fn finish(&mut self) -> Observed {
        // Settled when the agent's output has not grown for 500 ms (at least
        // 1 s, at most 6 s: a loaded machine may lag behind the peers).
        let out = self.dir.path("agent.out");
        let t0 = Instant::now();
        let (mut last_len, mut last_change) = (0usize, Instant::now());
        while t0.elapsed() < Duration::from_secs(6) {
            let len = read(&out).len();
            if len != last_len {
                (last_len, last_change) = (len, Instant::now());
            } else if t0.elapsed() >= Duration::from_secs(1) && last_change.elapsed() >= Duration::from_millis(500) {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let mut tcpdump = self.tcpdump.take().expect("start_capture was not called");
        tcpdump.signal(libc::SIGINT);
        tcpdump.wait_timeout(Duration::from_secs(10)).expect("tcpdump did not stop");
        let mut agent = self.agent.take().expect("start_capture was not called");
        agent.signal(libc::SIGTERM);
        agent.wait_timeout(Duration::from_secs(15)).expect("agent did not stop");
        let dropped = read(&self.dir.path("tcpdump.err"));
        assert!(
            dropped.lines().any(|l| l.trim() == "0 packets dropped by kernel"),
            "tcpdump lost packets, the comparison would be meaningless: {dropped}"
        );
        // Nothing lost or cut on the live side either, or a difference below
        // would be about the setup, not the decoders.
        let log = self.agent_log();
        let counters = log.lines().rev().find(|l| l.contains("capture stopped")).unwrap_or_default();
        assert!(
            counters.contains("ring_full=0 ") && counters.contains("truncated=0 "),
            "agent lost or truncated packets: {counters}"
        );
        let live = parse_lines(&read(&self.dir.path("agent.out")));
        let out = std::process::Command::new(crate::harness::cnflow_bin())
            .args(["replay", "--format", "exchanges"])
            .arg(self.dir.path("live.pcap"))
            .output()
            .expect("cnflow replay");
        assert!(out.status.success(), "replay: {}", String::from_utf8_lossy(&out.stderr));
        let replayed = parse_lines(&String::from_utf8_lossy(&out.stdout));
        eprintln!(
            "live session {}: {} live / {} replayed exchanges after {:?}",
            self.pair.ns_a,
            live.len(),
            replayed.len(),
            self.started.elapsed()
        );
        Observed { live, replayed }
    }

    pub fn agent_log(&self) -> String {
        read(&self.dir.path("agent.err"))
    }
}

/// Some two of `exs` were in progress at the same time (request of one sent
/// before the response of the other ended): multiplexed, not sequential.
pub fn overlapping(exs: &[Value]) -> bool {
    let t = |e: &Value, k: &str| e[k].as_u64().unwrap_or(0);
    exs.iter().enumerate().any(|(i, a)| {
        exs[i + 1..].iter().any(|b| t(a, "start_ns") < t(b, "end_ns") && t(b, "start_ns") < t(a, "end_ns"))
    })
}

fn parse_lines(out: &str) -> Vec<Value> {
    out.lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad line {l}: {e}")))
        .collect()
}

fn s(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        v => v.to_string(),
    }
}

/// Order-independent summary of an exchange: protocol, what was asked and
/// answered, and how it ended.
pub fn summary(e: &Value) -> String {
    let d = &e["detail"];
    let what = match s(&d["kind"]).as_str() {
        "http" if !d["grpc"].is_null() => {
            let g = &d["grpc"];
            format!(
                "{}/{} status={} msg={:?} msgs={}/{}",
                s(&g["service"]),
                s(&g["method"]),
                s(&g["status_code"]),
                s(&g["message"]),
                s(&g["request_messages"]),
                s(&g["response_messages"])
            )
        }
        "http" => {
            let q = if d["query"].is_null() { String::new() } else { format!("?{}", s(&d["query"])) };
            format!("{} {}{} {}", s(&d["method"]), s(&d["path"]), q, s(&d["status"]))
        }
        "redis" => format!("{} {} {}", s(&d["query_masked"]), s(&d["response_type"]), s(&d["error_prefix"])),
        "dns" => {
            format!("{} {} {} {}", s(&d["transport"]), s(&d["question_name"]), s(&d["question_type"]), s(&d["rcode"]))
        }
        "icmp" => format!("{} {} {} {}", s(&d["name"]), s(&d["v6"]), s(&d["code"]), s(&d["original"]["dst"])),
        "kafka" => {
            let topics: Vec<String> = d["topics"].as_array().map(|a| a.iter().map(s).collect()).unwrap_or_default();
            format!("{} {} [{}] err={}", s(&d["client_id"]), s(&d["api_name"]), topics.join(","), s(&d["error_code"]))
        }
        "memcached" => {
            format!("{} {} {} hits={}", s(&d["query_masked"]), s(&d["response"]), s(&d["error_code"]), s(&d["hits"]))
        }
        "nats" => format!("{} {} {} {}", s(&d["op"]), s(&d["subject"]), s(&d["response"]), s(&d["status"])),
        "mqtt" => format!(
            "{} {} {} q{} {} rc={}",
            s(&d["packet"]),
            s(&d["delivery"]),
            s(&d["topic"]),
            s(&d["qos"]),
            s(&d["response"]),
            s(&d["reason_code"])
        ),
        "postgres" => {
            format!("{} {} {} {}", s(&d["message"]), s(&d["summary"]), s(&d["command_tag"]), s(&d["sqlstate"]))
        }
        "mysql" => format!(
            "{} {} {:?} rows={} err={}",
            s(&d["command"]),
            s(&d["operation"]),
            s(&d["query_masked"]),
            s(&d["returned_rows"]),
            s(&d["error_code"])
        ),
        "mongodb" => format!(
            "{} {} rows={} err={} {}",
            s(&d["operation"]),
            s(&d["collection"]),
            s(&d["returned_rows"]),
            s(&d["error_code"]),
            s(&d["compressor"])
        ),
        k => k.to_string(),
    };
    let partial = if e["partial"] == Value::Bool(true) { " partial" } else { "" };
    format!("{} {} {}{}", s(&e["protocol"]), what, s(&e["outcome"]), partial)
}

/// [`summary`] plus the sizes and the server address family: what live and
/// replayed exchanges must share exactly.
pub fn fingerprint(e: &Value) -> String {
    format!(
        "{} | server={} req={} resp={}",
        summary(e),
        s(&e["conn"]["server"]),
        s(&e["request_bytes"]),
        s(&e["response_bytes"])
    )
}

/// Counts of each summary, for multiset comparisons with readable diffs.
pub fn counts(exs: &[Value], f: impl Fn(&Value) -> String) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for e in exs {
        *m.entry(f(e)).or_insert(0) += 1;
    }
    m
}

impl Observed {
    /// Exchanges of one protocol (the `protocol` field).
    pub fn of(&self, protocol: &str) -> (Vec<Value>, Vec<Value>) {
        let keep = |v: &Vec<Value>| v.iter().filter(|e| e["protocol"] == protocol).cloned().collect();
        (keep(&self.live), keep(&self.replayed))
    }

    /// Live and replayed exchanges agree exactly (summary, server, sizes,
    /// with multiplicity).
    pub fn assert_live_matches_replay(&self) {
        let (l, r) = (counts(&self.live, fingerprint), counts(&self.replayed, fingerprint));
        if l != r {
            let keys: std::collections::BTreeSet<&String> = l.keys().chain(r.keys()).collect();
            let diff: Vec<String> = keys
                .into_iter()
                .filter(|k| l.get(*k) != r.get(*k))
                .map(|k| format!("live {} / replay {}: {k}", l.get(k).unwrap_or(&0), r.get(k).unwrap_or(&0)))
                .collect();
            panic!("live and replayed exchanges differ:\n{}", diff.join("\n"));
        }
    }

    /// Live exchanges of `protocol` grouped by connection (client address:port),
    /// each group sorted by path/command summary.
    pub fn by_connection(&self, protocol: &str) -> BTreeMap<String, Vec<Value>> {
        let mut m: BTreeMap<String, Vec<Value>> = BTreeMap::new();
        for e in self.of(protocol).0 {
            m.entry(s(&e["conn"]["client"])).or_default().push(e);
        }
        for v in m.values_mut() {
            v.sort_by_key(summary);
        }
        m
    }

    /// The live summaries of `protocol` are exactly `expected` (with counts).
    pub fn assert_exactly(&self, protocol: &str, expected: &[(&str, usize)]) {
        let (live, _) = self.of(protocol);
        let got = counts(&live, summary);
        let want: BTreeMap<String, usize> = expected.iter().map(|(k, n)| (k.to_string(), *n)).collect();
        assert_eq!(got, want, "live {protocol} exchanges are not the expected set");
    }
}
