//! Faults the live agent must survive (root, real eBPF, network namespaces):
//! - SIGKILL mid-traffic: no TCX program stays attached, a restarted agent
//!   picks up the running connections and new ones;
//! - an interface removed while attached (link deleted, or its peer namespace
//!   deleted): the agent logs and counts it, keeps capturing elsewhere, and
//!   attaches again when the interface comes back;
//! - a full kernel ring buffer: the loss is counted in the stats line and the
//!   OTLP metrics, and capture is complete again once the burst is over;
//! - other programs on the same hook (tc filters before and after, a second
//!   cnflow as another TCX program): all run, packet fates unchanged.
//!
//! Gateway and backend restarts (disk queue across SIGKILL, retry until the
//! backend is back) are covered by gateway_queue.rs.
#[path = "../harness/mod.rs"]
mod harness;
#[path = "../harness/netns.rs"]
mod netns;

use netns::{read, wait_until, ChildGuard, NetnsPair, Scratch};
use serde_json::Value;
use std::process::{Command, Stdio};
use std::time::Duration;

/// Runs `cnflow run` in `ns`; stdout/stderr go to `<name>.out` / `<name>.err` in `dir`.
fn start_agent(ns: &str, dir: &Scratch, name: &str, args: &[&str], env: &[(&str, &str)]) -> ChildGuard {
    let mut c = harness::cnflow_in(ns);
    c.arg("run")
        .args(args)
        .env("CNFLOW_STATS_INTERVAL_SECS", "1")
        .stdout(std::fs::File::create(dir.path(&format!("{name}.out"))).unwrap())
        .stderr(std::fs::File::create(dir.path(&format!("{name}.err"))).unwrap());
    for (k, v) in env {
        c.env(k, v);
    }
    let g = ChildGuard::new(c.spawn().expect("spawn cnflow"), "cnflow run");
    let err = dir.path(&format!("{name}.err"));
    let ok = wait_until(Duration::from_secs(30), || {
        let e = read(&err);
        e.contains("capturing; spans follow") && e.contains("capture attached")
    });
    assert!(ok, "agent did not start within 30 s; stderr:\n{}", read(&err));
    g
}

fn stop_agent(mut g: ChildGuard) {
    g.signal(libc::SIGTERM);
    let st = g.wait_timeout(Duration::from_secs(20)).expect("agent did not exit within 20 s");
    assert!(st.success(), "agent exit status after SIGTERM: {st}");
}

