//! Throughput of the hot path: pcap decoding, flow table + reassembly, and the
//! whole pipeline (flow + protocol decoders) on a committed real capture.
use bytes::Bytes;
use cnflow::agent::config::AgentConfig;
use cnflow::agent::pipeline::PacketPipeline;
use cnflow::capture::pcap::CaptureReader;
use cnflow::capture::{Direction, PacketEvent, L4};
use cnflow::flow::{CloseReason, Conn, FlowConfig, FlowTable, StreamDir, StreamSink};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};

/// Counts delivered bytes so the work cannot be optimised away.
#[derive(Default)]
struct CountingSink(u64);

impl StreamSink for CountingSink {
    fn on_data(&mut self, _: &Conn, _: StreamDir, _: u64, data: &[u8]) {
        self.0 += data.len() as u64;
    }
    fn on_gap(&mut self, _: &Conn, _: StreamDir, _: u64, len: u64) {
        self.0 += len;
    }
    fn on_datagram(&mut self, _: &Conn, _: StreamDir, _: u64, data: &[u8], _: u32) {
        self.0 += data.len() as u64;
    }
    fn on_close(&mut self, _: &Conn, _: u64, _: CloseReason) {
        self.0 += 1;
    }
}

fn pkt(c: u32, to_server: bool, ts: u64, seq: u32, ack: u32, flags: u8, payload: &Bytes) -> PacketEvent {
    let client = IpAddr::V4(Ipv4Addr::from(0x0AC8_0000 | (c & 0xFFFF)));
    let server = IpAddr::V4(Ipv4Addr::new(10, 200, 255, 1));
    let cport = 32768 + (c % 20000) as u16;
    let (src, dst, sp, dp) = if to_server { (client, server, cport, 6379) } else { (server, client, 6379, cport) };
    PacketEvent {
        ts_ns: ts,
        ifindex: 1,
        direction: Direction::Ingress,
        src,
        dst,
        src_port: sp,
        dst_port: dp,
        l4: L4::Tcp { seq, ack, flags },
        payload_len: payload.len() as u32,
        payload: payload.clone(),
    }
}

/// `conns` connections, interleaved, each with a handshake, `rounds`
/// request/response pairs and FIN/FIN. With `reorder`, every second pair of
/// request segments is swapped.
fn synthetic(conns: u32, rounds: u32, reorder: bool) -> Vec<PacketEvent> {
    let req = Bytes::from_static(b"*2\r\n$3\r\nGET\r\n$8\r\nkey:1234\r\n");
    let resp = Bytes::from(vec![b'x'; 512]);
    let empty = Bytes::new();
    let mut per_conn: Vec<Vec<PacketEvent>> = Vec::new();
    for c in 0..conns {
        let (mut cs, mut ss) = (1000u32, 9000u32);
        let mut v = vec![
            pkt(c, true, 0, cs - 1, 0, 0x02, &empty),
            pkt(c, false, 0, ss - 1, cs, 0x12, &empty),
            pkt(c, true, 0, cs, ss, 0x10, &empty),
        ];
        for r in 0..rounds {
            let a = pkt(c, true, 0, cs, ss, 0x18, &req);
            cs += req.len() as u32;
            let b = pkt(c, true, 0, cs, ss, 0x18, &req);
            cs += req.len() as u32;
            if reorder && r % 2 == 0 {
                v.extend([b, a]);
            } else {
                v.extend([a, b]);
            }
            v.push(pkt(c, false, 0, ss, cs, 0x18, &resp));
            ss += resp.len() as u32;
        }
        v.push(pkt(c, true, 0, cs, ss, 0x11, &empty));
        v.push(pkt(c, false, 0, ss, cs + 1, 0x11, &empty));
        per_conn.push(v);
    }
    // Round-robin so many flows are active at once, as on a busy node.
    let mut out = Vec::new();
    let longest = per_conn.iter().map(Vec::len).max().unwrap_or(0);
    for i in 0..longest {
        for v in &per_conn {
            if let Some(p) = v.get(i) {
                let mut p = p.clone();
                p.ts_ns = out.len() as u64 * 1000;
                out.push(p);
            }
        }
    }
    out
}

fn committed_capture() -> Vec<PacketEvent> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("integration-tests/pcaps/flow_eth.pcap");
    CaptureReader::open(&path).expect("committed capture").map(|r| r.unwrap()).collect()
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("flow");
    for (name, reorder) in [("flow_table_in_order", false), ("flow_table_reordered", true)] {
        let pkts = synthetic(1000, 10, reorder);
        g.throughput(Throughput::Elements(pkts.len() as u64));
        g.bench_function(name, |b| {
            b.iter(|| {
                let mut t = FlowTable::new(&FlowConfig::default());
                let mut sink = CountingSink::default();
                for p in &pkts {
                    t.push(p, &mut sink);
                }
                t.finish(&mut sink);
                black_box(sink.0)
            })
        });
    }

    let real = committed_capture();
    g.throughput(Throughput::Elements(real.len() as u64));
    g.bench_function("pipeline_real_capture", |b| {
        let cfg = AgentConfig::default();
        b.iter(|| {
            let mut p = PacketPipeline::new(&cfg);
            for ev in &real {
                p.push(ev);
            }
            p.finish();
            black_box(p.take_exchanges().len())
        })
    });

    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("integration-tests/pcaps/flow_eth.pcap");
    let bytes = std::fs::read(path).unwrap();
    g.throughput(Throughput::Bytes(bytes.len() as u64));
    g.bench_function("pcap_decode", |b| {
        b.iter(|| {
            let r = CaptureReader::new(std::io::Cursor::new(&bytes[..])).unwrap();
            black_box(r.map(|e| e.unwrap().payload_len as u64).sum::<u64>())
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
