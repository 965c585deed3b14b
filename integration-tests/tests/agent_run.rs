//! The whole live agent (`cnflow run` / `cnflow agent`) against real servers in a
//! network namespace: eBPF capture → flows → decoders → OTLP spans and metrics.
//! Counts are exact: N requests in, N spans and a request histogram count of N out.
#[path = "../harness/agent.rs"]
mod agent;
#[path = "../harness/mod.rs"]
mod harness;
#[path = "../harness/netns.rs"]
mod netns;

use agent::{nginx, redis, redis_benchmark_set, start_agent, stop_agent as stop, wait_port};
use netns::{read, wait_until, NetnsPair};
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::Duration;

fn str_attr(attrs: &Value, key: &str) -> Option<String> {
    attrs.as_array()?.iter().find(|kv| kv["key"] == key).map(|kv| {
        let v = &kv["value"];
        v["stringValue"].as_str().map(str::to_string).unwrap_or_else(|| v.to_string())
    })
}

#[derive(Default, Debug)]
struct Seen {
    /// (kind, name, status code) → count
    spans: BTreeMap<(i64, String, i64), u64>,
    /// metric name → summed histogram count over data points (last cumulative value per series)
    histogram_counts: BTreeMap<String, u64>,
    resource_service: Vec<String>,
}

fn parse_otlp_json(out: &str) -> Seen {
    let mut seen = Seen::default();
    let mut last_metrics: Option<Value> = None;
    for line in out.lines().filter(|l| !l.trim().is_empty()) {
        let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("bad OTLP/JSON line {line}: {e}"));
        if let Some(rs) = v["resourceSpans"].as_array() {
            for r in rs {
                if let Some(s) = str_attr(&r["resource"]["attributes"], "service.name") {
                    seen.resource_service.push(s);
                }
                for ss in r["scopeSpans"].as_array().unwrap() {
                    for s in ss["spans"].as_array().unwrap() {
                        let key = (
                            s["kind"].as_i64().unwrap_or(0),
                            s["name"].as_str().unwrap().to_string(),
                            s["status"]["code"].as_i64().unwrap_or(0),
                        );
                        *seen.spans.entry(key).or_default() += 1;
                    }
                }
            }
        }
        if v.get("resourceMetrics").is_some() {
            last_metrics = Some(v);
        }
    }
    // Cumulative temporality: the last metrics request holds the totals.
    if let Some(m) = last_metrics {
        for r in m["resourceMetrics"].as_array().unwrap() {
            for sm in r["scopeMetrics"].as_array().unwrap() {
                for metric in sm["metrics"].as_array().unwrap() {
                    let Some(points) = metric["histogram"]["dataPoints"].as_array() else { continue };
                    let n: u64 = points
                        .iter()
                        .map(|p| p["count"].as_str().and_then(|c| c.parse().ok()).or(p["count"].as_u64()).unwrap_or(0))
                        .sum();
                    *seen.histogram_counts.entry(metric["name"].as_str().unwrap().to_string()).or_default() += n;
                }
            }
        }
    }
    seen
}

const SERVER: i64 = 2;

