//! TLS plaintext through uprobes on OpenSSL, live: nginx (`ssl`) with curl
//! and Python's http.client, and redis-server `--tls-port` with redis-cli,
//! all linking the system libssl.so.3, in a namespace pair. The agent runs
//! with the TC capture on the server-side veth (so it also sees the
//! ciphertext) and starts before the servers (so the servers are processes
//! started after the agent).
//!
//! Oracles are the clients' own lists of requests, the TLS version Python
//! reports for its connection and the number of TCP connections the
//! clients opened; never cnflow's output.
#[path = "../harness/k8s.rs"]
mod fake;
#[path = "../harness/mod.rs"]
mod harness;
#[path = "../harness/netns.rs"]
mod netns;

use netns::{read, wait_until, ChildGuard, NetnsPair, Scratch};
use serde_json::Value;
use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::Duration;

const NGINX_PORT: u16 = 8443;
const H2_PORT: u16 = 8444;
const REDIS_PORT: u16 = 6390;

struct Span {
    kind: i64,
    name: String,
    attrs: BTreeMap<String, String>,
}

fn attr_value(v: &Value) -> String {
    for k in ["stringValue", "intValue", "boolValue"] {
        if let Some(x) = v.get(k) {
            return x.as_str().map(str::to_string).unwrap_or_else(|| x.to_string());
        }
    }
    v.to_string()
}

/// Spans of the agent's OTLP/JSON stdout whose server is `ip:port`.
fn spans_to(out: &str, ip: &str, port: u16) -> Vec<Span> {
    let mut spans = Vec::new();
    for line in out.lines().filter(|l| l.starts_with("{\"resourceSpans\"")) {
        // While the agent runs, the last line may be half written.
        let Ok(v) = serde_json::from_str::<Value>(line) else { continue };
        for rs in v["resourceSpans"].as_array().into_iter().flatten() {
            for ss in rs["scopeSpans"].as_array().into_iter().flatten() {
                for s in ss["spans"].as_array().into_iter().flatten() {
                    let attrs: BTreeMap<String, String> = s["attributes"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|a| (a["key"].as_str().unwrap().to_string(), attr_value(&a["value"])))
                        .collect();
                    let to_server = attrs.get("network.peer.address").map(String::as_str) == Some(ip)
                        && attrs.get("network.peer.port").map(String::as_str) == Some(&port.to_string())
                        || attrs.get("network.local.address").map(String::as_str) == Some(ip)
                            && attrs.get("network.local.port").map(String::as_str) == Some(&port.to_string());
                    if to_server {
                        spans.push(Span {
                            kind: s["kind"].as_i64().unwrap_or(0),
                            name: s["name"].as_str().unwrap_or("").to_string(),
                            attrs,
                        });
                    }
                }
            }
        }
    }
    spans
}

/// `process.executable.name` as semconv defines it (the base name of the
/// executable file, symlinks resolved: Debian's redis-server is a link to
/// redis-check-rdb), from the program's path, independently of cnflow.
fn exe_name(program: &str) -> String {
    if program == "python3" {
        // Behind a version manager's shim: Python names its own executable.
        let py = "import os, sys; print(os.path.basename(os.path.realpath(sys.executable)))";
        let out = std::process::Command::new("python3").args(["-c", py]).output().unwrap();
        return String::from_utf8(out.stdout).unwrap().trim().to_string();
    }
    let out = std::process::Command::new("which").arg(program).output().unwrap();
    let path = String::from_utf8(out.stdout).unwrap();
    let real = std::fs::canonicalize(path.trim()).unwrap();
    real.file_name().unwrap().to_string_lossy().into_owned()
}

const SERVER: i64 = 2;
const CLIENT: i64 = 3;

fn spawn(ns: &str, args: &[&str], log: std::path::PathBuf, what: &str) -> ChildGuard {
    let f = std::fs::File::create(log).unwrap();
    let c = NetnsPair::cmd(ns, args[0])
        .args(&args[1..])
        .stdin(Stdio::null())
        .stdout(f.try_clone().unwrap())
        .stderr(f)
        .spawn()
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    ChildGuard::new(c, what)
}

fn wait_tcp(ns: &str, addr: &str, port: u16) -> bool {
    let target = format!("exec 3<>/dev/tcp/{addr}/{port}");
    wait_until(Duration::from_secs(15), || {
        NetnsPair::cmd(ns, "bash")
            .args(["-c", &target])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    })
}

