//! `cnflow replay --format flows` gives the same reassembled streams for every
//! capture format and link type of the same real traffic, and those streams
//! equal what the client sent and received.
//!
//! The traffic (redis-server + a client, a UDP echo, ping, and an IPv6 TCP
//! echo over ::1) runs between two namespaces joined by a veth and is recorded
//! with tcpdump three ways (Ethernet on the veth, `-i any` as SLL and as
//! SLL2). Variants are derived with editcap/mergecap (pcapng, nanosecond
//! pcap, raw IP, raw IPv4, two-interface pcapng, snap length 96) and by
//! editing records (reordered, duplicated and lost segments).
//!
//! `committed_pcaps_replay_to_the_recorded_streams` checks the committed
//! files in integration-tests/pcaps (no root needed).
//! `live_capture_variants_match_client_streams` records everything afresh
//! (root); with CNFLOW_UPDATE_PCAPS=1 it rewrites the committed files.
#[path = "../harness/flow.rs"]
mod flow_harness;
#[path = "../harness/mod.rs"]
mod harness;

use flow_harness::{in_netns, is_root, wait_for, NetnsPair, Proc, Tcpdump};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::io::{Read, Write};
use std::net::{TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

const EXPECTED: &str = "flow_expected.json";

/// What one connection carried, as seen by the client's sockets.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct ExpectedConn {
    transport: String,
    client: String,
    server: String,
    /// "veth" or "lo": Ethernet captures on the veth do not see loopback.
    via: String,
    to_server_hex: String,
    to_client_hex: String,
    dgrams_to_server: Vec<String>,
    dgrams_to_client: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    /// Complete capture: streams equal, no gaps. `lo`: loopback conns included.
    /// `copies`: each veth conn appears this many times (two-interface files).
    Full { lo: bool, copies: usize },
    /// Snap length cut: captured + gap bytes = sent bytes.
    Truncated,
    /// One client→server segment of the redis conn removed (offset, length).
    Lost { off: usize, len: usize },
}

struct Variant {
    file: &'static str,
    kind: Kind,
}

fn variants(lost: Option<(usize, usize)>) -> Vec<Variant> {
    let full = Kind::Full { lo: false, copies: 1 };
    let any = Kind::Full { lo: true, copies: 1 };
    let mut v = vec![
        Variant { file: "flow_eth.pcap", kind: full },
        Variant { file: "flow_eth.pcapng", kind: full },
        Variant { file: "flow_eth_nsec.pcap", kind: full },
        Variant { file: "flow_rawip.pcap", kind: full },
        Variant { file: "flow_rawip4.pcap", kind: full },
        Variant { file: "flow_sll.pcap", kind: any },
        Variant { file: "flow_sll2.pcap", kind: any },
        Variant { file: "flow_sll2.pcapng", kind: any },
        Variant { file: "flow_merged.pcapng", kind: Kind::Full { lo: true, copies: 2 } },
        Variant { file: "flow_eth_trunc.pcap", kind: Kind::Truncated },
        Variant { file: "flow_eth_reordered.pcap", kind: full },
        Variant { file: "flow_eth_dup.pcap", kind: full },
    ];
    if let Some((off, len)) = lost {
        v.push(Variant { file: "flow_eth_lost.pcap", kind: Kind::Lost { off, len } });
    }
    v
}

#[derive(Debug, Serialize, Deserialize)]
struct ExpectedFile {
    conns: Vec<ExpectedConn>,
    /// Offset and length of the segment removed in flow_eth_lost.pcap.
    lost: Option<(usize, usize)>,
}

