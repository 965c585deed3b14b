//! A live capture without a kernel: packets of capture files written as the
//! TC program's ring records into in-memory rings, read back by the live
//! reader's merge and decoder, and handed to the agent as a live session.
//!
//! Why: the live agent's own path (ring records → `rings::Merger` →
//! `kernel_record::decode_entry` → the agent's batch loop) runs only with
//! eBPF, root and traffic. A profile-guided build (`pgo.sh`) trains in a
//! container build without any of those, so that path was optimised blind;
//! and a test can check that the live loop reports what `cnflow replay`
//! reports for the same packets. Hidden option of `cnflow run`:
//! `--simulate-capture FILE…` (not a product feature: packets arrive as fast
//! as the agent takes them, the capture files' timestamps are kept).
use super::ebpf::{KernelCounterReader, LiveSession, BATCH, CHANNEL_BATCHES};
use super::pcap::CaptureReader;
use super::{Direction, PacketEvent, L4};
use anyhow::{Context, Result};
use cnflow_common::{
    PacketRecord, DIR_EGRESS, DIR_INGRESS, MAX_PAYLOAD, PACKET_HEADER_LEN, PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP,
    PROTO_UDP, TCP_FIN, TCP_RST, TCP_SYN,
};
use std::collections::VecDeque;
use std::net::IpAddr;
use std::ops::Range;
use std::path::PathBuf;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Rings written round-robin per packet, so the merge restores order across
/// rings the way it must when a request and its response ran on two CPUs.
const RINGS: usize = 2;
/// Records written before each drain (a drain of the live reader after ~2 ms
/// of ~100k packets/s).
const PER_DRAIN: usize = 256;

/// One in-memory ring: record bytes back to back, oldest first.
#[derive(Default)]
struct MemRing {
    buf: Vec<u8>,
    entries: VecDeque<Range<usize>>,
}

impl super::rings::RecordSource for MemRing {
    fn take<F: FnMut(&[u8])>(&mut self, max: usize, mut f: F) -> usize {
        let mut n = 0;
        while n < max {
            let Some(r) = self.entries.pop_front() else { break };
            f(&self.buf[r]);
            n += 1;
        }
        if self.entries.is_empty() {
            self.buf.clear();
        }
        n
    }
}

/// What the TC program would write for `ev`: None for what it skips (pure
/// ACKs and window updates). The payload is cut to `snaplen` like the
/// kernel's copy; `ts_ns` is written as is (the reader adds no offset).
fn encode(ev: &PacketEvent, snaplen: usize, out: &mut Vec<u8>) -> bool {
    let (proto, seq, ack, flags) = match ev.l4 {
        L4::Tcp { seq, ack, flags } => {
            if ev.payload_len == 0 && flags & (TCP_SYN | TCP_FIN | TCP_RST) == 0 {
                return false;
            }
            (PROTO_TCP, seq, ack, flags)
        }
        L4::Udp => (PROTO_UDP, 0, 0, 0),
        L4::Icmp { v6: false } => (PROTO_ICMP, 0, 0, 0),
        L4::Icmp { v6: true } => (PROTO_ICMPV6, 0, 0, 0),
    };
    let (family, src, dst) = match (ev.src, ev.dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let (mut a, mut b) = ([0u8; 16], [0u8; 16]);
            a[..4].copy_from_slice(&s.octets());
            b[..4].copy_from_slice(&d.octets());
            (4u8, a, b)
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => (6u8, s.octets(), d.octets()),
        // A frame decoder never pairs families; nothing to write if one did.
        _ => return false,
    };
    let cap = ev.payload.len().min(snaplen).min(MAX_PAYLOAD);
    let direction = match ev.direction {
        Direction::Ingress => DIR_INGRESS,
        Direction::Egress => DIR_EGRESS,
    };
    // Field by field at the record's repr(C) offsets, as the TC program does.
    let start = out.len();
    out.resize(start + PACKET_HEADER_LEN, 0);
    let h = &mut out[start..];
    let mut put = |at: usize, bytes: &[u8]| h[at..at + bytes.len()].copy_from_slice(bytes);
    use std::mem::offset_of;
    put(offset_of!(PacketRecord, ts_ns), &ev.ts_ns.to_ne_bytes());
    put(offset_of!(PacketRecord, ifindex), &ev.ifindex.to_ne_bytes());
    put(offset_of!(PacketRecord, payload_len), &ev.payload_len.to_ne_bytes());
    put(offset_of!(PacketRecord, tcp_seq), &seq.to_ne_bytes());
    put(offset_of!(PacketRecord, tcp_ack), &ack.to_ne_bytes());
    put(offset_of!(PacketRecord, cap_len), &(cap as u16).to_ne_bytes());
    put(offset_of!(PacketRecord, src_port), &ev.src_port.to_ne_bytes());
    put(offset_of!(PacketRecord, dst_port), &ev.dst_port.to_ne_bytes());
    put(offset_of!(PacketRecord, direction), &[direction]);
    put(offset_of!(PacketRecord, family), &[family]);
    put(offset_of!(PacketRecord, proto), &[proto]);
    put(offset_of!(PacketRecord, tcp_flags), &[flags]);
    put(offset_of!(PacketRecord, src_addr), &src);
    put(offset_of!(PacketRecord, dst_addr), &dst);
    out.extend_from_slice(&ev.payload[..cap]);
    true
}

