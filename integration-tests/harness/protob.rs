//! Golden-test helpers for the HTTP/2, gRPC and Kafka decoders: replay a
//! committed capture through `cnflow replay --format exchanges`, or through
//! the flow table straight into one decoder (bypassing detection), and
//! compare the JSON lines with `integration-tests/golden/<name>.jsonl`.
//! `CNFLOW_BLESS=1` rewrites the golden file instead.
#![allow(dead_code)]
use cnflow::agent::config::AgentConfig;
use cnflow::capture::pcap::CaptureReader;
use cnflow::exchange::Exchange;
use cnflow::flow::{CloseReason, Conn, FlowConfig, FlowTable, StreamDir, StreamSink};
use cnflow::protocol::{ConnDecoder, DecodeConfig, Emit};
use serde_json::Value;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

pub fn pcap(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("integration-tests/pcaps").join(name)
}

fn golden_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("integration-tests/golden").join(format!("{name}.jsonl"))
}

/// `cnflow replay FILE --format exchanges`, one JSON value per line.
pub fn replay(file: &Path) -> Vec<Value> {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cnflow"))
        .args(["replay", file.to_str().unwrap(), "--format", "exchanges"])
        .output()
        .expect("run cnflow replay");
    assert!(out.status.success(), "cnflow replay failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).expect("exchange JSON line"))
        .collect::<Vec<_>>()
        .pipe(normalize)
}

trait Pipe: Sized {
    fn pipe<T>(self, f: impl FnOnce(Self) -> T) -> T {
        f(self)
    }
}
impl<T> Pipe for T {}

struct Direct {
    make: fn(&DecodeConfig) -> Box<dyn ConnDecoder>,
    cfg: DecodeConfig,
    decoders: HashMap<u64, Box<dyn ConnDecoder>>,
    out: Vec<Exchange>,
}

impl Direct {
    fn dec(&mut self, conn: &Conn) -> &mut Box<dyn ConnDecoder> {
        let (make, cfg) = (self.make, &self.cfg);
        self.decoders.entry(conn.id).or_insert_with(|| make(cfg))
    }
}

impl StreamSink for Direct {
    fn on_data(&mut self, conn: &Conn, dir: StreamDir, ts: u64, data: &[u8]) {
        let mut out = std::mem::take(&mut self.out);
        self.dec(conn).on_data(dir, ts, data, &mut Emit { conn, out: &mut out });
        self.out = out;
    }
    fn on_gap(&mut self, conn: &Conn, dir: StreamDir, ts: u64, len: u64) {
        let mut out = std::mem::take(&mut self.out);
        self.dec(conn).on_gap(dir, ts, len, &mut Emit { conn, out: &mut out });
        self.out = out;
    }
    fn on_datagram(&mut self, _: &Conn, _: StreamDir, _: u64, _: &[u8], _: u32) {}
    fn on_close(&mut self, conn: &Conn, ts: u64, reason: CloseReason) {
        if let Some(mut d) = self.decoders.remove(&conn.id) {
            d.on_close(ts, reason, &mut Emit { conn, out: &mut self.out });
        }
    }
}

/// Every TCP connection of the capture decoded by `make`'s decoder.
pub fn decode_direct(file: &Path, make: fn(&DecodeConfig) -> Box<dyn ConnDecoder>) -> Vec<Value> {
    let cfg = AgentConfig::default();
    let mut table = FlowTable::new(&FlowConfig::from(&cfg));
    let mut sink =
        Direct { make, cfg: cnflow::agent::pipeline::decode_config(&cfg), decoders: HashMap::new(), out: Vec::new() };
    for ev in CaptureReader::open(file).expect("open capture") {
        table.push(&ev.expect("packet"), &mut sink);
    }
    table.finish(&mut sink);
    normalize(sink.out.iter().map(|e| serde_json::to_value(e).unwrap()).collect())
}

/// Connection ids come from a process-wide counter, so they differ between
/// `cnflow replay` and in-process decoding (and between parallel tests).
pub fn normalize(mut v: Vec<Value>) -> Vec<Value> {
    for e in &mut v {
        if let Some(c) = e.get_mut("conn").and_then(|c| c.as_object_mut()) {
            c.insert("id".into(), Value::from(0));
        }
    }
    v
}

/// Compare with (or, with CNFLOW_BLESS=1, write) the golden file.
pub fn check_golden(name: &str, actual: &[Value]) {
    let path = golden_path(name);
    let text: String = actual.iter().map(|v| format!("{v}\n")).collect();
    if std::env::var("CNFLOW_BLESS").is_ok_and(|v| v == "1") {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, text).unwrap();
        return;
    }
    let want = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (bless with CNFLOW_BLESS=1)", path.display()));
    let want: Vec<Value> =
        want.lines().filter(|l| !l.trim().is_empty()).map(|l| serde_json::from_str(l).unwrap()).collect();
    if want != actual {
        for (i, (w, a)) in want.iter().zip(actual).enumerate() {
            if w != a {
                panic!("{name}: exchange {i} differs\nwant {w}\n got {a}");
            }
        }
        panic!("{name}: {} exchanges expected, got {}", want.len(), actual.len());
    }
}

/// Exchanges of one protocol ("http2", "grpc", "kafka", "http1"...).
pub fn only(v: &[Value], protocols: &[&str]) -> Vec<Value> {
    v.iter().filter(|e| protocols.contains(&e["protocol"].as_str().unwrap_or(""))).cloned().collect()
}
