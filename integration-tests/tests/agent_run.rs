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

/// An integer attribute as OTLP/JSON writes it (64-bit integers as strings).
fn int_attr(attrs: &Value, key: &str) -> Option<String> {
    let i = &attrs.as_array()?.iter().find(|kv| kv["key"] == key)?["value"]["intValue"];
    i.as_str().map(str::to_string).or_else(|| i.as_i64().map(|n| n.to_string()))
}

#[derive(Default, Debug)]
struct Seen {
    /// (kind, name, status code) → count
    spans: BTreeMap<(i64, String, i64), u64>,
    /// (http.response.status_code, http.response.body.size) of each server
    /// GET span, sorted.
    http_server_gets: Vec<(Option<String>, Option<String>)>,
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
                        if key.0 == SERVER && key.1.starts_with("GET") {
                            let a = &s["attributes"];
                            seen.http_server_gets.push((
                                int_attr(a, "http.response.status_code"),
                                int_attr(a, "http.response.body.size"),
                            ));
                        }
                        *seen.spans.entry(key).or_default() += 1;
                    }
                }
            }
        }
        if v.get("resourceMetrics").is_some() {
            last_metrics = Some(v);
        }
    }
    seen.http_server_gets.sort();
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

/// Segments that start an HTTP/1 response are copied by the kernel only up
/// to CNFLOW_HTTP_RESPONSE_SNAPLEN (the body beyond arrives as a gap): the
/// spans still say what curl saw, on a keep-alive connection whose next
/// response starts right after a cut body. With a cut shorter than nginx's
/// head (~240 bytes) the status codes survive (the sizes may not: the cut
/// can fall before Content-Length).
#[test]
fn http1_response_bodies_cut_in_the_kernel_keep_what_the_client_saw() {
    use std::os::unix::fs::PermissionsExt;
    let pair = NetnsPair::new("hcut");
    let dir = tempfile::tempdir().unwrap();
    // nginx's workers run as nobody.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let _nginx = nginx(&pair.ns_b, &pair.ip_b, dir.path());
    let www = dir.path().join("www");
    std::fs::write(www.join("big"), vec![b'b'; 65_536]).unwrap();
    std::fs::write(www.join("mid"), vec![b'm'; 3_000]).unwrap();
    wait_port(&pair.ns_b, &pair.ip_b, 8080);
    let paths = ["big", "users/1", "mid", "big", "users/2", "nope", "mid", "users/3"];
    for (cut, sizes_known) in [("1024", true), ("128", false)] {
        let sub = dir.path().join(format!("cut{cut}"));
        std::fs::create_dir_all(&sub).unwrap();
        let agent = start_agent(
            &pair.ns_b,
            &pair.veth_b,
            "run",
            &["--format", "otlp-json"],
            &[("CNFLOW_HTTP_RESPONSE_SNAPLEN", cut)],
            &sub,
        );
        if cut == "1024" {
            // Quiet for longer than the ring reader's idle threshold (1 s
            // without a record; the veths' own IPv6 chatter in the first
            // seconds may restart it): it stops polling, and the next packet
            // must wake it (cnflow.capture.ring.reader_wakeups below),
            // losing nothing.
            std::thread::sleep(Duration::from_millis(3000));
        }
        // One curl, one keep-alive connection, the oracle: what it received.
        let mut args = vec!["curl".to_string(), "-s".into(), "-w".into(), "%{http_code} %{size_download}\\n".into()];
        for p in paths {
            args.extend(["-o".into(), "/dev/null".into(), format!("http://{}:8080/{p}", pair.ip_b)]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let got = NetnsPair::exec(&pair.ns_a, &args, Duration::from_secs(20));
        std::thread::sleep(Duration::from_millis(300));
        stop(agent);
        let mut expected: Vec<(Option<String>, Option<String>)> = got
            .lines()
            .map(|l| {
                let (code, size) = l.split_once(' ').unwrap();
                (Some(code.to_string()), sizes_known.then(|| size.to_string()))
            })
            .collect();
        expected.sort();
        assert_eq!(expected.len(), paths.len(), "curl: {got}");
        assert!(expected.iter().filter(|(c, _)| c.as_deref() == Some("200")).count() == 7, "curl: {got}");
        let err = read(&sub.join("agent.err"));
        let mut spans = parse_otlp_json(&read(&sub.join("agent.out"))).http_server_gets;
        if !sizes_known {
            spans.iter_mut().for_each(|s| s.1 = None);
            spans.sort();
        }
        assert_eq!(spans, expected, "cut {cut}; curl: {got}\n{err}");
        // Every response longer than the cut was cut once, at its head; the
        // 64 KiB bodies' later segments were not (they do not start a response).
        let count =
            |k: &str| harness::logged_counter(&err, "capture stopped", k).unwrap_or_else(|| panic!("{k}: {err}"));
        let last = err.lines().rev().find(|l| l.contains("capture stopped")).unwrap_or_default();
        let longer = if cut == "1024" { 4 } else { paths.len() as u64 };
        assert_eq!(count("http_body_cut"), longer, "{last}");
        assert_eq!(count("truncated"), 0, "{last}");
        assert_eq!(count("ring_full"), 0, "{last}");
        if cut == "1024" {
            let woken = harness::logged_counter(&err, "final counters", "cnflow.capture.ring.reader_wakeups");
            assert!(woken.is_some_and(|n| n >= 1), "{err}");
        }
    }
}
