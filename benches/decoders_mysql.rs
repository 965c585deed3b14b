//! Throughput of the MySQL decoder on a synthetic connection (login, then
//! queries answered by 20-row result sets, prepared statements, an error),
//! fed in MSS-sized segments as flow tracking would; plain and compressed.

use cnflow::flow::{StreamDir, Transport};
use cnflow::protocol::testutil::{conn, feed_writes};
use cnflow::protocol::{mysql, DecodeConfig};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::io::Write;

const MSS: usize = 1448;

fn pkt(seq: u8, payload: &[u8]) -> Vec<u8> {
    let mut v = (payload.len() as u32).to_le_bytes()[..3].to_vec();
    v.push(seq);
    v.extend_from_slice(payload);
    v
}

fn lenenc_str(v: &mut Vec<u8>, s: &str) {
    v.push(s.len() as u8);
    v.extend_from_slice(s.as_bytes());
}

const CAPS: u32 = 0x0000_0200 | 0x0000_8000 | 0x0008_0000 | 0x0000_0008;
const COMPRESS: u32 = 0x20;

fn login(caps: u32) -> Vec<(StreamDir, Vec<u8>)> {
    let mut g = vec![10];
    g.extend_from_slice(b"5.5.5-10.11.6-MariaDB\0");
    g.extend_from_slice(&[1, 0, 0, 0]);
    g.extend_from_slice(b"abcdefgh\0");
    g.extend_from_slice(&(caps as u16).to_le_bytes());
    g.extend_from_slice(&[45, 2, 0]);
    g.extend_from_slice(&((caps >> 16) as u16).to_le_bytes());
    g.extend_from_slice(&[21; 11]);
    g.extend_from_slice(b"ijklmnopqrst\0mysql_native_password\0");
    let mut l = caps.to_le_bytes().to_vec();
    l.extend_from_slice(&[0, 0, 0, 1, 45]);
    l.extend_from_slice(&[0; 23]);
    l.extend_from_slice(b"app\0");
    l.push(20);
    l.extend_from_slice(&[7; 20]);
    l.extend_from_slice(b"shop\0mysql_native_password\0");
    vec![
        (StreamDir::ToClient, pkt(0, &g)),
        (StreamDir::ToServer, pkt(1, &l)),
        (StreamDir::ToClient, pkt(2, b"\0\0\0\x02\0\0\0")),
    ]
}

/// `n` exchanges after the login: SELECTs with 20 rows, prepared statement
/// executions, an INSERT and an error, as (direction, bytes) writes.
fn session(n: u32) -> Vec<(StreamDir, Vec<u8>)> {
    let mut w = Vec::new();
    w.push((StreamDir::ToServer, pkt(0, b"\x16SELECT id, name, price FROM items WHERE id > ?")));
    let mut prep = pkt(1, &[0, 1, 0, 0, 0, 3, 0, 1, 0, 0, 0, 0]);
    let coldef = |seq: u8, name: &str| {
        let mut v = Vec::new();
        for s in ["def", "shop", "items", "items", name, name] {
            lenenc_str(&mut v, s);
        }
        v.extend_from_slice(&[0x0c, 0x21, 0, 0x0b, 0, 0, 0, 0xfd, 0, 0, 0, 0, 0]);
        pkt(seq, &v)
    };
    let eof = |seq: u8| pkt(seq, &[0xfe, 0, 0, 2, 0]);
    let mut seq = 2;
    for c in ["?", "id", "name", "price"] {
        prep.extend(coldef(seq, c));
        seq += 1;
        if c == "?" || c == "price" {
            prep.extend(eof(seq));
            seq += 1;
        }
    }
    w.push((StreamDir::ToClient, prep));
    for i in 0..n {
        match i % 4 {
            0 | 1 => {
                let q = format!("\x03SELECT id, name, price FROM items WHERE category = 'c{i}' LIMIT 20");
                w.push((StreamDir::ToServer, pkt(0, q.as_bytes())));
                let mut r = pkt(1, &[3]);
                let mut seq = 2;
                for c in ["id", "name", "price"] {
                    r.extend(coldef(seq, c));
                    seq += 1;
                }
                r.extend(eof(seq));
                seq += 1;
                for row in 0..20 {
                    let mut v = Vec::new();
                    lenenc_str(&mut v, &row.to_string());
                    lenenc_str(&mut v, "a product name of some length");
                    lenenc_str(&mut v, "12.50");
                    r.extend(pkt(seq, &v));
                    seq += 1;
                }
                r.extend(eof(seq));
                w.push((StreamDir::ToClient, r));
            }
            2 => {
                let mut e = vec![0x17, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 3, 0];
                e.extend_from_slice(&i.to_le_bytes());
                w.push((StreamDir::ToServer, pkt(0, &e)));
                let mut r = pkt(1, &[3]);
                for (k, c) in ["id", "name", "price"].iter().enumerate() {
                    r.extend(coldef(2 + k as u8, c));
                }
                r.extend(eof(5));
                r.extend(pkt(6, b"\x00\x00\x07\x00\x00\x00\x05apple\x0412.5"));
                r.extend(eof(7));
                w.push((StreamDir::ToClient, r));
            }
            _ if i % 8 == 3 => {
                w.push((StreamDir::ToServer, pkt(0, format!("\x03INSERT INTO log VALUES ({i}, 'x')").as_bytes())));
                w.push((StreamDir::ToClient, pkt(1, b"\0\x01\0\x02\0\0\0")));
            }
            _ => {
                w.push((StreamDir::ToServer, pkt(0, b"\x03SELECT * FROM missing")));
                w.push((StreamDir::ToClient, pkt(1, b"\xff\x7a\x04#42S02Table 'shop.missing' doesn't exist")));
            }
        }
    }
    w
}

/// The same writes as compressed-protocol frames (one per write, zlib).
fn compress(w: &[(StreamDir, Vec<u8>)]) -> Vec<(StreamDir, Vec<u8>)> {
    w.iter()
        .map(|(d, b)| {
            let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(b).unwrap();
            let z = e.finish().unwrap();
            let mut v = (z.len() as u32).to_le_bytes()[..3].to_vec();
            v.push(0);
            v.extend_from_slice(&(b.len() as u32).to_le_bytes()[..3]);
            v.extend(z);
            (*d, v)
        })
        .collect()
}

fn feed(mut dec: Box<dyn cnflow::protocol::ConnDecoder>, writes: &[(StreamDir, Vec<u8>)]) -> usize {
    feed_writes(&mut *dec, &conn(Transport::Tcp, 3306), writes, MSS, &mut Vec::new())
}

fn bytes_of(w: &[(StreamDir, Vec<u8>)]) -> u64 {
    w.iter().map(|(_, b)| b.len() as u64).sum()
}

fn benches(c: &mut Criterion) {
    let cfg = DecodeConfig::default();
    let mut plain = login(CAPS);
    plain.extend(session(400));
    let mut comp = login(CAPS | COMPRESS);
    comp.extend(compress(&session(400)));
    let mut g = c.benchmark_group("mysql");
    g.throughput(Throughput::Bytes(bytes_of(&plain)));
    g.bench_function("mysql_400_exchanges", |b| b.iter(|| assert_eq!(feed(mysql::new_decoder(&cfg), &plain), 401)));
    g.throughput(Throughput::Bytes(bytes_of(&comp)));
    g.bench_function("mysql_compressed_400_exchanges", |b| {
        b.iter(|| assert_eq!(feed(mysql::new_decoder(&cfg), &comp), 401))
    });
    g.finish();
}

criterion_group!(group, benches);
criterion_main!(group);