#[test]
fn https_and_redis_tls_plaintext_is_decoded_and_ciphertext_is_not() {
    for bin in ["nginx", "curl", "redis-server", "redis-cli", "openssl"] {
        assert!(
            std::process::Command::new("which").arg(bin).stdout(Stdio::null()).status().unwrap().success(),
            "{bin} missing: run .ci/setup.sh"
        );
    }
    let pair = NetnsPair::new("tls");
    let dir = Scratch::new("tls-uprobes");
    let (ns_a, ns_b, ip) = (pair.ns_a.clone(), pair.ns_b.clone(), pair.ip_a.clone());
    let (cert, key) = make_cert(&dir);

    // The agent first: nginx and redis are processes started after it.
    let mut agent_cmd = NetnsPair::cmd(&ns_a, harness::cnflow_bin());
    agent_cmd
        .args(["run", "--format", "otlp-json"])
        .env("CNFLOW_INTERFACES", &pair.veth_a)
        .env("CNFLOW_SNAPLEN", "4096")
        .env("CNFLOW_TLS", "true")
        .env("CNFLOW_METRIC_EXPORT_INTERVAL_SECS", "3600")
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(dir.path("agent.out")).unwrap())
        .stderr(std::fs::File::create(dir.path("agent.err")).unwrap());
    let mut agent = ChildGuard::new(agent_cmd.spawn().unwrap(), "cnflow run");
    let err = dir.path("agent.err");
    assert!(
        wait_until(Duration::from_secs(60), || read(&err).contains("capture attached")
            && read(&err).contains("TLS plaintext capture loaded")),
        "agent did not start TLS capture: {}",
        read(&err)
    );
    // No process uses TLS yet: the socket tracepoints wait. The servers'
    // and clients' SSL_new below bring them in, a handshake before the
    // first request needs them; every request is checked below.
    let hooks_line = |l: &str| l.contains("socket tracepoints attached");
    assert!(read(&err).contains("socket_hooks=on_first_use"), "{}", read(&err));
    std::thread::sleep(Duration::from_millis(200));
    assert!(!read(&err).lines().any(hooks_line), "attached before any TLS use: {}", read(&err));

    let _nginx = start_nginx(
        &ns_a,
        &dir,
        &cert,
        &key,
        &format!("listen {ip}:{NGINX_PORT} ssl; listen {ip}:{H2_PORT} ssl http2;"),
    );
    let port = REDIS_PORT.to_string();
    let _redis = spawn(
        &ns_a,
        &[
            "redis-server",
            "--port",
            "0",
            "--tls-port",
            &port,
            "--bind",
            &ip,
            "--tls-cert-file",
            &cert.to_string_lossy(),
            "--tls-key-file",
            &key.to_string_lossy(),
            "--tls-ca-cert-file",
            &cert.to_string_lossy(),
            "--tls-auth-clients",
            "no",
            // Clients come from the other namespace, not loopback.
            "--protected-mode",
            "no",
            "--save",
            "",
            "--appendonly",
            "no",
        ],
        dir.path("redis.log"),
        "redis-server",
    );
    assert!(wait_tcp(&ns_b, &ip, NGINX_PORT), "nginx did not start: {}", read(&dir.path("nginx.err")));
    assert!(wait_tcp(&ns_b, &ip, REDIS_PORT), "redis did not start: {}", read(&dir.path("redis.log")));
    // The libssl they map is attached (at start, or by the rescan). Its own
    // line: another "uprobes attached" line (an executable that links OpenSSL
    // statically, e.g. the `cargo` running this test) can come first, and
    // curl's first connection then went out before libssl had its probes.
    assert!(
        wait_until(Duration::from_secs(10), || read(&err)
            .lines()
            .any(|l| l.contains("uprobes attached") && l.contains("kind=libssl"))),
        "no libssl attached: {}",
        read(&err)
    );
    // Debian 12's OpenSSL 3.0 starts SSL_read/SSL_write with `sub $0x18,%rsp`
    // (single-stepped under a probe), and their _ex wrappers call the
    // internal functions, which start with a push (emulated): the default
    // placement probes those, and SSL_read/SSL_write (which call them too)
    // get no probe of their own. Every span below comes through them.
    let attached =
        read(&err).lines().find(|l| l.contains("uprobes attached") && l.contains("kind=libssl")).unwrap().to_string();
    let sites = attached.split("sites=").nth(1).and_then(|s| s.split_whitespace().next()).unwrap_or("");
    assert!(
        sites.split(',').count() == 2 && sites.contains("SSL_write_ex→0x") && sites.contains("SSL_read_ex→0x"),
        "{attached}"
    );

    // Quiet for longer than the readers' idle threshold (1 s without a
    // record): they stop polling, and curl's exec and first SSL calls must
    // wake them (cnflow.tls.reader_wakeups below), losing nothing.
    std::thread::sleep(Duration::from_millis(1500));

    // curl: one connection with three requests (keep-alive), one with a 404.
    let base = format!("https://{ip}:{NGINX_PORT}");
    let curl_paths = ["/a", "/b", "/a"];
    let urls: Vec<String> = curl_paths.iter().map(|p| format!("{base}{p}")).collect();
    let mut args = vec!["curl", "-sk", "--http1.1", "-o", "/dev/null"];
    for u in &urls {
        args.push(u);
    }
    // `-o` applies to the first URL only; the rest go to stdout (discarded).
    netns::NetnsPair::exec(&ns_b, &args, Duration::from_secs(20));
    let status = netns::NetnsPair::exec(
        &ns_b,
        &["curl", "-sk", "--http1.1", "-o", "/dev/null", "-w", "%{http_code}", &format!("{base}/missing")],
        Duration::from_secs(20),
    );
    assert_eq!(status.trim(), "404");
    assert!(
        read(&err).lines().any(|l| hooks_line(l) && l.contains("reason=SSL_new")),
        "no SSL_new attached the socket tracepoints: {}",
        read(&err)
    );

    // Python's http.client over CPython's _ssl: two requests on one connection.
    let py = format!(
        "import http.client, ssl\n\
         ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE\n\
         c = http.client.HTTPSConnection('{ip}', {NGINX_PORT}, context=ctx)\n\
         for p in ['/a', '/py']:\n    c.request('GET', p); r = c.getresponse(); r.read()\n\
         print(c.sock.version())\n\
         c.close()\n"
    );
    let py_version = netns::NetnsPair::exec(&ns_b, &["python3", "-c", &py], Duration::from_secs(20));
    let tls_version = py_version.trim().strip_prefix("TLSv").expect("python reports TLSv1.x").to_string();

    // HTTP/2 (ALPN h2): two requests as streams of one connection.
    let h2_paths = ["/a", "/h2missing"];
    let h2_urls: Vec<String> = h2_paths.iter().map(|p| format!("https://{ip}:{H2_PORT}{p}")).collect();
    let mut args = vec!["curl", "-sk", "--http2", "-o", "/dev/null", "-o", "/dev/null"];
    args.extend(h2_urls.iter().map(String::as_str));
    netns::NetnsPair::exec(&ns_b, &args, Duration::from_secs(20));

    // A client killed (SIGKILL) with its connection open, after one exchange.
    let killed_py = format!(
        "import http.client, ssl, sys, time\n\
         ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE\n\
         c = http.client.HTTPSConnection('{ip}', {NGINX_PORT}, context=ctx)\n\
         c.request('GET', '/killed'); c.getresponse().read()\n\
         print('ready', flush=True); time.sleep(60)\n"
    );
    let mut killed = spawn(&ns_b, &["python3", "-c", &killed_py], dir.path("killed.log"), "python (killed)");
    assert!(wait_until(Duration::from_secs(20), || read(&dir.path("killed.log")).contains("ready")));
    killed.signal(libc::SIGKILL);
    killed.wait_timeout(Duration::from_secs(5)).expect("killed client reaped");
    // The agent keeps decoding after it.
    let status = netns::NetnsPair::exec(
        &ns_b,
        &["curl", "-sk", "--http1.1", "-o", "/dev/null", "-w", "%{http_code}", &format!("{base}/after-kill")],
        Duration::from_secs(20),
    );
    assert_eq!(status.trim(), "404");

    // redis-cli: one command per connection.
    let redis_cmds = [vec!["SET", "tls:k", "v"], vec!["GET", "tls:k"]];
    for c in &redis_cmds {
        let mut a = vec!["redis-cli", "--tls", "--insecure", "-h", ip.as_str(), "-p", port.as_str()];
        a.extend(c.iter().copied());
        netns::NetnsPair::exec(&ns_b, &a, Duration::from_secs(20));
    }
    // curl ×2, python, python (killed), curl after the kill, h2 curl, redis-cli ×2.
    let tcp_connections = 2 + 1 + 1 + 1 + 1 + redis_cmds.len() as u64;

    let expected_http = curl_paths.len() + 1 + 2 + 2;
    let out = dir.path("agent.out");
    let settled = wait_until(Duration::from_secs(15), || {
        spans_to(&read(&out), &ip, NGINX_PORT).len() >= 2 * expected_http
            && spans_to(&read(&out), &ip, REDIS_PORT).len() >= 2 * redis_cmds.len()
            && spans_to(&read(&out), &ip, H2_PORT).len() >= 2 * h2_paths.len()
    });
    std::thread::sleep(Duration::from_millis(500));
    agent.signal(libc::SIGTERM);
    agent.wait_timeout(Duration::from_secs(20)).expect("agent did not stop");
    let out = read(&out);
    let log = read(&err);
    let show = |port: u16| -> Vec<String> {
        spans_to(&out, &ip, port)
            .iter()
            .map(|s| format!("kind={} {} {:?}", s.kind, s.name, s.attrs.get("network.peer.port")))
            .collect()
    };
    assert!(settled, "spans missing: {:#?} {:#?}; agent log:\n{log}", show(NGINX_PORT), show(REDIS_PORT));

    // HTTP: one CLIENT span (curl / python) and one SERVER span (nginx) per request.
    let http = spans_to(&out, &ip, NGINX_PORT);
    let mut client_names: Vec<String> =
        http.iter().filter(|s| s.kind == CLIENT).map(|s| s.attrs["url.path"].clone()).collect();
    let mut server_names: Vec<String> =
        http.iter().filter(|s| s.kind == SERVER).map(|s| s.attrs["url.path"].clone()).collect();
    let mut want: Vec<String> = curl_paths
        .iter()
        .chain(["/missing", "/a", "/py", "/killed", "/after-kill"].iter())
        .map(|s| s.to_string())
        .collect();
    want.sort();
    client_names.sort();
    server_names.sort();
    assert_eq!(client_names, want, "CLIENT spans");
    assert_eq!(server_names, want, "SERVER spans");
    assert_eq!(http.len(), 2 * expected_http, "no other span to the nginx port (none from the ciphertext)");
    for s in &http {
        assert_eq!(s.attrs.get("url.scheme").map(String::as_str), Some("https"), "{}", s.name);
        assert_eq!(s.attrs.get("tls.protocol.name").map(String::as_str), Some("tls"));
        assert_eq!(s.attrs.get("tls.protocol.version"), Some(&tls_version), "version as Python saw it");
        assert_eq!(s.attrs.get("network.transport").map(String::as_str), Some("tcp"));
        assert_eq!(s.attrs.get("server.port").map(String::as_str), Some("8443"));
        // The traced process: nginx serves, curl or Python asks.
        let exe = s.attrs.get("process.executable.name").map(String::as_str).unwrap_or("");
        if s.kind == SERVER {
            assert_eq!(exe, exe_name("nginx"), "{}", s.name);
        } else {
            assert!(exe == exe_name("curl") || exe == exe_name("python3"), "{exe} for {}", s.name);
        }
        assert!(s.attrs.get("process.pid").is_some_and(|p| p.parse::<u32>().is_ok_and(|p| p > 1)));
    }
    let status_of = |p: &str| -> Vec<String> {
        http.iter().filter(|s| s.attrs["url.path"] == p).map(|s| s.attrs["http.response.status_code"].clone()).collect()
    };
    assert_eq!(status_of("/missing"), vec!["404", "404"]);
    assert!(status_of("/b").iter().all(|c| c == "200"));
    let sizes: Vec<&String> = http
        .iter()
        .filter(|s| s.attrs["url.path"] == "/b")
        .filter_map(|s| s.attrs.get("http.response.body.size"))
        .collect();
    assert_eq!(sizes, vec!["5000", "5000"], "Content-Length of /b as nginx sent it");

    // HTTP/2 through ALPN h2: the preface in the plaintext selects the HTTP/2 decoder.
    let h2 = spans_to(&out, &ip, H2_PORT);
    let mut h2_seen: Vec<(i64, String, String)> =
        h2.iter().map(|s| (s.kind, s.attrs["url.path"].clone(), s.attrs["network.protocol.version"].clone())).collect();
    h2_seen.sort();
    let mut h2_want: Vec<(i64, String, String)> = h2_paths
        .iter()
        .flat_map(|p| [(SERVER, p.to_string(), "2".into()), (CLIENT, p.to_string(), "2".into())])
        .collect();
    h2_want.sort();
    assert_eq!(h2_seen, h2_want);
    assert!(h2.iter().all(|s| s.attrs.get("url.scheme").map(String::as_str) == Some("https")));

    // Redis: the commands redis-cli sent, once as CLIENT and once as SERVER.
    let redis = spawn_summary(&spans_to(&out, &ip, REDIS_PORT));
    let want_redis: Vec<String> = redis_cmds
        .iter()
        .flat_map(|c| [format!("client {}", c[0]), format!("server {}", c[0])])
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    assert_eq!(redis, want_redis);

    // The ciphertext of every connection reached the TC capture and was
    // recognised as TLS, not decoded.
    assert_eq!(harness::final_counter(&log, "cnflow.protocol.tls_ciphertext_flows"), tcp_connections, "{log}");
    assert!(harness::final_counter(&log, "cnflow.tls.calls{reason=emitted}") > 0, "{log}");
    // nginx writes the head and /b's 5000-byte body in one SSL_write: copied
    // only up to CNFLOW_HTTP_RESPONSE_SNAPLEN, and still 5000 in the spans above.
    assert!(harness::final_counter(&log, "cnflow.tls.calls{reason=http_body_cut}") >= 2, "{log}");
    assert_eq!(harness::final_counter(&log, "cnflow.tls.calls{reason=truncated}"), 0, "{log}");
    assert!(harness::final_counter(&log, "cnflow.tls.reader_wakeups{reader=data}") >= 1, "{log}");
    assert!(harness::final_counter(&log, "cnflow.tls.reader_wakeups{reader=process_events}") >= 1, "{log}");
}