fn cnflow_tcx(ns: &str, iface: &str) -> Vec<String> {
    netns::tcx_programs(ns, iface).into_iter().filter(|n| n.contains("cnflow_")).collect()
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("ip");
    assert!(out.status.success(), "ip {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

fn redis(ns: &str) -> ChildGuard {
    // Bound to every address of the test namespace, so addresses that come and go keep working.
    let c = NetnsPair::cmd(ns, "redis-server")
        .args(["--port", "6379", "--bind", "0.0.0.0", "--save", "", "--appendonly", "no", "--protected-mode", "no"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server");
    ChildGuard::new(c, "redis-server")
}

fn wait_redis(ns: &str, ip: &str) {
    let ok = wait_until(Duration::from_secs(10), || {
        NetnsPair::cmd(ns, "redis-cli")
            .args(["-h", ip, "PING"])
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("PONG"))
    });
    assert!(ok, "redis-server at {ip} did not answer");
}

/// `SET key v` over a new connection from `ns`.
fn set(ns: &str, ip: &str, key: &str) {
    let out = NetnsPair::exec(ns, &["redis-cli", "-h", ip, "SET", key, "v"], Duration::from_secs(10));
    assert_eq!(out.trim(), "OK");
}

/// Keys of the Redis SET exchanges in `--format exchanges` output.
fn set_keys(out: &str) -> Vec<String> {
    out.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["detail"]["command"] == "SET")
        .filter_map(|v| v["detail"]["query_raw"].as_str()?.split_whitespace().nth(1).map(str::to_string))
        .collect()
}

/// Highest N among keys `<prefix>N`.
fn max_index(keys: &[String], prefix: &str) -> Option<u64> {
    keys.iter().filter_map(|k| k.strip_prefix(prefix)?.parse().ok()).max()
}

/// Python prelude of the Redis clients below: `cmd(sock, *args)` sends one
/// command and returns its one-line reply.
const RESP_CMD: &str = r#"
import socket, sys, time
def cmd(s, *a):
    s.sendall(("*%d\r\n" % len(a) + "".join("$%d\r\n%s\r\n" % (len(x), x) for x in a)).encode())
    buf = b""
    while not buf.endswith(b"\r\n"):
        c = s.recv(4096)
        if not c:
            sys.exit("connection closed")
        buf += c
    return buf
"#;

/// Redis client: SETs `live-N` on one long-lived connection and, every tenth
/// request, `new-N` on a fresh connection; prints N after each round.
fn churn_client() -> String {
    RESP_CMD.to_string()
        + r#"
host, n, pause = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
live = socket.create_connection((host, 6379), timeout=5)
for i in range(n):
    cmd(live, "SET", "live-%d" % i, "x")
    if i % 10 == 0:
        s = socket.create_connection((host, 6379), timeout=5)
        cmd(s, "SET", "new-%d" % i, "y")
        s.close()
    print(i, flush=True)
    time.sleep(pause)
"#
}

/// Redis client: `n` SETs `after-i` on one connection, one at a time;
/// prints "n OK" when every reply was +OK.
fn set_client() -> String {
    RESP_CMD.to_string()
        + r#"
host, n = sys.argv[1], int(sys.argv[2])
s = socket.create_connection((host, 6379), timeout=5)
print("%d OK" % sum(cmd(s, "SET", "after-%d" % i, "v") == b"+OK\r\n" for i in range(n)))
"#
}

#[test]
fn sigkill_mid_traffic_leaves_no_hook_and_restart_resumes_capture() {
    let pair = NetnsPair::new("kill");
    let dir = Scratch::new("faults-kill");
    let _redis = redis(&pair.ns_a);
    wait_redis(&pair.ns_b, &pair.ip_a);
    let env = [("CNFLOW_INTERFACES", pair.veth_a.as_str())];
    let agent = start_agent(&pair.ns_a, &dir, "run1", &["--format", "exchanges"], &env);
    assert_eq!(cnflow_tcx(&pair.ns_a, &pair.veth_a).len(), 2);

    // Bounded traffic: at most 4000 rounds of ~5 ms, stopped by the guard at the end.
    let progress = dir.path("client.out");
    let client = NetnsPair::cmd(&pair.ns_b, "python3")
        .args(["-c", &churn_client(), &pair.ip_a, "4000", "0.005"])
        .stdout(std::fs::File::create(&progress).unwrap())
        .stderr(std::fs::File::create(dir.path("client.err")).unwrap())
        .spawn()
        .expect("client");
    let mut client = ChildGuard::new(client, "redis client");
    let rounds = || read(&progress).lines().last().and_then(|l| l.trim().parse::<u64>().ok()).unwrap_or(0);

    let out1 = dir.path("run1.out");
    let ok = wait_until(Duration::from_secs(20), || {
        let k = set_keys(&read(&out1));
        k.iter().filter(|k| k.starts_with("live-")).count() >= 50 && k.iter().any(|k| k.starts_with("new-"))
    });
    assert!(ok, "first agent captured too little:\n{}\n{}", read(&out1), read(&dir.path("run1.err")));

    // kill -9 while the client keeps going.
    let mut agent = agent;
    agent.signal(libc::SIGKILL);
    agent.wait_timeout(Duration::from_secs(10)).expect("SIGKILLed agent did not exit");
    let killed_at = rounds();
    let gone = wait_until(Duration::from_secs(5), || cnflow_tcx(&pair.ns_a, &pair.veth_a).is_empty());
    assert!(gone, "TCX programs left after SIGKILL: {:?}", cnflow_tcx(&pair.ns_a, &pair.veth_a));
    assert!(client.child.try_wait().unwrap().is_none(), "client died: {}", read(&dir.path("client.err")));

    // Restart: the running connection is picked up mid-stream, new connections from their SYN.
    let agent = start_agent(&pair.ns_a, &dir, "run2", &["--format", "exchanges"], &env);
    assert_eq!(cnflow_tcx(&pair.ns_a, &pair.veth_a).len(), 2, "re-attached after restart");
    let restarted_at = rounds();
    let out2 = dir.path("run2.out");
    let ok = wait_until(Duration::from_secs(20), || {
        let k = set_keys(&read(&out2));
        max_index(&k, "live-").is_some_and(|i| i > restarted_at + 20)
            && max_index(&k, "new-").is_some_and(|i| i > restarted_at)
    });
    assert!(
        ok,
        "capture did not resume after restart (killed at round {killed_at}, restarted at {restarted_at}):\n{}\n{}",
        read(&out2),
        read(&dir.path("run2.err"))
    );
    // From the first complete round after the restart on, nothing is missed on
    // the long-lived connection.
    let keys = set_keys(&read(&out2));
    let last = max_index(&keys, "live-").unwrap();
    let first = restarted_at + 2;
    let missing: Vec<u64> =
        (first..=last).filter(|i| !keys.iter().any(|k| k == &format!("live-{i}"))).take(10).collect();
    assert!(missing.is_empty(), "rounds {first}..={last}: missing live-N exchanges {missing:?}");

    client.signal(libc::SIGKILL);
    stop_agent(agent);
    assert!(cnflow_tcx(&pair.ns_a, &pair.veth_a).is_empty());
    let err = read(&dir.path("run2.err"));
    assert_eq!(harness::logged_counter(&err, "capture stopped", "ring_full").unwrap_or(0), 0, "{err}");
}

/// A network namespace deleted on drop (unless the test deleted it first).
struct Ns(String);

impl Ns {
    fn new(name: String) -> Self {
        ip(&["netns", "add", &name]);
        ip(&["-n", &name, "link", "set", "lo", "up"]);
        Ns(name)
    }
}

impl Drop for Ns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).stderr(Stdio::null()).status();
    }
}