/// Starts feeding the packets of `files` (in order) as a live session. The
/// session's packets end after the last file (or at `cancel`).
pub fn start(files: Vec<PathBuf>, snaplen: u32, cancel: CancellationToken) -> Result<LiveSession> {
    // Open errors before anything runs, naming the file.
    let readers = files
        .iter()
        .map(|f| CaptureReader::open(f).with_context(|| format!("--simulate-capture {}", f.display())))
        .collect::<Result<Vec<_>>>()?;
    let (tx, packets) = mpsc::channel(CHANNEL_BATCHES);
    let task = tokio::task::spawn_blocking(move || feed(readers, snaplen as usize, tx, cancel));
    Ok(LiveSession { packets, kernel: KernelCounterReader::none(), task })
}

fn feed(
    readers: Vec<CaptureReader<std::fs::File>>,
    snaplen: usize,
    tx: mpsc::Sender<Vec<PacketEvent>>,
    cancel: CancellationToken,
) -> Result<()> {
    let mut rings: Vec<MemRing> = (0..RINGS).map(|_| MemRing::default()).collect();
    let mut merger = super::rings::Merger::new(RINGS);
    // Timestamps are the files' wall-clock times already.
    let decode = |raw: &[u8]| super::kernel_record::decode_entry(raw, 0).ok();
    let mut next_ring = 0usize;
    let (mut written, mut skipped) = (0u64, 0u64);
    for mut reader in readers {
        let mut done = false;
        while !done {
            if cancel.is_cancelled() {
                return Ok(());
            }
            let mut n = 0;
            while n < PER_DRAIN {
                let Some(ev) = reader.next_event()? else {
                    done = true;
                    break;
                };
                let ring = &mut rings[next_ring];
                let start = ring.buf.len();
                if encode(&ev, snaplen, &mut ring.buf) {
                    ring.entries.push_back(start..ring.buf.len());
                    next_ring = (next_ring + 1) % RINGS;
                    written += 1;
                    n += 1;
                } else {
                    skipped += 1;
                }
            }
            loop {
                let (batch, drained) = merger.next_batch(&mut rings, BATCH, &decode);
                if !batch.is_empty() && tx.blocking_send(batch).is_err() {
                    return Ok(());
                }
                if drained {
                    break;
                }
            }
        }
    }
    tracing::info!(records = written, skipped_like_the_kernel = skipped, "simulated capture: files done");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn ev(l4: L4, payload: &'static [u8], src: &str, dst: &str) -> PacketEvent {
        PacketEvent {
            ts_ns: 1_700_000_000_123_456_789,
            ifindex: 7,
            direction: Direction::Egress,
            src: src.parse().unwrap(),
            dst: dst.parse().unwrap(),
            src_port: 40000,
            dst_port: 6379,
            l4,
            payload_len: payload.len() as u32 + 10,
            payload: Bytes::from_static(payload),
        }
    }

    /// What is encoded decodes back through the live reader's decoder.
    #[test]
    fn records_round_trip_through_the_live_decoder() {
        for e in [
            ev(L4::Tcp { seq: 5, ack: 9, flags: 0x18 }, b"*1\r\n$4\r\nPING\r\n", "10.200.0.1", "10.200.0.2"),
            ev(L4::Udp, b"dns", "fd00::1", "fd00::2"),
            ev(L4::Tcp { seq: 1, ack: 0, flags: TCP_SYN }, b"", "127.0.0.1", "127.0.0.2"),
        ] {
            let mut buf = Vec::new();
            assert!(encode(&e, 4, &mut buf));
            let (got, range) = super::super::kernel_record::decode_entry(&buf, 0).unwrap();
            assert_eq!(&buf[range], &e.payload[..e.payload.len().min(4)]);
            assert_eq!((got.ts_ns, got.ifindex, got.src, got.dst), (e.ts_ns, e.ifindex, e.src, e.dst));
            assert_eq!(
                (got.src_port, got.dst_port, got.l4, got.payload_len),
                (e.src_port, e.dst_port, e.l4, e.payload_len)
            );
            assert_eq!(got.direction, e.direction);
        }
        // A pure ACK is not written, as in the kernel.
        let mut ack = ev(L4::Tcp { seq: 5, ack: 9, flags: 0x10 }, b"", "10.0.0.1", "10.0.0.2");
        ack.payload_len = 0;
        assert!(!encode(&ack, 4, &mut Vec::new()));
    }
}
