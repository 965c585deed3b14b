//! Span sampling through the live agent (issue #19): nginx and curl on the
//! loopback of one namespace, so every exchange gives a CLIENT and a SERVER
//! span on the same node (a loopback pair). At ratio 0.1 with the keep
//! rules: every error (500) and every slow request is kept, OK ones within
//! generous binomial bounds, the two spans of a pair are always kept or
//! dropped together, and the duration histograms count every request.
//! Expected values come from what curl did (its list of URLs and the status
//! codes it printed), not from cnflow.
#[path = "../harness/agent.rs"]
mod agent;
#[path = "../harness/mod.rs"]
mod harness;
#[path = "../harness/netns.rs"]
mod netns;
#[path = "../harness/otel.rs"]
mod otel;

use agent::{start_agent, stop_agent, wait_port};
use netns::{read, ChildGuard, NetnsPair};
use serde_json::Value;
use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::Duration;

const N_OK: usize = 600;
const N_ERR: usize = 30;
const N_SLOW: usize = 6;
/// Each /slow response is 12 KiB sent at 8 KiB/s by nginx (a burst of one
/// second's worth, then the rest once the rate allows): well over 200 ms.
const SLOW_MS: u64 = 200;

fn nginx_routes(ns: &str, dir: &std::path::Path) -> ChildGuard {
    std::fs::create_dir_all(dir.join("www")).unwrap();
    std::fs::write(dir.join("www/slow"), vec![b'x'; 12 * 1024]).unwrap();
    let conf = dir.join("nginx.conf");
    std::fs::write(
        &conf,
        format!(
            "worker_processes 1; daemon off; pid {d}/nginx.pid; error_log {d}/nginx.err;\n\
             events {{ worker_connections 256; }}\n\
             http {{ access_log off; server {{ listen 127.0.0.1:8080; root {d}/www;\n\
               location = /ok {{ return 200 \"ok\\n\"; }}\n\
               location = /err {{ return 500; }}\n\
               location = /slow {{ limit_rate_after 0; limit_rate 8k; }}\n\
             }} }}\n",
            d = dir.display()
        ),
    )
    .unwrap();
    let mut c = NetnsPair::cmd(ns, "nginx");
    c.args(["-c", conf.to_str().unwrap()]).stdout(Stdio::null()).stderr(Stdio::null());
    ChildGuard::new(c.spawn().unwrap(), "nginx")
}

fn str_attr(attrs: &Value, key: &str) -> Option<String> {
    attrs
        .as_array()?
        .iter()
        .find(|kv| kv["key"] == key)
        .and_then(|kv| kv["value"]["stringValue"].as_str())
        .map(Into::into)
}

fn num(v: &Value) -> u64 {
    v.as_str().and_then(|c| c.parse().ok()).or(v.as_u64()).unwrap_or(0)
}

/// curl with many URLs on one keep-alive connection; returns the status codes it saw.
fn curl(ns: &str, path: &str, n: usize) -> Vec<String> {
    let url = format!("http://127.0.0.1:8080{path}");
    let mut args = vec!["curl", "-s", "-w", "%{http_code}\\n"];
    for _ in 0..n {
        args.extend(["-o", "/dev/null", url.as_str()]);
    }
    NetnsPair::exec(ns, &args, Duration::from_secs(60)).lines().map(str::to_string).collect()
}

