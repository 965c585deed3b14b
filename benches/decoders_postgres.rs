//! Throughput of the PostgreSQL decoder on a synthetic connection shaped
//! like pgbench -M prepared (Bind/Execute/Sync per statement, named
//! statements prepared once) and a simple-query session with multi-row
//! results, fed in MSS-sized segments as flow tracking would.
use cnflow::flow::{Conn, StreamDir, Transport};
use cnflow::protocol::testutil::{conn, feed_writes};
use cnflow::protocol::{postgres, DecodeConfig};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

const MSS: usize = 1448;

fn msg(t: u8, body: &[u8]) -> Vec<u8> {
    let mut v = vec![t];
    v.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
    v.extend_from_slice(body);
    v
}
fn cs(s: &str) -> Vec<u8> {
    let mut v = s.as_bytes().to_vec();
    v.push(0);
    v
}

fn startup() -> (Vec<u8>, Vec<u8>) {
    let mut body = (3u32 << 16).to_be_bytes().to_vec();
    for s in ["user", "bench", "database", "shop"] {
        body.extend(cs(s));
    }
    body.push(0);
    let mut req = (body.len() as u32 + 4).to_be_bytes().to_vec();
    req.extend(body);
    let resp = [msg(b'R', &[0, 0, 0, 0]), msg(b'K', &[0; 8]), msg(b'Z', b"I")].concat();
    (req, resp)
}

/// `n` prepared executions (pgbench -M prepared style) as (direction, bytes) writes.
fn prepared(n: usize) -> Vec<(StreamDir, Vec<u8>)> {
    let (req, resp) = startup();
    let mut w = vec![(StreamDir::ToServer, req), (StreamDir::ToClient, resp)];
    let stmts = [
        "UPDATE pgbench_accounts SET abalance = abalance + $1 WHERE aid = $2",
        "SELECT abalance FROM pgbench_accounts WHERE aid = $1",
        "INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES ($1, $2, $3, $4, CURRENT_TIMESTAMP)",
    ];
    for i in 0..n {
        let k = i % stmts.len();
        let name = format!("P_{k}");
        let mut req = Vec::new();
        if i < stmts.len() {
            req.extend(msg(b'P', &[cs(&name), cs(stmts[k]), vec![0, 0]].concat()));
        }
        req.extend(msg(
            b'B',
            &[
                cs(""),
                cs(&name),
                vec![0, 0, 0, 2, 0, 0, 0, 4],
                b"1234".to_vec(),
                vec![0, 0, 0, 2],
                b"-5".to_vec(),
                vec![0, 0],
            ]
            .concat(),
        ));
        req.extend(msg(b'E', &[cs(""), vec![0, 0, 0, 0]].concat()));
        req.extend(msg(b'S', &[]));
        let mut resp = Vec::new();
        if i < stmts.len() {
            resp.extend(msg(b'1', &[]));
        }
        resp.extend(msg(b'2', &[]));
        if k == 1 {
            resp.extend(msg(b'D', &[0, 1, 0, 0, 0, 4, b'1', b'2', b'3', b'4']));
            resp.extend(msg(b'C', &cs("SELECT 1")));
        } else {
            resp.extend(msg(b'C', &cs("UPDATE 1")));
        }
        resp.extend(msg(b'Z', b"T"));
        w.push((StreamDir::ToServer, req));
        w.push((StreamDir::ToClient, resp));
    }
    w
}

/// `n` simple queries each returning 50 rows.
fn simple(n: usize) -> Vec<(StreamDir, Vec<u8>)> {
    let (req, resp) = startup();
    let mut w = vec![(StreamDir::ToServer, req), (StreamDir::ToClient, resp)];
    for i in 0..n {
        let q = format!("SELECT id, name, price FROM items WHERE id > {i} AND name <> 'x' ORDER BY id LIMIT 50");
        w.push((StreamDir::ToServer, msg(b'Q', &cs(&q))));
        let mut resp = msg(b'T', &[0, 1, b'i', b'd', 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 23, 0, 4, 255, 255, 255, 255, 0, 0]);
        for _ in 0..50 {
            resp.extend(msg(
                b'D',
                &[
                    0, 1, 0, 0, 0, 24, b'r', b'o', b'w', b' ', b'v', b'a', b'l', b'u', b'e', b' ', b'w', b'i', b't',
                    b'h', b' ', b's', b'o', b'm', b'e', b' ', b't', b'e', b'x', b't',
                ],
            ));
        }
        resp.extend(msg(b'C', &cs("SELECT 50")));
        resp.extend(msg(b'Z', b"I"));
        w.push((StreamDir::ToClient, resp));
    }
    w
}

fn run(c: &Conn, writes: &[(StreamDir, Vec<u8>)]) -> usize {
    feed_writes(&mut *postgres::new_decoder(&DecodeConfig::default()), c, writes, MSS, &mut Vec::new())
}

fn bench(c: &mut Criterion) {
    let cn = conn(Transport::Tcp, 5432);
    for (name, writes, n) in [("prepared_1000", prepared(1000), 1000), ("simple_200x50rows", simple(200), 200)] {
        let bytes: usize = writes.iter().map(|(_, b)| b.len()).sum();
        assert_eq!(run(&cn, &writes), n);
        let mut g = c.benchmark_group("postgres");
        g.throughput(Throughput::Bytes(bytes as u64));
        g.bench_function(name, |b| b.iter(|| run(&cn, &writes)));
        g.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