/// "client SET" / "server GET" per span (sorted, deduplicated) plus a check that
/// every span carries the TLS marker; panics on duplicates (one span per side and command).
fn spawn_summary(spans: &[Span]) -> Vec<String> {
    let mut v: Vec<String> = spans
        .iter()
        .map(|s| {
            assert_eq!(s.attrs.get("tls.protocol.name").map(String::as_str), Some("tls"), "{}", s.name);
            assert_eq!(s.attrs.get("db.system.name").map(String::as_str), Some("redis"));
            let side = if s.kind == CLIENT { "client" } else { "server" };
            let exe = exe_name(if s.kind == CLIENT { "redis-cli" } else { "redis-server" });
            assert_eq!(s.attrs.get("process.executable.name"), Some(&exe), "{}", s.name);
            format!("{side} {}", s.attrs.get("db.operation.name").cloned().unwrap_or_default())
        })
        .collect();
    v.sort();
    let n = v.len();
    v.dedup();
    assert_eq!(v.len(), n, "one span per command and side: {v:?}");
    v
}

/// A cgroup directory tree made for the test (cgroup v2), removed on drop
/// after its processes are gone.
struct CgroupDirs(Vec<std::path::PathBuf>);

impl CgroupDirs {
    /// Where cgroup v2 is mounted: `/sys/fs/cgroup` (unified hosts) or
    /// `/sys/fs/cgroup/unified` (hybrid, like these test machines).
    fn v2_root() -> Option<std::path::PathBuf> {
        let mounts = std::fs::read_to_string("/proc/self/mounts").ok()?;
        mounts.lines().find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() > 2 && f[2] == "cgroup2").then(|| std::path::PathBuf::from(f[1]))
        })
    }

    /// Creates `root/rel` (each level) and returns its full path.
    fn make(&mut self, root: &std::path::Path, rel: &str) -> std::path::PathBuf {
        let mut p = root.to_path_buf();
        for seg in rel.split('/') {
            p.push(seg);
            if !p.exists() {
                std::fs::create_dir(&p).unwrap_or_else(|e| panic!("mkdir {}: {e}", p.display()));
                self.0.push(p.clone());
            }
        }
        p
    }
}