#[test]
fn ratio_keeps_errors_slow_and_pairs_with_exact_histograms() {
    let pair = NetnsPair::new("smpl");
    let dir = tempfile::tempdir().unwrap();
    let _nginx = nginx_routes(&pair.ns_b, dir.path());
    wait_port(&pair.ns_b, "127.0.0.1", 8080);
    let env = [
        ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
        ("OTEL_TRACES_SAMPLER_ARG", "0.1"),
        ("CNFLOW_SAMPLING_KEEP_SLOWER_THAN_MS", "200"),
        ("CNFLOW_SNAPLEN", "4096"),
    ];
    let agent = start_agent(&pair.ns_b, "lo", "run", &["--format", "otlp-json"], &env, dir.path());

    // The client's own record: how many of each status it got.
    let mut statuses: BTreeMap<String, usize> = BTreeMap::new();
    for (path, n) in [("/ok", N_OK / 2), ("/err", N_ERR), ("/slow", N_SLOW), ("/ok", N_OK / 2)] {
        for s in curl(&pair.ns_b, path, n) {
            *statuses.entry(s).or_default() += 1;
        }
    }
    assert_eq!(statuses.get("500"), Some(&N_ERR), "{statuses:?}");
    assert_eq!(statuses.get("200"), Some(&(N_OK + N_SLOW)), "{statuses:?}");
    std::thread::sleep(Duration::from_millis(500));
    stop_agent(agent);
    let out = read(&dir.path().join("agent.out"));
    let log = read(&dir.path().join("agent.err"));
    assert!(log.contains("span sampling: parentbased_traceidratio"), "{log}");

    // Spans grouped per trace: one exchange = one trace id here (no traceparent sent).
    let mut traces: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    let mut last_metrics: Option<Value> = None;
    for line in out.lines().filter(|l| !l.trim().is_empty()) {
        let v: Value = serde_json::from_str(line).unwrap();
        for r in v["resourceSpans"].as_array().into_iter().flatten() {
            for ss in r["scopeSpans"].as_array().unwrap() {
                for s in ss["spans"].as_array().unwrap() {
                    traces.entry(s["traceId"].as_str().unwrap().to_string()).or_default().push(s.clone());
                }
            }
        }
        if v.get("resourceMetrics").is_some() {
            last_metrics = Some(v);
        }
    }
    let mut kept: BTreeMap<&str, usize> = BTreeMap::new();
    for spans in traces.values() {
        // Both halves of every kept loopback pair: one CLIENT (3), one SERVER (2).
        let mut kinds: Vec<i64> = spans.iter().map(|s| s["kind"].as_i64().unwrap()).collect();
        kinds.sort();
        assert_eq!(kinds, vec![2, 3], "a pair was split: {spans:?}");
        let path = str_attr(&spans[0]["attributes"], "url.path").unwrap_or_default();
        let ts = spans[0]["traceState"].as_str().unwrap_or_default().to_string();
        assert!(spans.iter().all(|s| s["traceState"] == spans[0]["traceState"]));
        let dur_ms = (num(&spans[0]["endTimeUnixNano"]) - num(&spans[0]["startTimeUnixNano"])) / 1_000_000;
        match path.as_str() {
            "/ok" => assert!(ts.starts_with("ot=th:e666;rv:"), "{ts}"),
            "/err" => assert!(ts.starts_with("ot=th:0;rv:"), "{ts}"),
            "/slow" => {
                assert!(dur_ms >= SLOW_MS, "/slow took {dur_ms} ms: {spans:?}");
                assert!(ts.starts_with("ot=th:0;rv:"), "{ts}");
            }
            other => panic!("unexpected path {other:?}"),
        }
        *kept
            .entry(match path.as_str() {
                "/ok" => "ok",
                "/err" => "err",
                _ => "slow",
            })
            .or_default() += 1;
    }
    assert_eq!(kept.get("err"), Some(&N_ERR), "every error kept: {kept:?}");
    assert_eq!(kept.get("slow"), Some(&N_SLOW), "every slow request kept: {kept:?}");
    // Binomial(600, 0.1): mean 60, sd ≈ 7.3; accept ±5 sd.
    let ok = kept.get("ok").copied().unwrap_or(0);
    assert!((24..=96).contains(&ok), "OK pairs kept: {ok} of {N_OK}");

    // Metrics before sampling: every request counted on both sides.
    let m = last_metrics.expect("a metrics request");
    let mut hist: BTreeMap<String, u64> = BTreeMap::new();
    let mut sampled_out: BTreeMap<String, u64> = BTreeMap::new();
    for r in m["resourceMetrics"].as_array().unwrap() {
        for sm in r["scopeMetrics"].as_array().unwrap() {
            for metric in sm["metrics"].as_array().unwrap() {
                let name = metric["name"].as_str().unwrap().to_string();
                for p in metric["histogram"]["dataPoints"].as_array().into_iter().flatten() {
                    *hist.entry(name.clone()).or_default() += num(&p["count"]);
                }
                if name == "cnflow.sampling.sampled_out" {
                    for p in metric["sum"]["dataPoints"].as_array().into_iter().flatten() {
                        let reason = str_attr(&p["attributes"], "reason").unwrap();
                        *sampled_out.entry(reason).or_default() += num(&p["asInt"]);
                    }
                }
            }
        }
    }
    eprintln!(
        "kept pairs {kept:?} of ok={N_OK} err={N_ERR} slow={N_SLOW}; histograms {hist:?}; sampled out {sampled_out:?}"
    );
    let total = (N_OK + N_ERR + N_SLOW) as u64;
    assert_eq!(hist.get("http.server.request.duration"), Some(&total), "{hist:?}");
    assert_eq!(hist.get("http.client.request.duration"), Some(&total), "{hist:?}");
    // Sampled-out spans are counted as such (two per dropped pair), not as drops.
    assert_eq!(sampled_out.get("ratio").copied(), Some(2 * (N_OK - ok) as u64), "{sampled_out:?}");
}

