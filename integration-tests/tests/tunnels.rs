//! Overlay traffic (issue #13 item 7): VXLAN, Geneve, GRE, IPIP and SIT
//! packets seen on a node's underlay interface are decoded as the inner flows,
//! in replay and in the eBPF program, and every removed header is counted
//! (`cnflow.capture.decapsulated{encapsulation}`).
//!
//! - Live VXLAN (root): real `ip link add type vxlan` devices (IANA port 4789
//!   and Flannel's 8472, and one over an IPv6 underlay) between two
//!   namespaces, redis-server/redis-cli,
//!   dnsmasq/dig and a Python HTTP server/curl talking over them; the agent
//!   and tcpdump on the *underlay* veth. Exact exchanges, live == replay, and
//!   the kernel's VXLAN counter equals the VXLAN packets tshark finds in
//!   tcpdump's recording.
//! - Encapsulations this kernel cannot build (Geneve, GRE, IPIP, SIT are not
//!   compiled in) come from `scripts/record_tunnels.sh`: real peers over IPv4
//!   and IPv6 recorded plainly (`tunnel_inner.pcap`), then every packet
//!   wrapped by scapy. Replay of each wrapped file gives exactly the
//!   exchanges of the plain one, and tshark's own dissection of the wrapped
//!   files (HTTP requests, DNS queries, encapsulation headers) is the oracle
//!   for what is inside and how many headers were removed.
//! - The same wrapped files are sent onto a veth (AF_PACKET) while the agent
//!   captures there: the eBPF program decapsulates them like replay does.
#[path = "../harness/golden.rs"]
mod golden;
#[path = "../harness/mod.rs"]
mod harness;
#[path = "../harness/live.rs"]
mod live;
#[path = "../harness/netns.rs"]
mod netns;

use live::{counts, summary, LiveSession};
use std::process::Command;
use std::time::Duration;

const T: Duration = Duration::from_secs(20);
const UP: Duration = Duration::from_secs(15);

