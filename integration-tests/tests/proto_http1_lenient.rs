//! HTTP/1 as lenient as real servers: captures of nginx, tinyproxy and
//! netcat answering curl and raw `printf | nc` clients (recorded by
//! integration-tests/scripts/record_http1_lenient.sh), replayed through the
//! whole pipeline. Expected facts come from what the clients sent (the
//! script's commands) and from nginx's own access log of the recording
//! (pcaps/http1_lenient_nginx.log), never from cnflow's output; the golden
//! JSONL files are snapshots on top.
#[path = "../harness/golden.rs"]
mod golden;
#[path = "../harness/mod.rs"]
mod harness;
#[path = "../harness/live.rs"]
mod live;
#[path = "../harness/netns.rs"]
mod netns;
use golden::*;
use serde_json::Value;
use std::process::Command;

const FIELDS: &[&str] =
    &["/detail/method", "/detail/path", "/detail/version", "/detail/status", "/outcome", "/partial"];

/// Client port of an exchange's connection.
fn client_port(e: &Value) -> u16 {
    field(e, "/conn/client").rsplit(':').next().unwrap().parse().unwrap()
}

/// `cnflow replay --format exchanges` with extra environment, and the `--stats` counters.
fn replay_env(pcap: &str, env: &[(&str, &str)]) -> (Vec<Value>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_cnflow"))
        .arg("replay")
        .arg(pcap_path(pcap))
        .args(["--format", "exchanges", "--stats"])
        .envs(env.iter().copied())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let exs = String::from_utf8(out.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    (exs, String::from_utf8(out.stderr).unwrap())
}

#[test]
fn every_request_nginx_logged_is_reported_with_its_status() {
    let exs = check_exchanges("http1_lenient.pcap", "http1_lenient.jsonl");
    let log = std::fs::read_to_string(pcap_path("http1_lenient_nginx.log")).unwrap();
    let ports: Vec<u16> = exs.iter().map(client_port).collect();
    let mut not_captured = Vec::new();
    for line in log.lines() {
        // `port "request line" status "host"`, as the recording's log_format writes it.
        let (port, rest) = line.split_once(' ').unwrap();
        let (request, rest) = rest[1..].split_once("\" ").unwrap();
        let status = rest.split(' ').next().unwrap();
        let port: u16 = port.parse().unwrap();
        let Some(i) = ports.iter().position(|&p| p == port) else {
            not_captured.push(request.to_string());
            continue;
        };
        let mut words = request.split(' ');
        let (method, target) = (words.next().unwrap(), words.next().unwrap());
        let e = &exs[i];
        assert_eq!(field(e, "/detail/method"), method, "{line}");
        assert_eq!(field(e, "/detail/path"), target.split('?').next().unwrap(), "{line}");
        // An HTTP/0.9 answer carries no status line: nginx logs 200, the wire says nothing.
        let status = if words.next().is_none() { "" } else { status };
        assert_eq!(field(e, "/detail/status"), status, "{line}");
    }
    // The GET curl sent inside the CONNECT tunnel reached nginx from tinyproxy over loopback.
    assert_eq!(not_captured, ["GET /index.html HTTP/1.1"]);
}

#[test]
fn odd_methods_versions_http09_folding_smuggling_and_connect() {
    let exs = exchanges("http1_lenient.pcap");
    let want = [
        // curl -X QUERY / PROPFIND / PURGE: methods nginx does not implement (405).
        "QUERY /search 1.1 405 complete false",
        "PROPFIND /dav/ 1.1 405 complete false",
        "PURGE /index.html 1.1 405 complete false",
        // `HTTP/1.` (nginx: 400), HTTP/0.9 (a bare body until close), an obs-folded header line (nginx: 400).
        "GET /index.html 1 400 complete false",
        "GET /index.html 0.9  complete false",
        "GET /index.html 1.1 400 complete false",
        // Smuggling shapes: nginx answers 400 and closes; the request behind is reported, unanswered.
        "POST /api/a 1.1 400 complete false",
        "GET /smuggled-1 1.1  timeout false",
        "POST /api/b 1.1 400 complete false",
        "GET /smuggled-2 1.1  timeout false",
        "POST /api/c 1.1 400 complete false",
        "GET /smuggled-3 1.1  timeout false",
        // tinyproxy: CONNECT accepted (the tunnelled GET is not decoded), then refused.
        "CONNECT  1.1 200 complete false",
        "CONNECT  1.1 403 complete false",
        // netcat's lower-case status line.
        "GET /lower 1.1 200 complete false",
    ];
    assert_eq!(summary(&exs, FIELDS), want);
    assert_eq!(field(&exs[0], "/detail/query"), "q=1");
    assert_eq!(field(&exs[0], "/detail/request_content_length"), "7");
    assert_eq!(field(&exs[3], "/detail/host"), "badversion");
    assert_eq!(field(&exs[5], "/detail/host"), "folded");
    // HTTP/0.9: nginx sent index.html ("hello from nginx\n") and closed.
    assert_eq!(exs[4]["response_bytes"], 17);
    assert_eq!(field(&exs[6], "/detail/request_content_length"), "");
    assert_eq!(field(&exs[12], "/detail/host"), "10.200.147.2:8080");
    assert_eq!(field(&exs[12], "/detail/reason"), "Connection established");
    assert_eq!(field(&exs[13], "/detail/host"), "10.200.147.2:9");
    assert_eq!(field(&exs[14], "/detail/reason"), "ok");
    // The smuggled requests are the ones that followed the rejected ones on their connection.
    for (a, b) in [(6, 7), (8, 9), (10, 11)] {
        assert_eq!(exs[a]["conn"]["id"], exs[b]["conn"]["id"]);
    }
}

#[test]
fn late_answer_is_not_a_second_span() {
    // netcat answers /slow 2.5 s after the request; nginx's answer at 1.5 s moves the clock on.
    let (exs, stats) = replay_env("http1_late.pcap", &[("CNFLOW_REQUEST_TIMEOUT_SECS", "1")]);
    assert_eq!(summary(&exs, FIELDS), ["GET /slow 1.1  timeout false", "GET /index.html 1.1 200 complete false"]);
    assert!(stats.contains("cnflow.protocol.unpaired_responses{protocol=http1} 1"), "{stats}");
    // With the default timeout the same answer pairs.
    let (exs, _) = replay_env("http1_late.pcap", &[]);
    let slow: Vec<_> = exs.iter().filter(|e| field(e, "/detail/path") == "/slow").collect();
    assert_eq!(summary(&slow.into_iter().cloned().collect::<Vec<_>>(), FIELDS), ["GET /slow 1.1 200 complete false"]);
}

#[test]
fn post_head_cut_mid_connection_keeps_method_path_and_host() {
    // curl POST /api/orders?id=7 with 40 padding headers (2 KB) and a 3000-byte body; nginx: 201.
    let full = check_exchanges("http1_post.pcap", "http1_post.jsonl");
    assert_eq!(summary(&full, FIELDS), ["POST /api/orders 1.1 201 complete false"]);
    assert!(full[0]["request_bytes"].as_u64().unwrap() > 2000 + 3000);
    // Only the first client segment (1448 bytes of head) and the server's side were kept.
    let cut = check_exchanges("http1_post_midconn.pcap", "http1_post_midconn.jsonl");
    assert_eq!(summary(&cut, FIELDS), ["POST /api/orders 1.1 201 complete true"]);
    for f in ["/detail/query", "/detail/host", "/detail/user_agent", "/detail/reason"] {
        assert_eq!(field(&cut[0], f), field(&full[0], f), "{f}");
    }
    assert_eq!(field(&cut[0], "/detail/host"), "10.200.147.2:8080");
    assert_eq!(cut[0]["request_bytes"], 1448);
}

/// Live through eBPF (root): nginx answering odd requests from curl and
/// `printf | nc`; the agent's exchanges must equal replay's of a simultaneous
/// tcpdump, and be exactly what the clients sent.
#[test]
fn live_odd_methods_http09_and_smuggling() {
    use std::time::Duration;
    const T: Duration = Duration::from_secs(20);
    let mut s = live::LiveSession::new("hl");
    let ip = s.pair.ip_a.clone();
    let www = s.dir.path("www");
    std::fs::create_dir_all(&www).unwrap();
    std::fs::write(www.join("index.html"), "live\n").unwrap();
    let d = s.dir.path("nginx");
    std::fs::create_dir_all(&d).unwrap();
    let d = d.to_string_lossy().into_owned();
    let conf = format!(
        "daemon off; master_process off; worker_processes 1; user root; pid {d}/nginx.pid; error_log {d}/error.log;
         events {{ worker_connections 64; }}
         http {{ access_log off; client_body_temp_path {d}/body; proxy_temp_path {d}/proxy; fastcgi_temp_path {d}/fcgi;
                uwsgi_temp_path {d}/uwsgi; scgi_temp_path {d}/scgi;
                server {{ listen {ip}:8080; root {}; location /api/ {{ return 201; }} }} }}",
        www.display()
    );
    std::fs::write(format!("{d}/nginx.conf"), conf).unwrap();
    s.spawn_server(&["nginx", "-c", &format!("{d}/nginx.conf")], "nginx");
    s.start_capture();
    assert!(s.wait_tcp(&ip, 8080, Duration::from_secs(15)), "nginx did not come up: {}", s.server_log("nginx"));
    let url = |p: &str| format!("http://{ip}:8080{p}");
    s.client(&["curl", "-s", "-o", "/dev/null", "-X", "QUERY", "--data-binary", "q", &url("/search?q=1")], T);
    s.client(&["curl", "-s", "-o", "/dev/null", "-X", "PURGE", &url("/index.html")], T);
    let raw = |bytes: &str| format!("printf '{bytes}' | nc -N -w 3 {ip} 8080 >/dev/null");
    s.client(&["sh", "-c", &raw("GET /index.html\\r\\n")], T);
    s.client(
        &[
            "sh",
            "-c",
            &raw("POST /api/a HTTP/1.1\\r\\nHost: s\\r\\nContent-Length: 18446744073709551615\\r\\n\\r\\nGET /smuggled HTTP/1.1\\r\\nHost: s\\r\\n\\r\\n"),
        ],
        T,
    );
    let o = s.finish();
    o.assert_live_matches_replay();
    o.assert_exactly(
        "http1",
        &[
            ("http1 QUERY /search?q=1 405 complete", 1),
            ("http1 PURGE /index.html 405 complete", 1),
            ("http1 GET /index.html  complete", 1),
            ("http1 POST /api/a 400 complete", 1),
            ("http1 GET /smuggled  timeout", 1),
        ],
    );
}