#[test]
fn live_http_and_redis_give_exactly_one_span_per_request_and_matching_metrics() {
    let pair = NetnsPair::new("run");
    let dir = tempfile::tempdir().unwrap();
    let _nginx = nginx(&pair.ns_b, &pair.ip_b, dir.path());
    let _redis = redis(&pair.ns_b, &pair.ip_b);
    wait_port(&pair.ns_b, &pair.ip_b, 8080);
    wait_port(&pair.ns_b, &pair.ip_b, 6379);
    let agent = start_agent(&pair.ns_b, &pair.veth_b, "run", &["--format", "otlp-json"], &[], dir.path());

    const HTTP_N: usize = 30;
    // Sequential requests, new connection each, plus keep-alive on one connection.
    for i in 0..HTTP_N / 2 {
        NetnsPair::exec(
            &pair.ns_a,
            &["curl", "-sf", "-o", "/dev/null", &format!("http://{}:8080/users/{}", pair.ip_b, i % 5)],
            Duration::from_secs(10),
        );
    }
    let urls: Vec<String> = (0..HTTP_N / 2).map(|i| format!("http://{}:8080/users/{}", pair.ip_b, i % 5)).collect();
    let mut args = vec!["curl", "-sf", "-o", "/dev/null"];
    for u in &urls {
        args.push(u);
        if u != urls.last().unwrap() {
            args.extend(["-o", "/dev/null"]);
        }
    }
    NetnsPair::exec(&pair.ns_a, &args, Duration::from_secs(20));
    NetnsPair::exec(
        &pair.ns_a,
        &["curl", "-s", "-o", "/dev/null", &format!("http://{}:8080/nope", pair.ip_b)],
        Duration::from_secs(10),
    );
    // Pipelined Redis: 16 commands in flight per connection.
    const REDIS_N: usize = 400;
    redis_benchmark_set(&pair.ns_a, &pair.ip_b, REDIS_N);
    std::thread::sleep(Duration::from_millis(500));
    stop(agent);

    let seen = parse_otlp_json(&read(&dir.path().join("agent.out")));
    let err = read(&dir.path().join("agent.err"));
    let get_users = seen.spans.get(&(SERVER, "GET /users/{id}".into(), 0)).copied().unwrap_or(0);
    assert_eq!(get_users as usize, HTTP_N, "spans: {:?}\n{err}", seen.spans);
    // The 404 is one more span, not a server error (semconv): status unset.
    let all_gets: u64 = seen
        .spans
        .iter()
        .filter(|((k, n, st), _)| *k == SERVER && n.starts_with("GET") && *st == 0)
        .map(|(_, c)| c)
        .sum();
    assert_eq!(all_gets as usize, HTTP_N + 1, "spans: {:?}", seen.spans);
    let sets = seen.spans.get(&(SERVER, "SET".into(), 0)).copied().unwrap_or(0);
    assert_eq!(sets as usize, REDIS_N, "spans: {:?}", seen.spans);
    assert_eq!(seen.histogram_counts.get("http.server.request.duration").copied(), Some(HTTP_N as u64 + 1));
    let db = seen.histogram_counts.get("db.client.operation.duration").copied().unwrap_or(0);
    assert!(db >= REDIS_N as u64, "db.client.operation.duration count {db}: {:?}", seen.histogram_counts);
    assert!(err.contains("ring_full=0"), "kernel ring drops: {err}");
}

#[test]
fn agent_serves_health_and_readiness_probes() {
    let pair = NetnsPair::new("hlth");
    let dir = tempfile::tempdir().unwrap();
    let addr = "127.0.0.1:13134";
    let agent = start_agent(
        &pair.ns_b,
        &pair.veth_b,
        "agent",
        &["--format", "none"],
        &[("CNFLOW_HEALTH_ADDR", addr)],
        dir.path(),
    );
    for path in ["/healthz", "/readyz"] {
        let code = NetnsPair::exec(
            &pair.ns_b,
            &["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", &format!("http://{addr}{path}")],
            Duration::from_secs(10),
        );
        assert_eq!(code, "200", "{path}");
    }
    // Outside a cluster the agent says once that Kubernetes enrichment is off.
    assert!(read(&dir.path().join("agent.err")).contains("Kubernetes enrichment is off"));
    // The only interface goes away: still alive, no longer ready, and says why.
    let st = std::process::Command::new("ip").args(["-n", &pair.ns_b, "link", "del", &pair.veth_b]).status().unwrap();
    assert!(st.success());
    let probe = |path: &str| {
        NetnsPair::exec(
            &pair.ns_b,
            &["curl", "-s", "-w", " %{http_code}", &format!("http://{addr}{path}")],
            Duration::from_secs(10),
        )
    };
    assert!(
        wait_until(Duration::from_secs(10), || probe("/readyz") == "not ready: no interface attached\n 503"),
        "{}",
        probe("/readyz")
    );
    assert_eq!(probe("/healthz"), "ok\n 200");
    stop(agent);
}