/// `cnflow gateway` with CNFLOW_GATEWAY_SAMPLING=true between an OTLP client
/// and a receiver: unsampled spans (as an agent with always_on sends them)
/// are thinned to the ratio, error spans all arrive, and the gateway counts
/// what it sampled out apart from drops. Expected numbers come from what this
/// test sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_samples_unsampled_agents_and_keeps_errors() {
    use cnflow::export::test_sink::OtlpSink;
    use cnflow::telemetry::resource::trace_request;
    use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
    use opentelemetry_proto::tonic::trace::v1::{Span, Status};
    let [sink_port, gw_grpc] = otel::free_ports_in(None);
    let sink = std::sync::Arc::new(OtlpSink::new());
    sink.serve_grpc(tokio::net::TcpListener::bind(("127.0.0.1", sink_port)).await.unwrap());
    let log = tempfile::NamedTempFile::new().unwrap();
    let mut gw = ChildGuard::new(
        std::process::Command::new(harness::cnflow_bin())
            .arg("gateway")
            .env("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://127.0.0.1:{sink_port}"))
            .env("CNFLOW_SELF_TELEMETRY", "false")
            .env("CNFLOW_GATEWAY_GRPC_LISTEN", format!("127.0.0.1:{gw_grpc}"))
            .env("CNFLOW_GATEWAY_HTTP_LISTEN", "127.0.0.1:0")
            .env("CNFLOW_GATEWAY_HEALTH_LISTEN", "127.0.0.1:0")
            .env("CNFLOW_GATEWAY_BATCH_TIMEOUT_MS", "50")
            .env("CNFLOW_GATEWAY_SAMPLING", "true")
            .env("OTEL_TRACES_SAMPLER", "traceidratio")
            .env("OTEL_TRACES_SAMPLER_ARG", "0.1")
            .stdout(Stdio::null())
            .stderr(log.reopen().unwrap())
            .spawn()
            .unwrap(),
        "cnflow gateway",
    );
    otel::wait_port(None, ([127, 0, 0, 1], gw_grpc).into(), "gateway gRPC");
    const OK: usize = 3000;
    const ERR: usize = 40;
    let mut client = TraceServiceClient::connect(format!("http://127.0.0.1:{gw_grpc}")).await.unwrap();
    let mut seed = 0x5eed_u64;
    let mut next = move || {
        // splitmix64: random-looking trace ids, as an SDK or cnflow makes them.
        seed = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = seed;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    for batch in 0..(OK + ERR) / 340 + 1 {
        let spans: Vec<Span> = (batch * 340..((batch + 1) * 340).min(OK + ERR))
            .map(|i| {
                let mut trace_id = next().to_be_bytes().to_vec();
                trace_id.extend(next().to_be_bytes());
                Span {
                    trace_id,
                    span_id: (i as u64 + 1).to_be_bytes().to_vec(),
                    name: if i < ERR { format!("err-{i}") } else { format!("ok-{i}") },
                    kind: 2,
                    flags: 0x101,
                    start_time_unix_nano: 1_700_000_000_000_000_000,
                    end_time_unix_nano: 1_700_000_000_001_000_000,
                    status: Some(Status { code: if i < ERR { 2 } else { 0 }, message: String::new() }),
                    ..Default::default()
                }
            })
            .collect();
        if !spans.is_empty() {
            client.export(trace_request("smpl", spans)).await.expect("export");
        }
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    gw.signal(libc::SIGTERM);
    gw.wait_timeout(Duration::from_secs(20)).expect("gateway did not stop");
    let logs = std::fs::read_to_string(log.path()).unwrap_or_default();
    let got = sink.spans();
    let errors = got.iter().filter(|s| s.name.starts_with("err-")).count();
    let ok = got.iter().filter(|s| s.name.starts_with("ok-")).count();
    eprintln!("gateway kept {ok} of {OK} OK spans, {errors} of {ERR} errors");
    assert_eq!(errors, ERR, "every error span arrives: {logs}");
    // Binomial(3000, 0.1): mean 300, sd ≈ 16.4; ±5 sd.
    assert!((218..=382).contains(&ok), "OK spans kept: {ok}\n{logs}");
    assert!(got.iter().filter(|s| s.name.starts_with("ok-")).all(|s| s.trace_state == "ot=th:e666"));
    assert!(logs.contains("span sampling: traceidratio"), "{logs}");
    let stats = logs.lines().rev().find(|l| l.contains("gateway stopped; stats:")).unwrap_or_default();
    let want = format!("cnflow.gateway.sampled_out{{signal=traces,reason=ratio}}={}", OK - ok);
    assert!(stats.contains(&want), "want {want} in: {stats}");
    assert!(!stats.contains("cnflow.export.dropped"), "sampled-out spans are not drops: {stats}");
}

/// `cnflow replay` of committed captures at always_on and at 0.01: the
/// histograms are identical (computed before sampling), every kept span is
/// one of the full run's spans, every error span is kept, and fewer spans
/// leave. The full run is the reference: it is what the capture holds.
#[test]
fn replay_at_one_percent_keeps_histograms_and_errors() {
    fn run(pcap: &str, env: &[(&str, &str)]) -> (Vec<Value>, Vec<String>) {
        let mut c = std::process::Command::new(harness::cnflow_bin());
        c.args(["replay", "--format", "otlp-json"]).arg(harness::pcaps_dir().join(pcap));
        for (k, v) in env {
            c.env(k, v);
        }
        let out = c.output().expect("cnflow replay");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let mut spans = Vec::new();
        let mut hists = Vec::new();
        for line in String::from_utf8_lossy(&out.stdout).lines().filter(|l| !l.is_empty()) {
            let v: Value = serde_json::from_str(line).unwrap();
            for r in v["resourceSpans"].as_array().into_iter().flatten() {
                for ss in r["scopeSpans"].as_array().unwrap() {
                    spans.extend(ss["spans"].as_array().unwrap().iter().cloned());
                }
            }
            for r in v["resourceMetrics"].as_array().into_iter().flatten() {
                for sm in r["scopeMetrics"].as_array().unwrap() {
                    for m in sm["metrics"].as_array().unwrap() {
                        for p in m["histogram"]["dataPoints"].as_array().into_iter().flatten() {
                            hists.push(format!(
                                "{} {} {} {}",
                                m["name"], p["attributes"], p["count"], p["bucketCounts"]
                            ));
                        }
                    }
                }
            }
        }
        hists.sort();
        (spans, hists)
    }
    let key = |s: &Value| format!("{} {} {} {}", s["name"], s["kind"], s["startTimeUnixNano"], s["endTimeUnixNano"]);
    let (mut all, mut kept) = (0, 0);
    for pcap in ["http1.pcap", "redis.pcap", "dns.pcap", "postgres.pcap", "kafka.pcap", "grpc.pcap"] {
        let (full, full_h) = run(pcap, &[("OTEL_TRACES_SAMPLER", "always_on")]);
        let (some, some_h) =
            run(pcap, &[("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"), ("OTEL_TRACES_SAMPLER_ARG", "0.01")]);
        assert!(!full_h.is_empty(), "{pcap}: no histograms");
        assert_eq!(full_h, some_h, "{pcap}: histograms changed by sampling");
        let full_keys: std::collections::BTreeSet<String> = full.iter().map(key).collect();
        for s in &some {
            assert!(full_keys.contains(&key(s)), "{pcap}: kept span not in the full run: {s}");
        }
        let some_keys: std::collections::BTreeSet<String> = some.iter().map(key).collect();
        for s in full.iter().filter(|s| s["status"]["code"] == 2) {
            assert!(some_keys.contains(&key(s)), "{pcap}: error span sampled out: {s}");
        }
        // Replay is deterministic: the same decisions every run.
        let again: Vec<String> =
            run(pcap, &[("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"), ("OTEL_TRACES_SAMPLER_ARG", "0.01")])
                .0
                .iter()
                .map(key)
                .collect();
        assert_eq!(again, some.iter().map(key).collect::<Vec<_>>(), "{pcap}");
        all += full.len();
        kept += some.len();
    }
    eprintln!("replay at 0.01: {kept} of {all} spans kept");
    assert!(kept < all, "{kept} of {all}");
}
