//! memcached: golden captures from a real memcached 1.6 (recorded by
//! scripts/record_memcached.sh) with pymemcache (text protocol), meta
//! commands sent with nc, python-binary-memcached (binary protocol), a
//! capture joined mid-connection and one cut at a 100-byte snap length; and
//! one live session through eBPF (root) whose exchanges must equal the
//! replay of a simultaneous tcpdump. Expected facts are what the clients did
//! (scripts/memcached/*.py and the nc line in the recording script).
#[path = "../harness/golden.rs"]
mod golden;
#[path = "../harness/mod.rs"]
mod harness;
#[path = "../harness/live.rs"]
mod live;
#[path = "../harness/netns.rs"]
mod netns;

use golden::*;
use std::time::Duration;

/// text_client.py, request by request, as (command, reply word, hits).
const TEXT: &[(&str, &str, &str)] = &[
    ("set", "STORED", ""),
    ("get", "VALUE", "1"),
    ("get", "END", "0"),
    ("set", "STORED", ""),
    ("get", "VALUE", "2"), // get foo baz missing
    ("add", "NOT_STORED", ""),
    ("add", "STORED", ""),
    ("replace", "STORED", ""),
    ("append", "STORED", ""),
    ("prepend", "STORED", ""),
    ("gets", "VALUE", "1"),
    ("cas", "STORED", ""),
    ("cas", "EXISTS", ""),
    ("delete", "DELETED", ""),
    ("delete", "NOT_FOUND", ""),
    ("set", "STORED", ""),
    ("incr", "value", ""),
    ("decr", "value", ""),
    ("incr", "NOT_FOUND", ""),
    ("touch", "TOUCHED", ""),
    ("gat", "VALUE", "1"),
    ("gats", "VALUE", "2"),
    ("set", "", ""), // noreply
    ("get", "VALUE", "1"),
    ("set", "STORED", ""),
    ("get", "VALUE", "1"),
    ("version", "VERSION", ""),
    ("stats", "STAT", ""),
    ("verbosity", "OK", ""),
    ("flush_all", "OK", ""),
    ("bogus_command", "ERROR", ""),
];

fn of_conn(exs: &[serde_json::Value], port: &str) -> Vec<serde_json::Value> {
    exs.iter().filter(|e| field(e, "/conn/client").ends_with(port)).cloned().collect()
}

fn ports(exs: &[serde_json::Value]) -> Vec<String> {
    let mut v: Vec<String> = Vec::new();
    for e in exs {
        let c = field(e, "/conn/client");
        let p = c.rsplit(':').next().unwrap().to_string();
        if !v.contains(&p) {
            v.push(p);
        }
    }
    v
}

#[test]
fn text_meta_and_errors() {
    let exs = check_exchanges("memcached.pcap", "memcached.jsonl");
    assert!(exs.iter().all(|e| e["protocol"] == "memcached"));
    let conns = ports(&exs);
    assert_eq!(conns.len(), 3, "pymemcache session, CLIENT_ERROR reconnect, nc meta batch");
    let text = of_conn(&exs, &conns[0]);
    let got: Vec<(String, String, String)> = text
        .iter()
        .map(|e| (field(e, "/detail/command"), field(e, "/detail/response"), field(e, "/detail/hits")))
        .collect();
    let want: Vec<(String, String, String)> =
        TEXT.iter().map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string())).collect();
    assert_eq!(got, want);
    assert!(text.iter().all(|e| e["outcome"] == "complete" && e["partial"] == false));
    // Keys and values never in the masked text; the raw text has the request line.
    assert_eq!(field(&text[4], "/detail/query_masked"), "get ? ? ?");
    assert_eq!(field(&text[4], "/detail/key_count"), "3");
    assert_eq!(field(&text[0], "/detail/query_raw"), "set foo 0 0 3");
    // The noreply set is an exchange without a reply, and the get after it pairs with its own reply.
    assert_eq!((field(&text[22], "/detail/noreply"), field(&text[22], "/response_bytes")), ("true".into(), "0".into()));
    assert_eq!(text[23]["response_bytes"], 22); // "VALUE nr 0 1\r\nv\r\nEND\r\n"
                                                // Errors: ERROR and CLIENT_ERROR carry a status code; misses, NOT_STORED and EXISTS do not.
    assert_eq!(field(&text[30], "/detail/error_code"), "ERROR");
    assert!(text[..30].iter().all(|e| e["detail"]["error_code"].is_null()));
    let client_err = of_conn(&exs, &conns[1]);
    assert_eq!(
        summary(&client_err, &["/detail/command", "/detail/error_code", "/detail/error"]),
        ["incr CLIENT_ERROR invalid numeric delta argument"]
    );
    // The meta batch (one segment): quiet requests that succeeded have no reply of their own.
    let meta = of_conn(&exs, &conns[2]);
    assert_eq!(
        summary(
            &meta,
            &["/detail/command", "/detail/opaque", "/detail/response", "/detail/hits", "/detail/quiet_suppressed"]
        ),
        [
            "ms 1 HD  false",
            "mg 2 VA 1 false",
            "mg 3 EN 0 false",
            "mg 4 EN 0 true",
            "mg 5 VA 1 false",
            "mn  MN  false",
            "md 6 HD  true",
            "md 7 NF  false",
            "ma 8 HD  false",
            "ma 9 VA  false",
            "mn  MN  false",
        ]
    );
    assert!(meta.iter().all(|e| e["detail"]["protocol"] == "meta" && e["outcome"] == "complete"));
}