#[test]
fn interface_removed_while_attached_is_counted_and_reattached() {
    let pair = NetnsPair::new("ifrm");
    let dir = Scratch::new("faults-ifrm");
    let _redis = redis(&pair.ns_a);
    // A third namespace, like a pod, joined to A by its own veth pair.
    let ns_c = format!("{}-c", pair.ns_b);
    let (va, vc) = (format!("{}y", pair.veth_a), format!("{}y", pair.veth_b));
    let sub = pair.ip_a.split('.').nth(2).unwrap().parse::<u32>().unwrap() % 250 + 1;
    let (ip_a2, ip_c) = (format!("10.200.{sub}.1"), format!("10.200.{sub}.2"));
    let link_c = |ns_c: &str| {
        ip(&["link", "add", &va, "netns", &pair.ns_a, "type", "veth", "peer", "name", &vc, "netns", ns_c]);
        ip(&["-n", &pair.ns_a, "addr", "add", &format!("{ip_a2}/24"), "dev", &va]);
        ip(&["-n", ns_c, "addr", "add", &format!("{ip_c}/24"), "dev", &vc]);
        ip(&["-n", ns_c, "link", "set", &vc, "up"]);
        ip(&["-n", &pair.ns_a, "link", "set", &va, "up"]);
    };
    let mut c_guard = Some(Ns::new(ns_c.clone()));
    link_c(&ns_c);
    wait_redis(&pair.ns_b, &pair.ip_a);
    wait_redis(&ns_c, &ip_a2);

    let agent = start_agent(&pair.ns_a, &dir, "run", &["--format", "exchanges"], &[("CNFLOW_INTERFACES", "auto")]);
    let mut agent = agent;
    let both = wait_until(Duration::from_secs(10), || {
        cnflow_tcx(&pair.ns_a, &pair.veth_a).len() == 2 && cnflow_tcx(&pair.ns_a, &va).len() == 2
    });
    assert!(both, "auto mode did not attach both interfaces:\n{}", read(&dir.path("run.err")));
    let out = dir.path("run.out");
    let err = dir.path("run.err");
    let captured = |key: &str| wait_until(Duration::from_secs(10), || set_keys(&read(&out)).iter().any(|k| k == key));
    set(&pair.ns_b, &pair.ip_a, "b-0");
    set(&ns_c, &ip_a2, "c-0");
    assert!(captured("b-0") && captured("c-0"), "initial traffic not captured:\n{}", read(&out));

    let detached_count = || read(&err).lines().filter(|l| l.contains("capture detached") && l.contains(&va)).count();
    for (round, how) in [(1, "link deleted"), (2, "peer namespace deleted")] {
        // Remove the interface while it carries traffic.
        let traffic = NetnsPair::cmd(&ns_c, "python3")
            .args(["-c", &churn_client(), &ip_a2, "2000", "0.005"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("client");
        let traffic = ChildGuard::new(traffic, "redis client");
        std::thread::sleep(Duration::from_millis(300));
        if round == 1 {
            ip(&["-n", &pair.ns_a, "link", "del", &va]);
        } else {
            // Like a pod going away: its processes end, then its namespace is
            // deleted (the kernel frees it with its last process), taking the veth pair with it.
            drop(traffic);
            drop(c_guard.take());
        }
        let ok = wait_until(Duration::from_secs(10), || detached_count() >= round);
        assert!(ok, "round {round} ({how}): no detach logged:\n{}", read(&err));
        assert!(agent.child.try_wait().unwrap().is_none(), "agent exited:\n{}", read(&err));
        // The remaining interface is still captured.
        assert_eq!(cnflow_tcx(&pair.ns_a, &pair.veth_a).len(), 2);
        let key = format!("b-{round}");
        set(&pair.ns_b, &pair.ip_a, &key);
        assert!(captured(&key), "round {round}: traffic on {} not captured after removal", pair.veth_a);

        // The interface comes back (same name, new ifindex): attached again.
        if c_guard.is_none() {
            c_guard = Some(Ns::new(ns_c.clone()));
        }
        link_c(&ns_c);
        let back = wait_until(Duration::from_secs(10), || cnflow_tcx(&pair.ns_a, &va).len() == 2);
        assert!(back, "round {round}: {va} not re-attached:\n{}", read(&err));
        wait_redis(&ns_c, &ip_a2);
        let key = format!("c-{round}");
        set(&ns_c, &ip_a2, &key);
        assert!(captured(&key), "round {round}: traffic on re-created {va} not captured:\n{}", read(&out));
    }
    let log = read(&err);
    assert!(log.contains("interface removed or down"), "{log}");
    stop_agent(agent);
    let log = read(&err);
    assert_eq!(harness::final_counter(&log, "cnflow.capture.interface_changes{change=removed}"), 2, "{log}");
    // veth_a + va at start, va twice more.
    assert_eq!(harness::final_counter(&log, "cnflow.capture.interface_changes{change=attached}"), 4, "{log}");
    drop(c_guard);
}

/// Sends `n` UDP datagrams of `size` bytes to host:port as fast as possible.
const UDP_BURST: &str = r#"
import socket, sys
host, port, n, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
msg = b"x" * size
for _ in range(n):
    s.sendto(msg, (host, port))
"#;

/// Discards UDP datagrams until killed (avoids ICMP port-unreachable noise).
const UDP_SINK: &str = r#"
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
s.bind((sys.argv[1], int(sys.argv[2])))
while True:
    s.recv(65536)
"#;

/// The `cnflow.capture.packets{reason=ring_full}` data point of the last metrics line.
fn exported_ring_full(out: &str) -> Option<i64> {
    let last = out
        .lines()
        .rev()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v.get("resourceMetrics").is_some())?;
    for rm in last["resourceMetrics"].as_array()? {
        for sm in rm["scopeMetrics"].as_array()? {
            for m in sm["metrics"].as_array()? {
                if m["name"] != "cnflow.capture.packets" {
                    continue;
                }
                for dp in m["sum"]["dataPoints"].as_array()? {
                    let reason = dp["attributes"].as_array()?.iter().any(|a| a["value"]["stringValue"] == "ring_full");
                    if reason {
                        let v = &dp["asInt"];
                        return v.as_str().and_then(|s| s.parse().ok()).or(v.as_i64());
                    }
                }
            }
        }
    }
    None
}

fn span_count(out: &str, name: &str) -> usize {
    out.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|v| v["resourceSpans"].as_array().cloned())
        .flatten()
        .flat_map(|rs| rs["scopeSpans"].as_array().cloned().unwrap_or_default())
        .flat_map(|ss| ss["spans"].as_array().cloned().unwrap_or_default())
        .filter(|s| s["name"] == name)
        .count()
}