fn replay_flows(file: &Path) -> Vec<Value> {
    let out = Command::new(harness::cnflow_bin())
        .args(["replay", "--format", "flows", "--dump"])
        .arg(file)
        .output()
        .expect("run cnflow");
    assert!(out.status.success(), "replay {} failed: {}", file.display(), String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

fn hex_list(v: &Value) -> Vec<String> {
    v.as_array().map(|a| a.iter().map(|x| x.as_str().unwrap().to_string()).collect()).unwrap_or_default()
}

/// Compare a replayed stream with the expected one without dumping kilobytes of hex.
fn same_stream(got: &Value, want_hex: &str, what: &str) {
    let got = hex::decode(got.as_str().unwrap_or_else(|| panic!("{what}: no data_hex"))).unwrap();
    let want = hex::decode(want_hex).unwrap();
    if got != want {
        let at = got.iter().zip(&want).position(|(a, b)| a != b).unwrap_or(got.len().min(want.len()));
        panic!("{what}: stream differs: got {} bytes, want {}, first difference at {at}", got.len(), want.len());
    }
}

fn check_variant(dir: &Path, var: &Variant, expected: &[ExpectedConn]) {
    let path = dir.join(var.file);
    let flows = replay_flows(&path);
    let name = var.file;
    let (lo, copies) = match var.kind {
        Kind::Full { lo, copies } => (lo, copies),
        _ => (false, 1),
    };
    let mut matched = 0;
    for exp in expected {
        if exp.via == "lo" && !lo {
            continue;
        }
        let found: Vec<&Value> = flows
            .iter()
            .filter(|f| {
                f["conn"]["transport"] == exp.transport.as_str()
                    && f["conn"]["client"] == exp.client.as_str()
                    && f["conn"]["server"] == exp.server.as_str()
            })
            .collect();
        let want = if exp.via == "lo" { 1 } else { copies };
        assert_eq!(found.len(), want, "{name}: {} {} -> {}: {flows:#?}", exp.transport, exp.client, exp.server);
        for f in found {
            matched += 1;
            let (ts, tc) = (&f["to_server"], &f["to_client"]);
            if exp.transport == "icmp" {
                // ping's payload is not known to the test: count and types only.
                let (q, r) = (hex_list(&ts["datagrams_hex"]), hex_list(&tc["datagrams_hex"]));
                assert_eq!((q.len(), r.len()), (exp.dgrams_to_server.len(), exp.dgrams_to_client.len()), "{name}");
                assert!(q.iter().all(|h| h.starts_with("08")) && r.iter().all(|h| h.starts_with("00")), "{name}");
                continue;
            }
            match var.kind {
                Kind::Full { .. } => {
                    if exp.transport == "tcp" {
                        same_stream(&ts["data_hex"], &exp.to_server_hex, &format!("{name}: to_server {}", exp.client));
                        same_stream(&tc["data_hex"], &exp.to_client_hex, &format!("{name}: to_client {}", exp.client));
                        assert_eq!(f["close"], "fin", "{name}");
                    } else {
                        assert_eq!(hex_list(&ts["datagrams_hex"]), exp.dgrams_to_server, "{name}");
                        assert_eq!(hex_list(&tc["datagrams_hex"]), exp.dgrams_to_client, "{name}");
                    }
                    assert_eq!((ts["gap_bytes"].as_u64(), tc["gap_bytes"].as_u64()), (Some(0), Some(0)), "{name}");
                }
                Kind::Truncated => {
                    let total = |hex: &str, d: &[String]| (hex.len() + d.iter().map(String::len).sum::<usize>()) / 2;
                    let sum = |d: &Value| d["bytes"].as_u64().unwrap() + d["gap_bytes"].as_u64().unwrap();
                    assert_eq!(sum(ts), total(&exp.to_server_hex, &exp.dgrams_to_server) as u64, "{name}");
                    assert_eq!(sum(tc), total(&exp.to_client_hex, &exp.dgrams_to_client) as u64, "{name}");
                }
                Kind::Lost { off, len } => {
                    let want = hex::decode(&exp.to_server_hex).unwrap();
                    if want.len() > VALUE_LEN {
                        let mut cut = want[..off].to_vec();
                        cut.extend_from_slice(&want[off + len..]);
                        same_stream(&ts["data_hex"], &hex::encode(cut), &format!("{name}: stream around the hole"));
                        assert_eq!((ts["gaps"].as_u64(), ts["gap_bytes"].as_u64()), (Some(1), Some(len as u64)));
                    } else if exp.transport == "tcp" {
                        same_stream(&ts["data_hex"], &exp.to_server_hex, name);
                    }
                    if exp.transport == "tcp" {
                        same_stream(&tc["data_hex"], &exp.to_client_hex, name);
                    }
                }
            }
        }
    }
    assert_eq!(flows.len(), matched, "{name}: unexpected extra flows: {flows:#?}");
}

#[test]
fn committed_pcaps_replay_to_the_recorded_streams() {
    let dir = harness::pcaps_dir();
    let exp: ExpectedFile = serde_json::from_slice(
        &std::fs::read(dir.join(EXPECTED))
            .expect("committed expectations (run the live test with CNFLOW_UPDATE_PCAPS=1)"),
    )
    .unwrap();
    for v in variants(exp.lost) {
        check_variant(&dir, &v, &exp.conns);
    }
}

/// `--progress always` (the default `auto` shows it only on a terminal) ends
/// with a line whose packet count is what tcpdump reads from the same file.
#[test]
fn progress_line_counts_what_tcpdump_reads() {
    let file = harness::pcaps_dir().join("http1.pcap");
    let out = Command::new(harness::cnflow_bin())
        .args(["replay", "--format", "count", "--progress", "always"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    let line = err.lines().last().unwrap_or("");
    let td = Command::new("tcpdump").arg("-nr").arg(&file).output().expect("tcpdump");
    let packets = String::from_utf8_lossy(&td.stdout).lines().count();
    assert!(line.starts_with(&format!("replay: {packets} packets, ")), "{line}");
    assert!(line.contains(" 8 exchanges, "), "{line}"); // the recording script sends 8 requests (3 keep-alive, gzip, PUT, 3 pipelined)
                                                        // Not a terminal here: auto stays quiet.
    let quiet = Command::new(harness::cnflow_bin()).args(["replay", "--format", "count"]).arg(&file).output().unwrap();
    assert!(!String::from_utf8_lossy(&quiet.stderr).contains("replay: "));
}

/// The live agent's own path without a kernel (`cnflow run
/// --simulate-capture`: the packets written as the TC program's ring records
/// into two rings round-robin, merged back by timestamp, decoded by the ring
/// reader's decoder, through the agent's batch loop) reports exactly the
/// exchanges `cnflow replay` reports for the same committed captures — one
/// per protocol and a tunnel, mid-connection starts and short snap lengths
/// included (the replayed exchanges are checked against tshark, the clients
/// and the servers by the golden and protocol tests). The kernel's cut at
/// 4 KiB per record is the one expected difference, so the captures chosen
/// have smaller segments.
#[test]
fn simulated_live_path_reports_what_replay_reports() {
    let exchanges = |args: &[&str], file: &Path| -> Vec<String> {
        let out = Command::new(harness::cnflow_bin())
            .args(args)
            .arg(file)
            .args(["--format", "exchanges"])
            .env("CNFLOW_SNAPLEN", "4096")
            .env("CNFLOW_TLS", "false")
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?} {}: {}", file.display(), String::from_utf8_lossy(&out.stderr));
        let mut lines: Vec<String> = String::from_utf8(out.stdout).unwrap().lines().map(str::to_string).collect();
        lines.sort();
        lines
    };
    let mut total = 0;
    for name in [
        "redis.pcap",
        "redis_midconn.pcap",
        "http1.pcap",
        "http1_lenient.pcap",
        "h2_h2load.pcap",
        "grpc.pcap",
        "dns_rrtypes.pcap",
        "icmp.pcap",
        "kafka.pcap",
        "postgres.pcap",
        "mysql_snap200.pcap",
        "memcached.pcap",
        "mongodb.pcap",
        "amqp.pcap",
        "mqtt.pcap",
        "nats.pcap",
        "tunnel_vxlan_in_gre6.pcap",
    ] {
        let file = harness::pcaps_dir().join(name);
        let replayed = exchanges(&["replay"], &file);
        let live = exchanges(&["run", "--simulate-capture"], &file);
        assert!(!replayed.is_empty(), "{name}: nothing replayed");
        assert_eq!(live, replayed, "{name}: the live path and replay differ");
        total += replayed.len();
    }
    assert!(total > 400, "{total}");
}

/// tshark's view of `file`: the requests (method, uri) and, separately, the
/// response codes, each sorted (tshark puts them on different frames).
fn tshark_http(file: &Path) -> (Vec<(String, String)>, Vec<String>) {
    let fields = |filter: &str, f: &[&str]| -> Vec<String> {
        let mut cmd = Command::new("tshark");
        cmd.arg("-r").arg(file).args(["-Y", filter, "-T", "fields"]);
        for x in f {
            cmd.args(["-e", x]);
        }
        let out = cmd.output().expect("tshark");
        let mut v: Vec<String> = String::from_utf8_lossy(&out.stdout).lines().map(str::to_string).collect();
        v.sort();
        v
    };
    let reqs = fields("http.request", &["http.request.method", "http.request.uri"])
        .iter()
        .map(|l| {
            let (m, u) = l.split_once('\t').unwrap();
            (m.to_string(), u.to_string())
        })
        .collect();
    (reqs, fields("http.response", &["http.response.code"]))
}

fn cnflow_http(file: &Path) -> (Vec<(String, String)>, Vec<String>) {
    let out = Command::new(harness::cnflow_bin()).args(["replay", "--format", "exchanges"]).arg(file).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let (mut reqs, mut codes) = (Vec::new(), Vec::new());
    for l in String::from_utf8_lossy(&out.stdout).lines() {
        let e: Value = serde_json::from_str(l).unwrap();
        let d = &e["detail"];
        let uri = match d["query"].as_str() {
            Some(q) => format!("{}?{q}", d["path"].as_str().unwrap()),
            None => d["path"].as_str().unwrap().to_string(),
        };
        reqs.push((d["method"].as_str().unwrap().to_string(), uri));
        codes.push(d["status"].to_string());
    }
    reqs.sort();
    codes.sort();
    (reqs, codes)
}

/// Link type NFLOG (239, `tcpdump -i nflog:N`, recorded by
/// scripts/record_nflog.sh) and the modified pcap format (magic 0xa1b2cd34,
/// written here by editcap) give the HTTP exchanges tshark finds in them.
#[test]
fn nflog_and_modified_pcap_match_tshark() {
    let nflog = harness::pcaps_dir().join("http1_nflog.pcap");
    let want = tshark_http(&nflog);
    assert_eq!(want.0.len(), 3, "the recording script sends three requests");
    assert_eq!(cnflow_http(&nflog), want);

    let dir = std::env::temp_dir().join(format!("cnflow-modpcap-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // Modified pcap of the NFLOG recording: tshark's view again.
    let mod_nflog = dir.join("nflog_mod.pcap");
    tool(Command::new("editcap").args(["-F", "modpcap"]).arg(&nflog).arg(&mod_nflog));
    assert_eq!(&std::fs::read(&mod_nflog).unwrap()[..4], &[0x34, 0xcd, 0xb2, 0xa1]);
    assert_eq!(cnflow_http(&mod_nflog), want);
    // And of the Ethernet HTTP recording (pipelining, 100-continue): the same
    // exchanges as the classic file, whose content other tests check.
    let http1 = harness::pcaps_dir().join("http1.pcap");
    let mod_http1 = dir.join("http1_mod.pcap");
    tool(Command::new("editcap").args(["-F", "modpcap"]).arg(&http1).arg(&mod_http1));
    assert_eq!(cnflow_http(&mod_http1), cnflow_http(&http1));
    let _ = std::fs::remove_dir_all(&dir);
}

// ---------------------------------------------------------------------------
// Live recording

const VALUE_LEN: usize = 9_000;

fn redis_session(server: &str, cmds: &[Vec<u8>], replies: &[usize]) -> ExpectedConn {
    let mut s = TcpStream::connect_timeout(&server.parse().unwrap(), Duration::from_secs(5)).expect("connect redis");
    s.set_nodelay(true).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let (mut sent, mut got) = (Vec::new(), Vec::new());
    for (cmd, reply_len) in cmds.iter().zip(replies) {
        // Small writes so the request spans many real segments.
        for chunk in cmd.chunks(1400) {
            s.write_all(chunk).unwrap();
            sent.extend_from_slice(chunk);
        }
        let mut buf = vec![0u8; *reply_len];
        s.read_exact(&mut buf).unwrap();
        got.extend_from_slice(&buf);
    }
    s.write_all(b"QUIT\r\n").unwrap();
    sent.extend_from_slice(b"QUIT\r\n");
    s.read_to_end(&mut got).unwrap();
    ExpectedConn {
        transport: "tcp".into(),
        client: s.local_addr().unwrap().to_string(),
        server: server.into(),
        via: "veth".into(),
        to_server_hex: hex::encode(sent),
        to_client_hex: hex::encode(got),
        dgrams_to_server: vec![],
        dgrams_to_client: vec![],
    }
}

fn resp(args: &[&[u8]]) -> Vec<u8> {
    let mut v = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        v.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        v.extend_from_slice(a);
        v.extend_from_slice(b"\r\n");
    }
    v
}

/// IPv6 TCP echo over ::1 inside the client namespace.
fn ipv6_echo() -> ExpectedConn {
    let l = std::net::TcpListener::bind("[::1]:7777").unwrap();
    let srv = std::thread::spawn(move || {
        let (mut c, _) = l.accept().unwrap();
        let mut buf = [0u8; 4096];
        loop {
            match c.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => c.write_all(&buf[..n]).unwrap(),
            }
        }
    });
    let mut s = TcpStream::connect("[::1]:7777").unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let (mut sent, mut got) = (Vec::new(), Vec::new());
    for i in 0..3 {
        let msg = format!("echo over ipv6 #{i}\n").into_bytes();
        s.write_all(&msg).unwrap();
        let mut buf = vec![0u8; msg.len()];
        s.read_exact(&mut buf).unwrap();
        sent.extend_from_slice(&msg);
        got.extend_from_slice(&buf);
    }
    let client = s.local_addr().unwrap().to_string();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    s.read_to_end(&mut got).unwrap();
    srv.join().unwrap();
    ExpectedConn {
        transport: "tcp".into(),
        client,
        server: "[::1]:7777".into(),
        via: "lo".into(),
        to_server_hex: hex::encode(sent),
        to_client_hex: hex::encode(got),
        dgrams_to_server: vec![],
        dgrams_to_client: vec![],
    }
}

fn udp_exchange(local_ip: String, server: String) -> ExpectedConn {
    let s = UdpSocket::bind(format!("{local_ip}:0")).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let (mut q, mut r) = (Vec::new(), Vec::new());
    for i in 0..3 {
        let msg = format!("datagram {i} {}", "u".repeat(i * 100)).into_bytes();
        s.send_to(&msg, &server).unwrap();
        let mut buf = [0u8; 2048];
        let (n, _) = s.recv_from(&mut buf).unwrap();
        q.push(hex::encode(&msg));
        r.push(hex::encode(&buf[..n]));
    }
    ExpectedConn {
        transport: "udp".into(),
        client: s.local_addr().unwrap().to_string(),
        server,
        via: "veth".into(),
        to_server_hex: String::new(),
        to_client_hex: String::new(),
        dgrams_to_server: q,
        dgrams_to_client: r,
    }
}

fn tool(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// Classic little-endian pcap records (tcpdump's output on this host).
fn pcap_records(bytes: &[u8]) -> (Vec<u8>, Vec<Vec<u8>>) {
    assert_eq!(&bytes[..4], &[0xd4, 0xc3, 0xb2, 0xa1], "little-endian microsecond pcap expected");
    let (hdr, mut rest) = (bytes[..24].to_vec(), &bytes[24..]);
    let mut recs = Vec::new();
    while rest.len() >= 16 {
        let incl = u32::from_le_bytes(rest[8..12].try_into().unwrap()) as usize;
        recs.push(rest[..16 + incl].to_vec());
        rest = &rest[16 + incl..];
    }
    (hdr, recs)
}

/// (seq, payload len, dst port, syn) of an Ethernet/IPv4/TCP record.
fn tcp_of(rec: &[u8]) -> Option<(u32, usize, u16, bool)> {
    let p = etherparse::SlicedPacket::from_ethernet(&rec[16..]).ok()?;
    match p.transport? {
        etherparse::TransportSlice::Tcp(t) => {
            Some((t.sequence_number(), t.payload().len(), t.destination_port(), t.syn()))
        }
        _ => None,
    }
}

/// A TCP segment without payload and without SYN/FIN/RST.
fn pure_ack(rec: &[u8]) -> bool {
    let Ok(p) = etherparse::SlicedPacket::from_ethernet(&rec[16..]) else { return false };
    match p.transport {
        Some(etherparse::TransportSlice::Tcp(t)) => t.payload().is_empty() && !(t.syn() || t.fin() || t.rst()),
        _ => false,
    }
}

/// Write reordered / duplicated / lost variants of the Ethernet capture.
/// Returns the (stream offset, length) of the removed segment.
fn edit_variants(dir: &Path, redis_port: u16) -> (usize, usize) {
    let (hdr, recs) = pcap_records(&std::fs::read(dir.join("flow_eth.pcap")).unwrap());
    let write = |name: &str, recs: &[Vec<u8>]| {
        let mut out = hdr.clone();
        recs.iter().for_each(|r| out.extend_from_slice(r));
        std::fs::write(dir.join(name), out).unwrap();
    };
    // Client→server data segments of the big SET connection (the first one).
    let syn = recs.iter().find_map(|r| tcp_of(r).filter(|t| t.2 == redis_port && t.3)).expect("SYN").0;
    let data: Vec<usize> = (0..recs.len())
        .filter(|&i| matches!(tcp_of(&recs[i]), Some((_, n, p, _)) if p == redis_port && n > 0))
        .collect();
    assert!(data.len() >= 6, "expected the SET to span several segments, got {}", data.len());

    // Reordering is only plausible without the ACKs that acknowledged the
    // moved segment before it appears; drop pure ACKs as the eBPF capture does.
    let mut re: Vec<Vec<u8>> = recs.iter().filter(|r| !pure_ack(r)).cloned().collect();
    let moved: Vec<usize> =
        (0..re.len()).filter(|&i| matches!(tcp_of(&re[i]), Some((_, n, p, _)) if p == redis_port && n > 0)).collect();
    re.swap(moved[2], moved[4]);
    write("flow_eth_reordered.pcap", &re);

    let mut dup = Vec::new();
    for (i, r) in recs.iter().enumerate() {
        dup.push(r.clone());
        if data.contains(&i) {
            dup.push(r.clone());
        }
    }
    write("flow_eth_dup.pcap", &dup);

    let (seq, len, _, _) = tcp_of(&recs[data[3]]).unwrap();
    let off = seq.wrapping_sub(syn.wrapping_add(1)) as usize;
    let mut lost = recs.clone();
    lost.remove(data[3]);
    write("flow_eth_lost.pcap", &lost);
    (off, len)
}

#[test]
fn live_capture_variants_match_client_streams() {
    if !is_root() {
        eprintln!("SKIP live_capture_variants_match_client_streams: needs root (network namespaces, tcpdump)");
        return;
    }
    for t in ["tcpdump", "editcap", "mergecap", "redis-server", "ping"] {
        assert!(
            Command::new("sh").arg("-c").arg(format!("command -v {t}")).output().unwrap().status.success(),
            "{t} is missing: run .ci/setup.sh"
        );
    }
    let work = tempfile::tempdir().unwrap();
    // CNFLOW_KEEP_CAPTURES=1 leaves the recorded files for inspection.
    let dir = &if std::env::var_os("CNFLOW_KEEP_CAPTURES").is_some() { work.keep() } else { work.path().to_path_buf() };
    eprintln!("captures in {}", dir.display());
    // A loaded machine can make tcpdump drop packets; only a complete
    // recording can be compared byte for byte.
    let mut conns = Vec::new();
    for attempt in 1..=3 {
        let (c, dropped) = record(dir);
        conns = c;
        if dropped == 0 {
            break;
        }
        assert!(attempt < 3, "tcpdump kept dropping packets ({dropped} in attempt {attempt})");
        eprintln!("tcpdump dropped {dropped} packets; recording again");
    }

    let ed = |args: &[&str], from: &str, to: &str| {
        tool(Command::new("editcap").args(args).arg(dir.join(from)).arg(dir.join(to)))
    };
    ed(&["-F", "pcapng"], "flow_eth.pcap", "flow_eth.pcapng");
    ed(&["-F", "nsecpcap"], "flow_eth.pcap", "flow_eth_nsec.pcap");
    ed(&["-F", "pcap", "-C", "14", "-T", "rawip"], "flow_eth.pcap", "flow_rawip.pcap");
    ed(&["-F", "pcap", "-C", "14", "-T", "rawip4"], "flow_eth.pcap", "flow_rawip4.pcap");
    ed(&["-F", "pcap", "-s", "96"], "flow_eth.pcap", "flow_eth_trunc.pcap");
    ed(&["-F", "pcapng"], "flow_sll2.pcap", "flow_sll2.pcapng");
    tool(
        Command::new("mergecap")
            .args(["-F", "pcapng", "-w"])
            .arg(dir.join("flow_merged.pcapng"))
            .arg(dir.join("flow_eth.pcap"))
            .arg(dir.join("flow_sll2.pcap")),
    );
    let lost = edit_variants(dir, 6379);

    for v in variants(Some(lost)) {
        check_variant(dir, &v, &conns);
    }

    if std::env::var("CNFLOW_UPDATE_PCAPS").as_deref() == Ok("1") {
        let dest: PathBuf = harness::pcaps_dir();
        std::fs::create_dir_all(&dest).unwrap();
        for v in variants(Some(lost)) {
            std::fs::copy(dir.join(v.file), dest.join(v.file)).unwrap();
        }
        let exp = ExpectedFile { conns, lost: Some(lost) };
        std::fs::write(dest.join(EXPECTED), serde_json::to_string_pretty(&exp).unwrap() + "\n").unwrap();
        eprintln!("updated {}", dest.display());
    }
}

/// Run the traffic once while three tcpdumps record it into `dir`. Returns
/// what the client sockets saw and how many packets tcpdump lost.
fn record(dir: &Path) -> (Vec<ExpectedConn>, u64) {
    let ns = NetnsPair::new("flw", 61);
    let redis_addr = format!("{}:6379", ns.ip_b);
    let _redis = Proc(
        NetnsPair::cmd(&ns.b, "redis-server")
            .args(["--bind", &ns.ip_b, "--port", "6379", "--save", "", "--appendonly", "no"])
            .args(["--protected-mode", "no", "--dir"])
            .arg(dir)
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server"),
    );
    let ra = redis_addr.clone();
    let up = in_netns(&ns.a, move || {
        wait_for(Duration::from_secs(10), || {
            TcpStream::connect_timeout(&ra.parse().unwrap(), Duration::from_millis(200)).is_ok()
        })
    });
    assert!(up, "redis-server did not start");
    // UDP echo in the server namespace, stopped by a flag.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (stop2, nsb, ipb) = (stop.clone(), ns.b.clone(), ns.ip_b.clone());
    let echo = std::thread::spawn(move || {
        let fd = std::fs::File::open(format!("/run/netns/{nsb}")).unwrap();
        nix::sched::setns(fd, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        let s = UdpSocket::bind(format!("{ipb}:9999")).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
        let mut buf = [0u8; 2048];
        while !stop2.load(std::sync::atomic::Ordering::Relaxed) {
            if let Ok((n, from)) = s.recv_from(&mut buf) {
                let reply: Vec<u8> = buf[..n].iter().map(u8::to_ascii_uppercase).collect();
                s.send_to(&reply, from).unwrap();
            }
        }
    });

    // IPv6 neighbour discovery and MLD chatter of the fresh interfaces is not test traffic.
    let filter = "not icmp6 and not ip6 multicast";
    let eth = Tcpdump::start(&ns.a, "vcnfa", &[], &dir.join("flow_eth.pcap"), filter);
    let sll = Tcpdump::start(&ns.a, "any", &["-y", "LINUX_SLL"], &dir.join("flow_sll.pcap"), filter);
    let sll2 = Tcpdump::start(&ns.a, "any", &["-y", "LINUX_SLL2"], &dir.join("flow_sll2.pcap"), filter);

    let mut conns = Vec::new();
    let value = (0..VALUE_LEN).map(|i| b"abcdefghijklmnopqrstuvwxyz0123456789"[i % 36]).collect::<Vec<u8>>();
    let (ra, v) = (redis_addr.clone(), value.clone());
    conns.push(in_netns(&ns.a, move || {
        let get_reply = format!("${}\r\n", v.len()).len() + v.len() + 2;
        redis_session(&ra, &[resp(&[b"SET", b"k", &v]), resp(&[b"GET", b"k"]), resp(&[b"PING"])], &[5, get_reply, 7])
    }));
    let ra = redis_addr.clone();
    conns.push(in_netns(&ns.a, move || redis_session(&ra, &[resp(&[b"INCR", b"n"])], &[4])));
    let (ua, ub) = (ns.ip_a.clone(), format!("{}:9999", ns.ip_b));
    conns.push(in_netns(&ns.a, move || udp_exchange(ua, ub)));
    conns.push(in_netns(&ns.a, ipv6_echo));
    tool(NetnsPair::cmd(&ns.a, "ping").args(["-c", "2", "-i", "0.2", "-W", "2", &ns.ip_b]));
    conns.push(ExpectedConn {
        transport: "icmp".into(),
        client: format!("{}:0", ns.ip_a),
        server: format!("{}:0", ns.ip_b),
        via: "veth".into(),
        to_server_hex: String::new(),
        to_client_hex: String::new(),
        dgrams_to_server: vec![String::new(); 2],
        dgrams_to_client: vec![String::new(); 2],
    });
    std::thread::sleep(Duration::from_millis(300));
    let dropped = eth.stop() + sll.stop() + sll2.stop();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    echo.join().unwrap();
    (conns, dropped)
}