#[test]
fn binary_protocol() {
    let exs = check_exchanges("memcached_binary.pcap", "memcached_binary.jsonl");
    assert_eq!(
        summary(&exs, &["/detail/command", "/detail/opcode", "/detail/response", "/detail/hits", "/outcome"]),
        [
            "set 1 success  complete",
            "get 0 success 1 complete",
            "get 0 key_not_found 0 complete",
            "set 1 success  complete",
            // get_multi: GetKQ foo, GetKQ baz (both hits, answered), GetK missing.
            "get 13 success 1 complete",
            "get 13 success 1 complete",
            "get 12 key_not_found 0 complete",
            "add 2 key_exists  complete",
            "replace 3 success  complete",
            "delete 4 success  complete",
            "delete 4 key_not_found  complete",
            "set 1 success  complete",
            "incr 5 success  complete",
            "decr 6 success  complete",
            "flush_all 8 success  complete",
        ]
    );
    assert!(exs.iter().all(|e| e["detail"]["error_code"].is_null() && e["partial"] == false));
    assert!(exs.iter().all(|e| e["detail"]["protocol"] == "binary"));
}

#[test]
fn joined_mid_connection() {
    let exs = check_exchanges("memcached_midconn.pcap", "memcached_midconn.jsonl");
    // midconn_client.py after its pause; the first exchange is marked partial
    // (the capture did not see where the connection's messages begin).
    assert_eq!(
        summary(&exs, &["/detail/command", "/detail/response", "/detail/hits", "/partial"]),
        ["set STORED  true", "get VALUE 2 false", "delete DELETED  false", "incr value  false", "get END 0 false"]
    );
}

#[test]
fn snap_length_100_degrades_to_partial() {
    let exs = check_exchanges("memcached_snap100.pcap", "memcached_snap100.jsonl");
    let full = exchanges("memcached.pcap");
    let conns = ports(&exs);
    let text = of_conn(&exs, &conns[0]);
    // Every request of the text session is still one exchange, in order; cut
    // replies are marked partial instead of being guessed.
    let cmds: Vec<String> = text.iter().map(|e| field(e, "/detail/command")).collect();
    let want: Vec<String> = TEXT.iter().map(|t| t.0.to_string()).collect();
    assert_eq!(cmds, want);
    assert!(text.iter().all(|e| e["outcome"] == "complete"));
    assert!(text.iter().any(|e| e["partial"] == true));
    // Replies shorter than the cut are as in the full capture.
    let full_text = of_conn(&full, &conns[0]);
    for (a, b) in text.iter().zip(&full_text) {
        if a["partial"] == false {
            assert_eq!(a["detail"]["response"], b["detail"]["response"]);
        }
    }
    assert!(exs.len() < full.len(), "the meta batch is cut: some of its requests are lost");
}

#[test]
fn live_text_meta_and_binary_through_ebpf() {
    let mut s = live::LiveSession::new("mc");
    let ip = s.pair.ip_a.clone();
    s.spawn_server(&["memcached", "-u", "root", "-l", &ip, "-p", "11211", "-U", "0", "-m", "16"], "memcached");
    s.start_capture();
    assert!(
        s.wait_tcp(&ip, 11211, Duration::from_secs(15)),
        "memcached did not come up: {}",
        s.server_log("memcached")
    );
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("integration-tests/scripts/memcached");
    let t = Duration::from_secs(30);
    s.client(&["python3", dir.join("text_client.py").to_str().unwrap(), &ip], t);
    s.client(&["python3", dir.join("binary_client.py").to_str().unwrap(), &ip], t);
    s.client(
        &[
            "bash",
            "-c",
            &format!("printf 'ms k 2 T0\\r\\nhi\\r\\nmg k v q O1\\r\\nmg nokey v q O2\\r\\nmd k q\\r\\nmn\\r\\n' | nc -q 1 {ip} 11211"),
        ],
        t,
    );
    let o = s.finish();
    o.assert_live_matches_replay();
    let (live, _) = o.of("memcached");
    assert_eq!(o.live.len(), live.len(), "only memcached exchanges expected");
    // text_client.py: 31 requests on its first connection + the CLIENT_ERROR one;
    // binary_client.py: 15; the nc batch: 5.
    assert_eq!(live.len(), TEXT.len() + 1 + 15 + 5);
    let count = |f: &dyn Fn(&serde_json::Value) -> bool| live.iter().filter(|e| f(e)).count();
    assert_eq!(count(&|e| e["detail"]["protocol"] == "binary"), 15);
    assert_eq!(count(&|e| e["detail"]["protocol"] == "meta"), 5);
    assert_eq!(count(&|e| e["detail"]["noreply"] == true), 1);
    assert_eq!(count(&|e| e["detail"]["quiet_suppressed"] == true), 2, "mg nokey q and md k q");
    assert_eq!(count(&|e| !e["detail"]["error_code"].is_null()), 2, "ERROR and CLIENT_ERROR");
    let hits: u64 = live.iter().filter_map(|e| e["detail"]["hits"].as_u64()).sum();
    // Text: 1+0+2+1+1+2+1+1 = 9; binary: 1+0+1+1+0 = 3; meta: mg k hit 1, mg nokey 0.
    assert_eq!(hits, 9 + 3 + 1);
    assert!(live.iter().all(|e| e["outcome"] == "complete" && e["partial"] == false));
}
