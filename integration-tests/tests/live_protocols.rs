//! Live protocol decoding (root): `cnflow run --format exchanges` captures with
//! eBPF on a veth in a network namespace while real peers talk (redis-server +
//! redis-cli, dnsmasq + dig over UDP and TCP, a Python HTTP server + curl,
//! ping, UDP to a closed port). The same traffic is recorded with tcpdump and
//! replayed: live and replayed exchanges must agree.
#[path = "../harness/mod.rs"]
mod harness;
#[path = "../harness/netns.rs"]
mod netns;

use netns::{read, wait_until, ChildGuard, NetnsPair, Scratch};
use std::process::Stdio;
use std::time::Duration;

fn spawn(ns: &str, args: &[&str], what: &str) -> ChildGuard {
    let child = NetnsPair::cmd(ns, args[0])
        .args(&args[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    ChildGuard::new(child, what)
}

/// Order-independent summary of an exchange: protocol and what was asked and answered.
fn summary(e: &serde_json::Value) -> String {
    let d = &e["detail"];
    let s = |v: &serde_json::Value| match v {
        serde_json::Value::Null => String::new(),
        serde_json::Value::String(s) => s.clone(),
        v => v.to_string(),
    };
    let what = match s(&d["kind"]).as_str() {
        "http" => format!("{} {} {}", s(&d["method"]), s(&d["path"]), s(&d["status"])),
        "redis" => format!("{} {} {}", s(&d["query_masked"]), s(&d["response_type"]), s(&d["error_prefix"])),
        "dns" => {
            format!("{} {} {} {}", s(&d["transport"]), s(&d["question_name"]), s(&d["question_type"]), s(&d["rcode"]))
        }
        "icmp" => format!("{} {} {} {}", s(&d["name"]), s(&d["v6"]), s(&d["code"]), s(&d["original"]["dst"])),
        k => k.to_string(),
    };
    format!("{} {} {}", s(&e["protocol"]), what, s(&e["outcome"]))
}

fn summaries(out: &str) -> Vec<String> {
    let mut v: Vec<String> = out
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| summary(&serde_json::from_str(l).unwrap_or_else(|e| panic!("bad line {l}: {e}"))))
        .collect();
    v.sort();
    v
}

#[test]
fn live_exchanges_match_replay_of_the_same_traffic() {
    let pair = NetnsPair::new("lp");
    let dir = Scratch::new("live-protocols");
    let (a, b) = (pair.ns_a.clone(), pair.ns_b.clone());
    let ip = pair.ip_a.clone();

    let _redis = spawn(
        &a,
        &[
            "redis-server",
            "--port",
            "6379",
            "--bind",
            &ip,
            "--save",
            "",
            "--appendonly",
            "no",
            "--protected-mode",
            "no",
        ],
        "redis-server",
    );
    let listen = format!("--listen-address={ip}");
    let _dns = spawn(
        &a,
        &[
            "dnsmasq",
            "--keep-in-foreground",
            "--conf-file=/dev/null",
            "--no-resolv",
            "--no-hosts",
            "--bind-interfaces",
            &listen,
            "--local=/test/",
            "--address=/live.test/10.200.250.9",
            "--user=root",
            "--pid-file",
        ],
        "dnsmasq",
    );
    let www = dir.path("www");
    std::fs::create_dir_all(&www).unwrap();
    std::fs::write(www.join("index.html"), "live\n").unwrap();
    let www = www.to_string_lossy().into_owned();
    let _http = spawn(&a, &["python3", "-m", "http.server", "8000", "--bind", &ip, "--directory", &www], "http.server");

    let mut agent = {
        let mut c = NetnsPair::cmd(&a, harness::cnflow_bin());
        c.args(["run", "--format", "exchanges"])
            .env("CNFLOW_INTERFACES", &pair.veth_a)
            .env("CNFLOW_SNAPLEN", "4096")
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(dir.path("agent.out")).unwrap())
            .stderr(std::fs::File::create(dir.path("agent.err")).unwrap());
        ChildGuard::new(c.spawn().expect("spawn cnflow"), "cnflow run")
    };
    assert!(
        wait_until(Duration::from_secs(30), || read(&dir.path("agent.err")).contains("capture attached")),
        "agent did not attach: {}",
        read(&dir.path("agent.err"))
    );
    let pcap = dir.path("live.pcap");
    let mut tcpdump = {
        let c = NetnsPair::cmd(&a, "tcpdump")
            .args(["-i", &pair.veth_a, "-n", "-U", "-s", "0", "-w"])
            .arg(&pcap)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path("tcpdump.err")).unwrap())
            .spawn()
            .expect("tcpdump");
        ChildGuard::new(c, "tcpdump")
    };
    assert!(wait_until(Duration::from_secs(10), || read(&dir.path("tcpdump.err")).contains("listening on")));
    let up = |port: u16| {
        wait_until(Duration::from_secs(10), || {
            NetnsPair::cmd(&b, "bash")
                .args(["-c", &format!("exec 3<>/dev/tcp/{ip}/{port}")])
                .status()
                .is_ok_and(|s| s.success())
        })
    };
    assert!(up(6379) && up(8000), "peers did not come up");

    let t = Duration::from_secs(20);
    NetnsPair::exec(&b, &["redis-cli", "-h", &ip, "SET", "k", "v"], t);
    NetnsPair::exec(&b, &["redis-cli", "-h", &ip, "GET", "k"], t);
    NetnsPair::exec(&b, &["redis-cli", "-h", &ip, "LPUSH", "k", "x"], t);
    NetnsPair::exec(&b, &["dig", "+short", "+tries=1", &format!("@{ip}"), "a.live.test", "A"], t);
    NetnsPair::exec(&b, &["dig", "+short", "+tries=1", "+tcp", &format!("@{ip}"), "b.live.test", "A"], t);
    NetnsPair::exec(&b, &["dig", "+short", "+tries=1", &format!("@{ip}"), "nope.test", "A"], t);
    NetnsPair::exec(&b, &["curl", "-s", "-o", "/dev/null", &format!("http://{ip}:8000/index.html")], t);
    NetnsPair::exec(&b, &["curl", "-s", "-o", "/dev/null", &format!("http://{ip}:8000/missing")], t);
    NetnsPair::exec(&b, &["ping", "-c", "2", "-i", "0.2", &ip], t);
    NetnsPair::exec(
        &b,
        &[
            "python3",
            "-c",
            &format!("import socket; socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b'x', ('{ip}', 9))"),
        ],
        t,
    );
    std::thread::sleep(Duration::from_secs(2));

    tcpdump.signal(libc::SIGINT);
    tcpdump.wait_timeout(Duration::from_secs(10)).expect("tcpdump did not stop");
    agent.signal(libc::SIGTERM);
    agent.wait_timeout(Duration::from_secs(15)).expect("agent did not stop");

    let live = summaries(&read(&dir.path("agent.out")));
    let replay = std::process::Command::new(harness::cnflow_bin())
        .args(["replay", "--format", "exchanges"])
        .arg(&pcap)
        .output()
        .expect("cnflow replay");
    assert!(replay.status.success(), "{}", String::from_utf8_lossy(&replay.stderr));
    let replayed = summaries(&String::from_utf8_lossy(&replay.stdout));

    for want in [
        "redis SET ? ? simple  complete",
        "redis GET ? bulk  complete",
        "redis LPUSH ? ? error WRONGTYPE complete",
        "dns udp a.live.test A NOERROR complete",
        "dns tcp b.live.test A NOERROR complete",
        "dns udp nope.test A NXDOMAIN complete",
        "http1 GET /index.html 200 complete",
        "http1 GET /missing 404 complete",
        "icmp echo false 0  complete",
        "icmp destination_unreachable false 3 10.200.",
    ] {
        assert!(live.iter().any(|l| l.starts_with(want)), "live output lacks {want:?}:\n{}", live.join("\n"));
    }
    assert_eq!(live, replayed, "live and replayed exchanges differ");
}