impl Drop for CgroupDirs {
    fn drop(&mut self) {
        for d in self.0.iter().rev() {
            // A cgroup goes once its last process has exited.
            for _ in 0..50 {
                if std::fs::remove_dir(d).is_ok() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

/// A `sleep` moved into cgroup `dir`.
fn sleeper_in(dir: &std::path::Path) -> ChildGuard {
    let c = std::process::Command::new("sleep").arg("60").spawn().unwrap();
    std::fs::write(dir.join("cgroup.procs"), c.id().to_string()).unwrap();
    ChildGuard::new(c, "sleep in a pod cgroup")
}

/// pid → cgroup → container → pod, with real cgroups shaped as containerd
/// (systemd driver) makes them and the scripted API server of the k8s tests:
/// a process of a two-container pod gets that container's resource, a process
/// of a host-network pod whose container has not reported its id yet gets the
/// pod (while its address gives the node), a host process gets nothing.
#[tokio::test]
async fn processes_map_to_their_container_and_pod_through_cgroups() {
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: needs root (cgroups)");
        return;
    }
    let Some(root) = CgroupDirs::v2_root() else {
        eprintln!("skipped: no cgroup v2 mounted");
        return;
    };
    use cnflow::k8s::{self, K8sConfig};
    let uid_web = "7c0e2b1a-3d4f-4a5b-8c6d-9e0f1a2b3c4d";
    let uid_hn = "1a2b3c4d-5e6f-4a7b-8c9d-0e1f2a3b4c5d";
    // Ids as containerd makes them (64 hex digits), distinct per run.
    let tag = format!("{:08x}", std::process::id());
    let id_app = format!("{tag}{}", "a".repeat(56));
    let id_side = format!("{tag}{}", "b".repeat(56));
    let id_hn = format!("{tag}{}", "c".repeat(56));

    let mut dirs = CgroupDirs(vec![]);
    let slice = format!("cnflow-test-{tag}.slice");
    let web_dir = dirs.make(
        &root,
        &format!(
            "{slice}/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice/cri-containerd-{id_app}.scope",
            uid_web.replace('-', "_")
        ),
    );
    let hn_dir = dirs.make(
        &root,
        &format!("{slice}/kubepods.slice/kubepods-pod{}.slice/cri-containerd-{id_hn}.scope", uid_hn.replace('-', "_")),
    );
    let host_dir = dirs.make(&root, &format!("{slice}/system.slice/nginx.service"));
    let web = sleeper_in(&web_dir);
    let hn = sleeper_in(&hn_dir);
    let host = sleeper_in(&host_dir);

    let (client, api) = fake::FakeApi::start();
    api.apply(fake::node("node-1", "192.0.2.10"));
    let mut w = fake::pod(fake::PodSpec {
        ns: "shop",
        name: "web-1",
        uid: uid_web,
        ips: &["10.200.160.2"],
        labels: &[("app.kubernetes.io/name", "web")],
        ..Default::default()
    });
    w["spec"]["containers"] = serde_json::json!([{"name": "app", "image": "x"}, {"name": "sidecar", "image": "y"}]);
    w["status"]["containerStatuses"] = serde_json::json!([
        {"name": "app", "containerID": format!("containerd://{id_app}"), "image": "x", "imageID": "", "ready": true, "restartCount": 0},
        {"name": "sidecar", "containerID": format!("containerd://{id_side}"), "image": "y", "imageID": "", "ready": true, "restartCount": 0},
    ]);
    api.apply(w);
    api.apply(fake::pod(fake::PodSpec {
        ns: "kube-system",
        name: "proxy-1",
        uid: uid_hn,
        ips: &["192.0.2.10"],
        host_network: true,
        labels: &[("app", "proxy")],
        ..Default::default()
    }));
    let cfg = K8sConfig::from_vars([
        ("CNFLOW_NODE_NAME".to_string(), "node-1".to_string()),
        ("CNFLOW_K8S_SERVICES".into(), "false".into()),
        ("CNFLOW_K8S_PROC_ROOT".into(), "/nonexistent".into()),
        ("CNFLOW_K8S_NETNS_DIRS".into(), "".into()),
    ])
    .unwrap();
    let h = k8s::start_with_client(&cfg, client, false, None).await.unwrap();
    assert!(h.wait_synced(Duration::from_secs(20)).await);
    let e = h.enricher.clone();

    // What the TLS source does when a process's connection first appears.
    let proc_root = std::path::Path::new("/proc");
    let info = cnflow::process::observe(proc_root, web.child.id()).unwrap();
    assert_eq!(info.executable.as_deref(), Some("sleep"));
    assert_eq!(info.cgroup.container_id.as_deref(), Some(id_app.as_str()));
    assert_eq!(info.cgroup.pod_uid.as_deref(), Some(uid_web));
    let id = e.process_identity(web.child.id()).expect("web's process resolves");
    assert_eq!(id.get("k8s.pod.name"), Some("web-1"));
    assert_eq!(id.get("k8s.namespace.name"), Some("shop"));
    assert_eq!(id.get("k8s.container.name"), Some("app"), "the container the process runs in");
    assert_eq!(id.get("service.name"), Some("web"));
    assert_eq!(id.get("service.instance.id"), Some("shop.web-1.app"));
    // The address gives the pod without a container (two containers).
    assert_eq!(e.identity("10.200.160.2".parse().unwrap()).unwrap().get("k8s.container.name"), None);

    cnflow::process::observe(proc_root, hn.child.id()).unwrap();
    let id = e.process_identity(hn.child.id()).expect("host-network pod's process resolves");
    assert_eq!(id.get("k8s.pod.name"), Some("proxy-1"));
    assert_eq!(id.get("service.name"), Some("proxy"));
    assert_eq!(e.identity("192.0.2.10".parse().unwrap()).unwrap().get("k8s.pod.name"), None, "the node's address");

    cnflow::process::observe(proc_root, host.child.id()).unwrap();
    assert!(e.process_identity(host.child.id()).is_none(), "a host service is no pod");
    // A process nobody observed: unknown.
    assert!(e.process_identity(u32::MAX - 1).is_none());

    // The process exits: what was observed stays (the span may come later).
    let pid = web.child.id();
    drop(web);
    assert_eq!(e.process_identity(pid).unwrap().get("k8s.container.name"), Some("app"));
    h.shutdown().await;
    drop((hn, host));
}

/// nginx serving `www/a` ("hello\n") and `www/b` (5000 bytes) of `dir`
/// with TLS on the `listen` directives given, in namespace `ns`.
fn start_nginx(ns: &str, dir: &Scratch, cert: &std::path::Path, key: &std::path::Path, listen: &str) -> ChildGuard {
    let www = dir.path("www");
    std::fs::create_dir_all(&www).unwrap();
    std::fs::write(www.join("a"), "hello\n").unwrap();
    std::fs::write(www.join("b"), "x".repeat(5000)).unwrap();
    let d = dir.0.display();
    let conf = format!(
        "daemon off; master_process on; worker_processes 1; user root; pid {d}/nginx.pid; error_log {d}/nginx.err;\n\
         events {{}}\n\
         http {{ access_log off; client_body_temp_path {d}; proxy_temp_path {d}; fastcgi_temp_path {d};\n\
           uwsgi_temp_path {d}; scgi_temp_path {d};\n\
           server {{ {listen}\n\
             ssl_certificate {c}; ssl_certificate_key {k}; root {w}; }} }}\n",
        c = cert.display(),
        k = key.display(),
        w = www.display()
    );
    std::fs::write(dir.path("nginx.conf"), conf).unwrap();
    spawn(ns, &["nginx", "-c", &dir.path("nginx.conf").to_string_lossy()], dir.path("nginx.log"), "nginx")
}

/// A self-signed certificate and key in `dir`.
fn make_cert(dir: &Scratch) -> (std::path::PathBuf, std::path::PathBuf) {
    let (cert, key) = (dir.path("cert.pem"), dir.path("key.pem"));
    let st = std::process::Command::new("openssl")
        .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost", "-days", "2", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success(), "openssl req");
    (cert, key)
}

/// The agent in `ns_a` capturing `veth_a` with TLS on, started and loaded.
fn start_agent(pair: &NetnsPair, dir: &Scratch, env: &[(&str, &str)]) -> ChildGuard {
    start_agent_as(pair, dir, "run", env)
}

/// The same with `cnflow SUBCOMMAND` (`run` or `agent`).
fn start_agent_as(pair: &NetnsPair, dir: &Scratch, subcommand: &str, env: &[(&str, &str)]) -> ChildGuard {
    let mut c = NetnsPair::cmd(&pair.ns_a, harness::cnflow_bin());
    c.args([subcommand, "--format", "otlp-json"])
        .env("CNFLOW_INTERFACES", &pair.veth_a)
        .env("CNFLOW_SNAPLEN", "4096")
        .env("CNFLOW_TLS", "true")
        .env("CNFLOW_METRIC_EXPORT_INTERVAL_SECS", "3600")
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(dir.path("agent.out")).unwrap())
        .stderr(std::fs::File::create(dir.path("agent.err")).unwrap());
    let agent = ChildGuard::new(c.spawn().unwrap(), &format!("cnflow {subcommand}"));
    let err = dir.path("agent.err");
    assert!(
        wait_until(Duration::from_secs(60), || read(&err).contains("capture attached")
            && read(&err).contains("TLS plaintext capture loaded")),
        "agent did not start TLS capture: {}",
        read(&err)
    );
    agent
}

/// A procfs mounted at a path of its own (as a DaemonSet mounts the host's
/// /proc at e.g. /host/proc), unmounted on drop.
struct ProcMount(std::path::PathBuf);

impl ProcMount {
    fn new(path: std::path::PathBuf) -> Self {
        std::fs::create_dir_all(&path).unwrap();
        let st = std::process::Command::new("mount").args(["-t", "proc", "proc"]).arg(&path).status().unwrap();
        assert!(st.success(), "mount -t proc {}", path.display());
        ProcMount(path)
    }
}

impl Drop for ProcMount {
    fn drop(&mut self) {
        let st = std::process::Command::new("umount").arg("-l").arg(&self.0).status();
        if st.is_ok_and(|s| s.success()) {
            // Empty once unmounted; never removed recursively.
            let _ = std::fs::remove_dir(&self.0);
        }
    }
}

/// Stops the agent (SIGTERM) and returns (stdout, log).
fn stop_agent(mut agent: ChildGuard, dir: &Scratch) -> (String, String) {
    agent.signal(libc::SIGTERM);
    agent.wait_timeout(Duration::from_secs(20)).expect("agent did not stop");
    (read(&dir.path("agent.out")), read(&dir.path("agent.err")))
}

/// A libssl file no process mapped when the agent started (a copy: another
/// inode, as a container image's library is) is found through the exec of
/// the process that loads it, long before the slow rescan (30 s), and
/// detached soon after that process, its only user, exits.
#[test]
fn a_new_library_is_followed_from_exec_and_detached_after_its_last_user() {
    let pair = NetnsPair::new("tlsx");
    let dir = Scratch::new("tls-exec");
    let (cert, key) = make_cert(&dir);
    let agent = start_agent(&pair, &dir, &[]);
    let err = dir.path("agent.err");
    let libdir = dir.path("lib");
    std::fs::create_dir_all(&libdir).unwrap();
    let sys = String::from_utf8(
        std::process::Command::new("python3")
            .args(["-c", "import _ssl; print(_ssl.__file__)"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    // The libssl the Python _ssl module links (ldd names its path).
    let ldd = String::from_utf8(std::process::Command::new("ldd").arg(sys.trim()).output().unwrap().stdout).unwrap();
    let libssl = ldd
        .lines()
        .find_map(|l| l.trim().strip_prefix("libssl.so.3 => ").and_then(|r| r.split_whitespace().next()))
        .expect("_ssl links libssl.so.3")
        .to_string();
    std::fs::copy(&libssl, libdir.join("libssl.so.3")).unwrap();
    let copy = libdir.join("libssl.so.3");

    let port = "8445";
    let _server = spawn(
        &pair.ns_a,
        &[
            "openssl",
            "s_server",
            "-quiet",
            "-www",
            "-accept",
            &format!("{}:{port}", pair.ip_a),
            "-cert",
            &cert.to_string_lossy(),
            "-key",
            &key.to_string_lossy(),
        ],
        dir.path("s_server.log"),
        "openssl s_server",
    );
    assert!(wait_tcp(&pair.ns_b, &pair.ip_a, port.parse().unwrap()), "s_server: {}", read(&dir.path("s_server.log")));
    assert!(!read(&err).contains(&copy.display().to_string()), "the copy is unknown before its user runs");

    // Python loads the copy at `import ssl`, waits (the exec checks run), then
    // makes two requests (s_server -www answers one per connection).
    let py = format!(
        "import ssl, time, http.client\n\
         time.sleep(1.5)\n\
         ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE\n\
         for p in ['/x1', '/x2']:\n    c = http.client.HTTPSConnection('{ip}', {port}, context=ctx)\n    c.request('GET', p); c.getresponse().read(); c.close()\n\
         print(open('/proc/self/maps').read().count('{lib}') > 0)\n",
        ip = pair.ip_a,
        lib = libdir.display()
    );
    let started = std::time::Instant::now();
    let out = NetnsPair::cmd(&pair.ns_b, "env")
        .args([&format!("LD_LIBRARY_PATH={}", libdir.display()), "python3", "-c", &py])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "True", "python mapped the copy: {out:?}");
    // Log lines naming the copy (through the process's root: /proc/PID/root/...);
    // other agents' tests on the machine may attach and detach other files.
    let copy_path = format!("{}", copy.display());
    let about_copy = |what: &str| read(&err).lines().any(|l| l.contains(what) && l.contains(&copy_path));
    assert!(about_copy("uprobes attached"), "copy attached: {}", read(&err));
    assert!(started.elapsed() < Duration::from_secs(25), "well before the 30 s rescan");
    // Its only user is gone: detached (the confirm scan runs 1 s after the exit).
    assert!(wait_until(Duration::from_secs(10), || about_copy("detached")), "not detached: {}", read(&err));
    std::thread::sleep(Duration::from_millis(500));
    let (out, log) = stop_agent(agent, &dir);
    let spans = spans_to(&out, &pair.ip_a, port.parse().unwrap());
    let mut client: Vec<String> =
        spans.iter().filter(|s| s.kind == CLIENT).map(|s| s.attrs["url.path"].clone()).collect();
    client.sort();
    assert_eq!(client, vec!["/x1", "/x2"], "the client's plaintext through the copy; log:\n{log}");
    let names: Vec<Option<&String>> =
        spans.iter().filter(|s| s.kind == CLIENT).map(|s| s.attrs.get("process.executable.name")).collect();
    let py = exe_name("python3");
    assert_eq!(names, vec![Some(&py), Some(&py)], "the process, read while it lived");
    assert!(harness::final_counter(&log, "cnflow.tls.process_events{event=exec}") >= 2, "{log}");
    assert!(harness::final_counter(&log, "cnflow.tls.process_events{event=exit}") >= 1, "{log}");
    assert!(harness::final_counter(&log, "cnflow.tls.library_changes{change=detached}") >= 1, "{log}");
}

/// A connection made before the agent started never calls SSL_new again:
/// the next SSL call of a thread (the client's, nginx's worker's) announces
/// the node's TLS use, the socket tracepoints are attached then, and the
/// calls that ran before wait until a later call of their connection names
/// its socket. Every request after the start is decoded on both sides.
#[test]
fn a_connection_from_before_the_start_brings_the_socket_tracepoints_in() {
    let pair = NetnsPair::new("tlsb");
    let dir = Scratch::new("tls-before");
    let (cert, key) = make_cert(&dir);
    let ip = pair.ip_a.clone();
    let _nginx = start_nginx(&pair.ns_a, &dir, &cert, &key, &format!("listen {ip}:{NGINX_PORT} ssl;"));
    assert!(wait_tcp(&pair.ns_b, &ip, NGINX_PORT), "nginx did not start: {}", read(&dir.path("nginx.err")));
    let go = dir.path("go");
    let py = format!(
        "import http.client, ssl, os, time\n\
         ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE\n\
         c = http.client.HTTPSConnection('{ip}', {NGINX_PORT}, context=ctx)\n\
         c.request('GET', '/a'); c.getresponse().read()\n\
         print('connected', flush=True)\n\
         while not os.path.exists('{go}'): time.sleep(0.05)\n\
         for p in ['/after1', '/after2', '/after3']:\n    c.request('GET', p); c.getresponse().read()\n\
         print('done', flush=True)\n",
        go = go.display()
    );
    let _client = spawn(&pair.ns_b, &["python3", "-c", &py], dir.path("client.log"), "python client");
    assert!(wait_until(Duration::from_secs(20), || read(&dir.path("client.log")).contains("connected")));

    // The probes on each symbol's first byte (the placement before the
    // default one, and the fallback for code it does not recognise): the
    // same spans must come out.
    let agent = start_agent(&pair, &dir, &[("CNFLOW_TLS_PROBE_PLACEMENT", "entry")]);
    let err = dir.path("agent.err");
    // nginx and python map libssl: attached by the start-up scan.
    assert!(
        read(&err).lines().any(|l| l.contains("uprobes attached")
            && l.contains("kind=libssl")
            && l.contains("sites=SSL_write,SSL_write_ex,SSL_read,SSL_read_ex")),
        "{}",
        read(&err)
    );
    let hooks_line = |l: &str| l.contains("socket tracepoints attached");
    assert!(!read(&err).lines().any(hooks_line), "attached before any TLS use: {}", read(&err));
    std::fs::write(&go, "").unwrap();
    assert!(wait_until(Duration::from_secs(20), || read(&dir.path("client.log")).contains("done")));
    assert!(
        wait_until(Duration::from_secs(5), || read(&err)
            .lines()
            .any(|l| hooks_line(l) && l.contains("reason=first SSL call"))),
        "{}",
        read(&err)
    );
    std::thread::sleep(Duration::from_millis(500));
    let (out, log) = stop_agent(agent, &dir);
    let spans = spans_to(&out, &ip, NGINX_PORT);
    for kind in [CLIENT, SERVER] {
        let mut paths: Vec<String> =
            spans.iter().filter(|s| s.kind == kind).map(|s| s.attrs["url.path"].clone()).collect();
        paths.sort();
        // The exchange before the start is not seen; none of the three after is lost.
        assert_eq!(paths, vec!["/after1", "/after2", "/after3"], "kind {kind}; log:\n{log}");
    }
}

/// HTTP/2 through ALPN with another server and client: h2o (TLS) and nghttp,
/// several streams on one connection; exact spans per side.
#[test]
fn h2o_and_nghttp_http2_over_tls() {
    for bin in ["h2o", "nghttp"] {
        assert!(
            std::process::Command::new("which").arg(bin).stdout(Stdio::null()).status().unwrap().success(),
            "{bin} missing: run .ci/setup.sh"
        );
    }
    let pair = NetnsPair::new("tlsh");
    let dir = Scratch::new("tls-h2o");
    let (cert, key) = make_cert(&dir);
    let agent = start_agent(&pair, &dir, &[]);
    let www = dir.path("www");
    std::fs::create_dir_all(&www).unwrap();
    std::fs::write(www.join("a"), "hello\n").unwrap();
    std::fs::write(www.join("b"), "y".repeat(3000)).unwrap();
    // h2o started as root runs as nobody: everything it reads must be readable.
    for p in [dir.0.clone(), www.clone(), www.join("a"), www.join("b"), key.clone(), cert.clone()] {
        std::process::Command::new("chmod").args(["a+rX", p.to_str().unwrap()]).status().unwrap();
    }
    let port = 8446u16;
    let conf = format!(
        "listen:\n  host: {ip}\n  port: {port}\n  ssl:\n    certificate-file: {c}\n    key-file: {k}\n\
         error-log: {d}/h2o.err\n\
         hosts:\n  default:\n    paths:\n      /:\n        file.dir: {w}\n",
        ip = pair.ip_a,
        c = cert.display(),
        k = key.display(),
        d = dir.0.display(),
        w = www.display()
    );
    std::fs::write(dir.path("h2o.conf"), conf).unwrap();
    let _h2o = spawn(&pair.ns_a, &["h2o", "-c", &dir.path("h2o.conf").to_string_lossy()], dir.path("h2o.log"), "h2o");
    assert!(
        wait_tcp(&pair.ns_b, &pair.ip_a, port),
        "h2o: {} {}",
        read(&dir.path("h2o.log")),
        read(&dir.path("h2o.err"))
    );
    // One connection, three streams (nghttp fetches every URI over it); -n discards bodies.
    let paths = ["/a", "/b", "/nothing"];
    let urls: Vec<String> = paths.iter().map(|p| format!("https://{}:{port}{p}", pair.ip_a)).collect();
    let mut args = vec!["nghttp", "-n", "-s"];
    args.extend(urls.iter().map(String::as_str));
    let stats = NetnsPair::exec(&pair.ns_b, &args, Duration::from_secs(20));
    // nghttp's own statistics: one row per stream, `id ... code size path`.
    let mut codes: BTreeMap<String, String> = BTreeMap::new();
    for l in stats.lines() {
        let f: Vec<&str> = l.split_whitespace().collect();
        if f.len() == 7 && paths.contains(&f[6]) {
            codes.insert(f[6].to_string(), f[4].to_string());
        }
    }
    assert_eq!(codes.len(), paths.len(), "nghttp made every request: {stats}");
    let out = dir.path("agent.out");
    wait_until(Duration::from_secs(15), || spans_to(&read(&out), &pair.ip_a, port).len() >= 2 * paths.len());
    std::thread::sleep(Duration::from_millis(500));
    let (out, log) = stop_agent(agent, &dir);
    let spans = spans_to(&out, &pair.ip_a, port);
    let mut seen: Vec<(i64, String, String, String)> = spans
        .iter()
        .map(|s| {
            (
                s.kind,
                s.attrs.get("url.path").cloned().unwrap_or_default(),
                s.attrs.get("network.protocol.version").cloned().unwrap_or_default(),
                s.attrs.get("http.response.status_code").cloned().unwrap_or_default(),
            )
        })
        .collect();
    seen.sort();
    let mut want: Vec<(i64, String, String, String)> = paths
        .iter()
        .flat_map(|p| [SERVER, CLIENT].map(|k| (k, p.to_string(), "2".to_string(), codes[*p].clone())))
        .collect();
    want.sort();
    assert_eq!(seen, want, "one span per stream and side; log:\n{log}");
    for s in &spans {
        assert_eq!(s.attrs.get("url.scheme").map(String::as_str), Some("https"));
        let exe = s.attrs.get("process.executable.name").cloned().unwrap_or_default();
        assert_eq!(exe, exe_name(if s.kind == SERVER { "h2o" } else { "nghttp" }));
    }
    assert_eq!(harness::final_counter(&log, "cnflow.protocol.tls_ciphertext_flows"), 1, "one TCP connection: {log}");
}

/// PostgreSQL with `ssl=on` and psql `sslmode=require`: TLS starts after the
/// SSLRequest, so the plaintext stream begins with the StartupMessage and is
/// decoded from there (database name included); the ciphertext flow (the
/// SSLRequest answered `S`, then TLS records) gives no exchange. The oracle
/// is psql: its statements, and pg_stat_ssl's view of its own connection.
#[test]
fn postgresql_ssl_with_psql_sslmode_require() {
    let Some(bin) = std::fs::read_dir("/usr/lib/postgresql")
        .ok()
        .and_then(|d| d.filter_map(|e| e.ok()).map(|e| e.path().join("bin")).max())
    else {
        panic!("PostgreSQL not installed (see .ci/setup.sh)");
    };
    let pair = NetnsPair::new("tlsp");
    let dir = Scratch::new("tls-pg");
    let (cert, key) = make_cert(&dir);
    let ip = pair.ip_a.clone();
    let data = dir.path("pgdata");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(dir.path("pw"), "pw\n").unwrap();
    let sh = |args: &[&str]| {
        assert!(std::process::Command::new(args[0]).args(&args[1..]).status().unwrap().success(), "{args:?}");
    };
    sh(&["chmod", "755", dir.0.to_str().unwrap()]);
    sh(&["chmod", "644", dir.path("pw").to_str().unwrap()]);
    sh(&["chown", "-R", "postgres", data.to_str().unwrap()]);
    // The server's key must be the postgres user's and private.
    for f in [&cert, &key] {
        sh(&["chown", "postgres", f.to_str().unwrap()]);
    }
    sh(&["chmod", "600", key.to_str().unwrap()]);
    let su = |cmd: String| {
        let st = std::process::Command::new("su").args(["postgres", "-s", "/bin/sh", "-c", &cmd]).status().unwrap();
        assert!(st.success(), "{cmd}");
    };
    su(format!(
        "{}/initdb -D {} -U postgres --pwfile={} --auth-host=scram-sha-256 --auth-local=trust -E UTF8 --locale=C >/dev/null",
        bin.display(),
        data.display(),
        dir.path("pw").display()
    ));
    std::fs::OpenOptions::new()
        .append(true)
        .open(data.join("pg_hba.conf"))
        .and_then(|mut f| std::io::Write::write_all(&mut f, b"hostssl all all 0.0.0.0/0 scram-sha-256\n"))
        .unwrap();
    // The socket tracepoints from the start (the other tests attach them on first use).
    let agent = start_agent(&pair, &dir, &[("CNFLOW_TLS_SOCKET_HOOKS", "always")]);
    assert!(read(&dir.path("agent.err")).contains("socket_hooks=attached"));
    let port = 8001u16;
    let server = format!(
        "exec {}/postgres -D {} -c listen_addresses={ip} -c port={port} -c unix_socket_directories={} -c fsync=off \
         -c ssl=on -c ssl_cert_file={} -c ssl_key_file={}",
        bin.display(),
        data.display(),
        data.display(),
        cert.display(),
        key.display()
    );
    let _pg = spawn(&pair.ns_a, &["su", "postgres", "-s", "/bin/sh", "-c", &server], dir.path("pg.log"), "postgres");
    assert!(wait_tcp(&pair.ns_b, &ip, port), "postgres did not come up: {}", read(&dir.path("pg.log")));

    let uri = format!("postgresql://postgres:pw@{ip}:{port}/postgres?sslmode=require");
    let statements =
        ["SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()", "SELECT 42", "SELECT * FROM nowhere"];
    let mut args = vec!["psql", "-X", "-A", "-t", uri.as_str()];
    for s in &statements {
        args.extend(["-c", s]);
    }
    let mut cmd = NetnsPair::cmd(&pair.ns_b, "psql");
    cmd.args(&args[1..]);
    let out = cmd.output().unwrap();
    let printed = String::from_utf8_lossy(&out.stdout).to_string();
    let errors = String::from_utf8_lossy(&out.stderr).to_string();
    let mut lines = printed.lines();
    let ssl_line = lines.next().unwrap_or_default().to_string();
    assert!(ssl_line.starts_with("t|TLSv"), "psql's connection is TLS: {printed} {errors}");
    let tls_version = ssl_line.trim_start_matches("t|TLSv").to_string();
    assert_eq!(lines.next(), Some("42"));
    assert!(errors.contains("does not exist"), "{errors}");

    let out_path = dir.path("agent.out");
    wait_until(Duration::from_secs(15), || spans_to(&read(&out_path), &ip, port).len() >= 2 * statements.len());
    std::thread::sleep(Duration::from_millis(500));
    let (out, log) = stop_agent(agent, &dir);
    let spans = spans_to(&out, &ip, port);
    let mut seen: Vec<(i64, String, String)> = spans
        .iter()
        .map(|s| {
            (
                s.kind,
                s.attrs.get("db.query.text").cloned().unwrap_or_default(),
                s.attrs.get("db.response.status_code").cloned().unwrap_or_default(),
            )
        })
        .collect();
    seen.sort();
    eprintln!("{seen:#?}");
    assert_eq!(
        spans.len(),
        2 * statements.len(),
        "one span per statement and side, none from the ciphertext: {seen:#?}\n{log}"
    );
    for s in &spans {
        assert_eq!(s.attrs.get("db.system.name").map(String::as_str), Some("postgresql"), "{}", s.name);
        assert_eq!(s.attrs.get("db.namespace").map(String::as_str), Some("postgres"), "from the StartupMessage");
        assert_eq!(s.attrs.get("tls.protocol.version"), Some(&tls_version), "as pg_stat_ssl reports it");
        let exe = s.attrs.get("process.executable.name").cloned().unwrap_or_default();
        // Debian's psql is a wrapper script that execs the versioned binary.
        let real = std::fs::canonicalize(bin.join(if s.kind == SERVER { "postgres" } else { "psql" })).unwrap();
        assert_eq!(exe, real.file_name().unwrap().to_string_lossy(), "{}", s.name);
    }
    let errors: Vec<&Span> =
        spans.iter().filter(|s| s.attrs.get("db.response.status_code").map(String::as_str) == Some("42P01")).collect();
    assert_eq!(errors.len(), 2, "the failed statement on both sides");
    assert_eq!(harness::final_counter(&log, "cnflow.protocol.encrypted{protocol=postgres,method=ssl}"), 1, "{log}");
}

/// Compiles `integration-tests/scripts/tls_client.c` into `out` with `gcc`
/// and the extra `args` (bounded: 120 s).
fn build_client(out: &std::path::Path, args: &[&str]) {
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("integration-tests/scripts/tls_client.c");
    let mut c = std::process::Command::new("gcc");
    c.args(["-O1", "-Wall", "-o"]).arg(out).arg(&src).args(args).stdin(Stdio::null());
    let log = out.with_extension("gcc.log");
    let f = std::fs::File::create(&log).unwrap();
    let child = c.stdout(f.try_clone().unwrap()).stderr(f).spawn().expect("gcc missing: run .ci/setup.sh");
    let mut g = ChildGuard::new(child, "gcc");
    let st = g.wait_timeout(Duration::from_secs(120)).expect("gcc finished in 120 s");
    assert!(st.success(), "gcc {args:?} failed (libssl-dev missing? run .ci/setup.sh): {}", read(&log));
}

/// `PATH STATUS VERSION` lines the client printed → (path, status, version).
fn client_results(stdout: &str) -> Vec<(String, String, String)> {
    stdout
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() == 3).then(|| (f[0].to_string(), f[1].to_string(), f[2].to_string()))
        })
        .collect()
}

/// A client with OpenSSL linked statically (libssl.a + libcrypto.a, no
/// libssl.so: `ldd` is the oracle) is found by the SSL_* symbols of its
/// executable, not by a library name, and attached when it execs (it is
/// started after the agent, and waits 300 ms before its first connection).
/// Its requests to nginx (`ssl`, the system libssl) give exactly one CLIENT
/// span (the static client's) and one SERVER span (nginx's) each, with what
/// the client itself printed: path, status and TLS version.
///
/// The agent runs as `cnflow agent` (Kubernetes off) with
/// CNFLOW_K8S_PROC_ROOT on a procfs mounted elsewhere: the libraries are
/// found and attached, and the processes named, through that root.
#[test]
fn a_client_with_openssl_linked_statically_is_found_by_its_symbols() {
    for lib in ["/usr/lib/x86_64-linux-gnu/libssl.a", "/usr/lib/x86_64-linux-gnu/libcrypto.a"] {
        assert!(std::path::Path::new(lib).exists(), "{lib} missing (libssl-dev): run .ci/setup.sh");
    }
    let pair = NetnsPair::new("tlss");
    let dir = Scratch::new("tls-static");
    let client = dir.path("tls-static-client");
    build_client(&client, &["-Wl,-Bstatic", "-lssl", "-lcrypto", "-Wl,-Bdynamic", "-ldl", "-lpthread"]);
    let ldd = String::from_utf8(std::process::Command::new("ldd").arg(&client).output().unwrap().stdout).unwrap();
    assert!(ldd.contains("libc.so") && !ldd.contains("libssl") && !ldd.contains("libcrypto"), "really static: {ldd}");

    let (cert, key) = make_cert(&dir);
    let proc = ProcMount::new(std::path::PathBuf::from(format!("/tmp/cnflow-tls-proc-{}", std::process::id())));
    let root = proc.0.to_string_lossy().to_string();
    let env = [("CNFLOW_K8S", "off"), ("CNFLOW_HEALTH_ADDR", "off"), ("CNFLOW_K8S_PROC_ROOT", root.as_str())];
    let agent = start_agent_as(&pair, &dir, "agent", &env);
    let err = dir.path("agent.err");
    assert!(read(&err).contains(&format!("proc_root={root}")), "{}", read(&err));
    let port = 8447u16;
    let ip = pair.ip_a.clone();
    let _nginx = start_nginx(&pair.ns_a, &dir, &cert, &key, &format!("listen {ip}:{port} ssl;"));
    assert!(wait_tcp(&pair.ns_b, &ip, port), "nginx did not start: {}", read(&dir.path("nginx.err")));
    assert!(
        wait_until(Duration::from_secs(10), || read(&err).contains("kind=libssl")),
        "nginx's libssl attached: {}",
        read(&err)
    );

    let paths = ["/a", "/b", "/static-missing"];
    let mut args = vec![client.to_str().unwrap(), ip.as_str(), "8447", "300"];
    args.extend(paths);
    let printed = NetnsPair::exec(&pair.ns_b, &args, Duration::from_secs(20));
    let results = client_results(&printed);
    assert_eq!(results.iter().map(|r| r.0.as_str()).collect::<Vec<_>>(), paths, "the client's requests: {printed}");
    let attached = read(&err)
        .lines()
        .any(|l| l.contains("uprobes attached") && l.contains("kind=static") && l.contains("tls-static-client"));
    assert!(attached, "the executable attached as a static OpenSSL: {}", read(&err));
    // Every file was reached through the configured root.
    let lib_lines: Vec<String> =
        read(&err).lines().filter(|l| l.contains("uprobes attached")).map(String::from).collect();
    assert!(
        lib_lines.iter().all(|l| l.contains(&format!("library={root}/"))),
        "attached through {root}: {lib_lines:#?}"
    );

    let out = dir.path("agent.out");
    wait_until(Duration::from_secs(15), || spans_to(&read(&out), &ip, port).len() >= 2 * paths.len());
    std::thread::sleep(Duration::from_millis(500));
    let (out, log) = stop_agent(agent, &dir);
    let spans = spans_to(&out, &ip, port);
    let mut seen: Vec<(i64, String, String, String)> = spans
        .iter()
        .map(|s| {
            let g = |k: &str| s.attrs.get(k).cloned().unwrap_or_default();
            (s.kind, g("url.path"), g("http.response.status_code"), g("process.executable.name"))
        })
        .collect();
    seen.sort();
    let mut want: Vec<(i64, String, String, String)> = results
        .iter()
        .flat_map(|(path, status, _)| {
            [
                (CLIENT, path.clone(), status.clone(), "tls-static-client".to_string()),
                (SERVER, path.clone(), status.clone(), exe_name("nginx")),
            ]
        })
        .collect();
    want.sort();
    assert_eq!(seen, want, "one span per request and side, none from the ciphertext; log:\n{log}");
    for s in &spans {
        assert_eq!(s.attrs.get("url.scheme").map(String::as_str), Some("https"), "{}", s.name);
        let v = results[0].2.strip_prefix("TLSv").expect("TLSv1.x").to_string();
        assert_eq!(s.attrs.get("tls.protocol.version"), Some(&v), "as the client's SSL_get_version says");
    }
    assert!(harness::final_counter(&log, "cnflow.tls.symbol_lookups{result=found}") >= 1, "{log}");
    assert!(harness::final_counter(&log, "cnflow.tls.library_changes{change=attached}") >= 2, "{log}");
    assert_eq!(harness::final_counter(&log, "cnflow.protocol.tls_ciphertext_flows"), paths.len() as u64, "{log}");
}