#[test]
fn full_ring_buffer_is_counted_exported_and_capture_recovers() {
    let pair = NetnsPair::new("ring");
    let dir = Scratch::new("faults-ring");
    let _redis = redis(&pair.ns_a);
    let sink = NetnsPair::cmd(&pair.ns_a, "python3").args(["-c", UDP_SINK, &pair.ip_a, "9999"]).spawn().unwrap();
    let _sink = ChildGuard::new(sink, "udp sink");
    wait_redis(&pair.ns_b, &pair.ip_a);
    // The smallest ring (64 KiB) holds about fifty 1 KiB datagrams.
    let env = [
        ("CNFLOW_INTERFACES", pair.veth_a.as_str()),
        ("CNFLOW_RING_BUFFER_BYTES", "65536"),
        ("CNFLOW_METRIC_EXPORT_INTERVAL_SECS", "1"),
    ];
    let agent = start_agent(&pair.ns_a, &dir, "run", &["--format", "otlp-json"], &env);
    let (out, err) = (dir.path("run.out"), dir.path("run.err"));
    let ring_full =
        || harness::logged_counter(&read(&err), "counters:", "cnflow.capture.packets{reason=ring_full}").unwrap_or(0);

    // Bursts until the kernel reports a full ring (at most five of 200k datagrams).
    for _ in 0..5 {
        NetnsPair::exec(
            &pair.ns_b,
            &["python3", "-c", UDP_BURST, &pair.ip_a, "9999", "200000", "1000"],
            Duration::from_secs(30),
        );
        if wait_until(Duration::from_secs(3), || ring_full() > 0) {
            break;
        }
    }
    let lost = ring_full();
    assert!(lost > 0, "no ring_full after the bursts:\n{}", read(&err));

    // Recovered: every request after the burst becomes a span. On a loaded
    // machine the agent may still be draining the burst, so wait until the
    // kernel's ring_full count (logged every second) has stopped moving.
    let mut last = ring_full();
    let settled = wait_until(Duration::from_secs(30), || {
        std::thread::sleep(Duration::from_millis(1500));
        let now = ring_full();
        std::mem::replace(&mut last, now) == now
    });
    assert!(settled, "ring_full still growing 30 s after the burst:\n{}", read(&err));
    // ... and until the agent has worked through what it did capture: while
    // it drains the burst its reader waits for room, the 64 KiB ring fills
    // again, and the requests below would be lost with it (seen on a loaded
    // CI run: ring_full rose by 79 packets during the 50 SETs, 30 spans came).
    // Idle: under 0.1 s of CPU (10 clock ticks) in a second.
    let cpu_ticks = || -> u64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", agent.pid())).unwrap_or_default();
        let fields: Vec<&str> = stat.rsplit_once(')').map_or("", |(_, f)| f).split_whitespace().collect();
        // utime and stime: fields 14 and 15, the 12th and 13th after the command name.
        fields.get(11..13).map_or(0, |t| t.iter().filter_map(|v| v.parse::<u64>().ok()).sum())
    };
    let mut last_cpu = cpu_ticks();
    let idle = wait_until(Duration::from_secs(60), || {
        std::thread::sleep(Duration::from_secs(1));
        let now = cpu_ticks();
        now.saturating_sub(std::mem::replace(&mut last_cpu, now)) <= 10
    });
    assert!(idle, "agent still busy 60 s after the burst:\n{}", read(&err));
    let before = span_count(&read(&out), "SET");
    // A plain socket client, not redis-cli: redis-cli first asks for
    // COMMAND DOCS, a reply of several 64 KB GSO packets that overflows this
    // 64 KiB ring by itself and took the SETs right behind it along (CI,
    // 2026-12-07: ring_full +134 at that second, 3 of 50 SET spans).
    let sets =
        NetnsPair::exec(&pair.ns_b, &["python3", "-c", &set_client(), &pair.ip_a, "50"], Duration::from_secs(10));
    assert_eq!(sets.trim(), "50 OK", "the client's own count");
    // The agent may still be working through the burst it did capture (a
    // debug build on a loaded CI machine took over 10 s once): the bound is
    // generous, the count below stays exact.
    let ok = wait_until(Duration::from_secs(60), || span_count(&read(&out), "SET") >= before + 50);
    assert!(ok, "after the burst: {} SET spans, expected {}", span_count(&read(&out), "SET") - before, 50);
    // No further loss once the burst is over.
    std::thread::sleep(Duration::from_millis(1500));
    let after = ring_full();
    stop_agent(agent);
    let log = read(&err);
    assert_eq!(span_count(&read(&out), "SET"), before + 50, "exactly one span per request");
    assert_eq!(harness::final_counter(&log, "cnflow.capture.packets{reason=ring_full}"), after, "{log}");
    // The loss is in the OTLP metrics too, as current as the final log line.
    let exported = exported_ring_full(&read(&out)).expect("cnflow.capture.packets{reason=ring_full} exported");
    assert_eq!(exported as u64, after, "exported ring_full vs final counters");
}