fn run(args: &[&str]) {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// A VXLAN device `name` in both namespaces over the veth pair (its IPv4
/// addresses, or with `v6` the session's IPv6 ones), inner addresses
/// 10.200.`subnet`.1 (server side) and .2.
fn vxlan(s: &LiveSession, name: &str, vni: u32, port: u16, subnet: u8, v6: bool) -> String {
    let p = &s.pair;
    let (a, b) = if v6 { (live::IP6_A, live::IP6_B) } else { (p.ip_a.as_str(), p.ip_b.as_str()) };
    for (ns, dev, local, remote, host) in [(&p.ns_a, &p.veth_a, a, b, 1), (&p.ns_b, &p.veth_b, b, a, 2)] {
        let (vni, port) = (vni.to_string(), port.to_string());
        run(&[
            "ip", "-n", ns, "link", "add", name, "type", "vxlan", "id", &vni, "local", local, "remote", remote,
            "dstport", &port, "dev", dev,
        ]);
        run(&["ip", "-n", ns, "addr", "add", &format!("10.200.{subnet}.{host}/24"), "dev", name]);
        run(&["ip", "-n", ns, "link", "set", name, "up"]);
    }
    format!("10.200.{subnet}.1")
}

/// `tshark -r pcap [extra] -T fields -e field...` lines.
fn tshark(pcap: &std::path::Path, extra: &[&str], fields: &[&str]) -> Vec<String> {
    let mut c = Command::new("tshark");
    c.arg("-r").arg(pcap).args(extra).args(["-T", "fields", "-E", "separator=/s"]);
    for f in fields {
        c.args(["-e", f]);
    }
    let out = c.output().expect("tshark");
    assert!(out.status.success(), "tshark: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).lines().map(str::to_string).collect()
}

/// `cnflow.capture.decapsulated{encapsulation=<encap>}` from a `--stats` dump or agent log ("" = 0).
fn decap_stat(stats: &str, encap: &str) -> u64 {
    let key = format!("cnflow.capture.decapsulated{{encapsulation={encap}}}");
    stats
        .lines()
        .find_map(|l| l.split_once(&key).map(|(_, v)| v.trim_start_matches([' ', '=', ':']).trim()))
        .and_then(|v| v.split_whitespace().next().and_then(|n| n.parse().ok()))
        .unwrap_or(0)
}

#[test]
fn live_vxlan_on_the_underlay() {
    let mut s = LiveSession::new("vx").with_ipv6();
    let redis_ip = vxlan(&s, "vx4789", 42, 4789, 251, false);
    let web_ip = vxlan(&s, "vx8472", 43, 8472, 252, false);
    // The same redis-server reached over a VXLAN with an IPv6 underlay.
    let redis6_ip = vxlan(&s, "vx6", 44, 4789, 254, true);
    let bind = format!("{redis_ip} {redis6_ip}");
    s.spawn_server(
        &[
            "redis-server",
            "--port",
            "6379",
            "--bind",
            &bind,
            "--save",
            "",
            "--appendonly",
            "no",
            "--protected-mode",
            "no",
        ],
        "redis-server",
    );
    s.spawn_server(
        &[
            "dnsmasq",
            "--keep-in-foreground",
            "--conf-file=/dev/null",
            "--no-resolv",
            "--no-hosts",
            "--bind-interfaces",
            &format!("--listen-address={redis_ip}"),
            "--local=/test/",
            "--address=/tun.test/10.200.253.9",
            "--user=root",
            "--pid-file",
        ],
        "dnsmasq",
    );
    let www = s.dir.path("www");
    std::fs::create_dir_all(&www).unwrap();
    std::fs::write(www.join("index.html"), "over vxlan\n").unwrap();
    // Several segments (and GSO packets on the underlay).
    std::fs::write(www.join("big.txt"), "x".repeat(40_000)).unwrap();
    s.spawn_server(
        &["python3", "-m", "http.server", "8000", "--bind", &web_ip, "--directory", www.to_str().unwrap()],
        "http.server",
    );
    s.start_capture();
    assert!(
        s.wait_tcp(&redis_ip, 6379, UP) && s.wait_tcp(&redis6_ip, 6379, UP) && s.wait_tcp(&web_ip, 8000, UP),
        "peers did not come up"
    );

    s.client(&["redis-cli", "-h", &redis_ip, "SET", "k", "v"], T);
    s.client(&["redis-cli", "-h", &redis_ip, "GET", "k"], T);
    s.client(&["redis-cli", "-h", &redis6_ip, "GET", "k"], T);
    s.client(&["dig", "+short", "+tries=1", &format!("@{redis_ip}"), "a.tun.test", "A"], T);
    for path in ["/index.html", "/missing", "/big.txt"] {
        s.client(&["curl", "-s", "-o", "/dev/null", &format!("http://{web_ip}:8000{path}")], T);
    }

    let o = s.finish();
    o.assert_live_matches_replay();
    o.assert_exactly("redis", &[("redis SET ? ? simple  complete", 1), ("redis GET ? bulk  complete", 2)]);
    o.assert_exactly("dns", &[("dns udp a.tun.test A NOERROR complete", 1)]);
    o.assert_exactly(
        "http1",
        &[
            ("http1 GET /index.html 200 complete", 1),
            ("http1 GET /missing 404 complete", 1),
            ("http1 GET /big.txt 200 complete", 1),
        ],
    );
    // The inner addresses, not the underlay's, are the flows' endpoints.
    for e in &o.live {
        let server = e["conn"]["server"].as_str().unwrap_or_default();
        assert!(
            [&redis_ip, &web_ip, &redis6_ip].iter().any(|ip| server.starts_with(ip.as_str())),
            "not an inner flow: {e}"
        );
    }
    // Every VXLAN packet on the underlay (tshark's count, 8472 decoded as
    // VXLAN too) was decapsulated, by the kernel and by replay.
    let pcap = s.dir.path("live.pcap");
    let vxlan_frames = tshark(&pcap, &["-d", "udp.port==8472,vxlan", "-Y", "vxlan"], &["frame.number"]).len() as u64;
    assert!(vxlan_frames > 20, "{vxlan_frames}");
    let over_ipv6 = tshark(&pcap, &["-Y", "ipv6 && vxlan && tcp.port == 6379"], &["frame.number"]).len();
    assert!(over_ipv6 >= 5, "the GET over the IPv6 underlay: {over_ipv6} frames");
    let log = s.agent_log();
    let stopped = log.lines().rev().find(|l| l.contains("capture stopped")).unwrap_or_default();
    let kernel: u64 = stopped
        .split_once("decap_vxlan=")
        .and_then(|(_, r)| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    // The agent attaches before tcpdump starts and stops after it: it may
    // have seen a few more (neighbour discovery inside the tunnel).
    assert!(
        kernel >= vxlan_frames && kernel <= vxlan_frames + 20,
        "kernel {kernel} vs tshark {vxlan_frames}: {stopped}"
    );
    let out = Command::new(harness::cnflow_bin())
        .args(["replay", "--format", "count", "--stats"])
        .arg(&pcap)
        .output()
        .unwrap();
    let stats = String::from_utf8_lossy(&out.stderr);
    assert_eq!(decap_stat(&stats, "vxlan"), vxlan_frames, "{stats}");
}

/// The files `scripts/record_tunnels.sh` wraps `tunnel_inner.pcap` into, with
/// the tshark display filter matching the frames of each encapsulation and
/// the cnflow counter it must equal.
const WRAPPED: [(&str, &[(&str, &str)]); 5] = [
    ("tunnel_geneve.pcap", &[("geneve", "geneve")]),
    ("tunnel_gre.pcap", &[("gre", "gre")]),
    ("tunnel_gretap.pcap", &[("gre", "gre")]),
    ("tunnel_ipip_sit.pcap", &[("ip.proto==4", "ipip"), ("ip.proto==41", "sit")]),
    ("tunnel_vxlan_in_gre6.pcap", &[("vxlan", "vxlan"), ("gre", "gre")]),
];

/// The plain recording: exactly what the clients of `record_tunnels.sh` did
/// (curl ×3, redis-cli ×2, dig ×2, over IPv4 and IPv6).
#[test]
fn inner_capture_golden_and_facts() {
    let exs = golden::check_exchanges("tunnel_inner.pcap", "tunnel_inner.jsonl");
    let mut got: Vec<String> = exs.iter().map(live::summary).collect();
    got.sort();
    let mut want = vec![
        "dns udp a.tun.test A NOERROR complete",
        "dns tcp b.tun.test AAAA NXDOMAIN complete",
        "http1 GET /big.txt 200 complete",
        "http1 GET /index.html 200 complete",
        "http1 GET /missing 404 complete",
        "redis GET ? bulk  complete",
        "redis SET ? ? simple  complete",
    ];
    want.sort();
    assert_eq!(got, want);
    let servers: Vec<&str> = exs.iter().filter_map(|e| e["conn"]["server"].as_str()).collect();
    assert_eq!(servers.iter().filter(|s| s.starts_with('[')).count(), 3, "three exchanges over IPv6: {servers:?}");
}

/// Each wrapped file replays to exactly the plain file's exchanges (every
/// field, timestamps included), tshark finds the same HTTP requests and DNS
/// queries inside the tunnels, and every encapsulated frame tshark sees was
/// counted as decapsulated.
#[test]
fn wrapped_captures_replay_as_the_inner_flows() {
    let inner = golden::replay("tunnel_inner.pcap", "exchanges", &[]);
    let exs = golden::exchanges("tunnel_inner.pcap");
    let mut http: Vec<String> = exs
        .iter()
        .filter(|e| e["protocol"] == "http1")
        .map(|e| format!("{} {}", golden::field(e, "/detail/method"), golden::field(e, "/detail/path")))
        .collect();
    let mut dns: Vec<String> =
        exs.iter().filter(|e| e["protocol"] == "dns").map(|e| golden::field(e, "/detail/question_name")).collect();
    http.sort();
    dns.sort();
    for (file, encaps) in WRAPPED {
        let out = golden::replay(file, "exchanges", &[]);
        assert_eq!(out, inner, "{file}: exchanges differ from the plain capture's");
        let path = golden::pcap_path(file);
        let mut t_http = tshark(&path, &["-Y", "http.request"], &["http.request.method", "http.request.uri"]);
        let mut t_dns = tshark(&path, &["-Y", "dns.flags.response==0"], &["dns.qry.name"]);
        t_http.sort();
        t_dns.sort();
        assert_eq!((&t_http, &t_dns), (&http, &dns), "{file}: tshark's dissection differs");
        let out = Command::new(harness::cnflow_bin())
            .args(["replay", "--format", "count", "--stats"])
            .arg(&path)
            .output()
            .unwrap();
        let stats = String::from_utf8_lossy(&out.stderr);
        for (filter, encap) in encaps.iter() {
            let frames = tshark(&path, &["-Y", filter], &["frame.number"]).len() as u64;
            assert!(frames > 30, "{file} {filter}: {frames}");
            assert_eq!(decap_stat(&stats, encap), frames, "{file}: {encap} counter vs tshark {filter:?}\n{stats}");
        }
    }
}

/// Sends a classic pcap's frames out of an interface (AF_PACKET), in order.
const SEND_PCAP: &str = r#"
import socket, struct, sys
data = open(sys.argv[1], 'rb').read()
magic = data[:4]
end = '<' if magic in (b'\xd4\xc3\xb2\xa1', b'\x4d\x3c\xb2\xa1') else '>'
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind((sys.argv[2], 0))
off, n = 24, 0
while off + 16 <= len(data):
    incl = struct.unpack(end + 'IIII', data[off:off + 16])[2]
    s.send(data[off + 16:off + 16 + incl])
    off += 16 + incl
    n += 1
print(n)
"#;

/// The eBPF program decapsulates what the kernel here cannot build: each
/// wrapped file is sent onto the veth, the agent captures on the other end,
/// and its exchanges are the plain capture's (and tcpdump's recording of the
/// same frames replays to the same).
#[test]
fn live_decapsulation_of_injected_tunnels() {
    let expected = counts(&golden::exchanges("tunnel_inner.pcap"), summary);
    for (file, encaps) in WRAPPED {
        let mut s = LiveSession::new("ti");
        // Room for the tunnel headers around full-sized inner frames.
        for (ns, dev) in [(&s.pair.ns_a, &s.pair.veth_a), (&s.pair.ns_b, &s.pair.veth_b)] {
            run(&["ip", "-n", ns, "link", "set", dev, "mtu", "9000"]);
        }
        s.start_capture();
        let path = golden::pcap_path(file);
        let sent = s.client(&["python3", "-c", SEND_PCAP, path.to_str().unwrap(), &s.pair.veth_b.clone()], T);
        assert_eq!(sent.trim(), "76", "{file}");
        let o = s.finish();
        o.assert_live_matches_replay();
        assert_eq!(counts(&o.live, summary), expected, "{file}: live exchanges");
        let log = s.agent_log();
        let stopped = log.lines().rev().find(|l| l.contains("capture stopped")).unwrap_or_default();
        for (filter, encap) in encaps.iter() {
            let frames = tshark(&path, &["-Y", filter], &["frame.number"]).len();
            assert!(stopped.contains(&format!("decap_{encap}={frames} ")), "{file} {encap}: {stopped}");
        }
    }
}