/// `tc` in `ns`, asserting success; returns stdout.
fn tc(ns: &str, args: &[&str]) -> String {
    let out = Command::new("ip").args(["netns", "exec", ns, "tc"]).args(args).output().expect("tc");
    assert!(out.status.success(), "tc {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Packets counted by the action of the filter with preference `pref` on
/// `dev`'s `dir` hook (`tc -s filter show`: "Sent N bytes M pkt").
fn tc_hits(ns: &str, dev: &str, dir: &str, pref: &str) -> u64 {
    let out = tc(ns, &["-s", "filter", "show", "dev", dev, dir, "pref", pref]);
    out.lines()
        .find_map(|l| {
            let l = l.trim();
            let rest = l.strip_prefix("Sent ")?;
            let w: Vec<&str> = rest.split_whitespace().collect();
            (w.get(1) == Some(&"bytes")).then(|| w[2].parse().ok()).flatten()
        })
        .unwrap_or(0)
}

/// Whether a TCP connection from `ns` to `ip:port` is established within 2 s.
fn connects(ns: &str, ip: &str, port: u16) -> bool {
    NetnsPair::cmd(ns, "python3")
        .args(["-c", "import socket,sys; socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=2)", ip])
        .arg(port.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// cnflow beside other programs on the same hook: legacy tc filters (clsact
/// u32 + mirred: one counting TCP packets, one dropping a marked port) added before
/// cnflow, a second cnflow (another TCX program) and another counting filter
/// added after it. Every program runs (counters move, both cnflows capture
/// every SET), the marked flow is still dropped and the others pass, exactly
/// as without cnflow; stopping cnflow leaves the other programs in place.
#[test]
fn coexists_with_other_tc_and_tcx_programs() {
    let pair = NetnsPair::new("tcxco");
    let dir = Scratch::new("faults-tcxco");
    let _redis = redis(&pair.ns_a);
    // Listeners for the marked (dropped) port and a control port.
    let listen = |port: u16| {
        let c = NetnsPair::cmd(&pair.ns_a, "python3")
            .args(["-c", "import socket,sys,time\ns=socket.socket();s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\ns.bind(('0.0.0.0',int(sys.argv[1])));s.listen(64)\nwhile True:\n c,_=s.accept();c.close()"])
            .arg(port.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("listener");
        ChildGuard::new(c, "listener")
    };
    let (_l1, _l2) = (listen(7777), listen(7778));
    wait_redis(&pair.ns_b, &pair.ip_a);
    let dev = pair.veth_a.as_str();
    // This kernel has no gact/matchall, but u32 + mirred: "count" = mirror a
    // copy to an ifb device that is up (the packet goes on), "drop" = redirect
    // to an ifb device that is down (the packet is gone).
    ip(&["-n", &pair.ns_a, "link", "add", "cnfifbm", "type", "ifb"]);
    ip(&["-n", &pair.ns_a, "link", "set", "cnfifbm", "up"]);
    ip(&["-n", &pair.ns_a, "link", "add", "cnfifbd", "type", "ifb"]);
    let u32_filter = |dir: &str, pref: &str, m: &[&str], action: &[&str]| {
        let mut a = vec!["filter", "add", "dev", dev, dir, "pref", pref, "protocol", "ip", "u32", "match", "ip"];
        a.extend_from_slice(m);
        a.extend_from_slice(&["action", "mirred", "egress"]);
        a.extend_from_slice(action);
        tc(&pair.ns_a, &a);
    };
    // Before cnflow: a counting filter for TCP to redis and a drop for port 7777.
    tc(&pair.ns_a, &["qdisc", "add", "dev", dev, "clsact"]);
    u32_filter("ingress", "10", &["dport", "6379", "0xffff"], &["mirror", "dev", "cnfifbm"]);
    u32_filter("ingress", "20", &["dport", "7777", "0xffff"], &["redirect", "dev", "cnfifbd"]);
    assert!(!connects(&pair.ns_b, &pair.ip_a, 7777) && connects(&pair.ns_b, &pair.ip_a, 7778), "baseline fate");

    let env = [("CNFLOW_INTERFACES", dev)];
    let first = start_agent(&pair.ns_a, &dir, "first", &["--format", "exchanges"], &env);
    // After cnflow: a second cnflow (a second TCX program on both directions)
    // and a counting filter on egress (redis' replies).
    let second = start_agent(&pair.ns_a, &dir, "second", &["--format", "exchanges"], &env);
    assert_eq!(cnflow_tcx(&pair.ns_a, dev).len(), 4, "two cnflow programs per direction");
    u32_filter("egress", "30", &["sport", "6379", "0xffff"], &["mirror", "dev", "cnfifbm"]);

    let before = tc_hits(&pair.ns_a, dev, "ingress", "10");
    const N: usize = 20;
    for i in 0..N {
        set(&pair.ns_b, &pair.ip_a, &format!("co-{i}"));
    }
    // Same fate as without cnflow.
    assert!(!connects(&pair.ns_b, &pair.ip_a, 7777), "the marked flow is still dropped");
    assert!(connects(&pair.ns_b, &pair.ip_a, 7778), "other flows pass");
    // Each SET is a new connection: SYN, request, ACKs, FIN... at least 4 packets in.
    let hits = tc_hits(&pair.ns_a, dev, "ingress", "10") - before;
    assert!(hits >= 4 * N as u64, "counting filter before cnflow saw {hits} packets");
    let replies = tc_hits(&pair.ns_a, dev, "egress", "30");
    assert!(replies >= 3 * N as u64, "counting filter added after cnflow saw {replies} packets");
    for name in ["first", "second"] {
        let out = dir.path(&format!("{name}.out"));
        let ok = wait_until(Duration::from_secs(10), || {
            set_keys(&read(&out)).iter().filter(|k| k.starts_with("co-")).count() == N
        });
        assert!(ok, "{name} cnflow did not capture every SET:\n{}", read(&out));
    }
    stop_agent(second);
    stop_agent(first);
    assert!(cnflow_tcx(&pair.ns_a, dev).is_empty());
    let filters = tc(&pair.ns_a, &["filter", "show", "dev", dev, "ingress"])
        + &tc(&pair.ns_a, &["filter", "show", "dev", dev, "egress"]);
    assert!(["pref 10", "pref 20", "pref 30"].iter().all(|p| filters.contains(p)), "other filters kept:\n{filters}");
    assert!(!connects(&pair.ns_b, &pair.ip_a, 7777) && connects(&pair.ns_b, &pair.ip_a, 7778), "fate after cnflow");
}

/// cnflow filters (`cls_bpf` named cnflow_*) on `dev`'s `dir` hook.
fn cnflow_filters(ns: &str, dev: &str, dir: &str) -> usize {
    let out = Command::new("ip").args(["netns", "exec", ns, "tc", "filter", "show", "dev", dev, dir]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).lines().filter(|l| l.contains("cnflow_")).count()
}

/// Kernels without TCX (Debian 12's 6.1): CNFLOW_TC_ATTACH=netlink attaches
/// clsact cls_bpf filters instead (forced here on a kernel that has TCX). They
/// capture like TCX links; a SIGKILL leaves them behind, the next start
/// removes them (counted) so nothing is captured twice, and SIGTERM removes them.
#[test]
fn netlink_attach_for_kernels_without_tcx() {
    let pair = NetnsPair::new("nlatt");
    let dir = Scratch::new("faults-nlatt");
    let _redis = redis(&pair.ns_a);
    wait_redis(&pair.ns_b, &pair.ip_a);
    let dev = pair.veth_a.as_str();
    let env = [("CNFLOW_INTERFACES", dev), ("CNFLOW_TC_ATTACH", "netlink")];
    let mut first = start_agent(&pair.ns_a, &dir, "first", &["--format", "exchanges"], &env);
    assert!(cnflow_tcx(&pair.ns_a, dev).is_empty(), "no TCX link in netlink mode");
    assert_eq!((cnflow_filters(&pair.ns_a, dev, "ingress"), cnflow_filters(&pair.ns_a, dev, "egress")), (1, 1));
    assert!(read(&dir.path("first.err")).contains("capture attached (tc clsact"));
    set(&pair.ns_b, &pair.ip_a, "nl-0");
    let captured = |name: &str, key: &str| {
        let out = dir.path(&format!("{name}.out"));
        wait_until(Duration::from_secs(10), || set_keys(&read(&out)).iter().any(|k| k == key))
    };
    assert!(captured("first", "nl-0"));
    first.signal(libc::SIGKILL);
    first.wait_timeout(Duration::from_secs(10)).expect("killed agent exits");
    assert_eq!(cnflow_filters(&pair.ns_a, dev, "ingress"), 1, "a killed agent's filter stays (unlike TCX)");

    let second = start_agent(&pair.ns_a, &dir, "second", &["--format", "exchanges"], &env);
    assert_eq!((cnflow_filters(&pair.ns_a, dev, "ingress"), cnflow_filters(&pair.ns_a, dev, "egress")), (1, 1));
    assert!(read(&dir.path("second.err")).contains("removed a stale cnflow tc filter"));
    for i in 1..=5 {
        set(&pair.ns_b, &pair.ip_a, &format!("nl-{i}"));
    }
    assert!(captured("second", "nl-5"));
    std::thread::sleep(Duration::from_millis(500));
    let keys = set_keys(&read(&dir.path("second.out")));
    assert_eq!(keys.iter().filter(|k| k.starts_with("nl-")).count(), 5, "each SET once: {keys:?}");
    stop_agent(second);
    assert_eq!((cnflow_filters(&pair.ns_a, dev, "ingress"), cnflow_filters(&pair.ns_a, dev, "egress")), (0, 0));
}
